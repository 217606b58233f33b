//! Time partitions on Postgres (CONTRACT §5): retention drops whole
//! partitions, no read serves an event past `max_age`, uniqueness holds
//! across partitions and key windows, and `migrate` moves a previous
//! release's rows into the layout.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use imggo_receiver::config::RetentionSettings;
use imggo_receiver::store::partitions::{self, Layout};
use imggo_receiver::store::{FeedFilter, InsertOutcome, PgStore, PurgeOutcome, Store, StoreError};
use serde_json::Value;
use sqlx::Connection as _;

use crate::api_support::make_token;
use crate::helpers::*;

const HOUR: Duration = Duration::from_secs(3600);

fn event_at(job: &str, at: DateTime<Utc>) -> imggo_receiver::event::NewEvent {
    let mut e = sealed_event(job);
    e.received_at = at;
    e
}

/// Asserts that a delivery of `job` received at each of `times` is a
/// duplicate.
async fn assert_duplicates(store: &Store, job: &str, times: &[DateTime<Utc>]) {
    for at in times {
        assert_eq!(
            store.insert(&event_at(job, *at)).await.unwrap(),
            InsertOutcome::Duplicate,
            "{job} at {at}"
        );
    }
}

/// The start of the current key window: a Monday 00:00 UTC, a multiple
/// of four weeks after 1970-01-05.
fn this_window() -> DateTime<Utc> {
    let (origin, width) = (4 * 86_400, 28 * 86_400);
    let start = origin + (Utc::now().timestamp() - origin).div_euclid(width) * width;
    Utc.timestamp_opt(start, 0).unwrap()
}

/// Every dedup key, claimed (today's and unsealed days') or sealed.
const KEYS_CLAIMED_OR_SEALED: &str =
    "SELECT (SELECT count(*) FROM event_claims) + (SELECT count(*) FROM event_keys)";

