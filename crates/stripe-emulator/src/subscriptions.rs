//! Subscriptions: the object as Stripe returns it, and the writes every door shares (create,
//! update, cancel), each checking what needs stored state (the customer exists; each price
//! exists, is recurring and active; the items share currency and interval) and recording its
//! `customer.subscription.*` event while holding the catalog lock, where subscriptions live with
//! the prices they name.
//!
//! The emulator has no payment methods and no invoices: a subscription collected automatically
//! starts `incomplete` (its first payment cannot be made), one collected by invoice starts
//! `active`, and one with a trial `trialing`. Periods do not advance on their own.

use std::time::Instant;

use serde_json::{json, Map, Value};

use ferry_stripe_wire::form::leaf_text;
use ferry_stripe_wire::params::{boolean_of, integer_of};
use ferry_stripe_wire::subscription::{
    days_until_due_without_send_invoice, item_is_deleted, TRIAL_END_NOW,
};
use ferry_stripe_wire::{ParamError, Problem, StripeError};

use crate::catalog::{Catalog, PageQuery};
use crate::catalog_objects::{nullable_text, object, price_for_response, text_is};
use crate::catalog_writes::{no_such, Failure, Origin};
use crate::customer_object::{merge_metadata, text_of};
use crate::events::{
    previous_attributes, EventSource, SUBSCRIPTION_CREATED, SUBSCRIPTION_DELETED,
    SUBSCRIPTION_UPDATED,
};
use crate::state::{new_object_id, unix_now, SharedState};
use crate::store::{Lookup, SharedObject};

/// What `status` of `GET /v1/subscriptions` accepts.
pub(crate) const LIST_STATUSES: &[&str] = &[
    "active",
    "all",
    "canceled",
    "ended",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
];

pub(crate) const CANCELED_ONLY_METADATA: &str =
    "A canceled subscription can only update its cancellation_details and metadata.";

fn refused(message: impl Into<String>, param: &str) -> Failure {
    Failure::Refused(StripeError::invalid_request(message).with_param(param))
}

/// `trial_end` as sent: `now` or a timestamp, which must be in the future.
enum TrialEnd {
    Now,
    At(i64),
}

fn trial_end_of(params: &Map<String, Value>, now: i64) -> Result<Option<TrialEnd>, Failure> {
    let Some(text) = params.get("trial_end").and_then(leaf_text) else {
        return Ok(None);
    };
    if text == TRIAL_END_NOW {
        return Ok(Some(TrialEnd::Now));
    }
    match text.parse::<i64>() {
        Ok(at) if at > now => Ok(Some(TrialEnd::At(at))),
        _ => Err(refused(
            "Invalid timestamp: must be an integer Unix timestamp in the future.",
            "trial_end",
        )),
    }
}

/// The price an item names, as a response shows it: it must exist, be recurring and be active.
fn item_price(catalog: &Catalog, price_id: &str, param: &str) -> Result<Value, Failure> {
    let price = catalog
        .prices()
        .get(price_id)
        .ok_or_else(|| Failure::Refused(no_such("price", price_id, param)))?;
    if price["type"].as_str() != Some("recurring") {
        return Err(refused(
            "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
            param,
        ));
    }
    if price["active"] == false {
        return Err(refused(
            "The price specified is inactive. This field only accepts active prices.",
            param,
        ));
    }
    Ok(Value::Object(price_for_response(&price, false)))
}

fn new_item(subscription_id: &str, created: i64, price: Value) -> Map<String, Value> {
    object(json!({
        "id": new_object_id("si"),
        "object": "subscription_item",
        "created": created,
        "metadata": {},
        "price": price,
        "quantity": 1,
        "subscription": subscription_id,
    }))
}

/// Sets an item's `quantity` and merges its `metadata` from item params.
fn apply_item_params(
    item: &mut Map<String, Value>,
    params: &Map<String, Value>,
    index: usize,
) -> Result<(), Failure> {
    if let Some(quantity) = params.get("quantity").and_then(integer_of) {
        item.insert("quantity".to_owned(), json!(quantity));
    }
    if let Some(metadata) = params.get("metadata") {
        let clear_all = leaf_text(metadata).as_deref() == Some("");
        merge_metadata(item, metadata, clear_all).map_err(|error| {
            Failure::from(ParamError::new(
                format!("items[{index}][metadata]"),
                error.problem,
            ))
        })?;
    }
    Ok(())
}

