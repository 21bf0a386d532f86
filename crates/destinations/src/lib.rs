//! Destinations: one module per SaaS API, each with the same anatomy — `config` (settings and
//! the connection test), `fields` (what can be mapped), `encoder` (pure: payload → request body)
//! and `service` (requests over the shared HTTP stack).

pub mod stripe;
