//! The one start-up seam: build the application from settings, secrets and
//! an optional pre-bound listener; run it until the token is cancelled.

use crate::store::partitions::Layout;
use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use secrecy::SecretString;

use crate::config::secrets::{database_label, Secrets};
use crate::config::Settings;
use crate::feed::{FeedWatch, FeedWatcher};
use crate::forward::Forwarding;
use crate::http::api::ApiState;
use crate::http::server::ServeOptions;
use crate::http::{self, AppState, DeliveryGate, Shared};
use crate::ingest::{Committer, DatabaseHealth, Ingest, Pipeline};
use crate::limits::ConnectionCaps;
use crate::security::rate_limit::{self, RateLimit};
use crate::security::{Allowlist, ClientIpResolver, SignatureVerifier};
use crate::spool::Spool;
use crate::store::batch::BatchOptions;
use crate::store::deferred::{self, MarkReady, Opened};
use crate::store::{BatchWriter, SchemaReady, Store};

mod database_tasks;
mod degraded;

/// How long writers get to commit what is queued once serving has stopped.
const WRITER_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Application {
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    listener: TcpListener,
    admin_listener: TcpListener,
    /// Where events are stored, password hidden (for the start-up line).
    store_label: String,
    /// The Results API listener, unless `api.bind = ""`.
    api_listener: Option<TcpListener>,
    state: AppState,
    writers: tokio::task::JoinHandle<()>,
    /// The spool's writer, when there is a spool.
    spool_writer: Option<tokio::task::JoinHandle<()>>,
    /// Each listener's connection cap, from the file-descriptor budget.
    caps: ConnectionCaps,
    /// The feed head, for every component that follows the feed (the
    /// Results API's long-polls, a relay): one watcher per process.
    feed: FeedWatch,
    feed_watcher: FeedWatcher,
    /// The destinations events are forwarded to (none unless configured).
    forwarding: Forwarding,
    /// Set when Postgres did not answer at start: run() connects and
    /// migrates in the background, then marks the schema ready.
    pending_schema: Option<MarkReady>,
}

impl Application {
    /// Connects to the database (waiting a bounded time), applies
    /// migrations and binds the listener (unless one is given). With
    /// Postgres and a spool, a database that does not answer yet is no
    /// reason to stop: it serves from the spool (CONTRACT §8).
    pub async fn build(
        settings: Settings,
        secrets: Secrets,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let store_location = crate::store::location::describe(&secrets.database_url);
        tracing::info!(store = %store_location, "connecting to the store");
        // A signal ends the wait for the database at once: a server that
        // never started has nothing to drain.
        let url = &secrets.database_url;
        let connect = deferred::open(url, &settings.database, degraded::may_defer(&settings));
        let opened = tokio::select! {
            opened = connect => opened.with_context(|| database_context(url))?,
            () = shutdown.cancelled() => anyhow::bail!(
                "stopped by a signal while waiting for the database ({store_location}); nothing was served"
            ),
        };
        let layout = Layout::of(&settings);
        let (store, pending) = match opened {
            Opened::Connected(store) => {
                let store = store.with_layout(layout);
                store.migrate().await.context("cannot apply migrations")?;
                (store, None)
            }
            Opened::Unreachable { store, why } => {
                degraded::warn_unreachable(url, &why, &settings);
                (store.with_layout(layout), Some(SchemaReady::later()))
            }
        };
        let (mark, schema) = pending.map_or((None, SchemaReady::now()), |(m, s)| (Some(m), s));
        let mut app =
            Self::assemble(settings, secrets, (store, schema), listener, shutdown).await?;
        app.pending_schema = mark;
        Ok(app)
    }

    /// Like [`Application::build`] over an existing, migrated store.
    pub async fn with_store(
        settings: Settings,
        secrets: Secrets,
        store: Store,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let store = (store, SchemaReady::now());
        Self::assemble(settings, secrets, store, listener, shutdown).await
    }

