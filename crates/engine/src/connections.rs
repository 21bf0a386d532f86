//! Turning stored connections into source and destination settings, secrets resolved.
//!
//! The stored `config` JSON per kind: stripe `{"api_base", "max_rps", "max_rps_per_endpoint"}`
//! with the API key as the secret; duckdb `{"path"}`; postgres `{}` with the URL as the secret.

use crate::EngineError;
use ferry_destinations::stripe::{StripeConfig, STRIPE_API_BASE};
use ferry_source::SourceConfig;
use ferry_state::{ConnectionKind, ConnectionRecord, StateStore};
use std::path::Path;

pub fn stripe_config(
    store: &StateStore,
    connection: &ConnectionRecord,
) -> Result<StripeConfig, EngineError> {
    expect_kind(connection, ConnectionKind::Stripe, "a Stripe destination")?;
    let secret = connection.secret.as_ref().ok_or_else(|| {
        EngineError::Config(format!(
            "Stripe connection '{}' has no API key; reconnect it with --api-key-env",
            connection.name
        ))
    })?;
    let mut config = StripeConfig::new(store.resolve_secret(secret)?);
    let api_base = connection
        .config
        .get("api_base")
        .and_then(|v| v.as_str())
        .unwrap_or(STRIPE_API_BASE);
    // Checked again here: a workspace saved by an older ferry may hold an unsafe one.
    config.api_base =
        ferry_destinations::stripe::config::validate_api_base(api_base).map_err(|problem| {
            EngineError::Config(format!(
                "Stripe connection '{}': {problem}; reconnect it with a valid --api-base",
                connection.name
            ))
        })?;
    let number = |name: &str| {
        connection
            .config
            .get(name)
            .and_then(|v| v.as_u64())
            .map(|n| n as u32)
    };
    config.max_requests_per_second = number("max_rps");
    config.max_requests_per_second_per_endpoint = number("max_rps_per_endpoint");
    Ok(config)
}

pub fn source_config(
    store: &StateStore,
    connection: &ConnectionRecord,
) -> Result<SourceConfig, EngineError> {
    match connection.kind {
        ConnectionKind::Duckdb => {
            let path = connection
                .config
                .get("path")
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    EngineError::Config(format!(
                        "DuckDB connection '{}' has no path; reconnect it with --path",
                        connection.name
                    ))
                })?;
            duckdb_source(store, Path::new(path))
        }
        ConnectionKind::Postgres => {
            let secret = connection.secret.as_ref().ok_or_else(|| {
                EngineError::Config(format!(
                    "PostgreSQL connection '{}' has no URL; reconnect it with --url",
                    connection.name
                ))
            })?;
            Ok(SourceConfig::Postgres {
                url: store.resolve_secret(secret)?,
            })
        }
        ConnectionKind::Stripe => Err(EngineError::WrongConnectionKind {
            name: connection.name.clone(),
            actual: "stripe".to_string(),
            expected: "a warehouse (duckdb or postgres)",
        }),
    }
}

/// A DuckDB warehouse at `path`, refused when the path is ferry's own workspace (its database,
/// key or lock files, through any link): DuckDB opening and closing the workspace database in
/// this process would drop SQLite's locks on it and let another ferry process corrupt it.
pub fn duckdb_source(store: &StateStore, path: &Path) -> Result<SourceConfig, EngineError> {
    if store.is_inside_workspace(path) {
        return Err(EngineError::Config(format!(
            "{} is inside ferry's workspace ({}); a DuckDB connection must point at your \
             warehouse's database file, never at ferry's own files",
            path.display(),
            store.workspace_dir().display()
        )));
    }
    Ok(SourceConfig::DuckDb {
        path: path.to_path_buf(),
    })
}

fn expect_kind(
    connection: &ConnectionRecord,
    kind: ConnectionKind,
    expected: &'static str,
) -> Result<(), EngineError> {
    if connection.kind == kind {
        Ok(())
    } else {
        Err(EngineError::WrongConnectionKind {
            name: connection.name.clone(),
            actual: connection.kind.as_str().to_string(),
            expected,
        })
    }
}
