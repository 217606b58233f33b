//! One read of the feed for every destination of a replica (Postgres).
//!
//! Each relay reads the feed from its own position, and on a replica with
//! several destinations those positions run close together. Without
//! sharing, every event was read from Postgres and opened (decrypted,
//! decompressed, written as the feed's EVENT) once per destination. Here
//! the first relay to read a page offers it, opened, to the others: a
//! [`Run`] of consecutive feed events, complete between two positions, in
//! memory. A relay whose position lies inside the run takes its next batch
//! from it instead of from Postgres; one behind the run (a slow or paused
//! destination) reads Postgres as before and leaves the run alone.
//!
//! What the run may hold, and why a relay may send it:
//! - **Complete between `from` and `until`.** A page of `BATCH` events
//!   covers up to its last event; a shorter page covers everything below
//!   the horizon its step read (every transaction below it has ended), so
//!   a page taken from the run carries the bound up to which it is
//!   complete, and notices are merged only below it.
//! - **Nothing deleted since.** Every `DELETE` on the events table counts
//!   up an epoch in its own transaction (`forward_erasure_epoch`, by a
//!   trigger, so a replica of any release does). A run remembers the epoch
//!   its first page was read under (read before the page, so a deletion
//!   that commits in between makes the run look stale, never fresh), and
//!   is served only under the same epoch: after an erasure commits, the
//!   next step of every relay reads Postgres again. An erasure still in
//!   flight is the case the notice's horizon already covers (one batch
//!   after the destination's position, see `store::forward::erased`): a
//!   relay takes at most one batch after its position from the run.
//! - **Nothing older than the retention window.** Each serve leaves out
//!   events received before the oldest receipt a read may return now,
//!   exactly as the page query does.
//!
//! The run holds at most [`CAPACITY`] events and [`BUDGET`] bytes of
//! bodies (deliveries may be large); its oldest go first. A replica with
//! one destination keeps none. Nothing in it is personal data beyond what
//! the feed serves: the bodies are the redacted EVENTs the destinations
//! get.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::feed::Position;
use crate::store::FeedEvent;

/// The most events a run keeps: four relay batches, so destinations a few
/// batches apart still share.
pub const CAPACITY: usize = 4 * crate::store::forward::RELAY_BATCH as usize;
/// The most bytes of bodies a run keeps.
pub const BUDGET: usize = 8 << 20;

/// A feed event as every destination sends it.
pub struct Opened {
    /// Its row, without the ciphertext (opened once, into `body`).
    pub event: FeedEvent,
    /// The EVENT it becomes, or why it cannot be read (a dead letter).
    pub body: Result<Bytes, String>,
}

/// Events taken from the run: complete up to `until` (exclusive).
pub struct Served {
    pub events: Vec<Arc<Opened>>,
    pub until: Position,
}

/// The replica's shared run, one per [`super::Forwarding`].
pub struct SharedFeed {
    run: Mutex<Run>,
    /// The most events the run keeps (none with one relay: nobody to share
    /// with).
    capacity: usize,
}

/// Every feed event in `(from, until)` as of `epoch`, in order.
#[derive(Default)]
struct Run {
    epoch: i64,
    from: Position,
    until: Position,
    events: VecDeque<Arc<Opened>>,
    /// The bytes of their bodies.
    bytes: usize,
}

impl Run {
    fn covers(&self, after: Position) -> bool {
        self.from <= after && after < self.until
    }
}

impl Opened {
    fn size(&self) -> usize {
        self.body.as_ref().map_or(0, Bytes::len)
    }
}

impl SharedFeed {
    /// The run of a replica with `relays` destinations.
    pub fn for_relays(relays: usize) -> Self {
        Self {
            run: Mutex::default(),
            capacity: if relays > 1 { CAPACITY } else { 0 },
        }
    }

    /// Up to `limit` events after `after`, if the run holds them under
    /// `epoch`; the ones received before `since` left out (their place
    /// still counts as read). `None` when it holds none to send: the
    /// relay reads the database, which looks past them.
    pub fn serve(
        &self,
        after: Position,
        epoch: i64,
        limit: usize,
        since: DateTime<Utc>,
    ) -> Option<Served> {
        let run = self
            .run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if run.epoch != epoch || !run.covers(after) {
            return None;
        }
        let first = run.events.partition_point(|o| o.event.position <= after);
        let taken: Vec<Arc<Opened>> = run.events.range(first..).take(limit).cloned().collect();
        let last = taken.last()?.event.position;
        let until = if taken.len() >= limit {
            Position {
                tx: last.tx,
                id: last.id.saturating_add(1),
            }
        } else {
            run.until
        };
        let events: Vec<Arc<Opened>> = taken
            .into_iter()
            .filter(|o| o.event.row.received_at >= since)
            .collect();
        (!events.is_empty()).then_some(Served { events, until })
    }

