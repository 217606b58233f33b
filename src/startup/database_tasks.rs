//! The server's background tasks that read or write the database: the spool
//! drainer, the feed watcher, retention, forwarding and the key check. Each
//! waits until the schema is ready: at once, unless Postgres did not answer
//! at start (CONTRACT §8); then deliveries go to the spool, and the task
//! that connects and migrates is started here too.

use tokio::task::JoinHandle;

use super::degraded::after_schema;
use crate::feed::FeedWatcher;
use crate::forward::Forwarding;
use crate::http::AppState;
use crate::retention;
use crate::store::deferred::{self, MarkReady};

/// The spawned tasks, for `run` to await at exit.
pub struct DatabaseTasks {
    /// Awaited right after the batch writers: it may be moving rows.
    pub drainer: Option<JoinHandle<()>>,
    /// The rest, by name.
    pub others: Vec<(&'static str, JoinHandle<()>)>,
}

/// Spawns them. `watcher` moves the feed head, for those who follow the
/// feed (none: `None`). `pending`: Postgres did not answer at start.
pub fn spawn(
    state: &AppState,
    watcher: Option<FeedWatcher>,
    forwarding: Forwarding,
    pending: Option<MarkReady>,
) -> DatabaseTasks {
    let (store, shutdown, schema) = (&state.store, &state.shutdown, &state.schema);
    if let Some(mark) = pending {
        // Not waited on: deliveries go straight to the spool meanwhile.
        state.ingest.commit.health.failed();
        let connect = deferred::connect_and_migrate(store.clone(), mark, shutdown.clone());
        tokio::spawn(connect);
    }
    let mut others = Vec::new();
    if let Some(watcher) = watcher {
        let task = after_schema(schema, shutdown, watcher.run(shutdown.clone()));
        others.push(("feed watcher", tokio::spawn(task)));
    }
    let retention = retention::run(
        store.clone(),
        state.settings.retention.clone(),
        state.settings.audit.max_age,
        retention::FIRST_PASS_DELAY.min(state.settings.retention.purge_interval),
        shutdown.clone(),
    );
    let retention = tokio::spawn(after_schema(schema, shutdown, retention));
    // Beside the webhook route, sharing only the database with it.
    let forwarding = forwarding.run(store.clone(), shutdown.clone());
    let forwarding = tokio::spawn(after_schema(schema, shutdown, forwarding));
    others.extend([("retention", retention), ("forwarding", forwarding)]);
    let key_check = after_schema(schema, shutdown, check_keys(state.clone()));
    tokio::spawn(key_check);
    let commit = &state.ingest.commit;
    let drainer = commit.spool.clone().map(|spool| {
        let drain = crate::ingest::drain::run(
            spool,
            store.clone(),
            commit.health.clone(),
            commit.quarantine_max_rows,
            shutdown.clone(),
        );
        tokio::spawn(after_schema(schema, shutdown, drain))
    });
    DatabaseTasks { drainer, others }
}

/// Warns, once (it reads every row's key id), about rows sealed under a
/// key that is missing from the ring: they can no longer be read (a
/// rotation that removed a key before `reencrypt`).
async fn check_keys(state: AppState) {
    let spool = state
        .ingest
        .commit
        .spool
        .as_ref()
        .map(|_| std::path::Path::new(&state.settings.spool.path));
    match crate::reencrypt::missing_keys(&state.store, &state.ingest.pipeline.keys, spool).await {
        Ok(missing) => crate::reencrypt::warn_missing(&missing),
        Err(e) => tracing::warn!(error = %e, "could not check which keys sealed the stored rows"),
    }
}
