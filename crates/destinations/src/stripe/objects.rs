//! The Stripe objects ferry syncs, each behind one interface. Most of what ferry knows about an
//! object is data in its schema table (`ferry_stripe_wire`); an object whose behaviour goes
//! beyond the table (a product's own id, a price replaced when its amount changes) says so here.
//! The engine reaches objects only through [`stripe_object`].

use ferry_core::ObjectKind;
use ferry_stripe_wire::customer::CUSTOMER;
use ferry_stripe_wire::price::PRICE;
use ferry_stripe_wire::product::PRODUCT;
use ferry_stripe_wire::ObjectSchema;

/// What the engine asks of a Stripe object.
pub trait StripeObject: Sync + Send + std::fmt::Debug {
    fn schema(&self) -> &'static ObjectSchema;

    /// How records of this object are matched, for the person choosing a mapping key.
    fn matching_help(&self) -> &'static str;

    /// The event types that say a record changed or went away, newest state in
    /// `data.object`: read to keep the index of keys fresh.
    fn change_events(&self) -> [String; 2] {
        let object = self.schema().object;
        [format!("{object}.updated"), format!("{object}.deleted")]
    }

    /// The filters that together list every record: one listing with no filter, unless the
    /// list endpoint hides some records by default (archived prices).
    fn listings(&self) -> &'static [&'static [(&'static str, &'static str)]] {
        &[&[]]
    }

    /// The event type that says a record went away.
    fn deleted_event(&self) -> String {
        format!("{}.deleted", self.schema().object)
    }
}

#[derive(Debug)]
pub struct Customer;

impl StripeObject for Customer {
    fn schema(&self) -> &'static ObjectSchema {
        &CUSTOMER
    }

    fn matching_help(&self) -> &'static str {
        "Email matches existing customers by email address (trimmed, ignoring case); an external id is kept in the customer's metadata."
    }
}

/// A product's key is usually its own id, chosen by the model on create (Stripe takes any
/// unused string; ferry never assumes `prod_`): everything else is in the table.
#[derive(Debug)]
pub struct Product;

impl StripeObject for Product {
    fn schema(&self) -> &'static ObjectSchema {
        &PRODUCT
    }

    fn matching_help(&self) -> &'static str {
        "id makes the column the product's own id in Stripe (a SKU or plan code: any text no other product uses), set when ferry creates it; an external id is kept in the product's metadata instead, and Stripe chooses the id."
    }
}

/// A price is matched by its `lookup_key` and names its product by id (`--map sku=product`:
/// a product synced with its own id is named by the same column). Stripe never changes a
/// price's amount, currency or recurrence: a row that changes one is rejected, saying so.
#[derive(Debug)]
pub struct Price;

impl StripeObject for Price {
    fn schema(&self) -> &'static ObjectSchema {
        &PRICE
    }

    fn matching_help(&self) -> &'static str {
        "lookup_key matches the price that carries this lookup key (a plan code such as pro_monthly, unique in the account); an external id is kept in the price's metadata instead."
    }

    /// `GET /v1/prices` lists active prices only; archived ones still hold their lookup keys.
    fn listings(&self) -> &'static [&'static [(&'static str, &'static str)]] {
        &[&[], &[("active", "false")]]
    }
}

/// The registry: one line per object ferry syncs.
pub fn stripe_object(kind: ObjectKind) -> &'static dyn StripeObject {
    match kind {
        ObjectKind::Customer => &Customer,
        ObjectKind::Product => &Product,
        ObjectKind::Price => &Price,
    }
}
