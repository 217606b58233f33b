//! The event feed of the Results API: feed positions, the opaque cursors
//! that carry them, and the per-replica watcher that long-polls wait on.
//!
//! **Positions.** Postgres: `(tx, id)`, the writing transaction's 64-bit
//! xid and the row id; pages are read only below the oldest transaction
//! still in flight (`store/feed.rs`), so a cursor never moves past a row
//! that commits later. SQLite: the id alone (one writer at a time holds the
//! database lock through commit, so ids are commit order); `tx` is 0.
//!
//! **Cursors** are `base64url("v1.<tx>.<id>")` (Postgres) or
//! `base64url("v1.<id>")` (SQLite): opaque to clients, versioned, and a
//! cursor of the other backend's form is refused like any malformed one.
//!
//! **Watcher.** One task per replica publishes the feed head (the newest
//! position a page could return) on a `tokio::sync::watch`. Waiting
//! requests hold no database connection: they await the watch and query
//! again once the head has passed their cursor. The insert path pings it
//! after each commit of this process; while a long-poll waits it also reads
//! the head every [`WAITING_RECHECK`], for commits of other replicas and
//! processes (`rejected replay` from the command line) and rows held back
//! behind an older open transaction; while only relays follow, every
//! [`FOLLOW_RECHECK`]; with nobody waiting, every [`IDLE_RECHECK`]. It also
//! reports `imggo_feed_lag_seconds`.
//!
//! Postgres' `LISTEN`/`NOTIFY` woke it before: a notification at every
//! commit of an insert serialises the commits of every notifying
//! transaction in the cluster on one lock, and cost 10–20 % of Postgres'
//! CPU per delivery (`ab.sh` against the same commit with the trigger
//! dropped). A waiter on another replica now learns of a commit within
//! `WAITING_RECHECK` (a relay within `FOLLOW_RECHECK`) instead of at once.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};
// The positions are the store's (its queries produce them); named here too.
pub use crate::store::feed::{FeedHead, Position};

/// Which cursor form a store speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorForm {
    Postgres,
    Sqlite,
}

impl CursorForm {
    pub fn of(store: &Store) -> Self {
        match store {
            Store::Postgres(_) => Self::Postgres,
            Store::Sqlite(_) => Self::Sqlite,
        }
    }
}

/// Longest cursor accepted (a real one is under 60 characters).
const MAX_CURSOR_LEN: usize = 128;

/// The opaque cursor of `pos`.
pub fn encode(form: CursorForm, pos: Position) -> String {
    let text = match form {
        CursorForm::Postgres => format!("v1.{}.{}", pos.tx, pos.id),
        CursorForm::Sqlite => format!("v1.{}", pos.id),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The position of a cursor this store issued; `None` for anything else.
pub fn decode(form: CursorForm, cursor: &str) -> Option<Position> {
    if cursor.is_empty() || cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut parts = text.strip_prefix("v1.")?.split('.');
    let number = |p: Option<&str>| -> Option<i64> {
        let p = p?;
        // Digits only: no sign, no spaces, no leading zeros but "0".
        if p.is_empty()
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            return None;
        }
        p.parse().ok()
    };
    let pos = match form {
        CursorForm::Postgres => Position {
            tx: number(parts.next())?,
            id: number(parts.next())?,
        },
        CursorForm::Sqlite => Position {
            tx: 0,
            id: number(parts.next())?,
        },
    };
    parts.next().is_none().then_some(pos)
}

/// The shared side of the watcher: long-polls subscribe here, relays
/// follow. It holds no receiver of its own, however many times it is
/// cloned: the watcher counts the receivers alive as the waiters.
#[derive(Clone, Debug)]
pub struct FeedWatch {
    heads: Arc<Heads>,
    /// The watcher's wake-up: a new waiter starts its short rechecks.
    wake: Arc<Notify>,
}

impl FeedWatch {
    /// A long-poll's receiver of the feed head, seeing the current head as
    /// seen; subscribe **before** querying, so that a commit between the
    /// query and the wait is not missed. Wakes the watcher, which may be in
    /// its long sleep with nobody waiting; while it is alive, the head is
    /// read every [`WAITING_RECHECK`].
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        let receiver = self.heads.polls.subscribe();
        self.wake.notify_one();
        receiver
    }

    /// A relay's receiver of the feed head, as [`Self::subscribe`], but a
    /// relay follows for as long as it holds its lease, traffic or not:
    /// while only followers wait, the head is read every
    /// [`FOLLOW_RECHECK`] (and at once after this process's commits).
    pub fn follow(&self) -> watch::Receiver<Position> {
        let receiver = self.heads.follows.subscribe();
        self.wake.notify_one();
        receiver
    }
}

