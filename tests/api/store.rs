//! Store conformance: the same test bodies against Postgres and SQLite.

use std::time::Duration;

use imggo_receiver::crypto::{KeyRing, OpenError};
use imggo_receiver::reencrypt::reencrypt;
use imggo_receiver::store::{InsertOutcome, NewEvent, PurgeOutcome, Store, StoreError};

use crate::helpers::*;

fn event(ring: &KeyRing, job: &str, ev: &str, payload: &[u8]) -> NewEvent {
    let mut event = sealed_event_with(ring, job, ev, payload);
    event.envelope.pattern_id = Some("p1".into());
    event.envelope.status = Some("done".into());
    event
}

fn open(ring: &KeyRing, row: &imggo_receiver::store::StoredEvent) -> Result<Vec<u8>, OpenError> {
    ring.open(row.key(), &row.key_id, &row.nonce, &row.ciphertext)
}

#[tokio::test]
async fn insert_is_idempotent_per_job_and_event() {
    for (store, _keep) in each_store().await {
        let name = crate::helpers::backend_name(&store);
        let ring = test_ring(KEY_A);
        let e = event(&ring, "j1", "job.succeeded", b"{}");
        assert_eq!(
            store.insert(&e).await.unwrap(),
            InsertOutcome::Inserted,
            "{name}"
        );
        assert_eq!(
            store.insert(&e).await.unwrap(),
            InsertOutcome::Duplicate,
            "{name}"
        );
        let other = event(&ring, "j1", "job.failed", b"{}");
        assert_eq!(
            store.insert(&other).await.unwrap(),
            InsertOutcome::Inserted,
            "{name}"
        );
        let rows = store.events_for_job("j1").await.unwrap();
        assert_eq!(rows.len(), 2, "{name}");
        assert_eq!(rows[0].event, "job.succeeded", "{name}: oldest first");
        assert_eq!(rows[0].pattern_id.as_deref(), Some("p1"));
        assert_eq!(rows[0].status.as_deref(), Some("done"));
        assert!(
            (chrono::Utc::now() - rows[0].received_at)
                .num_seconds()
                .abs()
                < 60,
            "{name}"
        );
        assert!(
            store.events_for_job("j2").await.unwrap().is_empty(),
            "{name}"
        );
        store.ready().await.unwrap();
    }
}

/// The audit trail is append-only in the database itself: an UPDATE (or,
/// on Postgres, a TRUNCATE) is refused; retention's DELETE still works.
#[tokio::test]
async fn the_database_refuses_to_change_audit_records() {
    for (store, _keep) in each_store().await {
        let name = crate::helpers::backend_name(&store);
        let entry = imggo_receiver::audit::AuditEntry::new(
            imggo_receiver::audit::Actor::Cli,
            imggo_receiver::audit::Action::Erasure,
            Some("target".into()),
        );
        store.append_audit(&entry).await.unwrap();
        const UPDATE: &str = "UPDATE audit_log SET target = 'rewritten'";
        let refused = match &store {
            Store::Postgres(s) => {
                sqlx::query(UPDATE).execute(s.pool()).await.is_err()
                    && sqlx::query("TRUNCATE audit_log")
                        .execute(s.pool())
                        .await
                        .is_err()
            }
            Store::Sqlite(s) => sqlx::query(UPDATE).execute(s.pool()).await.is_err(),
        };
        assert!(refused, "{name}: an audit record was changed");
        let records = store.audit_since(0).await.unwrap();
        assert_eq!(records.len(), 1, "{name}");
        assert_eq!(records[0].target.as_deref(), Some("target"), "{name}");
        assert_eq!(
            store.purge_audit(std::time::Duration::ZERO).await.unwrap(),
            1,
            "{name}"
        );
    }
}

