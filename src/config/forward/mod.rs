//! `[forward.NAME]`: the destinations stored events are forwarded to
//! (CONTRACT §11), and what of them may be shown. A destination's URL may
//! hold a password and an `http` destination holds signing secrets: neither
//! `Debug` nor `Serialize` (what `check-config` prints) ever shows them; the
//! URL is shown as `scheme://host:port/path` only, and an `http(s)` URL as
//! `scheme://host:port` (its path may carry a token, as many hook URLs do).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::duration;

mod template;
pub use template::Template;

/// Every configured destination, by name.
pub type Destinations = BTreeMap<String, DestinationSettings>;

/// One `[forward.NAME]` table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSettings {
    /// `nats`, `rabbitmq`, `redis` or `http`.
    pub kind: Kind,
    /// Where to send; may hold credentials (never shown).
    pub url: DestinationUrl,
    /// (nats) Subject template; a stream capturing it must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// (rabbitmq) Exchange; `""` is the default exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// (rabbitmq) Routing-key template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// (redis) Stream key template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// (redis) Approximate stream length kept; 0 = no trim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxlen: Option<u64>,
    /// (http) Standard Webhooks secrets `whsec_<base64>`; the first signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SigningSecrets>,
    /// Longest one publish or request may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Event names to forward; empty = all.
    #[serde(default, deserialize_with = "crate::config::string_list")]
    pub events: Vec<String>,
    /// Which validation verdicts to forward.
    #[serde(default)]
    pub valid: ValidFilter,
    /// Longest wait between retries.
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Kind {
    Nats,
    Rabbitmq,
    Redis,
    Http,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nats => "nats",
            Self::Rabbitmq => "rabbitmq",
            Self::Redis => "redis",
            Self::Http => "http",
        }
    }

    fn schemes(self) -> &'static [&'static str] {
        match self {
            Self::Nats => &["nats", "tls"],
            Self::Rabbitmq => &["amqp", "amqps"],
            Self::Redis => &["redis", "rediss"],
            Self::Http => &["http", "https"],
        }
    }
}

impl TryFrom<String> for Kind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "nats" => Ok(Self::Nats),
            "rabbitmq" => Ok(Self::Rabbitmq),
            "redis" => Ok(Self::Redis),
            "http" => Ok(Self::Http),
            _ => Err(format!(
                "unknown kind `{s}`; valid values: nats, rabbitmq, redis, http"
            )),
        }
    }
}

/// The §12 verdicts a destination gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum ValidFilter {
    #[default]
    Any,
    Valid,
    Invalid,
}

impl ValidFilter {
    /// Whether an event with verdict `valid` is forwarded.
    pub fn admits(self, valid: Option<bool>) -> bool {
        match self {
            Self::Any => true,
            Self::Valid => valid == Some(true),
            Self::Invalid => valid == Some(false),
        }
    }
}

impl TryFrom<String> for ValidFilter {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "any" => Ok(Self::Any),
            "true" => Ok(Self::Valid),
            "false" => Ok(Self::Invalid),
            _ => Err(format!(
                "`{s}` is not a verdict; valid values: \"true\", \"false\", \"any\""
            )),
        }
    }
}

impl From<ValidFilter> for String {
    fn from(v: ValidFilter) -> Self {
        match v {
            ValidFilter::Any => "any",
            ValidFilter::Valid => "true",
            ValidFilter::Invalid => "false",
        }
        .to_owned()
    }
}

/// A destination URL: used whole to connect, shown without credentials.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DestinationUrl(String);

impl DestinationUrl {
    /// The URL with its credentials, for the client that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `scheme://host:port/path` (http: no path): never a user, a
    /// password or a query.
    pub fn label(&self) -> String {
        label(&self.0)
    }
}

/// The shown form of a destination URL (see [`DestinationUrl::label`]).
pub fn label(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            // An HTTP path is often the credential (`/services/T0/B0/XXXX`,
            // `/hook/<token>`); a broker's is a vhost or a database number.
            let secret_path = matches!(u.scheme(), "http" | "https");
            let path = if u.path() == "/" || secret_path {
                ""
            } else {
                u.path()
            };
            format!("{}://{host}{port}{path}", u.scheme())
        }
        Err(_) => "(a URL that does not parse)".to_owned(),
    }
}

impl std::fmt::Debug for DestinationUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl Serialize for DestinationUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label())
    }
}

/// Standard Webhooks secrets as configured (`whsec_<base64>`), first signs.
#[derive(Clone)]
pub struct SigningSecrets(Vec<String>);

impl SigningSecrets {
    /// The decoded key bytes, in order; `None` when one is malformed.
    pub fn keys(&self) -> Option<Vec<Vec<u8>>> {
        self.0.iter().map(|s| decode_secret(s)).collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn decode_secret(s: &str) -> Option<Vec<u8>> {
    let b64 = s.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (!key.is_empty()).then_some(key)
}

impl<'de> Deserialize<'de> for SigningSecrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::string_list(d).map(Self)
    }
}

impl std::fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret(s) redacted>", self.0.len())
    }
}

