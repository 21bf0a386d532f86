//! The Stripe objects ferry syncs, each behind one interface. Most of what ferry knows about an
//! object is data in its schema table (`ferry_stripe_wire`); an object whose behaviour goes
//! beyond the table (a product's own id, a price replaced when its amount changes) says so here.
//! The engine reaches objects only through [`stripe_object`].

use ferry_core::ObjectKind;
use ferry_stripe_wire::customer::CUSTOMER;
use ferry_stripe_wire::ObjectSchema;

/// What the engine asks of a Stripe object.
pub trait StripeObject: Sync + Send + std::fmt::Debug {
    fn schema(&self) -> &'static ObjectSchema;

    /// The event types that say a record changed or went away, newest state in
    /// `data.object`: read to keep the index of keys fresh.
    fn change_events(&self) -> [String; 2] {
        let object = self.schema().object;
        [format!("{object}.updated"), format!("{object}.deleted")]
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
}

/// The registry: one line per object ferry syncs.
pub fn stripe_object(kind: ObjectKind) -> &'static dyn StripeObject {
    match kind {
        ObjectKind::Customer => &Customer,
    }
}
