//! The lease rows (SQLite) and the advisory-lock connection (Postgres) that
//! let one replica at a time forward a destination (`crate::forward::lease`).

use super::now_micros;
use crate::store::{Store, StoreError};

impl Store {
    /// SQLite: takes or renews the lease of `name` for `holder` until
    /// `until` (Unix microseconds) unless another holder's lease runs.
    pub async fn forward_lease(
        &self,
        name: &str,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE forward_positions SET lease_holder = $2, lease_until = $3 \
             WHERE destination = $1 AND (lease_holder IS NULL OR lease_holder = $2 \
               OR lease_until < $4)";
        let n = on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(holder)
            .bind(until)
            .bind(now_micros())
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(n > 0)
    }

    /// SQLite: gives a lease up (at shutdown), so a restart takes it at once.
    pub async fn forward_release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE forward_positions SET lease_holder = NULL, lease_until = NULL \
             WHERE destination = $1 AND lease_holder = $2";
        on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(holder)
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(())
    }
}

/// Postgres: tries the advisory lock `key` on the lease connection.
pub async fn try_lock(conn: &mut sqlx::PgConnection, key: i64) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await?)
}

/// Postgres: marks `holder` (this replica) as the lease holder of `name`,
/// on the lease connection, right after its advisory lock was taken: a
/// replica that lost the lock can then no longer move the position
/// (`forward_advance` is fenced on the holder).
pub async fn claim(
    conn: &mut sqlx::PgConnection,
    name: &str,
    holder: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE forward_positions SET lease_holder = $2 WHERE destination = $1")
        .bind(name)
        .bind(holder)
        .execute(conn)
        .await?;
    Ok(())
}

/// Postgres: proves the lease connection (and so every lock on it) alive.
pub async fn ping(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(conn).await?;
    Ok(())
}

/// Postgres: the server closes a lease connection whose peer vanished
/// (a replica's host died without closing it) within about 10 s, which
/// frees its locks for another replica.
pub async fn keepalive(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    for sql in [
        "SET tcp_keepalives_idle = 4",
        "SET tcp_keepalives_interval = 2",
        "SET tcp_keepalives_count = 3",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}
