//! "Postgres, else the spool": the one commit policy for everything a
//! delivery leaves behind (its event, or its quarantine row). With a spool
//! (Postgres store, `spool.path` set):
//!
//! - while the database is down or spooled rows wait, rows go straight to
//!   the spool (a redelivery of a spooled event must find it there);
//! - else the primary write gets `commit_deadline`: a database that hangs
//!   (a lock, a stalled network) must not run the request into its
//!   timeout. A failure or no answer in time marks the database down and
//!   the row goes to the spool; a full write queue only sends it there.
//!
//! Without a spool the primary write is all there is, as long as the
//! request may take.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::DatabaseHealth;
use crate::event::{InsertOutcome, NewEvent};
use crate::spool::{Spool, SpoolError};
use crate::store::quarantine::NewQuarantined;
use crate::store::{BatchWriter, Store, SubmitError};

/// What the primary store did with a row.
#[derive(Debug)]
pub enum Primary<T> {
    Committed(T),
    /// It could not take it now (the write queue is full); the database
    /// itself is not at fault.
    Busy,
    /// The database could not commit it.
    Failed(String),
}

/// Where a committed row went.
#[derive(Debug, PartialEq, Eq)]
pub enum Landed<T> {
    Primary(T),
    Spooled(T),
}

/// Why a row was kept nowhere.
#[derive(Debug, thiserror::Error)]
pub enum NotKept {
    #[error("the database cannot commit ({0}) and there is no spool")]
    NoSpool(String),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The commit side of ingest: the primary store (through the batch writers
/// for events), the spool, and the database's health.
pub struct Committer {
    pub store: Store,
    /// Group-commit queue in front of the store.
    pub writer: BatchWriter,
    pub spool: Option<Spool>,
    pub health: DatabaseHealth,
    /// How long a write waits for Postgres when there is a spool to go to.
    pub commit_deadline: Duration,
    /// The quarantine's row cap (`quarantine.max_rows`).
    pub quarantine_max_rows: u32,
}

impl Committer {
    /// The one routing rule: `primary` within the deadline, else `spooled`.
    pub async fn route<T, P, S>(
        &self,
        primary: impl FnOnce() -> P,
        spooled: impl FnOnce(Spool) -> S,
    ) -> Result<Landed<T>, NotKept>
    where
        P: Future<Output = Primary<T>>,
        S: Future<Output = Result<T, SpoolError>>,
    {
        let spool = match &self.spool {
            // A database found down is not waited on again.
            Some(spool) if self.spool_first(spool) => {
                return Ok(Landed::Spooled(spooled(spool.clone()).await?))
            }
            spool => spool.clone(),
        };
        let wait = match spool {
            Some(_) => self.commit_deadline,
            None => Duration::MAX,
        };
        let why = match tokio::time::timeout(wait, primary()).await {
            Ok(Primary::Committed(t)) => return Ok(Landed::Primary(t)),
            Ok(Primary::Busy) => None,
            Ok(Primary::Failed(why)) => Some(why),
            Err(_) => Some(format!("no commit within {wait:?}")),
        };
        let Some(spool) = spool else {
            return Err(NotKept::NoSpool(why.unwrap_or_else(|| "busy".into())));
        };
        if let Some(why) = why {
            if !self.health.is_down() {
                tracing::warn!(error = %why, "Postgres did not commit; deliveries go to the spool");
            }
            self.health.failed();
        }
        Ok(Landed::Spooled(spooled(spool).await?))
    }

    /// Whether rows go to the spool without trying Postgres.
    fn spool_first(&self, spool: &Spool) -> bool {
        self.health.is_down() || spool.depth() > 0
    }

    /// Commits a sealed delivery.
    pub async fn event(&self, row: NewEvent) -> Result<Landed<InsertOutcome>, NotKept> {
        // Shared with the writer, not copied: the spool may need it back.
        let row = Arc::new(row);
        let shared = Arc::clone(&row);
        let primary = || async move {
            match self.writer.submit(shared).await {
                Ok(outcome) => Primary::Committed(outcome),
                Err(SubmitError::QueueFull) => {
                    // The writer logs a failed batch once; a full queue
                    // has only its metric: a line per refusal would double
                    // the log under overload.
                    metrics::counter!(crate::metrics::QUEUE_FULL).increment(1);
                    Primary::Busy
                }
                Err(e) => Primary::Failed(e.to_string()),
            }
        };
        let spooled = |spool: Spool| async move {
            // Should a hung batch commit after all, the drainer finds the
            // row in Postgres and it answers duplicate.
            let row = Arc::try_unwrap(row).unwrap_or_else(|shared| NewEvent::clone(&shared));
            spool.submit(row).await
        };
        self.route(primary, spooled).await
    }

    /// Keeps a quarantine row: its id in the quarantine, `None` when an
    /// erasure of its subject ran while it was stored.
    pub async fn quarantine(&self, row: &NewQuarantined) -> Result<Landed<Option<i64>>, NotKept> {
        let primary = || async {
            match self.store.quarantine(row, self.quarantine_max_rows).await {
                Ok(kept) => Primary::Committed(kept),
                Err(e) => Primary::Failed(e.to_string()),
            }
        };
        let spooled =
            |spool: Spool| async move { spool.keep_quarantined(row).await.map(|()| None) };
        self.route(primary, spooled).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The routing rule against a real spool file and a real (SQLite)
    //! store, with the primary write played by the test: no database
    //! outage, no proxy.
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::config::Settings;
    use crate::store::batch::BatchOptions;

    struct Fixture {
        committer: Committer,
        _dir: tempfile::TempDir,
    }

    async fn fixture(with_spool: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_with_env(None, Vec::new()).unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = Store::connect(&url.into(), &settings.database)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let (writer, _writers) = BatchWriter::spawn(
            store.clone(),
            BatchOptions::from_settings(&settings.database),
        );
        let spool = match with_spool {
            true => Some(
                Spool::open(&dir.path().join("spool.db"), 1 << 20)
                    .await
                    .unwrap()
                    .0,
            ),
            false => None,
        };
        Fixture {
            committer: Committer {
                store,
                writer,
                spool,
                health: DatabaseHealth::default(),
                commit_deadline: Duration::from_millis(50),
                quarantine_max_rows: 10,
            },
            _dir: dir,
        }
    }

    /// A spool write the test observes without writing a row.
    fn spooled(
        seen: &AtomicBool,
    ) -> impl FnOnce(Spool) -> std::future::Ready<Result<u8, SpoolError>> + '_ {
        move |_| {
            seen.store(true, Ordering::SeqCst);
            std::future::ready(Ok(2))
        }
    }

    #[tokio::test]
    async fn a_primary_that_commits_keeps_the_row() {
        let f = fixture(true).await;
        let seen = AtomicBool::new(false);
        let landed = f
            .committer
            .route(|| async { Primary::Committed(1u8) }, spooled(&seen))
            .await
            .unwrap();
        assert_eq!(landed, Landed::Primary(1));
        assert!(!seen.load(Ordering::SeqCst));
        assert!(!f.committer.health.is_down());
    }

    #[tokio::test]
    async fn a_failed_commit_marks_the_database_down_and_spools() {
        let f = fixture(true).await;
        let seen = AtomicBool::new(false);
        let landed = f
            .committer
            .route(
                || async { Primary::Failed("refused".into()) },
                spooled(&seen),
            )
            .await
            .unwrap();
        assert_eq!(landed, Landed::Spooled(2));
        assert!(f.committer.health.is_down());
    }

    #[tokio::test]
    async fn a_commit_that_hangs_past_the_deadline_spools() {
        let f = fixture(true).await;
        let seen = AtomicBool::new(false);
        let hang = || std::future::pending::<Primary<u8>>();
        let landed = tokio::time::timeout(
            Duration::from_secs(5),
            f.committer.route(hang, spooled(&seen)),
        )
        .await
        .expect("the deadline ends the wait")
        .unwrap();
        assert_eq!(landed, Landed::Spooled(2));
        assert!(f.committer.health.is_down());
    }

    #[tokio::test]
    async fn a_full_queue_spools_without_blaming_the_database() {
        let f = fixture(true).await;
        let seen = AtomicBool::new(false);
        let landed = f
            .committer
            .route(|| async { Primary::Busy }, spooled(&seen))
            .await
            .unwrap();
        assert_eq!(landed, Landed::Spooled(2));
        assert!(!f.committer.health.is_down());
    }

    #[tokio::test]
    async fn while_the_database_is_down_the_primary_is_not_tried() {
        let f = fixture(true).await;
        f.committer.health.failed();
        let seen = AtomicBool::new(false);
        let landed = f
            .committer
            .route(
                || async { panic!("the primary must not be tried") },
                spooled(&seen),
            )
            .await
            .unwrap();
        assert_eq!(landed, Landed::<u8>::Spooled(2));
    }

    #[tokio::test]
    async fn without_a_spool_a_failure_is_kept_nowhere() {
        let f = fixture(false).await;
        let seen = AtomicBool::new(false);
        let refused = f
            .committer
            .route(
                || async { Primary::<u8>::Failed("down".into()) },
                spooled(&seen),
            )
            .await
            .unwrap_err();
        assert!(matches!(refused, NotKept::NoSpool(_)), "{refused}");
        assert!(!seen.load(Ordering::SeqCst));
    }

    /// A refused delivery's quarantine row (sealed by no key: where it is
    /// kept is under test, not what it opens to).
    fn quarantine_row(seal_id: &str) -> NewQuarantined {
        let event = NewEvent::for_tests("job-q");
        NewQuarantined {
            received_at: event.received_at,
            reason: "invalid_json",
            request_id: "req-1".into(),
            bytes: 12,
            seal_id: seal_id.into(),
            sealed: event.sealed,
            subjects: Vec::new(),
        }
    }

    /// The store stops committing: every write to it fails at once.
    async fn database_fails(f: &Fixture) {
        f.committer.store.close().await;
    }

    fn spool_depth(f: &Fixture) -> u64 {
        f.committer.spool.as_ref().map_or(0, Spool::depth)
    }

    #[tokio::test]
    async fn an_event_the_database_cannot_commit_is_spooled_and_the_database_marked_down() {
        let f = fixture(true).await;
        database_fails(&f).await;
        let landed = f
            .committer
            .event(NewEvent::for_tests("job-1"))
            .await
            .unwrap();
        assert_eq!(landed, Landed::Spooled(InsertOutcome::Inserted));
        assert!(f.committer.health.is_down());
        assert_eq!(spool_depth(&f), 1);
    }

    #[tokio::test]
    async fn without_a_spool_an_event_the_database_cannot_commit_is_kept_nowhere() {
        let f = fixture(false).await;
        database_fails(&f).await;
        let refused = f
            .committer
            .event(NewEvent::for_tests("job-1"))
            .await
            .unwrap_err();
        assert!(matches!(refused, NotKept::NoSpool(_)), "{refused}");
    }

    #[tokio::test]
    async fn a_quarantine_row_is_kept_in_the_store() {
        let f = fixture(true).await;
        let landed = f
            .committer
            .quarantine(&quarantine_row("s-1"))
            .await
            .unwrap();
        let Landed::Primary(Some(id)) = landed else {
            panic!("not kept in the store: {landed:?}");
        };
        let kept = f.committer.store.quarantined().await.unwrap();
        assert_eq!(kept.iter().map(|q| q.id).collect::<Vec<_>>(), [id]);
        assert!(!f.committer.health.is_down());
        assert_eq!(spool_depth(&f), 0);
    }

    #[tokio::test]
    async fn a_quarantine_row_the_database_cannot_commit_is_spooled_and_the_database_marked_down() {
        let f = fixture(true).await;
        database_fails(&f).await;
        let landed = f
            .committer
            .quarantine(&quarantine_row("s-1"))
            .await
            .unwrap();
        assert_eq!(landed, Landed::Spooled(None));
        assert!(f.committer.health.is_down());
        assert_eq!(spool_depth(&f), 1);
    }

    #[tokio::test]
    async fn without_a_spool_a_quarantine_row_the_database_cannot_commit_is_kept_nowhere() {
        let f = fixture(false).await;
        database_fails(&f).await;
        let refused = f
            .committer
            .quarantine(&quarantine_row("s-1"))
            .await
            .unwrap_err();
        assert!(matches!(refused, NotKept::NoSpool(_)), "{refused}");
    }

    #[tokio::test]
    async fn an_event_commits_to_the_store_then_is_a_duplicate() {
        let f = fixture(true).await;
        let row = NewEvent::for_tests("job-1");
        let first = f.committer.event(row.clone()).await.unwrap();
        assert_eq!(first, Landed::Primary(InsertOutcome::Inserted));
        let again = f.committer.event(row).await.unwrap();
        assert_eq!(again, Landed::Primary(InsertOutcome::Duplicate));
    }
}
