//! src/forward/publish.rs: what every destination kind implements. Owned by the
//! forwarding-core helper; the brokers helper compiles against exactly this text
//! (create the file verbatim if main does not have it yet).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so `Publisher` stays object-safe (`Box<dyn Publisher>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message for a destination, in the order the relay sends them.
#[derive(Clone)]
pub struct Message {
    /// Stable and unique per stored event (the §9 EVENT `id`) or per erasure
    /// notice: the destination's dedup id (Nats-Msg-Id, AMQP message_id,
    /// Redis entry field `id`, HTTP webhook-id).
    pub id: String,
    /// The rendered template: NATS subject, AMQP routing key, Redis stream key.
    /// Empty for HTTP.
    pub target: String,
    /// JSON body: the §9 EVENT object, or `{"erasure":{"ids":[...]}}`.
    pub body: bytes::Bytes,
    /// Unix seconds when the relay built the message (HTTP webhook-timestamp).
    pub timestamp: i64,
    /// Strictly increasing across everything one destination is ever sent,
    /// notices included: the Redis explicit entry id `"{seq.0}-{seq.1}"`.
    pub seq: (u64, u64),
}

impl std::fmt::Debug for Message {
    // Never the body: a Debug line must not carry payload data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("target", &self.target)
            .field("bytes", &self.body.len())
            .field("seq", &self.seq)
            .finish()
    }
}

/// What a destination said about one message.
#[derive(Debug)]
pub enum Verdict {
    /// Confirmed by the destination (JetStream PublishAck, AMQP publisher
    /// confirm ack, XADD reply or "id not above last" for a re-send, HTTP 2xx).
    Confirmed,
    /// This one message is refused for good: it goes to dead letters with
    /// this reason (safe to log: no secret, no payload) and the relay goes on.
    Refused(String),
    /// The destination failed: this message and everything after it are
    /// retried later with backoff. `reason` is the metric label, one of
    /// "unreachable", "timeout", "status_5xx", "status_408", "status_429",
    /// "nack", "unroutable", "other". `detail` is safe to log.
    Failed {
        reason: &'static str,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 410 Gone: the destination pauses until `forward resume`.
    Gone(String),
}

pub trait Publisher: Send {
    /// Sends `batch` in order, with as many messages in flight as the
    /// destination allows, and returns one verdict per message for a prefix of
    /// `batch`: the prefix ends at (and includes) the first `Failed` or `Gone`;
    /// the relay treats everything after it as not sent. Connection problems
    /// come back as `Failed`; the publisher (re)connects lazily on its next
    /// call, every network call under the destination's `timeout`.
    fn publish<'a>(&'a mut self, batch: &'a [Message]) -> BoxFuture<'a, Vec<Verdict>>;
}
