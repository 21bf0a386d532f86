//! The product and price writes every door shares (`/v1`, [`crate::EmulatorHandle`],
//! `/_emulator`): each checks what needs stored state (does the product exist, is the lookup key
//! taken), stores its change and records its events while holding the catalog lock, so that the
//! event log is in the order the writes happened and no write goes without its events.

use std::time::Instant;

use serde_json::{json, Map, Value};

use ferry_stripe_wire::form::leaf_text;
use ferry_stripe_wire::params::boolean_of;
use ferry_stripe_wire::{ParamError, StripeError};

use crate::catalog::Catalog;
use crate::catalog_objects::{
    apply_price_update, apply_product_params, new_price, new_product, price_for_response,
};
use crate::customer_object::text_of;
use crate::events::{
    previous_attributes, EventSource, PRICE_CREATED, PRICE_UPDATED, PRODUCT_CREATED,
    PRODUCT_DELETED, PRODUCT_UPDATED,
};
use crate::state::{new_object_id, unix_now, SharedState};
use crate::store::SharedObject;

/// Why a catalog write did not happen.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The id in the path names nothing (404).
    Missing,
    /// A 400 found while executing: stored under the idempotency key, as on Stripe.
    Refused(StripeError),
}

impl From<ParamError> for Failure {
    fn from(error: ParamError) -> Failure {
        Failure::Refused(error.to_stripe_error())
    }
}

/// Where a new object comes from: its id, `created`, mode, and whether it is a fixture (seeded
/// objects' events happen when seeded, whatever `created` the fixture chose).
pub(crate) struct Origin {
    pub id: String,
    pub created: i64,
    pub livemode: bool,
    pub seeded: bool,
}

impl Origin {
    fn event_at(&self) -> i64 {
        if self.seeded {
            unix_now()
        } else {
            self.created
        }
    }
}

pub(crate) fn no_such(object: &str, id: &str, param: &str) -> StripeError {
    StripeError::invalid_request(format!("No such {object}: '{id}'"))
        .with_code("resource_missing")
        .with_param(param)
}

fn already_exists(object: &str, param: &str) -> StripeError {
    StripeError::invalid_request(format!("{object} already exists."))
        .with_code("resource_already_exists")
        .with_param(param)
}

fn refused(message: impl Into<String>, param: &str) -> Failure {
    Failure::Refused(StripeError::invalid_request(message).with_param(param))
}

/// Creates a product from validated create params and records `product.created`. A chosen id
/// that is taken is a 400 `resource_already_exists`.
pub(crate) fn create_product(
    state: &SharedState,
    origin: &Origin,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let mut product = new_product(&origin.id, origin.created, origin.livemode);
    apply_product_params(&mut product, params)?;
    let mut catalog = state.catalog();
    if catalog.products.contains(&origin.id) {
        return Err(Failure::Refused(already_exists("Product", "id")));
    }
    let stored = catalog.products.put(product);
    state.events().record(
        PRODUCT_CREATED,
        stored.clone(),
        None,
        source,
        origin.event_at(),
        Instant::now(),
    );
    Ok(stored)
}

/// Applies validated update params to a product and records `product.updated` with the previous
/// values of what changed (`updated` included); a change that changes nothing stores nothing and
/// records nothing. `default_price` must name an active price of this product.
pub(crate) fn update_product(
    state: &SharedState,
    id: &str,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let mut catalog = state.catalog();
    let current = catalog.products.get(id).ok_or(Failure::Missing)?;
    if let Some(price_id) = params
        .get("default_price")
        .map(text_of)
        .filter(|id| !id.is_empty())
    {
        let price = catalog
            .prices()
            .get(&price_id)
            .ok_or_else(|| Failure::Refused(no_such("price", &price_id, "default_price")))?;
        if price["product"].as_str() != Some(id) {
            return Err(refused(
                format!("The price `{price_id}` does not belong to this product; a product's default price must be one of its own prices."),
                "default_price",
            ));
        }
        if price["active"] == false {
            return Err(refused(
                "The price specified is inactive. This field only accepts active prices.",
                "default_price",
            ));
        }
    }
    let mut updated = (*current).clone();
    apply_product_params(&mut updated, params)?;
    if updated == *current {
        return Ok(current);
    }
    let previous_updated = current["updated"].as_i64().unwrap_or_default();
    updated.insert(
        "updated".to_owned(),
        json!(unix_now().max(previous_updated)),
    );
    let previous = previous_attributes(&current, &updated);
    let stored = catalog.products.put(updated);
    state.events().record(
        PRODUCT_UPDATED,
        stored.clone(),
        Some(previous),
        source,
        unix_now(),
        Instant::now(),
    );
    Ok(stored)
}

