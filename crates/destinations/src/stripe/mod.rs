//! Stripe: Customers, written through the form-encoded v1 API.

pub mod config;
pub mod encoder;
pub mod fields;
pub mod service;

pub use config::{StripeConfig, StripeConnectionError, STRIPE_API_BASE, STRIPE_VERSION};
pub use encoder::{create_params, customer_to_fields, update_params};
pub use fields::{parse_field, CustomerField, FieldKind, MappingError};
pub use service::{Customer, StripeCallError, StripeService};
