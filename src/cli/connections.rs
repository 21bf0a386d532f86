//! `ferry connect …` and `ferry connections …`: Stripe accounts and warehouses.

use super::output::print_table;
use super::{CliError, CliResult};
use clap::{Args, Subcommand};
use ferry_core::Secret;
use ferry_engine::connections::{self, ConnectionSettings, WarehouseSettings};
use ferry_state::{ConnectionRecord, SecretInput, StateStore};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ConnectCommand {
    #[command(about = connections::STRIPE.help)]
    Stripe(ConnectStripeArgs),
    #[command(about = connections::DUCKDB.help)]
    Duckdb(ConnectDuckdbArgs),
    #[command(about = connections::POSTGRES.help)]
    Postgres(ConnectPostgresArgs),
}

#[derive(Args, Debug)]
pub struct ConnectStripeArgs {
    pub name: String,
    /// Read the key from this environment variable at every use; only the variable's name is stored.
    #[arg(long, conflicts_with = "api_key", required_unless_present = "api_key")]
    pub api_key_env: Option<String>,
    /// The key itself; stored encrypted in the workspace. Prefer --api-key-env: a key on the
    /// command line stays in your shell history.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Another Stripe-compatible server, e.g. `ferry emulate stripe`'s URL.
    #[arg(long, default_value = ferry_destinations::stripe::STRIPE_API_BASE)]
    pub api_base: String,
    /// Requests per second for the whole account (default: 25 for test keys, 100 for live).
    /// 0 turns the limit off (emulator benchmarks only).
    #[arg(long)]
    pub max_rps: Option<u32>,
    /// Requests per second per endpoint (default 25, Stripe's limit). 0 turns it off.
    #[arg(long)]
    pub max_rps_per_endpoint: Option<u32>,
    /// Save the connection without testing the key.
    #[arg(long)]
    pub skip_test: bool,
}

#[derive(Args, Debug)]
pub struct ConnectDuckdbArgs {
    pub name: String,
    #[arg(long)]
    pub path: PathBuf,
    #[command(flatten)]
    pub timeouts: WarehouseTimeoutArgs,
}

#[derive(Args, Debug)]
pub struct ConnectPostgresArgs {
    pub name: String,
    /// postgres://user:password@host:port/db (stored encrypted). TLS as with libpq:
    /// ?sslmode=disable|prefer (default)|require|verify-ca|verify-full, and
    /// &sslrootcert=PATH for the PEM certificate of the server's CA.
    #[arg(long, conflicts_with = "url_env", required_unless_present = "url_env")]
    pub url: Option<String>,
    /// Read the URL from this environment variable at every use.
    #[arg(long)]
    pub url_env: Option<String>,
    #[command(flatten)]
    pub timeouts: WarehouseTimeoutArgs,
}

/// How long a warehouse's queries may run (`statement_timeout_seconds`,
/// `preview_timeout_seconds`), and where change detection keeps its tables
/// (`change_detection_schema`).
#[derive(Args, Debug, Default)]
pub struct WarehouseTimeoutArgs {
    /// The longest a run, a sync preview or a model's column check may keep the warehouse
    /// working on the model, in seconds (default 300; 0 means no limit; at most 86400).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true, value_parser = timeout_arg)]
    pub statement_timeout: Option<u32>,
    /// The longest a model preview (`ferry model show`, the web UI's preview) may run, in
    /// seconds (default 30; 0 means no limit; at most 86400).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true, value_parser = timeout_arg)]
    pub preview_timeout: Option<u32>,
    /// Keep change detection's tables in this schema of the warehouse, so only new and changed
    /// rows travel (needs rights to create tables there). Off by default: ferry only reads.
    #[arg(long, value_name = "SCHEMA", value_parser = schema_arg)]
    pub change_detection_schema: Option<String>,
}

impl WarehouseTimeoutArgs {
    fn settings(&self) -> WarehouseSettings {
        WarehouseSettings {
            statement_timeout_seconds: self.statement_timeout,
            preview_timeout_seconds: self.preview_timeout,
            change_detection_schema: self.change_detection_schema.clone(),
        }
    }
}

fn timeout_arg(text: &str) -> Result<u32, String> {
    let max = ferry_engine::declare::MAX_TIMEOUT_SECONDS;
    text.parse::<u32>()
        .ok()
        .filter(|seconds| *seconds <= max)
        .ok_or_else(|| format!("give a whole number of seconds between 0 (no limit) and {max}"))
}

fn schema_arg(text: &str) -> Result<String, String> {
    ferry_source::warehouse_diff::check_schema_name(text).map(|()| text.to_string())
}

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    #[command(subcommand)]
    pub command: Option<ConnectionsCommand>,
}

