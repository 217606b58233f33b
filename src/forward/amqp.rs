//! `kind = "rabbitmq"`: publishes to an AMQP 0.9.1 exchange (RabbitMQ) on a
//! channel in confirm mode and counts a message sent only when the broker's
//! publisher confirm acked it.
//!
//! Each message is published `mandatory` (an unroutable message comes back
//! as basic.return instead of being confirmed and dropped), persistent
//! (delivery mode 2), with `message_id` = the event id, `content_type`
//! `application/json`, routing key `Message.target`. A batch is published
//! back to back (up to `IN_FLIGHT` awaiting confirms) and the confirms are
//! awaited in order.
//!
//! A message the broker refuses as too large (RabbitMQ's `max_message_size`,
//! 16 MiB by default since 4.0, 128 MiB before, at most 512 MiB) is a
//! refusal of that one message, not a failure of the destination: RabbitMQ
//! closes the channel with 406 PRECONDITION_FAILED and a reason naming the
//! message size, which lapin hands to the publish or its confirm; that
//! close is told apart from other 406s by its reason text ([`too_large`]).
//! The broker's limit is its own setting, so it is read from its answer,
//! not guessed here. The rest of the batch, published on the closed
//! channel, fails and is sent again on a fresh one.
//!
//! lapin has known hangs (issues #245, #367, #437, #470): every call into
//! it — connect, channel, confirm_select, publish, confirm — runs under the
//! destination's timeout, and after any failure the connection is dropped
//! and made afresh on the next batch.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::endpoint::Endpoint;
use super::publish::{BoxFuture, Message, Publisher, Verdict};

/// Publishes awaiting their confirm at once.
const IN_FLIGHT: usize = 256;

/// AMQP short strings (routing key, message id) hold at most 255 bytes.
const SHORT_STRING_MAX: usize = 255;

pub struct AmqpPublisher {
    endpoint: Endpoint,
    exchange: String,
    timeout: Duration,
    open: Option<Open>,
}

struct Open {
    connection: Connection,
    channel: Channel,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("url", &self.endpoint)
            .field("exchange", &self.exchange)
            .field("timeout", &self.timeout)
            .field("connected", &self.open.is_some())
            .finish()
    }
}

enum Pending {
    /// The confirm, and the body's size.
    Confirm(PublisherConfirm, usize),
    Decided(Verdict),
}

impl AmqpPublisher {
    pub fn new(url: String, exchange: String, timeout: Duration) -> Self {
        Self {
            endpoint: Endpoint::new(url),
            exchange,
            timeout,
            open: None,
        }
    }

    /// Runs one lapin call under the timeout; `what` names it in the detail.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T, Verdict> {
        self.call_for(what, call, None).await
    }

    /// [`Self::call`] for the publish or confirm of a body of `size` bytes:
    /// the broker's size refusal is this message's only if it is over the
    /// limit the broker names (the close fails every pending confirm).
    async fn call_for<T>(
        &self,
        what: &str,
        call: impl Future<Output = lapin::Result<T>>,
        size: Option<usize>,
    ) -> Result<T, Verdict> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(match (too_large(&e), size) {
                (Some((why, max)), Some(size)) if size as u64 > max => {
                    Verdict::Refused(format!("rabbitmq refused the message: {why}"))
                }
                _ => self.failed(reason_of(&e), &format!("{what}: {e}")),
            }),
            Err(_) => Err(self.failed("timeout", &format!("{what} timed out"))),
        }
    }

    fn failed(&self, reason: &'static str, detail: &str) -> Verdict {
        Verdict::Failed {
            reason,
            detail: format!(
                "rabbitmq {}: {}",
                self.endpoint,
                self.endpoint.scrub(detail)
            ),
            retry_after: None,
        }
    }

    async fn channel(&mut self) -> Result<Channel, Verdict> {
        if let Some(open) = &self.open {
            if open.connection.status().connected() && open.channel.status().connected() {
                return Ok(open.channel.clone());
            }
            self.reset();
        }
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let connection = self
            .call(
                "connect",
                Connection::connect(self.endpoint.full(), properties),
            )
            .await?;
        let opened = async {
            let channel = self.call("channel", connection.create_channel()).await?;
            self.call(
                "confirm_select",
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
            Ok(channel)
        }
        .await;
        match opened {
            Ok(channel) => {
                self.open = Some(Open {
                    connection,
                    channel: channel.clone(),
                });
                Ok(channel)
            }
            Err(failed) => {
                close_in_background(connection, self.timeout);
                Err(failed)
            }
        }
    }

    /// Drops the connection; closing it runs in the background, bounded.
    fn reset(&mut self) {
        if let Some(open) = self.open.take() {
            close_in_background(open.connection, self.timeout);
        }
    }

    async fn send(&mut self, batch: &[Message]) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(batch.len());
        if batch.is_empty() {
            return verdicts;
        }
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(failed) => return vec![failed],
        };
        let mut pending = VecDeque::with_capacity(IN_FLIGHT.min(batch.len()));
        let mut stopped = false;
        for message in batch {
            while !stopped && pending.len() >= IN_FLIGHT {
                stopped = !self.settle_front(&mut pending, &mut verdicts).await;
            }
            if stopped {
                break;
            }
            if let Some(refusal) = refuse(message) {
                pending.push_back(Pending::Decided(refusal));
                continue;
            }
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(message.id.as_str().into())
                .with_content_type("application/json".into())
                .with_timestamp(u64::try_from(message.timestamp).unwrap_or(0));
            let publish = channel.basic_publish(
                &self.exchange,
                &message.target,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties,
            );
            let size = message.body.len();
            match self.call_for("publish", publish, Some(size)).await {
                Ok(confirm) => pending.push_back(Pending::Confirm(confirm, size)),
                Err(failed) => {
                    pending.push_back(Pending::Decided(failed));
                    break;
                }
            }
        }
        while !stopped && !pending.is_empty() {
            stopped = !self.settle_front(&mut pending, &mut verdicts).await;
        }
        if matches!(verdicts.last(), Some(Verdict::Failed { reason, .. }) if *reason != "unroutable")
        {
            self.reset();
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
            Pending::Confirm(confirm, size) => match self
                .call_for("confirm", confirm, Some(size))
                .await
            {
                Ok(Confirmation::Ack(None)) => Verdict::Confirmed,
                Ok(Confirmation::Ack(Some(returned))) => Verdict::Failed {
                    reason: "unroutable",
                    detail: format!(
                        "rabbitmq {}: returned unroutable by exchange {:?}: {} {}",
                        self.endpoint,
                        self.exchange,
                        returned.reply_code,
                        returned.reply_text.as_str()
                    ),
                    retry_after: None,
                },
                Ok(Confirmation::Nack(_)) => self.failed("nack", "the broker nacked the message"),
                Ok(Confirmation::NotRequested) => {
                    self.failed("other", "channel is not in confirm mode")
                }
                Err(failed) => failed,
            },
        };
        let failed = matches!(verdict, Verdict::Failed { .. });
        verdicts.push(verdict);
        !failed
    }
}

