//! Stripe, written through the form-encoded v1 API: one schema table per object
//! (`ferry_stripe_wire`), one interface per object ([`objects`]), and the calls ([`service`]).

pub mod config;
pub mod encoder;
pub mod fields;
pub mod objects;
pub mod service;

pub use config::{StripeConfig, StripeConnectionError, STRIPE_API_BASE, STRIPE_VERSION};
pub use encoder::{create_params, record_to_fields, update_params};
pub use ferry_stripe_wire::ObjectSchema;
pub use fields::{parse_field, FieldKind, MappedField, MappedKey, MappingError};
pub use objects::{stripe_object, Lines, Replacement, Retirement, StripeObject};
pub use service::{Page, StripeCallError, StripeRecord, StripeService, Written};
