//! The Stripe objects ferry syncs, each behind one interface. Most of what ferry knows about an
//! object is data in its schema table (`ferry_stripe_wire`); an object whose behaviour goes
//! beyond the table (a product's own id, a price replaced when its amount changes) says so here.
//! The engine reaches objects only through [`stripe_object`].

use ferry_core::{ObjectKind, Payload};
use ferry_stripe_wire::customer::CUSTOMER;
use ferry_stripe_wire::invoice::{INVOICE, INVOICE_ITEM, INVOICE_ITEMS_MAX, OPEN_UPDATABLE};
use ferry_stripe_wire::price::PRICE;
use ferry_stripe_wire::product::PRODUCT;
use ferry_stripe_wire::subscription::SUBSCRIPTION;
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

    /// The event type that says a record went away, taking its key with it; `None` when
    /// records never go (a canceled subscription stays, and keeps its key).
    fn deleted_event(&self) -> Option<String> {
        Some(format!("{}.deleted", self.schema().object))
    }

    /// How a record whose create-only fields changed is replaced by a new one, when Stripe
    /// lets a new record take over the old one's key (a price's lookup key); `None` when such
    /// a row can only be rejected.
    fn replacement(&self) -> Option<&'static Replacement> {
        None
    }

    /// How Mirror retires a record whose row left the model.
    fn retirement(&self) -> Retirement;

    /// For a record made of several model rows, each a record of its own in Stripe (an
    /// invoice's items): how those are kept.
    fn lines(&self) -> Option<&'static Lines> {
        None
    }

    /// The params that create a record from its payload.
    fn create_params(&self, payload: &Payload) -> serde_json::Map<String, serde_json::Value> {
        crate::stripe::encoder::create_params(self.schema(), payload)
    }
}

/// The records a record is made of, one per model row (an invoice's items, one per order
/// line): each carries its line key in its metadata (`marker`), so that a run finds it again
/// before it adds any, changes it in place, and deletes what left the model.
#[derive(Debug)]
pub struct Lines {
    pub schema: &'static ObjectSchema,
    /// The payload field of the parent holding its lines (`lines`).
    pub field: &'static str,
    /// The param naming the parent on each line (`invoice`).
    pub parent_param: &'static str,
    /// The parent's fields a line takes unless it gives its own, or gives the field named
    /// beside (a line with a `price` has its price's currency).
    pub inherited: &'static [(&'static str, Option<&'static str>)],
    /// The metadata key holding the line key.
    pub marker: &'static str,
    /// Stripe's limit of lines on one parent.
    pub max: usize,
    /// The parent's params Stripe still takes once it is finalized: a change to any other,
    /// or to its lines, needs a new parent (void and reissue, when the sync allows it).
    pub finalized_updatable: &'static [&'static str],
}

/// What retiring a record means for an object.
#[derive(Debug, Clone, Copy)]
pub enum Retirement {
    /// Deleted, which Stripe cannot undo (customers: only when the sync opts in).
    Delete,
    /// Deleted when Stripe allows it (a product without prices), archived (`active=false`)
    /// when it does not.
    DeleteElseArchive,
    /// Archived (`active=false`), after its parent stops naming it as its default (Stripe
    /// keeps a product's default price active): a price.
    Archive {
        parent_field: &'static str,
        parent: &'static ObjectSchema,
        parent_default: &'static str,
    },
    /// Deleted while a draft; once finalized, voided only when the sync says so (an invoice).
    DeleteDraft,
    /// Cancelled: at the end of the period already paid for (`cancel_at_period_end=true`), or
    /// at once (`DELETE`) when the sync says so. A canceled subscription cannot come back.
    Cancel,
}

impl Retirement {
    /// What a preview says will happen.
    pub fn describe(&self) -> &'static str {
        match self {
            Retirement::Delete => "deleted",
            Retirement::DeleteElseArchive => "deleted (archived if it has prices)",
            Retirement::Archive { .. } => "archived",
            Retirement::Cancel => "cancelled",
            Retirement::DeleteDraft => "deleted while a draft",
        }
    }
}

/// Replacing a record that Stripe cannot change in place: create a new one that takes over
/// the key, make it its parent's default if the old one was, then retire the old one. The new
/// record carries the old one's id in its metadata (`marker`), so that a run interrupted
/// between these steps finds the new record and finishes them instead of making another.
#[derive(Debug)]
pub struct Replacement {
    /// The key field the new record takes over (`lookup_key`); a sync keyed otherwise rejects
    /// such rows, since two records would then answer to its key.
    pub key_field: &'static str,
    /// The create parameter that moves the key from the record holding it.
    pub transfer_param: &'static str,
    /// The metadata key on the new record naming the record it replaces.
    pub marker: &'static str,
    /// The field naming the parent (`product`); a row that changes it is rejected, not
    /// replaced (the old parent's default could not point at another parent's record).
    pub parent_field: &'static str,
    pub parent: &'static ObjectSchema,
    /// The parent's field that may name the old record (`default_price`).
    pub parent_default: &'static str,
    /// The update that retires the old record, and what the old record then is.
    pub retire: &'static [(&'static str, &'static str)],
    pub retired: &'static str,
    /// Said to the user of each replacement (who keeps using the old record).
    pub consequence: &'static str,
}

