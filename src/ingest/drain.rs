//! The spool drainer: moves spooled rows into Postgres, oldest first,
//! removing each from the spool only after Postgres committed it (a crash
//! in between re-sends it, and Postgres answers duplicate), keeping
//! `received_at`. Deliveries first, then quarantine rows. A pass that
//! reaches Postgres marks the database healthy again; one that cannot
//! marks it down, and is retried.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::DatabaseHealth;
use crate::event::NewEvent;
use crate::spool::{Spool, SpooledBatch};
use crate::store::{Store, StoreError};

/// Longest a drain batch may wait for Postgres' commit (a healthy one takes
/// a fraction of a second) before the pass is given up and retried.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the drainer looks again while Postgres is unreachable (and,
/// four times as long, when idle, in case a row arrived without waking it).
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error("Postgres did not commit within {DRAIN_TIMEOUT:?}")]
    Timeout,
    #[error("the spool could not be read or trimmed: {0}")]
    Spool(#[from] sqlx::Error),
    #[error("Postgres did not commit: {0}")]
    Database(#[source] StoreError),
}

/// Moves spooled rows into `store` until `shutdown`: whenever rows
/// arrive, and every [`RETRY_INTERVAL`] while Postgres is unreachable.
/// Quarantine rows go in capped at `quarantine_max_rows`.
pub async fn run(
    spool: Spool,
    store: Store,
    health: DatabaseHealth,
    quarantine_max_rows: u32,
    shutdown: CancellationToken,
) {
    loop {
        let drained = async {
            drain_events(&spool, &store).await?;
            drain_quarantined(&spool, &store, quarantine_max_rows).await
        };
        match drained.await {
            Ok(()) => {
                health.recovered();
                // Wait for rows (or a missed wake-up) before looking again.
                tokio::select! {
                    () = spool.arrivals() => {}
                    () = health.failures() => {}
                    () = tokio::time::sleep(RETRY_INTERVAL * 4) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            Err(e) => {
                health.failed();
                tracing::warn!(error = %e, rows = spool.depth(), "spool cannot drain yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RETRY_INTERVAL) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Moves every spooled delivery into `store`, oldest first, each batch in
/// two concurrent Postgres transactions. The spool's work for the next
/// batch (read it, forget the last one) runs while Postgres commits this
/// one, so a backlog drains at the pace of Postgres' commits.
async fn drain_events(spool: &Spool, store: &Store) -> Result<(), DrainError> {
    let mut batch = spool.read_after(0).await?;
    // Committed in Postgres, not yet deleted from the spool.
    let mut committed: Option<SpooledBatch> = None;
    loop {
        let Some(last) = batch.last_seq() else {
            if let Some(done) = committed {
                spool.forget(done).await?;
            }
            return Ok(());
        };
        // A delivery whose subject was erased (on any replica) after it
        // was spooled is refused by the insert itself, which remembers
        // its key: checked here, a racing erasure could slip between.
        let refs: Vec<&NewEvent> = batch.events.iter().collect();
        let spool_side = async {
            if let Some(done) = committed.take() {
                spool.forget(done).await?;
            }
            spool.read_after(last).await
        };
        // Two transactions at once, on two connections: one commits
        // while Postgres works on the other. Both must commit before the
        // spool forgets either half (a crash between re-sends them;
        // Postgres answers duplicate).
        let (older, newer) = refs.split_at(refs.len() / 2);
        // A database that hangs (a stalled network sends no reset)
        // must not hold the drainer: the pass fails and is retried.
        let postgres_side = tokio::time::timeout(DRAIN_TIMEOUT, async {
            let (first, second) =
                tokio::join!(store.insert_batch(older), store.insert_batch(newer));
            first.and(second)
        });
        let (committed_both, next) = tokio::join!(postgres_side, spool_side);
        committed_both
            .map_err(|_| DrainError::Timeout)?
            .map_err(DrainError::Database)?;
        // Only once Postgres committed it may the spool forget it.
        committed = Some(batch);
        batch = next?;
    }
}

/// Moves every spooled quarantine row into `store`, oldest first, each in
/// its own transaction and forgotten only once committed (a crash in
/// between moves it again; its `seal_id` keeps it once). A row whose
/// subject was erased after it arrived is refused by the insert itself
/// (checked in its transaction: checked here first, an erasure could slip
/// between).
async fn drain_quarantined(spool: &Spool, store: &Store, max_rows: u32) -> Result<(), DrainError> {
    loop {
        let rows = spool.read_quarantined().await?;
        if rows.is_empty() {
            return Ok(());
        }
        for (seq, row) in &rows {
            tokio::time::timeout(DRAIN_TIMEOUT, store.quarantine(row, max_rows))
                .await
                .map_err(|_| DrainError::Timeout)?
                .map_err(DrainError::Database)?;
            spool.forget_quarantined(*seq, row).await?;
        }
        tracing::info!(
            rows = rows.len(),
            left = spool.depth(),
            "spooled quarantine rows moved into Postgres"
        );
    }
}