/// The spool's drainer may move a quarantine row twice (a crash between
/// Postgres' commit and the spool's trim): it is kept once, same id.
#[tokio::test]
async fn a_quarantine_row_kept_twice_is_stored_once() {
    for (store, _keep) in each_store().await {
        let name = crate::helpers::backend_name(&store);
        let sealed = sealed_event("q").sealed;
        let row = |seal_id: &str| imggo_receiver::store::quarantine::NewQuarantined {
            received_at: chrono::Utc::now(),
            reason: "invalid_json",
            request_id: "req-q".into(),
            bytes: 3,
            seal_id: seal_id.into(),
            sealed: sealed.clone(),
            subjects: Vec::new(),
        };
        let first = store.quarantine(&row("seal-1"), 10).await.unwrap();
        let again = store.quarantine(&row("seal-1"), 10).await.unwrap();
        assert_eq!(first, again, "{name}");
        let other = store.quarantine(&row("seal-2"), 10).await.unwrap();
        assert_ne!(first, other, "{name}");
        assert_eq!(store.quarantined().await.unwrap().len(), 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_insert_once() {
    for (store, _keep) in each_store().await {
        let ring = std::sync::Arc::new(test_ring(KEY_A));
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let (store, ring) = (store.clone(), ring.clone());
                tokio::spawn(async move {
                    store
                        .insert(&event(&ring, "j1", "job.succeeded", b"{}"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let inserted = count_inserted(tasks).await;
        assert_eq!(inserted, 1, "{}", crate::helpers::backend_name(&store));
        assert_eq!(count_rows(&store).await, 1);
    }
}

#[tokio::test]
async fn no_plaintext_reaches_the_database() {
    let (db, store) = {
        let db = TestDb::new().await;
        let store = db.store();
        (db, store)
    };
    let ring = test_ring(KEY_A);
    let marker = "PLAINTEXT-MARKER-4f1d";
    store
        .insert(&event(
            &ring,
            "j1",
            "e",
            format!("{{\"note\":\"{marker}\"}}").as_bytes(),
        ))
        .await
        .unwrap();
    let dump = db.events_as_text().await;
    assert!(!dump.contains(marker));
    assert!(!dump.contains(&hex::encode(marker)));

    let dir = tempfile::tempdir().unwrap();
    let url = secrecy::SecretString::from(sqlite_url(dir.path()));
    let lite = Store::connect(&url, &test_settings().database)
        .await
        .unwrap();
    lite.migrate().await.unwrap();
    lite.insert(&event(
        &ring,
        "j1",
        "e",
        format!("{{\"note\":\"{marker}\"}}").as_bytes(),
    ))
    .await
    .unwrap();
    lite.close().await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "plaintext in a SQLite file"
        );
    }
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
    for (store, _keep) in each_store().await {
        let ring = test_ring(KEY_A);
        store
            .insert(&event(&ring, "j1", "e", b"{\"secret\":1}"))
            .await
            .unwrap();
        store
            .insert(&event(&ring, "j2", "e", b"{\"secret\":2}"))
            .await
            .unwrap();
        // An attacker with write access copies j2's sealed payload onto j1.
        exec(
            &store,
            "UPDATE webhook_events a SET nonce = b.nonce, ciphertext = b.ciphertext \
             FROM webhook_events b WHERE a.job_id = 'j1' AND b.job_id = 'j2'",
            "UPDATE webhook_events SET (nonce, ciphertext) = \
             (SELECT nonce, ciphertext FROM webhook_events WHERE job_id = 'j2') WHERE job_id = 'j1'",
        )
        .await;
        let moved = store.events_for_job("j1").await.unwrap().remove(0);
        assert_eq!(
            open(&ring, &moved),
            Err(OpenError::Corrupt),
            "{}",
            crate::helpers::backend_name(&store)
        );
        let kept = store.events_for_job("j2").await.unwrap().remove(0);
        assert_eq!(open(&ring, &kept).unwrap(), b"{\"secret\":2}");
    }
}

#[tokio::test]
async fn rows_under_key_a_stay_readable_after_rotation_to_b_a() {
    for (store, _keep) in each_store().await {
        let ring_a = test_ring(KEY_A);
        store
            .insert(&event(&ring_a, "old", "e", b"{\"v\":\"old\"}"))
            .await
            .unwrap();
        let ring_ba = test_ring(&format!("{KEY_B},{KEY_A}"));
        store
            .insert(&event(&ring_ba, "new", "e", b"{\"v\":\"new\"}"))
            .await
            .unwrap();
        let old = store.events_for_job("old").await.unwrap().remove(0);
        let new = store.events_for_job("new").await.unwrap().remove(0);
        assert_eq!((old.key_id.as_str(), new.key_id.as_str()), ("ka", "kb"));
        assert!(open(&ring_ba, &old).is_ok() && open(&ring_ba, &new).is_ok());
        assert_eq!(open(&ring_a, &new), Err(OpenError::UnknownKey("kb".into())));

        // reencrypt moves everything under kb; then a kb-only ring reads all.
        let report = reencrypt(&store, &ring_ba, None).await.unwrap();
        assert_eq!(report.events, 1, "{}", crate::helpers::backend_name(&store));
        assert_eq!(
            reencrypt(&store, &ring_ba, None).await.unwrap().events,
            0,
            "idempotent"
        );
        let ring_b = test_ring(KEY_B);
        for job in ["old", "new"] {
            let row = store.events_for_job(job).await.unwrap().remove(0);
            assert_eq!(row.key_id, "kb");
            assert!(open(&ring_b, &row).is_ok());
        }
    }
}

#[tokio::test]
async fn purge_deletes_exactly_the_expired_rows() {
    for (store, _keep) in each_store().await {
        let name = crate::helpers::backend_name(&store);
        let ring = test_ring(KEY_A);
        let jobs: Vec<String> = (0..7).map(|i| format!("job-{i}")).collect();
        for job in &jobs {
            store.insert(&event(&ring, job, "e", b"{}")).await.unwrap();
        }
        let old: Vec<&str> = jobs[..5].iter().map(String::as_str).collect();
        backdate_rows(&store, &old, 7200).await;
        let hour = Duration::from_secs(3600);
        assert_eq!(
            store.purge(hour, 2, true).await.unwrap(),
            PurgeOutcome::WouldDelete(5),
            "{name}"
        );
        assert_eq!(
            count_rows(&store).await,
            7,
            "{name}: dry run deletes nothing"
        );
        assert_eq!(
            store.purge(hour, 2, false).await.unwrap(),
            PurgeOutcome::Deleted(5),
            "{name}"
        );
        assert_eq!(count_rows(&store).await, 2);
        assert_eq!(store.events_for_job("job-6").await.unwrap().len(), 1);
        assert_eq!(
            store.purge(hour, 2, false).await.unwrap(),
            PurgeOutcome::Deleted(0)
        );
    }
}

#[tokio::test]
async fn readiness_reports_missing_migrations() {
    for (store, _keep) in each_store().await {
        store.ready().await.unwrap();
        exec(
            &store,
            "DELETE FROM _sqlx_migrations",
            "DELETE FROM _sqlx_migrations",
        )
        .await;
        assert!(
            matches!(store.ready().await, Err(StoreError::NotMigrated)),
            "{}",
            crate::helpers::backend_name(&store)
        );
        // No migrations table at all (a database nobody migrated).
        exec(
            &store,
            "DROP TABLE _sqlx_migrations",
            "DROP TABLE _sqlx_migrations",
        )
        .await;
        assert!(
            matches!(store.ready().await, Err(StoreError::NotMigrated)),
            "{}: missing table",
            crate::helpers::backend_name(&store)
        );
    }
}

#[tokio::test]
async fn job_id_and_event_compare_bytewise_in_postgres() {
    let db = TestDb::new().await;
    let collations: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, collation_name::text FROM information_schema.columns \
         WHERE table_name = 'webhook_events' AND column_name IN ('job_id', 'event') \
         ORDER BY column_name",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        collations,
        [
            ("event".to_owned(), Some("C".to_owned())),
            ("job_id".to_owned(), Some("C".to_owned()))
        ]
    );
}

#[tokio::test]
async fn batch_writer_sessions_flush_their_writes_steadily() {
    let db = TestDb::new().await;
    let writers = imggo_receiver::store::PgStore::from_pool(db.pool.clone()).own_pool(1);
    let flush: String = sqlx::query_scalar("SHOW backend_flush_after")
        .fetch_one(writers.pool())
        .await
        .unwrap();
    assert_eq!(flush, "256kB");
    // Only the writers' sessions: the shared pool keeps the server's setting.
    let shared: String = sqlx::query_scalar("SHOW backend_flush_after")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_ne!(shared, "256kB");
    writers.pool().close().await;
}

/// Two batches in flight at once that share keys, each in the other's
/// order (a sender retrying through another replica, a spool draining
/// deliveries that are retried live), both waiting for a third
/// transaction's uncommitted claim of those keys. When it goes away, both
/// finish and each key is stored once: a batch claims its keys in one
/// order whatever order they came in, so neither can hold a key the other
/// waits for while waiting for one the other holds. Claimed in arrival
/// order, the two fall into a deadlock about every other round (Postgres
/// aborts one after `deadlock_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sharing_keys_in_opposite_orders_both_finish() {
    let db = TestDb::new().await;
    let day = imggo_receiver::store::partitions::claim_day(chrono::Utc::now());
    for round in 0..4 {
        let (p, q) = (format!("p-{round}"), format!("q-{round}"));
        let mut blocker = db.pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO event_claims (key, day) VALUES \
             (imggo_event_key($1, 'job.succeeded'), $3), (imggo_event_key($2, 'job.succeeded'), $3)",
        )
        .bind(&p)
        .bind(&q)
        .bind(day)
        .execute(&mut *blocker)
        .await
        .unwrap();
        let batch = |first: &str, second: &str| {
            let (store, first, second) = (db.store(), sealed_event(first), sealed_event(second));
            tokio::spawn(async move { store.insert_batch(&[&first, &second]).await })
        };
        let (a, b) = (batch(&q, &p), batch(&p, &q));
        eventually("both batches wait for the uncommitted claims", || async {
            (sessions_waiting_for_a_lock(&db.pool).await == 2).then_some(())
        })
        .await;
        blocker.rollback().await.unwrap();
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("round {round}: {e}")),
            b.unwrap_or_else(|e| panic!("round {round}: {e}")),
        );
        let inserted = a
            .iter()
            .chain(&b)
            .filter(|o| **o == InsertOutcome::Inserted)
            .count();
        assert_eq!(inserted, 2, "round {round}: {a:?} {b:?}");
    }
    let stored = db.stored_job_ids().await;
    assert_eq!(stored.len(), 8, "{stored:?}");
}

