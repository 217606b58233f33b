//! One row per (job_id, event): redeliveries, sequential and concurrent.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn redelivery_is_a_duplicate_and_writes_nothing() {
    let app = spawn_app().await;
    let job = new_job_id();
    let body = prod_body(&job);
    assert_eq!(app.post_signed(body.clone()).await.status(), 200);
    let before = app.events(&job).await;
    // A retry may carry a different body (e.g. a new timestamp): still a duplicate.
    for body in [body, prod_body(&job)] {
        let res = app.post_signed(body).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({"status": "duplicate"})
        );
    }
    let after = app.events(&job).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].ciphertext, before[0].ciphertext,
        "the first row is untouched"
    );
    // Another event of the same job is a new row.
    let mut other: Value = serde_json::from_slice(&prod_body(&job)).unwrap();
    other["event"] = json!("job.failed");
    let res = app.post_signed(serde_json::to_vec(&other).unwrap()).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "received"})
    );
    assert_eq!(app.rows().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deliveries_of_one_event_store_one_row() {
    let app = spawn_app().await;
    let job = new_job_id();
    let body = prod_body(&job);
    let sig = prod_signature(&body);
    let url = app.webhook_url();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, body, sig) = (
                reqwest::Client::new(),
                url.clone(),
                body.clone(),
                sig.clone(),
            );
            tokio::spawn(async move {
                let res = post_from(&client, &url, body, Some(&sig)).await;
                (
                    res.status().as_u16(),
                    res.json::<Value>().await.unwrap()["status"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
        })
        .collect();
    let mut received = 0;
    for t in tasks {
        let (status, label) = t.await.unwrap();
        assert_eq!(status, 200);
        match label.as_str() {
            "received" => received += 1,
            "duplicate" => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(received, 1);
    assert_eq!(app.rows().await, 1);
}
