//! Whether the primary store (Postgres) is committing. One flag with one
//! owner of its meaning: a commit that failed or hung sets it (the write
//! path, [`super::commit`]), a drain pass that reached Postgres clears it
//! ([`super::drain`]). While it is set, and while spooled rows wait,
//! deliveries go straight to the spool instead of waiting on a database
//! that is down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Cheap to clone; every clone reads and sets the same flag.
#[derive(Clone, Debug, Default)]
pub struct DatabaseHealth(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    down: AtomicBool,
    /// Wakes the drainer when the database is found failing.
    failed: Notify,
}

impl DatabaseHealth {
    /// Postgres was found unable to commit and has not been seen to recover.
    pub fn is_down(&self) -> bool {
        self.0.down.load(Ordering::Relaxed)
    }

    /// Records that Postgres could not commit (and wakes the drainer, which
    /// watches for it to answer again).
    pub fn failed(&self) {
        self.0.down.store(true, Ordering::Relaxed);
        self.0.failed.notify_one();
    }

    /// Records that Postgres committed again.
    pub fn recovered(&self) {
        self.0.down.store(false, Ordering::Relaxed);
    }

    /// Resolves at the next [`DatabaseHealth::failed`] (or at once when one
    /// came since the last wait).
    pub async fn failures(&self) {
        self.0.failed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_until_recovered_and_shared_by_clones() {
        let health = DatabaseHealth::default();
        let seen_by = health.clone();
        assert!(!seen_by.is_down());
        health.failed();
        assert!(seen_by.is_down());
        seen_by.recovered();
        assert!(!health.is_down());
    }

    #[tokio::test]
    async fn a_failure_wakes_whoever_waits_for_one() {
        let health = DatabaseHealth::default();
        health.failed();
        tokio::time::timeout(std::time::Duration::from_secs(5), health.failures())
            .await
            .expect("the failure was signalled");
    }
}
