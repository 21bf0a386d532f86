//! Stripe's rate limiters as token buckets: one global bucket per mode and one per endpoint.

use std::collections::HashMap;
use std::time::Instant;

use crate::config::RateLimits;

/// Which limiter refused a request; sent as `Stripe-Rate-Limited-Reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitedReason {
    GlobalRate,
    EndpointRate,
}

impl LimitedReason {
    pub(crate) fn header_value(self) -> &'static str {
        match self {
            LimitedReason::GlobalRate => "global-rate",
            LimitedReason::EndpointRate => "endpoint-rate",
        }
    }
}

/// All buckets, refilled lazily when a request looks at them.
pub(crate) struct RateLimiter {
    limits: RateLimits,
    buckets: HashMap<(bool, Option<&'static str>), TokenBucket>,
}

impl RateLimiter {
    pub(crate) fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter {
            limits,
            buckets: HashMap::new(),
        }
    }

    pub(crate) fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// New limits start with full buckets.
    pub(crate) fn set_limits(&mut self, limits: RateLimits) {
        self.limits = limits;
        self.buckets.clear();
    }

    /// Takes a token from the global bucket of the key's mode, then from the endpoint's bucket.
    pub(crate) fn admit(
        &mut self,
        livemode: bool,
        endpoint: &'static str,
        is_search: bool,
        now: Instant,
    ) -> Result<(), LimitedReason> {
        if !self.limits.enabled {
            return Ok(());
        }
        let global_rate = if livemode {
            self.limits.global_live_per_sec
        } else {
            self.limits.global_test_per_sec
        };
        let endpoint_rate = if is_search {
            self.limits.search_per_sec
        } else {
            self.limits.endpoint_per_sec
        };
        let global = self
            .buckets
            .entry((livemode, None))
            .or_insert_with(|| TokenBucket::full(global_rate, now));
        if !global.take(now) {
            return Err(LimitedReason::GlobalRate);
        }
        let per_endpoint = self
            .buckets
            .entry((livemode, Some(endpoint)))
            .or_insert_with(|| TokenBucket::full(endpoint_rate, now));
        if !per_endpoint.take(now) {
            return Err(LimitedReason::EndpointRate);
        }
        Ok(())
    }
}

/// Holds up to `rate` tokens and gains `rate` per second.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn full(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(rate),
            rate: f64::from(rate),
            refilled_at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_rate_then_rate_per_second() {
        let limits = RateLimits {
            global_test_per_sec: 100,
            endpoint_per_sec: 3,
            ..RateLimits::default()
        };
        let mut limiter = RateLimiter::new(limits);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                limiter.admit(false, "GET /v1/customers", false, start),
                Ok(())
            );
        }
        assert_eq!(
            limiter.admit(false, "GET /v1/customers", false, start),
            Err(LimitedReason::EndpointRate)
        );
        // Another endpoint has its own bucket.
        assert_eq!(
            limiter.admit(false, "POST /v1/customers", false, start),
            Ok(())
        );
        let later = start + Duration::from_millis(400);
        assert_eq!(
            limiter.admit(false, "GET /v1/customers", false, later),
            Ok(())
        );
    }

    #[test]
    fn global_bucket_is_per_mode_and_checked_first() {
        let limits = RateLimits {
            global_test_per_sec: 2,
            global_live_per_sec: 5,
            endpoint_per_sec: 100,
            ..RateLimits::default()
        };
        let mut limiter = RateLimiter::new(limits);
        let now = Instant::now();
        assert_eq!(limiter.admit(false, "a", false, now), Ok(()));
        assert_eq!(limiter.admit(false, "b", false, now), Ok(()));
        assert_eq!(
            limiter.admit(false, "c", false, now),
            Err(LimitedReason::GlobalRate)
        );
        assert_eq!(limiter.admit(true, "c", false, now), Ok(()));
    }

    #[test]
    fn disabled_limits_admit_everything() {
        let mut limiter = RateLimiter::new(RateLimits {
            global_test_per_sec: 0,
            ..RateLimits::disabled()
        });
        assert_eq!(limiter.admit(false, "a", false, Instant::now()), Ok(()));
    }
}
