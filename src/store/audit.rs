//! The audit trail's SQL: append a record (alone, or inside the transaction
//! of the delete it records), read records since a moment, and delete
//! those past `audit.max_age` (the only deletion there is).

use std::time::Duration;

use sqlx::{Database, Executor};

use super::{Store, StoreError};
use crate::audit::{AuditEntry, AuditRecord};

const INSERT: &str = "INSERT INTO audit_log \
    (at, actor, action, target, count, client_ip, request_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Appends `entry` on `executor` (a pool, or a transaction doing the delete).
pub(crate) async fn append<'e, DB, E>(executor: E, entry: &AuditEntry) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query::<DB>(INSERT)
        .bind(crate::audit::now_micros())
        .bind(entry.actor.label())
        .bind(entry.action.as_str().to_owned())
        .bind(entry.target.clone())
        .bind(entry.count)
        .bind(entry.client_ip.map(|ip| ip.to_string()))
        .bind(entry.request_id.clone())
        .execute(executor)
        .await?;
    Ok(())
}

impl Store {
    /// Appends one audit record.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        on_backend!(self, s => append(s.pool(), entry).await)
    }

    /// Records at or after `since` (Unix microseconds), oldest first.
    pub async fn audit_since(&self, since: i64) -> Result<Vec<AuditRecord>, StoreError> {
        const SQL: &str = "SELECT id, at, actor, action, target, count, client_ip, request_id \
                           FROM audit_log WHERE at >= $1 ORDER BY at, id";
        Ok(on_backend!(self, s => sqlx::query_as::<_, AuditRecord>(SQL)
            .bind(since)
            .fetch_all(s.pool())
            .await?))
    }

    /// Records older than `max_age` (a dry run's count).
    pub async fn count_audit_older_than(&self, max_age: Duration) -> Result<u64, StoreError> {
        let cutoff = super::retention_cutoff(max_age).timestamp_micros();
        let n: i64 = on_backend!(self, s => sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE at < $1")
            .bind(cutoff)
            .fetch_one(s.pool())
            .await?);
        Ok(n.unsigned_abs())
    }

    /// Deletes records older than `max_age`; returns how many.
    pub async fn purge_audit(&self, max_age: Duration) -> Result<u64, StoreError> {
        let cutoff = super::retention_cutoff(max_age).timestamp_micros();
        Ok(
            on_backend!(self, s => sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(cutoff)
            .execute(s.pool())
            .await?
            .rows_affected()),
        )
    }
}
