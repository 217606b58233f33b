//! One relay per destination across replicas: the replica holding a
//! destination's lease forwards it; the others stand by.
//!
//! **Postgres:** a session advisory lock per destination, all held on one
//! dedicated connection per replica (never a pooled one: the locks live and
//! die with the session). The holder pings it every [`TICK`] under a
//! timeout and drops every lease the moment it fails; Postgres frees the
//! locks when the session ends: at once when the holder process dies (its
//! socket closes), and within about 10 s of TCP keepalives (set on the
//! session) when its host vanishes. Standbys try every [`TICK`], so a
//! takeover comes within about 15 s. Taking a lock also writes this
//! replica's holder id into the destination's row, on that connection.
//!
//! **Fence.** The position moves only while the row names this replica as
//! its holder (`forward_advance`), so a replica that lost its lease and
//! does not know it yet cannot move the position after another took over.
//!
//! **SQLite:** a lease row (`lease_holder`, `lease_until`) renewed every
//! [`TICK`] for [`SQLITE_LEASE`]; another process (a second `serve` on the
//! same file) takes it once it has expired, and a clean shutdown gives it
//! up at once. The same `lease_holder` column is the fence.

use std::collections::BTreeSet;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::forward as sql;
use crate::store::{PgStore, Store};

/// How often leases are tried, renewed and proven alive.
pub const TICK: Duration = Duration::from_secs(3);
/// How long a SQLite lease lasts unless renewed.
const SQLITE_LEASE: Duration = Duration::from_secs(10);

/// The destinations this replica holds now.
pub type Held = watch::Receiver<BTreeSet<String>>;

/// Starts keeping the leases of `names`; the receiver says which are held.
pub fn spawn(
    store: Store,
    holder: String,
    names: Vec<String>,
    shutdown: CancellationToken,
) -> (Held, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(BTreeSet::new());
    let task = match store {
        Store::Postgres(pg) => tokio::spawn(keep_pg(pg, holder, names, tx, shutdown)),
        Store::Sqlite(_) => tokio::spawn(keep_sqlite(store, holder, names, tx, shutdown)),
    };
    (rx, task)
}

/// The advisory-lock key of a destination.
pub fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("imggo-receiver forward {name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

async fn keep_pg(
    pg: PgStore,
    holder: String,
    names: Vec<String>,
    held: watch::Sender<BTreeSet<String>>,
    shutdown: CancellationToken,
) {
    let own = pg.own_pool(1);
    while !shutdown.is_cancelled() {
        let conn = tokio::time::timeout(TICK, own.pool().acquire()).await;
        let mut conn = match conn {
            Ok(Ok(c)) => c.detach(),
            _ => {
                held.send_replace(BTreeSet::new());
                pause(&shutdown).await;
                continue;
            }
        };
        let mut mine = BTreeSet::new();
        let lost = loop {
            let tick = async {
                if mine.is_empty() {
                    // Before holding anything (cheap to repeat until then).
                    sql::keepalive(&mut conn).await?;
                }
                for name in &names {
                    if !mine.contains(name) && sql::try_lock(&mut conn, lock_key(name)).await? {
                        sql::claim(&mut conn, name, &holder).await?;
                        tracing::info!(destination = %name, "this replica forwards the destination");
                        mine.insert(name.clone());
                    }
                }
                sql::ping(&mut conn).await
            };
            match tokio::time::timeout(TICK, tick).await {
                Ok(Ok(())) => {
                    held.send_if_modified(|h| {
                        let changed = *h != mine;
                        h.clone_from(&mine);
                        changed
                    });
                }
                Ok(Err(e)) => break e.to_string(),
                Err(_) => break "no answer".to_owned(),
            }
            if !pause(&shutdown).await {
                break String::new();
            }
        };
        // Stop forwarding first: another replica may take over now.
        held.send_replace(BTreeSet::new());
        if !lost.is_empty() && !mine.is_empty() {
            tracing::warn!(error = %lost, "forwarding leases lost with their connection");
        }
        // Closing the session frees its locks for the other replicas.
        let _ = tokio::time::timeout(TICK, sqlx::Connection::close(conn)).await;
    }
}

async fn keep_sqlite(
    store: Store,
    holder: String,
    names: Vec<String>,
    held: watch::Sender<BTreeSet<String>>,
    shutdown: CancellationToken,
) {
    loop {
        let until = chrono::Utc::now().timestamp_micros()
            + i64::try_from(SQLITE_LEASE.as_micros()).unwrap_or(i64::MAX);
        let mut mine = BTreeSet::new();
        for name in &names {
            match store.forward_lease(name, &holder, until).await {
                Ok(true) => {
                    mine.insert(name.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(destination = %name, error = %e, "cannot renew the forwarding lease")
                }
            }
        }
        held.send_if_modified(|h| {
            let changed = *h != mine;
            h.clone_from(&mine);
            changed
        });
        if !pause(&shutdown).await {
            break;
        }
    }
    held.send_replace(BTreeSet::new());
    for name in &names {
        let _ = store.forward_release(name, &holder).await;
    }
}

/// Waits one [`TICK`]; false when shutting down.
async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(TICK) => true,
        () = shutdown.cancelled() => false,
    }
}
