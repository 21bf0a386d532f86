//! `/_emulator/…`: control and inspection over HTTP, no auth, never rate limited or faulted.
//! Each route is a thin wrapper over an [`EmulatorHandle`] method.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{FaultConfig, RateLimits};
use crate::state::{CatalogWriteError, CustomerWriteError, EmulatorHandle, SharedState};

pub(crate) fn routes() -> Router<Arc<SharedState>> {
    Router::new()
        .route("/_emulator/reset", post(reset))
        .route(
            "/_emulator/customers",
            get(list_customers).post(seed_customers),
        )
        .route(
            "/_emulator/customers/{id}",
            post(update_customer).delete(delete_customer),
        )
        .route(
            "/_emulator/products",
            get(list_products).post(seed_products),
        )
        .route(
            "/_emulator/products/{id}",
            post(update_product).delete(delete_product),
        )
        .route("/_emulator/prices", get(list_prices).post(seed_prices))
        .route("/_emulator/prices/{id}", post(update_price))
        .route("/_emulator/subscriptions", get(list_subscriptions))
        .route("/_emulator/invoices", get(list_invoices))
        .route("/_emulator/invoiceitems", get(list_invoice_items))
        .route("/_emulator/events", get(list_events))
        .route("/_emulator/requests", get(list_requests))
        .route("/_emulator/counters", get(counters))
        .route("/_emulator/config", get(read_config).post(change_config))
}

/// A partial change to the run-time settings; absent parts stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChange {
    rate_limits: Option<RateLimits>,
    faults: Option<FaultConfig>,
    search_delay_ms: Option<u64>,
    fault_seed: Option<u64>,
    event_retention_seconds: Option<u64>,
}

fn handle(state: Arc<SharedState>) -> EmulatorHandle {
    EmulatorHandle { shared: state }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

async fn reset(State(state): State<Arc<SharedState>>) -> Json<Value> {
    handle(state).reset();
    Json(json!({"reset": true}))
}

async fn list_customers(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!({"data": handle(state).customers()}))
}

/// Body: one customer object or an array of them (see `EmulatorHandle::seed_customer`).
async fn seed_customers(State(state): State<Arc<SharedState>>, body: String) -> Response {
    let seeds = match serde_json::from_str::<Value>(&body) {
        Ok(Value::Array(seeds)) => seeds,
        Ok(seed) => vec![seed],
        Err(error) => return bad_request(format!("the body must be JSON: {error}")),
    };
    let handle = handle(state);
    let mut ids = Vec::new();
    for (index, seed) in seeds.into_iter().enumerate() {
        match handle.try_seed_customer(seed) {
            Ok(id) => ids.push(id),
            Err(error) => {
                return bad_request(format!(
                    "seed customer #{index}: {error} (the ones before it were stored: {ids:?})"
                ))
            }
        }
    }
    Json(json!({"ids": ids})).into_response()
}

/// Body: customer params as JSON (see `EmulatorHandle::update_customer`).
async fn update_customer(
    State(state): State<Arc<SharedState>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let params = match serde_json::from_str::<Value>(&body) {
        Ok(params) => params,
        Err(error) => return bad_request(format!("the body must be JSON: {error}")),
    };
    match handle(state).update_customer(&id, params) {
        Ok(customer) => Json(customer).into_response(),
        Err(error) => write_error(error),
    }
}

async fn delete_customer(
    State(state): State<Arc<SharedState>>,
    Path(id): Path<String>,
) -> Response {
    match handle(state).delete_customer(&id) {
        Ok(()) => Json(json!({"id": id, "deleted": true})).into_response(),
        Err(error) => write_error(error),
    }
}

fn write_error(error: CustomerWriteError) -> Response {
    let status = match error {
        CustomerWriteError::NoSuchCustomer(_) => StatusCode::NOT_FOUND,
        CustomerWriteError::NotAnObject | CustomerWriteError::InvalidParams(_) => {
            StatusCode::BAD_REQUEST
        }
    };
    (status, Json(json!({"error": error.to_string()}))).into_response()
}

/// A JSON body that is one object or an array of them; the error is the 400's message.
fn seeds_of(body: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Array(seeds)) => Ok(seeds),
        Ok(seed) => Ok(vec![seed]),
        Err(error) => Err(format!("the body must be JSON: {error}")),
    }
}

fn json_params(body: &str) -> Result<Value, String> {
    serde_json::from_str::<Value>(body).map_err(|error| format!("the body must be JSON: {error}"))
}

