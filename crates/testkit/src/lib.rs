//! Test helpers shared by ferry's crates: throwaway PostgreSQL ([`PgServer`]) and MariaDB
//! ([`MariaDbServer`]) servers, a snowduck server speaking Snowflake's SQL API
//! ([`SnowduckServer`]), a BigQuery emulator ([`BigQueryEmulator`]) and an SMTP server that
//! keeps what it receives ([`SmtpServer`]).
//!
//! Every one of them stops when its value is dropped, and a watchdog stops it (and deletes its
//! folder) if the test process dies without dropping it, so a server may live in a `static`
//! shared by a whole test binary (`process.rs`).
//!
//! The kit only uses `std::process` and the servers' programs (plus `rcgen` to make a TLS
//! server's certificates), so any crate can take it as a dev-dependency without pulling a
//! database driver into its build.

pub mod bigquery_emulator;
mod mariadb_server;
mod pg_server;
mod process;
mod smtp_server;
mod snowduck_server;

pub use bigquery_emulator::BigQueryEmulator;
pub use mariadb_server::{MariaDbServer, MARIADB_PASSWORD, MARIADB_USER};
pub use pg_server::{Listen, PgServer, TCP_PASSWORD};
pub use smtp_server::{ReceivedEmail, SmtpOptions, SmtpServer, SmtpServerSecurity};
pub use snowduck_server::SnowduckServer;