/// The rules across a subscription's items: no price twice, one interval, one currency.
fn check_item_set(items: &[Map<String, Value>]) -> Result<(), Failure> {
    for (index, item) in items.iter().enumerate() {
        let price_id = item["price"]["id"].as_str().unwrap_or_default();
        if items[..index]
            .iter()
            .any(|earlier| earlier["price"]["id"].as_str() == Some(price_id))
        {
            return Err(refused(
                format!("Cannot add multiple subscription items with the same price: {price_id}"),
                "items",
            ));
        }
    }
    let Some(first) = items.first() else {
        return Ok(());
    };
    let interval = |item: &Map<String, Value>| {
        (
            item["price"]["recurring"]["interval"].clone(),
            item["price"]["recurring"]["interval_count"].clone(),
        )
    };
    for (field, differs) in [
        (
            "interval",
            items.iter().any(|item| interval(item) != interval(first)),
        ),
        (
            "currency",
            items
                .iter()
                .any(|item| item["price"]["currency"] != first["price"]["currency"]),
        ),
    ] {
        if differs {
            return Err(refused(
                format!("Currency and interval fields must match across all plans on this subscription. Found mismatch in {field} field."),
                "items",
            ));
        }
    }
    Ok(())
}

fn items_of(subscription: &Map<String, Value>) -> Vec<Map<String, Value>> {
    subscription["items"]["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_object().cloned())
                .collect()
        })
        .unwrap_or_default()
}

fn set_items(subscription: &mut Map<String, Value>, items: Vec<Map<String, Value>>) {
    let id = subscription["id"].as_str().unwrap_or_default().to_owned();
    let currency = items
        .first()
        .map(|item| item["price"]["currency"].clone())
        .unwrap_or(Value::Null);
    subscription.insert("currency".to_owned(), currency);
    subscription.insert(
        "items".to_owned(),
        json!({
            "object": "list",
            "data": items,
            "has_more": false,
            "total_count": items.len(),
            "url": format!("/v1/subscription_items?subscription={id}"),
        }),
    );
}

/// When a period that starts at `start` ends, for the price of the subscription's first item.
fn period_end(start: i64, items: &[Map<String, Value>]) -> i64 {
    let recurring = items
        .first()
        .map(|item| item["price"]["recurring"].clone())
        .unwrap_or(Value::Null);
    let count = recurring["interval_count"].as_i64().unwrap_or(1);
    add_interval(
        start,
        recurring["interval"].as_str().unwrap_or("month"),
        count,
    )
}

/// `start` plus `count` intervals; months and years are calendar months and years (UTC), the
/// day of the month clamped to the length of the month reached (Jan 31 + 1 month = Feb 28/29).
pub(crate) fn add_interval(start: i64, interval: &str, count: i64) -> i64 {
    const DAY: i64 = 86_400;
    match interval {
        "day" => start + count * DAY,
        "week" => start + count * 7 * DAY,
        "year" => add_months(start, count * 12),
        _ => add_months(start, count),
    }
}

fn add_months(start: i64, months: i64) -> i64 {
    let Some(at) = chrono::DateTime::from_timestamp(start, 0) else {
        return start;
    };
    let moved = match u32::try_from(months) {
        Ok(months) => at.checked_add_months(chrono::Months::new(months)),
        Err(_) => at.checked_sub_months(chrono::Months::new(months.unsigned_abs() as u32)),
    };
    moved.map_or(start, |moved| moved.timestamp())
}

