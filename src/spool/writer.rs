//! The spool writer: group commit into the spool file, as the batch
//! writers do into Postgres. Everything queued is committed in one
//! transaction (fsynced: `synchronous = FULL`), then each requester gets
//! its own outcome; a failed commit fails them all.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use sqlx::sqlite::SqlitePool;
use tokio::sync::mpsc;

use super::codec::{row_size, subject_bytes};
use super::{Job, Shared, SpoolError, MAX_BATCH};
use crate::event::InsertOutcome;
use crate::store::{bind_new_event, EventColumns};

/// One delivery (its columns as the store's, then its subject hashes);
/// a key already spooled is left as it is.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO spooled_events ({}, subjects) VALUES ({}, ?{}) \
         ON CONFLICT (job_id, event) DO NOTHING",
        EventColumns::new_event(),
        EventColumns::sqlite_values(),
        EventColumns::new_event_count() + 1
    )
});

/// The spool writer: everything queued is committed in one transaction, then
/// each requester gets its own outcome (a failed commit fails them all).
pub(super) async fn write_batches(shared: Arc<Shared>, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let room = shared
            .max_bytes
            .saturating_sub(shared.bytes.load(Ordering::Relaxed));
        match insert(&shared.pool, &jobs, room).await {
            Ok(outcomes) => {
                let (mut added, mut bytes) = (0u64, 0u64);
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    match outcome {
                        Ok(InsertOutcome::Inserted) => {
                            added += 1;
                            bytes += row_size(&job.item);
                        }
                        Err(SpoolError::Full) => shared.full.store(true, Ordering::Relaxed),
                        _ => {}
                    }
                    job.answer(outcome);
                }
                shared.added(added, bytes);
            }
            Err(e) => {
                tracing::error!(error = %e, rows = jobs.len(), "the spool could not commit");
                for job in jobs.drain(..) {
                    job.answer(Err(SpoolError::Failed(sqlx::Error::WorkerCrashed)));
                }
            }
        }
    }
}

