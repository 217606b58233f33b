//! Connecting to Postgres without showing `DATABASE_URL`: the URL loses the
//! query parameters sqlx would log before sqlx reads it, and a failed
//! connection is described by its kind and SQLSTATE, never by the server's
//! text, which quotes the user name (`password authentication failed for
//! user "…"`, `role "…" does not exist`) or an `options` value. Only the
//! host, port and database name may be shown (`config::dsn`).

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::StoreError;
use crate::config::dsn;

/// Whether a failed connection attempt can succeed later: the server is not
/// answering yet (refused, reset or cut connections, I/O errors, the pool's own
/// wait running out), is starting up (57P03 `cannot_connect_now`) or is full
/// (53300 `too_many_connections`). A missing database, wrong credentials, an
/// unknown host or TLS trouble stay as they are however long we wait.
pub(super) fn worth_retrying(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Io(io) => !is_unknown_host(io),
        // A connection closed before the server spoke (a proxy or load
        // balancer in front of a Postgres that is down) reads as garbage.
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P03" | "53300")),
        _ => false,
    }
}

/// A host name that does not resolve. The standard library reports it as
/// an uncategorised I/O error with the resolver's text; a temporary
/// failure of the resolver itself (EAI_AGAIN) is worth another try.
fn is_unknown_host(e: &std::io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.starts_with("failed to lookup address information")
        && !text.contains("temporary failure")
        && !text.contains("try again")
}

/// A failed connection in words that hold nothing of `DATABASE_URL` but
/// (through the OS or resolver) its host. Also how an unavailable
/// database is logged at run time (credentials rotated under a running
/// service get the same refusal, quoting the user).
pub(super) fn describe(e: &sqlx::Error) -> String {
    match e {
        // SQLite's own words name no user ("database is locked").
        sqlx::Error::Database(db)
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
        {
            db.message().to_owned()
        }
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("unknown");
            let what = match code {
                "3D000" => "the database does not exist",
                "28P01" | "28000" => "the server refused the login",
                "57P03" => "the server is starting up",
                "53300" => "the server has no connection to spare",
                "40P01" => "the statement deadlocked with another transaction",
                "40001" => "the transaction conflicted with another one",
                c if c.starts_with("28") => "the server refused the login",
                c if c.starts_with("53") => "the server ran out of a resource",
                c if c.starts_with("57P") => "the server is shutting down or restarting",
                c if c.starts_with("08") => "the server refused the connection",
                _ => "the server refused the connection",
            };
            format!("{what} (SQLSTATE {code})")
        }
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(_) => {
            "TLS failed (see sslmode, sslrootcert, sslcert and sslkey in DATABASE_URL)".into()
        }
        sqlx::Error::Configuration(_) => {
            "DATABASE_URL has a parameter whose value cannot be used".into()
        }
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".into(),
        sqlx::Error::PoolClosed => "the connection pool is closed".into(),
        sqlx::Error::WorkerCrashed => "the database worker stopped".into(),
        sqlx::Error::Protocol(_) => "the server's answer was not Postgres".into(),
        _ => "the connection failed".into(),
    }
}

/// The cause of a refusal in the operator's words, with what to change.
pub(super) fn refused(e: &sqlx::Error) -> StoreError {
    let fix = match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => "; create it, or fix the database name in DATABASE_URL",
            Some(c) if c.starts_with("28") => "; check the user and password in DATABASE_URL",
            _ => "",
        },
        sqlx::Error::Io(io) if is_unknown_host(io) => "; check the host name in DATABASE_URL",
        _ => "",
    };
    StoreError::Refused(format!("{}{fix}", describe(e)))
}

