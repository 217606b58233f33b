//! Start-up's side of a degraded start (CONTRACT §8, `store::deferred`):
//! the one warning, and holding back what needs the database until its
//! schema is ready.

use std::future::Future;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::store::SchemaReady;

/// Whether `serve` may start without Postgres: only with a spool to
/// acknowledge into (SQLite is a local file and never waits).
pub fn may_defer(settings: &Settings) -> bool {
    !settings.spool.path.is_empty()
}

/// The one line an operator needs: which database (host, port and name,
/// never the password) did not answer, why, and what happens meanwhile.
pub fn warn_unreachable(url: &SecretString, why: &str, settings: &Settings) {
    tracing::warn!(
        database = %crate::config::secrets::database_label(url),
        error = %why,
        spool = %settings.spool.path,
        "the database named by DATABASE_URL does not answer; serving anyway: deliveries \
         are acknowledged into the spool, and migrations and the drain follow once it \
         answers (the Results API answers 503 until then)"
    );
}

/// Runs `task` once the schema is ready; nothing when the process stops
/// first.
pub fn after_schema(
    schema: &SchemaReady,
    shutdown: &CancellationToken,
    task: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let (schema, shutdown) = (schema.clone(), shutdown.clone());
    async move {
        tokio::select! {
            ready = schema.wait() => if !ready { return },
            () = shutdown.cancelled() => return,
        }
        task.await;
    }
}
