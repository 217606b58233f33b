//! `kind = "nats"`: publishes to NATS JetStream and counts a message sent
//! only when its stream's `PublishAck` came back.
//!
//! Each message goes to the subject `Message.target` with the header
//! `Nats-Msg-Id` = the event id, so JetStream drops a re-send within the
//! stream's `duplicate_window`. A batch is written out back to back (up to
//! `IN_FLIGHT` publishes awaiting their acks at once) and the acks are
//! awaited in order, each under the destination's timeout. A plain core-NATS
//! publish has no ack at all, so only the JetStream context is used.
//!
//! The connection is made on the first publish and made again after any
//! failure that may have left it broken: async-nats would otherwise buffer
//! our publishes through an outage and send them late.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishErrorKind};
use async_nats::{header, HeaderMap};

use super::endpoint::Endpoint;
use super::publish::{BoxFuture, Message, Publisher, Verdict};

/// Publishes awaiting their ack at once: enough to keep a remote server's
/// pipe full, bounded so a batch never holds more than this in memory twice.
const IN_FLIGHT: usize = 256;

/// Reconnect attempts async-nats makes on its own for a connection we hold;
/// after them (or any failure) we connect afresh on the next batch.
const CLIENT_RECONNECTS: usize = 3;

pub struct NatsPublisher {
    endpoint: Endpoint,
    timeout: Duration,
    conn: Option<Connection>,
}

struct Connection {
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

impl std::fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPublisher")
            .field("url", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// One publish of a batch, in batch order: waiting for its ack, or already
/// decided (refused before it was sent).
enum Pending {
    Ack(Box<PublishAckFuture>),
    Decided(Verdict),
}

impl NatsPublisher {
    pub fn new(url: String, timeout: Duration) -> Self {
        Self {
            endpoint: Endpoint::new(url),
            timeout,
            conn: None,
        }
    }

    async fn connection(&mut self) -> Result<&Connection, Verdict> {
        if self.conn.as_ref().is_some_and(|c| {
            c.client.connection_state() != async_nats::connection::State::Connected
        }) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let options = async_nats::ConnectOptions::new()
                .connection_timeout(self.timeout)
                .request_timeout(Some(self.timeout))
                .max_reconnects(CLIENT_RECONNECTS);
            let client =
                match tokio::time::timeout(self.timeout, options.connect(self.endpoint.full()))
                    .await
                {
                    Ok(Ok(client)) => client,
                    Ok(Err(e)) => return Err(self.failed("unreachable", &format!("connect: {e}"))),
                    Err(_) => return Err(self.failed("timeout", "connect timed out")),
                };
            let jetstream = jetstream::ContextBuilder::new()
                .timeout(self.timeout)
                .max_ack_inflight(IN_FLIGHT)
                .build(client.clone());
            self.conn = Some(Connection { client, jetstream });
        }
        self.conn
            .as_ref()
            .ok_or_else(|| self.failed("other", "no connection"))
    }

    fn failed(&self, reason: &'static str, detail: &str) -> Verdict {
        Verdict::Failed {
            reason,
            detail: format!("nats {}: {}", self.endpoint, self.endpoint.scrub(detail)),
            retry_after: None,
        }
    }

    async fn send(&mut self, batch: &[Message]) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(batch.len());
        if batch.is_empty() {
            return verdicts;
        }
        let (jetstream, max_payload) = match self.connection().await {
            Ok(c) => (c.jetstream.clone(), c.client.server_info().max_payload),
            Err(failed) => return vec![failed],
        };
        let mut pending: VecDeque<Pending> = VecDeque::with_capacity(IN_FLIGHT.min(batch.len()));
        let mut stopped = false;
        for message in batch {
            while !stopped && pending.len() >= IN_FLIGHT {
                stopped = !self.settle_front(&mut pending, &mut verdicts).await;
            }
            if stopped {
                break;
            }
            if let Some(refusal) = refuse(message, max_payload) {
                pending.push_back(Pending::Decided(refusal));
                continue;
            }
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, message.id.as_str());
            let publish = jetstream.publish_with_headers(
                message.target.clone(),
                headers,
                message.body.clone(),
            );
            match tokio::time::timeout(self.timeout, publish).await {
                Ok(Ok(ack)) => pending.push_back(Pending::Ack(Box::new(ack))),
                Ok(Err(e)) => {
                    pending.push_back(Pending::Decided(self.publish_failure(&e, message)));
                    break;
                }
                Err(_) => {
                    pending.push_back(Pending::Decided(
                        self.failed("timeout", "publish timed out"),
                    ));
                    break;
                }
            }
        }
        while !stopped && !pending.is_empty() {
            stopped = !self.settle_front(&mut pending, &mut verdicts).await;
        }
        if matches!(verdicts.last(), Some(Verdict::Failed { reason, .. }) if *reason != "unroutable")
        {
            // The connection may be broken or may still carry our publishes:
            // the next batch starts on a fresh one.
            self.conn = None;
        }
        verdicts
    }

    /// Resolves the oldest pending publish into `verdicts`; false when it
    /// failed (the batch stops there).
    async fn settle_front(
        &self,
        pending: &mut VecDeque<Pending>,
        verdicts: &mut Vec<Verdict>,
    ) -> bool {
        let Some(front) = pending.pop_front() else {
            return true;
        };
        let verdict = match front {
            Pending::Decided(v) => v,
            Pending::Ack(ack) => {
                // The ack future has the same timeout inside; this outer one
                // is the promise that no await here outlives the deadline.
                match tokio::time::timeout(
                    self.timeout + Duration::from_secs(1),
                    std::future::IntoFuture::into_future(*ack),
                )
                .await
                {
                    Ok(Ok(_ack)) => Verdict::Confirmed,
                    Ok(Err(e)) => self.ack_failure(&e),
                    Err(_) => self.failed("timeout", "no PublishAck in time"),
                }
            }
        };
        let failed = matches!(verdict, Verdict::Failed { .. });
        verdicts.push(verdict);
        !failed
    }

    fn publish_failure(&self, e: &jetstream::context::PublishError, message: &Message) -> Verdict {
        match e.kind() {
            PublishErrorKind::TimedOut => self.failed("timeout", "publish timed out"),
            PublishErrorKind::StreamNotFound => self.no_stream(message),
            _ => self.failed("unreachable", &format!("publish: {e}")),
        }
    }

    fn ack_failure(&self, e: &jetstream::context::PublishError) -> Verdict {
        use std::error::Error as _;
        let api_error = e
            .source()
            .and_then(|s| s.downcast_ref::<jetstream::Error>());
        if api_error
            .is_some_and(|a| a.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
        {
            return Verdict::Refused("message larger than the stream's max_msg_size".into());
        }
        match e.kind() {
            PublishErrorKind::TimedOut => self.failed("timeout", "no PublishAck in time"),
            PublishErrorKind::StreamNotFound => Verdict::Failed {
                reason: "unroutable",
                detail: format!(
                    "nats {}: no JetStream stream captures the subject",
                    self.endpoint
                ),
                retry_after: None,
            },
            PublishErrorKind::BrokenPipe => {
                self.failed("unreachable", "connection lost before the PublishAck")
            }
            _ => self.failed("other", &format!("publish refused: {e}")),
        }
    }

    fn no_stream(&self, message: &Message) -> Verdict {
        Verdict::Failed {
            reason: "unroutable",
            detail: format!(
                "nats {}: no JetStream stream captures subject {:?}",
                self.endpoint, message.target
            ),
            retry_after: None,
        }
    }
}

