//! A Stripe destination's settings, the rate limits they imply, and the connection test.

use super::service::StripeService;
use ferry_core::Secret;
use ferry_http::{HttpPolicy, RateLimitPolicy};
use std::collections::HashMap;

pub const STRIPE_API_BASE: &str = "https://api.stripe.com";
/// Pinned so that the shape of Stripe's answers never changes under a sync.
pub const STRIPE_VERSION: &str = "2026-09-30.endive";

#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub api_key: Secret,
    pub api_base: String,
    /// Overrides the global requests-per-second budget (Stripe: 25/s test mode, 100/s live).
    pub max_requests_per_second: Option<u32>,
    /// Overrides the per-endpoint budget (Stripe: 25/s). `Some(0)` means unlimited.
    pub max_requests_per_second_per_endpoint: Option<u32>,
}

impl StripeConfig {
    pub fn new(api_key: Secret) -> Self {
        StripeConfig {
            api_key,
            api_base: STRIPE_API_BASE.to_string(),
            max_requests_per_second: None,
            max_requests_per_second_per_endpoint: None,
        }
    }

    pub fn is_live_mode(&self) -> bool {
        self.api_key.expose().starts_with("sk_live_")
            || self.api_key.expose().starts_with("rk_live_")
    }

    /// Where records of `schema`'s object are in Stripe's dashboard (test-mode dashboard unless
    /// the key is live); `None` for another server than Stripe (the emulator), whose records
    /// Stripe's dashboard does not have.
    pub fn dashboard_url(&self, schema: &ferry_stripe_wire::ObjectSchema) -> Option<String> {
        if self.api_base.trim_end_matches('/') != STRIPE_API_BASE {
            return None;
        }
        let mode = if self.is_live_mode() { "" } else { "/test" };
        Some(format!(
            "https://dashboard.stripe.com{mode}/{}",
            schema.dashboard_path
        ))
    }

    /// Stripe's documented limits, lowered or raised by the user's settings. A value of 0 turns
    /// a limit off (for benchmarks against the emulator).
    pub fn http_policy(&self) -> HttpPolicy {
        let default_global = if self.is_live_mode() { 100 } else { 25 };
        let global = self.max_requests_per_second.unwrap_or(default_global);
        let per_endpoint = self.max_requests_per_second_per_endpoint.unwrap_or(25);
        let positive = |n: u32| (n > 0).then_some(n);
        let mut endpoint_overrides = HashMap::new();
        if per_endpoint > 0 {
            endpoint_overrides.insert("GET /v1/customers/search".to_string(), per_endpoint.min(20));
        }
        HttpPolicy {
            service: "stripe",
            rate_limits: RateLimitPolicy {
                global_per_second: positive(global),
                per_endpoint_per_second: positive(per_endpoint),
                endpoint_overrides,
            },
            ..HttpPolicy::default()
        }
    }

    /// Reads `GET /v1/balance`, the cheapest call that proves the key works.
    pub async fn test_connection(&self) -> Result<(), StripeConnectionError> {
        // A person is waiting for this answer: a few quick retries, not a sync's patience.
        let mut policy = self.http_policy();
        policy.retry.max_attempts = 3;
        policy.retry.max_total = std::time::Duration::from_secs(10);
        let unreachable = |e: ferry_http::HttpError| StripeConnectionError::Unreachable {
            api_base: display_api_base(&self.api_base),
            problem: e.to_string(),
        };
        let http = ferry_http::HttpClient::new(policy).map_err(unreachable)?;
        let service = StripeService::with_client(self.clone(), http).map_err(unreachable)?;
        service.read_balance().await
    }
}

