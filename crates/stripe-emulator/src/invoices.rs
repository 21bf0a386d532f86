//! Invoices and invoice items: the objects as Stripe returns them, and the writes every door
//! shares (create, update, delete, and an invoice's transitions: finalize, send, void, mark
//! uncollectible, pay), each checking what needs stored state (the customer exists; an item's
//! invoice is a draft of the same customer with room for it; an item's price is one-time and
//! active; which parameters an invoice still takes in its status) and recording its
//! `invoice.*` / `invoiceitem.*` events while holding the catalog lock, where invoices live
//! with the prices their items name.
//!
//! An invoice's `lines`, `subtotal`, `total` and amounts are worked out from its items whenever
//! an item of a draft changes, and stored: a read shows what was stored. The emulator has no
//! payment methods: an invoice is paid with `paid_out_of_band=true` only, and one whose amount
//! due is zero is paid when it is finalized, as on Stripe.

use std::time::Instant;

use serde_json::{json, Map, Value};

use ferry_stripe_wire::form::leaf_text;
use ferry_stripe_wire::invoice::{
    due_without_send_invoice, FINALIZED_CANNOT_CHANGE, FINALIZED_UPDATABLE, INVOICE_ITEMS_MAX,
    OPEN_UPDATABLE,
};
use ferry_stripe_wire::params::{boolean_of, integer_of};
use ferry_stripe_wire::{ParamError, Problem, StripeError};

use crate::catalog::{Catalog, PageQuery};
use crate::catalog_objects::{
    normalize_decimal, nullable_text, object, price_for_response, text_is,
};
use crate::catalog_writes::{no_such, Failure, Origin};
use crate::customer_object::{merge_metadata, text_of};
use crate::events::{
    previous_attributes, EventSource, INVOICEITEM_CREATED, INVOICEITEM_DELETED,
    INVOICEITEM_UPDATED, INVOICE_CREATED, INVOICE_DELETED, INVOICE_FINALIZED,
    INVOICE_MARKED_UNCOLLECTIBLE, INVOICE_PAID, INVOICE_SENT, INVOICE_UPDATED, INVOICE_VOIDED,
};
use crate::state::{unix_now, SharedState};
use crate::store::{Lookup, SharedObject, UnknownCursor};

/// How many lines an invoice shows in its `lines` (the rest through `/lines`), as on Stripe.
const INLINE_LINES: usize = 10;
const DAY: i64 = 86_400;

fn refused(message: impl Into<String>, param: &str) -> Failure {
    Failure::Refused(StripeError::invalid_request(message).with_param(param))
}

fn refused_without_param(message: impl Into<String>) -> Failure {
    Failure::Refused(StripeError::invalid_request(message))
}

