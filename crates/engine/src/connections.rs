//! Turning stored connections into source and destination settings, secrets resolved.
//!
//! The stored `config` JSON per kind: stripe `{"api_base", "max_rps", "max_rps_per_endpoint"}`
//! with the API key as the secret; duckdb `{"path", "statement_timeout_seconds",
//! "preview_timeout_seconds"}`; postgres `{"statement_timeout_seconds",
//! "preview_timeout_seconds"}` with the URL as the secret. The timeouts are optional whole
//! seconds (0: no limit; see `declare::WarehouseSettings`). Both warehouse kinds may also hold
//! `"change_detection_schema"`, which turns on change detection inside the warehouse.

use crate::EngineError;
use ferry_destinations::stripe::{StripeConfig, STRIPE_API_BASE};
use ferry_source::{QueryOptions, SourceConfig, TimeoutSetting};
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

/// How a warehouse connection's queries run: with its `statement_timeout_seconds` (runs, sync
/// previews, finding a model's columns) or its `preview_timeout_seconds` (model previews), or
/// their defaults (5 minutes, 30 seconds) when the connection does not set them.
pub fn query_options(
    connection: &ConnectionRecord,
    setting: TimeoutSetting,
) -> Result<QueryOptions, EngineError> {
    let default = match setting {
        TimeoutSetting::Statement => ferry_source::DEFAULT_STATEMENT_TIMEOUT,
        TimeoutSetting::Preview => ferry_source::PREVIEW_STATEMENT_TIMEOUT,
    };
    let statement_timeout = match connection.config.get(setting.key()) {
        None | Some(serde_json::Value::Null) => default,
        // Checked again here: saving checks it, but a workspace may have been edited by hand.
        Some(value) => {
            let seconds = crate::declare::timeout_seconds(setting, value).map_err(|problem| {
                EngineError::Config(format!(
                    "connection '{}': {problem}; reconnect it with a valid {}",
                    connection.name,
                    setting.flag()
                ))
            })?;
            std::time::Duration::from_secs(u64::from(seconds))
        }
    };
    Ok(QueryOptions {
        statement_timeout,
        timeout_setting: setting,
        ..QueryOptions::default()
    })
}

/// The connection's `change_detection_schema`: where, in the warehouse, ferry keeps what change
/// detection needs; `None` when ferry only reads (the default).
pub fn change_detection_schema(
    connection_name: &str,
    config: &serde_json::Value,
) -> Result<Option<String>, EngineError> {
    let reconnect = |problem: String| {
        EngineError::Config(format!(
            "connection '{connection_name}': {}: {problem}",
            crate::declare::CHANGE_DETECTION_SCHEMA
        ))
    };
    match config.get(crate::declare::CHANGE_DETECTION_SCHEMA) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(schema)) => {
            ferry_source::warehouse_diff::check_schema_name(schema).map_err(reconnect)?;
            Ok(Some(schema.clone()))
        }
        Some(other) => Err(reconnect(format!(
            "{other} is not a schema name; give a name such as `ferry`"
        ))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declare::{self, WarehouseSettings};
    use ferry_state::SecretInput;
    use std::time::Duration;

    fn record(connection: ferry_state::NewConnection) -> ConnectionRecord {
        ConnectionRecord {
            name: connection.name,
            kind: connection.kind,
            config: connection.config,
            secret: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn timeout(connection: &ConnectionRecord, setting: TimeoutSetting) -> Duration {
        let options = query_options(connection, setting).expect("valid settings");
        assert_eq!(options.timeout_setting, setting);
        options.statement_timeout
    }

    #[test]
    fn warehouse_timeouts_are_stored_only_when_given_and_read_back_with_defaults() {
        let plain = declare::duckdb_connection(
            "w",
            Path::new("/data/w.duckdb"),
            &WarehouseSettings::default(),
        );
        assert_eq!(
            plain.config,
            serde_json::json!({"path": "/data/w.duckdb"}),
            "nothing stored for the defaults"
        );
        let plain = record(plain);
        assert_eq!(
            timeout(&plain, TimeoutSetting::Statement),
            Duration::from_secs(300)
        );
        assert_eq!(
            timeout(&plain, TimeoutSetting::Preview),
            Duration::from_secs(30)
        );

        let set = record(declare::postgres_connection(
            "pg",
            SecretInput::EnvVar("WAREHOUSE_URL".into()),
            &WarehouseSettings {
                statement_timeout_seconds: Some(0),
                preview_timeout_seconds: Some(86_400),
                change_detection_schema: Some("ferry".into()),
            },
        ));
        assert_eq!(
            set.config,
            serde_json::json!({"statement_timeout_seconds": 0, "preview_timeout_seconds": 86400,
                "change_detection_schema": "ferry"})
        );
        assert_eq!(timeout(&set, TimeoutSetting::Statement), Duration::ZERO);
        assert_eq!(
            timeout(&set, TimeoutSetting::Preview),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn a_bad_stored_timeout_is_refused_naming_the_setting() {
        let mut connection = record(declare::duckdb_connection(
            "w",
            Path::new("/data/w.duckdb"),
            &WarehouseSettings::default(),
        ));
        connection.config["preview_timeout_seconds"] = serde_json::json!(-1);
        let error = query_options(&connection, TimeoutSetting::Preview)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "connection 'w': preview_timeout_seconds must be a whole number of seconds between \
             0 (no limit) and 86400; reconnect it with a valid --preview-timeout"
        );
        // The other setting is unaffected.
        assert_eq!(
            timeout(&connection, TimeoutSetting::Statement),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn timeouts_are_whole_seconds_from_zero_to_a_day() {
        use serde_json::json;
        let setting = TimeoutSetting::Statement;
        for good in [json!(0), json!(1), json!(86_400)] {
            assert!(declare::timeout_seconds(setting, &good).is_ok(), "{good}");
        }
        for bad in [
            json!(-1),
            json!(86_401),
            json!(1.5),
            json!("30"),
            json!(true),
        ] {
            assert_eq!(
                declare::timeout_seconds(setting, &bad)
                    .unwrap_err()
                    .to_string(),
                "statement_timeout_seconds must be a whole number of seconds between 0 (no \
                 limit) and 86400",
                "{bad}"
            );
        }
        assert_eq!(declare::parse_timeout_seconds(setting, " ").unwrap(), None);
        assert_eq!(
            declare::parse_timeout_seconds(setting, " 60 ").unwrap(),
            Some(60)
        );
        for bad in ["-1", "86401", "1.5", "1m", "99999999999"] {
            assert!(
                declare::parse_timeout_seconds(setting, bad).is_err(),
                "{bad}"
            );
        }
    }
}
