//! The customer writes every door shares (`/v1`, [`crate::EmulatorHandle`], `/_emulator`): each
//! stores its change and records its event while holding the store lock, so that the event log
//! is in the order the writes happened and no write goes without its event.

use std::time::Instant;

use serde_json::{Map, Value};

use ferry_stripe_wire::ParamError;

use crate::customer_object::apply_params;
use crate::events::{
    previous_attributes, EventSource, CUSTOMER_CREATED, CUSTOMER_DELETED, CUSTOMER_UPDATED,
};
use crate::state::{unix_now, SharedState};
use crate::store::{Customer, Lookup};

/// Why an update or delete did not happen.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// Unknown or already deleted.
    NoSuchCustomer,
    /// The params cannot apply (merged metadata over 50 keys).
    Rejected(ParamError),
}

/// A customer with this id exists already (seeding with a chosen id).
#[derive(Debug)]
pub(crate) struct DuplicateId;

/// Stores a new customer and records `customer.created`, at the customer's `created` second for
/// a `/v1` create. Seeded customers (`seeded`) are visible to search at once, as if written long
/// ago, but their event happens now: whatever `created` a fixture chose, someone made the customer
/// just now as far as a reader of events can tell.
pub(crate) fn create_customer(
    state: &SharedState,
    customer: Map<String, Value>,
    seeded: bool,
    source: &EventSource,
) -> Result<Customer, DuplicateId> {
    let id = customer["id"].as_str().unwrap_or_default();
    let mut store = state.store();
    if !matches!(store.get(id), Lookup::Missing) {
        return Err(DuplicateId);
    }
    let at = match customer["created"].as_i64() {
        Some(created) if !seeded => created,
        _ => unix_now(),
    };
    let now = Instant::now();
    let stored = store.insert(customer, (!seeded).then_some(now));
    state
        .events()
        .record(CUSTOMER_CREATED, stored.clone(), None, source, at, now);
    Ok(stored)
}

/// Applies validated update params and records `customer.updated` with the previous values of
/// what changed. An update that changes nothing stores nothing and records no event, as on
/// Stripe; it still answers with the customer.
pub(crate) fn update_customer(
    state: &SharedState,
    id: &str,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<Customer, WriteError> {
    let mut store = state.store();
    let Lookup::Live(current) = store.get(id) else {
        return Err(WriteError::NoSuchCustomer);
    };
    let mut updated = (*current).clone();
    apply_params(&mut updated, params).map_err(WriteError::Rejected)?;
    if updated == *current {
        return Ok(current);
    }
    let previous = previous_attributes(&current, &updated);
    let now = Instant::now();
    let stored = store.replace(updated, now);
    state.events().record(
        CUSTOMER_UPDATED,
        stored.clone(),
        Some(previous),
        source,
        unix_now(),
        now,
    );
    Ok(stored)
}

/// Deletes a live customer and records `customer.deleted` carrying the customer as it was, after
/// cancelling its subscriptions (each with its `customer.subscription.deleted`), as Stripe does.
pub(crate) fn delete_customer(
    state: &SharedState,
    id: &str,
    source: &EventSource,
) -> Result<Customer, WriteError> {
    let mut store = state.store();
    let now = Instant::now();
    let deleted = store.delete(id, now).ok_or(WriteError::NoSuchCustomer)?;
    crate::subscriptions::cancel_customer_subscriptions(state, id, source);
    state.events().record(
        CUSTOMER_DELETED,
        deleted.clone(),
        None,
        source,
        unix_now(),
        now,
    );
    Ok(deleted)
}
