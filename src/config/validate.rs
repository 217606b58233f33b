//! The checks of the settings that types alone cannot express, run once
//! after loading; each failure names its key.

use std::net::SocketAddr;
use std::time::Duration;

use super::{forward, ConfigError, Settings, MAX_RETENTION};

/// A day: the time partitions tile it.
const DAY: Duration = Duration::from_secs(86_400);

impl Settings {
    /// Checks what types alone cannot express.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.server.max_body_bytes == 0 {
            return fail("server.max_body_bytes", "must be at least 1");
        }
        if self.server.max_connections == 0 {
            return fail("server.max_connections", "must be at least 1");
        }
        if self.server.request_timeout.is_zero() {
            return fail("server.request_timeout", "must be greater than 0s");
        }
        // A literal path: axum would read `:x`, `*x` or `{x}` as parameters.
        let path = &self.webhook.path;
        let literal = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'~' | b'-'));
        if !path.starts_with('/') || path.len() < 2 || !literal || path.contains("//") {
            return fail(
                "webhook.path",
                "must be a literal path like /webhooks/imggo (letters, digits, / . _ ~ -)",
            );
        }
        if self.webhook.path == "/healthz" || self.webhook.path == "/readyz" {
            return fail("webhook.path", "must not shadow /healthz or /readyz");
        }
        if self.rate_limit.per_second == 0 {
            return fail("rate_limit.per_second", "must be at least 1");
        }
        if self.rate_limit.burst == 0 {
            return fail("rate_limit.burst", "must be at least 1");
        }
        if self.retention.max_age.is_zero() || self.retention.max_age > MAX_RETENTION {
            return fail("retention.max_age", "must be between 1s and 100 years");
        }
        if self.retention.purge_interval.is_zero() {
            return fail("retention.purge_interval", "must be greater than 0s");
        }
        if self.retention.batch_size == 0 {
            return fail("retention.batch_size", "must be at least 1");
        }
        let interval = self.storage.partition_interval;
        if interval < Duration::from_secs(3600)
            || DAY.as_secs() % interval.as_secs() != 0
            || interval.subsec_nanos() != 0
        {
            return fail(
                "storage.partition_interval",
                "must be at least 1h and divide a day evenly (1h, 2h, 3h, 4h, 6h, 8h, 12h or 1d)",
            );
        }
        if self.database.max_connections == 0 {
            return fail("database.max_connections", "must be at least 1");
        }
        if self.database.max_batch == 0 {
            return fail("database.max_batch", "must be at least 1");
        }
        if self.database.writers == 0 || self.database.writers >= self.database.max_connections {
            return fail(
                "database.writers",
                "must be at least 1 and below database.max_connections",
            );
        }
        if self.database.queue_capacity == 0 {
            return fail("database.queue_capacity", "must be at least 1");
        }
        if self.database.acquire_timeout.is_zero() {
            return fail("database.acquire_timeout", "must be greater than 0s");
        }
        if self.spool.max_bytes == 0 && !self.spool.path.is_empty() {
            return fail(
                "spool.max_bytes",
                "must be at least 1 (or set spool.path = \"\" to turn the spool off)",
            );
        }
        if self.quarantine.max_rows == 0 {
            return fail("quarantine.max_rows", "must be at least 1");
        }
        self.redact.validate().map_err(ConfigError)?;
        if !self.api.bind.trim().is_empty() && self.api.bind_addr().is_none() {
            return fail(
                "api.bind",
                "must be an address like 127.0.0.1:8081, or \"\" to turn the API off",
            );
        }
        // Each listener its own socket: the Results API is never the public
        // listener, and a clash would only surface as "address in use".
        let listeners = [
            ("server.bind", Some(self.server.bind)),
            ("admin.bind", Some(self.admin.bind)),
            ("api.bind", self.api.bind_addr()),
        ];
        for (i, (key, addr)) in listeners.iter().enumerate() {
            for (other, other_addr) in &listeners[..i] {
                if let (Some(a), Some(b)) = (addr, other_addr) {
                    if overlaps(*a, *b) {
                        return fail(key, &format!("must not be the address of {other} ({b})"));
                    }
                }
            }
        }
        if self.api.request_timeout < Duration::from_secs(2) {
            return fail("api.request_timeout", "must be at least 2s");
        }
        if self.api.max_connections == 0 {
            return fail("api.max_connections", "must be at least 1");
        }
        if let Some(name) = self
            .subjects
            .fields
            .iter()
            .find(|n| crate::redact::normalize_name(n).is_empty())
        {
            return fail(
                "subjects.fields",
                &format!("{name:?} has no letter or digit"),
            );
        }
        if self.audit.max_age.is_zero() || self.audit.max_age > MAX_RETENTION {
            return fail("audit.max_age", "must be between 1s and 100 years");
        }
        forward::validate(&self.forward).map_err(ConfigError)?;
        Ok(())
    }
}

/// Whether two listeners would want the same socket: the same port (not 0,
/// which picks a free one) on the same address or on a wildcard.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
