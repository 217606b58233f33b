//! Retention: rows older than `retention.max_age` are deleted shortly after
//! start and then every `retention.purge_interval`, in batches. A failing
//! pass is logged and retried at the next interval; it never stops serving.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::RetentionSettings;
use crate::store::{PurgeOutcome, Store, StoreError};

/// Delay before the first pass, so start-up and readiness come first.
pub const FIRST_PASS_DELAY: Duration = Duration::from_secs(5);

/// One pass now; logs and counts its result, rows and duration
/// (`imggo_purge_*`, and `imggo_database_errors_total{operation="purge"}`
/// when it fails).
pub async fn purge_once(
    store: &Store,
    settings: &RetentionSettings,
    dry_run: bool,
) -> Result<PurgeOutcome, StoreError> {
    let start = Instant::now();
    let result = store
        .purge(settings.max_age, settings.batch_size, dry_run)
        .await;
    let elapsed = start.elapsed();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let label = match &result {
        Ok(PurgeOutcome::Deleted(rows)) => {
            tracing::info!(rows, duration_ms, "retention pass deleted expired events");
            metrics::counter!(crate::metrics::PURGE_ROWS).increment(*rows);
            "completed"
        }
        Ok(PurgeOutcome::WouldDelete(rows)) => {
            tracing::info!(rows, duration_ms, "retention dry run");
            "dry_run"
        }
        Ok(PurgeOutcome::Skipped) => {
            tracing::info!(
                duration_ms,
                "retention pass skipped: another replica is purging"
            );
            "skipped"
        }
        Err(_) => {
            crate::metrics::database_error("purge");
            "failed"
        }
    };
    metrics::counter!(crate::metrics::PURGE_RUNS, "result" => label).increment(1);
    metrics::histogram!(crate::metrics::PURGE_DURATION).record(elapsed.as_secs_f64());
    result
}

/// Deletes audit records older than `max_age` (`audit.max_age`): the only
/// way audit records ever go.
pub async fn purge_audit_once(store: &Store, max_age: Duration) -> Result<u64, StoreError> {
    let rows = store.purge_audit(max_age).await?;
    if rows > 0 {
        tracing::info!(rows, "retention pass deleted expired audit records");
    }
    Ok(rows)
}

/// Runs passes until `shutdown`; the wait between them is cancellable, and a
/// pass cut short by shutdown loses nothing (each batch is atomic). Each
/// pass also deletes audit records older than `audit_max_age`.
pub async fn run(
    store: Store,
    settings: RetentionSettings,
    audit_max_age: Duration,
    first_delay: Duration,
    shutdown: CancellationToken,
) {
    let mut wait = first_delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            result = purge_once(&store, &settings, false) => {
                if let Err(e) = result {
                    tracing::error!(error = %e, retry_in = ?settings.purge_interval, "retention pass failed");
                }
            }
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = purge_audit_once(&store, audit_max_age).await {
            tracing::error!(error = %e, retry_in = ?settings.purge_interval, "audit retention pass failed");
        }
        wait = settings.purge_interval;
    }
}