impl Serialize for SigningSecrets {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("<redacted: {} secret(s)>", self.0.len()))
    }
}

/// Checks every destination; the message names the key (`forward.NAME.KEY`).
pub fn validate(destinations: &Destinations) -> Result<(), String> {
    for (name, d) in destinations {
        let key = |k: &str| format!("forward.{name}.{k}");
        let valid_name = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(format!(
                "forward.{name}: a destination name is 1-32 of a-z, 0-9, _ and -"
            ));
        }
        check_url(d.kind, d.url.expose()).map_err(|why| format!("{}: {why}", key("url")))?;
        let only = |k: &str, set: bool, kind: Kind| -> Result<(), String> {
            if set && d.kind != kind {
                return Err(format!("{}: only for kind {}", key(k), kind.as_str()));
            }
            Ok(())
        };
        only("subject", d.subject.is_some(), Kind::Nats)?;
        only("exchange", d.exchange.is_some(), Kind::Rabbitmq)?;
        only("routing_key", d.routing_key.is_some(), Kind::Rabbitmq)?;
        only("stream", d.stream.is_some(), Kind::Redis)?;
        only("maxlen", d.maxlen.is_some(), Kind::Redis)?;
        only("secret", d.secret.is_some(), Kind::Http)?;
        let required = match d.kind {
            Kind::Nats => Some(("subject", &d.subject)),
            Kind::Rabbitmq => Some(("routing_key", &d.routing_key)),
            Kind::Redis => Some(("stream", &d.stream)),
            Kind::Http => None,
        };
        if let Some((k, template)) = required {
            let Some(text) = template else {
                return Err(format!(
                    "{}: missing (required for kind {})",
                    key(k),
                    d.kind.as_str()
                ));
            };
            let template = Template::parse(text).map_err(|why| format!("{}: {why}", key(k)))?;
            let fits = match d.kind {
                Kind::Nats => template.check_nats_subject(),
                Kind::Rabbitmq => template.check_routing_key(),
                Kind::Redis | Kind::Http => Ok(()),
            };
            fits.map_err(|why| format!("{}: {why}", key(k)))?;
        }
        if d.kind == Kind::Http {
            match &d.secret {
                None => {
                    return Err(format!(
                        "{}: missing (required for kind http: whsec_<base64>)",
                        key("secret")
                    ))
                }
                Some(s) if s.is_empty() => {
                    return Err(format!("{}: missing (empty)", key("secret")))
                }
                Some(s) => {
                    if let Some(i) = s.0.iter().position(|s| decode_secret(s).is_none()) {
                        return Err(format!(
                            "{}: secret #{} is not whsec_ followed by base64 of the key",
                            key("secret"),
                            i + 1
                        ));
                    }
                }
            }
        }
        if d.timeout.is_zero() {
            return Err(format!("{}: must be greater than 0s", key("timeout")));
        }
        if d.max_backoff < Duration::from_secs(1) {
            return Err(format!("{}: must be at least 1s", key("max_backoff")));
        }
    }
    Ok(())
}

fn check_url(kind: Kind, url: &str) -> Result<(), String> {
    let schemes = kind.schemes();
    let wanted = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    // Never quote the URL: it may hold a password.
    let parsed = url::Url::parse(url).map_err(|_| format!("not a URL (want {wanted}…)"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!(
            "scheme `{}` does not suit kind {} (want {wanted}…)",
            parsed.scheme(),
            kind.as_str()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_check_config_never_show_a_password_or_secret() {
        let env = [
            ("IMGGO__FORWARD__HOOK__KIND", "http"),
            (
                "IMGGO__FORWARD__HOOK__URL",
                "https://u:hunter2@h.example/in?t=hunter3",
            ),
            (
                "IMGGO__FORWARD__HOOK__SECRET",
                "whsec_aHVudGVyNA==,whsec_c2VjcmV0",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let settings = crate::config::Settings::load_with_env(None, env).unwrap();
        let shown = format!(
            "{settings:?}\n{}",
            toml::to_string_pretty(&settings).unwrap()
        );
        for secret in ["hunter2", "hunter3", "aHVudGVyNA", "c2VjcmV0"] {
            assert!(!shown.contains(secret), "{secret} shown");
        }
        assert!(shown.contains("https://h.example"));
        assert!(!shown.contains("h.example/in"), "an http path is shown");
        let keys = settings.forward["hook"]
            .secret
            .as_ref()
            .unwrap()
            .keys()
            .unwrap();
        assert_eq!(keys, [b"hunter4".to_vec(), b"secret".to_vec()]);
    }

    #[test]
    fn labels_never_show_credentials_or_queries() {
        assert_eq!(
            label("amqp://guest:hunter2@mq.example:5672/vhost?auth=secret"),
            "amqp://mq.example:5672/vhost"
        );
        assert_eq!(
            label("redis://:pw@127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            label("https://hooks.example:8443/services/T0/B0/tok3n?sig=x#f"),
            "https://hooks.example:8443"
        );
        assert_eq!(label("http://h.example/hook/abc"), "http://h.example");
        assert_eq!(label("::"), "(a URL that does not parse)");
    }
}
