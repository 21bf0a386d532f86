//! What an emulator is told at start (and partly at run time): bind address, rate limits, search
//! delay, injected faults, accepted and restricted API keys, event retention.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything an [`crate::Emulator`] needs to start. `Default` is a test-friendly server: a free
/// port on 127.0.0.1, Stripe's default rate limits, a 2 s search delay and no faults.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free port (read it back with [`crate::Emulator::url`]).
    pub bind: SocketAddr,
    pub rate_limits: RateLimits,
    /// How long a write takes to become visible to `GET /v1/customers/search`.
    pub search_delay: Duration,
    pub faults: FaultConfig,
    /// Restricted (`rk_…`) keys and what they may do. Other `rk_` keys are rejected with 401.
    pub restricted_keys: Vec<RestrictedKey>,
    /// Makes fault decisions reproducible: the n-th `/v1` request gets the same decision on every
    /// run with the same seed. `None` picks a random seed.
    pub fault_seed: Option<u64>,
    /// When not empty, the only secret keys accepted. When empty, any `sk_test_`/`sk_live_` key
    /// with at least 16 letters or digits after the prefix is accepted.
    pub accepted_keys: Vec<String>,
    /// How many requests `/_emulator/requests` remembers; older ones are forgotten first.
    pub request_log_capacity: usize,
    /// How long events stay readable through `GET /v1/events` (Stripe: 30 days); older ones are
    /// forgotten.
    pub event_retention: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            rate_limits: RateLimits::default(),
            search_delay: Duration::from_secs(2),
            faults: FaultConfig::default(),
            restricted_keys: Vec::new(),
            fault_seed: None,
            accepted_keys: Vec::new(),
            request_log_capacity: 100_000,
            event_retention: crate::events::STRIPE_EVENT_RETENTION,
        }
    }
}

/// Stripe's token-bucket rate limits. Each bucket holds one second's worth of requests, so a
/// burst of `rate` requests passes and then `rate` per second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimits {
    /// `false` turns every limiter off (for throughput benchmarks).
    pub enabled: bool,
    /// All requests made with test-mode keys.
    pub global_test_per_sec: u32,
    /// All requests made with live-mode keys.
    pub global_live_per_sec: u32,
    /// Each endpoint (method + path template) separately, per mode.
    pub endpoint_per_sec: u32,
    /// The search endpoint, instead of `endpoint_per_sec`.
    pub search_per_sec: u32,
}

impl Default for RateLimits {
    fn default() -> RateLimits {
        RateLimits {
            enabled: true,
            global_test_per_sec: 25,
            global_live_per_sec: 100,
            endpoint_per_sec: 25,
            search_per_sec: 20,
        }
    }
}

impl RateLimits {
    /// No limits at all.
    pub fn disabled() -> RateLimits {
        RateLimits {
            enabled: false,
            ..RateLimits::default()
        }
    }
}

/// Injected failures for `/v1` routes. Each request draws once: with probability
/// `server_error_rate` it gets a 500, 502 or 503 (equally likely), else with `lock_timeout_rate`
/// a 429 `lock_timeout`, else with `drop_rate` its connection is closed without a response and
/// without executing, else with `lose_response_rate` it executes but its connection is closed
/// instead of answering. If the rates add up to more than 1, the later kinds get what is left.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    pub server_error_rate: f64,
    pub lock_timeout_rate: f64,
    pub drop_rate: f64,
    pub lose_response_rate: f64,
    /// Added to every `/v1` request, while it holds its idempotency key.
    #[serde(rename = "latency_ms", with = "duration_as_millis")]
    pub latency: Duration,
    /// A uniformly random extra delay between 0 and this, on top of `latency`.
    #[serde(rename = "latency_jitter_ms", with = "duration_as_millis")]
    pub latency_jitter: Duration,
}

impl FaultConfig {
    /// Checks that every rate is a probability and that they add up to at most 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rates = [
            ("server_error_rate", self.server_error_rate),
            ("lock_timeout_rate", self.lock_timeout_rate),
            ("drop_rate", self.drop_rate),
            ("lose_response_rate", self.lose_response_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::RateOutOfRange { name, rate });
            }
        }
        let total: f64 = rates.iter().map(|(_, rate)| rate).sum();
        if total > 1.0 + 1e-9 {
            return Err(ConfigError::RatesAddUpToMoreThanOne { total });
        }
        Ok(())
    }
}

/// What a restricted key may do with a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    None,
    Read,
    Write,
}

/// A restricted key (`rk_test_…`/`rk_live_…`) and its permissions. `Read` allows retrieve and
/// list, `Write` also create, update and delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictedKey {
    pub key: String,
    pub customers: Access,
    /// Products (`/v1/products`).
    #[serde(default = "no_access")]
    pub products: Access,
    /// Prices (`/v1/prices`).
    #[serde(default = "no_access")]
    pub prices: Access,
    /// Subscriptions (`/v1/subscriptions`).
    #[serde(default = "no_access")]
    pub subscriptions: Access,
    /// Invoices and invoice items (`/v1/invoices`, `/v1/invoiceitems`).
    #[serde(default = "no_access")]
    pub invoices: Access,
    /// `Read` allows `GET /v1/balance`; `Write` is treated as `Read`.
    pub balance: Access,
}