async fn scalar_i64(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

/// Applies the migrations older than `version`: the schema of the release
/// before it.
async fn migrate_before(db: &TestDb, version: i64) {
    let previous = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            imggo_receiver::store::postgres::MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    previous.run(&db.pool).await.unwrap();
}

/// The first 16 bytes of SHA-256 over the event name, a line feed and the
/// job id (docs/storage.md), computed here, not by the code under test.
fn digest_of(job: &str, event: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(format!("{event}\n{job}").as_bytes())[..16].to_vec()
}

#[tokio::test]
async fn retention_drops_whole_partitions_and_deletes_no_row() {
    let db = TestDb::new().await;
    let store = db.store();
    db.insert_raw_events(2000, 3).await;
    store.insert(&sealed_event("fresh")).await.unwrap();
    // A delete by row now fails: only dropping partitions can remove rows.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'a row was deleted'; END $$; \
         CREATE TRIGGER refuse_delete BEFORE DELETE ON webhook_events \
         FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let partitions =
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'webhook_events'::regclass";
    let before = scalar_i64(&db, partitions).await;
    let epoch = "SELECT epoch FROM forward_erasure_epoch";
    let epoch_before = scalar_i64(&db, epoch).await;

    assert_eq!(
        store.purge(HOUR, 10, true).await.unwrap(),
        PurgeOutcome::WouldDelete(2000)
    );
    assert_eq!(scalar_i64(&db, epoch).await, epoch_before, "a dry run");
    assert_eq!(
        store.purge(HOUR, 10, false).await.unwrap(),
        PurgeOutcome::Deleted(2000)
    );
    assert_eq!(db.stored_job_ids().await, ["fresh"]);
    let dropped = before - scalar_i64(&db, partitions).await;
    assert!(dropped > 0);
    // Each dropped partition counts the erasure epoch up: a relay's shared
    // read holding its events is not served again (`forward::shared`).
    assert_eq!(
        scalar_i64(&db, epoch).await - epoch_before,
        dropped,
        "one count per dropped partition"
    );
    // Nothing detached is left behind, and no DEFAULT partition exists
    // (it would stop DETACH ... CONCURRENTLY).
    assert_eq!(
        scalar_i64(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'webhook_events_p%' \
             AND relkind = 'r' AND NOT relispartition"
        )
        .await,
        0
    );
    assert_eq!(
        scalar_i64(
            &db,
            "SELECT count(*) FROM pg_partitioned_table WHERE partdefid <> 0"
        )
        .await,
        0
    );
    // The next pass finds nothing more.
    assert_eq!(
        store.purge(HOUR, 10, false).await.unwrap(),
        PurgeOutcome::Deleted(0)
    );
}

#[tokio::test]
async fn no_read_serves_an_event_past_max_age_while_its_partition_waits() {
    let db = TestDb::new().await;
    // Daily partitions, an hour's retention: the old row's partition is
    // not wholly past max_age, so it stays until a later pass.
    let store = Store::Postgres(PgStore::from_pool(db.pool.clone()).with_layout(Layout {
        interval: Duration::from_secs(86_400),
        max_age: Some(HOUR),
    }));
    let old_at = Utc::now() - chrono::Duration::minutes(61);
    store.insert(&event_at("old", old_at)).await.unwrap();
    store.insert(&sealed_event("fresh")).await.unwrap();
    assert_eq!(
        db.stored_job_ids().await,
        ["fresh", "old"],
        "both are stored"
    );

    // The feed reads below the oldest transaction running anywhere in the
    // cluster (another test's may hold both rows back for a moment): wait
    // for the newer row; the older one, written first, would come before it.
    let reader = &store;
    let page = eventually("the fresh event is in the feed", || async move {
        let page = reader
            .feed_page(Default::default(), 100, &FeedFilter::default())
            .await
            .unwrap();
        (!page.is_empty()).then_some(page)
    })
    .await;
    let served: Vec<&str> = page.iter().map(|e| e.row.job_id.as_str()).collect();
    assert_eq!(served, ["fresh"]);
    assert!(store.job_events("old").await.unwrap().is_empty());
    assert!(store.events_for_job("old").await.unwrap().is_empty());
    assert_eq!(store.job_events("fresh").await.unwrap().len(), 1);
    let old_id: i64 = sqlx::query_scalar("SELECT id FROM webhook_events WHERE job_id = 'old'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(store.forward_event(old_id).await.unwrap().is_none());
}

#[tokio::test]
async fn the_server_serves_nothing_past_max_age() {
    let app = spawn_app_with(|o| {
        o.settings.retention = RetentionSettings {
            max_age: HOUR,
            purge_interval: Duration::from_secs(3600),
            batch_size: 10,
        };
    })
    .await;
    let (old, fresh) = (new_job_id(), new_job_id());
    assert_eq!(app.post_signed(prod_body(&old)).await.status(), 200);
    assert_eq!(app.post_signed(prod_body(&fresh)).await.status(), 200);
    backdate_rows(&app.store, &[old.as_str()], 3600 + 60).await;
    let token = make_token(&app.store, "reader", "events:read").await;
    let (events, _) = app.drain(&token, 100, 1).await;
    let served: Vec<&str> = events
        .iter()
        .map(|e| e["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(served, [fresh.as_str()]);
    let res = app
        .client
        .get(app.api(&format!("/v1/jobs/{old}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert!(
        body["events"].as_array().is_none_or(|e| e.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn one_key_is_stored_once_across_partitions_and_key_windows() {
    let db = TestDb::new().await;
    let store = db.store();
    let now = Utc::now();
    // 29 days back: another key window whatever today is.
    let (month_ago, two_days_ago) = (
        now - chrono::Duration::days(29),
        now - chrono::Duration::days(2),
    );
    // Old first (its partitions are made on demand), then new ones.
    assert_eq!(
        store.insert(&event_at("a", month_ago)).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_duplicates(&store, "a", &[two_days_ago, now]).await;
    // New first, then older ones (a spool draining late).
    assert_eq!(
        store.insert(&event_at("b", now)).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_duplicates(&store, "b", &[two_days_ago, month_ago]).await;
    // Both in one batch, in two windows: the first counts.
    let (c_new, c_old) = (event_at("c", now), event_at("c", month_ago));
    assert_eq!(
        store.insert_batch(&[&c_new, &c_old]).await.unwrap(),
        [InsertOutcome::Inserted, InsertOutcome::Duplicate]
    );
    assert_eq!(db.stored_job_ids().await, ["a", "b", "c"]);
    assert_eq!(
        scalar_i64(&db, KEYS_CLAIMED_OR_SEALED).await,
        3,
        "one key per stored event"
    );
}

/// Two deliveries of one key, one a second before `edge` and one a second
/// after it, all started at once: exactly one of each pair is stored (ON
/// CONFLICT cannot see across claim days; the guard serializes).
async fn deliveries_of_one_key_either_side_of(edge: DateTime<Utc>, rounds: usize) {
    let db = TestDb::new().await;
    let store = db.store();
    let (before, after) = (
        edge - chrono::Duration::seconds(1),
        edge + chrono::Duration::seconds(1),
    );
    store.make_partitions_for(&[before, after]).await.unwrap();
    for round in 0..rounds {
        race_either_side(&store, round, before, after).await;
    }
}

async fn race_either_side(
    store: &Store,
    round: usize,
    before: DateTime<Utc>,
    after: DateTime<Utc>,
) {
    let keys: Vec<String> = (0..30).map(|i| format!("edge-{round}-{i}")).collect();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(keys.len() * 2));
    let mut tasks = Vec::new();
    for key in &keys {
        for at in [before, after] {
            let (store, start, e) = (store.clone(), start.clone(), event_at(key, at));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store.insert(&e).await.unwrap()
            }));
        }
    }
    assert_eq!(count_inserted(tasks).await, keys.len(), "round {round}");
    assert_eq!(
        count_rows(store).await,
        ((round + 1) * keys.len()) as i64,
        "round {round}"
    );
}

/// At a key window's edge, which lies in the past: both rows are older
/// than ten minutes, so both claim on today and that day's ON CONFLICT
/// decides (each batch runs alone besides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_of_one_key_in_two_windows_at_once_store_one() {
    deliveries_of_one_key_either_side_of(this_window(), 1).await;
}

/// At the next midnight: recent rows (in the future, not old), so the
/// batches run side by side and only the per-key locks of rows near a
/// claim day's edge keep the second out (without them about two rounds in
/// three store a key twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_of_one_key_on_two_claim_days_at_once_store_one() {
    let tomorrow = partitions::claim_day(Utc::now()) + chrono::Duration::days(1);
    deliveries_of_one_key_either_side_of(tomorrow, 4).await;
}

/// Inserts one event per job received at `at`, each stored.
async fn store_at(store: &Store, jobs: &[&str], at: DateTime<Utc>) {
    for job in jobs {
        assert_eq!(
            store.insert(&event_at(job, at)).await.unwrap(),
            InsertOutcome::Inserted,
            "{job}"
        );
    }
}

/// Claims the keys of `jobs` on the day of `at`, as inserts did while that
/// day was today (its partition made first).
async fn claim_on(db: &TestDb, jobs: &[&str], at: DateTime<Utc>) {
    db.store().make_partitions_for(&[at]).await.unwrap();
    sqlx::query(
        "INSERT INTO event_claims (key, day) \
         SELECT imggo_event_key(j, 'job.succeeded'), $2 FROM unnest($1::text[]) j",
    )
    .bind(jobs)
    .bind(partitions::claim_day(at))
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Names of the claim partitions, oldest first.
async fn claim_days(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'event_claims'::regclass ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// A day's claims, once sealed, are in the key window holding the day and
/// nowhere else, and still make every later delivery of them a duplicate,
/// received then or now; today's claims stay where they are.
#[tokio::test]
async fn a_sealed_day_keeps_its_keys_in_its_key_window() {
    let db = TestDb::new().await;
    let store = db.store();
    let now = Utc::now();
    let past = now - chrono::Duration::days(2);
    claim_on(&db, &["past-1", "past-2"], past).await;
    store_at(&store, &["today"], now).await;
    let past_day = format!(
        "event_claims_p{}",
        partitions::claim_day(past).format("%Y%m%dt%H%M")
    );
    assert!(claim_days(&db).await.contains(&past_day));

    assert_eq!(seal_now(&db).await, 2);
    assert!(!claim_days(&db).await.contains(&past_day), "dropped");
    let sealed: Vec<(Vec<u8>, DateTime<Utc>)> =
        sqlx::query_as("SELECT uuid_send(key), since FROM event_keys ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected = vec![
        (
            digest_of("past-1", "job.succeeded"),
            partitions::key_window(past),
        ),
        (
            digest_of("past-2", "job.succeeded"),
            partitions::key_window(past),
        ),
    ];
    expected.sort();
    assert_eq!(sealed, expected);
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM event_claims").await,
        1,
        "today's claim stays"
    );
    assert_duplicates(&store, "past-1", &[past, now]).await;
    assert_eq!(
        store.insert(&event_at("today", now)).await.unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(seal_now(&db).await, 0, "nothing left to seal");
}

/// A row received long ago (a spool draining after an outage) claims its
/// key on today, not on its receipt's day: nothing claims into a day once
/// it is over, so the seal copies it with no lock. Claimed on a day past
/// just before its seal dropped it, the key would be forgotten.
#[tokio::test]
async fn an_old_row_claims_its_key_on_today_and_outlives_the_seal() {
    let db = TestDb::new().await;
    let store = db.store();
    let past = Utc::now() - chrono::Duration::days(2);
    store_at(&store, &["spooled"], past).await;
    let day: DateTime<Utc> = sqlx::query_scalar(
        "SELECT day FROM event_claims WHERE key = imggo_event_key('spooled', 'job.succeeded')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(day, partitions::claim_day(Utc::now()));
    seal_now(&db).await;
    assert_eq!(
        store
            .insert(&event_at("spooled", Utc::now()))
            .await
            .unwrap(),
        InsertOutcome::Duplicate
    );
}

/// A day of more keys than one copy takes is sealed whole, in pieces.
#[tokio::test]
async fn a_day_of_many_keys_is_sealed_in_pieces_and_whole() {
    let db = TestDb::new().await;
    let past = Utc::now() - chrono::Duration::days(2);
    let store = db.store();
    store.make_partitions_for(&[past]).await.unwrap();
    let n = partitions::SEAL_CHUNK * 2 + 7;
    sqlx::query(
        "INSERT INTO event_claims (key, day) \
         SELECT imggo_event_key('many-' || g, 'job.succeeded'), $1 FROM generate_series(1, $2) g",
    )
    .bind(partitions::claim_day(past))
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(seal_now(&db).await, n.unsigned_abs());
    assert_eq!(sealed_and_claimed(&db).await, (n, 0));
    for job in [
        "many-1".to_owned(),
        format!("many-{n}"),
        format!("many-{}", n / 2),
    ] {
        assert_eq!(
            store.insert(&event_at(&job, past)).await.unwrap(),
            InsertOutcome::Duplicate,
            "{job}"
        );
    }
}

/// One seal pass as the purge runs it, now: the keys it copied.
async fn seal_now(db: &TestDb) -> u64 {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    partitions::seal(&db.pool, &mut conn, Utc::now())
        .await
        .unwrap()
}

/// Keys in the sealed windows, and claimed.
async fn sealed_and_claimed(db: &TestDb) -> (i64, i64) {
    (
        scalar_i64(db, "SELECT count(*) FROM event_keys").await,
        scalar_i64(db, "SELECT count(*) FROM event_claims").await,
    )
}

/// Waits until a session of this database waits for a lock.
async fn until_one_waits_for_a_lock(db: &TestDb, what: &str) {
    eventually(what, || async {
        (sessions_waiting_for_a_lock(&db.pool).await > 0).then_some(())
    })
    .await;
}

/// A seal detaches its day concurrently: while it waits for a transaction
/// that holds the claims table, inserts go on (a plain DROP would queue
/// them behind it), and every key of the day is found, copied already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_waits_for_readers_of_its_day_while_inserts_go_on() {
    let db = TestDb::new().await;
    let store = db.store();
    let past = Utc::now() - chrono::Duration::days(2);
    claim_on(&db, &["busy-1", "busy-2"], past).await;
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE event_claims IN ROW EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let sealing = {
        let (pool, url) = (db.pool.clone(), db.url.clone());
        tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            partitions::seal(&pool, &mut conn, Utc::now()).await
        })
    };
    until_one_waits_for_a_lock(&db, "the seal waits for the holder").await;
    store_at(&store, &["during"], Utc::now()).await;
    assert_duplicates(&store, "busy-1", &[Utc::now(), past]).await;
    assert!(
        !sealing.is_finished(),
        "the seal still waits for the holder"
    );
    // Already out of new statements' reads (detach pending): its keys are
    // found in their window.
    assert_eq!(sealed_and_claimed(&db).await, (2, 1));
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(sealing.await.unwrap().unwrap(), 2);
    assert_eq!(sealed_and_claimed(&db).await, (2, 1), "today's claim stays");
    assert_duplicates(&store, "busy-2", &[Utc::now(), past]).await;
    assert_eq!(seal_now(&db).await, 0, "nothing left to seal");
}

/// A batch decides its claim days and locks before it waits for them;
/// one that waited over its limit fails with IG001 (and is decided again
/// by the receiver) instead of claiming on a stale decision.
#[tokio::test]
async fn a_statement_after_a_long_wait_for_its_locks_fails_to_be_decided_again() {
    let db = TestDb::new().await;
    let fresh = |waited: &'static str| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(
                "SELECT set_config('imggo.guard_from', (clock_timestamp() - $1::interval)::text, true)",
            )
            .bind(waited)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query_scalar::<_, bool>("SELECT imggo_guard_fresh(interval '2 minutes')")
                .fetch_one(&mut *tx)
                .await
        }
    };
    assert!(fresh("1 second").await.unwrap());
    let err = fresh("3 minutes").await.unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("IG001"), "{err}");
}

/// Only the seal writes the sealed windows: a replica of an earlier
/// release, which claims there and never looks at the claims, fails its
/// batch instead of storing a second delivery of a key claimed here.
#[tokio::test]
async fn an_earlier_releases_claim_into_the_sealed_windows_fails() {
    let db = TestDb::new().await;
    db.store()
        .insert(&sealed_event("claimed-here"))
        .await
        .unwrap();
    let err = sqlx::query(
        "INSERT INTO event_keys (key, since) \
         VALUES (imggo_event_key('claimed-here', 'job.succeeded'), $1) ON CONFLICT DO NOTHING",
    )
    .bind(partitions::key_window(Utc::now()))
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("event_keys holds sealed keys only"),
        "{err}"
    );
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM event_keys").await, 0);
}

