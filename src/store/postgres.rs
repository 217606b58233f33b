//! The Postgres store: several replicas may share it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tracing::instrument;

use super::{InsertOutcome, NewEvent, StoreError, StoredEvent};
use crate::config::DatabaseSettings;

pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects, retrying with backoff until `db.connect_timeout` runs out.
    pub async fn connect(url: &str, db: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(StoreError::Other)?
            .application_name("imggo-receiver");
        let deadline = tokio::time::Instant::now() + db.connect_timeout;
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt = PgPoolOptions::new()
                .max_connections(db.max_connections)
                .acquire_timeout(db.acquire_timeout)
                .connect_with(options.clone())
                .await;
            match attempt {
                Ok(pool) => return Ok(Self { pool }),
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(error = %e, "database not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(StoreError::from(e)),
            }
        }
    }

    /// Wraps an existing pool (tests, tools).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn ready(&self) -> Result<(), StoreError> {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| match e {
                    // 42P01: the migrations table does not exist yet.
                    sqlx::Error::Database(ref db) if db.code().as_deref() == Some("42P01") => {
                        StoreError::NotMigrated
                    }
                    e => StoreError::from(e),
                })?;
        if applied.unwrap_or(0) < latest {
            return Err(StoreError::NotMigrated);
        }
        Ok(())
    }

    #[instrument(skip_all, fields(job_id = %event.envelope.job_id, event = %event.envelope.event))]
    pub async fn insert(&self, event: &NewEvent) -> Result<InsertOutcome, StoreError> {
        let e = &event.envelope;
        let s = &event.sealed;
        let result = sqlx::query(
            "INSERT INTO webhook_events \
               (job_id, event, pattern_id, status, key_id, nonce, ciphertext) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (job_id, event) DO NOTHING",
        )
        .bind(&e.job_id)
        .bind(&e.event)
        .bind(&e.pattern_id)
        .bind(&e.status)
        .bind(s.key_id.as_str())
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .execute(&self.pool)
        .await?;
        Ok(if result.rows_affected() == 1 {
            InsertOutcome::Inserted
        } else {
            InsertOutcome::Duplicate
        })
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    pub async fn events_for_job(&self, job_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as::<_, StoredEvent>(
            "SELECT id, job_id, event, pattern_id, status, received_at, key_id, nonce, ciphertext \
             FROM webhook_events WHERE job_id = $1 ORDER BY received_at, id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