#[derive(Subcommand, Debug)]
pub enum ConnectionsCommand {
    /// Test a connection: Stripe reads /v1/balance, a warehouse runs `SELECT 1`.
    Test { name: String },
    /// Remove a connection no model or sync uses.
    Remove { name: String },
}

pub async fn connect(store: &StateStore, command: ConnectCommand) -> CliResult {
    match command {
        ConnectCommand::Stripe(args) => {
            let secret = match (args.api_key, args.api_key_env) {
                (Some(key), _) => SecretInput::Value(Secret::new(key)),
                (None, Some(var)) => SecretInput::EnvVar(var),
                (None, None) => {
                    return Err(CliError::config(anyhow::anyhow!(
                        "give the key with --api-key-env VAR or --api-key KEY"
                    )))
                }
            };
            let settings = ferry_engine::declare::StripeSettings {
                api_base: Some(args.api_base.clone()),
                max_rps: args.max_rps,
                max_rps_per_endpoint: args.max_rps_per_endpoint,
            };
            let connection =
                ferry_engine::declare::stripe_connection(&args.name, secret, &settings);
            ferry_engine::declare::save_connection(store, &connection, !args.skip_test).await?;
            println!(
                "Connected Stripe as '{}'{}.",
                args.name,
                if args.skip_test {
                    " (not tested)"
                } else {
                    "; the key works"
                }
            );
        }
        ConnectCommand::Duckdb(args) => {
            let connection = ferry_engine::declare::duckdb_connection(
                &args.name,
                &args.path,
                &args.timeouts.settings(),
            );
            let saved = ferry_engine::declare::save_connection(store, &connection, true).await?;
            let path = match ConnectionSettings::of_record(&saved)? {
                ConnectionSettings::Duckdb(duckdb) => duckdb.path,
                _ => unreachable!("a DuckDB connection was saved"),
            };
            println!("Connected DuckDB at {} as '{}'.", path.display(), args.name);
        }
        ConnectCommand::Postgres(args) => {
            let secret = match (args.url, args.url_env) {
                (Some(url), _) => SecretInput::Value(Secret::new(url)),
                (None, Some(var)) => SecretInput::EnvVar(var),
                (None, None) => {
                    return Err(CliError::config(anyhow::anyhow!(
                        "give the URL with --url or --url-env"
                    )))
                }
            };
            let connection = ferry_engine::declare::postgres_connection(
                &args.name,
                secret,
                &args.timeouts.settings(),
            );
            ferry_engine::declare::save_connection(store, &connection, true).await?;
            println!("Connected PostgreSQL as '{}'.", args.name);
        }
    }
    Ok(0)
}

pub async fn connections(store: &StateStore, args: ConnectionsArgs) -> CliResult {
    match args.command {
        None => {
            let list = store.list_connections().await?;
            if list.is_empty() {
                println!("No connections yet. Add one with `ferry connect stripe NAME --api-key-env STRIPE_API_KEY` or `ferry connect duckdb NAME --path FILE`.");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| vec![c.name.clone(), c.kind.as_str().to_string(), describe(c)])
                .collect();
            print_table(&["NAME", "KIND", "DETAILS"], &rows);
        }
        Some(ConnectionsCommand::Test { name }) => {
            ferry_engine::declare::test_saved_connection(store, &name).await?;
            println!("Connection '{name}' works.");
        }
        Some(ConnectionsCommand::Remove { name }) => {
            if store.remove_connection(&name).await? {
                println!("Removed connection '{name}'.");
            } else {
                return Err(CliError::config(anyhow::anyhow!(
                    "no connection named '{name}'"
                )));
            }
        }
    }
    Ok(0)
}

/// A connection's details for the listing; settings that cannot be read show the error, so the
/// other connections are still listed.
fn describe(connection: &ConnectionRecord) -> String {
    let secret = connection
        .secret
        .as_ref()
        .map(|s| s.describe())
        .unwrap_or_default();
    let warehouse = |settings: &WarehouseSettings| -> String {
        settings
            .described()
            .iter()
            .map(|part| format!("  {part}"))
            .collect()
    };
    match ConnectionSettings::of_record(connection) {
        Ok(ConnectionSettings::Stripe(stripe)) => format!(
            "{}  key {secret}  API version {}",
            stripe.api_base(),
            ferry_destinations::stripe::STRIPE_VERSION
        ),
        Ok(ConnectionSettings::Duckdb(duckdb)) => {
            format!("{}{}", duckdb.path.display(), warehouse(&duckdb.warehouse))
        }
        Ok(ConnectionSettings::Postgres(postgres)) => {
            format!("URL {secret}{}", warehouse(&postgres))
        }
        Err(error) => error.to_string(),
    }
}