#[tokio::test]
async fn a_partition_interval_changed_later_continues_without_overlap() {
    let db = TestDb::new().await;
    let daily = Store::Postgres(PgStore::from_pool(db.pool.clone()).with_layout(Layout {
        interval: Duration::from_secs(86_400),
        max_age: None,
    }));
    daily.make_partitions().await.unwrap();
    // Hourly from here on: the hours after the last day partition.
    let hourly = db.store();
    hourly.make_partitions().await.unwrap();
    let in_three_days = Utc::now() + chrono::Duration::days(3);
    hourly
        .insert(&event_at("later", in_three_days))
        .await
        .unwrap();
    assert_eq!(db.stored_job_ids().await, ["later"]);
}

/// `migrate` on a database the previous release filled: every row moves
/// into the partitions with its id, feed position, subjects and verdict;
/// the id sequence and the dedup of the old keys carry on.
#[tokio::test]
async fn migrate_moves_a_previous_release_database_into_partitions() {
    let db = TestDb::unmigrated().await;
    migrate_before(&db, 20261209100000).await;
    sqlx::raw_sql(
        "INSERT INTO webhook_events (job_id, event, key_id, nonce, ciphertext, received_at, \
                                     subjects, valid, validation_errors) \
         SELECT 'old-' || g, 'job.succeeded', 'ka', '\\x01', '\\x02', \
                now() - g * interval '90 seconds', \
                CASE WHEN g % 10 = 0 THEN ARRAY['\\xaa'::bytea] END, \
                CASE WHEN g % 3 = 0 THEN false END, \
                CASE WHEN g % 3 = 0 THEN '[]' END \
         FROM generate_series(1, 3000) g; \
         INSERT INTO forward_notices (id, event_ids, created_at) \
         VALUES (nextval(pg_get_serial_sequence('webhook_events', 'id')), '', 0);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let digest = "SELECT md5(string_agg(concat_ws('|', id, job_id, event, received_at, tx, \
                  subjects, valid, validation_errors, nonce, ciphertext), ',' ORDER BY id)) \
                  FROM webhook_events";
    let before: String = sqlx::query_scalar(digest)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let feed_before = db.job_ids_in_feed_order().await;
    let notice = scalar_i64(&db, "SELECT max(id) FROM forward_notices").await;

    let store = db.store();
    store.migrate().await.unwrap();

    let after: String = sqlx::query_scalar(digest)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(after, before, "every row, every column, as it was");
    assert_eq!(db.job_ids_in_feed_order().await, feed_before);
    assert!(
        scalar_i64(
            &db,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'webhook_events'::regclass"
        )
        .await
            >= 4,
        "3000 rows 90 s apart span four days"
    );
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM event_keys").await,
        3000
    );
    let subjects = "SELECT count(*) FROM webhook_events WHERE subjects @> ARRAY['\\xaa'::bytea]";
    assert_eq!(scalar_i64(&db, subjects).await, 300);
    // Old keys stay deduplicated; a new event continues the sequence.
    assert_eq!(
        store.insert(&sealed_event("old-17")).await.unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(
        store.insert(&sealed_event("new")).await.unwrap(),
        InsertOutcome::Inserted
    );
    let new_id = scalar_i64(&db, "SELECT id FROM webhook_events WHERE job_id = 'new'").await;
    assert!(new_id > notice, "{new_id} after notice {notice}");
    // The old table and its sequence are gone.
    assert_eq!(
        scalar_i64(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname IN \
             ('webhook_events_unpartitioned', 'webhook_events_id_seq')"
        )
        .await,
        0
    );
}

/// A partition that cannot be made now (its ATTACH waits behind a lock a
/// retention pass's detach would hold) fails the batch as Unavailable, so
/// the batch writer sends it to the spool whole instead of retrying each
/// of its rows, each waiting as long.
#[tokio::test]
async fn a_partition_that_cannot_be_made_now_is_unavailable_not_refused() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE webhook_events IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let old = event_at("old", Utc::now() - chrono::Duration::days(3));
    let err = store.insert(&old).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(
        store.insert(&old).await.unwrap(),
        InsertOutcome::Inserted,
        "made once the lock is gone"
    );
}