#[derive(Debug)]
pub struct Customer;

impl StripeObject for Customer {
    fn schema(&self) -> &'static ObjectSchema {
        &CUSTOMER
    }

    fn retirement(&self) -> Retirement {
        Retirement::Delete
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

    fn retirement(&self) -> Retirement {
        Retirement::DeleteElseArchive
    }

    fn matching_help(&self) -> &'static str {
        "id makes the column the product's own id in Stripe (a SKU or plan code: any text no other product uses), set when ferry creates it; an external id is kept in the product's metadata instead, and Stripe chooses the id."
    }
}

/// A price is matched by its `lookup_key` and names its product by id (`--map sku=product`:
/// a product synced with its own id is named by the same column). Stripe never changes a
/// price's amount, currency or recurrence: a row that changes one replaces the price.
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

    fn replacement(&self) -> Option<&'static Replacement> {
        Some(&PRICE_REPLACEMENT)
    }

    fn retirement(&self) -> Retirement {
        Retirement::Archive {
            parent_field: "product",
            parent: &PRODUCT,
            parent_default: "default_price",
        }
    }
}

static PRICE_REPLACEMENT: Replacement = Replacement {
    key_field: "lookup_key",
    transfer_param: "transfer_lookup_key",
    marker: "ferry_replaces",
    parent_field: "product",
    parent: &PRODUCT,
    parent_default: "default_price",
    retire: &[("active", "false")],
    retired: "archived",
    consequence: "subscriptions and invoices already on the old price keep it",
};

/// A subscription has no key of its own: it is matched by an external id in its metadata. It
/// names its customer (`customer(email)`) and its items' prices (`items(lookup_key)`) by their
/// keys. Its events are `customer.subscription.*`, and Stripe lists canceled subscriptions only
/// when asked: they still hold their keys, so a row whose subscription was canceled is reported,
/// never subscribed anew.
#[derive(Debug)]
pub struct Subscription;

impl StripeObject for Subscription {
    fn schema(&self) -> &'static ObjectSchema {
        &SUBSCRIPTION
    }

    fn matching_help(&self) -> &'static str {
        "A subscription is matched by an external id kept in its metadata (a contract or account id from the warehouse); Stripe chooses its id."
    }

    fn change_events(&self) -> [String; 2] {
        [
            "customer.subscription.updated".to_string(),
            "customer.subscription.deleted".to_string(),
        ]
    }

    /// `customer.subscription.deleted` says it was canceled: it stays, with its key.
    fn deleted_event(&self) -> Option<String> {
        None
    }

    /// `GET /v1/subscriptions` leaves canceled ones out unless `status=all`.
    fn listings(&self) -> &'static [&'static [(&'static str, &'static str)]] {
        &[&[("status", "all")]]
    }

    fn retirement(&self) -> Retirement {
        Retirement::Cancel
    }
}

/// An invoice from order lines: the model's rows of one invoice key become one invoice, its
/// lines the invoice's items. ferry makes each invoice a draft that holds only the items it
/// adds (`pending_invoice_items_behavior=exclude`) and that Stripe does not finalize by itself
/// (`auto_advance=false`); the sync's `finalize` setting says whether ferry finalizes it.
#[derive(Debug)]
pub struct Invoice;

static INVOICE_LINES: Lines = Lines {
    schema: &INVOICE_ITEM,
    field: "lines",
    parent_param: "invoice",
    inherited: &[("customer", None), ("currency", Some("price"))],
    marker: "ferry_line",
    max: INVOICE_ITEMS_MAX,
    finalized_updatable: OPEN_UPDATABLE,
};

impl StripeObject for Invoice {
    fn schema(&self) -> &'static ObjectSchema {
        &INVOICE
    }

    fn matching_help(&self) -> &'static str {
        "An invoice is matched by an external id kept in its metadata (an order number); its lines are invoice items, each found again by the line key kept in its metadata."
    }

    fn retirement(&self) -> Retirement {
        Retirement::DeleteDraft
    }

    fn lines(&self) -> Option<&'static Lines> {
        Some(&INVOICE_LINES)
    }

    fn create_params(&self, payload: &Payload) -> serde_json::Map<String, serde_json::Value> {
        let mut own = payload.clone();
        own.fields.remove(INVOICE_LINES.field);
        let mut params = crate::stripe::encoder::create_params(&INVOICE, &own);
        for (name, value) in [
            ("auto_advance", "false"),
            ("pending_invoice_items_behavior", "exclude"),
        ] {
            params
                .entry(name)
                .or_insert_with(|| serde_json::Value::String(value.to_string()));
        }
        params
    }
}

/// The registry: one line per object ferry syncs.
pub fn stripe_object(kind: ObjectKind) -> &'static dyn StripeObject {
    match kind {
        ObjectKind::Customer => &Customer,
        ObjectKind::Product => &Product,
        ObjectKind::Price => &Price,
        ObjectKind::Subscription => &Subscription,
        ObjectKind::Invoice => &Invoice,
    }
}

/// The object whose Stripe `object` value is `name` (`product`).
pub fn object_kind_named(name: &str) -> Option<ObjectKind> {
    ObjectKind::ALL
        .into_iter()
        .find(|kind| stripe_object(*kind).schema().object == name)
}
