//! `kind = "redis"`: appends each message to a Redis stream with XADD and
//! counts it sent on the XADD reply.
//!
//! Entry: key `Message.target`, entry id `"{seq.0}-{seq.1}"` (explicit,
//! increasing with the feed), fields `id` (the event id) and `body` (the
//! EVENT JSON); `MAXLEN ~ maxlen` when `maxlen > 0`. A batch goes out as
//! one pipeline per `IN_FLIGHT` entries, each entry with its own reply.
//!
//! Redis 7 has no idempotent XADD, but it refuses an explicit id that is not
//! above the stream's last one: a re-send after a crash or a failure is
//! refused there, which is how the destination holds each event once. Such
//! a refusal is confirmed only after the entry is seen in the stream with
//! the same `id` field, or as removed since (XDEL by a consumer, or trimmed
//! by MAXLEN: below the first entry while `maxlen > 0`); an entry that the
//! stream skipped (a later one got in first) is refused for good, so it
//! reaches dead letters instead of counting as sent. The stream must be
//! written by this destination alone.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};

use super::endpoint::Endpoint;
use super::publish::{BoxFuture, Message, Publisher, Verdict};

/// Entries per pipeline.
const IN_FLIGHT: usize = 256;

pub struct RedisPublisher {
    endpoint: Endpoint,
    maxlen: u64,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
}

impl std::fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPublisher")
            .field("url", &self.endpoint)
            .field("maxlen", &self.maxlen)
            .field("timeout", &self.timeout)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// What the XADD reply said about one entry.
enum Added {
    Yes,
    /// "The ID specified in XADD is equal or smaller than the target stream
    /// top item": a re-send, or an entry the stream skipped.
    NotAbove,
    No(Verdict),
}

impl RedisPublisher {
    pub fn new(url: String, maxlen: u64, timeout: Duration) -> Self {
        Self {
            endpoint: Endpoint::new(url),
            maxlen,
            timeout,
            conn: None,
        }
    }

