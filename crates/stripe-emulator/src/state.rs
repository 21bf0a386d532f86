//! The emulator's shared state and [`EmulatorHandle`], the in-process way to inspect and steer it
//! (the `/_emulator` HTTP API is a thin layer over the same methods).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use ferry_stripe_wire::customer::validate_customer_params;
use ferry_stripe_wire::price::PRICE;
use ferry_stripe_wire::product::PRODUCT;
use ferry_stripe_wire::{ParamError, StripeError};

use crate::api::DEFAULT_STRIPE_VERSION;
use crate::catalog::Catalog;
use crate::catalog_writes::{self, Failure, Origin};
use crate::config::{EmulatorConfig, FaultConfig, RateLimits, RestrictedKey};
use crate::customer_object::{apply_params, new_customer};
use crate::events::{EventLog, EventSource};
use crate::faults::FaultKind;
use crate::idempotency::IdempotencyStore;
use crate::rate_limit::RateLimiter;
use crate::store::CustomerStore;
use crate::writes::{self, DuplicateId, WriteError};

/// Cheap to clone; every clone steers the same running emulator.
#[derive(Clone)]
pub struct EmulatorHandle {
    pub(crate) shared: Arc<SharedState>,
}

/// One request received on a `/v1` route, as `/_emulator/requests` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 0 for the first `/v1` request after start or reset; fault decisions follow it.
    pub sequence: u64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// `POST /v1/customers/{id}`; `None` for an unrecognized URL.
    pub endpoint: Option<String>,
    /// Decoded query or body params (all leaves strings); `null` when they could not be read.
    pub params: Value,
    pub idempotency_key: Option<String>,
    /// The status the emulator produced; `None` when the connection was dropped before any.
    /// With a lost response this is the status the client never saw.
    pub status: Option<u16>,
    pub fault: Option<FaultKind>,
    /// Whether the endpoint ran (false for rejections, injected errors, drops and replays).
    pub executed: bool,
    /// Whether this was an idempotent replay of a stored response.
    pub replayed: bool,
}

/// Request counts per endpoint and outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub total: u64,
    /// Endpoint (`POST /v1/customers`, or `unrecognized`) → outcome → count. The outcome is the
    /// status code as text, `dropped` (no response, not executed) or `lost_response` (executed,
    /// no response).
    pub by_endpoint: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Counters {
    /// How many requests to `endpoint` ended with `outcome` (`"200"`, `"429"`, `"dropped"`, …).
    pub fn count(&self, endpoint: &str, outcome: &str) -> u64 {
        self.by_endpoint
            .get(endpoint)
            .and_then(|outcomes| outcomes.get(outcome))
            .copied()
            .unwrap_or(0)
    }
}

/// The settings that can change at run time, as `/_emulator/config` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSettings {
    pub rate_limits: RateLimits,
    pub faults: FaultConfig,
    pub search_delay_ms: u64,
    pub fault_seed: u64,
    /// How long events stay readable (Stripe: 30 days = 2,592,000 s).
    pub event_retention_seconds: u64,
}

/// A seed customer that cannot be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeedError {
    #[error("a seed customer must be a JSON object")]
    NotAnObject,
    #[error("seed field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("a customer with id `{0}` already exists")]
    DuplicateId(String),
    #[error("invalid seed customer: {0}")]
    InvalidParams(#[from] ParamError),
}

/// A customer update or delete through the handle that Stripe would refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CustomerWriteError {
    #[error("customer params must be a JSON object")]
    NotAnObject,
    /// Unknown or already deleted (Stripe's 404 `resource_missing`).
    #[error("no such customer: '{0}'")]
    NoSuchCustomer(String),
    /// What `/v1` answers with a 400.
    #[error("invalid customer params: {0}")]
    InvalidParams(#[from] ParamError),
}

