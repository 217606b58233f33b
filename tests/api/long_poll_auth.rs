//! A long-poll is answered under the token as it is when the answer goes
//! out: a token revoked while the request waits gets `401`, not the event
//! committed after the revocation, and no audit record is written for it.

use imggo_receiver::audit::{Action, Actor, AuditEntry};

use crate::api_support::*;
use crate::feed::wait_for_waiters;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_whose_token_is_revoked_while_it_waits_answers_401() {
    let app = spawn_app().await;
    let token = make_token(&app.store, "short-lived", "events:read").await;
    let (_, cursor) = app.drain(&token, 1000, 0).await;

    let waiter = {
        let (client, url, token) = (
            app.client.clone(),
            app.api(&format!("/v1/events?wait=20&after={cursor}")),
            token.clone(),
        );
        tokio::spawn(async move {
            let res = client.get(url).bearer_auth(token).send().await.unwrap();
            let status = res.status().as_u16();
            let www = res.headers().get("www-authenticate").cloned();
            (status, www, res.text().await.unwrap())
        })
    };
    // The order is forced: the request is waiting, then the token is
    // revoked, then an event is committed.
    wait_for_waiters(&app, 1).await;
    let revoke = AuditEntry::new(Actor::Cli, Action::TokenRevoke, Some("short-lived".into()));
    assert!(app
        .store
        .revoke_token("short-lived", &revoke)
        .await
        .unwrap());
    app.deliver(prod_body(&new_job_id())).await;

    let (status, www, body) = waiter.await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(www.is_some(), "401 carries WWW-Authenticate");
    assert!(body.contains("\"unauthorized\""), "{body}");
    assert!(!body.contains("job.succeeded"), "{body}");
    // The test's own reads before the revocation returned nothing, so
    // they wrote no record either: any record under this token is a read.
    let reads: Vec<_> = audit_records(&app.store)
        .await
        .into_iter()
        .filter(|r| r.actor == "token:short-lived")
        .collect();
    assert!(reads.is_empty(), "audited under a revoked token: {reads:?}");
}