/// Creates a subscription from validated create params and records
/// `customer.subscription.created`. Everything is checked before anything is stored.
pub(crate) fn create_subscription(
    state: &SharedState,
    origin: &Origin,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let customer_id = params.get("customer").map(text_of).unwrap_or_default();
    // Held until the subscription is stored, so that a customer deleted meanwhile cannot keep a
    // subscription its deletion did not cancel.
    let store = state.store();
    if !matches!(store.get(&customer_id), Lookup::Live(_)) {
        return Err(Failure::Refused(no_such(
            "customer",
            &customer_id,
            "customer",
        )));
    }
    let now = origin.created;
    let trial_end = match trial_end_of(params, now)? {
        Some(TrialEnd::At(at)) => Some(at),
        Some(TrialEnd::Now) | None => None,
    };
    let mut catalog = state.catalog();
    let mut items = Vec::new();
    if let Some(Value::Array(sent)) = params.get("items") {
        for (index, item_params) in sent.iter().enumerate() {
            let Value::Object(item_params) = item_params else {
                continue;
            };
            let price_id = item_params.get("price").map(text_of).unwrap_or_default();
            let price = item_price(&catalog, &price_id, &format!("items[{index}][price]"))?;
            let mut item = new_item(&origin.id, now, price);
            apply_item_params(&mut item, item_params, index)?;
            items.push(item);
        }
    }
    check_item_set(&items)?;
    let collection_method = params
        .get("collection_method")
        .map(text_of)
        .unwrap_or_else(|| "charge_automatically".to_owned());
    let status = match (trial_end, collection_method.as_str()) {
        (Some(_), _) => "trialing",
        (None, "send_invoice") => "active",
        (None, _) => "incomplete",
    };
    let period_end = trial_end.unwrap_or_else(|| period_end(now, &items));
    let cancel_at_period_end = params
        .get("cancel_at_period_end")
        .and_then(boolean_of)
        .unwrap_or(false);
    let mut subscription = object(json!({
        "id": origin.id,
        "object": "subscription",
        "billing_cycle_anchor": trial_end.unwrap_or(now),
        "cancel_at": if cancel_at_period_end { json!(period_end) } else { Value::Null },
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": null,
        "collection_method": collection_method,
        "created": now,
        "currency": null,
        "current_period_end": period_end,
        "current_period_start": now,
        "customer": customer_id,
        "days_until_due": params.get("days_until_due").and_then(integer_of),
        "description": params.get("description").map(nullable_text).unwrap_or(Value::Null),
        "ended_at": null,
        "items": null,
        "livemode": origin.livemode,
        "metadata": {},
        "start_date": now,
        "status": status,
        "trial_end": trial_end,
        "trial_start": trial_end.map(|_| now),
    }));
    set_items(&mut subscription, items);
    if let Some(metadata) = params.get("metadata") {
        merge_metadata(&mut subscription, metadata, false)?;
    }
    let stored = catalog.subscriptions.put(subscription);
    state.events().record(
        SUBSCRIPTION_CREATED,
        stored.clone(),
        None,
        source,
        now,
        Instant::now(),
    );
    drop(catalog);
    drop(store);
    Ok(stored)
}

