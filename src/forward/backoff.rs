//! The wait between a destination's retries (CONTRACT §11): exponential
//! from 1 s to `max_backoff`, with jitter, `Retry-After` honoured; any
//! success starts it again at 1 s.

use std::time::Duration;

/// Failures in a row, and the wait they call for: 1 s doubling up to
/// `max_backoff`, the upper half jittered, never under 1 s; a
/// `Retry-After` (capped at `max_backoff`) when it asks for longer. Any
/// success starts it again at 1 s.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Something was confirmed (or refused for good): the destination works.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// One more failure; the wait before the next try. `jitter` is drawn
    /// from `0.5..=1.0` (a parameter, so tests need no randomness).
    pub fn failed(
        &mut self,
        max_backoff: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = (self.failures - 1).min(30);
        let base = Duration::from_secs(1u64 << exp).min(max_backoff);
        let wait = base
            .mul_f64(jitter.clamp(0.5, 1.0))
            .max(Duration::from_secs(1));
        match retry_after {
            Some(asked) => wait.max(asked.min(max_backoff)),
            None => wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_to_the_cap_and_resets_after_a_success() {
        let max = Duration::from_secs(60);
        let secs = |d: Duration| d.as_secs_f64();
        let mut b = Backoff::default();
        // Full jitter (1.0): 1, 2, 4, ... capped at max.
        let full: Vec<f64> = (0..9).map(|_| secs(b.failed(max, None, 1.0))).collect();
        assert_eq!(full, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]);
        // A success: the next failure waits 1 s again.
        b.succeeded();
        assert_eq!(secs(b.failed(max, None, 1.0)), 1.0);
        // Half jitter: the lower bound of each step, never under 1 s.
        let mut b = Backoff::default();
        let low: Vec<f64> = (0..5).map(|_| secs(b.failed(max, None, 0.5))).collect();
        assert_eq!(low, [1.0, 1.0, 2.0, 4.0, 8.0]);
        // Jitter outside its range is held in it; many failures never overflow.
        let mut b = Backoff::default();
        for _ in 0..100 {
            let w = b.failed(max, None, 7.0);
            assert!(w >= Duration::from_secs(1) && w <= max, "{w:?}");
        }
        // Retry-After wins when longer, capped at max_backoff.
        let mut b = Backoff::default();
        assert_eq!(
            b.failed(max, Some(Duration::from_secs(45)), 1.0),
            Duration::from_secs(45)
        );
        assert_eq!(b.failed(max, Some(Duration::from_secs(600)), 1.0), max);
    }
}
