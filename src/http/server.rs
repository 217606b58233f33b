//! The accept loop. axum's `serve` gives hyper no timer, so a client that
//! stalls inside its request headers would hold its connection forever.
//! Here:
//! - connections speak HTTP/1.1 (what ImgGo and load balancers send to a
//!   backend), and hyper's header-read timer runs from the first byte of
//!   every request, the first one included: a connection that sends nothing,
//!   or half a request line, is closed after `header_read_timeout`;
//! - at most `max_connections` are open at once (more are closed on accept),
//!   so idle sockets cannot exhaust file descriptors;
//! - every request learns its TCP peer (`ConnectInfo`);
//! - on shutdown, in-flight requests get `shutdown_timeout`, then whatever is
//!   still open is aborted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How the listener treats connections.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Longest a client may take to send request headers (and longest an
    /// idle keep-alive connection waits for its next request).
    pub header_read_timeout: Duration,
    /// Grace period for in-flight requests once `shutdown` fires.
    pub shutdown_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Serves a router on `listener` (see [`serve`]); each request learns its
/// TCP peer as `ConnectInfo`.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
) {
    let per_connection = move |peer: SocketAddr| {
        TowerToHyperService::new(
            router
                .clone()
                .map_request(move |req: hyper::Request<Incoming>| for_router(req, peer)),
        )
    };
    serve(listener, per_connection, shutdown, opts).await;
}

/// A request as a router wants it: axum's body type, and its TCP peer as
/// `ConnectInfo` (routers do not see the connection).
pub fn for_router(req: hyper::Request<Incoming>, peer: SocketAddr) -> axum::extract::Request {
    let mut req = req.map(Body::new);
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

/// Serves on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets open requests finish within `shutdown_timeout` and aborts
/// the rest. `per_connection` makes the service of each accepted connection
/// from its TCP peer.
pub async fn serve<F, S>(
    listener: TcpListener,
    per_connection: F,
    shutdown: CancellationToken,
    opts: ServeOptions,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    // Flips to true on shutdown: each connection then finishes its current
    // request and closes.
    let (draining_tx, draining) = watch::channel(false);
    let mut connections = JoinSet::new();

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(TokioIo::new(stream), per_connection(peer));
        let mut draining = draining.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            let drain = async move {
                // The guard wait_for returns must not live across an await.
                let _ = draining.wait_for(|d| *d).await.map(|_| ());
            };
            tokio::select! {
                res = conn.as_mut() => log_end(res, peer),
                () = drain => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await, peer);
                }
            }
        });
    }
    drop(listener);

    tracing::info!(grace = ?opts.shutdown_timeout, open = connections.len(), "shutting down: draining in-flight requests");
    draining_tx.send_replace(true);
    let drained = tokio::time::timeout(opts.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            aborted = connections.len(),
            "shutdown_timeout elapsed; closing the remaining connections"
        );
        connections.shutdown().await;
    }
}

fn log_end(res: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = res {
        tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
    }
}