    /// A page read from Postgres after `after`, complete below `until`,
    /// under `epoch` (read before the page). Its events at or past `until`
    /// (committed between the bound's read and the page's) stay out: what
    /// lies beside them is not known complete.
    pub fn offer(&self, after: Position, until: Position, epoch: i64, page: &[Arc<Opened>]) {
        let page = page.iter().filter(|o| o.event.position < until);
        let mut run = self
            .run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if epoch < run.epoch || until <= after {
            // Read before an erasure the run already knows of; or empty.
            return;
        }
        if epoch == run.epoch && run.covers(after) {
            // Joins the run: what lies past its end extends it.
            let end = run.until;
            for o in page.filter(|o| o.event.position >= end) {
                run.bytes += o.size();
                run.events.push_back(o.clone());
            }
            run.until = run.until.max(until);
        } else if epoch > run.epoch || after >= run.until || run.events.is_empty() {
            // A newer epoch, or the front has moved past the run: start
            // again from this page.
            let events: VecDeque<Arc<Opened>> = page.cloned().collect();
            *run = Run {
                epoch,
                from: after,
                until,
                bytes: events.iter().map(|o| o.size()).sum(),
                events,
            };
        } else {
            // Behind the run: a destination catching up reads alone.
            return;
        }
        while run.events.len() > self.capacity || run.bytes > BUDGET {
            let Some(old) = run.events.pop_front() else {
                break;
            };
            run.from = old.event.position;
            run.bytes -= old.size();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StoredEvent;

    fn at(id: i64) -> Position {
        Position { tx: 100, id }
    }

    fn opened(id: i64, received_at: DateTime<Utc>) -> Arc<Opened> {
        Arc::new(Opened {
            event: FeedEvent {
                position: at(id),
                row: StoredEvent {
                    id,
                    job_id: format!("job-{id}"),
                    event: "job.succeeded".into(),
                    pattern_id: None,
                    status: None,
                    received_at,
                    key_id: String::new(),
                    nonce: Vec::new(),
                    ciphertext: Vec::new(),
                    operator_supplied: false,
                    valid: None,
                    validation_errors: None,
                },
            },
            body: Ok(Bytes::from(format!("{{\"id\":\"{id}\"}}"))),
        })
    }

    fn page(ids: std::ops::RangeInclusive<i64>) -> Vec<Arc<Opened>> {
        ids.map(|id| opened(id, Utc::now())).collect()
    }

    fn ids(s: &Served) -> Vec<i64> {
        s.events.iter().map(|o| o.event.row.id).collect()
    }

    const LONG_AGO: DateTime<Utc> = DateTime::UNIX_EPOCH;

    #[test]
    fn a_page_serves_the_next_relay_from_its_position_on() {
        let shared = SharedFeed::for_relays(2);
        shared.offer(at(0), at(6), 7, &page(1..=5));
        let s = shared.serve(at(2), 7, 256, LONG_AGO).expect("held");
        assert_eq!(ids(&s), [3, 4, 5]);
        // Fewer than asked: complete up to the page's own bound.
        assert_eq!(s.until, at(6));
        let s = shared.serve(at(0), 7, 2, LONG_AGO).expect("held");
        assert_eq!(ids(&s), [1, 2]);
        // A full batch: complete through its last event only.
        assert_eq!(s.until, Position { tx: 100, id: 3 });
    }

    #[test]
    fn nothing_is_served_under_another_epoch() {
        let shared = SharedFeed::for_relays(2);
        shared.offer(at(0), at(6), 7, &page(1..=5));
        // An erasure committed since the page was read.
        assert!(shared.serve(at(0), 8, 256, LONG_AGO).is_none());
        // A page read under the old epoch, offered late, does not bring
        // the run back for the old epoch's readers after a newer one.
        shared.offer(at(0), at(4), 8, &page(1..=2));
        shared.offer(at(2), at(6), 7, &page(3..=5));
        let s = shared.serve(at(0), 8, 256, LONG_AGO).expect("held");
        assert_eq!(ids(&s), [1, 2]);
        assert!(shared.serve(at(0), 7, 256, LONG_AGO).is_none());
    }

    #[test]
    fn positions_outside_the_run_or_at_its_end_read_the_database() {
        let shared = SharedFeed::for_relays(2);
        assert!(shared.serve(at(0), 0, 256, LONG_AGO).is_none());
        shared.offer(at(10), at(16), 0, &page(11..=15));
        // Behind the run: events before it are not known to be complete.
        assert!(shared.serve(at(5), 0, 256, LONG_AGO).is_none());
        // Caught up with it: nothing held after the position.
        assert!(shared.serve(at(15), 0, 256, LONG_AGO).is_none());
        assert!(shared.serve(at(20), 0, 256, LONG_AGO).is_none());
    }

    #[test]
    fn pages_join_the_run_without_a_gap_or_a_repeat() {
        let shared = SharedFeed::for_relays(2);
        shared.offer(at(0), at(4), 0, &page(1..=3));
        // Overlapping the run's end: only what is new joins.
        shared.offer(at(2), at(8), 0, &page(3..=7));
        let s = shared.serve(at(0), 0, 256, LONG_AGO).expect("held");
        assert_eq!(ids(&s), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(s.until, at(8));
        // A laggard's page behind the run changes nothing.
        shared.offer(Position::default(), at(2), 0, &page(1..=1));
        assert_eq!(
            ids(&shared.serve(at(0), 0, 256, LONG_AGO).unwrap()).len(),
            7
        );
        // A page past a gap starts the run again there.
        shared.offer(at(20), at(23), 0, &page(21..=22));
        assert!(shared.serve(at(0), 0, 256, LONG_AGO).is_none());
        assert_eq!(
            ids(&shared.serve(at(20), 0, 256, LONG_AGO).unwrap()),
            [21, 22]
        );
    }

    #[test]
    fn events_past_the_bound_of_their_page_are_not_held() {
        let shared = SharedFeed::for_relays(2);
        // Event 5 committed after the bound was read, before the page.
        shared.offer(at(0), at(5), 0, &page(1..=5));
        let s = shared.serve(at(0), 0, 256, LONG_AGO).expect("held");
        assert_eq!(ids(&s), [1, 2, 3, 4]);
        assert_eq!(s.until, at(5));
        // Read again from the database, not served as if complete.
        assert!(shared.serve(at(4), 0, 256, LONG_AGO).is_none());
    }

    #[test]
    fn the_run_keeps_its_newest_events_up_to_its_capacity() {
        let shared = SharedFeed::for_relays(2);
        let n = i64::try_from(CAPACITY).unwrap() + 10;
        shared.offer(at(0), at(n + 1), 0, &page(1..=n));
        assert!(shared.serve(at(5), 0, 256, LONG_AGO).is_none());
        let s = shared.serve(at(10), 0, 3, LONG_AGO).expect("held");
        assert_eq!(ids(&s), [11, 12, 13]);
    }

    #[test]
    fn the_run_keeps_its_newest_bodies_within_its_byte_budget() {
        let shared = SharedFeed::for_relays(2);
        let big = |id| {
            Arc::new(Opened {
                body: Ok(Bytes::from(vec![b' '; BUDGET / 3])),
                ..Arc::try_unwrap(opened(id, Utc::now())).ok().unwrap()
            })
        };
        let page: Vec<Arc<Opened>> = (1..=5).map(big).collect();
        shared.offer(at(0), at(6), 0, &page);
        // Three bodies fit in the budget: 3, 4 and 5 stay.
        assert!(shared.serve(at(1), 0, 256, LONG_AGO).is_none());
        let s = shared.serve(at(2), 0, 256, LONG_AGO).expect("held");
        assert_eq!(ids(&s), [3, 4, 5]);
    }

    #[test]
    fn a_lone_relay_keeps_nothing() {
        let shared = SharedFeed::for_relays(1);
        shared.offer(at(0), at(6), 0, &page(1..=5));
        assert!(shared.serve(at(0), 0, 256, LONG_AGO).is_none());
    }

    #[test]
    fn events_past_the_retention_window_are_left_out() {
        let shared = SharedFeed::for_relays(2);
        let now = Utc::now();
        let old = now - chrono::Duration::days(40);
        let page = vec![opened(1, now), opened(2, old), opened(3, now)];
        shared.offer(at(0), at(4), 0, &page);
        let s = shared
            .serve(at(0), 0, 256, now - chrono::Duration::days(30))
            .expect("held");
        assert_eq!(ids(&s), [1, 3]);
        assert_eq!(s.until, at(4));
        // Only old ones left: the database is read, past them.
        assert!(shared
            .serve(at(1), 0, 1, now - chrono::Duration::days(30))
            .is_none());
    }
}