/// Writes `jobs` in one transaction, adding at most `room` bytes: a row
/// past it is a duplicate if already spooled, else refused as full.
async fn insert(
    pool: &SqlitePool,
    jobs: &[Job],
    mut room: u64,
) -> Result<Vec<Result<InsertOutcome, SpoolError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let key = job.item.envelope.key();
        let size = row_size(&job.item);
        if size > room {
            let spooled: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM spooled_events WHERE job_id = ? AND event = ?)",
            )
            .bind(key.job_id)
            .bind(key.event)
            .fetch_one(&mut *tx)
            .await?;
            outcomes.push(if spooled {
                Ok(InsertOutcome::Duplicate)
            } else {
                Err(SpoolError::Full)
            });
            continue;
        }
        let affected = bind_new_event(sqlx::query(&INSERT), &job.item)
            .bind(subject_bytes(&job.item.subjects))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        outcomes.push(Ok(if affected == 1 {
            room -= size;
            InsertOutcome::Inserted
        } else {
            InsertOutcome::Duplicate
        }));
    }
    tx.commit().await?;
    Ok(outcomes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The spool writer on a file of its own: no Postgres, no proxy.
    use std::time::Duration;

    use crate::event::{InsertOutcome, NewEvent};
    use crate::group_commit;
    use crate::spool::{Spool, SpoolError};
    use crate::subjects::SubjectHash;

    #[tokio::test]
    async fn a_delivery_is_kept_once_and_read_back_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _writer) = Spool::open(&dir.path().join("s.db"), 1 << 20)
            .await
            .unwrap();
        let mut row = NewEvent::for_tests("job-1");
        row.subjects = vec![SubjectHash([1; 32]), SubjectHash([2; 32])];
        assert_eq!(
            spool.submit(row.clone()).await.unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(
            spool.submit(row.clone()).await.unwrap(),
            InsertOutcome::Duplicate
        );
        assert_eq!(spool.depth(), 1);
        let batch = spool.read_after(0).await.unwrap();
        let back = &batch.events[0];
        assert_eq!(back.envelope, row.envelope);
        assert_eq!(back.sealed, row.sealed);
        assert_eq!(back.received_at, row.received_at);
        assert_eq!(back.subjects, row.subjects);
        spool.forget(batch).await.unwrap();
        assert_eq!(spool.depth(), 0);
    }

    #[tokio::test]
    async fn requests_queued_together_commit_in_one_transaction_each_with_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _writer) = Spool::open(&dir.path().join("s.db"), 1 << 20)
            .await
            .unwrap();
        spool.submit(NewEvent::for_tests("job-old")).await.unwrap();
        // Three requests waiting together, as the writer finds them: one
        // new, one spooled before, one repeated inside the group.
        let (queue, mut rx) = group_commit::queue(8);
        let asked = ["job-new", "job-old", "job-new"].map(|job| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.submit(NewEvent::for_tests(job)).await })
        });
        let mut jobs = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            while jobs.len() < 3 {
                rx.recv_many(&mut jobs, 8).await;
            }
        })
        .await
        .unwrap();
        // The group's SQL runs in one transaction: one call of `insert`.
        let outcomes = super::insert(&spool.shared.pool, &jobs, u64::MAX)
            .await
            .unwrap();
        let first_new = jobs
            .iter()
            .position(|j| j.item.envelope.job_id == "job-new")
            .unwrap();
        for (i, (job, outcome)) in jobs.iter().zip(&outcomes).enumerate() {
            let wanted = match i == first_new {
                true => InsertOutcome::Inserted,
                false => InsertOutcome::Duplicate,
            };
            let job_id = &job.item.envelope.job_id;
            assert_eq!(*outcome.as_ref().unwrap(), wanted, "{job_id}, queued {i}");
        }
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM spooled_events")
            .fetch_one(&spool.shared.pool)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            job.answer(outcome);
        }
        // Each requester hears its own row's outcome.
        let mut answers = Vec::new();
        for asked in asked {
            answers.push(asked.await.unwrap().unwrap().unwrap());
        }
        assert_eq!(
            answers[1],
            InsertOutcome::Duplicate,
            "job-old was spooled before"
        );
        let mut new = [answers[0], answers[2]];
        new.sort_by_key(|o| *o == InsertOutcome::Inserted);
        assert_eq!(new, [InsertOutcome::Duplicate, InsertOutcome::Inserted]);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _writer) = Spool::open(&dir.path().join("s.db"), 1 << 20)
            .await
            .unwrap();
        // A queue of one that no writer reads: the first request waits in it.
        let (queue, _rx) = group_commit::queue(1);
        let stalled = Spool {
            queue,
            shared: spool.shared.clone(),
        };
        let waiting = tokio::spawn({
            let stalled = stalled.clone();
            async move { stalled.submit(NewEvent::for_tests("job-1")).await }
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while stalled.queue.queued() < 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let refused = tokio::time::timeout(
            Duration::from_secs(1),
            stalled.submit(NewEvent::for_tests("job-2")),
        )
        .await
        .expect("refused at once, not queued");
        assert!(matches!(refused, Err(SpoolError::Full)), "{refused:?}");
        waiting.abort();
    }

    #[tokio::test]
    async fn past_max_bytes_a_new_delivery_is_refused_and_a_spooled_one_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        // Room for one row (payload + overhead), not two.
        let (spool, _writer) = Spool::open(&dir.path().join("s.db"), 400).await.unwrap();
        let first = NewEvent::for_tests("job-1");
        assert_eq!(
            spool.submit(first.clone()).await.unwrap(),
            InsertOutcome::Inserted
        );
        let second = spool.submit(NewEvent::for_tests("job-2")).await;
        assert!(matches!(second, Err(SpoolError::Full)), "{second:?}");
        assert!(!spool.has_room());
        assert_eq!(spool.submit(first).await.unwrap(), InsertOutcome::Duplicate);
    }

    #[tokio::test]
    async fn rows_left_in_the_file_are_counted_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let (spool, writer) = Spool::open(&path, 1 << 20).await.unwrap();
            spool.submit(NewEvent::for_tests("job-1")).await.unwrap();
            drop(spool);
            tokio::time::timeout(std::time::Duration::from_secs(10), writer)
                .await
                .unwrap()
                .unwrap();
        }
        let (spool, _writer) = Spool::open(&path, 1 << 20).await.unwrap();
        assert_eq!(spool.depth(), 1);
    }
}
