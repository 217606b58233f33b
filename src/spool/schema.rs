//! The spool file's schema and its versions. The file is SQLite, opened
//! as the embedded store is ([`crate::store::sqlite::durable`]); its tables
//! are created at open, and a file left by an older release (a crash
//! leaves one behind) is migrated step by step by `PRAGMA user_version`.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection as _, SqliteConnection};

/// How long a statement waits for the file's lock (a command beside the
/// server, `reencrypt` say).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn options(path: &Path, create: bool) -> SqliteConnectOptions {
    crate::store::sqlite::durable(
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create),
        BUSY_TIMEOUT,
    )
}

/// The spool's one connection (one writer: SQLite allows no more), its
/// schema brought up to date.
pub(super) async fn open_pool(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options(path, true))
        .await?;
    ensure_schema(&mut *pool.acquire().await?).await?;
    Ok(pool)
}

/// A connection to an existing spool file (a command beside the server:
/// WAL lets both in), migrated; `None` when there is no file.
pub(super) async fn open_existing(path: &Path) -> Result<Option<SqliteConnection>, sqlx::Error> {
    if !path.exists() {
        return Ok(None);
    }
    let mut conn = SqliteConnection::connect_with(&options(path, false)).await?;
    ensure_schema(&mut conn).await?;
    Ok(Some(conn))
}

const EVENTS: &str = "
CREATE TABLE IF NOT EXISTS spooled_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    pattern_id  TEXT,
    status      TEXT,
    received_at INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    -- The delivery's subject hashes (32 bytes each), for erasure.
    subjects    BLOB    NOT NULL DEFAULT x'',
    -- The validation verdict (CONTRACT §12): 1, 0 or NULL, and the errors
    -- as JSON. Schema version 1.
    valid             INTEGER,
    validation_errors TEXT,
    UNIQUE (job_id, event)
)";

/// The spool file's schema version (`PRAGMA user_version`). A spool left
/// by a crash of an older release is migrated when it is opened:
/// 0 → 1 adds the verdict columns to `spooled_events`.
const SCHEMA_VERSION: i64 = 1;

/// Creates the spool's tables, or migrates those of an older release.
async fn ensure_schema(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(EVENTS).execute(&mut *conn).await?;
    sqlx::query(QUARANTINE).execute(&mut *conn).await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('spooled_events')")
            .fetch_all(&mut *conn)
            .await?;
    for (column, ty) in [("valid", "INTEGER"), ("validation_errors", "TEXT")] {
        if !columns.iter().any(|c| c == column) {
            sqlx::query(&format!(
                "ALTER TABLE spooled_events ADD COLUMN {column} {ty}"
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    sqlx::query(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Quarantine rows (refused signed deliveries) that Postgres could not
/// take: kept here as the deliveries are, and moved after them.
const QUARANTINE: &str = "
CREATE TABLE IF NOT EXISTS spooled_quarantine (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    bytes       INTEGER NOT NULL,
    seal_id     TEXT    NOT NULL UNIQUE,
    key_id      TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    subjects    BLOB    NOT NULL DEFAULT x''
)";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `spooled_events` as the release before verdicts wrote it (version 0).
    const VERSION_0: &str = "CREATE TABLE spooled_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, event TEXT NOT NULL,
        pattern_id TEXT, status TEXT, received_at INTEGER NOT NULL, key_id TEXT NOT NULL,
        nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, subjects BLOB NOT NULL DEFAULT x'',
        UNIQUE (job_id, event))";

    #[tokio::test]
    async fn an_old_spool_file_is_migrated_at_open_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let mut conn = SqliteConnection::connect_with(&options(&path, true))
                .await
                .unwrap();
            sqlx::query(VERSION_0).execute(&mut conn).await.unwrap();
            sqlx::query(
                "INSERT INTO spooled_events (job_id, event, received_at, key_id, nonce, ciphertext) \
                 VALUES ('j', 'e', 1, 'k1', x'00', x'00')",
            )
            .execute(&mut conn)
            .await
            .unwrap();
        }
        let pool = open_pool(&path).await.unwrap();
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let (valid, errors): (Option<bool>, Option<String>) = sqlx::query_as(
            "SELECT valid, validation_errors FROM spooled_events WHERE job_id = 'j'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((valid, errors), (None, None));
    }
}