fn catalog_error(error: CatalogWriteError) -> Response {
    let status = match error {
        CatalogWriteError::NoSuch { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({"error": error.to_string()}))).into_response()
}

/// Seeds one object after another with `seed`; stops at the first that cannot be stored.
fn seed_all(
    body: &str,
    kind: &str,
    seed: impl Fn(Value) -> Result<String, CatalogWriteError>,
) -> Response {
    let seeds = match seeds_of(body) {
        Ok(seeds) => seeds,
        Err(message) => return bad_request(message),
    };
    let mut ids = Vec::new();
    for (index, value) in seeds.into_iter().enumerate() {
        match seed(value) {
            Ok(id) => ids.push(id),
            Err(error) => {
                let status = match error {
                    CatalogWriteError::NoSuch { .. } => StatusCode::NOT_FOUND,
                    _ => StatusCode::BAD_REQUEST,
                };
                let message = format!(
                    "seed {kind} #{index}: {error} (the ones before it were stored: {ids:?})"
                );
                return (status, Json(json!({"error": message}))).into_response();
            }
        }
    }
    Json(json!({"ids": ids})).into_response()
}

async fn list_products(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!({"data": handle(state).products()}))
}

/// Body: one product or an array of them (see `EmulatorHandle::seed_product`).
async fn seed_products(State(state): State<Arc<SharedState>>, body: String) -> Response {
    let handle = handle(state);
    seed_all(&body, "product", |seed| handle.try_seed_product(seed))
}

/// Body: product params as JSON (see `EmulatorHandle::update_product`).
async fn update_product(
    State(state): State<Arc<SharedState>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let params = match json_params(&body) {
        Ok(params) => params,
        Err(message) => return bad_request(message),
    };
    match handle(state).update_product(&id, params) {
        Ok(product) => Json(product).into_response(),
        Err(error) => catalog_error(error),
    }
}

async fn delete_product(State(state): State<Arc<SharedState>>, Path(id): Path<String>) -> Response {
    match handle(state).delete_product(&id) {
        Ok(()) => Json(json!({"id": id, "deleted": true})).into_response(),
        Err(error) => catalog_error(error),
    }
}

async fn list_subscriptions(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!({"data": handle(state).subscriptions()}))
}

async fn list_invoices(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!({"data": handle(state).invoices()}))
}

async fn list_invoice_items(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!({"data": handle(state).invoice_items()}))
}

async fn list_prices(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!({"data": handle(state).prices()}))
}

/// Body: one price or an array of them (see `EmulatorHandle::seed_price`).
async fn seed_prices(State(state): State<Arc<SharedState>>, body: String) -> Response {
    let handle = handle(state);
    seed_all(&body, "price", |seed| handle.try_seed_price(seed))
}

/// Body: price params as JSON (see `EmulatorHandle::update_price`).
async fn update_price(
    State(state): State<Arc<SharedState>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let params = match json_params(&body) {
        Ok(params) => params,
        Err(message) => return bad_request(message),
    };
    match handle(state).update_price(&id, params) {
        Ok(price) => Json(price).into_response(),
        Err(error) => catalog_error(error),
    }
}

async fn list_events(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!({"data": handle(state).events()}))
}

async fn list_requests(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!({"data": handle(state).requests()}))
}

async fn counters(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!(handle(state).counters()))
}

async fn read_config(State(state): State<Arc<SharedState>>) -> Json<Value> {
    Json(json!(handle(state).settings()))
}

async fn change_config(State(state): State<Arc<SharedState>>, body: String) -> Response {
    let change: ConfigChange = match serde_json::from_str(&body) {
        Ok(change) => change,
        Err(error) => return bad_request(format!("invalid config change: {error}")),
    };
    if let Some(faults) = &change.faults {
        if let Err(error) = faults.validate() {
            return bad_request(error.to_string());
        }
    }
    let handle = handle(state);
    if let Some(limits) = change.rate_limits {
        handle.set_rate_limits(limits);
    }
    if let Some(faults) = change.faults {
        handle.set_faults(faults);
    }
    if let Some(delay) = change.search_delay_ms {
        handle.set_search_delay(Duration::from_millis(delay));
    }
    if let Some(seed) = change.fault_seed {
        handle.set_fault_seed(seed);
    }
    if let Some(seconds) = change.event_retention_seconds {
        handle.set_event_retention(Duration::from_secs(seconds));
    }
    Json(json!(handle.settings())).into_response()
}
