//! Forwarding's bookkeeping straight on the store, both backends: the
//! lease fence on the position, and the cost of measuring the lag.

use imggo_receiver::feed::Position;
use imggo_receiver::store::forward::{self as fwd, Advance, Advanced};
use imggo_receiver::store::Store;

use crate::helpers::*;

/// `holder` takes the lease of `name` the way the lease task does.
async fn take(store: &Store, name: &str, holder: &str) {
    match store {
        Store::Postgres(pg) => {
            let mut conn = pg.pool().acquire().await.unwrap();
            fwd::claim(&mut conn, name, holder).await.unwrap();
        }
        Store::Sqlite(_) => {
            // Expired at once, so the next replica may take it over.
            let until = chrono::Utc::now().timestamp_micros() - 1;
            assert!(store.forward_lease(name, holder, until).await.unwrap());
        }
    }
}

fn step(from: Position, to: i64, holder: &str) -> Advance<'_> {
    Advance {
        from,
        position: Position {
            tx: from.tx,
            id: to,
        },
        seq: (to.unsigned_abs(), 0),
        dead: &[],
        holder,
    }
}

/// The race of a lease lost without noticing, forced: replica A reads its
/// position and sends a batch; meanwhile its lease goes to B; A's
/// confirmation comes back. A must not move the position (B is sending
/// from there already); B does.
#[tokio::test]
async fn a_replica_that_lost_its_lease_cannot_move_the_position() {
    for (store, _backing) in each_store().await {
        let filters = fwd::Filters {
            name: "fenced",
            events: &[],
            valid: "any",
        };
        store.forward_register(&[filters]).await.unwrap();
        take(&store, "fenced", "replica-a").await;
        let a_read = store.forward_state("fenced").await.unwrap().unwrap();
        assert_eq!(
            store
                .forward_advance("fenced", &step(a_read.position, 5, "replica-a"))
                .await
                .unwrap(),
            Advanced::Moved
        );
        let a_read = store.forward_state("fenced").await.unwrap().unwrap();
        take(&store, "fenced", "replica-b").await;
        let b_read = store.forward_state("fenced").await.unwrap().unwrap();
        assert_eq!(
            store
                .forward_advance("fenced", &step(a_read.position, 9, "replica-a"))
                .await
                .unwrap(),
            Advanced::Fenced
        );
        let now = store.forward_state("fenced").await.unwrap().unwrap();
        assert_eq!(now.position, b_read.position, "the old holder moved it");
        assert_eq!(
            store
                .forward_advance("fenced", &step(b_read.position, 7, "replica-b"))
                .await
                .unwrap(),
            Advanced::Moved
        );
        // A reset meanwhile is told apart from a lost lease.
        assert_eq!(
            store
                .forward_advance("fenced", &step(b_read.position, 8, "replica-b"))
                .await
                .unwrap(),
            Advanced::Reset
        );
    }
}

/// Every scan node of a JSON plan: (node type, rows it returned).
fn scans(plan: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    let kind = plan["Node Type"].as_str().unwrap_or_default().to_owned();
    if kind.contains("Scan") {
        out.push((kind, plan["Actual Rows"].as_f64().unwrap_or(0.0)));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scans(child, out);
    }
}

/// The lag is measured every 2 s per destination while ingest runs: its
/// queries are index probes that read at most `LAG_EXACT` feed entries,
/// however far behind the destination is (here 30,000 events, from the
/// start), never a scan of every event past the position.
#[tokio::test]
async fn the_lag_is_measured_by_index_probes_not_scans() {
    let db = TestDb::new().await;
    db.insert_raw_events(30_000, 1).await;
    sqlx::query("VACUUM ANALYZE webhook_events")
        .execute(&db.pool)
        .await
        .unwrap();
    let limit = fwd::LAG_EXACT.to_string();
    for sql in [fwd::LAG_COUNT_PG, fwd::LAG_OLDEST_PG] {
        let text = sql
            .replace("$1", "0")
            .replace("$2", "0")
            .replace("$3", &limit);
        let explained: serde_json::Value =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {text}"))
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let mut found = Vec::new();
        scans(&explained[0]["Plan"], &mut found);
        assert!(!found.is_empty(), "{explained}");
        for (kind, rows) in &found {
            assert!(kind.starts_with("Index"), "{kind} in {explained}");
            assert!(*rows <= fwd::LAG_EXACT as f64, "{kind} read {rows} rows");
        }
    }
    let store = db.store();
    let (events, oldest) = store.forward_lag(Position::default()).await.unwrap();
    assert!(events >= 30_000, "{events}");
    assert!(oldest.is_some());
}

