//! Saving what a user declares (connections, models, syncs) after checking it against the real
//! systems. The CLI, the server, the web UI and `ferry apply` all save through here, so every
//! door checks the same things and gives the same errors.

pub use crate::connections::{
    timeout_problem, StripeSettings, WarehouseSettings, CHANGE_DETECTION_SCHEMA,
    MAX_TIMEOUT_SECONDS,
};
use crate::connections::{ConnectionSettings, DuckdbSettings};
use crate::{source_config, stripe_config, EngineError};
use ferry_core::{SyncSpec, Value};
use ferry_source::Column;
pub use ferry_source::TimeoutSetting;
use ferry_state::{
    ConnectionRecord, ModelRecord, NewConnection, ObjectType, SecretInput, SecretRef, StateStore,
    SyncRecord,
};
use std::path::Path;

/// The stored form of a connection: its kind and settings (the registry's JSON), its secret.
pub fn new_connection(
    name: &str,
    settings: &ConnectionSettings,
    secret: Option<SecretInput>,
) -> NewConnection {
    NewConnection {
        name: name.to_string(),
        kind: settings.kind(),
        config: settings.to_config(),
        secret,
    }
}

/// The stored form of a Stripe connection; the API base is always stored, trimmed.
pub fn stripe_connection(name: &str, key: SecretInput, settings: &StripeSettings) -> NewConnection {
    let settings = StripeSettings {
        api_base: Some(settings.api_base().trim().trim_end_matches('/').to_string()),
        ..settings.clone()
    };
    new_connection(name, &ConnectionSettings::Stripe(settings), Some(key))
}

/// A change detection schema as given by any door (empty: not set), checked: a plain SQL name
/// that every warehouse accepts quoted or not (lower-case letters, digits and `_`, at most 63
/// characters, not starting with a digit).
pub fn parse_change_detection_schema(text: &str) -> Result<Option<String>, EngineError> {
    crate::connections::schema_text(text).map_err(EngineError::Config)
}

/// A timeout setting's value as given in JSON or YAML, checked.
pub fn timeout_seconds(
    setting: TimeoutSetting,
    value: &serde_json::Value,
) -> Result<u32, EngineError> {
    crate::connections::timeout_seconds(setting, value).map_err(EngineError::Config)
}

/// A timeout setting's value as typed in a form (empty: not set), checked.
pub fn parse_timeout_seconds(
    setting: TimeoutSetting,
    text: &str,
) -> Result<Option<u32>, EngineError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u32>()
        .ok()
        .filter(|seconds| *seconds <= MAX_TIMEOUT_SECONDS)
        .map(Some)
        .ok_or_else(|| EngineError::Config(timeout_problem(setting)))
}

/// The stored form of a DuckDB connection; the path is made absolute, so a sync finds the file
/// from whatever directory it runs in.
pub fn duckdb_connection(name: &str, path: &Path, settings: &WarehouseSettings) -> NewConnection {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let settings = ConnectionSettings::Duckdb(DuckdbSettings {
        path,
        warehouse: settings.clone(),
    });
    new_connection(name, &settings, None)
}

/// The stored form of a PostgreSQL connection: the URL (which may hold a password) is the secret.
pub fn postgres_connection(
    name: &str,
    url: SecretInput,
    settings: &WarehouseSettings,
) -> NewConnection {
    new_connection(
        name,
        &ConnectionSettings::Postgres(settings.clone()),
        Some(url),
    )
}

/// Tests a connection that is not saved yet with its kind's test (Stripe reads `/v1/balance`
/// with the key, a warehouse runs `SELECT 1`). A `SecretInput::Keep` is resolved from the saved
/// connection.
pub async fn test_new_connection(
    store: &StateStore,
    connection: &NewConnection,
) -> Result<(), EngineError> {
    let settings = ConnectionSettings::of_new(connection)?;
    let secret = match &connection.secret {
        Some(SecretInput::Value(secret)) => Some(secret.clone()),
        Some(SecretInput::EnvVar(variable)) => {
            Some(store.resolve_secret(&SecretRef::EnvVar(variable.clone()))?)
        }
        Some(SecretInput::Keep) => {
            let saved = require_connection(store, &connection.name).await?;
            match &saved.secret {
                Some(secret) => Some(store.resolve_secret(secret)?),
                None => None,
            }
        }
        None => None,
    };
    settings
        .test(store, &connection.name, secret.clone())
        .await?;
    // Change detection in the warehouse writes to one schema: set it up now, so that a missing
    // right is said when the connection is saved, not at its first run.
    if let Some(schema) = settings
        .warehouse()
        .and_then(|warehouse| warehouse.change_detection_schema.as_ref())
    {
        let source = settings.source(store, &connection.name, secret)?;
        ferry_source::warehouse_diff::prepare_schema(&source, schema)
            .await
            .map_err(|e| EngineError::ConnectionTest(e.to_string()))?;
    }
    Ok(())
}