/// The metric label for a lapin error.
fn reason_of(e: &lapin::Error) -> &'static str {
    match e.kind() {
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::InvalidChannelState(..)
        | lapin::ErrorKind::MissingHeartbeatError => "unreachable",
        _ => "other",
    }
}

/// The broker's reason and limit when `e` is its refusal of a message as
/// too large: a channel close 406 PRECONDITION_FAILED naming the message
/// size (RabbitMQ: "message size N is larger than configured max size M").
fn too_large(e: &lapin::Error) -> Option<(String, u64)> {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let lapin::ErrorKind::ProtocolError(error) = e.kind() else {
        return None;
    };
    if !matches!(
        error.kind(),
        AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    ) {
        return None;
    }
    let text = error.get_message().as_str();
    let lower = text.to_ascii_lowercase();
    if !lower.contains("message size") {
        return None;
    }
    let (_, after) = lower.split_once("max size")?;
    let max: u64 = after
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((text.chars().take(200).collect(), max))
}

/// A message no broker could take as it is: refused for good.
fn refuse(message: &Message) -> Option<Verdict> {
    if message.target.len() > SHORT_STRING_MAX {
        return Some(Verdict::Refused(format!(
            "routing key of {} bytes is over AMQP's 255",
            message.target.len()
        )));
    }
    if message.id.len() > SHORT_STRING_MAX {
        return Some(Verdict::Refused("message id over AMQP's 255 bytes".into()));
    }
    None
}

fn close_in_background(connection: Connection, timeout: Duration) {
    tokio::spawn(async move {
        let _ =
            tokio::time::timeout(timeout, connection.close(320, "imggo-receiver reconnects")).await;
    });
}

impl Publisher for AmqpPublisher {
    fn publish<'a>(&'a mut self, batch: &'a [Message]) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(self.send(batch))
    }
}

impl Drop for AmqpPublisher {
    fn drop(&mut self) {
        // Within a runtime only (a publisher dropped at exit has none).
        if tokio::runtime::Handle::try_current().is_ok() {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_long_routing_keys_and_ids_are_refused() {
        let mut m = Message {
            id: "ev_1".into(),
            target: "a".repeat(255),
            body: bytes::Bytes::from_static(b"{}"),
            timestamp: 0,
            seq: (0, 1),
        };
        assert!(refuse(&m).is_none());
        m.target.push('a');
        assert!(matches!(refuse(&m), Some(Verdict::Refused(_))));
        m.target = "k".into();
        m.id = "i".repeat(256);
        assert!(matches!(refuse(&m), Some(Verdict::Refused(_))));
    }

    fn closed(kind: lapin::protocol::AMQPSoftError, text: &str) -> lapin::Error {
        let error = lapin::protocol::AMQPError::new(
            lapin::protocol::AMQPErrorKind::Soft(kind),
            text.into(),
        );
        lapin::ErrorKind::ProtocolError(error).into()
    }

    #[test]
    fn only_a_406_close_naming_the_message_size_is_a_refusal() {
        use lapin::protocol::AMQPSoftError::{ACCESSREFUSED, PRECONDITIONFAILED};
        let text = "PRECONDITION_FAILED - message size 20000000 is larger than configured max size 16777216";
        let (why, max) = too_large(&closed(PRECONDITIONFAILED, text)).unwrap();
        assert_eq!(max, 16_777_216);
        assert!(why.contains("larger than configured max size"), "{why}");
        // Other 406s (an exchange redeclared differently, …) stay failures.
        let other = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x'";
        assert!(too_large(&closed(PRECONDITIONFAILED, other)).is_none());
        assert!(too_large(&closed(ACCESSREFUSED, text)).is_none());
        let io = lapin::ErrorKind::IOError(std::sync::Arc::new(std::io::Error::other("x")));
        assert!(too_large(&io.into()).is_none());
    }

    #[test]
    fn debug_shows_no_credentials() {
        let p = AmqpPublisher::new(
            "amqp://relay:hunter22@mq.internal:5672/%2f".into(),
            "events".into(),
            Duration::from_secs(1),
        );
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("hunter22") && !shown.contains("relay"),
            "{shown}"
        );
        assert!(shown.contains("mq.internal:5672"), "{shown}");
    }
}