    fn failed(&self, reason: &'static str, detail: &str) -> Verdict {
        Verdict::Failed {
            reason,
            detail: format!("redis {}: {}", self.endpoint, self.endpoint.scrub(detail)),
            retry_after: None,
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, Verdict> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let client = redis::Client::open(self.endpoint.full())
            .map_err(|e| self.failed("other", &format!("url: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = match tokio::time::timeout(
            self.timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.failed(reason_of(&e), &format!("connect: {e}"))),
            Err(_) => return Err(self.failed("timeout", "connect timed out")),
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `pipe` under the timeout; a failure drops the connection.
    async fn query(
        &mut self,
        conn: &mut MultiplexedConnection,
        pipe: &redis::Pipeline,
        what: &str,
    ) -> Result<Vec<RedisResult<Value>>, Verdict> {
        let outcome = tokio::time::timeout(self.timeout, pipe.query_async(conn)).await;
        let failed = match outcome {
            Ok(Ok(replies)) => return Ok(replies),
            Ok(Err(e)) => self.failed(reason_of(&e), &format!("{what}: {e}")),
            Err(_) => self.failed("timeout", &format!("{what} timed out")),
        };
        self.conn = None;
        Err(failed)
    }

    async fn send(&mut self, batch: &[Message]) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(IN_FLIGHT) {
            let done = self.send_chunk(chunk, &mut verdicts).await;
            if !done {
                break;
            }
        }
        verdicts
    }

    /// Appends one chunk's verdicts; false when the batch stops (a failure).
    async fn send_chunk(&mut self, chunk: &[Message], verdicts: &mut Vec<Verdict>) -> bool {
        let mut conn = match self.connection().await {
            Ok(conn) => conn,
            Err(failed) => {
                verdicts.push(failed);
                return false;
            }
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for message in chunk {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(message.target.as_bytes());
            if self.maxlen > 0 {
                xadd.arg("MAXLEN").arg("~").arg(self.maxlen);
            }
            xadd.arg(entry_id(message.seq))
                .arg("id")
                .arg(message.id.as_bytes())
                .arg("body")
                .arg(&message.body[..]);
            pipe.add_command(xadd);
        }
        let replies = match self.query(&mut conn, &pipe, "XADD").await {
            Ok(replies) => replies,
            Err(failed) => {
                verdicts.push(failed);
                return false;
            }
        };
        if replies.len() != chunk.len() {
            verdicts.push(self.failed("other", "pipeline reply count does not match"));
            return false;
        }
        let added: Vec<Added> = replies.into_iter().map(|r| self.added(r)).collect();
        let resent: Vec<&Message> = chunk
            .iter()
            .zip(&added)
            .filter(|(_, a)| matches!(a, Added::NotAbove))
            .map(|(m, _)| m)
            .collect();
        let mut checked = match self.check_resent(&mut conn, &resent).await {
            Ok(checked) => checked.into_iter(),
            Err(failed) => {
                verdicts.push(failed);
                return false;
            }
        };
        for a in added {
            let verdict = match a {
                Added::Yes => Verdict::Confirmed,
                Added::NotAbove => checked
                    .next()
                    .unwrap_or_else(|| self.failed("other", "re-send check missing")),
                Added::No(v) => v,
            };
            let failed = matches!(verdict, Verdict::Failed { .. });
            verdicts.push(verdict);
            if failed {
                return false;
            }
        }
        true
    }

    fn added(&self, reply: RedisResult<Value>) -> Added {
        match reply {
            Ok(_) => Added::Yes,
            Err(e)
                if e.detail()
                    .is_some_and(|d| d.contains("equal or smaller than")) =>
            {
                Added::NotAbove
            }
            // Entry id 0-0: no stream can ever take it.
            Err(e) if e.detail().is_some_and(|d| d.contains("greater than 0-0")) => {
                Added::No(Verdict::Refused("entry id 0-0".into()))
            }
            Err(e) => Added::No(self.failed(reason_of(&e), &format!("XADD: {e}"))),
        }
    }

    /// For each entry XADD refused as not above the stream's top: Confirmed
    /// when the stream holds it (with our `id`) or removed it by trimming,
    /// Refused when the stream skipped it.
    async fn check_resent(
        &mut self,
        conn: &mut MultiplexedConnection,
        resent: &[&Message],
    ) -> Result<Vec<Verdict>, Verdict> {
        if resent.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for message in resent {
            let id = entry_id(message.seq);
            pipe.cmd("XRANGE")
                .arg(message.target.as_bytes())
                .arg(&id)
                .arg(&id);
            pipe.cmd("XINFO")
                .arg("STREAM")
                .arg(message.target.as_bytes());
        }
        let replies = self.query(conn, &pipe, "XRANGE").await?;
        let mut replies = replies.into_iter();
        let mut verdicts = Vec::with_capacity(resent.len());
        for message in resent {
            let (Some(own), Some(info)) = (replies.next(), replies.next()) else {
                return Err(self.failed("other", "pipeline reply count does not match"));
            };
            let own = own.map_err(|e| self.failed(reason_of(&e), &format!("XRANGE: {e}")))?;
            let info = info.map_err(|e| self.failed(reason_of(&e), &format!("XINFO: {e}")))?;
            verdicts.push(match entries(&own).first() {
                Some((_, Some(id))) if *id == message.id.as_bytes() => Verdict::Confirmed,
                Some(_) => Verdict::Refused(format!(
                    "stream entry {} holds another message",
                    entry_id(message.seq)
                )),
                None if removed_since(&info, message.seq, self.maxlen > 0) => Verdict::Confirmed,
                None => Verdict::Refused(format!(
                    "the stream already holds entries after {} without it",
                    entry_id(message.seq)
                )),
            });
        }
        Ok(verdicts)
    }
}

fn entry_id(seq: (u64, u64)) -> String {
    format!("{}-{}", seq.0, seq.1)
}

/// A stream entry id `ms-seq`, ordered as Redis orders them.
type EntryId = (u64, u64);

/// `(entry id, value of field "id")` for each entry of an XRANGE reply.
fn entries(reply: &Value) -> Vec<(EntryId, Option<&[u8]>)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = parse_entry_id(pair.first()?)?;
            let id_field = match pair.get(1) {
                Some(Value::Array(fields)) => fields
                    .chunks(2)
                    .find(|kv| matches!(kv.first(), Some(Value::BulkString(k)) if k == b"id"))
                    .and_then(|kv| match kv.get(1) {
                        Some(Value::BulkString(v)) => Some(v.as_slice()),
                        _ => None,
                    }),
                _ => None,
            };
            Some((id, id_field))
        })
        .collect()
}

/// One field of an XINFO STREAM reply (a RESP3 map or a RESP2 flat list).
fn xinfo_field<'v>(info: &'v Value, field: &str) -> Option<&'v Value> {
    let pairs: Vec<(&Value, &Value)> = match info {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(flat) => flat
            .chunks(2)
            .filter_map(|kv| Some((kv.first()?, kv.get(1)?)))
            .collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| {
        let name = match k {
            Value::BulkString(b) => b.as_slice(),
            Value::SimpleString(s) => s.as_bytes(),
            _ => return None,
        };
        (name == field.as_bytes()).then_some(v)
    })
}

