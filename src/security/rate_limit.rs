//! Per-client-IP rate limit on the webhook route (governor, GCRA).
//!
//! Keyed by the resolved client IP, never by a header-reading extractor
//! (those believe any `X-Forwarded-For`). The webhook handler checks the
//! bucket itself, so no tower layer wraps the route: tower_governor's layer
//! cost a clone and drop of its state per request for a lookup that is one
//! call. The keyed state keeps every key it has seen, so a task prunes keys
//! whose bucket has refilled; memory then tracks the clients of the last
//! few seconds, not of all time. Limits are per replica: N replicas admit N
//! times the rate.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::config::RateLimitSettings;
use crate::error::AppError;

/// How often refilled keys are dropped from the limiter's state.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// The keyed limiter state, shared by the handler and the pruner.
pub type Limiter = Arc<
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>,
>;

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
    limiter: Limiter,
}

/// A client's standing after one request was counted against its bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The bucket's size (`x-ratelimit-limit`).
    pub limit: u32,
    /// Requests left before the client is refused (`x-ratelimit-remaining`).
    pub remaining: u32,
}

impl RateLimit {
    pub fn new(settings: &RateLimitSettings) -> anyhow::Result<Self> {
        let per_second = NonZeroU32::new(settings.per_second)
            .ok_or_else(|| anyhow::anyhow!("rate_limit.per_second must be at least 1"))?;
        let burst = NonZeroU32::new(settings.burst)
            .ok_or_else(|| anyhow::anyhow!("rate_limit.burst must be at least 1"))?;
        // `per_second` tokens a second, `burst` of them banked at most.
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let limiter = RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>();
        Ok(Self {
            limiter: Arc::new(limiter),
        })
    }

    pub fn limiter(&self) -> Limiter {
        self.limiter.clone()
    }

    /// Counts one request from `ip` against its bucket.
    pub fn check(&self, ip: IpAddr) -> Result<Admitted, AppError> {
        match self.limiter.check_key(&rate_key(ip)) {
            Ok(snapshot) => Ok(Admitted {
                limit: snapshot.quota().burst_size().get(),
                remaining: snapshot.remaining_burst_capacity(),
            }),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Err(AppError::RateLimited {
                    // A client told "0" (the floor of a sub-second wait)
                    // retries at once: round up.
                    retry_after_secs: wait.as_secs() + 1,
                    limit: not_until.quota().burst_size().get(),
                })
            }
        }
    }
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
    use std::net::Ipv4Addr;

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
