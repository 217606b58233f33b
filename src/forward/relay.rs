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

pub use super::backoff::Backoff;
use super::notice;
use super::publish::{Message, Publisher, Verdict};
use super::shared::{Opened, SharedFeed};
use crate::config::forward::{DestinationSettings, Template};
use crate::crypto::KeyRing;
use crate::event::wire;
use crate::feed::{self, CursorForm, FeedWatch, Position};
use crate::metrics as m;
use crate::store::forward::{Advance, Advanced, DeadLetter, DestinationState, Notice};
use crate::store::{FeedEvent, FeedFilter, Store, StoreError};

/// Feed items read (and sent) per batch: the read-ahead an erasure counts
/// as possibly in flight (see `store::forward::erased`).
const BATCH: u32 = crate::store::forward::RELAY_BATCH;
/// Replays fit between two feed positions' seqs.
const SEQ_SHIFT: u32 = 10;
/// How often an idle or paused relay looks again without a wake-up.
const IDLE: Duration = Duration::from_secs(1);
/// The least time between two reads of the feed, unless the first filled a
/// batch (see [`Relay::run`]): a few large batches cost the database and
/// the destination far less than one tiny batch per ingest commit. A lone
/// event after a quiet spell goes at once; only the ones behind it wait.
const LINGER: Duration = Duration::from_millis(50);

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
    /// What this replica's relays read of the feed, opened, for each other.
    pub shared: Arc<SharedFeed>,
    /// The wait before the next retry.
    pub backoff: Backoff,
    /// This replica's lease holder id (the fence on the position).
    pub holder: String,
    /// The destination's row as this relay last wrote it: read once, then
    /// kept while the relay's own steps are what moves it (an advance
    /// that finds the row changed, a pause, a replay or an error drops it).
    pub state: Option<DestinationState>,
    /// When dead letters were last looked at for a replay after a batch
    /// that caught up (see [`Relay::step`]).
    pub replay_checked: Option<tokio::time::Instant>,
}

/// A feed item: a stored event (opened) or an erasure notice.
enum Item {
    Event(Arc<Opened>),
    Notice(Notice),
}

