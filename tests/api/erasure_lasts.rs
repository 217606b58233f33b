//! Erasure that lasts (CONTRACT §9): an erased or deleted event is not
//! stored again when its delivery comes back, an erasure takes the events
//! whose insert was in flight when it ran, and a replayed quarantined
//! delivery is found by the subjects of its unredacted body.

use serde_json::{json, Value};

use crate::api_support::*;
use crate::helpers::*;

/// How the batch insert statement opens: pg_stat_activity keeps only the
/// first kilobyte of a query, which ends before its INSERT.
const BATCH_INSERT: &str = "WITH batch AS%";

async fn erase(app: &TestApp, token: &str, value: &str) -> Value {
    let res = app
        .client
        .post(app.api("/v1/erasure"))
        .bearer_auth(token)
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn status_of(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["status"].as_str().unwrap().to_owned()
}

async fn erased_events_stay_erased(sqlite: Option<&std::path::Path>) {
    let app = app_on(sqlite).await;
    let token = make_token(&app.store, "dpo", "events:read,events:delete").await;
    let carol = |job: &str| body_with(job, "job.succeeded", json!({"email": "carol@example.com"}));

    // Erased by subject, then the very same signed bytes again.
    let job = new_job_id();
    assert_eq!(
        status_of(app.post_signed(carol(&job)).await).await,
        "received"
    );
    assert_eq!(erase(&app, &token, "carol@example.com").await["deleted"], 1);
    assert_eq!(
        status_of(app.post_signed(carol(&job)).await).await,
        "duplicate"
    );
    assert!(app.events(&job).await.is_empty(), "erased data came back");
    // Still a duplicate on the next try, and erasure has nothing to find.
    assert_eq!(
        status_of(app.post_signed(carol(&job)).await).await,
        "duplicate"
    );
    assert_eq!(erase(&app, &token, "carol@example.com").await["deleted"], 0);

    // Deleted by job: the same.
    let deleted = new_job_id();
    assert_eq!(
        status_of(app.post_signed(prod_body(&deleted)).await).await,
        "received"
    );
    let res = app
        .client
        .delete(app.api(&format!("/v1/jobs/{deleted}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["deleted"], 1);
    assert_eq!(
        status_of(app.post_signed(prod_body(&deleted)).await).await,
        "duplicate"
    );
    assert!(app.events(&deleted).await.is_empty());

    // A new job of the same person is new data, and other events of an
    // erased job id (another event name) are not barred either.
    let next = new_job_id();
    assert_eq!(
        status_of(app.post_signed(carol(&next)).await).await,
        "received"
    );
    assert_eq!(app.events(&next).await.len(), 1);
    let failed = body_with(&job, "job.failed", json!({"note": "rerun"}));
    assert_eq!(status_of(app.post_signed(failed).await).await, "received");

    // The memory is a key, never the person: tombstones age out with
    // retention, and then the delivery is new again. A key is kept with
    // its four-week window (docs/storage.md): 30 days of retention, 28 of
    // window and one more day put the whole window past max_age.
    backdate_tombstones(&app.store, 59 * 86_400).await;
    app.store
        .purge(std::time::Duration::from_secs(30 * 86_400), 100, false)
        .await
        .unwrap();
    assert_eq!(
        status_of(app.post_signed(prod_body(&deleted)).await).await,
        "received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_events_stay_erased_on_postgres() {
    erased_events_stay_erased(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_events_stay_erased_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    erased_events_stay_erased(Some(dir.path())).await;
}

/// The race of CONTRACT §9 forced: the batch writer's transaction for
/// hank's delivery is stalled (a lock the test holds on the events table)
/// when the erasure of hank runs. When the erasure answers, hank's event
/// must be gone, and it must not appear afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_takes_the_event_whose_insert_is_in_flight() {
    // No spool: the delivery waits for its own batch, however long.
    let app = spawn_app_with(|o| {
        o.settings.spool.path = String::new();
        o.settings.server.request_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let token = make_token(&app.store, "dpo", "events:read,events:delete").await;
    let job = new_job_id();

    let stall = app.db.stall_event_inserts().await;
    let delivery = post_in_background(
        &app,
        body_with(
            &job,
            "job.succeeded",
            json!({"customer_email": "hank@example.com"}),
        ),
    );
    // The writer's insert now waits on the test's lock.
    eventually("the insert waits on the lock", || async {
        waiting(&app.db.pool, "Lock", BATCH_INSERT)
            .await
            .then_some(())
    })
    .await;
    let erasure = erase_in_background(&app, &token, "hank@example.com");
    // The erasure has either answered already (it did not wait) or waits
    // for the insert in flight; either way, now let the insert go on.
    eventually("the erasure answered or waits", || async {
        (erasure.is_finished()
            || waiting(&app.db.pool, "Lock", "%pg_advisory_xact_lock($1)%").await)
            .then_some(())
    })
    .await;
    stall.rollback().await.unwrap();

    let erased = erasure.await.unwrap();
    // The delivery was acknowledged only once its batch committed.
    assert_eq!(delivery.await.unwrap(), 200);
    assert!(
        app.events(&job).await.is_empty(),
        "hank's event survived the erasure"
    );
    assert_eq!(erased["deleted"], 1, "the erasure counts what it took");
    let again = app
        .post_signed(body_with(
            &job,
            "job.succeeded",
            json!({"customer_email": "hank@example.com"}),
        ))
        .await;
    assert_eq!(status_of(again).await, "duplicate");
    assert!(app.events(&job).await.is_empty());
}

/// Whether a session other than this one waits on `wait_event_type` while
/// running a query like `query`.
async fn waiting(pool: &sqlx::PgPool, wait_event_type: &str, query: &str) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND wait_event_type = $1 AND query LIKE $2)",
    )
    .bind(wait_event_type)
    .bind(query)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A quarantined delivery holding an SSN and a passport number is stored
/// by `rejected replay` under the subject hashes taken from its body before
/// redaction: erasure by that SSN finds the replayed event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delivery_keeps_its_subjects() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "dpo", "events:read,events:delete").await;
    let job = new_job_id();
    let body = json!({"event":"job.succeeded","job_id":job,
        "manifest":{"applicant":{"ssn":"123-45-6789","passport":"X12345678"}},
        "timestamp":"2020-01-01T00:00:00Z"})
    .to_string()
    .into_bytes();
    let res = app.post_signed(body).await;
    assert_eq!(res.status(), 400, "stale: quarantined");
    let env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let list = run_ok(command(dir.path(), &env), &["rejected", "list"]);
    let line: Value =
        serde_json::from_slice(list.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let id = line["id"].to_string();
    let out = run_ok(
        command(dir.path(), &env),
        &["rejected", "replay", &id, "--ignore-timestamp"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "received");
    assert_eq!(app.events(&job).await.len(), 1);
    assert_eq!(erase(&app, &token, "123456789").await["deleted"], 1);
    assert!(app.events(&job).await.is_empty());

    // And by the passport number, on a second replayed copy of the kind.
    let job2 = new_job_id();
    let body = json!({"event":"job.succeeded","job_id":job2,
        "manifest":{"passport":"X12345678"},"timestamp":"2020-01-01T00:00:00Z"})
    .to_string()
    .into_bytes();
    assert_eq!(app.post_signed(body).await.status(), 400);
    let list = run_ok(command(dir.path(), &env), &["rejected", "list"]);
    let line: Value =
        serde_json::from_slice(list.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let id = line["id"].to_string();
    run_ok(
        command(dir.path(), &env),
        &["rejected", "replay", &id, "--ignore-timestamp"],
    );
    assert_eq!(erase(&app, &token, "x12345678").await["deleted"], 1);
    assert!(app.events(&job2).await.is_empty());
}

/// `POST /v1/erasure` of `value`, in a task of its own; its JSON answer.
fn erase_in_background(app: &TestApp, token: &str, value: &str) -> tokio::task::JoinHandle<Value> {
    let (client, url) = (app.client.clone(), app.api("/v1/erasure"));
    let (token, body) = (token.to_owned(), json!({ "value": value }));
    tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })
}

/// Posts `body` signed, in a task of its own.
fn post_in_background(app: &TestApp, body: Vec<u8>) -> tokio::task::JoinHandle<u16> {
    let (client, url) = (app.client.clone(), app.webhook_url());
    let signature = prod_signature(&body);
    tokio::spawn(async move {
        client
            .post(url)
            .header("x-imggo-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// How many other sessions wait on an advisory lock.
async fn advisory_waiters(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND wait_event = 'advisory'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A delivery that arrives while an erasure (or a job delete) waits for the
/// inserts in flight is received before the erasure answers: it must not
/// survive it. Forced: a first batch is stalled on a lock the test holds,
/// the erasure and the job delete queue behind it, and a second and third
/// delivery (another writer) queue behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_that_arrive_while_an_erasure_waits_do_not_survive_it() {
    let app = spawn_app_with(|o| {
        o.settings.spool.path = String::new();
        o.settings.server.request_timeout = std::time::Duration::from_secs(60);
        o.settings.database.writers = 3;
    })
    .await;
    let token = make_token(&app.store, "dpo", "events:read,events:delete").await;
    let hank = |job: &str, event: &str| {
        body_with(job, event, json!({"customer_email": "hank@example.com"}))
    };
    let (first, second, deleted_job) = (new_job_id(), new_job_id(), new_job_id());

    let stall = app.db.stall_event_inserts().await;
    let a = post_in_background(&app, hank(&first, "job.succeeded"));
    eventually("the first insert waits on the lock", || async {
        waiting(&app.db.pool, "Lock", BATCH_INSERT)
            .await
            .then_some(())
    })
    .await;
    let erase = erase_in_background(&app, &token, "hank@example.com");
    let delete = {
        let (client, url, token) = (
            app.client.clone(),
            app.api(&format!("/v1/jobs/{deleted_job}")),
            token.clone(),
        );
        tokio::spawn(async move {
            client
                .delete(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    eventually("the erasure and the delete wait", || async {
        (advisory_waiters(&app.db.pool).await >= 2).then_some(())
    })
    .await;
    // Received now, while both wait: their inserts queue behind them, each
    // on a writer of its own (one after the other, so that they do not
    // share a batch and each wait is seen).
    let b = post_in_background(&app, hank(&second, "job.succeeded"));
    eventually("the second insert waits too", || async {
        (advisory_waiters(&app.db.pool).await >= 3).then_some(())
    })
    .await;
    let c = post_in_background(
        &app,
        body_with(&deleted_job, "job.failed", json!({"note": "late"})),
    );
    eventually("the third insert waits too", || async {
        (advisory_waiters(&app.db.pool).await >= 4).then_some(())
    })
    .await;
    stall.rollback().await.unwrap();

    let erased = erase.await.unwrap();
    assert_eq!(delete.await.unwrap(), 200);
    for (task, what) in [(a, "first"), (b, "second"), (c, "job")] {
        assert_eq!(task.await.unwrap(), 200, "{what} acknowledged");
    }
    assert!(app.events(&first).await.is_empty(), "in flight: taken");
    assert!(
        app.events(&second).await.is_empty(),
        "received while the erasure waited: refused"
    );
    assert!(
        app.events(&deleted_job).await.is_empty(),
        "received while the job delete waited: refused"
    );
    assert_eq!(erased["deleted"], 1);
}

/// A quarantine insert in flight when an erasure runs is taken by it, as
/// an event's is (its transaction is stalled on a lock the test holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_takes_the_quarantined_delivery_whose_insert_is_in_flight() {
    let app = spawn_app_with(|o| {
        o.settings.spool.path = String::new();
        o.settings.server.request_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let token = make_token(&app.store, "dpo", "events:read,events:delete").await;
    let mut stall = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE quarantine_subjects IN EXCLUSIVE MODE")
        .execute(&mut *stall)
        .await
        .unwrap();
    // Signed but stale: refused with 400 and quarantined, indexed by hank.
    let body = json!({"event": "job.succeeded", "job_id": new_job_id(),
        "manifest": {"customer_email": "hank@example.com"},
        "timestamp": "2020-01-01T00:00:00Z"});
    let refused = post_in_background(&app, serde_json::to_vec(&body).unwrap());
    eventually("the quarantine insert waits on the lock", || async {
        waiting(&app.db.pool, "Lock", "%INSERT INTO quarantine_subjects%")
            .await
            .then_some(())
    })
    .await;
    let erasure = erase_in_background(&app, &token, "hank@example.com");
    eventually("the erasure answered or waits", || async {
        (erasure.is_finished() || advisory_waiters(&app.db.pool).await >= 1).then_some(())
    })
    .await;
    stall.rollback().await.unwrap();
    assert_eq!(refused.await.unwrap(), 400);
    let erased = erasure.await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantined_deliveries")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the quarantined delivery survived the erasure");
    assert_eq!(erased["deleted"], 1);
}
