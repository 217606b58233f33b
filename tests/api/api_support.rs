//! Helpers for the Results API tests: apps with the API on, tokens, and a
//! client that speaks bearer auth.

#![allow(dead_code)]
use imggo_receiver::audit::{Action, Actor, AuditEntry};
use imggo_receiver::store::Store;
use imggo_receiver::tokens::{self, parse_scopes};
use serde_json::Value;

use crate::helpers::*;

/// Creates a token with `scopes` (comma list) straight in the store.
pub async fn make_token(store: &Store, name: &str, scopes: &str) -> String {
    let (token, hash) = tokens::generate();
    let scopes = parse_scopes(&[scopes]).unwrap();
    let audit = AuditEntry::new(Actor::Cli, Action::TokenCreate, Some(name.into()));
    assert!(store
        .create_token(name, &hash, &scopes, &audit)
        .await
        .unwrap());
    tokens::expose(&token).to_owned()
}

/// An app on Postgres (`None`) or SQLite in `dir`.
pub async fn app_on(sqlite: Option<&std::path::Path>) -> TestApp {
    match sqlite {
        Some(dir) => {
            let url = sqlite_url(dir);
            spawn_app_with(|o| o.database_url = Some(url)).await
        }
        None => spawn_app().await,
    }
}

impl TestApp {
    pub fn api(&self, path: &str) -> String {
        format!("http://{}{}", self.api_addr.expect("api on"), path)
    }

    pub async fn api_get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.api(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// A feed page as JSON (asserting 200).
    pub async fn feed(&self, query: &str, token: &str) -> Value {
        let res = self.api_get(&format!("/v1/events?{query}"), token).await;
        assert_eq!(res.status(), 200, "{query}");
        res.json().await.unwrap()
    }

    /// Delivers a signed body and asserts it was stored.
    pub async fn deliver(&self, body: Vec<u8>) {
        let res = self.post_signed(body).await;
        assert_eq!(res.status(), 200);
    }

    /// Follows `next` from the start until `expected` events have come
    /// (long-polling while fewer have: a transaction anywhere in the
    /// cluster, such as another test's CREATE DATABASE, may hold committed
    /// rows back for a moment); returns the events and the final cursor.
    pub async fn drain(&self, token: &str, limit: u32, expected: usize) -> (Vec<Value>, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut events = Vec::new();
        let mut after = String::new();
        loop {
            let wait = if events.len() < expected { 2 } else { 0 };
            let from = if after.is_empty() {
                String::new()
            } else {
                format!("&after={after}")
            };
            let page = self
                .feed(&format!("limit={limit}&wait={wait}{from}"), token)
                .await;
            let batch = page["events"].as_array().unwrap().clone();
            after = page["next"].as_str().unwrap().to_owned();
            if batch.is_empty() && events.len() >= expected {
                return (events, after);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {expected} events came",
                events.len()
            );
            events.extend(batch);
        }
    }
}

/// The audit trail as the store holds it.
pub async fn audit_records(store: &Store) -> Vec<imggo_receiver::audit::AuditRecord> {
    store.audit_since(i64::MIN).await.unwrap()
}

/// A delivery carrying personal data in fields the subject index reads.
pub fn body_with(job_id: &str, event: &str, manifest: Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": event,
        "job_id": job_id,
        "pattern_id": "pat_invoices",
        "manifest": manifest,
        "timestamp": chrono::Utc::now().to_rfc3339(),
    }))
    .unwrap()
}
