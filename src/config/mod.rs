//! Settings: embedded defaults → optional TOML file → `IMGGO__SECTION__KEY`
//! environment variables, validated once into typed values.
//!
//! Secrets are not settings: they come from the environment only and live in
//! [`secrets`].

pub mod dsn;
pub mod duration;
mod errors;
pub mod forward;
pub mod secrets;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::redact::RedactSettings;

/// The defaults, compiled in so the binary runs without any file beside it.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Longest retention accepted: beyond it the cut-off date leaves the range
/// the databases store.
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Environment prefix for setting overrides (`IMGGO__SERVER__BIND`).
const ENV_PREFIX: &str = "IMGGO";

/// Every setting of the service. No secret lives here, so `Debug` is safe.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Public HTTP listener.
    pub server: ServerSettings,
    /// Operator listener (metrics).
    pub admin: AdminSettings,
    /// The webhook route.
    pub webhook: WebhookSettings,
    /// Client IP resolution and allowlist.
    pub network: NetworkSettings,
    /// Per-client-IP rate limit on the webhook route.
    pub rate_limit: RateLimitSettings,
    /// How long stored events are kept.
    pub retention: RetentionSettings,
    /// Database pool.
    pub database: DatabaseSettings,
    /// How events are laid out on Postgres (time partitions).
    pub storage: StorageSettings,
    /// Log output.
    pub log: LogSettings,
    /// PII redaction rules.
    pub redact: RedactSettings,
    /// The local spool that acknowledges deliveries while Postgres cannot.
    pub spool: SpoolSettings,
    /// Signed deliveries refused by validation, kept for replay.
    pub quarantine: QuarantineSettings,
    /// The Results API listener (CONTRACT §9).
    pub api: ApiSettings,
    /// Which fields identify a data subject for erasure.
    pub subjects: SubjectsSettings,
    /// How long audit records are kept.
    pub audit: AuditSettings,
    /// JSON Schemas that each pattern's extracted data is checked against.
    pub validation: ValidationSettings,
    /// Destinations stored events are forwarded to (CONTRACT §11).
    #[serde(default)]
    pub forward: forward::Destinations,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSettings {
    /// Directory of `<pattern_id>.json` JSON Schema files; empty turns
    /// validation off (every event's verdict is `null`).
    pub schemas_dir: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    /// SQLite file of this replica's spool (Postgres store only); empty
    /// turns the spool off.
    pub path: String,
    /// Largest the spool may grow, in bytes; past it deliveries get 503.
    pub max_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineSettings {
    /// Most quarantined deliveries kept; the oldest go first.
    pub max_rows: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address the public listener binds to.
    pub bind: SocketAddr,
    /// Largest accepted webhook body in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take, body included.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Grace period for in-flight requests on shutdown.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address of the operator listener.
    pub bind: SocketAddr,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Route ImgGo posts to.
    pub path: String,
    /// Oldest signed `timestamp` accepted; zero turns the check off.
    #[serde(with = "duration")]
    pub max_timestamp_age: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// Load balancers whose `X-Forwarded-For` is believed.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// Who may call the webhook route; empty = everyone.
    #[serde(deserialize_with = "networks")]
    pub allowed_ips: Vec<IpNet>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained requests per second per client IP.
    pub per_second: u32,
    /// Requests a client may send at once.
    pub burst: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Rows older than this are deleted.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// Time between purge passes.
    #[serde(with = "duration")]
    pub purge_interval: Duration,
    /// Rows deleted per transaction.
    pub batch_size: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Width of each time partition of the events table (Postgres only):
    /// at least 1h, dividing a day evenly (CONTRACT §5).
    #[serde(with = "duration")]
    pub partition_interval: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Database connections per replica in all: `writers` of them belong to
    /// the batch writers, the rest to the pool everything else uses.
    pub max_connections: u32,
    /// How long start-up waits for the database.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a request waits for a connection before 503.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
    /// Most deliveries committed per group-commit transaction.
    pub max_batch: u32,
    /// Group-commit writer tasks, each with its own connection.
    pub writers: u32,
    /// Deliveries queued for a writer before new ones get 503.
    pub queue_capacity: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json` or `pretty`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    Json,
    Pretty,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err(format!(
                "unknown log format `{s}`; valid values: json, pretty"
            )),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Address of the Results API listener; "" turns the API off.
    pub bind: String,
    /// Longest an API request may take; a long-poll `wait` ends 1 s before it.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Most API connections open at once (each long-poll holds one).
    pub max_connections: u32,
}

impl ApiSettings {
    /// The address to bind, or `None` when the API is off (validated at load).
    pub fn bind_addr(&self) -> Option<SocketAddr> {
        self.bind.trim().parse().ok()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectsSettings {
    /// Field names (normalised as the redaction rules are) whose values
    /// identify a data subject, at any depth.
    #[serde(deserialize_with = "string_list")]
    pub fields: Vec<String>,
    /// Also index every field a `hash` redaction rule names.
    pub hash_rule_fields: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Audit records older than this are deleted by the retention task.
    #[serde(with = "duration")]
    pub max_age: Duration,
}

/// Why the settings could not be loaded. The message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Loads defaults, then `file` (when given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment, for tests.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        // Errors name the file by its absolute path: a relative one means
        // nothing in a container's log.
        let file = file.map(|p| {
            std::fs::canonicalize(p)
                .or_else(|_| std::path::absolute(p))
                .unwrap_or_else(|_| p.to_owned())
        });
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        // Only IMGGO__* keys are settings; IMGGO_WEBHOOK_SECRETS and friends
        // (single underscore) are secrets and must never pass through here.
        let overrides: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        // try_parsing stays off: it rewrites strings ("0123" → "123"). The
        // config crate still parses numbers and booleans out of strings.
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides.clone())),
        );
        let sources = errors::Sources {
            file: file.as_deref(),
            env: &overrides,
        };
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(sources.explain(e)))?;
        settings.validate()?;
        Ok(settings)
    }
}

/// Accepts a TOML list or one comma-separated string (what an environment
/// variable can carry). Bare addresses become host networks (/32, /128).
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    string_list(d)?
        .iter()
        .map(|s| parse_network(s).map_err(serde::de::Error::custom))
        .collect()
}

/// A TOML list of strings or one comma-separated string (an environment
/// variable); items are trimmed and empty ones dropped.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    let items = match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::String(s) => s.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address. IPv4-mapped IPv6
/// networks are stored as their IPv4 form so they match canonical peers.
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let net = s
        .parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
    Ok(canonical_net(net))
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net.trunc()
}

#[cfg(test)]
mod tests;