/// Applies validated update params to a subscription and records
/// `customer.subscription.updated` with the previous values of what changed; a change that
/// changes nothing stores nothing and records nothing. A canceled subscription takes `metadata`
/// only.
pub(crate) fn update_subscription(
    state: &SharedState,
    id: &str,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let mut catalog = state.catalog();
    let stored = catalog.subscriptions.get(id).ok_or(Failure::Missing)?;
    // Compared and stored with its items' prices as they are now, so that a price changed since
    // the last write is neither a change of the subscription nor shown stale by its event.
    let current = for_response(&catalog, &stored);
    if current["status"] == "canceled"
        && params
            .keys()
            .any(|name| name != "metadata" && name != "expand")
    {
        return Err(Failure::Refused(StripeError::invalid_request(
            CANCELED_ONLY_METADATA,
        )));
    }
    let trial_end = trial_end_of(params, now)?;
    let mut updated = current.clone();
    if let Some(Value::Array(sent)) = params.get("items") {
        let mut items = items_of(&updated);
        for (index, item_params) in sent.iter().enumerate() {
            let Value::Object(item_params) = item_params else {
                continue;
            };
            let price = match item_params.get("price").map(text_of) {
                Some(price_id) if !item_is_deleted(item_params) => Some(item_price(
                    &catalog,
                    &price_id,
                    &format!("items[{index}][price]"),
                )?),
                _ => None,
            };
            match item_params.get("id").map(text_of) {
                Some(item_id) => {
                    let Some(position) = items
                        .iter()
                        .position(|item| item["id"].as_str() == Some(item_id.as_str()))
                    else {
                        return Err(Failure::Refused(
                            StripeError::invalid_request(format!(
                                "No such subscription item: '{item_id}'"
                            ))
                            .with_code("resource_missing")
                            .with_param(format!("items[{index}][id]")),
                        ));
                    };
                    if item_is_deleted(item_params) {
                        items.remove(position);
                        continue;
                    }
                    let item = &mut items[position];
                    if let Some(price) = price {
                        item.insert("price".to_owned(), price);
                    }
                    apply_item_params(item, item_params, index)?;
                }
                None => {
                    // `subscription_rules` makes a new item name its price.
                    let price = price.unwrap_or(Value::Null);
                    let mut item = new_item(id, now, price);
                    apply_item_params(&mut item, item_params, index)?;
                    items.push(item);
                }
            }
        }
        if items.is_empty() {
            return Err(refused(
                "A subscription must keep at least one item. To end it, cancel the subscription.",
                "items",
            ));
        }
        check_item_set(&items)?;
        let interval = |items: &[Map<String, Value>]| {
            items
                .first()
                .map(|item| item["price"]["recurring"].clone())
                .map(|recurring| {
                    (
                        recurring["interval"].clone(),
                        recurring["interval_count"].clone(),
                    )
                })
        };
        // A new billing interval starts a new period now (unless in a trial), as on Stripe.
        if interval(&items) != interval(&items_of(&current)) && updated["status"] != "trialing" {
            let period_end = period_end(now, &items);
            for (field, value) in [
                ("billing_cycle_anchor", json!(now)),
                ("current_period_start", json!(now)),
                ("current_period_end", json!(period_end)),
            ] {
                updated.insert(field.to_owned(), value);
            }
        }
        set_items(&mut updated, items);
    }
    if let Some(method) = params.get("collection_method").map(text_of) {
        if method == "charge_automatically" {
            updated.insert("days_until_due".to_owned(), Value::Null);
        }
        updated.insert("collection_method".to_owned(), Value::String(method));
    }
    if let Some(days) = params.get("days_until_due").and_then(integer_of) {
        if updated["collection_method"] != "send_invoice" {
            return Err(days_until_due_without_send_invoice().into());
        }
        updated.insert("days_until_due".to_owned(), json!(days));
    }
    if updated["collection_method"] == "send_invoice" && updated["days_until_due"].is_null() {
        return Err(ParamError::new("days_until_due", Problem::Missing).into());
    }
    if let Some(description) = params.get("description") {
        updated.insert("description".to_owned(), nullable_text(description));
    }
    match trial_end {
        Some(TrialEnd::Now) if updated["status"] == "trialing" => {
            let status = if updated["collection_method"] == "send_invoice" {
                "active"
            } else {
                // The trial ends, the first invoice cannot be paid: no payment method.
                "past_due"
            };
            let period_end = period_end(now, &items_of(&updated));
            for (field, value) in [
                ("status", json!(status)),
                ("trial_end", json!(now)),
                ("billing_cycle_anchor", json!(now)),
                ("current_period_start", json!(now)),
                ("current_period_end", json!(period_end)),
            ] {
                updated.insert(field.to_owned(), value);
            }
        }
        Some(TrialEnd::At(at)) => {
            if updated["trial_start"].is_null() || updated["status"] != "trialing" {
                updated.insert("trial_start".to_owned(), json!(now));
            }
            for (field, value) in [
                ("status", json!("trialing")),
                ("trial_end", json!(at)),
                ("billing_cycle_anchor", json!(at)),
                ("current_period_end", json!(at)),
            ] {
                updated.insert(field.to_owned(), value);
            }
        }
        Some(TrialEnd::Now) | None => {}
    }
    if let Some(flag) = params.get("cancel_at_period_end").and_then(boolean_of) {
        updated.insert("cancel_at_period_end".to_owned(), json!(flag));
    }
    let cancel_at = if updated["cancel_at_period_end"] == true {
        updated["current_period_end"].clone()
    } else {
        Value::Null
    };
    updated.insert("cancel_at".to_owned(), cancel_at);
    if let Some(metadata) = params.get("metadata") {
        let clear_all = leaf_text(metadata).as_deref() == Some("");
        merge_metadata(&mut updated, metadata, clear_all)?;
    }
    if updated == current {
        return Ok(stored);
    }
    let previous = previous_attributes(&current, &updated);
    let stored = catalog.subscriptions.put(updated);
    state.events().record(
        SUBSCRIPTION_UPDATED,
        stored.clone(),
        Some(previous),
        source,
        now,
        Instant::now(),
    );
    Ok(stored)
}

/// Cancels a subscription at once (`DELETE /v1/subscriptions/{id}`) and records
/// `customer.subscription.deleted` carrying it canceled. It stays retrievable; cancelling it
/// again is a 400.
pub(crate) fn cancel_subscription(
    state: &SharedState,
    id: &str,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let mut catalog = state.catalog();
    let current = catalog.subscriptions.get(id).ok_or(Failure::Missing)?;
    if current["status"] == "canceled" {
        return Err(Failure::Refused(StripeError::invalid_request(format!(
            "The subscription '{id}' has already been canceled: a canceled subscription cannot be canceled again."
        ))));
    }
    let current = for_response(&catalog, &current);
    Ok(cancel_stored(state, &mut catalog, &current, source, now))
}