    /// The application over `store`, whose schema is ready when `schema` says.
    async fn assemble(
        settings: Settings,
        secrets: Secrets,
        (store, schema): (Store, SchemaReady),
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        // The partition interval and the served window are the settings'
        // whoever opened the store.
        let store = store.with_layout(Layout::of(&settings));
        // First, so that what start-up records (the spool's depth) is kept.
        let metrics = crate::metrics::install(&settings.webhook.path);
        let caps = ConnectionCaps::at_start_up(&settings);
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(settings.server.bind)
                .await
                .with_context(|| format!("cannot bind server.bind = {}", settings.server.bind))?,
        };
        let admin_listener = TcpListener::bind(settings.admin.bind)
            .await
            .with_context(|| format!("cannot bind admin.bind = {}", settings.admin.bind))?;
        let api_listener = match settings.api.bind_addr() {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind api.bind = {addr}"))?,
            ),
            None => None,
        };
        let allowlist = Allowlist::new(settings.network.allowed_ips.clone());
        if allowlist.is_open() {
            tracing::warn!(
                "network.allowed_ips is empty: every IP may call the webhook route; \
                 list ImgGo's egress ranges there"
            );
        }
        let rate_limit = RateLimit::new(&settings.rate_limit)?;
        let pipeline = Pipeline::from_settings(
            &settings,
            &secrets.hash_key,
            std::sync::Arc::new(secrets.keys),
        )?;
        if !settings.validation.schemas_dir.is_empty() {
            tracing::info!(patterns = ?pipeline.schemas.patterns(), "validation schemas loaded");
        }
        let store_label = database_label(&secrets.database_url);
        let (writer, writers) = BatchWriter::spawn(
            store.clone(),
            BatchOptions::from_settings(&settings.database),
        );
        // The spool backs Postgres only: SQLite is already a local file.
        let (spool, spool_writer) = match &store {
            Store::Postgres(_) if !settings.spool.path.is_empty() => {
                let path = std::path::Path::new(&settings.spool.path);
                let (spool, writer) = Spool::open(path, settings.spool.max_bytes)
                    .await
                    .with_context(|| format!("cannot open spool.path = {}", path.display()))?;
                (Some(spool), Some(writer))
            }
            _ => (None, None),
        };
        let (feed_watcher, feed) = FeedWatcher::new(store.clone());
        let state = AppState::new(Shared {
            gate: DeliveryGate {
                client_ip: ClientIpResolver::new(settings.network.trusted_proxies.clone()),
                allowlist,
                rate_limit,
                verifier: SignatureVerifier::new(&secrets.webhook),
            },
            ingest: Ingest {
                pipeline,
                commit: Committer {
                    store: store.clone(),
                    writer,
                    spool,
                    health: DatabaseHealth::default(),
                    commit_deadline: settings
                        .database
                        .acquire_timeout
                        .min(settings.server.request_timeout / 2),
                    quarantine_max_rows: settings.quarantine.max_rows,
                },
                max_timestamp_age: settings.webhook.max_timestamp_age,
            },
            settings,
            store,
            shutdown,
            schema,
        });
        let forwarding = Forwarding::new(
            &state.settings.forward,
            &state.store,
            state.ingest.pipeline.keys.clone(),
            feed.clone(),
        )
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
        Ok(Self {
            metrics,
            listener,
            admin_listener,
            store_label,
            api_listener,
            state,
            writers,
            spool_writer,
            caps,
            feed,
            feed_watcher,
            forwarding,
            pending_schema: None,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Address of the operator listener (`/metrics`).
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// Address of the Results API listener, when it is on.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The feed head: subscribe to follow the feed. The watcher that moves
    /// it runs while the application does (when anything follows it).
    pub fn feed(&self) -> FeedWatch {
        self.feed.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting,
    /// lets in-flight requests finish within `server.shutdown_timeout`, and
    /// returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            metrics,
            listener,
            admin_listener,
            store_label,
            api_listener,
            state,
            writers,
            spool_writer,
            caps,
            feed,
            feed_watcher,
            forwarding,
            pending_schema,
        } = self;
        let shutdown = state.shutdown.clone();
        let store = state.store.clone();
        let server = &state.settings.server;
        let opts = ServeOptions {
            header_read_timeout: server.request_timeout,
            shutdown_timeout: server.shutdown_timeout,
            max_connections: caps.public,
        };
        // One line says what this process runs on.
        let api_addr = api_listener.as_ref().and_then(|l| l.local_addr().ok());
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            store = %store_label,
            public = %listener.local_addr()?,
            admin = %admin_listener.local_addr()?,
            api = api_addr.map(tracing::field::display),
            path = %state.settings.webhook.path,
            "listening"
        );
        // Each listener's own lines (its drain on shutdown among them) say
        // which listener they are about.
        let admin = tokio::spawn(
            http::server::serve_router(
                admin_listener,
                http::admin::router(metrics.clone()),
                shutdown.clone(),
                ServeOptions {
                    max_connections: caps.admin,
                    ..opts
                },
            )
            .instrument(tracing::info_span!("serve", listener = "admin")),
        );
        let upkeep = tokio::spawn(crate::metrics::upkeep(metrics, shutdown.clone()));
        let limiter = state.gate.rate_limit.limiter();
        let pruner = tokio::spawn(rate_limit::prune_periodically(limiter, shutdown.clone()));
        // The watcher reads the head only for those who follow the feed:
        // without one, it would poll the store for nobody.
        let follows_feed = api_listener.is_some() || !forwarding.is_empty();
        let api = api_listener.map(|l| spawn_api(l, &state, feed.clone(), caps.api));
        let watcher = follows_feed.then_some(feed_watcher);
        let tasks = database_tasks::spawn(&state, watcher, forwarding, pending_schema);
        let public = http::PublicService::per_connection(state);
        http::server::serve(listener, public, shutdown, opts)
            .instrument(tracing::info_span!("serve", listener = "public"))
            .await;
        // Once the drained connections drop their queue senders, writers
        // commit what is queued (its requesters are waiting) and stop. After
        // a drain that timed out, connections may linger: bound the wait.
        let drain = async {
            if let Err(e) = writers.await {
                tracing::error!(error = %e, "batch writer failed");
            }
        };
        if tokio::time::timeout(WRITER_DRAIN_TIMEOUT, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                "batch writers still busy at exit; deliveries not yet answered are lost unless resent"
            );
        }
        if let Some(drainer) = tasks.drainer {
            if let Err(e) = drainer.await {
                tracing::error!(error = %e, "spool drainer failed");
            }
        }
        // Every spooled delivery was committed before it was answered; this
        // only lets the writer finish what is in flight.
        if let Some(writer) = spool_writer {
            if tokio::time::timeout(WRITER_DRAIN_TIMEOUT, writer)
                .await
                .is_err()
            {
                tracing::warn!("spool writer still busy at exit");
            }
        }
        for (name, task) in [
            ("admin listener", admin),
            ("metrics upkeep", upkeep),
            ("rate-limit pruner", pruner),
        ]
        .into_iter()
        .chain(api.map(|t| ("results api", t)))
        .chain(tasks.others)
        {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "background task failed");
            }
        }
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// What a failed database connection is reported under: which store,
/// never its password.
pub fn database_context(url: &SecretString) -> String {
    format!(
        "cannot use the database named by DATABASE_URL ({})",
        database_label(url)
    )
}

/// Starts the Results API on its own listener, with its own timeout and
/// connection cap (`max_connections`, from the budget).
fn spawn_api(
    listener: TcpListener,
    state: &AppState,
    feed: FeedWatch,
    max_connections: usize,
) -> tokio::task::JoinHandle<()> {
    let shutdown = state.shutdown.clone();
    let api = &state.settings.api;
    let opts = ServeOptions {
        header_read_timeout: api.request_timeout,
        shutdown_timeout: state.settings.server.shutdown_timeout,
        max_connections,
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| String::new(), |a| a.to_string());
    let router = http::api::router(state.clone(), ApiState::new(state, feed, addr));
    tokio::spawn(
        http::server::serve_router(listener, router, shutdown, opts)
            .instrument(tracing::info_span!("serve", listener = "api")),
    )
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
    token.cancel();
}
