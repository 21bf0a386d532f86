//! Test helpers shared by ferry's crates: a throwaway PostgreSQL server ([`PgServer`]).
//!
//! The kit only uses `std::process` and the PostgreSQL binaries on PATH (plus `rcgen` to make a
//! TLS server's certificates), so any crate can take it as a dev-dependency without pulling a
//! database driver into its build.

pub mod bigquery_emulator;
mod pg_server;

pub use pg_server::{Listen, PgServer, TCP_PASSWORD};
