//! One destination's relay: reads the feed (events and erasure notices, one
//! commit order) from the destination's stored position, sends it in
//! batches, and moves the position only past what the destination
//! confirmed or refused for good (a dead letter). A failure stops the batch
//! at that message; everything from it on is sent again after a backoff
//! (1 s doubling up to `max_backoff`, with jitter, `Retry-After` honoured),
//! forever. HTTP 410 pauses the destination until `forward resume`.
//!
//! **seq.** Each message carries a seq that rises with the feed: `(tx, id
//! << 10)` of its position on Postgres, `(id, 0)` on SQLite (tx = 0). A
//! replayed dead letter takes `last + 1` and is sent only once the relay
//! has caught up. Then no feed item can still come with the first part of
//! `last`: on Postgres every later item commits in a later transaction
//! (the relay reads only below the oldest one running), on SQLite every
//! later item has a higher id. So the second part has room for any number
//! of replays, however many dead letters there are.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use super::publish::{Message, Publisher, Verdict};
use crate::config::forward::{DestinationSettings, Template};
use crate::crypto::KeyRing;
use crate::event::wire;
use crate::feed::{self, CursorForm, FeedWatch, Position};
use crate::metrics as m;
use crate::store::forward::{Advance, Advanced, DeadLetter, DestinationState, Notice};
use crate::store::{FeedEvent, FeedFilter, Store, StoreError};

/// Feed items read (and sent) per batch.
const BATCH: u32 = 64;
/// Replays fit between two feed positions' seqs.
const SEQ_SHIFT: u32 = 10;
/// How often an idle or paused relay looks again without a wake-up.
const IDLE: Duration = Duration::from_secs(1);

pub struct Relay {
    pub name: String,
    pub settings: DestinationSettings,
    /// Subject, routing-key or stream template (none for `http`).
    pub template: Option<Template>,
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub form: CursorForm,
    pub publisher: Box<dyn Publisher>,
    pub feed: FeedWatch,
    /// The wait before the next retry.
    pub backoff: Backoff,
    /// This replica's lease holder id (the fence on the position).
    pub holder: String,
}

/// A feed item: a stored event or an erasure notice.
enum Item {
    Event(FeedEvent),
    Notice(Notice),
}

impl Item {
    fn position(&self) -> Position {
        match self {
            Self::Event(e) => e.position,
            Self::Notice(n) => n.position,
        }
    }
}

/// What one item becomes.
enum Slot {
    /// Filtered out (`events`, `valid`): passed over.
    Skip,
    /// Cannot be rendered: dead at once, with the reason.
    Dead(String),
    /// Sent as `batch[i]`.
    Send(usize),
}

/// What a step did.
enum Step {
    /// Sent something; go on at once.
    Busy,
    /// Nothing new.
    Idle,
    Paused,
    /// Wait this long, then try again.
    Retry(Duration),
}

/// The seq of a feed position (SQLite's have tx = 0, Postgres's never).
pub fn seq_of(p: Position) -> (u64, u64) {
    if p.tx == 0 {
        (p.id.unsigned_abs(), 0)
    } else {
        (p.tx.unsigned_abs(), p.id.unsigned_abs() << SEQ_SHIFT)
    }
}