/// Tests (unless `test` is false) and saves a connection, creating or replacing it.
pub async fn save_connection(
    store: &StateStore,
    connection: &NewConnection,
    test: bool,
) -> Result<ConnectionRecord, EngineError> {
    // A name that cannot be saved is refused before the connection is tested with its secret.
    store
        .check_name_to_save(ObjectType::Connection, &connection.name)
        .await?;
    let settings = ConnectionSettings::of_new(connection)?;
    let mut connection = connection.clone();
    let secret_optional = settings
        .spec()
        .secret
        .as_ref()
        .is_some_and(|secret| secret.optional);
    if matches!(connection.secret, Some(SecretInput::Keep)) {
        match store.get_connection(&connection.name).await? {
            // An optional secret that was never given stays absent (BigQuery's application
            // default credentials).
            Some(saved) if secret_optional && saved.secret.is_none() => connection.secret = None,
            None if secret_optional => connection.secret = None,
            Some(saved) => check_kept_secret(&saved, &settings)?,
            None => {
                require_connection(store, &connection.name).await?;
            }
        }
    }
    let connection = &connection;
    settings.check_before_saving(store)?;
    if test {
        test_new_connection(store, connection).await?;
    }
    store.put_connection(connection).await?;
    require_connection(store, &connection.name).await
}

/// A change that keeps the stored secret may not send it anywhere else: not to another
/// `api_base` (which would hand the key to whoever runs that server), nor into a connection of
/// another kind.
fn check_kept_secret(
    saved: &ConnectionRecord,
    settings: &ConnectionSettings,
) -> Result<(), EngineError> {
    if saved.kind != settings.kind() {
        return Err(EngineError::Config(format!(
            "connection '{}' is a {} connection; to make it a {} connection, give its secret too",
            saved.name,
            saved.kind,
            settings.kind()
        )));
    }
    if let ConnectionSettings::Stripe(new) = settings {
        let ConnectionSettings::Stripe(old) = ConnectionSettings::of_record(saved)? else {
            unreachable!("the kinds are the same")
        };
        if old.api_base != new.api_base {
            return Err(EngineError::Config(format!(
                "the API base of connection '{}' changes, so give its API key again: a stored key is only sent to the server it was saved for",
                saved.name
            )));
        }
    }
    Ok(())
}

/// Tests a saved connection with its kind's test.
pub async fn test_saved_connection(store: &StateStore, name: &str) -> Result<(), EngineError> {
    let connection = require_connection(store, name).await?;
    if !crate::connections::kind_spec(connection.kind).is_source {
        stripe_config(store, &connection)?
            .test_connection()
            .await
            .map_err(|e| EngineError::ConnectionTest(e.to_string()))
    } else {
        ferry_source::test_connection(&source_config(store, &connection)?)
            .await
            .map_err(|e| EngineError::ConnectionTest(e.to_string()))
    }
}

/// The first rows of a query, for people to look at: cells and the whole answer capped.
#[derive(Debug, Clone)]
pub struct QueryPreview {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// Rows left out because the preview reached [`PREVIEW_MAX_BYTES`].
    pub rows_left_out: bool,
}

/// Characters a preview shows of one cell; a longer one ends with a visible marker.
pub const PREVIEW_CELL_MAX_CHARS: usize = 1_000;
/// The most text a preview holds in all; the rows after are left out (and said to be).
pub const PREVIEW_MAX_BYTES: usize = 1024 * 1024;

/// The first rows of a query on a warehouse connection, for the model editor, within the
/// connection's preview timeout (`preview_timeout_seconds`). A cell over
/// [`PREVIEW_CELL_MAX_CHARS`] is cut with a marker saying how long it was, and rows stop once
/// the preview holds [`PREVIEW_MAX_BYTES`], so a model of huge values cannot produce a huge
/// answer.
pub async fn preview_query(
    store: &StateStore,
    connection: &str,
    sql: &str,
    limit: usize,
) -> Result<QueryPreview, EngineError> {
    query_first_rows(store, connection, sql, limit, TimeoutSetting::Preview).await
}

/// The model's columns, found by running it as a sync would (with the connection's statement
/// timeout, since a heavy model may take a while to produce its first row).
async fn query_columns(
    store: &StateStore,
    connection: &str,
    sql: &str,
) -> Result<Vec<Column>, EngineError> {
    // One row, not none: a query only fails (a write refused by the read-only transaction,
    // an error in its data) once it really runs.
    Ok(
        query_first_rows(store, connection, sql, 1, TimeoutSetting::Statement)
            .await?
            .columns,
    )
}