/// A product or price write through the handle or `/_emulator` that cannot happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogWriteError {
    #[error("a seed or params must be a JSON object")]
    NotAnObject,
    #[error("seed field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// What `/v1` answers with a 400 before executing.
    #[error("invalid params: {0}")]
    InvalidParams(#[from] ParamError),
    /// Unknown (or deleted) id: Stripe's 404 `resource_missing`.
    #[error("no such {object}: '{id}'")]
    NoSuch { object: &'static str, id: String },
    /// What `/v1` answers with a 400 while executing: a taken id or lookup key, a missing
    /// product, a product that still has prices, ….
    #[error("{}", .0.message)]
    Refused(StripeError),
}

impl CatalogWriteError {
    fn of(failure: Failure, object: &'static str, id: &str) -> CatalogWriteError {
        match failure {
            Failure::Missing => CatalogWriteError::NoSuch {
                object,
                id: id.to_owned(),
            },
            Failure::Refused(error) => CatalogWriteError::Refused(error),
        }
    }
}

/// The `id`, `created` and `livemode` a seed may choose; the rest are create params.
fn seed_origin(
    fields: &mut serde_json::Map<String, Value>,
    prefix: &str,
    keep_id_as_param: bool,
) -> Result<Origin, CatalogWriteError> {
    let id = match if keep_id_as_param {
        fields.get("id").cloned()
    } else {
        fields.remove("id")
    } {
        None => new_object_id(prefix),
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(_) => {
            return Err(CatalogWriteError::InvalidField {
                field: "id",
                reason: "must be a non-empty string".into(),
            })
        }
    };
    let created = match fields.remove("created") {
        None => unix_now(),
        Some(value) => value
            .as_i64()
            .ok_or_else(|| CatalogWriteError::InvalidField {
                field: "created",
                reason: "must be an integer (unix seconds)".into(),
            })?,
    };
    let livemode = match fields.remove("livemode") {
        None => false,
        Some(value) => value
            .as_bool()
            .ok_or_else(|| CatalogWriteError::InvalidField {
                field: "livemode",
                reason: "must be true or false".into(),
            })?,
    };
    fields.remove("object");
    Ok(Origin {
        id,
        created,
        livemode,
        seeded: true,
    })
}

/// Writes through the handle are made "by someone else" (the Dashboard, another integration):
/// Stripe's API never saw them, so their events carry `request.id: null`.
fn handle_source() -> EventSource {
    EventSource {
        request_id: None,
        idempotency_key: None,
        api_version: DEFAULT_STRIPE_VERSION.to_owned(),
        livemode: None,
    }
}

impl EmulatorHandle {
    /// All live customers as stored, newest first, whatever the search delay.
    pub fn customers(&self) -> Vec<Value> {
        self.shared
            .store()
            .all_live()
            .into_iter()
            .map(|customer| Value::Object((*customer).clone()))
            .collect()
    }

    /// One customer as stored (`None` if unknown or deleted).
    pub fn customer(&self, id: &str) -> Option<Value> {
        match self.shared.store().get(id) {
            crate::store::Lookup::Live(customer) => Some(Value::Object((*customer).clone())),
            _ => None,
        }
    }

    /// Every event still within retention, newest first, as `GET /v1/events` shows them.
    pub fn events(&self) -> Vec<Value> {
        self.shared
            .events()
            .all(Instant::now())
            .iter()
            .map(|event| serde_json::to_value(&**event).expect("events serialize"))
            .collect()
    }

    /// Updates a customer as `POST /v1/customers/{id}` does, with the same validation (params as
    /// JSON, like [`EmulatorHandle::seed_customer`]: `{"email": "new@b.co", "metadata":
    /// {"plan": ""}}`) and the same `customer.updated` event, as if someone edited the customer
    /// in Stripe's Dashboard. Returns the customer as stored.
    pub fn update_customer(&self, id: &str, params: Value) -> Result<Value, CustomerWriteError> {
        let Value::Object(params) = params else {
            return Err(CustomerWriteError::NotAnObject);
        };
        validate_customer_params(&params, true)?;
        match writes::update_customer(&self.shared, id, &params, &handle_source()) {
            Ok(customer) => Ok(Value::Object((*customer).clone())),
            Err(error) => Err(handle_write_error(error, id)),
        }
    }

    /// Deletes a customer as `DELETE /v1/customers/{id}` does, recording `customer.deleted`.
    pub fn delete_customer(&self, id: &str) -> Result<(), CustomerWriteError> {
        writes::delete_customer(&self.shared, id, &handle_source())
            .map(|_| ())
            .map_err(|error| handle_write_error(error, id))
    }

    /// All products as stored, newest first.
    pub fn products(&self) -> Vec<Value> {
        let catalog = self.shared.catalog();
        catalog
            .products
            .all()
            .iter()
            .map(|p| Value::Object((**p).clone()))
            .collect()
    }

    /// One product as stored (`None` if unknown or deleted).
    pub fn product(&self, id: &str) -> Option<Value> {
        let product = self.shared.catalog().products.get(id)?;
        Some(Value::Object((*product).clone()))
    }

    /// All prices as stored, newest first; tiered prices include their `tiers`, which `/v1` shows
    /// only when expanded.
    pub fn prices(&self) -> Vec<Value> {
        let catalog = self.shared.catalog();
        catalog
            .prices()
            .all()
            .iter()
            .map(|p| Value::Object((**p).clone()))
            .collect()
    }

    /// One price as stored (`None` if unknown).
    pub fn price(&self, id: &str) -> Option<Value> {
        let price = self.shared.catalog().prices().get(id)?;
        Some(Value::Object((*price).clone()))
    }

    /// All subscriptions, canceled ones included, newest first, as `GET /v1/subscriptions/{id}`
    /// shows them (each item's price as the price is now).
    pub fn subscriptions(&self) -> Vec<Value> {
        let catalog = self.shared.catalog();
        catalog
            .subscriptions
            .all()
            .iter()
            .map(|s| Value::Object(crate::subscriptions::for_response(&catalog, s)))
            .collect()
    }

    /// One subscription as `GET /v1/subscriptions/{id}` shows it (`None` if unknown); canceled
    /// ones included.
    pub fn subscription(&self, id: &str) -> Option<Value> {
        let catalog = self.shared.catalog();
        let subscription = catalog.subscriptions.get(id)?;
        Some(Value::Object(crate::subscriptions::for_response(
            &catalog,
            &subscription,
        )))
    }

    /// All invoices (drafts, open, paid, void, uncollectible), newest first, as
    /// `GET /v1/invoices/{id}` shows them.
    pub fn invoices(&self) -> Vec<Value> {
        let catalog = self.shared.catalog();
        catalog
            .invoices
            .all()
            .iter()
            .map(|invoice| Value::Object((**invoice).clone()))
            .collect()
    }

    /// One invoice as `GET /v1/invoices/{id}` shows it (`None` if unknown or deleted).
    pub fn invoice(&self, id: &str) -> Option<Value> {
        let invoice = self.shared.catalog().invoices.get(id)?;
        Some(Value::Object((*invoice).clone()))
    }

    /// All invoice items, pending ones and those on an invoice, newest first.
    pub fn invoice_items(&self) -> Vec<Value> {
        let catalog = self.shared.catalog();
        catalog
            .invoice_items
            .all()
            .iter()
            .map(|item| Value::Object((**item).clone()))
            .collect()
    }

    /// Stores a product as `POST /v1/products` would, with the same validation, and records its
    /// `product.created` (with `request.id: null`, its `created` the time of seeding). The object
    /// takes product params as JSON (`{"id": "gold", "name": "Gold", "metadata": {"k": "v"}}`)
    /// plus optional `created` (unix seconds) and `livemode`. Returns the id. Panics on an
    /// invalid seed: see [`EmulatorHandle::try_seed_product`].
    pub fn seed_product(&self, product: Value) -> String {
        self.try_seed_product(product)
            .unwrap_or_else(|error| panic!("cannot seed product: {error}"))
    }

    pub fn try_seed_product(&self, product: Value) -> Result<String, CatalogWriteError> {
        let Value::Object(mut fields) = product else {
            return Err(CatalogWriteError::NotAnObject);
        };
        let origin = seed_origin(&mut fields, "prod", true)?;
        PRODUCT.validate(&fields, false)?;
        catalog_writes::create_product(&self.shared, &origin, &fields, &handle_source())
            .map(|_| origin.id.clone())
            .map_err(|failure| CatalogWriteError::of(failure, "product", &origin.id))
    }

    /// Updates a product as `POST /v1/products/{id}` does (params as JSON), recording
    /// `product.updated`: "someone edited it in the Dashboard". Returns it as stored.
    pub fn update_product(&self, id: &str, params: Value) -> Result<Value, CatalogWriteError> {
        let Value::Object(params) = params else {
            return Err(CatalogWriteError::NotAnObject);
        };
        PRODUCT.validate(&params, true)?;
        catalog_writes::update_product(&self.shared, id, &params, &handle_source())
            .map(|product| Value::Object((*product).clone()))
            .map_err(|failure| CatalogWriteError::of(failure, "product", id))
    }

    /// Deletes a product as `DELETE /v1/products/{id}` does, recording `product.deleted`.
    pub fn delete_product(&self, id: &str) -> Result<(), CatalogWriteError> {
        catalog_writes::delete_product(&self.shared, id, &handle_source())
            .map(|_| ())
            .map_err(|failure| CatalogWriteError::of(failure, "product", id))
    }

    /// Stores a price as `POST /v1/prices` would, with the same validation and rules (its product
    /// must exist, its lookup key must be free or transferred), and records its events
    /// (`request.id: null`). The object takes price params as JSON (`{"product": "gold",
    /// "currency": "usd", "unit_amount": 1000, "lookup_key": "gold_monthly"}`) plus optional
    /// `id`, `created` and `livemode`. Returns the id. Panics on an invalid seed: see
    /// [`EmulatorHandle::try_seed_price`].
    pub fn seed_price(&self, price: Value) -> String {
        self.try_seed_price(price)
            .unwrap_or_else(|error| panic!("cannot seed price: {error}"))
    }

    pub fn try_seed_price(&self, price: Value) -> Result<String, CatalogWriteError> {
        let Value::Object(mut fields) = price else {
            return Err(CatalogWriteError::NotAnObject);
        };
        let origin = seed_origin(&mut fields, "price", false)?;
        PRICE.validate(&fields, false)?;
        catalog_writes::create_price(&self.shared, &origin, &fields, &handle_source())
            .map(|_| origin.id.clone())
            .map_err(|failure| CatalogWriteError::of(failure, "price", &origin.id))
    }

    /// Updates a price as `POST /v1/prices/{id}` does (params as JSON), recording
    /// `price.updated`. Returns it as stored.
    pub fn update_price(&self, id: &str, params: Value) -> Result<Value, CatalogWriteError> {
        let Value::Object(params) = params else {
            return Err(CatalogWriteError::NotAnObject);
        };
        PRICE.validate(&params, true)?;
        catalog_writes::update_price(&self.shared, id, &params, &handle_source())
            .map(|price| Value::Object((*price).clone()))
            .map_err(|failure| CatalogWriteError::of(failure, "price", id))
    }

    /// Every `/v1` request received, oldest first (bounded by `request_log_capacity`).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log().requests.iter().cloned().collect()
    }

    pub fn counters(&self) -> Counters {
        self.shared.log().counters.clone()
    }

    /// Replaces the fault settings. Rates outside [0, 1] are clamped when drawn; use
    /// [`FaultConfig::validate`] first to reject them instead.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.shared.settings_mut().faults = faults;
    }

    /// Replaces the rate limits; buckets start full.
    pub fn set_rate_limits(&self, limits: RateLimits) {
        self.shared.limiter().set_limits(limits);
    }

    pub fn set_search_delay(&self, delay: Duration) {
        self.shared.settings_mut().search_delay = delay;
        self.shared.store().search_delay = delay;
    }

    /// Changes the seed fault decisions derive from (with the request sequence number).
    pub fn set_fault_seed(&self, seed: u64) {
        self.shared.settings_mut().fault_seed = seed;
    }

    /// Changes how long events stay readable. Events already older are forgotten at once (and
    /// stay gone if retention grows again): `Duration::ZERO` makes every existing event "too
    /// old", as a client that has not looked for over 30 days would find.
    pub fn set_event_retention(&self, retention: Duration) {
        self.shared
            .events()
            .set_retention(retention, Instant::now());
    }

    pub fn settings(&self) -> RuntimeSettings {
        let settings = self.shared.settings();
        RuntimeSettings {
            rate_limits: self.shared.limiter().limits().clone(),
            faults: settings.faults.clone(),
            search_delay_ms: settings
                .search_delay
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            fault_seed: settings.fault_seed,
            // Rounded up, so that a short retention set through the handle never reads as 0
            // ("every event is gone").
            event_retention_seconds: u64::try_from(
                self.shared.events().retention().as_millis().div_ceil(1000),
            )
            .unwrap_or(u64::MAX),
        }
    }

    /// Forgets customers, products, prices, subscriptions, invoices, invoice items, events,
    /// idempotency keys, the request log and counters, and restarts the request sequence (so a seeded fault run replays). Settings stay
    /// as they are.
    pub fn reset(&self) {
        let delay = self.shared.settings().search_delay;
        // Every store lock at once, so that no write in flight leaves an event about an object
        // that no longer exists.
        let mut store = self.shared.store();
        *store = CustomerStore::new(delay);
        let mut catalog = self.shared.catalog();
        *catalog = Catalog::default();
        let mut events = self.shared.events();
        *events = EventLog::new(events.retention());
        drop(events);
        drop(catalog);
        drop(store);
        *self.shared.idempotency() = IdempotencyStore::default();
        let limits = self.shared.limiter().limits().clone();
        self.shared.limiter().set_limits(limits);
        let mut log = self.shared.log();
        log.requests.clear();
        log.counters = Counters::default();
        self.shared.request_sequence.store(0, Ordering::SeqCst);
    }

    /// Stores a customer directly, visible to search at once, and records its `customer.created`
    /// event (with `request.id: null`: a customer made by someone else). The object takes
    /// customer params as JSON (`{"email": "a@b.co", "metadata": {"k": "v"}, "balance": 5}`)
    /// plus optional `id`, `created` (unix seconds) and `livemode`; the event's own `created` is
    /// the time of seeding. Returns the id. Panics on an invalid seed: it is meant for test
    /// fixtures; see [`EmulatorHandle::try_seed_customer`].
    pub fn seed_customer(&self, customer: Value) -> String {
        self.try_seed_customer(customer)
            .unwrap_or_else(|error| panic!("cannot seed customer: {error}"))
    }

    pub fn try_seed_customer(&self, customer: Value) -> Result<String, SeedError> {
        let Value::Object(mut fields) = customer else {
            return Err(SeedError::NotAnObject);
        };
        let id = match fields.remove("id") {
            None => new_object_id("cus"),
            Some(Value::String(id)) if !id.is_empty() => id,
            Some(_) => {
                return Err(SeedError::InvalidField {
                    field: "id",
                    reason: "must be a non-empty string".into(),
                })
            }
        };
        let created = match fields.remove("created") {
            None => unix_now(),
            Some(value) => value.as_i64().ok_or_else(|| SeedError::InvalidField {
                field: "created",
                reason: "must be an integer (unix seconds)".into(),
            })?,
        };
        let livemode = match fields.remove("livemode") {
            None => false,
            Some(value) => value.as_bool().ok_or_else(|| SeedError::InvalidField {
                field: "livemode",
                reason: "must be true or false".into(),
            })?,
        };
        fields.remove("object");
        validate_customer_params(&fields, false)?;
        let mut stored = new_customer(&id, created, livemode, &new_invoice_prefix());
        apply_params(&mut stored, &fields)?;
        match writes::create_customer(&self.shared, stored, true, &handle_source()) {
            Ok(_) => Ok(id),
            Err(DuplicateId) => Err(SeedError::DuplicateId(id)),
        }
    }
}

