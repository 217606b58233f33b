//! The database going away mid-run: 503 + Retry-After, /readyz 503, and
//! recovery without a restart.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::helpers::*;

/// A TCP forwarder in front of Postgres that can be cut and restored.
struct Proxy {
    addr: std::net::SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let proxy = Arc::new(Self { addr, up });
        let p = proxy.clone();
        tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                if !*p.up.borrow() {
                    continue; // dropped: the client sees a reset/EOF
                }
                let mut down = p.up.subscribe();
                conns.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        proxy
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// host:port of a postgres:// URL.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

fn upstream_addr() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs as _;
    host_port(&admin_url())
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_503_then_recovers_without_restart() {
    let proxy = Proxy::start(upstream_addr()).await;
    let proxy_addr = proxy.addr;
    let app = spawn_app_with(|o| {
        let db_url = o.env["DATABASE_URL"].clone();
        o.database_url = Some(db_url.replacen(host_port(&db_url), &proxy_addr.to_string(), 1));
    })
    .await;

    assert_eq!(app.post_signed(prod_body("before")).await.status(), 200);

    proxy.set_up(false);
    let res = app.post_signed(prod_body("during")).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(error_code(res).await, "unavailable");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(app.get_status("/healthz").await, 200);

    proxy.set_up(true);
    let res = app.post_signed(prod_body("during")).await;
    assert_eq!(res.status(), 200, "the retry after recovery is stored");
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "received");
    assert_eq!(app.get_status("/readyz").await, 200);
    assert_eq!(app.rows().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_replaced_transparently() {
    let app = spawn_app().await;
    assert_eq!(app.post_signed(prod_body("one")).await.status(), 200);
    // Kill every server process of the app's pool (not the test's own).
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'imggo-receiver'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(app.post_signed(prod_body("two")).await.status(), 200);
    assert_eq!(app.rows().await, 2);
}
