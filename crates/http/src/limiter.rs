//! Client-side token buckets that mirror the destination's own limits, so that a sync runs at
//! the destination's pace instead of finding it by collecting 429s.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

/// Requests per second, as data. `None` means "no limit" (benchmarks against an emulator).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPolicy {
    pub global_per_second: Option<u32>,
    pub per_endpoint_per_second: Option<u32>,
    /// Endpoints with a limit of their own (search: 20/s on Stripe).
    pub endpoint_overrides: HashMap<String, u32>,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        RateLimitPolicy {
            global_per_second: Some(25),
            per_endpoint_per_second: Some(25),
            endpoint_overrides: HashMap::new(),
        }
    }
}

impl RateLimitPolicy {
    pub fn unlimited() -> Self {
        RateLimitPolicy {
            global_per_second: None,
            per_endpoint_per_second: None,
            endpoint_overrides: HashMap::new(),
        }
    }
}

pub struct RateLimiters {
    policy: RateLimitPolicy,
    global: Option<DefaultDirectRateLimiter>,
    per_endpoint: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
}

impl RateLimiters {
    pub fn new(policy: &RateLimitPolicy) -> Self {
        RateLimiters {
            policy: policy.clone(),
            global: policy.global_per_second.map(limiter),
            per_endpoint: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until both the endpoint's bucket and the global bucket have a token.
    pub async fn wait_for(&self, endpoint: &str) {
        if let Some(endpoint_limiter) = self.endpoint_limiter(endpoint) {
            endpoint_limiter.until_ready().await;
        }
        if let Some(global) = &self.global {
            global.until_ready().await;
        }
    }

    fn endpoint_limiter(&self, endpoint: &str) -> Option<Arc<DefaultDirectRateLimiter>> {
        let rate = self
            .policy
            .endpoint_overrides
            .get(endpoint)
            .copied()
            .or(self.policy.per_endpoint_per_second)?;
        let mut map = self.per_endpoint.lock().expect("limiter map poisoned");
        Some(
            map.entry(endpoint.to_string())
                .or_insert_with(|| Arc::new(limiter(rate)))
                .clone(),
        )
    }
}

/// A bucket that refills at `per_second` and holds a fifth of a second's worth, so a burst at
/// start-up cannot overrun a server bucket that another client already drained a little.
fn limiter(per_second: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_second.max(1)).expect("max(1) is non-zero");
    let burst = NonZeroU32::new((per_second / 5).max(1)).expect("max(1) is non-zero");
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn endpoint_bucket_paces_requests() {
        let limiters = RateLimiters::new(&RateLimitPolicy {
            global_per_second: None,
            per_endpoint_per_second: Some(50),
            endpoint_overrides: HashMap::new(),
        });
        let started = Instant::now();
        for _ in 0..30 {
            limiters.wait_for("POST /v1/customers").await;
        }
        // 30 tokens at 50/s with a burst of 10: at least (30 - 10) / 50 = 0.4 s.
        assert!(
            started.elapsed() >= Duration::from_millis(380),
            "{:?}",
            started.elapsed()
        );
        // Another endpoint has its own bucket and is not slowed by the first.
        let other = Instant::now();
        limiters.wait_for("GET /v1/customers").await;
        assert!(other.elapsed() < Duration::from_millis(50));
    }
}