/// A message the server could never take: refused before it is sent. A
/// payload over `max_payload` would make the server close the connection
/// (JetStream publishes are not checked by the client).
fn refuse(message: &Message, max_payload: usize) -> Option<Verdict> {
    // HPUB counts headers and body against max_payload.
    let header_bytes = "NATS/1.0\r\nNats-Msg-Id: \r\n\r\n".len() + message.id.len();
    if message.body.len() + header_bytes > max_payload {
        return Some(Verdict::Refused(format!(
            "message of {} bytes is over the server's max_payload of {max_payload}",
            message.body.len() + header_bytes
        )));
    }
    if !valid_subject(&message.target) {
        return Some(Verdict::Refused("not a valid NATS subject".into()));
    }
    None
}

/// Tokens separated by `.`, none empty, no whitespace or control
/// characters: anything else corrupts the protocol line.
fn valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| !token.is_empty())
        && !subject.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Publisher for NatsPublisher {
    fn publish<'a>(&'a mut self, batch: &'a [Message]) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(self.send(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: usize, target: &str) -> Message {
        Message {
            id: "ev_1".into(),
            target: target.into(),
            body: bytes::Bytes::from(vec![b'x'; body]),
            timestamp: 0,
            seq: (0, 1),
        }
    }

    #[test]
    fn a_payload_over_max_payload_is_refused_before_sending() {
        assert!(refuse(&message(100, "a.b"), 1024).is_none());
        assert!(matches!(
            refuse(&message(1024, "a.b"), 1024),
            Some(Verdict::Refused(_))
        ));
    }

    #[test]
    fn subjects_that_break_the_protocol_are_refused() {
        for bad in ["", "a..b", ".a", "a.", "a b", "a\r\nPUB x 1", "a\tb"] {
            assert!(!valid_subject(bad), "{bad:?}");
        }
        for good in ["imggo", "imggo.job.succeeded", "imggo.>", "a.*.c", "x-y_z"] {
            assert!(valid_subject(good), "{good:?}");
        }
    }

    #[test]
    fn debug_shows_no_credentials() {
        let p = NatsPublisher::new(
            "nats://relay:hunter22@nats.internal:4222".into(),
            Duration::from_secs(1),
        );
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("hunter22") && !shown.contains("relay"),
            "{shown}"
        );
        assert!(shown.contains("nats.internal:4222"), "{shown}");
    }
}
