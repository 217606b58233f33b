//! The `http` kind: each message is a `POST` of its body to the
//! destination's URL, signed as Standard Webhooks specifies
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature` = `v1,<base64
//! HMAC-SHA256 of "{id}.{timestamp}.{body}">`), signed by the first
//! configured secret only (CONTRACT §11: the others are kept for rotation,
//! never used to sign). Every request, a retry included, is signed afresh
//! with the time it leaves: Standard Webhooks consumers refuse timestamps
//! older than about 5 minutes, so a timestamp fixed when the message was
//! built would be refused for good after a longer outage.
//!
//! One request at a time, in order: HTTP has no ordering across parallel
//! requests, and CONTRACT §11 promises feed order where nothing failed.
//! The answer decides: 2xx confirmed; 408, 429 and 5xx (and no answer) a
//! failure retried with backoff, `Retry-After` honoured; 410 pauses the
//! destination; any other status refuses that one message (dead letter).

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use sha2::Sha256;

use super::publish::{BoxFuture, Message, Publisher, Verdict};

pub struct HttpPublisher {
    client: reqwest::Client,
    url: String,
    /// The decoded signing key: the first configured secret.
    key: Vec<u8>,
}

impl HttpPublisher {
    /// `keys`: the decoded `whsec_` secrets; only the first signs.
    pub fn new(url: String, keys: Vec<Vec<u8>>, timeout: Duration) -> Result<Self, String> {
        let key = keys
            .into_iter()
            .next()
            .ok_or("an http destination needs `secret`")?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would re-send the signed body somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("imggo-receiver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
        Ok(Self { client, url, key })
    }

    async fn send(&self, message: &Message) -> Verdict {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // The time of this request, not of the message's first attempt.
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&self.key, &message.id, timestamp, &message.body);
        for (name, value) in [
            ("webhook-id", message.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(_) => return Verdict::Refused(format!("{name} is not a header value")),
            }
        }
        let answer = self
            .client
            .post(&self.url)
            .headers(headers)
            .body(message.body.clone())
            .send()
            .await;
        match answer {
            Ok(response) => judge(response.status().as_u16(), response.headers()),
            Err(e) => failure(&e),
        }
    }
}

impl Publisher for HttpPublisher {
    fn publish<'a>(&'a mut self, batch: &'a [Message]) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(async move {
            let mut verdicts = Vec::with_capacity(batch.len());
            for message in batch {
                let verdict = self.send(message).await;
                let stop = matches!(verdict, Verdict::Failed { .. } | Verdict::Gone(_));
                verdicts.push(verdict);
                if stop {
                    break;
                }
            }
            verdicts
        })
    }
}

/// The `webhook-signature` header: `v1,<base64>` by `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// What an answer's status means for the message.
fn judge(status: u16, headers: &HeaderMap) -> Verdict {
    let failed = |reason: &'static str| Verdict::Failed {
        reason,
        detail: format!("HTTP {status}"),
        retry_after: retry_after(headers),
    };
    match status {
        200..=299 => Verdict::Confirmed,
        408 => failed("status_408"),
        429 => failed("status_429"),
        410 => Verdict::Gone(format!("HTTP {status} Gone")),
        500..=599 => failed("status_5xx"),
        400..=499 => Verdict::Refused(format!("HTTP {status}")),
        // 1xx and 3xx (redirects are not followed): a misconfigured
        // endpoint; nothing is lost by trying again later.
        _ => failed("other"),
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// No answer: why, without the URL (it may hold credentials).
fn failure(e: &reqwest::Error) -> Verdict {
    let reason = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "unreachable"
    } else {
        "other"
    };
    let mut detail = String::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cause {
        detail = c.to_string();
        cause = c.source();
    }
    let detail = if detail.is_empty() {
        reason.replace('_', " ")
    } else {
        format!("{reason}: {detail}")
    };
    Verdict::Failed {
        reason,
        detail,
        retry_after: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference
        // libraries (secret, id, timestamp, body and signature).
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn only_the_first_secret_signs() {
        let p = HttpPublisher::new(
            "http://127.0.0.1:9/".into(),
            vec![b"new".to_vec(), b"old".to_vec()],
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(p.key, b"new");
        let sig = sign(&p.key, "1", 2, b"{}");
        assert_eq!(sig.matches("v1,").count(), 1, "{sig}");
        assert_eq!(sig, sign(b"new", "1", 2, b"{}"));
        assert_ne!(sig, sign(b"old", "1", 2, b"{}"));
    }

    #[test]
    fn statuses_decide_the_verdict() {
        let none = HeaderMap::new();
        assert!(matches!(judge(204, &none), Verdict::Confirmed));
        assert!(matches!(judge(400, &none), Verdict::Refused(_)));
        assert!(matches!(judge(410, &none), Verdict::Gone(_)));
        for (status, want) in [
            (408, "status_408"),
            (429, "status_429"),
            (503, "status_5xx"),
        ] {
            match judge(status, &none) {
                Verdict::Failed { reason, .. } => assert_eq!(reason, want),
                other => panic!("{status}: {other:?}"),
            }
        }
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        match judge(429, &h) {
            Verdict::Failed { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }
}