/// Deletes a product that has no prices (active or not) and records `product.deleted` carrying
/// the product as it was. Its id is free again afterwards.
pub(crate) fn delete_product(
    state: &SharedState,
    id: &str,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let mut catalog = state.catalog();
    if !catalog.products.contains(id) {
        return Err(Failure::Missing);
    }
    if catalog.product_has_prices(id) {
        return Err(Failure::Refused(StripeError::invalid_request(
            "This product cannot be deleted because it has one or more user-created prices.",
        )));
    }
    let deleted = catalog.products.remove(id).ok_or(Failure::Missing)?;
    state.events().record(
        PRODUCT_DELETED,
        deleted.clone(),
        None,
        source,
        unix_now(),
        Instant::now(),
    );
    Ok(deleted)
}

/// Creates a price from validated create params: its product must exist (or `product_data`
/// creates one, recording `product.created` first); its lookup key must be free unless
/// `transfer_lookup_key=true`, which takes it from the price holding it (recording that price's
/// `price.updated`). Records `price.created`. Everything is checked before anything is stored.
pub(crate) fn create_price(
    state: &SharedState,
    origin: &Origin,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let mut catalog = state.catalog();
    if catalog.prices().contains(&origin.id) {
        return Err(Failure::Refused(already_exists("Price", "id")));
    }
    let (product_id, new_product) = match (params.get("product"), params.get("product_data")) {
        (Some(product), _) => {
            let product_id = text_of(product);
            if !catalog.products.contains(&product_id) {
                return Err(Failure::Refused(no_such("product", &product_id, "product")));
            }
            (product_id, None)
        }
        (None, Some(Value::Object(product_data))) => {
            let product_id = product_data
                .get("id")
                .map(text_of)
                .unwrap_or_else(|| new_object_id("prod"));
            if catalog.products.contains(&product_id) {
                return Err(Failure::Refused(already_exists(
                    "Product",
                    "product_data[id]",
                )));
            }
            let mut product = new_product(&product_id, origin.created, origin.livemode);
            apply_product_params(&mut product, product_data)?;
            (product_id, Some(product))
        }
        // `price_rules` requires one of them.
        _ => return Err(Failure::Refused(no_such("product", "", "product"))),
    };
    let transfer = params
        .get("transfer_lookup_key")
        .and_then(boolean_of)
        .unwrap_or(false);
    let holder = claim_lookup_key(&catalog, params, None, transfer)?;
    let price = new_price(
        &origin.id,
        origin.created,
        origin.livemode,
        &product_id,
        params,
    )?;

    let now = Instant::now();
    if let Some(product) = new_product {
        let stored = catalog.products.put(product);
        state.events().record(
            PRODUCT_CREATED,
            stored,
            None,
            source,
            origin.event_at(),
            now,
        );
    }
    if let Some(holder) = holder {
        release_lookup_key(state, &mut catalog, &holder, source);
    }
    let stored = catalog.put_price(price);
    state.events().record(
        PRICE_CREATED,
        event_object(&stored),
        None,
        source,
        origin.event_at(),
        now,
    );
    Ok(stored)
}

