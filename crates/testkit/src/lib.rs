//! Test helpers shared by ferry's crates: throwaway PostgreSQL ([`PgServer`]) and MariaDB
//! ([`MariaDbServer`]) servers, and a snowduck server speaking Snowflake's SQL API
//! ([`SnowduckServer`]).
//!
//! The kit only uses `std::process` and the database servers' binaries (plus `rcgen` to make a
//! TLS server's certificates), so any crate can take it as a dev-dependency without pulling a
//! database driver into its build.

pub mod bigquery_emulator;
mod mariadb_server;
mod pg_server;
mod snowduck_server;

pub use mariadb_server::{MariaDbServer, MARIADB_PASSWORD, MARIADB_USER};
pub use pg_server::{Listen, PgServer, TCP_PASSWORD};
pub use snowduck_server::SnowduckServer;
