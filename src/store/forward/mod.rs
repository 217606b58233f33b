//! Forwarding's SQL (CONTRACT §11): each destination's position and state,
//! its dead letters, the erasure notices, the lag, and the Postgres lease
//! connection's advisory locks. The relay itself lives in `crate::forward`.
//!
//! One room per concern: [`positions`] (each destination's row, its
//! position, state and lag, and the missed count retention adds),
//! [`dead`] (dead letters), [`erased`] (what an erasure tells each
//! destination), [`notices`] (erasure notices and reading one event or
//! notice again), [`lease`] (who forwards a destination).

mod dead;
mod erased;
mod lease;
mod notices;
mod positions;

pub use erased::RELAY_BATCH;
pub(crate) use erased::{notice_pg, notice_sqlite, Erased, RETURNING_PG, RETURNING_SQLITE};
pub use lease::{claim, keepalive, ping, try_lock};
pub use notices::NoticeRead;
pub(crate) use notices::{purge_pg, purge_sqlite};
pub(crate) use positions::{count_missed_pg, count_missed_sqlite};
pub use positions::{Filters, LAG_COUNT_PG, LAG_EXACT, LAG_OLDEST_PG};

use chrono::Utc;

use super::feed::Position;

/// A destination's row.
#[derive(Clone, Debug, Default)]
pub struct DestinationState {
    /// Every message up to here was confirmed or dead-lettered.
    pub position: Position,
    /// The last seq sent (a replay takes the next one).
    pub seq: (u64, u64),
    /// Why it is paused (HTTP 410), or `None`.
    pub paused: Option<String>,
    pub last_error: Option<String>,
    /// Events purged by retention before it forwarded them.
    pub missed: u64,
}

/// An erasure notice and its place in the feed.
#[derive(Clone, Debug)]
pub struct Notice {
    pub position: Position,
    /// The deleted events' ids this destination hears of, comma-separated.
    pub event_ids: String,
}

/// A message a destination refused for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub notice: bool,
    /// Where it is in the feed (to read it again for a replay).
    pub position: Position,
    pub reason: String,
    /// Unix microseconds.
    pub dead_at: i64,
}

/// A confirmed step of the relay: the new position, the last seq sent, and
/// the messages dead-lettered on the way (written in one transaction).
pub struct Advance<'a> {
    /// Where the relay read from: the step applies only if the position is
    /// still there (a `forward reset` meanwhile wins).
    pub from: Position,
    pub position: Position,
    pub seq: (u64, u64),
    pub dead: &'a [DeadLetter],
    /// This replica's lease holder id: the step applies only while the
    /// destination's lease is still this replica's.
    pub holder: &'a str,
}

/// What [`Store::forward_advance`](crate::store::Store::forward_advance) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advanced {
    Moved,
    /// The position was reset meanwhile (`forward reset`): nothing written.
    Reset,
    /// Another replica holds the lease now: nothing written.
    Fenced,
}

pub(super) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

pub(super) fn seq_column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