/// A stored key is the digest docs/storage.md gives: the format is stored
/// data, which a later change must keep or migrate.
#[tokio::test]
async fn a_stored_key_is_the_documented_digest_of_event_and_job() {
    let db = TestDb::new().await;
    let job = "0f6e3c1a-8d2b-4c57-9a10-5e7f2b9c4d31";
    db.store().insert(&sealed_event(job)).await.unwrap();
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT uuid_send(key) FROM event_claims")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, [digest_of(job, "job.succeeded")]);
    // The parts cannot slide into each other: an event name holds no line
    // feed, and the function is what migrations and benchmarks use.
    let by_fn: Vec<u8> = sqlx::query_scalar("SELECT uuid_send(imggo_event_key($1, $2))")
        .bind("b")
        .bind("a.x")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(by_fn, digest_of("b", "a.x"));
    // Unambiguous only because a line feed never reaches the store: the
    // pair ("b", "a\nx") would share the digest of ("x\nb", "a").
    use imggo_receiver::event::Envelope;
    assert!(!Envelope::is_event("a\nx") && !Envelope::is_job_id("x\nb"));
}

/// `migrate` on a database whose keys are still the two texts (the
/// release before the digests): every key moves, in its window, and still
/// deduplicates, in its own window and across windows; the old tables go.
#[tokio::test]
async fn migrate_rewrites_text_keys_as_digests_and_dedup_holds() {
    let db = TestDb::unmigrated().await;
    migrate_before(&db, 20261210100000).await;
    let (now_window, last_window) = (this_window(), this_window() - chrono::Duration::days(28));
    for lo in [now_window, last_window] {
        sqlx::query("SELECT imggo_create_partition('event_keys', $1, $1 + interval '672 hours')")
            .bind(lo)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO event_keys (job_id, event, since) \
         SELECT 'text-' || g, 'job.succeeded', CASE WHEN g % 2 = 0 THEN $1 ELSE $2 END \
         FROM generate_series(1, 1000) g",
    )
    .bind(now_window)
    .bind(last_window)
    .execute(&db.pool)
    .await
    .unwrap();
    // And a window made ahead, empty: it goes with the old table (windows
    // are made again ahead of need, or on demand).
    let ahead = now_window + chrono::Duration::days(28);
    sqlx::query("SELECT imggo_create_partition('event_keys', $1, $1 + interval '672 hours')")
        .bind(ahead)
        .execute(&db.pool)
        .await
        .unwrap();

    let store = db.server_store().await;
    store.migrate().await.unwrap();

    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM event_keys").await,
        1000
    );
    let old_window_keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_keys WHERE since = $1 AND key = imggo_event_key('text-7', 'job.succeeded')",
    )
    .bind(last_window)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(old_window_keys, 1, "an odd key stays in the last window");
    // text-8's key is in this window (ON CONFLICT), text-7's in the last
    // one (the probe of the other windows).
    for job in ["text-8", "text-7"] {
        assert_eq!(
            store.insert(&sealed_event(job)).await.unwrap(),
            InsertOutcome::Duplicate,
            "{job}"
        );
    }
    assert_eq!(
        store.insert(&sealed_event("new")).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        scalar_i64(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'event_keys%by_text'"
        )
        .await,
        0,
        "the text tables are gone"
    );
}