async fn ids_in(store: &Store, sql: &str) -> Vec<String> {
    match store {
        Store::Postgres(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.unwrap(),
        Store::Sqlite(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.unwrap(),
    }
}

async fn retention_pass(store: &Store) {
    let mut retention = test_settings().retention;
    retention.max_age = std::time::Duration::from_secs(30 * 86_400);
    imggo_receiver::retention::pass(
        store,
        &retention,
        std::time::Duration::from_secs(400 * 86_400),
        false,
    )
    .await
    .unwrap();
}

/// Erasure notices and dead letters do not pile up forever: retention
/// takes those older than `max_age`, and a notice every destination has
/// passed goes at the next pass, unless a dead letter still names it (a
/// replay needs it).
#[tokio::test]
async fn old_or_passed_notices_and_old_dead_letters_are_purged() {
    const NOTICES: &str = "SELECT CAST(id AS TEXT) FROM forward_notices ORDER BY id";
    const DEAD: &str = "SELECT message_id FROM forward_dead ORDER BY message_id";
    for (store, _backing) in each_store().await {
        let register: Vec<fwd::Filters<'_>> = ["a", "b"]
            .into_iter()
            .map(|name| fwd::Filters {
                name,
                events: &[],
                valid: "any",
            })
            .collect();
        store.forward_register(&register).await.unwrap();
        let now = chrono::Utc::now().timestamp_micros();
        let old = now - 40 * 86_400 * 1_000_000;
        let notices = format!(
            "INSERT INTO forward_notices (id, event_ids, created_at) VALUES \
             (900001, '1', {now}), (900002, '2', {old}), (900003, '3', {now})"
        );
        let dead = format!(
            "INSERT INTO forward_dead (destination, message_id, notice, tx, row_id, reason, dead_at) \
             VALUES ('a', 'erasure-900003', true, 0, 900003, 'HTTP 400', {now}), \
                    ('a', '17', false, 0, 17, 'HTTP 400', {old})"
        );
        exec(&store, &notices, &notices).await;
        exec(&store, &dead, &dead).await;
        retention_pass(&store).await;
        assert_eq!(ids_in(&store, NOTICES).await, ["900001", "900003"]);
        assert_eq!(ids_in(&store, DEAD).await, ["erasure-900003"]);
        // Both destinations pass every notice.
        let latest = store.forward_latest().await.unwrap();
        for name in ["a", "b"] {
            let audit = imggo_receiver::audit::AuditEntry::new(
                imggo_receiver::audit::Actor::Cli,
                imggo_receiver::audit::Action::ForwardReset,
                None,
            );
            store.forward_reset(name, latest, &audit).await.unwrap();
        }
        retention_pass(&store).await;
        assert_eq!(ids_in(&store, NOTICES).await, ["900003"]);
    }
}

/// The notices of `name` as stored: each one's ids. (Read straight from
/// the table: the relay's reader waits for the oldest transaction running
/// in the cluster, another test's, to end.)
async fn notices_of(store: &Store, name: &str) -> Vec<String> {
    let sql = format!(
        "SELECT event_ids FROM forward_notice_ids WHERE destination = '{name}' ORDER BY notice"
    );
    ids_in(store, &sql).await
}

/// An erasure tells each destination only of the erased events it
/// forwarded or may have in flight: its filters admit them and its relay
/// can have read them (its position plus one batch). A destination that
/// is far behind, or filters them out, hears nothing: it never got them,
/// and never will now that they are deleted.
#[tokio::test]
async fn an_erasure_names_to_each_destination_only_what_it_may_have_got() {
    let ring = test_ring(KEY_A);
    let failed = ["job.failed".to_owned()];
    for (store, _backing) in each_store().await {
        let name = backend_name(&store);
        let register = [
            fwd::Filters {
                name: "everything",
                events: &[],
                valid: "any",
            },
            fwd::Filters {
                name: "failures",
                events: &failed,
                valid: "any",
            },
            fwd::Filters {
                name: "behind",
                events: &[],
                valid: "any",
            },
        ];
        store.forward_register(&register).await.unwrap();
        // More than one relay batch ahead of "behind" (at the start).
        for i in 0..fwd::RELAY_BATCH + 6 {
            let e = sealed_event_with(&ring, &format!("filler-{i}"), "job.succeeded", b"{}");
            store.insert(&e).await.unwrap();
        }
        for ev in ["job.succeeded", "job.failed", "job.progress"] {
            store
                .insert(&sealed_event_with(&ring, "erased-job", ev, b"{}"))
                .await
                .unwrap();
        }
        let rows = store.job_events("erased-job").await.unwrap();
        let id_of = |ev: &str| {
            let row = &rows.iter().find(|r| r.row.event == ev).unwrap().row;
            row.id.to_string()
        };
        let mut all: Vec<i64> = rows.iter().map(|r| r.row.id).collect();
        all.sort_unstable();
        let all: Vec<String> = all.iter().map(i64::to_string).collect();
        // "everything" and "failures" forwarded every event.
        let latest = store.forward_latest().await.unwrap();
        let audit = |action| {
            imggo_receiver::audit::AuditEntry::new(imggo_receiver::audit::Actor::Cli, action, None)
        };
        for dest in ["everything", "failures"] {
            store
                .forward_reset(
                    dest,
                    latest,
                    &audit(imggo_receiver::audit::Action::ForwardReset),
                )
                .await
                .unwrap();
        }
        let n = store
            .delete_job(
                "erased-job",
                &audit(imggo_receiver::audit::Action::JobDelete),
            )
            .await
            .unwrap();
        assert_eq!(n, 3, "{name}");
        assert_eq!(
            notices_of(&store, "everything").await,
            [all.join(",")],
            "{name}"
        );
        assert_eq!(
            notices_of(&store, "failures").await,
            [id_of("job.failed")],
            "{name}"
        );
        assert!(notices_of(&store, "behind").await.is_empty(), "{name}");
    }
}

/// The relays of a replica share what they read of the feed, and serve it
/// only under the erasure epoch it was read under: every transaction that
/// deletes events counts the epoch up once, whichever path (by job, by
/// subject) or hand (a bare `DELETE` on the table or on one partition, a
/// `TRUNCATE`) it comes from; a delete that finds nothing does not.
/// SQLite's relays do not share reads and have no epoch.
#[tokio::test]
async fn every_delete_of_events_counts_up_the_erasure_epoch() {
    let ring = test_ring(KEY_A);
    for (store, _backing) in each_store().await {
        let epoch = || async {
            store
                .forward_notices("nobody", Position::default(), 1)
                .await
                .unwrap()
                .epoch
        };
        let Store::Postgres(pg) = &store else {
            assert_eq!(epoch().await, None);
            continue;
        };
        let audit = || {
            imggo_receiver::audit::AuditEntry::new(
                imggo_receiver::audit::Actor::Cli,
                imggo_receiver::audit::Action::JobDelete,
                None,
            )
        };
        let insert = |job: &'static str, event: &'static str| {
            let mut e = sealed_event_with(&ring, job, event, b"{}");
            e.subjects = vec![imggo_receiver::subjects::SubjectHash([7; 32])];
            let store = store.clone();
            async move { store.insert(&e).await.unwrap() }
        };
        let sql = |text: String| async move {
            sqlx::query(&text).execute(pg.pool()).await.unwrap();
        };
        let start = epoch().await.expect("an epoch on Postgres");
        insert("by-job", "job.succeeded").await;
        // Inserts do not count.
        assert_eq!(epoch().await, Some(start));
        assert_eq!(store.delete_job("by-job", &audit()).await.unwrap(), 1);
        assert_eq!(epoch().await, Some(start + 1));
        // Nothing deleted, nothing counted.
        assert_eq!(store.delete_job("by-job", &audit()).await.unwrap(), 0);
        assert_eq!(epoch().await, Some(start + 1));
        insert("by-subject", "job.succeeded").await;
        insert("by-subject", "job.failed").await;
        let subject = imggo_receiver::subjects::SubjectHash([7; 32]);
        assert_eq!(store.forget_subject(&[subject], &audit()).await.unwrap(), 2);
        assert_eq!(epoch().await, Some(start + 2), "two rows, one count");
        insert("bare", "job.succeeded").await;
        sql("DELETE FROM webhook_events WHERE job_id = 'bare'".into()).await;
        assert_eq!(epoch().await, Some(start + 3));
        insert("one-partition", "job.succeeded").await;
        let part: String = sqlx::query_scalar(
            "SELECT tableoid::regclass::text FROM webhook_events WHERE job_id = 'one-partition'",
        )
        .fetch_one(pg.pool())
        .await
        .unwrap();
        sql(format!("DELETE FROM {part} WHERE job_id = 'one-partition'")).await;
        assert_eq!(epoch().await, Some(start + 4), "a DELETE on {part}");
        sql("TRUNCATE webhook_events".into()).await;
        assert_eq!(epoch().await, Some(start + 5));
    }
}
