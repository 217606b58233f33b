//! Forwarding (CONTRACT §11): every stored event, and every erasure notice,
//! pushed to the destinations of `[forward.NAME]`, confirmed, in feed
//! order, never lost.
//!
//! - [`publish`]: the one small trait every destination kind implements
//!   (publish a batch, say what was confirmed); one file per kind:
//!   [`nats`] (JetStream), [`amqp`] (RabbitMQ), [`redis`] (Streams),
//!   [`http`] (Standard Webhooks); [`endpoint`] keeps URL credentials out
//!   of what the broker kinds log.
//! - [`relay`]: one destination's loop over the feed, its position, dead
//!   letters, backoff and pause.
//! - [`shared`]: what one relay read of the feed, opened, serves the
//!   replica's other relays (Postgres), never past an erasure.
//! - [`lease`]: one replica at a time forwards a destination.
//!
//! Forwarding runs beside the webhook route and shares nothing with it but
//! the database: a destination that is down only grows its own lag. On
//! Postgres the relays run on threads of their own at a lower CPU priority
//! ([`RELAY_NICE`]) with their own connections, so a busy machine serves
//! the webhook route first and forwards with what is left (the lag grows
//! under a load the machine cannot carry both ways, and shrinks after).

pub mod amqp;
pub mod backoff;
pub mod endpoint;
pub mod http;
pub mod lease;
pub mod nats;
pub mod notice;
pub mod publish;
pub mod redis;
pub mod relay;
mod replay;
pub mod shared;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::forward::{DestinationSettings, Destinations, Kind, Template};
use crate::crypto::KeyRing;
use crate::feed::{CursorForm, FeedWatch};
use crate::store::forward::Filters;
use crate::store::Store;
use publish::Publisher;
use relay::Relay;

/// How often each destination's lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(2);
/// How far the relays' threads' nice value is above the server's (capped
/// at 19, the lowest priority): on a busy machine the kernel gives such a
/// thread about a tenth of a route thread's share.
pub const RELAY_NICE: i32 = 10;
/// The name of the relays' threads (`/proc/PID/task/*/comm`).
pub const RELAY_THREAD: &str = "imggo-forward";

/// The destinations, checked and ready to start.
pub struct Forwarding {
    destinations: Vec<Relay>,
}