/// Applies validated update params to a price and records `price.updated`. `tax_behavior`
/// cannot change once `inclusive` or `exclusive`; a product's default price cannot be archived;
/// a lookup key held by another price is refused unless `transfer_lookup_key=true`.
pub(crate) fn update_price(
    state: &SharedState,
    id: &str,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let mut catalog = state.catalog();
    let current = catalog.prices().get(id).ok_or(Failure::Missing)?;
    if let Some(tax_behavior) = params.get("tax_behavior").map(text_of) {
        let old = current["tax_behavior"].as_str().unwrap_or("unspecified");
        if old != "unspecified" && old != tax_behavior {
            return Err(refused(
                "The tax behavior of a price cannot be changed once it is `inclusive` or `exclusive`.",
                "tax_behavior",
            ));
        }
    }
    if params.get("active").and_then(boolean_of) == Some(false) {
        let product_id = current["product"].as_str().unwrap_or_default();
        let is_default = catalog
            .products
            .get(product_id)
            .is_some_and(|product| product["default_price"].as_str() == Some(id));
        if is_default {
            return Err(refused(
                "This price cannot be archived because it is the default price of its product. Set another default price on the product first.",
                "active",
            ));
        }
    }
    let transfer = params
        .get("transfer_lookup_key")
        .and_then(boolean_of)
        .unwrap_or(false);
    let holder = claim_lookup_key(&catalog, params, Some(id), transfer)?;
    let mut updated = (*current).clone();
    apply_price_update(&mut updated, params)?;
    if updated == *current && holder.is_none() {
        return Ok(current);
    }
    if let Some(holder) = holder {
        release_lookup_key(state, &mut catalog, &holder, source);
    }
    let previous = previous_attributes(
        &price_for_response(&current, false),
        &price_for_response(&updated, false),
    );
    let stored = catalog.put_price(updated);
    state.events().record(
        PRICE_UPDATED,
        event_object(&stored),
        Some(previous),
        source,
        unix_now(),
        Instant::now(),
    );
    Ok(stored)
}

/// The price that holds the lookup key these params ask for, when it is another price and
/// `transfer_lookup_key=true`; a 400 when it is another price and no transfer is asked.
fn claim_lookup_key(
    catalog: &Catalog,
    params: &Map<String, Value>,
    own_id: Option<&str>,
    transfer: bool,
) -> Result<Option<String>, Failure> {
    let Some(key) = params.get("lookup_key").and_then(leaf_text) else {
        return Ok(None);
    };
    if key.is_empty() {
        return Ok(None);
    }
    match catalog.lookup_key_holder(&key) {
        Some(holder) if Some(holder) != own_id => {
            if transfer {
                Ok(Some(holder.to_owned()))
            } else {
                Err(refused(
                    format!("A price (`{holder}`) already uses that lookup key."),
                    "lookup_key",
                ))
            }
        }
        _ => Ok(None),
    }
}

/// Takes the lookup key away from the price holding it (which stays active) and records its
/// `price.updated`.
fn release_lookup_key(
    state: &SharedState,
    catalog: &mut Catalog,
    holder_id: &str,
    source: &EventSource,
) {
    let Some(holder) = catalog.prices().get(holder_id) else {
        return;
    };
    let mut released = (*holder).clone();
    released.insert("lookup_key".to_owned(), Value::Null);
    let previous = previous_attributes(
        &price_for_response(&holder, false),
        &price_for_response(&released, false),
    );
    let stored = catalog.put_price(released);
    state.events().record(
        PRICE_UPDATED,
        event_object(&stored),
        Some(previous),
        source,
        unix_now(),
        Instant::now(),
    );
}

/// A price as its events show it: as a response without expansion (no `tiers`).
fn event_object(price: &SharedObject) -> SharedObject {
    if price.contains_key("tiers") {
        std::sync::Arc::new(price_for_response(price, false))
    } else {
        price.clone()
    }
}