fn no_access() -> Access {
    Access::None
}

impl RestrictedKey {
    /// A key without any permission, to grant some with struct update syntax:
    /// `RestrictedKey { customers: Access::Write, ..RestrictedKey::new("rk_test_…") }`.
    pub fn new(key: impl Into<String>) -> RestrictedKey {
        RestrictedKey {
            key: key.into(),
            customers: Access::None,
            products: Access::None,
            prices: Access::None,
            subscriptions: Access::None,
            invoices: Access::None,
            balance: Access::None,
        }
    }
}

impl FromStr for RestrictedKey {
    type Err = ConfigError;

    /// `rk_test_…:customers=read,products=write,prices=write,subscriptions=write,invoices=write,`
    /// `balance=read`; a resource left out gets no access.
    fn from_str(text: &str) -> Result<RestrictedKey, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidRestrictedKey {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (key, permissions) = text.split_once(':').unwrap_or((text, ""));
        if !(key.starts_with("rk_test_") || key.starts_with("rk_live_")) {
            return Err(invalid("the key must start with rk_test_ or rk_live_"));
        }
        let mut restricted = RestrictedKey::new(key);
        for permission in permissions.split(',').filter(|part| !part.is_empty()) {
            let (resource, level) = permission
                .split_once('=')
                .ok_or_else(|| invalid("permissions look like customers=read"))?;
            let access = match level {
                "none" => Access::None,
                "read" => Access::Read,
                "write" => Access::Write,
                _ => return Err(invalid("an access level is none, read or write")),
            };
            match resource {
                "customers" => restricted.customers = access,
                "products" => restricted.products = access,
                "prices" => restricted.prices = access,
                "subscriptions" => restricted.subscriptions = access,
                "invoices" => restricted.invoices = access,
                "balance" => restricted.balance = access,
                _ => {
                    return Err(invalid(
                        "the resources are customers, products, prices, subscriptions, invoices and balance",
                    ))
                }
            }
        }
        Ok(restricted)
    }
}

/// A configuration value the emulator cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be between 0 and 1 (got {rate})")]
    RateOutOfRange { name: &'static str, rate: f64 },
    #[error("the fault rates add up to {total}, more than 1; lower some of them")]
    RatesAddUpToMoreThanOne { total: f64 },
    #[error("invalid restricted key `{text}`: {reason} (example: rk_test_abc123:customers=read,products=write,prices=write,balance=read)")]
    InvalidRestrictedKey { text: String, reason: String },
}

/// `Duration` as a whole number of milliseconds in JSON.
mod duration_as_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_key_from_cli_text() {
        let key: RestrictedKey = "rk_test_abc:customers=read,balance=read".parse().unwrap();
        assert_eq!(
            key,
            RestrictedKey {
                customers: Access::Read,
                balance: Access::Read,
                ..RestrictedKey::new("rk_test_abc")
            }
        );
        let catalog: RestrictedKey = "rk_test_abc:products=write,prices=read".parse().unwrap();
        assert_eq!(
            (catalog.products, catalog.prices, catalog.customers),
            (Access::Write, Access::Read, Access::None)
        );
        let from_json: RestrictedKey = serde_json::from_str(
            r#"{"key": "rk_test_abc", "customers": "read", "balance": "none"}"#,
        )
        .unwrap();
        assert_eq!(from_json.products, Access::None, "older configs still read");
        let bare: RestrictedKey = "rk_live_abc".parse().unwrap();
        assert_eq!(bare.customers, Access::None);
        assert!("sk_test_abc:customers=read"
            .parse::<RestrictedKey>()
            .is_err());
        assert!("rk_test_abc:charges=read".parse::<RestrictedKey>().is_err());
        assert!("rk_test_abc:customers=all"
            .parse::<RestrictedKey>()
            .is_err());
    }

    #[test]
    fn fault_rates_must_be_probabilities_adding_up_to_one_at_most() {
        let ok = FaultConfig {
            server_error_rate: 0.5,
            lose_response_rate: 0.5,
            ..FaultConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let too_much = FaultConfig {
            drop_rate: 0.7,
            lose_response_rate: 0.7,
            ..FaultConfig::default()
        };
        assert!(too_much.validate().is_err());
        let negative = FaultConfig {
            drop_rate: -0.1,
            ..FaultConfig::default()
        };
        assert!(negative.validate().is_err());
    }

    #[test]
    fn fault_config_json_uses_milliseconds_and_allows_partial_input() {
        let faults: FaultConfig =
            serde_json::from_str(r#"{"drop_rate": 0.25, "latency_ms": 300}"#).unwrap();
        assert_eq!(faults.drop_rate, 0.25);
        assert_eq!(faults.latency, Duration::from_millis(300));
        assert_eq!(faults.latency_jitter, Duration::ZERO);
        let text = serde_json::to_string(&faults).unwrap();
        assert!(text.contains(r#""latency_ms":300"#), "{text}");
    }
}