/// Creates a draft invoice from validated create params and records `invoice.created`. With
/// `pending_invoice_items_behavior=include` (or `include_and_require`, which needs at least one)
/// the customer's pending items in the invoice's currency join it; the default is `exclude`.
pub(crate) fn create_invoice(
    state: &SharedState,
    origin: &Origin,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let text = |name: &str| params.get(name).map(text_of);
    let customer_id = text("customer").unwrap_or_default();
    // Held until the invoice is stored, so that the customer cannot go meanwhile.
    let store = state.store();
    let Lookup::Live(customer) = store.get(&customer_id) else {
        return Err(Failure::Refused(no_such(
            "customer",
            &customer_id,
            "customer",
        )));
    };
    let now = origin.created;
    let currency = text("currency")
        .map(|currency| currency.to_ascii_lowercase())
        .or_else(|| customer["currency"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "usd".to_owned());
    let collection_method =
        text("collection_method").unwrap_or_else(|| "charge_automatically".to_owned());
    let due_date = match (
        params.get("due_date").and_then(integer_of),
        params.get("days_until_due").and_then(integer_of),
    ) {
        (Some(at), _) => json!(at),
        (None, Some(days)) => json!(now + days * DAY),
        (None, None) => Value::Null,
    };
    let mut invoice = object(json!({
        "id": origin.id,
        "object": "invoice",
        "amount_due": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "auto_advance": params.get("auto_advance").and_then(boolean_of).unwrap_or(false),
        "collection_method": collection_method,
        "created": now,
        "currency": currency,
        "customer": customer_id,
        "description": params.get("description").map(nullable_text).unwrap_or(Value::Null),
        "due_date": due_date,
        "footer": params.get("footer").map(nullable_text).unwrap_or(Value::Null),
        "lines": null,
        "livemode": origin.livemode,
        "metadata": {},
        "number": null,
        "paid": false,
        "paid_out_of_band": false,
        "period_end": now,
        "period_start": now,
        "status": "draft",
        "status_transitions": {
            "finalized_at": null,
            "marked_uncollectible_at": null,
            "paid_at": null,
            "voided_at": null,
        },
        "subtotal": 0,
        "total": 0,
    }));
    if let Some(metadata) = params.get("metadata") {
        merge_metadata(&mut invoice, metadata, false)?;
    }
    let mut catalog = state.catalog();
    let behavior = text("pending_invoice_items_behavior").unwrap_or_else(|| "exclude".to_owned());
    let mut pending = Vec::new();
    if behavior != "exclude" {
        pending = pending_items(&catalog, &customer_id, &currency);
        if pending.is_empty() && behavior == "include_and_require" {
            return Err(refused_without_param("Nothing to invoice for customer"));
        }
        if pending.len() > INVOICE_ITEMS_MAX {
            return Err(refused(
                too_many_items_message(),
                "pending_invoice_items_behavior",
            ));
        }
    }
    for item in pending {
        let mut item = (*item).clone();
        item.insert("invoice".to_owned(), json!(origin.id));
        catalog.put_invoice_item(item);
    }
    set_lines(&catalog, &mut invoice);
    let stored = catalog.invoices.put(invoice);
    state.events().record(
        INVOICE_CREATED,
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

/// Applies validated update params and records `invoice.updated` with the previous values of
/// what changed (nothing changed: nothing stored, no event). A draft takes every parameter; an
/// open invoice `auto_advance`, `days_until_due`, `due_date`, `description`, `footer` and
/// `metadata`; a paid, void or uncollectible one the last three.
pub(crate) fn update_invoice(
    state: &SharedState,
    id: &str,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let mut catalog = state.catalog();
    let current = catalog.invoices.get(id).ok_or(Failure::Missing)?;
    let status = current["status"].as_str().unwrap_or_default();
    let updatable: Option<&[&str]> = match status {
        "draft" => None,
        "open" => Some(OPEN_UPDATABLE),
        _ => Some(FINALIZED_UPDATABLE),
    };
    if let Some(updatable) = updatable {
        if let Some(name) = params
            .keys()
            .find(|name| *name != "expand" && !updatable.contains(&name.as_str()))
        {
            return Err(refused(FINALIZED_CANNOT_CHANGE, name));
        }
    }
    let mut updated = (*current).clone();
    if let Some(method) = params.get("collection_method").map(text_of) {
        if method == "charge_automatically" {
            updated.insert("due_date".to_owned(), Value::Null);
        }
        updated.insert("collection_method".to_owned(), Value::String(method));
    }
    for name in ["days_until_due", "due_date"] {
        if params.contains_key(name) && updated["collection_method"] != "send_invoice" {
            return Err(due_without_send_invoice(name).into());
        }
    }
    let created = updated["created"].as_i64().unwrap_or(now);
    if let Some(days) = params.get("days_until_due").and_then(integer_of) {
        updated.insert("due_date".to_owned(), json!(created + days * DAY));
    }
    if let Some(at) = params.get("due_date").and_then(integer_of) {
        updated.insert("due_date".to_owned(), json!(at));
    }
    if updated["collection_method"] == "send_invoice" && updated["due_date"].is_null() {
        return Err(ParamError::new("days_until_due", Problem::Missing).into());
    }
    if let Some(flag) = params.get("auto_advance").and_then(boolean_of) {
        updated.insert("auto_advance".to_owned(), json!(flag));
    }
    for name in ["description", "footer"] {
        if let Some(value) = params.get(name) {
            updated.insert(name.to_owned(), nullable_text(value));
        }
    }
    if let Some(metadata) = params.get("metadata") {
        let clear_all = leaf_text(metadata).as_deref() == Some("");
        merge_metadata(&mut updated, metadata, clear_all)?;
    }
    if updated == *current {
        return Ok(current);
    }
    let previous = previous_attributes(&current, &updated);
    let stored = catalog.invoices.put(updated);
    state.events().record(
        INVOICE_UPDATED,
        stored.clone(),
        Some(previous),
        source,
        now,
        Instant::now(),
    );
    Ok(stored)
}

/// Deletes a draft invoice and its invoice items, recording each item's `invoiceitem.deleted`
/// and then `invoice.deleted` carrying the invoice as it was. Only drafts can be deleted; a
/// finalized invoice is voided instead.
pub(crate) fn delete_invoice(
    state: &SharedState,
    id: &str,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let mut catalog = state.catalog();
    let current = catalog.invoices.get(id).ok_or(Failure::Missing)?;
    if current["status"] != "draft" {
        return Err(refused_without_param(
            "You can only delete draft invoices. A finalized invoice can be voided instead.",
        ));
    }
    let mut events = state.events();
    for item in items_of_invoice(&catalog, id) {
        let item_id = item["id"].as_str().unwrap_or_default().to_owned();
        if let Some(removed) = catalog.remove_invoice_item(&item_id) {
            events.record(
                INVOICEITEM_DELETED,
                removed,
                None,
                source,
                now,
                Instant::now(),
            );
        }
    }
    let removed = catalog.invoices.remove(id).ok_or(Failure::Missing)?;
    events.record(
        INVOICE_DELETED,
        removed.clone(),
        None,
        source,
        now,
        Instant::now(),
    );
    Ok(removed)
}

/// `POST /v1/invoices/{id}/finalize`: a draft becomes `open`, numbered `PREFIX-0001` after its
/// customer's `invoice_prefix` and invoice sequence, and records `invoice.finalized`. An invoice
/// whose amount due is zero is then paid at once, recording `invoice.paid`, as on Stripe.
pub(crate) fn finalize_invoice(
    state: &SharedState,
    id: &str,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let store = state.store();
    let mut catalog = state.catalog();
    let current = catalog.invoices.get(id).ok_or(Failure::Missing)?;
    if current["status"] != "draft" {
        return Err(refused_without_param(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
        ));
    }
    let customer_id = current["customer"].as_str().unwrap_or_default().to_owned();
    let Lookup::Live(customer) = store.get(&customer_id) else {
        return Err(refused(
            format!("No such customer: '{customer_id}'. A deleted customer's invoice cannot be finalized."),
            "customer",
        ));
    };
    let first_sequence = customer["next_invoice_sequence"].as_i64().unwrap_or(1);
    let sequence = catalog
        .invoice_sequences
        .entry(customer_id)
        .or_insert(first_sequence);
    let number = format!(
        "{}-{:04}",
        customer["invoice_prefix"].as_str().unwrap_or("INVOICE"),
        *sequence
    );
    *sequence += 1;
    let mut finalized = (*current).clone();
    finalized.insert("status".to_owned(), json!("open"));
    finalized.insert("number".to_owned(), json!(number));
    if let Some(flag) = params.get("auto_advance").and_then(boolean_of) {
        finalized.insert("auto_advance".to_owned(), json!(flag));
    }
    set_transition(&mut finalized, "finalized_at", now);
    let mut stored = catalog.invoices.put(finalized);
    let mut events = state.events();
    events.record(
        INVOICE_FINALIZED,
        stored.clone(),
        None,
        source,
        now,
        Instant::now(),
    );
    if stored["amount_due"] == 0 {
        stored = catalog.invoices.put(paid(&stored, now, false));
        events.record(
            INVOICE_PAID,
            stored.clone(),
            None,
            source,
            now,
            Instant::now(),
        );
    }
    Ok(stored)
}

/// `POST /v1/invoices/{id}/send`: records `invoice.sent` for an open or paid invoice collected
/// by `send_invoice` (no email leaves the emulator, as none leaves Stripe in test mode). The
/// invoice does not change.
pub(crate) fn send_invoice(
    state: &SharedState,
    id: &str,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let catalog = state.catalog();
    let current = catalog.invoices.get(id).ok_or(Failure::Missing)?;
    if current["collection_method"] != "send_invoice" {
        return Err(refused_without_param(
            "You can only manually send an invoice if its collection method is 'send_invoice'.",
        ));
    }
    match current["status"].as_str() {
        Some("open" | "paid") => {}
        Some("draft") => {
            return Err(refused_without_param(
                "You can't send a draft invoice: finalize it first.",
            ))
        }
        status => {
            return Err(refused_without_param(format!(
                "You can't send an invoice whose status is '{}': only open or paid invoices can be sent.",
                status.unwrap_or_default()
            )))
        }
    }
    state.events().record(
        INVOICE_SENT,
        current.clone(),
        None,
        source,
        now,
        Instant::now(),
    );
    Ok(current)
}

/// `POST /v1/invoices/{id}/void`: an open or uncollectible invoice becomes `void`
/// (`invoice.voided`).
pub(crate) fn void_invoice(
    state: &SharedState,
    id: &str,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    transition(
        state,
        id,
        source,
        &["open", "uncollectible"],
        "void",
        |invoice, now| {
            invoice.insert("status".to_owned(), json!("void"));
            set_transition(invoice, "voided_at", now);
        },
    )
}

/// `POST /v1/invoices/{id}/mark_uncollectible`: an open invoice becomes `uncollectible`
/// (`invoice.marked_uncollectible`).
pub(crate) fn mark_uncollectible(
    state: &SharedState,
    id: &str,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    transition(
        state,
        id,
        source,
        &["open"],
        "mark uncollectible",
        |invoice, now| {
            invoice.insert("status".to_owned(), json!("uncollectible"));
            set_transition(invoice, "marked_uncollectible_at", now);
        },
    )
}

/// `POST /v1/invoices/{id}/pay` with `paid_out_of_band=true`: an open or uncollectible invoice
/// becomes `paid` (`invoice.paid`). Without it Stripe would charge the customer's payment
/// method, which the emulator does not have.
pub(crate) fn pay_invoice(
    state: &SharedState,
    id: &str,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    {
        let catalog = state.catalog();
        let current = catalog.invoices.get(id).ok_or(Failure::Missing)?;
        if current["status"] == "paid" {
            return Err(refused_without_param("Invoice is already paid"));
        }
    }
    if params.get("paid_out_of_band").and_then(boolean_of) != Some(true) {
        return Err(refused_without_param(
            "This customer has no attached payment source or default payment method. Pay the invoice with `paid_out_of_band=true`: the emulator has no payment methods.",
        ));
    }
    transition(
        state,
        id,
        source,
        &["open", "uncollectible"],
        "pay",
        |invoice, now| {
            *invoice = paid(invoice, now, true);
        },
    )
}

/// Creates an invoice item from validated create params and records `invoiceitem.created`.
/// With `invoice` it joins that draft's lines (at most 250); without, it waits on the customer.
pub(crate) fn create_invoice_item(
    state: &SharedState,
    origin: &Origin,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let text = |name: &str| params.get(name).map(text_of);
    let customer_id = text("customer").unwrap_or_default();
    let store = state.store();
    if !matches!(store.get(&customer_id), Lookup::Live(_)) {
        return Err(Failure::Refused(no_such(
            "customer",
            &customer_id,
            "customer",
        )));
    }
    let mut catalog = state.catalog();
    let invoice = match text("invoice") {
        Some(invoice_id) => Some(draft_with_room(&catalog, &invoice_id, &customer_id)?),
        None => None,
    };
    let now = origin.created;
    let price = match text("price") {
        Some(price_id) => Some(one_time_price(&catalog, &price_id)?),
        None => None,
    };
    let currency = match (&price, text("currency"), &invoice) {
        (Some(price), _, _) => price["currency"].as_str().unwrap_or_default().to_owned(),
        (None, Some(currency), _) => currency.to_ascii_lowercase(),
        (None, None, Some(invoice)) => invoice["currency"].as_str().unwrap_or_default().to_owned(),
        (None, None, None) => return Err(ParamError::new("currency", Problem::Missing).into()),
    };
    if let Some(sent) = text("currency") {
        if !sent.eq_ignore_ascii_case(&currency) {
            return Err(refused(
                "The currency of an invoice item must be its price's currency.",
                "currency",
            ));
        }
    }
    if let Some(invoice) = &invoice {
        if invoice["currency"].as_str() != Some(currency.as_str()) {
            return Err(refused(
                "The invoice item's currency must match the currency of the invoice it is added to.",
                "currency",
            ));
        }
    }
    let (unit_amount_decimal, quantity) = match (&price, params.get("amount")) {
        (_, Some(amount)) => (integer_of(amount).unwrap_or_default().to_string(), 1),
        (Some(price), None) => (price_unit_decimal(price), 1),
        (None, None) => (
            normalize_decimal(&text("unit_amount_decimal").unwrap_or_default()),
            1,
        ),
    };
    let quantity = params
        .get("quantity")
        .and_then(integer_of)
        .unwrap_or(quantity);
    let description = match (params.get("description"), &price) {
        (Some(description), _) => nullable_text(description),
        (None, Some(price)) => price["product"]
            .as_str()
            .and_then(|product| catalog.products.get(product))
            .map(|product| product["name"].clone())
            .unwrap_or(Value::Null),
        (None, None) => Value::Null,
    };
    let period = match params.get("period") {
        Some(period) => json!({
            "end": period.get("end").and_then(integer_of),
            "start": period.get("start").and_then(integer_of),
        }),
        None => json!({"end": now, "start": now}),
    };
    let mut item = object(json!({
        "id": origin.id,
        "object": "invoiceitem",
        "amount": 0,
        "currency": currency,
        "customer": customer_id,
        "date": now,
        "description": description,
        "discountable": true,
        "invoice": invoice.as_ref().map(|invoice| invoice["id"].clone()),
        "livemode": origin.livemode,
        "metadata": {},
        "period": period,
        "price": price.map(Value::Object),
        "proration": false,
        "quantity": quantity,
        "unit_amount": null,
        "unit_amount_decimal": unit_amount_decimal,
    }));
    set_amount(&mut item);
    // Negative items are not discountable unless asked, as on Stripe.
    let discountable = params
        .get("discountable")
        .and_then(boolean_of)
        .unwrap_or(item["amount"].as_i64().unwrap_or_default() >= 0);
    item.insert("discountable".to_owned(), json!(discountable));
    if let Some(metadata) = params.get("metadata") {
        merge_metadata(&mut item, metadata, false)?;
    }
    let stored = catalog.put_invoice_item(item);
    if let Some(invoice) = invoice {
        refresh_invoice(&mut catalog, &invoice);
    }
    state.events().record(
        INVOICEITEM_CREATED,
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

/// Applies validated update params to an invoice item that is pending or on a draft, works its
/// amount out again and records `invoiceitem.updated` (nothing changed: no event).
pub(crate) fn update_invoice_item(
    state: &SharedState,
    id: &str,
    params: &Map<String, Value>,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let mut catalog = state.catalog();
    let current = catalog.invoice_items.get(id).ok_or(Failure::Missing)?;
    let invoice = editable_invoice_of(&catalog, &current, "updated")?;
    let mut updated = (*current).clone();
    if let Some(price_id) = params.get("price").map(text_of) {
        let price = one_time_price(&catalog, &price_id)?;
        if price["currency"] != updated["currency"] {
            return Err(refused(
                "The price's currency must match the invoice item's currency.",
                "price",
            ));
        }
        updated.insert(
            "unit_amount_decimal".to_owned(),
            json!(price_unit_decimal(&price)),
        );
        updated.insert("price".to_owned(), Value::Object(price));
    }
    if let Some(amount) = params.get("amount").and_then(integer_of) {
        updated.insert("price".to_owned(), Value::Null);
        updated.insert("quantity".to_owned(), json!(1));
        updated.insert("unit_amount_decimal".to_owned(), json!(amount.to_string()));
    }
    if let Some(decimal) = params.get("unit_amount_decimal").map(text_of) {
        updated.insert("price".to_owned(), Value::Null);
        updated.insert(
            "unit_amount_decimal".to_owned(),
            json!(normalize_decimal(&decimal)),
        );
    }
    if let Some(quantity) = params.get("quantity").and_then(integer_of) {
        updated.insert("quantity".to_owned(), json!(quantity));
    }
    set_amount(&mut updated);
    if let Some(description) = params.get("description") {
        updated.insert("description".to_owned(), nullable_text(description));
    }
    if let Some(flag) = params.get("discountable").and_then(boolean_of) {
        updated.insert("discountable".to_owned(), json!(flag));
    }
    if let Some(period) = params.get("period") {
        updated.insert(
            "period".to_owned(),
            json!({
                "end": period.get("end").and_then(integer_of),
                "start": period.get("start").and_then(integer_of),
            }),
        );
    }
    if let Some(metadata) = params.get("metadata") {
        let clear_all = leaf_text(metadata).as_deref() == Some("");
        merge_metadata(&mut updated, metadata, clear_all)?;
    }
    if updated == *current {
        return Ok(current);
    }
    let previous = previous_attributes(&current, &updated);
    let stored = catalog.put_invoice_item(updated);
    if let Some(invoice) = invoice {
        refresh_invoice(&mut catalog, &invoice);
    }
    state.events().record(
        INVOICEITEM_UPDATED,
        stored.clone(),
        Some(previous),
        source,
        now,
        Instant::now(),
    );
    Ok(stored)
}

/// Deletes an invoice item that is pending or on a draft and records `invoiceitem.deleted`
/// carrying it as it was; its invoice's lines and totals follow.
pub(crate) fn delete_invoice_item(
    state: &SharedState,
    id: &str,
    source: &EventSource,
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let mut catalog = state.catalog();
    let current = catalog.invoice_items.get(id).ok_or(Failure::Missing)?;
    let invoice = editable_invoice_of(&catalog, &current, "deleted")?;
    let removed = catalog.remove_invoice_item(id).ok_or(Failure::Missing)?;
    if let Some(invoice) = invoice {
        refresh_invoice(&mut catalog, &invoice);
    }
    state.events().record(
        INVOICEITEM_DELETED,
        removed.clone(),
        None,
        source,
        now,
        Instant::now(),
    );
    Ok(removed)
}

/// Every line of an invoice, in the order its items were added.
pub(crate) fn lines_of(catalog: &Catalog, invoice_id: &str) -> Vec<Value> {
    items_of_invoice(catalog, invoice_id)
        .iter()
        .map(|item| line_of(item))
        .collect()
}

/// One page of an invoice's lines, in their order (oldest first): after `starting_after`, or
/// the last `limit` before `ending_before`; and whether more follow in the direction of travel.
pub(crate) fn page_of_lines(
    lines: &[Value],
    page: &PageQuery,
) -> Result<(Vec<Value>, bool), UnknownCursor> {
    let position = |cursor: &str| {
        lines
            .iter()
            .position(|line| line["id"].as_str() == Some(cursor))
            .ok_or(UnknownCursor)
    };
    if let Some(cursor) = &page.ending_before {
        let end = position(cursor)?;
        let start = end.saturating_sub(page.limit);
        return Ok((lines[start..end].to_vec(), start > 0));
    }
    let start = match &page.starting_after {
        Some(cursor) => position(cursor)? + 1,
        None => 0,
    };
    let end = (start + page.limit).min(lines.len());
    Ok((lines[start..end].to_vec(), end < lines.len()))
}

/// Filters and cursor of `GET /v1/invoices`, already validated.
#[derive(Debug, Default)]
pub(crate) struct InvoiceListQuery {
    pub page: PageQuery,
    pub customer: Option<String>,
    pub status: Option<String>,
    pub collection_method: Option<String>,
}

impl InvoiceListQuery {
    pub(crate) fn keeps(&self, invoice: &Map<String, Value>) -> bool {
        text_is(invoice, "customer", &self.customer)
            && text_is(invoice, "status", &self.status)
            && text_is(invoice, "collection_method", &self.collection_method)
    }
}

/// Filters and cursor of `GET /v1/invoiceitems`, already validated.
#[derive(Debug, Default)]
pub(crate) struct InvoiceItemListQuery {
    pub page: PageQuery,
    pub customer: Option<String>,
    pub invoice: Option<String>,
    /// `true`: only items on no invoice yet; `false`: only items on an invoice.
    pub pending: Option<bool>,
}

impl InvoiceItemListQuery {
    pub(crate) fn keeps(&self, item: &Map<String, Value>) -> bool {
        text_is(item, "customer", &self.customer)
            && text_is(item, "invoice", &self.invoice)
            && self
                .pending
                .is_none_or(|pending| item["invoice"].is_null() == pending)
    }
}

/// A change of status allowed from `from`, applied by `apply`, recorded with the event the new
/// status calls for. Returns the invoice as stored.
fn transition(
    state: &SharedState,
    id: &str,
    source: &EventSource,
    from: &[&str],
    verb: &str,
    apply: impl FnOnce(&mut Map<String, Value>, i64),
) -> Result<SharedObject, Failure> {
    let now = unix_now();
    let mut catalog = state.catalog();
    let current = catalog.invoices.get(id).ok_or(Failure::Missing)?;
    let status = current["status"].as_str().unwrap_or_default();
    if !from.contains(&status) {
        let allowed = from.join(" or ");
        return Err(refused_without_param(format!(
            "You can't {verb} an invoice whose status is '{status}': only {allowed} invoices can be."
        )));
    }
    let mut changed = (*current).clone();
    apply(&mut changed, now);
    let event = match changed["status"].as_str() {
        Some("void") => INVOICE_VOIDED,
        Some("uncollectible") => INVOICE_MARKED_UNCOLLECTIBLE,
        _ => INVOICE_PAID,
    };
    let stored = catalog.invoices.put(changed);
    state
        .events()
        .record(event, stored.clone(), None, source, now, Instant::now());
    Ok(stored)
}

/// The invoice paid: out of band, or (`out_of_band = false`) because nothing was due.
fn paid(invoice: &Map<String, Value>, now: i64, out_of_band: bool) -> Map<String, Value> {
    let mut paid = invoice.clone();
    let due = paid["amount_due"].clone();
    for (field, value) in [
        ("status", json!("paid")),
        ("paid", json!(true)),
        ("paid_out_of_band", json!(out_of_band)),
        ("amount_paid", due),
        ("amount_remaining", json!(0)),
    ] {
        paid.insert(field.to_owned(), value);
    }
    set_transition(&mut paid, "paid_at", now);
    paid
}

fn set_transition(invoice: &mut Map<String, Value>, field: &str, at: i64) {
    if let Some(Value::Object(transitions)) = invoice.get_mut("status_transitions") {
        transitions.insert(field.to_owned(), json!(at));
    }
}

/// The invoice an item is added to: it must exist, be the customer's, be a draft and have
/// room for one more item.
fn draft_with_room(
    catalog: &Catalog,
    invoice_id: &str,
    customer_id: &str,
) -> Result<SharedObject, Failure> {
    let invoice = catalog
        .invoices
        .get(invoice_id)
        .ok_or_else(|| Failure::Refused(no_such("invoice", invoice_id, "invoice")))?;
    if invoice["customer"].as_str() != Some(customer_id) {
        return Err(refused(
            format!("The invoice '{invoice_id}' belongs to another customer: an invoice item can only be added to an invoice of its own customer."),
            "invoice",
        ));
    }
    if invoice["status"] != "draft" {
        return Err(refused(
            "You can only add invoice items to draft invoices.",
            "invoice",
        ));
    }
    if items_of_invoice(catalog, invoice_id).len() >= INVOICE_ITEMS_MAX {
        return Err(refused(too_many_items_message(), "invoice"));
    }
    Ok(invoice)
}

fn too_many_items_message() -> String {
    format!(
        "An invoice can have at most {INVOICE_ITEMS_MAX} invoice items. Create another invoice for the rest."
    )
}

/// The draft an item belongs to, if any; an item on a finalized invoice cannot change.
fn editable_invoice_of(
    catalog: &Catalog,
    item: &Map<String, Value>,
    verb: &str,
) -> Result<Option<SharedObject>, Failure> {
    let Some(invoice_id) = item["invoice"].as_str() else {
        return Ok(None);
    };
    match catalog.invoices.get(invoice_id) {
        Some(invoice) if invoice["status"] == "draft" => Ok(Some(invoice)),
        Some(_) => Err(refused_without_param(format!(
            "This invoice item belongs to the finalized invoice '{invoice_id}': only invoice items that are pending or on a draft invoice can be {verb}."
        ))),
        None => Ok(None),
    }
}

/// The price an item names, as a response shows it: it must exist, be one-time and be active.
fn one_time_price(catalog: &Catalog, price_id: &str) -> Result<Map<String, Value>, Failure> {
    let price = catalog
        .prices()
        .get(price_id)
        .ok_or_else(|| Failure::Refused(no_such("price", price_id, "price")))?;
    if price["type"].as_str() != Some("one_time") {
        return Err(refused(
            "The price specified is set to `type=recurring` but this field only accepts prices with `type=one_time`.",
            "price",
        ));
    }
    if price["active"] == false {
        return Err(refused(
            "The price specified is inactive. This field only accepts active prices.",
            "price",
        ));
    }
    Ok(price_for_response(&price, false))
}

fn price_unit_decimal(price: &Map<String, Value>) -> String {
    match (&price["unit_amount_decimal"], &price["unit_amount"]) {
        (Value::String(decimal), _) => decimal.clone(),
        (_, Value::Number(amount)) => amount.to_string(),
        _ => "0".to_owned(),
    }
}

/// `amount` = `unit_amount_decimal` × `quantity`, rounded to the nearest unit; `unit_amount`
/// is the unit amount when it is whole.
fn set_amount(item: &mut Map<String, Value>) {
    let decimal = item["unit_amount_decimal"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let unit: f64 = decimal.parse().unwrap_or_default();
    let quantity = item["quantity"].as_i64().unwrap_or(1);
    let amount = (unit * quantity as f64).round() as i64;
    let whole = decimal.parse::<i64>().ok();
    item.insert("amount".to_owned(), json!(amount));
    item.insert("unit_amount".to_owned(), json!(whole));
}

/// The customer's pending items in `currency`, oldest first.
fn pending_items(catalog: &Catalog, customer_id: &str, currency: &str) -> Vec<SharedObject> {
    let mut items: Vec<SharedObject> = catalog
        .invoice_items
        .all()
        .into_iter()
        .filter(|item| {
            item["invoice"].is_null()
                && item["customer"].as_str() == Some(customer_id)
                && item["currency"].as_str() == Some(currency)
        })
        .collect();
    items.reverse();
    items
}

/// The items on an invoice, oldest first.
fn items_of_invoice(catalog: &Catalog, invoice_id: &str) -> Vec<SharedObject> {
    catalog.items_on_invoice(invoice_id)
}

/// Stores a draft again with its lines and totals worked out from its items as they are now.
fn refresh_invoice(catalog: &mut Catalog, invoice: &Map<String, Value>) {
    let id = invoice["id"].as_str().unwrap_or_default();
    let Some(current) = catalog.invoices.get(id) else {
        return;
    };
    let mut refreshed = (*current).clone();
    set_lines(catalog, &mut refreshed);
    if refreshed != *current {
        catalog.invoices.put(refreshed);
    }
}

/// An invoice's `lines` (the first 10, `total_count`), `subtotal`, `total` and amounts, from
/// its items.
fn set_lines(catalog: &Catalog, invoice: &mut Map<String, Value>) {
    let id = invoice["id"].as_str().unwrap_or_default().to_owned();
    let lines = lines_of(catalog, &id);
    let subtotal: i64 = lines
        .iter()
        .map(|line| line["amount"].as_i64().unwrap_or_default())
        .sum();
    let amount_due = subtotal.max(0);
    let amount_paid = invoice["amount_paid"].as_i64().unwrap_or_default();
    for (field, value) in [
        ("subtotal", json!(subtotal)),
        ("total", json!(subtotal)),
        ("amount_due", json!(amount_due)),
        ("amount_remaining", json!(amount_due - amount_paid)),
        (
            "lines",
            json!({
                "object": "list",
                "data": lines.iter().take(INLINE_LINES).collect::<Vec<_>>(),
                "has_more": lines.len() > INLINE_LINES,
                "total_count": lines.len(),
                "url": format!("/v1/invoices/{id}/lines"),
            }),
        ),
    ] {
        invoice.insert(field.to_owned(), value);
    }
}

/// An item as a line of its invoice (`type: invoiceitem`, its id the item's, as in Stripe's
/// API version 2020-08-27).
fn line_of(item: &Map<String, Value>) -> Value {
    json!({
        "id": item["id"],
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item["description"],
        "discountable": item["discountable"],
        "invoice_item": item["id"],
        "livemode": item["livemode"],
        "metadata": item["metadata"],
        "period": item["period"],
        "price": item["price"],
        "proration": false,
        "quantity": item["quantity"],
        "type": "invoiceitem",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> Value {
        json!({"id": id})
    }

    fn ids(page: &[Value]) -> Vec<&str> {
        page.iter()
            .map(|line| line["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn lines_page_in_order_both_ways() {
        let lines: Vec<Value> = ["a", "b", "c", "d", "e"].into_iter().map(line).collect();
        let page = |limit, after: Option<&str>, before: Option<&str>| PageQuery {
            limit,
            starting_after: after.map(str::to_owned),
            ending_before: before.map(str::to_owned),
            ..PageQuery::default()
        };
        let (found, more) = page_of_lines(&lines, &page(2, None, None)).unwrap();
        assert_eq!((ids(&found), more), (vec!["a", "b"], true));
        let (found, more) = page_of_lines(&lines, &page(2, Some("c"), None)).unwrap();
        assert_eq!((ids(&found), more), (vec!["d", "e"], false));
        let (found, more) = page_of_lines(&lines, &page(2, None, Some("d"))).unwrap();
        assert_eq!((ids(&found), more), (vec!["b", "c"], true));
        let (found, more) = page_of_lines(&lines, &page(5, None, Some("b"))).unwrap();
        assert_eq!((ids(&found), more), (vec!["a"], false));
        assert!(page_of_lines(&lines, &page(2, Some("z"), None)).is_err());
    }

    #[test]
    fn amounts_are_unit_decimal_times_quantity() {
        let mut item = object(json!({"unit_amount_decimal": "12.5", "quantity": 3}));
        set_amount(&mut item);
        assert_eq!(
            (item["amount"].clone(), item["unit_amount"].clone()),
            (json!(38), Value::Null)
        );
        let mut item = object(json!({"unit_amount_decimal": "-500", "quantity": 1}));
        set_amount(&mut item);
        assert_eq!(
            (item["amount"].clone(), item["unit_amount"].clone()),
            (json!(-500), json!(-500))
        );
    }
}