impl Item {
    fn position(&self) -> Position {
        match self {
            Self::Event(e) => e.event.position,
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
    /// Sent as `batch[range]` (an erasure notice may take several).
    Send(std::ops::Range<usize>),
}

/// What a step did.
pub(super) enum Step {
    /// Sent a full batch: go on at once.
    Busy,
    /// Sent less than a batch: go on, [`LINGER`] after this read began.
    Partial,
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
        // Another replica may have moved the row since this one last held
        // the lease.
        self.state = None;
        let mut head = self.feed.follow();
        // When the last read began, unless it filled a batch: the next one
        // waits until [`LINGER`] after it. Under ingest the feed head moves
        // at every commit, while what the relay may read (below the oldest
        // transaction still running) moves in steps: without the pause each
        // commit would cost every relay two queries that find little or
        // nothing. After a quiet spell the last read is long past, so a
        // lone event still goes at once.
        let mut last_read: Option<tokio::time::Instant> = None;
        while !stop.is_cancelled() {
            if let Some(last) = last_read {
                tokio::select! {
                    () = tokio::time::sleep_until(last + LINGER) => {}
                    () = stop.cancelled() => return,
                }
            }
            head.borrow_and_update();
            let began = tokio::time::Instant::now();
            let step = self.step().await;
            last_read = (!matches!(step, Ok(Step::Busy))).then_some(began);
            if !matches!(step, Ok(Step::Busy | Step::Partial)) {
                self.state = None;
            }
            let wait = match step {
                Ok(Step::Busy | Step::Partial) => continue,
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
        let state = match self.state.take() {
            Some(state) => state,
            None => self
                .store
                .forward_state(&self.name)
                .await?
                .unwrap_or_default(),
        };
        if state.paused.is_some() {
            return Ok(Step::Paused);
        }
        let items = self.read(state.position).await?;
        let full = items.len() >= BATCH as usize;
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
                Slot::Send(range) => {
                    match judge(&verdicts, range.clone(), &short) {
                        Ok(None) => sent += 1,
                        Ok(Some(reason)) => dead.push(self.dead_letter(item, reason)),
                        Err(stop) => {
                            stopped = Some(stop);
                            break;
                        }
                    }
                    seq = batch[range.end - 1].seq;
                }
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
                Advanced::Moved => {
                    self.state = Some(DestinationState {
                        position,
                        seq,
                        last_error: None,
                        ..state
                    });
                }
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
            None if full => Ok(Step::Busy),
            // Less than a batch: everything below the horizon is read, so
            // the relay has caught up and a replay may go now (the seq
            // rule). Under steady ingest a read rarely comes back empty,
            // so waiting for one would put replays off for as long as the
            // ingest lasts; looked at once per `IDLE`.
            None if self.replay_checked.is_none_or(|t| t.elapsed() >= IDLE) => {
                self.replay_checked = Some(tokio::time::Instant::now());
                // The replay records seqs of its own: the row is read
                // afresh before the next step.
                let Some(state) = self.state.take() else {
                    return Ok(Step::Partial);
                };
                match self.replay(&state).await? {
                    Step::Idle => Ok(Step::Partial),
                    other => Ok(other),
                }
            }
            None => Ok(Step::Partial),
            Some(verdict) => self.stopped(verdict).await,
        }
    }

    /// The next items after `after`, in feed order, only as far as both
    /// events and notices are known complete.
    async fn read(&mut self, after: Position) -> Result<Vec<Item>, StoreError> {
        let read = self.store.forward_notices(&self.name, after, BATCH).await?;
        let (events, until) = self.events(after, read.bound, read.epoch).await?;
        let notices = read.notices;
        let mut limit = read.bound.min(until);
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

    /// The events after `after`, opened, and the position below which they
    /// are complete: from the replica's shared run when it holds them
    /// under `epoch` (Postgres), else read from the database and offered
    /// to the other relays.
    async fn events(
        &mut self,
        after: Position,
        bound: Position,
        epoch: Option<i64>,
    ) -> Result<(Vec<Arc<Opened>>, Position), StoreError> {
        // The run serves and keeps events only under an erasure epoch and
        // a retention bound (Postgres).
        let shared = epoch.zip(self.store.served_since());
        if let Some((epoch, since)) = shared {
            if let Some(served) = self.shared.serve(after, epoch, BATCH as usize, since) {
                return Ok((served.events, served.until));
            }
        }
        let page = self
            .store
            .feed_page(after, BATCH, &FeedFilter::default())
            .await?;
        // A full page is complete through its last event; a shorter one
        // through everything below the bound read before it.
        let until = if page.len() >= BATCH as usize {
            next_after(page.last().map(|e| e.position))
        } else {
            bound
        };
        let opened: Vec<Arc<Opened>> = page.into_iter().map(|e| Arc::new(self.open(e))).collect();
        if let Some((epoch, _)) = shared {
            self.shared.offer(after, until, epoch, &opened);
        }
        Ok((opened, until))
    }

    /// `e` as every destination sends it, its ciphertext dropped.
    fn open(&self, mut e: FeedEvent) -> Opened {
        let body = self.body(&e);
        e.row.ciphertext = Vec::new();
        e.row.nonce = Vec::new();
        Opened { event: e, body }
    }

    /// Builds `item`'s message into `batch` (or says why not).
    fn slot(&self, item: &Item, batch: &mut Vec<Message>) -> Slot {
        // An event's message carries its feed position as its seq
        // ([`Self::message`]).
        let message = match item {
            Item::Event(e) => {
                let row = &e.event.row;
                let wanted = (self.settings.events.is_empty()
                    || self.settings.events.contains(&row.event))
                    && self.settings.valid.admits(row.valid);
                if !wanted {
                    return Slot::Skip;
                }
                match &e.body {
                    Ok(body) => self.message(&e.event, body.clone()),
                    Err(why) => return Slot::Dead(why.clone()),
                }
            }
            Item::Notice(n) => {
                let start = batch.len();
                batch.extend(self.notice_messages(n, seq_of(n.position)));
                return Slot::Send(start..batch.len());
            }
        };
        batch.push(message);
        Slot::Send(batch.len() - 1..batch.len())
    }

    pub(super) fn event_message(&self, e: &FeedEvent) -> Result<Message, String> {
        let body = self.body(e)?;
        Ok(self.message(e, body))
    }

    /// The feed's EVENT for `e`: the same for every destination of this
    /// replica (one cursor form), so it is made once and shared.
    fn body(&self, e: &FeedEvent) -> Result<Bytes, String> {
        let payload = wire::open(&self.keys, &e.row).map_err(|err| {
            tracing::error!(destination = %self.name, row = e.row.id, error = %err, "stored event cannot be forwarded");
            format!("cannot be read: {err}")
        })?;
        let mut body = Vec::with_capacity(payload.len() + 512);
        let cursor = feed::encode(self.form, e.position);
        wire::write(&mut body, &e.row, Some(&cursor), &payload);
        Ok(Bytes::from(body))
    }

    /// `e`'s message to this destination.
    fn message(&self, e: &FeedEvent, body: Bytes) -> Message {
        Message {
            id: e.row.id.to_string(),
            target: self.target(&e.row.event, e.row.pattern_id.as_deref()),
            body,
            timestamp: chrono::Utc::now().timestamp(),
            seq: seq_of(e.position),
        }
    }

    /// The notice's messages, seqs from `first` on.
    pub(super) fn notice_messages(&self, n: &Notice, first: (u64, u64)) -> Vec<Message> {
        let target = self.target("erasure", None);
        notice::messages(n.position.id, &n.event_ids, notice::IDS_PER_MESSAGE)
            .into_iter()
            .zip(0u64..)
            .map(|((id, body), k)| Message {
                id,
                target: target.clone(),
                body: Bytes::from(body),
                timestamp: chrono::Utc::now().timestamp(),
                seq: (first.0, first.1.saturating_add(k)),
            })
            .collect()
    }

    fn target(&self, event: &str, pattern_id: Option<&str>) -> String {
        self.template
            .as_ref()
            .map(|t| t.render(event, pattern_id))
            .unwrap_or_default()
    }

    fn dead_letter(&self, item: &Item, reason: &str) -> DeadLetter {
        let (message_id, notice) = match item {
            Item::Event(e) => (e.event.row.id.to_string(), false),
            Item::Notice(n) => (notice::message_id(n.position.id, 0), true),
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
    pub(super) async fn stopped(&mut self, verdict: &Verdict) -> Result<Step, StoreError> {
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
}

/// What the verdicts of `range` (one item's messages) say about it:
/// `Ok(None)` all confirmed, `Ok(Some(reason))` refused for good (the first
/// refusal's reason), `Err` the batch stops here (a failure, a 410, or no
/// verdict at all: `short`).
pub(super) fn judge<'v>(
    verdicts: &'v [Verdict],
    range: std::ops::Range<usize>,
    short: &'v Verdict,
) -> Result<Option<&'v str>, &'v Verdict> {
    let mut refused = None;
    for i in range {
        match verdicts.get(i) {
            Some(Verdict::Confirmed) => {}
            Some(Verdict::Refused(reason)) => {
                refused.get_or_insert(reason.as_str());
            }
            Some(stop) => return Err(stop),
            None => return Err(short),
        }
    }
    Ok(refused)
}

/// The smallest position after `p` (a bound that keeps `p`).
fn next_after(p: Option<Position>) -> Position {
    p.map_or(Position::default(), |p| Position {
        tx: p.tx,
        id: p.id.saturating_add(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
