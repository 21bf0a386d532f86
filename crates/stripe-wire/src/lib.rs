//! Stripe's wire format for the objects ferry syncs: form encoding, each object's parameter
//! table and its validation ([`schema::ObjectSchema`], one per object), and error bodies. No IO: the emulator uses it to judge requests and ferry's Stripe
//! destination uses it to reject a row before sending it.

pub mod customer;
pub mod error;
pub mod form;
pub mod invoice;
mod param_error;
pub mod params;
pub mod price;
pub mod product;
pub mod schema;
pub mod subscription;

pub use error::{ErrorBody, StripeError};
pub use param_error::{ParamError, Problem};
pub use schema::{KeyField, ObjectSchema, ParamRules};