fn handle_write_error(error: WriteError, id: &str) -> CustomerWriteError {
    match error {
        WriteError::NoSuchCustomer => CustomerWriteError::NoSuchCustomer(id.to_owned()),
        WriteError::Rejected(error) => CustomerWriteError::InvalidParams(error),
    }
}

/// Settings read on every request.
pub(crate) struct Settings {
    pub faults: FaultConfig,
    pub search_delay: Duration,
    pub fault_seed: u64,
}

pub(crate) struct RequestLog {
    pub requests: VecDeque<RecordedRequest>,
    pub capacity: usize,
    pub counters: Counters,
}

impl RequestLog {
    pub(crate) fn record(&mut self, request: RecordedRequest, outcome: String) {
        let endpoint = request
            .endpoint
            .clone()
            .unwrap_or_else(|| "unrecognized".to_owned());
        self.counters.total += 1;
        *self
            .counters
            .by_endpoint
            .entry(endpoint)
            .or_default()
            .entry(outcome)
            .or_default() += 1;
        if self.capacity == 0 {
            return;
        }
        if self.requests.len() == self.capacity {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
    }
}

/// Lock order: `store`, then `catalog`, then `events` (a write records its events while holding
/// its store).
pub(crate) struct SharedState {
    store: Mutex<CustomerStore>,
    catalog: Mutex<Catalog>,
    events: Mutex<EventLog>,
    idempotency: Mutex<IdempotencyStore>,
    limiter: Mutex<RateLimiter>,
    settings: RwLock<Settings>,
    log: Mutex<RequestLog>,
    pub request_sequence: AtomicU64,
    pub accepted_keys: Vec<String>,
    pub restricted_keys: Vec<RestrictedKey>,
}

impl SharedState {
    pub(crate) fn new(config: &EmulatorConfig) -> SharedState {
        SharedState {
            store: Mutex::new(CustomerStore::new(config.search_delay)),
            catalog: Mutex::new(Catalog::default()),
            events: Mutex::new(EventLog::new(config.event_retention)),
            idempotency: Mutex::new(IdempotencyStore::default()),
            limiter: Mutex::new(RateLimiter::new(config.rate_limits.clone())),
            settings: RwLock::new(Settings {
                faults: config.faults.clone(),
                search_delay: config.search_delay,
                fault_seed: config.fault_seed.unwrap_or_else(rand::random),
            }),
            log: Mutex::new(RequestLog {
                requests: VecDeque::new(),
                capacity: config.request_log_capacity,
                counters: Counters::default(),
            }),
            request_sequence: AtomicU64::new(0),
            accepted_keys: config.accepted_keys.clone(),
            restricted_keys: config.restricted_keys.clone(),
        }
    }

    // A panic while holding a lock cannot leave these structures half-updated in a way that
    // matters for a test server, so poisoning is ignored rather than propagated.
    pub(crate) fn store(&self) -> MutexGuard<'_, CustomerStore> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn events(&self) -> MutexGuard<'_, EventLog> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn idempotency(&self) -> MutexGuard<'_, IdempotencyStore> {
        self.idempotency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn limiter(&self) -> MutexGuard<'_, RateLimiter> {
        self.limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn log(&self) -> MutexGuard<'_, RequestLog> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn settings(&self) -> std::sync::RwLockReadGuard<'_, Settings> {
        self.settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settings_mut(&self) -> std::sync::RwLockWriteGuard<'_, Settings> {
        self.settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `cus_` (or another prefix) + 14 letters and digits, like Stripe's ids.
pub(crate) fn new_object_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        Alphanumeric.sample_string(&mut rand::rng(), 14)
    )
}

/// Stripe's default invoice prefix: 8 upper-case hex digits.
pub(crate) fn new_invoice_prefix() -> String {
    format!("{:08X}", rand::random::<u32>())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}