/// A database analyzed while empty (a `VACUUM ANALYZE` after `migrate`)
/// does not turn the batch into scans: its plan, cached after a few
/// batches, read the whole current key window for every batch, slower
/// with every row. The store is opened as the server opens it, and
/// Postgres' own counters say which way each partition was read.
#[tokio::test]
async fn batches_probe_indexes_after_an_empty_database_was_analyzed() {
    let db = TestDb::new().await;
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(&db.pool)
        .await
        .unwrap();
    let store = db.server_store().await;
    for i in 0..20 {
        let (a, b) = (
            sealed_event(&format!("a-{i}")),
            sealed_event(&format!("b-{i}")),
        );
        store.insert_batch(&[&a, &b]).await.unwrap();
    }
    // A backend reports its counters when it ends. Rows read by scans
    // are counted, not scans: `migrate` attaches each key window it makes,
    // which scans the empty table once (from the test pool, whose counters
    // arrive whenever its backend reports them), reading nothing.
    store.close().await;
    let scans = "SELECT coalesce(sum(seq_tup_read), 0)::int8, coalesce(sum(idx_scan), 0)::int8 \
                 FROM pg_stat_user_tables WHERE relname LIKE 'event\\_keys\\_p%'";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (seq, idx): (i64, i64) = loop {
        let (seq, idx) = sqlx::query_as(scans).fetch_one(&db.pool).await.unwrap();
        if idx >= 20 || std::time::Instant::now() > deadline {
            break (seq, idx);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(idx >= 20, "the key probes were counted: {idx} index scans");
    assert_eq!(
        seq, 0,
        "no batch read a key window's rows by scanning it ({idx} index scans)"
    );
    assert_eq!(db.stored_job_ids().await.len(), 40);
}

/// A database at the release before subject indexes kept a pending list,
/// with an hourly events partition made from three days before `now`:
/// the database, the partition's name and its start.
async fn before_pending_lists(now: DateTime<Utc>) -> (TestDb, String, DateTime<Utc>) {
    let db = TestDb::unmigrated().await;
    migrate_before(&db, 20261212100000).await;
    let start = now - chrono::Duration::days(3);
    let part: String = sqlx::query_scalar(
        "SELECT imggo_create_partition('webhook_events', $1, $1 + interval '1 hour')",
    )
    .bind(start)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (db, part, start)
}

/// Every partition's subject index keeps a small pending list (CONTRACT §5
/// leaves the index to us; docs/storage.md): the partitions made before
/// the migration that set it and the ones made after, on demand. An
/// erasure still finds every event whose hashes wait in the list.
#[tokio::test]
async fn every_partitions_subject_index_keeps_a_small_pending_list() {
    let now = Utc::now();
    let (db, _, earlier) = before_pending_lists(now).await;
    let store = db.server_store().await;
    store.migrate().await.unwrap();

    let key = imggo_receiver::subjects::SubjectKey::new(HASH_KEY.as_bytes());
    let alice = key.hash("alice@example.com").unwrap();
    // Received two days back: no partition holds it yet, one is made now.
    let mut events = Vec::new();
    for (i, at) in [earlier, now - chrono::Duration::days(2), now]
        .into_iter()
        .enumerate()
    {
        let mut e = event_at(&format!("alice-{i}"), at);
        e.subjects = vec![alice];
        events.push(e);
    }
    for e in &events {
        assert_eq!(store.insert(e).await.unwrap(), InsertOutcome::Inserted);
    }

    let options: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT c.relname::text, c.reloptions FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'webhook_events_subjects_idx'::regclass ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let made: Vec<&str> = options.iter().map(|(name, _)| name.as_str()).collect();
    // The one made before the migration (from `earlier` on), and the hourly
    // ones made after it: two days back (on demand) and now.
    let expected = [
        earlier.format("%Y%m%dt%H%M").to_string(),
        (now - chrono::Duration::days(2))
            .format("%Y%m%dt%H00")
            .to_string(),
        now.format("%Y%m%dt%H00").to_string(),
    ];
    for part in expected {
        let index = format!("webhook_events_p{part}_subjects_idx");
        assert!(made.contains(&index.as_str()), "{index} in {made:?}");
    }
    for (name, reloptions) in &options {
        assert_eq!(
            reloptions.as_deref(),
            Some(
                &[
                    "fastupdate=on".to_owned(),
                    "gin_pending_list_limit=64".to_owned()
                ][..]
            ),
            "{name}"
        );
    }

    let entry = imggo_receiver::audit::AuditEntry::new(
        imggo_receiver::audit::Actor::Cli,
        imggo_receiver::audit::Action::Erasure,
        Some(alice.to_hex()),
    );
    assert_eq!(store.forget_subject(&[alice], &entry).await.unwrap(), 3);
    assert!(db.stored_job_ids().await.is_empty());
}

/// The upkeep that gives older partitions' subject indexes their options
/// does not wait behind a reader of the index (ALTER INDEX … SET takes it
/// exclusively, and every insert would queue behind the wait): it leaves
/// that one to the next pass, and sets it once the reader is done.
#[tokio::test]
async fn the_subject_index_upkeep_skips_an_index_in_use_and_comes_back() {
    let (db, part, _) = before_pending_lists(Utc::now()).await;
    let mut reader = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *reader)
        .await
        .unwrap();
    sqlx::query(&format!(
        "SELECT count(*) FROM {part} WHERE subjects @> ARRAY['\\x00'::bytea]"
    ))
    .execute(&mut *reader)
    .await
    .unwrap();
    let index = format!("{part}_subjects_idx");
    let options = |index: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<Vec<String>>>(
                "SELECT reloptions FROM pg_class WHERE relname = $1",
            )
            .bind(index)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // `migrate` runs the upkeep once: everything but the index in use.
    let store = db.server_store().await;
    tokio::time::timeout(Duration::from_secs(20), store.migrate())
        .await
        .expect("the upkeep waited for the reader")
        .unwrap();
    assert_eq!(
        options(index.clone()).await,
        Some(vec!["fastupdate=off".to_owned()])
    );

    reader.commit().await.unwrap();
    assert_eq!(
        imggo_receiver::store::partitions::tune_subject_indexes(&db.pool)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        options(index).await,
        Some(vec![
            "fastupdate=on".to_owned(),
            "gin_pending_list_limit=64".to_owned()
        ])
    );
}
