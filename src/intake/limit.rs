//! Per-hook rate limiting of the intake (`governor`): a token over its hook's requests per
//! minute gets 429 with `Retry-After`. The limit is the hook's own, or the service default.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub struct RateLimits {
    default_per_minute: u32,
    by_hook: Mutex<HashMap<i64, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl RateLimits {
    pub fn new(default_per_minute: u32) -> Self {
        RateLimits {
            default_per_minute,
            by_hook: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` when the hook may send another request now; otherwise how long to wait.
    pub fn check(&self, hook_id: i64, per_minute: Option<i32>) -> Result<(), Duration> {
        let per_minute = per_minute
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(self.default_per_minute);
        let Some(n) = NonZeroU32::new(per_minute) else {
            return Ok(()); // 0: no limit
        };
        let limiter = {
            let mut map = self.by_hook.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(hook_id).or_insert_with(|| {
                (
                    per_minute,
                    Arc::new(RateLimiter::direct(Quota::per_minute(n))),
                )
            });
            if entry.0 != per_minute {
                // The hook's limit was changed: start afresh with the new quota.
                *entry = (
                    per_minute,
                    Arc::new(RateLimiter::direct(Quota::per_minute(n))),
                );
            }
            entry.1.clone()
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hook_has_its_own_budget() {
        let limits = RateLimits::new(100);
        for _ in 0..3 {
            assert!(limits.check(1, Some(3)).is_ok());
        }
        let wait = limits
            .check(1, Some(3))
            .expect_err("the fourth is over the limit");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            limits.check(2, Some(3)).is_ok(),
            "another hook is not affected"
        );
        assert!(
            limits.check(1, Some(10)).is_ok(),
            "a raised limit applies at once"
        );
        assert!(
            RateLimits::new(0).check(3, None).is_ok(),
            "0 means no limit"
        );
    }
}