/// A deadlock is logged as one, not as a refused connection: the batch
/// writer's log line is what an operator reads when a batch goes to the
/// spool for it.
#[tokio::test]
async fn a_deadlock_is_described_as_one() {
    let db = TestDb::new().await;
    sqlx::raw_sql("CREATE TABLE probe (id int PRIMARY KEY); INSERT INTO probe VALUES (1), (2)")
        .execute(&db.pool)
        .await
        .unwrap();
    let (mut one, mut two) = (
        db.pool.begin().await.unwrap(),
        db.pool.begin().await.unwrap(),
    );
    for (tx, id) in [(&mut one, 1), (&mut two, 2)] {
        sqlx::query("UPDATE probe SET id = id WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await
            .unwrap();
    }
    // Each now wants the row the other holds.
    let (a, b) = tokio::join!(
        sqlx::query("UPDATE probe SET id = id WHERE id = 2").execute(&mut *one),
        sqlx::query("UPDATE probe SET id = id WHERE id = 1").execute(&mut *two),
    );
    let lost = a.err().or(b.err()).expect("Postgres broke the deadlock");
    let text = StoreError::from(lost).to_string();
    assert!(
        text.contains("deadlocked") && text.contains("40P01"),
        "{text}"
    );
    assert!(!text.contains("refused"), "{text}");
}