/// Why no connection came within `waited`, once, in the operator's words:
/// what happened and what to check, as [`refused`] does. `last` is the
/// last attempt's error; `None` when the attempt itself got no answer.
pub(super) fn unreachable(last: Option<&sqlx::Error>, waited: Duration) -> StoreError {
    let waited = crate::config::duration::format(waited);
    let why = match last {
        None => format!(
            "no answer from the server within {waited}; check the host and port in \
             DATABASE_URL and that no firewall drops the connection"
        ),
        Some(sqlx::Error::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!(
                "connection refused (retried for {waited}): nothing listens at that host and \
                 port; check that Postgres is running, and the host and port in DATABASE_URL"
            )
        }
        Some(sqlx::Error::Io(io)) => format!(
            "{io} (retried for {waited}); check that Postgres is running and reachable \
             at the host and port in DATABASE_URL"
        ),
        Some(sqlx::Error::Protocol(_)) => format!(
            "the connection was closed before Postgres answered (retried for {waited}); \
             check that the host and port in DATABASE_URL are Postgres' and that it is up"
        ),
        Some(e @ sqlx::Error::Database(_)) => format!(
            "{} (retried for {waited}); the server is starting or full: check its state",
            describe(e)
        ),
        Some(other) => format!("{} (retried for {waited})", describe(other)),
    };
    StoreError::Unreachable(why)
}

/// The connect options of `url`: only the parameters sqlx reads reach it
/// (it would log any other, value and all); the rest are counted, not named.
///
/// JIT is off for our sessions: every statement here is short, and when a
/// plan's estimate is off (a table just filled, before autovacuum's
/// ANALYZE) Postgres spent ~0.8 s compiling a statement that then ran in
/// 0.1 ms: the retention pass held the destinations' rows that long, under
/// load. Per session, so the server's configuration is untouched.
///
/// Sequential scans are off for our sessions too: every statement here is
/// an index probe or an index-ordered range by design, and a plan must not
/// depend on how many rows a partition's statistics saw. A partition
/// analyzed while empty (a `VACUUM ANALYZE` after `migrate`, one made
/// ahead) otherwise got a cached generic plan that read the whole key
/// window for every batch and sorted whole partitions for the feed's head,
/// slower with every row until autovacuum analyzed it again: a third of
/// the ingest rate in a 15 s benchmark. Where nothing but a scan can
/// answer, Postgres still scans; the purge's row count turns it back on.
pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let (url, ignored) = dsn::known_pg_parameters(url);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "DATABASE_URL has query parameters this version does not use; they are ignored"
        );
    }
    Ok(PgConnectOptions::from_str(&url)
        .map_err(|_| {
            StoreError::Refused(
                "DATABASE_URL is not a valid Postgres URL (postgres://user:password@host:port/database?parameters)"
                    .into(),
            )
        })?
        .application_name("imggo-receiver")
        .options([("jit", "off"), ("enable_seqscan", "off")]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_run_without_jit_or_seqscans_after_the_urls_own_options() {
        let plain = connect_options("postgres://u@db.internal/imggo").unwrap();
        assert_eq!(
            plain.get_options(),
            Some("-c jit=off -c enable_seqscan=off")
        );
        // A URL's own `options` are kept; ours come after them.
        let own =
            connect_options("postgres://u@db.internal/imggo?options=-c%20work_mem%3D8MB").unwrap();
        let text = own.get_options().unwrap();
        assert!(text.contains("work_mem"), "{text}");
        assert!(text.ends_with("-c jit=off -c enable_seqscan=off"), "{text}");
    }

    #[test]
    fn only_what_can_get_better_is_retried() {
        use std::io::{Error, ErrorKind};
        let io = |kind, text: &str| sqlx::Error::Io(Error::new(kind, text));
        let retried = [
            io(ErrorKind::ConnectionRefused, "connection refused"),
            io(ErrorKind::ConnectionReset, "connection reset by peer"),
            io(
                ErrorKind::Other,
                "failed to lookup address information: Temporary failure in name resolution",
            ),
            sqlx::Error::PoolTimedOut,
        ];
        for e in &retried {
            assert!(worth_retrying(e), "{e}");
        }
        let not = [
            io(
                ErrorKind::Other,
                "failed to lookup address information: Name or service not known",
            ),
            io(
                ErrorKind::Other,
                "failed to lookup address information: Name does not resolve",
            ),
            sqlx::Error::Configuration("bad".into()),
            sqlx::Error::Tls("certificate".into()),
        ];
        for e in &not {
            assert!(!worth_retrying(e), "{e}");
        }
        let unknown = io(
            ErrorKind::Other,
            "failed to lookup address information: Name or service not known",
        );
        let msg = refused(&unknown).to_string();
        assert!(msg.contains("check the host name in DATABASE_URL"), "{msg}");
    }
}
