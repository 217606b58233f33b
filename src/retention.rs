//! Retention: rows older than `retention.max_age` are deleted shortly after
//! start and then every `retention.purge_interval`, in batches. A failing
//! pass is logged and retried at the next interval; it never stops serving.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::RetentionSettings;
use crate::store::{PurgeOutcome, Store, StoreError};

/// Delay before the first pass, so start-up and readiness come first.
pub const FIRST_PASS_DELAY: Duration = Duration::from_secs(5);

/// Rows of each kind one pass deleted, or (dry run) would delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Stored events past `retention.max_age`.
    pub events: u64,
    /// Quarantined deliveries past `retention.max_age`.
    pub quarantine: u64,
    /// Audit records past `audit.max_age`.
    pub audit: u64,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Deleted(Counts),
    /// `--dry-run`: what a real pass would delete.
    WouldDelete(Counts),
    /// Another replica is purging; this pass did nothing.
    Skipped,
}

/// One retention pass, the same for the server's task and `purge`: events
/// and quarantined deliveries past `retention.max_age`, then audit records
/// past `audit_max_age` (skipped with the rest when another replica is
/// purging). Logs and counts its result, rows and duration (`imggo_purge_*`,
/// and `imggo_database_errors_total{operation="purge"}` when it fails).
pub async fn pass(
    store: &Store,
    settings: &RetentionSettings,
    audit_max_age: Duration,
    dry_run: bool,
) -> Result<Pass, StoreError> {
    let start = Instant::now();
    let result = async {
        let (events, quarantine) = store
            .purge_counted(settings.max_age, settings.batch_size, dry_run)
            .await?;
        Ok(match events {
            PurgeOutcome::Skipped => Pass::Skipped,
            PurgeOutcome::WouldDelete(events) => Pass::WouldDelete(Counts {
                events,
                quarantine,
                audit: store.count_audit_older_than(audit_max_age).await?,
            }),
            PurgeOutcome::Deleted(events) => Pass::Deleted(Counts {
                events,
                quarantine,
                audit: store.purge_audit(audit_max_age).await?,
            }),
        })
    }
    .await;
    let elapsed = start.elapsed();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let label = match &result {
        Ok(Pass::Deleted(n)) => {
            tracing::info!(
                events = n.events,
                quarantine = n.quarantine,
                audit = n.audit,
                duration_ms,
                "retention pass deleted expired rows"
            );
            metrics::counter!(crate::metrics::PURGE_ROWS).increment(n.events);
            "completed"
        }
        Ok(Pass::WouldDelete(n)) => {
            tracing::info!(
                events = n.events,
                quarantine = n.quarantine,
                audit = n.audit,
                duration_ms,
                "retention dry run"
            );
            "dry_run"
        }
        Ok(Pass::Skipped) => {
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

/// Runs passes until `shutdown`; the wait between them is cancellable, and a
/// pass cut short by shutdown loses nothing (each batch is atomic). Each
/// pass is [`pass`]: audit records older than `audit_max_age` go too.
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
            result = pass(&store, &settings, audit_max_age, false) => {
                if let Err(e) = result {
                    tracing::error!(error = %e, retry_in = ?settings.purge_interval, "retention pass failed");
                }
            }
            () = shutdown.cancelled() => return,
        }
        wait = settings.purge_interval;
    }
}
