//! A Stripe-compatible API server for ferry's tests, demos and benchmarks: customers (create,
//! retrieve, update, delete, list, search), products and prices (create, retrieve, update, list;
//! products also delete), subscriptions (create, retrieve, update, cancel, list), invoices and
//! invoice items (create, retrieve, update, delete, list; invoices also finalize, send, void,
//! mark uncollectible, pay, search), the events their writes record, balance and account,
//! with Stripe's auth, form bodies, validation, idempotency, rate limits and eventually consistent
//! search, plus injectable faults and a `/_emulator` control API. In memory only. See README.md
//! for what differs from Stripe.

mod api;
mod auth;
mod catalog;
mod catalog_objects;
mod catalog_writes;
mod cli;
mod config;
mod connection;
mod control;
mod customer_object;
mod events;
mod faults;
mod idempotency;
mod invoices;
mod rate_limit;
mod search;
mod server;
mod state;
mod store;
mod subscriptions;
mod writes;

pub use cli::{run_from_cli, EmulateStripeArgs};
pub use config::{Access, ConfigError, EmulatorConfig, FaultConfig, RateLimits, RestrictedKey};
pub use faults::FaultKind;
pub use server::Emulator;
pub use state::{
    CatalogWriteError, Counters, CustomerWriteError, EmulatorHandle, RecordedRequest,
    RuntimeSettings, SeedError,
};

/// A test key the emulator accepts, printed on start. Any `sk_test_`/`sk_live_` key with at
/// least 16 letters or digits after the prefix is accepted too, unless
/// [`EmulatorConfig::accepted_keys`] lists keys explicitly; `rk_` keys must be configured in
/// [`EmulatorConfig::restricted_keys`].
pub const TEST_API_KEY: &str = "sk_test_ferryemulator0000000000000000";
