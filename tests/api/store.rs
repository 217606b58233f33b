//! The Postgres store: idempotency, sealing, key rotation.

use imggo_receiver::crypto::OpenError;
use imggo_receiver::delivery::Envelope;
use imggo_receiver::store::{InsertOutcome, NewEvent, PgStore, Store};

use crate::helpers::*;

fn event(ring: &imggo_receiver::crypto::KeyRing, job: &str, ev: &str, payload: &[u8]) -> NewEvent {
    NewEvent {
        envelope: Envelope {
            job_id: job.into(),
            event: ev.into(),
            pattern_id: None,
            status: None,
        },
        sealed: ring.seal(job, ev, payload),
    }
}

async fn store() -> (TestDb, Store) {
    let db = TestDb::new().await;
    let store = Store::Postgres(PgStore::from_pool(db.pool.clone()));
    (db, store)
}

#[tokio::test]
async fn insert_is_idempotent_per_job_and_event() {
    let (_db, store) = store().await;
    let ring = test_ring(KEY_A);
    let e = event(&ring, "j1", "job.succeeded", b"{}");
    assert_eq!(store.insert(&e).await.unwrap(), InsertOutcome::Inserted);
    assert_eq!(store.insert(&e).await.unwrap(), InsertOutcome::Duplicate);
    let other = event(&ring, "j1", "job.failed", b"{}");
    assert_eq!(store.insert(&other).await.unwrap(), InsertOutcome::Inserted);
    assert_eq!(store.events_for_job("j1").await.unwrap().len(), 2);
    assert!(store.events_for_job("j2").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_insert_once() {
    let (_db, store) = store().await;
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
    let mut inserted = 0;
    for t in tasks {
        if t.await.unwrap() == InsertOutcome::Inserted {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    assert_eq!(store.events_for_job("j1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn no_plaintext_reaches_the_database() {
    let (db, store) = store().await;
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
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM webhook_events t")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!dump.contains(marker));
    let hex_marker = hex::encode(marker);
    assert!(!dump.contains(&hex_marker));
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
    let (db, store) = store().await;
    let ring = test_ring(KEY_A);
    store
        .insert(&event(&ring, "j1", "e", b"{\"secret\":1}"))
        .await
        .unwrap();
    store
        .insert(&event(&ring, "j2", "e", b"{\"secret\":2}"))
        .await
        .unwrap();
    // An attacker with write access swaps the sealed payloads of two rows.
    sqlx::query(
        "UPDATE webhook_events a SET nonce = b.nonce, ciphertext = b.ciphertext \
         FROM webhook_events b WHERE a.job_id = 'j1' AND b.job_id = 'j2'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let row = store.events_for_job("j1").await.unwrap().remove(0);
    assert_eq!(
        ring.open(
            &row.job_id,
            &row.event,
            &row.key_id,
            &row.nonce,
            &row.ciphertext
        ),
        Err(OpenError::Corrupt)
    );
    let row = store.events_for_job("j2").await.unwrap().remove(0);
    assert_eq!(
        ring.open(
            &row.job_id,
            &row.event,
            &row.key_id,
            &row.nonce,
            &row.ciphertext
        )
        .unwrap(),
        b"{\"secret\":2}"
    );
}

#[tokio::test]
async fn rows_under_key_a_stay_readable_after_rotation_to_b_a() {
    let (_db, store) = store().await;
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
    for row in [&old, &new] {
        assert!(ring_ba
            .open(
                &row.job_id,
                &row.event,
                &row.key_id,
                &row.nonce,
                &row.ciphertext
            )
            .is_ok());
    }
    // A ring without B cannot read the new row, and says so.
    assert_eq!(
        ring_a.open(
            &new.job_id,
            &new.event,
            &new.key_id,
            &new.nonce,
            &new.ciphertext
        ),
        Err(OpenError::UnknownKey("kb".into()))
    );
}