/// Checks an API base before any key is sent to it, and returns it without a trailing `/`:
/// `https://…` (Stripe itself, or a proxy), or `http://` only to this machine (the emulator),
/// since a key sent over plain HTTP travels in clear text. No user name or password (they would
/// replace the key with Basic authentication and show in listings), no path, query or fragment.
pub fn validate_api_base(api_base: &str) -> Result<String, String> {
    let trimmed = api_base.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|_| {
        "api_base is not a URL; give one such as https://api.stripe.com (or leave it out)"
            .to_string()
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "api_base must not hold a user name or password; the API key is the only credential \
             ferry sends"
                .to_string(),
        );
    }
    let host = url.host_str().unwrap_or_default().to_string();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "api_base http://{host} would send the API key in clear text; use https (plain \
                 http only for a server on this machine, such as `ferry emulate stripe`)"
            ))
        }
        scheme => {
            return Err(format!(
                "api_base must be an https URL, not {scheme}:; for example https://api.stripe.com"
            ))
        }
    }
    if host.is_empty() {
        return Err("api_base has no host; for example https://api.stripe.com".to_string());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "api_base must be a server's address without a path, query or fragment, such as {}://{}",
            url.scheme(),
            display_api_base(trimmed).trim_start_matches(&format!("{}://", url.scheme()))
        ));
    }
    Ok(trimmed.to_string())
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `api_base` for messages: scheme, host and port only, so that credentials or tokens in a
/// proxy URL never reach an error.
pub fn display_api_base(api_base: &str) -> String {
    match reqwest::Url::parse(api_base) {
        Ok(url) => format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "the configured API base".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_bases_are_https_or_loopback_http_without_credentials() {
        assert_eq!(
            validate_api_base("https://api.stripe.com/").unwrap(),
            "https://api.stripe.com"
        );
        assert!(validate_api_base("http://127.0.0.1:12111").is_ok());
        assert!(validate_api_base("http://localhost:8080").is_ok());
        assert!(validate_api_base("http://[::1]:8080").is_ok());
        let refused = |base: &str| validate_api_base(base).unwrap_err();
        assert!(refused("not a url").contains("not a URL"));
        assert!(refused("ftp://files.example.com").contains("not ftp:"));
        assert!(refused("file:///etc/passwd").contains("not file:"));
        assert!(refused("http://stripe.example.com").contains("clear text"));
        let with_password = refused("https://user:hunter2@proxy.example.com");
        assert!(with_password.contains("user name or password"));
        assert!(!with_password.contains("hunter2"));
        assert!(refused("https://proxy.example.com/v1?x=1").contains("without a path"));
    }

    /// A run page links each record to its page in Stripe's dashboard: test mode's for a test
    /// key, none for another server (the emulator).
    #[test]
    fn every_object_has_its_dashboard_page() {
        let test_mode = StripeConfig::new(ferry_core::Secret::new("sk_test_x".to_string()));
        let links: Vec<Option<String>> = ferry_core::ObjectKind::ALL
            .iter()
            .map(|kind| test_mode.dashboard_url(crate::stripe::stripe_object(*kind).schema()))
            .collect();
        let base = "https://dashboard.stripe.com/test";
        assert_eq!(
            links,
            [
                "customers",
                "products",
                "prices",
                "subscriptions",
                "invoices"
            ]
            .map(|path| Some(format!("{base}/{path}")))
        );
        let mut live = StripeConfig::new(ferry_core::Secret::new("sk_live_x".to_string()));
        assert_eq!(
            live.dashboard_url(
                crate::stripe::stripe_object(ferry_core::ObjectKind::Invoice).schema()
            ),
            Some("https://dashboard.stripe.com/invoices".to_string())
        );
        live.api_base = "http://127.0.0.1:12111".to_string();
        assert_eq!(
            live.dashboard_url(&ferry_stripe_wire::invoice::INVOICE),
            None
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeConnectionError {
    #[error("Stripe rejected this API key ({hint}): {message}. Check the key in Stripe's dashboard under Developers → API keys")]
    InvalidKey { hint: String, message: String },
    #[error("this API key ({hint}) lacks a permission ferry needs: {message}. Give the restricted key write access to Customers and read access to Balance")]
    MissingPermission { hint: String, message: String },
    #[error("cannot reach Stripe at {api_base}: {problem}. Check the network and --api-base")]
    Unreachable { api_base: String, problem: String },
    #[error("Stripe answered the connection test with HTTP {status}: {message}")]
    Unexpected { status: u16, message: String },
    #[error("the server at {api_base} answered GET /v1/balance, but not with Stripe's balance object; check --api-base")]
    NotStripe { api_base: String },
}