impl Relay {
    /// Forwards until dropped or `stop` is cancelled.
    pub async fn run(&mut self, stop: &CancellationToken) {
        let mut head = self.feed.subscribe();
        while !stop.is_cancelled() {
            head.borrow_and_update();
            let wait = match self.step().await {
                Ok(Step::Busy) => continue,
                Ok(Step::Idle) => {
                    tokio::select! {
                        _ = head.changed() => {}
                        () = tokio::time::sleep(IDLE) => {}
                        () = stop.cancelled() => {}
                    }
                    continue;
                }
                Ok(Step::Paused) => IDLE,
                Ok(Step::Retry(wait)) => wait,
                Err(e) => {
                    tracing::warn!(destination = %self.name, error = %e, "forwarding cannot read or write its position; retrying");
                    IDLE
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    async fn step(&mut self) -> Result<Step, StoreError> {
        let state = self
            .store
            .forward_state(&self.name)
            .await?
            .unwrap_or_default();
        if state.paused.is_some() {
            return Ok(Step::Paused);
        }
        let items = self.read(state.position).await?;
        if items.is_empty() {
            return self.replay(&state).await;
        }
        let mut batch = Vec::new();
        let slots: Vec<Slot> = items
            .iter()
            .map(|item| self.slot(item, &mut batch))
            .collect();
        let verdicts = self.publisher.publish(&batch).await;
        let mut position = None;
        let mut seq = state.seq;
        let mut dead = Vec::new();
        let mut sent = 0u64;
        let mut stopped = None;
        // A publisher that returned fewer verdicts than it was sent, with
        // no failure among them, is treated as a failure at the first gap.
        let short = Verdict::Failed {
            reason: "other",
            detail: "the destination answered for part of the batch".to_owned(),
            retry_after: None,
        };
        for (item, slot) in items.iter().zip(&slots) {
            match slot {
                Slot::Skip => {}
                Slot::Dead(reason) => dead.push(self.dead_letter(item, reason)),
                Slot::Send(i) => match verdicts.get(*i) {
                    Some(Verdict::Confirmed) => sent += 1,
                    Some(Verdict::Refused(reason)) => dead.push(self.dead_letter(item, reason)),
                    Some(other) => {
                        stopped = Some(other);
                        break;
                    }
                    None => {
                        stopped = Some(&short);
                        break;
                    }
                },
            }
            if let Slot::Send(i) = slot {
                seq = batch[*i].seq;
            }
            position = Some(item.position());
        }
        if let Some(position) = position {
            let step = Advance {
                from: state.position,
                position,
                seq,
                dead: &dead,
                holder: &self.holder,
            };
            match self.store.forward_advance(&self.name, &step).await? {
                Advanced::Moved => {}
                Advanced::Reset => {
                    // What was sent counts, the reset stands.
                    tracing::info!(destination = %self.name, "position was reset; continuing from there");
                    return Ok(Step::Busy);
                }
                Advanced::Fenced => {
                    // Another replica took the lease: it resends what this
                    // batch sent (at-least-once); this one stands down
                    // until the lease task says it holds the lease again.
                    tracing::warn!(destination = %self.name, "another replica holds the lease now: not moving the position");
                    return Ok(Step::Retry(IDLE));
                }
            }
            self.count(sent, &dead);
        }
        if sent > 0 || !dead.is_empty() {
            // Progress: a failure after it starts the backoff again at 1 s.
            self.backoff.succeeded();
        }
        match stopped {
            None => Ok(Step::Busy),
            Some(verdict) => self.stopped(verdict).await,
        }
    }

    /// The next items after `after`, in feed order, only as far as both
    /// events and notices are known complete.
    async fn read(&mut self, after: Position) -> Result<Vec<Item>, StoreError> {
        let (bound, notices) = self.store.forward_notices(after, BATCH).await?;
        let events = self
            .store
            .feed_page(after, BATCH, &FeedFilter::default())
            .await?;
        let mut limit = bound;
        if events.len() >= BATCH as usize {
            limit = limit.min(next_after(events.last().map(|e| e.position)));
        }
        if notices.len() >= BATCH as usize {
            limit = limit.min(next_after(notices.last().map(|n| n.position)));
        }
        let mut items: Vec<Item> = events
            .into_iter()
            .map(Item::Event)
            .chain(notices.into_iter().map(Item::Notice))
            .filter(|i| i.position() < limit)
            .collect();
        items.sort_by_key(Item::position);
        items.truncate(BATCH as usize);
        Ok(items)
    }

    /// Builds `item`'s message into `batch` (or says why not).
    fn slot(&self, item: &Item, batch: &mut Vec<Message>) -> Slot {
        let message = match item {
            Item::Event(e) => {
                let row = &e.row;
                let wanted = (self.settings.events.is_empty()
                    || self.settings.events.contains(&row.event))
                    && self.settings.valid.admits(row.valid);
                if !wanted {
                    return Slot::Skip;
                }
                match self.event_message(e) {
                    Ok(m) => m,
                    Err(why) => return Slot::Dead(why),
                }
            }
            Item::Notice(n) => self.notice_message(n),
        };
        let mut message = message;
        message.seq = seq_of(item.position());
        batch.push(message);
        Slot::Send(batch.len() - 1)
    }

    fn event_message(&self, e: &FeedEvent) -> Result<Message, String> {
        let payload = wire::open(&self.keys, &e.row).map_err(|err| {
            tracing::error!(destination = %self.name, row = e.row.id, error = %err, "stored event cannot be forwarded");
            format!("cannot be read: {err}")
        })?;
        let mut body = Vec::with_capacity(payload.len() + 512);
        let cursor = feed::encode(self.form, e.position);
        wire::write(&mut body, &e.row, Some(&cursor), &payload);
        Ok(Message {
            id: e.row.id.to_string(),
            target: self.target(&e.row.event, e.row.pattern_id.as_deref()),
            body: Bytes::from(body),
            timestamp: chrono::Utc::now().timestamp(),
            seq: seq_of(e.position),
        })
    }

    fn notice_message(&self, n: &Notice) -> Message {
        let mut body = Vec::from(&b"{\"erasure\":{\"ids\":["[..]);
        for (i, id) in n.event_ids.split(',').filter(|s| !s.is_empty()).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            wire::string(&mut body, id);
        }
        body.extend_from_slice(b"]}}");
        Message {
            id: notice_id(n.position),
            target: self.target("erasure", None),
            body: Bytes::from(body),
            timestamp: chrono::Utc::now().timestamp(),
            seq: seq_of(n.position),
        }
    }

    fn target(&self, event: &str, pattern_id: Option<&str>) -> String {
        self.template
            .as_ref()
            .map(|t| t.render(event, pattern_id))
            .unwrap_or_default()
    }

    fn dead_letter(&self, item: &Item, reason: &str) -> DeadLetter {
        let (message_id, notice) = match item {
            Item::Event(e) => (e.row.id.to_string(), false),
            Item::Notice(n) => (notice_id(n.position), true),
        };
        tracing::warn!(destination = %self.name, id = %message_id, reason, "message refused: moved to dead letters");
        DeadLetter {
            message_id,
            notice,
            position: item.position(),
            reason: reason.to_owned(),
            dead_at: chrono::Utc::now().timestamp_micros(),
        }
    }

    fn count(&self, sent: u64, dead: &[DeadLetter]) {
        let name = self.name.clone();
        m::counter_forward(m::FORWARD_SENT, &name, sent);
        m::counter_forward(m::FORWARD_DEAD, &name, dead.len() as u64);
    }

    /// A batch ended at a failure or a 410.
    async fn stopped(&mut self, verdict: &Verdict) -> Result<Step, StoreError> {
        match verdict {
            Verdict::Gone(detail) => {
                tracing::warn!(destination = %self.name, detail = %detail, "destination is gone: paused until `forward resume`");
                self.store
                    .forward_set_error(&self.name, Some(detail), true)
                    .await?;
                Ok(Step::Paused)
            }
            Verdict::Failed {
                reason,
                detail,
                retry_after,
            } => {
                metrics::counter!(m::FORWARD_FAILURES, "destination" => self.name.clone(), "reason" => *reason)
                    .increment(1);
                let jitter = rand::thread_rng().gen_range(0.5..=1.0);
                let wait = self
                    .backoff
                    .failed(self.settings.max_backoff, *retry_after, jitter);
                tracing::warn!(destination = %self.name, reason, detail = %detail, retry_in_ms = wait.as_millis() as u64, "destination failed; retrying");
                let shown = if detail.is_empty() {
                    *reason
                } else {
                    detail.as_str()
                };
                self.store
                    .forward_set_error(&self.name, Some(shown), false)
                    .await?;
                Ok(Step::Retry(wait))
            }
            // Not a stop: `step` only stops at the two above.
            Verdict::Confirmed | Verdict::Refused(_) => Ok(Step::Busy),
        }
    }

    /// Caught up: sends the dead letters `forward dead replay` asked for.
    async fn replay(&mut self, state: &DestinationState) -> Result<Step, StoreError> {
        let due = self.store.forward_dead(Some(&self.name), true).await?;
        let mut seq = state.seq;
        for (_, dead) in due {
            // Caught up: nothing in the feed can come with `seq.0` any
            // more (see the module's opening), so `seq.1` has room.
            let next = (seq.0, seq.1.saturating_add(1));
            let message = if dead.notice {
                self.store
                    .forward_notice(dead.position.id)
                    .await?
                    .map(|n| Ok(self.notice_message(&n)))
            } else {
                self.store
                    .forward_event(dead.position.id)
                    .await?
                    .map(|e| self.event_message(&e))
            };
            let Some(Ok(mut message)) = message else {
                // Erased or purged since (or unreadable still): nothing to send.
                self.store
                    .forward_dead_done(&self.name, &dead.message_id)
                    .await?;
                continue;
            };
            message.seq = next;
            let verdicts = self.publisher.publish(std::slice::from_ref(&message)).await;
            match verdicts.first() {
                Some(Verdict::Confirmed) => {
                    self.backoff.succeeded();
                    self.store
                        .forward_dead_done(&self.name, &dead.message_id)
                        .await?;
                    m::counter_forward(m::FORWARD_SENT, &self.name, 1);
                    tracing::info!(destination = %self.name, id = %dead.message_id, "dead letter replayed");
                }
                Some(Verdict::Refused(reason)) => {
                    self.store
                        .forward_dead_again(&self.name, &dead.message_id, reason)
                        .await?;
                }
                Some(verdict) => return self.stopped(verdict).await,
                None => return Ok(Step::Retry(IDLE)),
            }
            seq = next;
            self.store.forward_set_seq(&self.name, seq).await?;
        }
        Ok(Step::Idle)
    }
}

/// The id of the notice at `p`: never an event's (those are digits only).
fn notice_id(p: Position) -> String {
    format!("erasure-{}", p.id)
}

/// The smallest position after `p` (a bound that keeps `p`).
fn next_after(p: Option<Position>) -> Position {
    p.map_or(Position::default(), |p| Position {
        tx: p.tx,
        id: p.id.saturating_add(1),
    })
}

/// Failures in a row, and the wait they call for: 1 s doubling up to
/// `max_backoff`, the upper half jittered, never under 1 s; a
/// `Retry-After` (capped at `max_backoff`) when it asks for longer. Any
/// success starts it again at 1 s.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Something was confirmed (or refused for good): the destination works.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// One more failure; the wait before the next try. `jitter` is drawn
    /// from `0.5..=1.0` (a parameter, so tests need no randomness).
    pub fn failed(
        &mut self,
        max_backoff: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = (self.failures - 1).min(30);
        let base = Duration::from_secs(1u64 << exp).min(max_backoff);
        let wait = base
            .mul_f64(jitter.clamp(0.5, 1.0))
            .max(Duration::from_secs(1));
        match retry_after {
            Some(asked) => wait.max(asked.min(max_backoff)),
            None => wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_to_the_cap_and_resets_after_a_success() {
        let max = Duration::from_secs(60);
        let secs = |d: Duration| d.as_secs_f64();
        let mut b = Backoff::default();
        // Full jitter (1.0): 1, 2, 4, ... capped at max.
        let full: Vec<f64> = (0..9).map(|_| secs(b.failed(max, None, 1.0))).collect();
        assert_eq!(full, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]);
        // A success: the next failure waits 1 s again.
        b.succeeded();
        assert_eq!(secs(b.failed(max, None, 1.0)), 1.0);
        // Half jitter: the lower bound of each step, never under 1 s.
        let mut b = Backoff::default();
        let low: Vec<f64> = (0..5).map(|_| secs(b.failed(max, None, 0.5))).collect();
        assert_eq!(low, [1.0, 1.0, 2.0, 4.0, 8.0]);
        // Jitter outside its range is held in it; many failures never overflow.
        let mut b = Backoff::default();
        for _ in 0..100 {
            let w = b.failed(max, None, 7.0);
            assert!(w >= Duration::from_secs(1) && w <= max, "{w:?}");
        }
        // Retry-After wins when longer, capped at max_backoff.
        let mut b = Backoff::default();
        assert_eq!(
            b.failed(max, Some(Duration::from_secs(45)), 1.0),
            Duration::from_secs(45)
        );
        assert_eq!(b.failed(max, Some(Duration::from_secs(600)), 1.0), max);
    }

    #[test]
    fn seqs_rise_with_the_feed_and_leave_room_for_replays() {
        let a = seq_of(Position { tx: 5, id: 9 });
        let b = seq_of(Position { tx: 5, id: 10 });
        let c = seq_of(Position { tx: 6, id: 2 });
        assert!(a < b && b < c);
        // Caught up at tx 5: every later item is in a later transaction.
        assert!((b.0, b.1 + 1_000_000) < c);
        // SQLite: the id leads, so replays after id 9 stay below id 10.
        let (x, y) = (
            seq_of(Position { tx: 0, id: 9 }),
            seq_of(Position { tx: 0, id: 10 }),
        );
        assert!((x.0, x.1 + 1_000_000) < y);
    }
}