impl Forwarding {
    /// Builds a relay (and its publisher) per destination; a kind that
    /// cannot be built stops start-up with the key named. Nothing connects
    /// yet: an unreachable destination is retried, never fatal.
    pub fn new(
        destinations: &Destinations,
        store: &Store,
        keys: Arc<KeyRing>,
        feed: FeedWatch,
    ) -> Result<Self, String> {
        let mut relays = Vec::new();
        // This replica, as the leases (and the position's fence) know it.
        let holder = uuid::Uuid::new_v4().to_string();
        let shared = Arc::new(shared::SharedFeed::for_relays(destinations.len()));
        for (name, settings) in destinations {
            // Every series at zero before the first scrape.
            crate::metrics::register_forward(name);
            let publisher =
                publisher(settings).map_err(|why| format!("forward.{name}.kind: {why}"))?;
            let template = template(settings)
                .transpose()
                .map_err(|why| format!("forward.{name}: {why}"))?;
            relays.push(Relay {
                name: name.clone(),
                settings: settings.clone(),
                template,
                store: store.clone(),
                keys: keys.clone(),
                form: CursorForm::of(store),
                publisher,
                feed: feed.clone(),
                shared: shared.clone(),
                backoff: relay::Backoff::default(),
                holder: holder.clone(),
                state: None,
                replay_checked: None,
            });
        }
        Ok(Self {
            destinations: relays,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    /// Runs every destination until `shutdown`: registers them, keeps the
    /// leases, forwards what this replica holds, and measures every lag.
    pub async fn run(self, store: Store, shutdown: CancellationToken) {
        if self.destinations.is_empty() {
            return;
        }
        let names: Vec<String> = self.destinations.iter().map(|r| r.name.clone()).collect();
        for relay in &self.destinations {
            let url = relay.settings.url.label();
            let kind = relay.settings.kind.as_str();
            tracing::info!(destination = %relay.name, kind, url = %url, "forwarding configured");
        }
        // The database may not answer yet (Postgres with a spool): wait.
        let valid: Vec<String> = self
            .destinations
            .iter()
            .map(|r| String::from(r.settings.valid))
            .collect();
        let filters: Vec<Filters<'_>> = self
            .destinations
            .iter()
            .zip(&valid)
            .map(|(r, valid)| Filters {
                name: &r.name,
                events: &r.settings.events,
                valid,
            })
            .collect();
        while let Err(e) = store.forward_register(&filters).await {
            tracing::warn!(error = %e, "cannot register the forwarding destinations yet; retrying");
            tokio::select! {
                () = tokio::time::sleep(lease::TICK) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let holder = self
            .destinations
            .first()
            .map(|r| r.holder.clone())
            .unwrap_or_default();
        let (held, leases) = lease::spawn(store.clone(), holder, names.clone(), shutdown.clone());
        drop(filters);
        // The lag is measured on a connection of its own: never one the
        // batch writers or the API wait for under load.
        let measuring = match &store {
            Store::Postgres(pg) => Store::Postgres(pg.own_pool(1)),
            Store::Sqlite(_) => store.clone(),
        };
        let lag = tokio::spawn(measure_lag(measuring, names, shutdown.clone()));
        // SQLite's one connection is shared with ingest: a relay holding it
        // while its thread waits for the CPU would hold ingest up, so
        // SQLite's relays stay on the server's threads.
        let apart = match &store {
            Store::Postgres(pg) => match relay_runtime() {
                Ok(runtime) => Some((pg.clone(), runtime)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the relays' own threads; forwarding on the server's");
                    None
                }
            },
            Store::Sqlite(_) => None,
        };
        // The runtime is held until every relay has returned (or this
        // future is dropped).
        let (_runtime, relays): (Option<RelayRuntime>, Vec<_>) = match apart {
            Some((pg, runtime)) => {
                // Their own pool, made in their runtime (its connections
                // and their I/O belong to the relays' threads).
                let own = {
                    let _inside = runtime.enter();
                    let connections = u32::try_from(self.destinations.len()).unwrap_or(u32::MAX);
                    Store::Postgres(pg.own_pool(connections))
                };
                let relays = self
                    .destinations
                    .into_iter()
                    .map(|mut relay| {
                        relay.store = own.clone();
                        runtime.spawn(supervise(relay, held.clone(), shutdown.clone()))
                    })
                    .collect();
                (Some(RelayRuntime(Some(runtime))), relays)
            }
            _ => (
                None,
                self.destinations
                    .into_iter()
                    .map(|relay| tokio::spawn(supervise(relay, held.clone(), shutdown.clone())))
                    .collect(),
            ),
        };
        for task in relays.into_iter().chain([leases, lag]) {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a forwarding task failed");
            }
        }
    }
}

/// The relays' runtime, shut down without blocking when dropped: dropping
/// a runtime blocks, which a task of the server's runtime may not do.
struct RelayRuntime(Option<tokio::runtime::Runtime>);

impl Drop for RelayRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The relays' runtime: [`RELAY_THREAD`] threads at [`RELAY_NICE`].
fn relay_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // Read once, here: threads the runtime starts later (its blocking
    // pool) are started by relay threads already lowered, and would go
    // lower again.
    let nice = rustix::process::getpriority_process(None)
        .map_or(RELAY_NICE, |n| n.saturating_add(RELAY_NICE).min(19));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RELAY_THREAD)
        .on_thread_start(move || {
            // Per thread on Linux (`who` 0 is the calling thread). Lowering
            // a priority needs no privilege; if it fails anyway, forwarding
            // still runs, only at the route's priority.
            if let Err(e) = rustix::process::setpriority_process(None, nice) {
                tracing::warn!(error = %e, "cannot lower the relays' CPU priority");
            }
        })
        .enable_all()
        .build()
}

/// The publisher of a destination's kind.
fn publisher(settings: &DestinationSettings) -> Result<Box<dyn Publisher>, String> {
    let url = settings.url.expose().to_owned();
    match settings.kind {
        Kind::Http => {
            let keys = settings
                .secret
                .as_ref()
                .and_then(|s| s.keys())
                .ok_or("an http destination needs `secret`")?;
            let publisher = http::HttpPublisher::new(url, keys, settings.timeout)?;
            Ok(Box::new(publisher))
        }
        Kind::Nats => Ok(Box::new(nats::NatsPublisher::new(url, settings.timeout))),
        Kind::Rabbitmq => Ok(Box::new(amqp::AmqpPublisher::new(
            url,
            settings.exchange.clone().unwrap_or_default(),
            settings.timeout,
        ))),
        Kind::Redis => Ok(Box::new(redis::RedisPublisher::new(
            url,
            settings.maxlen.unwrap_or(0),
            settings.timeout,
        ))),
    }
}

/// The destination's target template, if its kind has one.
fn template(settings: &DestinationSettings) -> Option<Result<Template, String>> {
    let text = match settings.kind {
        Kind::Nats => settings.subject.as_deref(),
        Kind::Rabbitmq => settings.routing_key.as_deref(),
        Kind::Redis => settings.stream.as_deref(),
        Kind::Http => None,
    }?;
    Some(Template::parse(text))
}

/// Runs `relay` whenever this replica holds its lease.
async fn supervise(mut relay: Relay, mut held: lease::Held, shutdown: CancellationToken) {
    loop {
        let holds = |h: &std::collections::BTreeSet<String>| h.contains(&relay.name);
        tokio::select! {
            r = held.wait_for(holds) => if r.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let name = relay.name.clone();
        let mut watch = held.clone();
        // Dropping the relay mid-batch loses nothing: its position moves
        // only after a confirmation is recorded.
        tokio::select! {
            () = relay.run(&shutdown) => return,
            () = shutdown.cancelled() => return,
            _ = watch.wait_for(|h| !h.contains(&name)) => {
                tracing::info!(destination = %name, "lease lost: this replica stops forwarding the destination");
            }
        }
    }
}

/// Measures each destination's lag from the database (whichever replica
/// forwards it), for `imggo_forward_lag_events` and `_seconds`.
async fn measure_lag(store: Store, names: Vec<String>, shutdown: CancellationToken) {
    use crate::metrics as m;
    loop {
        for name in &names {
            let lag = async {
                let state = store.forward_state(name).await?.unwrap_or_default();
                store.forward_lag(state.position).await
            };
            if let Ok((events, oldest)) = lag.await {
                let seconds = oldest.map_or(0.0, |t| {
                    (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
                });
                metrics::gauge!(m::FORWARD_LAG_EVENTS, "destination" => name.clone())
                    .set(events as f64);
                metrics::gauge!(m::FORWARD_LAG_SECONDS, "destination" => name.clone()).set(seconds);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LAG_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
