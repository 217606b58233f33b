//! Group commit: outcomes per request, failures, back-pressure, shutdown.

use std::sync::Arc;
use std::time::Duration;

use imggo_receiver::store::batch::BatchOptions;
use imggo_receiver::store::{BatchWriter, InsertOutcome, NewEvent, SubmitError};

use crate::helpers::*;

fn event(job: &str) -> NewEvent {
    sealed_event(job)
}

fn opts(max_batch: usize, writers: usize, queue_capacity: usize) -> BatchOptions {
    BatchOptions {
        max_batch,
        writers,
        queue_capacity,
    }
}

/// Waits (bounded) until `cond` holds; for observing another task's progress.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for {what}");
}

#[tokio::test]
async fn one_batch_mixes_new_stored_and_repeated_rows() {
    for (store, _keep) in each_store().await {
        store.insert(&event("stored")).await.unwrap();
        let (a, stored, a_again, c) = (event("a"), event("stored"), event("a"), event("c"));
        let outcomes = store
            .insert_batch(&[&a, &stored, &a_again, &c])
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            [
                InsertOutcome::Inserted,
                InsertOutcome::Duplicate,
                InsertOutcome::Duplicate,
                InsertOutcome::Inserted
            ],
            "{}",
            crate::helpers::backend_name(&store)
        );
        assert_eq!(count_rows(&store).await, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_get_their_own_outcome() {
    for (store, _keep) in each_store().await {
        let (writer, handle) = BatchWriter::spawn(store.clone(), opts(64, 2, 1024));
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .submit(event(&format!("job-{}", i % 100)))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let inserted = count_inserted(tasks).await;
        assert_eq!(inserted, 100, "{}", crate::helpers::backend_name(&store));
        assert_eq!(count_rows(&store).await, 100);
        drop(writer);
        handle.await.unwrap();
    }
}

#[tokio::test]
async fn a_failed_batch_fails_every_request_in_it_and_acknowledges_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let (writer, _h) = BatchWriter::spawn(store.clone(), opts(64, 1, 64));
    db.take_events_table_away().await;
    let results =
        futures_util::future::join_all((0..5).map(|i| writer.submit(event(&format!("j{i}")))))
            .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(SubmitError::Failed))),
        "{results:?}"
    );
    db.restore_events_table().await;
    assert_eq!(count_rows(&store).await, 0);
    // The writer carries on once the database is healthy again.
    assert_eq!(
        writer.submit(event("j0")).await,
        Ok(InsertOutcome::Inserted)
    );
}

/// Waits (bounded) until the writer's INSERT is blocked on the table lock,
/// so the rows submitted next are sure to form the following batch. The
/// batch statement is known by how it opens: pg_stat_activity keeps only
/// the first kilobyte of a query.
async fn insert_waits_on_lock(db: &TestDb) {
    eventually("the writer's INSERT waiting on the lock", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND query LIKE 'WITH batch AS%'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (n > 0).then_some(())
    })
    .await;
}

/// Blocks every insert into the table until the returned connection ends its transaction.
async fn lock_table(db: &TestDb) -> sqlx::PgConnection {
    db.lock_events().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_at_once_then_everything_queued_commits() {
    let db = TestDb::new().await;
    let store = db.store();
    let (writer, _h) = BatchWriter::spawn(store.clone(), opts(1, 1, 2));
    let mut lock = lock_table(&db).await;

    // The writer takes the first and blocks on the lock; two more fill the queue.
    let w = writer.clone();
    let first = tokio::spawn(async move { w.submit(event("first")).await });
    insert_waits_on_lock(&db).await;
    let queued: Vec<_> = ["second", "third"]
        .into_iter()
        .map(|job| {
            let w = writer.clone();
            tokio::spawn(async move { w.submit(event(job)).await })
        })
        .collect();
    until("two rows queued", || writer.queued() == 2).await;
    assert_eq!(
        writer.submit(event("refused")).await,
        Err(SubmitError::QueueFull)
    );

    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    assert_eq!(first.await.unwrap(), Ok(InsertOutcome::Inserted));
    for q in queued {
        assert_eq!(q.await.unwrap(), Ok(InsertOutcome::Inserted));
    }
    assert_eq!(
        count_rows(&store).await,
        3,
        "the refused row was never stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_non_empty_queue_commits_what_was_queued() {
    let db = TestDb::new().await;
    let store = db.store();
    let (writer, handle) = BatchWriter::spawn(store.clone(), opts(4, 1, 64));
    let mut lock = lock_table(&db).await;
    let waiting: Vec<_> = (0..20)
        .map(|i| {
            let w = writer.clone();
            tokio::spawn(async move { w.submit(event(&format!("q{i}"))).await })
        })
        .collect();
    let writer = Arc::new(writer);
    until("rows queued behind the blocked writer", || {
        writer.queued() >= 10
    })
    .await;
    // Every sender goes away (the server stopped) while rows are queued.
    drop(writer);
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    for w in waiting {
        assert_eq!(
            w.await.unwrap(),
            Ok(InsertOutcome::Inserted),
            "an acknowledged row"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("writers stop once drained")
        .unwrap();
    assert_eq!(count_rows(&store).await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_does_not_fail_its_batch_mates() {
    let db = TestDb::new().await;
    let store = db.store();
    let (writer, _h) = BatchWriter::spawn(store.clone(), opts(64, 1, 64));
    let mut lock = lock_table(&db).await;
    // Postgres refuses NUL in text; HTTP validation stops it, this test goes around it.
    let mut poison = event("poison");
    poison.envelope.pattern_id = Some("a\0b".into());
    let w = writer.clone();
    let first = tokio::spawn(async move { w.submit(event("first")).await });
    insert_waits_on_lock(&db).await;
    let mut batch: Vec<_> = (0..5)
        .map(|i| {
            let w = writer.clone();
            tokio::spawn(async move { w.submit(event(&format!("good-{i}"))).await })
        })
        .collect();
    let w = writer.clone();
    batch.push(tokio::spawn(async move { w.submit(poison).await }));
    until("the next batch to queue", || writer.queued() == 6).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();

    assert_eq!(first.await.unwrap(), Ok(InsertOutcome::Inserted));
    let results: Vec<_> = futures_util::future::join_all(batch)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results[..5], [Ok(InsertOutcome::Inserted); 5]);
    assert_eq!(results[5], Err(SubmitError::Failed));
    assert_eq!(count_rows(&store).await, 6);
}
