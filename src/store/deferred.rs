//! Degraded start (CONTRACT §8): with Postgres as the store and a spool,
//! `serve` starts even when Postgres does not answer. Deliveries go to the
//! spool meanwhile; [`connect_and_migrate`] keeps trying in the background,
//! applies migrations once Postgres answers, and only then marks the schema
//! ready ([`SchemaReady`]). Whatever reads or writes Postgres (the spool
//! drainer, the Results API, the relay, retention, the feed watcher) waits
//! for that mark: before it, the tables may not even exist.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::postgres::PgConnection;
use sqlx::Connection as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::pg_connect::{describe, refused, worth_retrying};
use super::{PgStore, Store, StoreError};
use crate::config::DatabaseSettings;

/// Longest one connection attempt may take (a black-holed address sends
/// no refusal): start-up does not wait longer than this for Postgres when
/// it can serve from the spool.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// The background task's first and longest wait between attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the database is connected with every migration applied. Cheap
/// to clone; every clone sees the mark once it is made.
#[derive(Clone, Debug)]
pub struct SchemaReady(watch::Receiver<bool>);

/// Makes the [`SchemaReady`] mark (held by the task that migrates).
#[derive(Debug)]
pub struct MarkReady(watch::Sender<bool>);

impl SchemaReady {
    /// Already ready: the store was migrated before serving.
    pub fn now() -> Self {
        Self(watch::channel(true).1)
    }

    /// Not ready until the returned [`MarkReady`] says so.
    pub fn later() -> (MarkReady, Self) {
        let (tx, rx) = watch::channel(false);
        (MarkReady(tx), Self(rx))
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once ready (`true`), or when the marker is gone without
    /// marking, i.e. the process is stopping (`false`).
    pub async fn wait(&self) -> bool {
        self.0.clone().wait_for(|ready| *ready).await.is_ok()
    }
}

/// What `serve` found at start.
pub enum Opened {
    /// Postgres answered (or the store is SQLite): migrate, then serve.
    Connected(Store),
    /// Postgres did not answer; `store` connects lazily, and `why` says
    /// what the attempt met (no credentials in it).
    Unreachable { store: Store, why: String },
}

/// Opens the store `serve` runs on. With `may_defer` (Postgres and a
/// spool), one attempt bounded by `database.connect_timeout` (at most
/// [`ATTEMPT_TIMEOUT`]) decides: an answer, or a failure waiting can fix
/// (refused, no answer, starting up) gives [`Opened::Unreachable`]; what
/// waiting cannot fix (no such database, wrong credentials, unknown host)
/// is an error at once, as without a spool.
pub async fn open(
    url: &SecretString,
    db: &DatabaseSettings,
    may_defer: bool,
) -> Result<Opened, StoreError> {
    if !may_defer || url.expose_secret().starts_with("sqlite:") {
        return Ok(Opened::Connected(Store::connect(url, db).await?));
    }
    let pg = PgStore::lazy(url.expose_secret(), db)?;
    let timeout = db.connect_timeout.min(ATTEMPT_TIMEOUT);
    let why = match attempt(&pg, timeout).await {
        Ok(()) => return Ok(Opened::Connected(Store::Postgres(pg))),
        Err(Some(e)) if !worth_retrying(&e) => return Err(refused(&e)),
        Err(Some(e)) => describe(&e),
        Err(None) => format!(
            "no answer within {}",
            crate::config::duration::format(timeout)
        ),
    };
    Ok(Opened::Unreachable {
        store: Store::Postgres(pg),
        why,
    })
}

/// One plain connection (its error says why, where a pool's says only that
/// it timed out), closed at once; `Err(None)` when none came in `timeout`.
async fn attempt(pg: &PgStore, timeout: Duration) -> Result<(), Option<sqlx::Error>> {
    let options = pg.pool().connect_options();
    match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

/// Tries to reach Postgres until it answers (backing off up to
/// [`MAX_BACKOFF`]), applies migrations, then marks the schema ready.
/// Returns early, unmarked, on `shutdown`. Failures to connect were
/// announced once at start and are only logged at debug; a migration that
/// fails is an error worth seeing, logged once per distinct cause.
pub async fn connect_and_migrate(store: Store, mark: MarkReady, shutdown: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    loop {
        let connected = match &store {
            Store::Postgres(pg) => attempt(pg, ATTEMPT_TIMEOUT).await,
            Store::Sqlite(_) => Ok(()),
        };
        match connected {
            Ok(()) => match store.migrate().await {
                Ok(()) => {
                    tracing::info!(
                        "Postgres answers: migrations applied; the spool drains into it"
                    );
                    mark.0.send_replace(true);
                    return;
                }
                Err(e @ StoreError::Unavailable(_)) => {
                    tracing::debug!(error = %e, "Postgres went away before the migrations; retrying");
                }
                Err(e) => {
                    let text = format!("{:#}", anyhow::Error::from(e));
                    if text != last_error {
                        tracing::error!(error = %text, "cannot apply migrations; retrying");
                        last_error = text;
                    }
                }
            },
            Err(e) => {
                let why = e.as_ref().map_or_else(|| "no answer".into(), describe);
                tracing::debug!(error = %why, "Postgres does not answer yet; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_the_mark_and_a_dropped_marker_ends_the_wait() {
        assert!(SchemaReady::now().is_ready());
        assert!(SchemaReady::now().wait().await);

        let (mark, schema) = SchemaReady::later();
        assert!(!schema.is_ready());
        let waiter = tokio::spawn({
            let schema = schema.clone();
            async move { schema.wait().await }
        });
        mark.0.send_replace(true);
        assert!(waiter.await.unwrap());
        assert!(schema.is_ready());

        let (mark, schema) = SchemaReady::later();
        drop(mark);
        assert!(!schema.wait().await, "stopping is not being ready");
    }
}