/// Whether the entry `seq`, absent from the stream, was there once as far
/// as the stream can tell: at or below `max-deleted-entry-id` (XDEL, e.g. by
/// a consumer), or, when we trim, below the first entry (MAXLEN).
fn removed_since(info: &Value, seq: (u64, u64), trimmed: bool) -> bool {
    let max_deleted = xinfo_field(info, "max-deleted-entry-id").and_then(parse_entry_id);
    let first = xinfo_field(info, "first-entry").and_then(|entry| match entry {
        Value::Array(pair) => pair.first().and_then(parse_entry_id),
        _ => None,
    });
    max_deleted.is_some_and(|d| seq <= d) || (trimmed && first.is_some_and(|f| seq < f))
}

fn parse_entry_id(value: &Value) -> Option<(u64, u64)> {
    let text = match value {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?,
        Value::SimpleString(s) => s.as_str(),
        _ => return None,
    };
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The metric label for a redis error.
fn reason_of(e: &redis::RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        "unreachable"
    } else {
        "other"
    }
}

impl Publisher for RedisPublisher {
    fn publish<'a>(&'a mut self, batch: &'a [Message]) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(self.send(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_round_trip() {
        assert_eq!(entry_id((1_700_000, 42)), "1700000-42");
        let v = Value::BulkString(b"1700000-42".to_vec());
        assert_eq!(parse_entry_id(&v), Some((1_700_000, 42)));
        assert_eq!(parse_entry_id(&Value::BulkString(b"x".to_vec())), None);
    }

    #[test]
    fn xrange_replies_yield_ids_and_the_id_field() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"5-1".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"id".to_vec()),
                Value::BulkString(b"ev_9".to_vec()),
                Value::BulkString(b"body".to_vec()),
                Value::BulkString(b"{}".to_vec()),
            ]),
        ])]);
        assert_eq!(entries(&reply), vec![((5, 1), Some(&b"ev_9"[..]))]);
        assert!(entries(&Value::Array(vec![])).is_empty());
    }

    #[test]
    fn removed_entries_are_told_from_skipped_ones_in_resp2_and_resp3() {
        let info = |max_deleted: &str, first: &str| {
            Value::Array(vec![
                Value::BulkString(b"max-deleted-entry-id".to_vec()),
                Value::BulkString(max_deleted.as_bytes().to_vec()),
                Value::BulkString(b"first-entry".to_vec()),
                Value::Array(vec![
                    Value::BulkString(first.as_bytes().to_vec()),
                    Value::Array(vec![]),
                ]),
            ])
        };
        // XDEL'd by a consumer.
        assert!(removed_since(&info("7-3", "9-0"), (7, 3), false));
        // Below the first entry: trimmed only if we trim.
        assert!(removed_since(&info("0-0", "9-0"), (8, 0), true));
        assert!(!removed_since(&info("0-0", "9-0"), (8, 0), false));
        // Above the first entry and never deleted: skipped.
        assert!(!removed_since(&info("0-0", "9-0"), (10, 0), true));
        let map = Value::Map(vec![(
            Value::SimpleString("max-deleted-entry-id".into()),
            Value::BulkString(b"7-3".to_vec()),
        )]);
        assert!(removed_since(&map, (1, 0), false));
        assert!(!removed_since(&Value::Nil, (1, 0), true));
    }

    #[test]
    fn debug_shows_no_credentials() {
        let p = RedisPublisher::new(
            "redis://relay:hunter22@cache.internal:6379/0".into(),
            0,
            Duration::from_secs(1),
        );
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("hunter22") && !shown.contains("relay"),
            "{shown}"
        );
        assert!(shown.contains("cache.internal:6379"), "{shown}");
    }
}
