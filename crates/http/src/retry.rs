//! When to retry and how long to wait: one policy, as data, for every destination.

use rand::Rng;
use reqwest::header::HeaderMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time has passed since the first attempt.
    pub max_total: Duration,
    /// An API's own way of saying "busy, ask again" that the status rules of [`classify`] do
    /// not know, read from the status and the body: BigQuery answers rate limiting with
    /// `403 rateLimitExceeded`, not 429.
    pub transient_answer: Option<fn(status: u16, body: &str) -> bool>,
}

impl Default for RetryPolicy {
    /// More patient than the official Stripe clients (2 retries): a bulk sync would rather wait
    /// a minute than report a row as failed because of a brief incident.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_total: Duration::from_secs(120),
            transient_answer: None,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": min(base·2^(n-2), max) × a random factor in
    /// [0.5, 1), as Stripe's clients do. `attempt` is the number of the attempt about to start (≥ 2).
    pub fn delay_before_attempt(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let exponent = attempt.saturating_sub(2).min(20);
        let uncapped = self.base_delay.saturating_mul(1u32 << exponent);
        let capped = uncapped.min(self.max_delay);
        capped.mul_f64(rng.random_range(0.5..1.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// A success, or an answer that will not change if asked again.
    Final,
    /// Transient: ask again with the same idempotency key.
    Retry,
}

/// Stripe's rules, which suit most APIs: `Stripe-Should-Retry` wins; otherwise 409 (conflict,
/// idempotency key in use), 429 (rate limit, lock timeout) and 5xx are transient; every other
/// status is final.
pub fn classify(status: u16, headers: &HeaderMap) -> Classification {
    match headers
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
    {
        Some("true") => return Classification::Retry,
        Some("false") => return Classification::Final,
        _ => {}
    }
    match status {
        409 | 429 | 500..=599 => Classification::Retry,
        _ => Classification::Final,
    }
}

/// [`classify`], then the policy's `transient_answer` for a failure the status rules call
/// final.
pub fn classify_answer(
    policy: &RetryPolicy,
    status: u16,
    headers: &HeaderMap,
    body: &str,
) -> Classification {
    match classify(status, headers) {
        Classification::Final
            if !(200..300).contains(&status)
                && policy
                    .transient_answer
                    .is_some_and(|is_transient| is_transient(status, body)) =>
        {
            Classification::Retry
        }
        classification => classification,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn classification_follows_stripe() {
        let none = HeaderMap::new();
        for status in [200, 201, 400, 401, 402, 403, 404] {
            assert_eq!(classify(status, &none), Classification::Final, "{status}");
        }
        for status in [409, 429, 500, 502, 503, 504] {
            assert_eq!(classify(status, &none), Classification::Retry, "{status}");
        }
        let mut never = HeaderMap::new();
        never.insert("stripe-should-retry", "false".parse().unwrap());
        assert_eq!(classify(503, &never), Classification::Final);
        let mut always = HeaderMap::new();
        always.insert("stripe-should-retry", "true".parse().unwrap());
        assert_eq!(classify(400, &always), Classification::Retry);
    }

    #[test]
    fn an_apis_own_busy_answer_is_retried_when_the_policy_knows_it() {
        let none = HeaderMap::new();
        let busy_body = r#"{"error": {"errors": [{"reason": "rateLimitExceeded"}]}}"#;
        let knows_busy = RetryPolicy {
            transient_answer: Some(|status, body| status == 403 && body.contains("rateLimit")),
            ..RetryPolicy::default()
        };
        assert_eq!(
            classify_answer(&knows_busy, 403, &none, busy_body),
            Classification::Retry
        );
        assert_eq!(
            classify_answer(&knows_busy, 403, &none, "accessDenied"),
            Classification::Final
        );
        assert_eq!(
            classify_answer(&knows_busy, 200, &none, busy_body),
            Classification::Final,
            "a success is never retried"
        );
        assert_eq!(
            classify_answer(&RetryPolicy::default(), 403, &none, busy_body),
            Classification::Final
        );
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (2..=8)
            .map(|attempt| policy.delay_before_attempt(attempt, &mut rng))
            .collect();
        let bounds = [500, 1000, 2000, 4000, 8000, 8000, 8000];
        for (delay, upper_ms) in delays.iter().zip(bounds) {
            let upper = Duration::from_millis(upper_ms);
            assert!(
                *delay < upper && *delay >= upper / 2,
                "{delay:?} not in [{:?}, {upper:?})",
                upper / 2
            );
        }
    }
}