async fn query_first_rows(
    store: &StateStore,
    connection: &str,
    sql: &str,
    limit: usize,
    timeout: TimeoutSetting,
) -> Result<QueryPreview, EngineError> {
    let connection = require_connection(store, connection).await?;
    let source = source_config(store, &connection)?;
    let options = crate::connections::query_options(&connection, timeout)?;
    let (columns, rows) = ferry_source::preview(&source, sql, limit, &options)
        .await
        .map_err(|e| {
            if e.is_unreachable() {
                EngineError::WarehouseUnreachable(e.to_string())
            } else {
                EngineError::Query(e.to_string())
            }
        })?;
    let mut preview = QueryPreview {
        columns,
        rows: Vec::with_capacity(rows.len()),
        rows_left_out: false,
    };
    let mut bytes = 0usize;
    for row in rows {
        let row: Vec<Value> = row.into_iter().map(cap_cell).collect();
        bytes += row.iter().map(|v| v.to_string().len()).sum::<usize>();
        if bytes > PREVIEW_MAX_BYTES {
            preview.rows_left_out = true;
            break;
        }
        preview.rows.push(row);
    }
    Ok(preview)
}

fn cap_cell(value: Value) -> Value {
    let text = match &value {
        Value::Text(text) => text.clone(),
        Value::Json(_) | Value::Array(_) => value.to_string(),
        _ => return value,
    };
    let chars = text.chars().count();
    if chars <= PREVIEW_CELL_MAX_CHARS {
        return value;
    }
    let kept: String = text.chars().take(PREVIEW_CELL_MAX_CHARS).collect();
    Value::Text(format!("{kept}…[truncated: {chars} characters]"))
}

/// Runs the query once (so a typo shows now, not at the first sync), checks that the syncs
/// reading the model still fit its columns, then saves the model. Returns its columns.
pub async fn save_model(
    store: &StateStore,
    name: &str,
    connection: &str,
    sql: &str,
) -> Result<Vec<Column>, EngineError> {
    save_model_before_syncs(store, name, connection, sql, &[]).await
}

/// [`save_model`] for a caller that saves some of the model's syncs again right after (`ferry
/// apply`): those are checked when they are saved, so they are not held against the model.
pub async fn save_model_before_syncs(
    store: &StateStore,
    name: &str,
    connection: &str,
    sql: &str,
    syncs_saved_next: &[&str],
) -> Result<Vec<Column>, EngineError> {
    store.check_name_to_save(ObjectType::Model, name).await?;
    let columns = query_columns(store, connection, sql).await?;
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    for sync in store.list_syncs().await? {
        if sync.spec.model != name || syncs_saved_next.contains(&sync.name.as_str()) {
            continue;
        }
        if let Err(problems) = crate::prepare::validate_sync(&sync.spec, &names) {
            return Err(EngineError::InvalidSync(
                std::iter::once(format!(
                    "sync '{}' reads model '{name}' and would not fit it any more; change the sync first, or keep these columns",
                    sync.name
                ))
                .chain(problems)
                .collect(),
            ));
        }
    }
    store.put_model(name, connection, sql).await?;
    Ok(columns)
}

/// The columns a saved model returns, for the Mapper's column pickers.
pub async fn model_columns(store: &StateStore, model: &str) -> Result<Vec<Column>, EngineError> {
    let model = require_model(store, model).await?;
    let columns = query_columns(store, &model.connection, &model.sql).await?;
    Ok(columns)
}

/// Checks a sync against its model's columns and Stripe's fields, then saves it.
pub async fn save_sync(
    store: &StateStore,
    name: &str,
    spec: &SyncSpec,
) -> Result<SyncRecord, EngineError> {
    store.check_name_to_save(ObjectType::Sync, name).await?;
    let destination = require_connection(store, &spec.destination).await?;
    stripe_config(store, &destination)?;
    let columns = model_columns(store, &spec.model).await?;
    let names: Vec<String> = columns.into_iter().map(|c| c.name).collect();
    crate::prepare::validate_sync(spec, &names).map_err(EngineError::InvalidSync)?;
    if let Some(alerts) = &spec.alerts {
        crate::alerts::check_alert_settings(store, alerts).await?;
    }
    Ok(store.put_sync(name, spec).await?)
}

pub async fn require_connection(
    store: &StateStore,
    name: &str,
) -> Result<ConnectionRecord, EngineError> {
    store
        .get_connection(name)
        .await?
        .ok_or_else(|| EngineError::UnknownConnection(name.to_string()))
}

pub async fn require_model(store: &StateStore, name: &str) -> Result<ModelRecord, EngineError> {
    store
        .get_model(name)
        .await?
        .ok_or_else(|| EngineError::UnknownModel(name.to_string()))
}

/// Removes a sync with its runs and snapshot, holding its lock meanwhile: a running sync is
/// refused (`StateError::SyncLocked`), since its run would go on writing to Stripe with nothing
/// left to record what it did, and no run can start while the sync is being removed.
pub async fn remove_sync(store: &StateStore, name: &str) -> Result<(), EngineError> {
    let sync = store
        .get_sync(name)
        .await?
        .ok_or_else(|| EngineError::UnknownSync(name.to_string()))?;
    let lock = store.lock_sync(&sync).await?;
    let removed = store.remove_sync(name).await;
    lock.release().await;
    if removed? {
        Ok(())
    } else {
        Err(EngineError::UnknownSync(name.to_string()))
    }
}
