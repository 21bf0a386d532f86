//! Each Stripe account's request budget, shared through the workspace by every run that writes
//! into it, in this process and in every other on the workspace (several `ferry serve`
//! processes on one PostgreSQL workspace, a `ferry sync run` beside a server). Without it each
//! run paces itself at the account's full limit, and two runs into one account together
//! collect 429s.

use ferry_destinations::stripe::{StripeConfig, StripeService};
use ferry_http::{HttpClient, RateSlots, SharedBudget, SharedRateBudget};
use ferry_state::StateStore;
use sha2::Digest as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The workspace as a shared rate budget.
struct WorkspaceBudget(StateStore);

impl SharedRateBudget for WorkspaceBudget {
    fn reserve(
        &self,
        key: &str,
        per_second: u32,
        count: u32,
    ) -> Pin<Box<dyn Future<Output = Result<RateSlots, String>> + Send + '_>> {
        let key = key.to_string();
        let store = self.0.clone();
        Box::pin(async move {
            // In a task of its own: the caller is one of a run's in-flight requests, which the
            // run leaves unpolled while it commits outcomes through the same workspace session.
            // Awaited in place, the reservation would hold that session while unpolled and the
            // commit would wait for it forever.
            let slots = crate::execute::in_own_task(async move {
                store.reserve_rate_slots(&key, per_second, count).await
            })
            .await
            .map_err(|error| error.to_string())?;
            Ok(RateSlots {
                first_in: slots.first_in,
                spacing: slots.spacing,
                count: slots.count,
            })
        })
    }
}

/// The Stripe client of a run or a preview, paced by its account's shared budget; a run's
/// also hands its records' requests to the run's request log.
pub(crate) fn stripe_service(
    store: &StateStore,
    config: &StripeConfig,
    request_log: Option<Arc<crate::request_log::RequestLog>>,
) -> Result<StripeService, crate::EngineError> {
    let config_error = |e: ferry_http::HttpError| crate::EngineError::Config(e.to_string());
    let policy = config.http_policy();
    let mut http = HttpClient::with_shared_budget(
        policy,
        SharedBudget {
            budget: Arc::new(WorkspaceBudget(store.clone())),
            account_key: account_key(config),
        },
    )
    .map_err(config_error)?;
    if let Some(log) = request_log {
        http = http.recording_exchanges(log);
    }
    StripeService::with_client(config.clone(), http).map_err(config_error)
}

/// Names the account without holding its key: a digest of the API base and the key (the same
/// key always reaches the same account; two keys of one account are budgeted apart, a known
/// limit: Stripe does not tell a key's account without a request).
fn account_key(config: &StripeConfig) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(config.api_base.trim_end_matches('/').as_bytes())
        .chain_update([0u8])
        .chain_update(config.api_key.expose().as_bytes())
        .finalize();
    format!("stripe {}", hex::encode(&digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Secret;

    #[test]
    fn an_account_is_named_by_its_base_and_key_without_showing_the_key() {
        let config = |base: &str, key: &str| StripeConfig {
            api_base: base.to_string(),
            ..StripeConfig::new(Secret::new(key))
        };
        let a = account_key(&config("https://api.stripe.com", "sk_test_abc"));
        assert_eq!(
            a,
            account_key(&config("https://api.stripe.com/", "sk_test_abc"))
        );
        assert_ne!(
            a,
            account_key(&config("https://api.stripe.com", "sk_test_abd"))
        );
        assert_ne!(a, account_key(&config("http://127.0.0.1:9", "sk_test_abc")));
        assert!(!a.contains("sk_test") && a.starts_with("stripe "), "{a}");
    }
}
