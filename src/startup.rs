//! The one start-up seam: build the application from settings, secrets and
//! an optional pre-bound listener; run it until the token is cancelled.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use secrecy::SecretString;

use crate::config::secrets::{database_label, Secrets};
use crate::config::Settings;
use crate::http::server::ServeOptions;
use crate::http::{self, AppState, Services};
use crate::redact::Redactor;
use crate::retention;
use crate::security::rate_limit::{self, RateLimit};
use crate::security::{Allowlist, ClientIpResolver, SignatureVerifier};
use crate::store::{BatchWriter, Store};

/// How long writers get to commit what is queued once serving has stopped.
const WRITER_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    /// Where events are stored, password hidden (for the start-up line).
    store_label: String,
    state: AppState,
    writers: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Connects to the database (waiting a bounded time), applies
    /// migrations and binds the listener (unless one is given).
    pub async fn build(
        settings: Settings,
        secrets: Secrets,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let store = Store::connect(&secrets.database_url, &settings.database)
            .await
            .with_context(|| database_context(&secrets.database_url))?;
        store.migrate().await.context("cannot apply migrations")?;
        Self::with_store(settings, secrets, store, listener, shutdown).await
    }

    /// Like [`Application::build`] over an existing, migrated store.
    pub async fn with_store(
        settings: Settings,
        secrets: Secrets,
        store: Store,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(settings.server.bind)
                .await
                .with_context(|| format!("cannot bind server.bind = {}", settings.server.bind))?,
        };
        let admin_listener = TcpListener::bind(settings.admin.bind)
            .await
            .with_context(|| format!("cannot bind admin.bind = {}", settings.admin.bind))?;
        let allowlist = Allowlist::new(settings.network.allowed_ips.clone());
        if allowlist.is_open() {
            tracing::warn!(
                "network.allowed_ips is empty: every IP may call the webhook route; \
                 list ImgGo's egress ranges there"
            );
        }
        let rate_limit = RateLimit::new(&settings.rate_limit)?;
        let store_label = database_label(&secrets.database_url);
        let (writer, writers) = BatchWriter::spawn(store.clone(), settings.batch_options());
        let state = AppState::new(Services {
            rate_limit,
            verifier: SignatureVerifier::new(&secrets.webhook),
            keys: secrets.keys,
            redactor: Redactor::new(&settings.redact, secrets.hash_key.expose()),
            client_ip: ClientIpResolver::new(settings.network.trusted_proxies.clone()),
            allowlist,
            settings,
            store,
            writer,
            shutdown,
        });
        Ok(Self {
            listener,
            admin_listener,
            store_label,
            state,
            writers,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Address of the operator listener (`/metrics`).
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves until the shutdown token is cancelled, then stops accepting,
    /// lets in-flight requests finish within `server.shutdown_timeout`, and
    /// returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            listener,
            admin_listener,
            store_label,
            state,
            writers,
        } = self;
        let shutdown = state.shutdown.clone();
        let store = state.store.clone();
        let server = &state.settings.server;
        let opts = ServeOptions {
            header_read_timeout: server.request_timeout,
            shutdown_timeout: server.shutdown_timeout,
            max_connections: server.max_connections as usize,
        };
        // One line says what this process runs on. The Results API
        // listener's address joins it (as `api`) once `api.bind` exists.
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            store = %store_label,
            public = %listener.local_addr()?,
            admin = %admin_listener.local_addr()?,
            path = %state.settings.webhook.path,
            "listening"
        );
        let metrics = crate::metrics::install();
        // Each listener's own lines (its drain on shutdown among them) say
        // which listener they are about.
        let admin = tokio::spawn(
            http::server::serve_router(
                admin_listener,
                http::admin::router(metrics.clone()),
                shutdown.clone(),
                opts,
            )
            .instrument(tracing::info_span!("serve", listener = "admin")),
        );
        let upkeep = tokio::spawn(crate::metrics::upkeep(metrics, shutdown.clone()));
        let limiter = state.rate_limit.limiter();
        let pruner = tokio::spawn(rate_limit::prune_periodically(limiter, shutdown.clone()));
        let retention = tokio::spawn(retention::run(
            store.clone(),
            state.settings.retention.clone(),
            retention::FIRST_PASS_DELAY.min(state.settings.retention.purge_interval),
            shutdown.clone(),
        ));
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
                "batch writers still busy at exit; unanswered deliveries will be retried by ImgGo"
            );
        }
        for (name, task) in [
            ("admin listener", admin),
            ("metrics upkeep", upkeep),
            ("rate-limit pruner", pruner),
            ("retention", retention),
        ] {
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
