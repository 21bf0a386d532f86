//! `ferry connect …` and `ferry connections …`: Stripe accounts and warehouses.

use super::output::print_table;
use super::{CliError, CliResult};
use clap::{Args, Subcommand};
use ferry_core::Secret;
use ferry_state::{
    ConnectionKind, ConnectionRecord, NewConnection, SecretInput, SecretRef, StateStore,
};
use serde_json::json;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ConnectCommand {
    /// Connect a Stripe account. The key is tested at once with a read of /v1/balance.
    Stripe(ConnectStripeArgs),
    /// Connect a DuckDB database file (opened read-only by syncs).
    Duckdb(ConnectDuckdbArgs),
    /// Connect a PostgreSQL warehouse (models run in read-only transactions).
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
}

#[derive(Args, Debug)]
pub struct ConnectPostgresArgs {
    pub name: String,
    /// postgres://user:password@host:port/db (stored encrypted).
    #[arg(long, conflicts_with = "url_env", required_unless_present = "url_env")]
    pub url: Option<String>,
    /// Read the URL from this environment variable at every use.
    #[arg(long)]
    pub url_env: Option<String>,
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
            let mut config = json!({"api_base": args.api_base.trim_end_matches('/')});
            if let Some(n) = args.max_rps {
                config["max_rps"] = json!(n);
            }
            if let Some(n) = args.max_rps_per_endpoint {
                config["max_rps_per_endpoint"] = json!(n);
            }
            let connection = NewConnection {
                name: args.name.clone(),
                kind: ConnectionKind::Stripe,
                config,
                secret: Some(secret),
            };
            if !args.skip_test {
                let key = match &connection.secret {
                    Some(SecretInput::Value(secret)) => secret.clone(),
                    Some(SecretInput::EnvVar(var)) => {
                        store.resolve_secret(&SecretRef::EnvVar(var.clone()))?
                    }
                    _ => unreachable!("a new Stripe connection always has a key"),
                };
                let mut stripe = ferry_destinations::stripe::StripeConfig::new(key);
                stripe.api_base = args.api_base.trim_end_matches('/').to_string();
                stripe.test_connection().await.map_err(CliError::failed)?;
            }
            store.put_connection(&connection).await?;
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
            let path = std::path::absolute(&args.path).unwrap_or(args.path);
            let connection = NewConnection {
                name: args.name.clone(),
                kind: ConnectionKind::Duckdb,
                config: json!({"path": path.display().to_string()}),
                secret: None,
            };
            test_source(store, &connection).await?;
            store.put_connection(&connection).await?;
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
            let connection = NewConnection {
                name: args.name.clone(),
                kind: ConnectionKind::Postgres,
                config: json!({}),
                secret: Some(secret),
            };
            test_source(store, &connection).await?;
            store.put_connection(&connection).await?;
            println!("Connected PostgreSQL as '{}'.", args.name);
        }
    }
    Ok(0)
}

async fn test_source(store: &StateStore, connection: &NewConnection) -> CliResult<()> {
    let secret = match &connection.secret {
        Some(SecretInput::Value(secret)) => Some(secret.clone()),
        Some(SecretInput::EnvVar(var)) => {
            Some(store.resolve_secret(&SecretRef::EnvVar(var.clone()))?)
        }
        _ => None,
    };
    let source = match connection.kind {
        ConnectionKind::Duckdb => ferry_source::SourceConfig::DuckDb {
            path: PathBuf::from(connection.config["path"].as_str().unwrap_or_default()),
        },
        _ => ferry_source::SourceConfig::Postgres {
            url: secret.unwrap_or_else(|| Secret::new("")),
        },
    };
    ferry_source::test_connection(&source)
        .await
        .map_err(CliError::failed)
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
            let connection = store.get_connection(&name).await?.ok_or_else(|| {
                CliError::config(anyhow::anyhow!(
                    "no connection named '{name}'; `ferry connections` lists them"
                ))
            })?;
            if connection.kind == ConnectionKind::Stripe {
                let config = ferry_engine::stripe_config(store, &connection)?;
                config.test_connection().await.map_err(CliError::failed)?;
            } else {
                let source = ferry_engine::source_config(store, &connection)?;
                ferry_source::test_connection(&source)
                    .await
                    .map_err(CliError::failed)?;
            }
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

fn describe(connection: &ConnectionRecord) -> String {
    let secret = connection
        .secret
        .as_ref()
        .map(|s| s.describe())
        .unwrap_or_default();
    match connection.kind {
        ConnectionKind::Stripe => format!(
            "{}  key {secret}",
            connection.config["api_base"].as_str().unwrap_or_default()
        ),
        ConnectionKind::Duckdb => connection.config["path"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ConnectionKind::Postgres => format!("URL {secret}"),
    }
}