/// The head's two channels: long-polls' and relays'.
#[derive(Debug)]
struct Heads {
    polls: watch::Sender<Position>,
    follows: watch::Sender<Position>,
}

impl Heads {
    fn new() -> Self {
        Self {
            polls: watch::Sender::new(Position::default()),
            follows: watch::Sender::new(Position::default()),
        }
    }

    fn publish(&self, position: Position) {
        for channel in [&self.polls, &self.follows] {
            channel.send_if_modified(|current| {
                let changed = *current != position;
                *current = position;
                changed
            });
        }
    }

    /// Whether anyone waits on the head: every receiver alive is a waiter
    /// ([`FeedWatch`] keeps none). Then this process's commits are read at
    /// once (at most one read per [`MIN_SPACING`]).
    fn waiting(&self) -> bool {
        self.recheck() != IDLE_RECHECK
    }

    /// How long the watcher sleeps when no commit of this process pings
    /// it: short while a long-poll waits, longer while only relays follow,
    /// longest with nobody waiting.
    fn recheck(&self) -> Duration {
        if self.polls.receiver_count() > 0 {
            WAITING_RECHECK
        } else if self.follows.receiver_count() > 0 {
            FOLLOW_RECHECK
        } else {
            IDLE_RECHECK
        }
    }
}

/// The heads, and the watch that subscribes to them (and wakes the
/// watcher through `wake`).
fn head_channel(wake: Arc<Notify>) -> (Arc<Heads>, FeedWatch) {
    let heads = Arc::new(Heads::new());
    (heads.clone(), FeedWatch { heads, wake })
}

/// The task side of the watcher.
pub struct FeedWatcher {
    store: Store,
    heads: Arc<Heads>,
    /// Pinged by this process's insert path after each commit.
    commits: Arc<Notify>,
}

/// How often the head is read again with nobody waiting (for the lag
/// gauge).
const IDLE_RECHECK: Duration = Duration::from_millis(500);
/// How often while a long-poll waits: commits of other replicas and
/// processes ping nobody here, and rows held back behind an open
/// transaction (which may never insert) are released by no commit.
const WAITING_RECHECK: Duration = Duration::from_millis(50);
/// How often while only relays follow: a replica holding a destination's
/// lease follows the head all the time, idle or not, and a read is a probe
/// of every partition's feed index (1.6 ms with a month of daily ones): a
/// relay learns of another replica's commit within this.
const FOLLOW_RECHECK: Duration = Duration::from_millis(200);
/// The least time between two reads of the head while someone waits. The
/// first commit after a quiet spell is read at once; under ingest, commits
/// come every few milliseconds, and a read per commit cost Postgres more
/// than a tenth of the batch itself (the head is one probe of every
/// partition's feed index: 1.6 ms a read with a month of daily
/// partitions). A waiter learns of a commit at most this much later.
const MIN_SPACING: Duration = Duration::from_millis(25);

