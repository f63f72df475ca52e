//! When a failed step runs again: exponential backoff with jitter, computed by `backon`, then
//! persisted as the job's `run_at` by the step runner (never slept in memory, so a restart
//! keeps the schedule).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// A step's retry schedule. `max_attempts` counts every execution, the first included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// Delay after the first failure, before jitter.
    pub base: Duration,
    /// Cap on the un-jittered delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failed_attempt`-th execution failed (1-based), or `None` when that
    /// was the last allowed attempt.
    ///
    /// The un-jittered delay is `min(base · 2^(k-1), max)`; jitter adds up to the same amount
    /// again, so the wait lies in `[d, 2d)`. Jitter spreads a burst of failures (a provider
    /// outage) so that their retries do not arrive together.
    ///
    /// ```
    /// use std::time::Duration;
    /// use leadflow::retry::RetryPolicy;
    /// let p = RetryPolicy { max_attempts: 3, base: Duration::from_secs(2), max: Duration::from_secs(60) };
    /// let d = p.delay_after(2, 7).unwrap();
    /// assert!(d >= Duration::from_secs(4) && d < Duration::from_secs(8));
    /// assert_eq!(p.delay_after(3, 7), None);
    /// ```
    pub fn delay_after(&self, failed_attempt: u32, seed: u64) -> Option<Duration> {
        if failed_attempt == 0 || failed_attempt >= self.max_attempts {
            return None;
        }
        ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .with_jitter_seed(seed)
            .with_max_times(failed_attempt as usize)
            .build()
            .nth(failed_attempt as usize - 1)
    }

    /// The bounds `[d, 2d)` of [`Self::delay_after`], for callers that show or check them.
    pub fn delay_bounds(&self, failed_attempt: u32) -> (Duration, Duration) {
        let exp = failed_attempt.saturating_sub(1).min(30);
        let d = self.base.saturating_mul(1u32 << exp).min(self.max);
        (d, d.saturating_mul(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn delays_double_within_their_jitter_bounds() {
        let p = policy();
        for seed in 0..200 {
            for k in 1..6 {
                let d = p.delay_after(k, seed).unwrap();
                let (lo, hi) = p.delay_bounds(k);
                assert!(
                    d >= lo && d < hi,
                    "attempt {k} seed {seed}: {d:?} not in [{lo:?},{hi:?})"
                );
            }
        }
        assert_eq!(p.delay_bounds(1).0, Duration::from_secs(1));
        assert_eq!(p.delay_bounds(3).0, Duration::from_secs(4));
        assert_eq!(
            p.delay_bounds(5).0,
            Duration::from_secs(10),
            "capped at max"
        );
    }

    #[test]
    fn the_last_attempt_has_no_retry() {
        let p = policy();
        assert!(p.delay_after(5, 1).is_some());
        assert_eq!(p.delay_after(6, 1), None);
        assert_eq!(p.delay_after(60, 1), None);
        assert_eq!(p.delay_after(0, 1), None);
    }

    #[test]
    fn jitter_spreads_retries() {
        let p = policy();
        let mut seen: Vec<Duration> = (0..50).filter_map(|s| p.delay_after(2, s)).collect();
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 10, "jitter should vary with the seed");
    }
}
