//! Conformance tests for the Stripe emulator: each behavior listed in README.md, checked over
//! real HTTP (reqwest) against an emulator started in process on port 0.

mod auth;
mod bodies;
mod cli;
mod common;
mod control;
mod customers;
mod events;
mod faults;
mod idempotency;
mod invoices;
mod list;
mod prices;
mod products;
mod rate_limits;
mod search;
mod subscriptions;