/// Cancels every subscription of a customer being deleted that has not ended, recording each
/// one's `customer.subscription.deleted`, as Stripe does when a customer is deleted. The caller
/// holds the customer store (lock order: store, catalog, events).
pub(crate) fn cancel_customer_subscriptions(
    state: &SharedState,
    customer_id: &str,
    source: &EventSource,
) {
    let now = unix_now();
    let mut catalog = state.catalog();
    let mut open: Vec<SharedObject> = catalog
        .subscriptions
        .values()
        .filter(|subscription| {
            subscription["customer"].as_str() == Some(customer_id)
                && !matches!(
                    subscription["status"].as_str(),
                    Some("canceled" | "incomplete_expired")
                )
        })
        .cloned()
        .collect();
    open.sort_by_key(|subscription| subscription["created"].as_i64());
    for subscription in open {
        let current = for_response(&catalog, &subscription);
        cancel_stored(state, &mut catalog, &current, source, now);
    }
}

fn cancel_stored(
    state: &SharedState,
    catalog: &mut Catalog,
    current: &Map<String, Value>,
    source: &EventSource,
    now: i64,
) -> SharedObject {
    let mut canceled = current.clone();
    for (field, value) in [
        ("status", json!("canceled")),
        ("canceled_at", json!(now)),
        ("ended_at", json!(now)),
    ] {
        canceled.insert(field.to_owned(), value);
    }
    let stored = catalog.subscriptions.put(canceled);
    state.events().record(
        SUBSCRIPTION_DELETED,
        stored.clone(),
        None,
        source,
        now,
        Instant::now(),
    );
    stored
}

/// A subscription as a read shows it: each item's price as the price is now.
pub(crate) fn for_response(
    catalog: &Catalog,
    subscription: &Map<String, Value>,
) -> Map<String, Value> {
    let mut shown = subscription.clone();
    let mut items = items_of(subscription);
    for item in &mut items {
        let current = item["price"]["id"]
            .as_str()
            .and_then(|price_id| catalog.prices().get(price_id));
        if let Some(price) = current {
            item.insert(
                "price".to_owned(),
                Value::Object(price_for_response(&price, false)),
            );
        }
    }
    replace_item_data(&mut shown, items);
    shown
}

fn replace_item_data(subscription: &mut Map<String, Value>, items: Vec<Map<String, Value>>) {
    if let Some(Value::Object(list)) = subscription.get_mut("items") {
        list.insert("data".to_owned(), json!(items));
    }
}

/// Filters and cursor of `GET /v1/subscriptions`, already validated.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionListQuery {
    pub page: PageQuery,
    pub customer: Option<String>,
    pub price: Option<String>,
    /// `None`: every status but `canceled` and `incomplete_expired`, as on Stripe.
    pub status: Option<String>,
    pub collection_method: Option<String>,
}

impl SubscriptionListQuery {
    pub(crate) fn keeps(&self, subscription: &Map<String, Value>) -> bool {
        let status = subscription["status"].as_str().unwrap_or_default();
        let status_kept = match self.status.as_deref() {
            None => status != "canceled" && status != "incomplete_expired",
            Some("all") => true,
            Some("ended") => status == "canceled" || status == "incomplete_expired",
            Some(wanted) => status == wanted,
        };
        status_kept
            && text_is(subscription, "customer", &self.customer)
            && text_is(subscription, "collection_method", &self.collection_method)
            && self.price.as_ref().is_none_or(|price| {
                items_of(subscription)
                    .iter()
                    .any(|item| item["price"]["id"].as_str() == Some(price.as_str()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_add_calendar_months_and_years() {
        // 2024-01-31T12:00:00Z
        let jan_31 = 1_706_702_400;
        // 2024-02-29T12:00:00Z (leap year), 2024-03-31, 2025-01-31
        assert_eq!(add_interval(jan_31, "month", 1), 1_709_208_000);
        assert_eq!(add_interval(jan_31, "month", 2), 1_711_886_400);
        assert_eq!(add_interval(jan_31, "year", 1), 1_738_324_800);
        assert_eq!(add_interval(jan_31, "week", 2), jan_31 + 14 * 86_400);
        assert_eq!(add_interval(jan_31, "day", 3), jan_31 + 3 * 86_400);
    }
}
