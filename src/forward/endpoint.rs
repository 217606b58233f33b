//! A broker URL as the publishers hold it: the full text goes to the client
//! library and nowhere else; logs, errors and `Debug` see only
//! `scheme://host:port/path`, and any error text a client library produces
//! is scrubbed of the user name and password before it leaves the publisher.

use std::fmt;

/// A destination URL that may carry credentials.
pub struct Endpoint {
    full: String,
    shown: String,
    /// Texts that must never appear in a log line: the password and user
    /// name (raw and percent-decoded) and the whole URL.
    hidden: Vec<String>,
}

impl Endpoint {
    pub fn new(url: String) -> Self {
        let (shown, mut hidden) = match url::Url::parse(&url) {
            Ok(parsed) => {
                let mut shown = format!("{}://", parsed.scheme());
                if let Some(host) = parsed.host_str() {
                    shown.push_str(host);
                }
                if let Some(port) = parsed.port() {
                    shown.push_str(&format!(":{port}"));
                }
                let path = parsed.path();
                if path != "/" {
                    shown.push_str(path);
                }
                let mut hidden = Vec::new();
                let password = parsed.password().unwrap_or("");
                // A one- or two-letter user name would blank out half of
                // every message, and a user name alone is no secret.
                let user = Some(parsed.username()).filter(|u| u.len() >= 3);
                for part in [Some(password), user].into_iter().flatten() {
                    if !part.is_empty() {
                        hidden.push(part.to_owned());
                        if let Ok(decoded) = percent_decode(part) {
                            hidden.push(decoded);
                        }
                    }
                }
                (shown, hidden)
            }
            // Not a URL: show nothing of it (it may be all secret).
            Err(_) => ("<unparsable url>".to_owned(), Vec::new()),
        };
        hidden.push(url.clone());
        // Longest first, so a password that contains the user name is
        // replaced whole.
        hidden.sort_by_key(|h| std::cmp::Reverse(h.len()));
        hidden.dedup();
        Self {
            full: url,
            shown,
            hidden,
        }
    }

    /// The URL with its credentials: for the client library only.
    pub fn full(&self) -> &str {
        &self.full
    }

    /// `scheme://host:port/path`, without user name, password or query.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `text` (typically an error's Display from a client library) with the
    /// URL, user name and password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.hidden {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_and_debug_never_hold_credentials() {
        let e = Endpoint::new("amqp://bob:s%40cret!pw@mq.internal:5672/vhost?heartbeat=5".into());
        assert_eq!(e.shown(), "amqp://mq.internal:5672/vhost");
        assert_eq!(format!("{e:?}"), "amqp://mq.internal:5672/vhost");
        assert_eq!(format!("{e}"), "amqp://mq.internal:5672/vhost");
        assert_eq!(
            e.full(),
            "amqp://bob:s%40cret!pw@mq.internal:5672/vhost?heartbeat=5"
        );
    }

    #[test]
    fn scrub_removes_password_raw_and_decoded_and_the_whole_url() {
        let url = "redis://default:s%40cret!pw@cache:6379/0";
        let e = Endpoint::new(url.into());
        let text = format!("failed {url}: auth s@cret!pw / s%40cret!pw rejected for default");
        let scrubbed = e.scrub(&text);
        assert!(!scrubbed.contains("s@cret!pw"), "{scrubbed}");
        assert!(!scrubbed.contains("s%40cret!pw"), "{scrubbed}");
        assert!(!scrubbed.contains(url), "{scrubbed}");
        assert!(!scrubbed.contains("default"), "{scrubbed}");
    }

    #[test]
    fn a_short_password_is_still_scrubbed() {
        let e = Endpoint::new("nats://u:pw@n:4222".into());
        assert_eq!(e.scrub("bad pw here"), "bad *** here");
    }

    #[test]
    fn no_credentials_keeps_the_text() {
        let e = Endpoint::new("nats://127.0.0.1:4222".into());
        assert_eq!(e.shown(), "nats://127.0.0.1:4222");
        assert_eq!(e.scrub("connection refused"), "connection refused");
    }

    #[test]
    fn an_unparsable_url_is_never_shown() {
        let e = Endpoint::new("not a url with secret".into());
        assert_eq!(e.shown(), "<unparsable url>");
        assert_eq!(e.scrub("saw not a url with secret"), "saw ***");
    }
}
