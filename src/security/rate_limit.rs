//! Per-client-IP rate limit on the webhook route (tower-governor, GCRA).
//!
//! Keyed by the resolved [`ClientIp`], never by tower-governor's own header
//! extractors (they believe any `X-Forwarded-For`). The keyed state keeps
//! every key it has seen, so a task prunes keys whose bucket has refilled;
//! memory then tracks the clients of the last few seconds, not of all time.
//! Limits are per replica: N replicas admit N times the rate.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::response::IntoResponse;
use governor::middleware::StateInformationMiddleware;
use tokio_util::sync::CancellationToken;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder, SharedRateLimiter};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use super::ClientIp;
use crate::config::RateLimitSettings;
use crate::error::AppError;

/// How often refilled keys are dropped from the limiter's state.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

pub type Limiter = SharedRateLimiter<IpAddr, StateInformationMiddleware>;

/// Keys the limiter by the resolved client IP. Infallible: a request with
/// no resolved IP (impossible behind our router) shares one bucket.
#[derive(Clone, Copy, Debug)]
pub struct ClientIpKey;

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn name(&self) -> &'static str {
        "client IP"
    }

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        let ip = req
            .extensions()
            .get::<ClientIp>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0);
        Ok(rate_key(ip))
    }
}

/// The bucket a client IP draws from: its IPv4 address, or its IPv6 /64.
/// One IPv6 host usually owns a whole /64, so per-address buckets would give
/// it 2^64 of them (and grow the limiter's memory with each).
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
    }
}

pub struct RateLimit {
    config: Arc<GovernorConfig<ClientIpKey, StateInformationMiddleware>>,
}

impl RateLimit {
    pub fn new(settings: &RateLimitSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.per_second > 0,
            "rate_limit.per_second must be at least 1"
        );
        anyhow::ensure!(settings.burst > 0, "rate_limit.burst must be at least 1");
        // `per_second(n)` in tower-governor means one token every n seconds;
        // the period between tokens is what it takes.
        let period_ns = (1_000_000_000 / u64::from(settings.per_second)).max(1);
        let config = GovernorConfigBuilder::default()
            .per_nanosecond(period_ns)
            .burst_size(settings.burst)
            .key_extractor(ClientIpKey)
            .use_headers()
            .finish()
            .ok_or_else(|| anyhow::anyhow!("rate_limit: invalid per_second/burst"))?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    pub fn limiter(&self) -> Limiter {
        self.config.limiter().clone()
    }

    /// The layer for the webhook route; rejections use the contract's shape.
    pub fn layer(&self) -> GovernorLayer<ClientIpKey, StateInformationMiddleware, Body> {
        GovernorLayer::new(self.config.clone()).error_handler(rejected)
    }
}

fn rejected(error: GovernorError) -> Response<Body> {
    let (wait_secs, headers) = match error {
        GovernorError::TooManyRequests { wait_time, headers } => (wait_time, headers),
        GovernorError::UnableToExtractKey | GovernorError::Other { .. } => (0, None),
    };
    // governor floors the wait to whole seconds (0 at 50/s); a client told
    // "0" retries at once, so round up.
    let retry_after_secs = wait_secs + 1;
    let mut res = AppError::RateLimited { retry_after_secs }.into_response();
    for (name, value) in headers.iter().flatten() {
        if name.as_str().starts_with("x-ratelimit-") {
            res.headers_mut().insert(name.clone(), value.clone());
        }
    }
    res.headers_mut()
        .insert("x-ratelimit-after", retry_after_secs.into());
    res
}

/// Drops refilled keys every [`PRUNE_INTERVAL`] until `shutdown`.
pub async fn prune_periodically(limiter: Limiter, shutdown: CancellationToken) {
    prune_every(limiter, PRUNE_INTERVAL, shutdown).await;
}

async fn prune_every(limiter: Limiter, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => prune(&limiter),
            () = shutdown.cancelled() => return,
        }
    }
}

fn prune(limiter: &Limiter) {
    limiter.retain_recent();
    limiter.shrink_to_fit();
    metrics::gauge!(crate::metrics::RATE_LIMITER_KEYS).set(limiter.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(per_second: u32, burst: u32) -> RateLimitSettings {
        RateLimitSettings { per_second, burst }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn burst_then_refuse_per_key() {
        let rl = RateLimit::new(&settings(1, 3)).unwrap();
        let l = rl.limiter();
        for _ in 0..3 {
            assert!(l.check_key(&ip(1)).is_ok());
        }
        assert!(
            l.check_key(&ip(1)).is_err(),
            "fourth request inside the burst window"
        );
        assert!(
            l.check_key(&ip(2)).is_ok(),
            "another client has its own bucket"
        );
    }

    #[test]
    fn per_second_means_per_second() {
        // 50/s with burst 1: the bucket refills every 20 ms, not every 50 s.
        let rl = RateLimit::new(&settings(50, 1)).unwrap();
        let l = rl.limiter();
        assert!(l.check_key(&ip(1)).is_ok());
        let wait = match l.check_key(&ip(1)) {
            Err(not_until) => not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            )),
            Ok(_) => panic!("second request must wait"),
        };
        assert!(wait <= Duration::from_millis(20), "{wait:?}");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(c));
        assert_eq!(rate_key(ip(5)), ip(5), "IPv4 stays per address");
    }

    #[test]
    fn zero_values_are_refused() {
        assert!(RateLimit::new(&settings(0, 1)).is_err());
        assert!(RateLimit::new(&settings(1, 0)).is_err());
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_stream_of_distinct_ips() {
        // 1000/s, burst 1: a key's bucket is full again 1 ms after its request.
        let rl = RateLimit::new(&settings(1000, 1)).unwrap();
        let l = rl.limiter();
        let token = CancellationToken::new();
        let pruner = tokio::spawn(prune_every(
            l.clone(),
            Duration::from_millis(5),
            token.clone(),
        ));
        for round in 0..5u32 {
            for n in 0..20_000 {
                let _ = l.check_key(&ip(round * 20_000 + n));
            }
            // Wait (bounded) for the pruner to catch up with this round.
            let drained = tokio::time::timeout(Duration::from_secs(5), async {
                while !l.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(
                drained.is_ok(),
                "round {round}: {} keys still held",
                l.len()
            );
        }
        token.cancel();
        pruner.await.unwrap();
    }
}