impl FeedWatcher {
    pub fn new(store: Store) -> (Self, FeedWatch) {
        let commits = match &store {
            Store::Sqlite(s) => s.commits(),
            Store::Postgres(pg) => pg.commits(),
        };
        let (heads, watch) = head_channel(commits.clone());
        (
            Self {
                store,
                heads,
                commits,
            },
            watch,
        )
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let commits = self.commits.clone();
        let mut refreshed = tokio::time::Instant::now();
        loop {
            // Under a burst of commits nobody may be waiting: then the head
            // (and the lag gauge) is read on the timer only, not per commit,
            // and rows held back by a long transaction (anywhere in the
            // cluster) are rechecked on that timer too: the short recheck
            // is for someone waiting on them. With waiters, at most one
            // read per `MIN_SPACING`: commits in between are seen by the
            // next read.
            let waiters = self.heads.waiting();
            if waiters || refreshed.elapsed() >= IDLE_RECHECK {
                if waiters {
                    tokio::select! {
                        () = tokio::time::sleep_until(refreshed + MIN_SPACING) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                refreshed = tokio::time::Instant::now();
                self.refresh().await;
            }
            tokio::select! {
                () = commits.notified() => {}
                () = tokio::time::sleep(self.heads.recheck()) => {}
                () = shutdown.cancelled() => break,
            }
        }
    }

    async fn refresh(&self) {
        match self.store.feed_head().await {
            Ok(head) => {
                metrics::gauge!(crate::metrics::FEED_LAG).set(head.lag_seconds);
                self.heads.publish(head.position);
            }
            Err(e) => {
                // Waiters keep their own timeout; try again at the next tick.
                if !matches!(e, StoreError::Unavailable(_)) {
                    tracing::warn!(error = %e, "cannot read the feed head");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_subscribers_are_waiters_however_often_the_watch_is_cloned() {
        let (heads, watch) = head_channel(Arc::new(Notify::new()));
        let clones = [watch.clone(), watch.clone(), watch];
        assert!(!heads.waiting(), "a watch alone is no waiter");
        assert_eq!(heads.recheck(), IDLE_RECHECK);
        let waiter = clones[1].subscribe();
        assert!(heads.waiting());
        assert_eq!(heads.recheck(), WAITING_RECHECK);
        drop(waiter);
        assert!(!heads.waiting());
        assert_eq!(heads.recheck(), IDLE_RECHECK);
    }

    /// A relay follows all the time: a waiter for this process's commits,
    /// but it does not keep the head polled every 50 ms; a long-poll
    /// beside it does.
    #[test]
    fn a_following_relay_waits_but_polls_less_often_than_a_long_poll() {
        let (heads, watch) = head_channel(Arc::new(Notify::new()));
        let relay = watch.follow();
        assert!(heads.waiting());
        assert_eq!(heads.recheck(), FOLLOW_RECHECK);
        let poll = watch.subscribe();
        assert_eq!(heads.recheck(), WAITING_RECHECK);
        drop(poll);
        assert_eq!(heads.recheck(), FOLLOW_RECHECK);
        heads.publish(Position { tx: 1, id: 2 });
        assert_eq!(*relay.borrow(), Position { tx: 1, id: 2 });
        drop(relay);
        assert!(!heads.waiting());
    }

    #[test]
    fn cursors_round_trip_and_refuse_the_other_form() {
        let p = Position {
            tx: 7_000_123,
            id: 42,
        };
        let c = encode(CursorForm::Postgres, p);
        assert_eq!(decode(CursorForm::Postgres, &c), Some(p));
        assert_eq!(decode(CursorForm::Sqlite, &c), None);
        let s = Position { tx: 0, id: 9 };
        let c = encode(CursorForm::Sqlite, s);
        assert_eq!(decode(CursorForm::Sqlite, &c), Some(s));
        assert_eq!(decode(CursorForm::Postgres, &c), None);
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let b = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        for bad in [
            String::new(),
            "!!!".into(),
            "djEuMS4y=".into(),
            b("v2.1.2"),
            b("v1.1"),
            b("v1.1.2.3"),
            b("v1.-1.2"),
            b("v1.+1.2"),
            b("v1.01.2"),
            b("v1. 1.2"),
            b("v1.99999999999999999999.2"),
            b("v1..2"),
            "a".repeat(200),
        ] {
            assert_eq!(decode(CursorForm::Postgres, &bad), None, "{bad}");
        }
        assert_eq!(decode(CursorForm::Sqlite, &b("v1.x")), None);
        assert_eq!(
            decode(CursorForm::Sqlite, &b("v1.0")),
            Some(Position::default())
        );
    }
}
