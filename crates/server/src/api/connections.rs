//! `/api/v1/connections`: Stripe accounts and warehouses.

use super::{check_name_matches, ApiJson, ApiPath};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_core::Secret;
use ferry_engine::connections::ConnectionSettings;
use ferry_engine::declare::{self, StripeSettings, TimeoutSetting, WarehouseSettings};
use ferry_state::{ConnectionKind, ConnectionRecord, NewConnection, SecretInput, SecretRef};
use serde::{Deserialize, Serialize};

/// A connection as the API shows it. Secrets never leave the server: an encrypted key shows as
/// its hint (`sk_test_…4242`), an environment reference as the variable's name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub name: String,
    /// `stripe`, `duckdb` or `postgres`.
    pub kind: String,
    /// Non-secret settings: `api_base`, `max_rps`, `max_rps_per_endpoint` (Stripe); `path`
    /// (DuckDB); `statement_timeout_seconds`, `preview_timeout_seconds`,
    /// `change_detection_schema` (DuckDB and PostgreSQL, when set).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub secret: Option<SecretView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum SecretView {
    /// Stored encrypted in the workspace.
    Encrypted { hint: String },
    /// Read from this environment variable of the server at every use.
    Env { variable: String },
}

impl From<&ConnectionRecord> for ConnectionView {
    fn from(record: &ConnectionRecord) -> ConnectionView {
        ConnectionView {
            name: record.name.clone(),
            kind: record.kind.as_str().to_string(),
            // The typed settings when they can be read; as stored otherwise, to show what to fix.
            config: ConnectionSettings::of_record(record)
                .map(|settings| settings.to_config())
                .unwrap_or_else(|_| record.config.clone()),
            secret: record.secret.as_ref().map(|secret| match secret {
                SecretRef::Encrypted(encrypted) => SecretView::Encrypted {
                    hint: encrypted.hint().to_string(),
                },
                SecretRef::EnvVar(variable) => SecretView::Env {
                    variable: variable.clone(),
                },
            }),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindInput {
    Stripe,
    Duckdb,
    Postgres,
}

/// A connection to create or replace. Give a secret as its value (stored encrypted) or as the
/// name of an environment variable; on replace, give neither to keep the stored one.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInput {
    /// Required when creating; on replace it must match the path if given.
    pub name: Option<String>,
    pub kind: Option<KindInput>,
    /// Stripe: the secret or restricted key.
    pub api_key: Option<String>,
    /// Stripe: the environment variable that holds the key.
    pub api_key_env: Option<String>,
    /// Stripe: another Stripe-compatible server (the emulator).
    pub api_base: Option<String>,
    pub max_rps: Option<u32>,
    pub max_rps_per_endpoint: Option<u32>,
    /// DuckDB: the database file.
    pub path: Option<String>,
    /// PostgreSQL: `postgres://user:password@host/db`.
    pub url: Option<String>,
    /// PostgreSQL: the environment variable that holds the URL.
    pub url_env: Option<String>,
    /// DuckDB and PostgreSQL: the longest a run, a sync preview or a model's column check may
    /// keep the warehouse working on the model, in whole seconds; 0 means no limit. Default
    /// 300.
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 86400)]
    pub statement_timeout_seconds: Option<serde_json::Value>,
    /// DuckDB and PostgreSQL: the longest a model preview may run, in whole seconds; 0 means no
    /// limit. Default 30.
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 86400)]
    pub preview_timeout_seconds: Option<serde_json::Value>,
    /// DuckDB and PostgreSQL: keep change detection's tables in this schema of the warehouse,
    /// so only new and changed rows travel (needs rights to create tables there; saving with a
    /// test creates the schema). Lower-case letters, digits and `_`, such as `ferry`. Absent
    /// or empty (the default): ferry only reads the warehouse.
    #[schema(pattern = "^([a-z_][a-z0-9_]{0,62})?$", example = "ferry")]
    pub change_detection_schema: Option<String>,
    /// Save without testing the connection.
    #[serde(default)]
    pub skip_test: bool,
}

fn secret_input(
    value: Option<String>,
    env: Option<String>,
    value_field: &str,
    env_field: &str,
    replacing: bool,
) -> Result<SecretInput, ApiError> {
    match (
        value.filter(|v| !v.is_empty()),
        env.filter(|v| !v.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(ApiError::invalid(format!(
            "give either `{value_field}` or `{env_field}`, not both"
        ))),
        (Some(value), None) => Ok(SecretInput::Value(Secret::new(value))),
        (None, Some(variable)) => Ok(SecretInput::EnvVar(variable)),
        (None, None) if replacing => Ok(SecretInput::Keep),
        (None, None) => Err(ApiError::invalid(format!(
            "`{value_field}` or `{env_field}` is required"
        ))),
    }
}

/// Refuses a secret read from a server environment variable the operator did not allow: the
/// connection test would send its value to the `api_base` the caller chose.
fn check_secret_env(state: &AppState, input: &ConnectionInput) -> Result<(), ApiError> {
    for variable in [&input.api_key_env, &input.url_env].into_iter().flatten() {
        if !variable.is_empty() && !state.secret_env_allowed(variable) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "secret_env_not_allowed",
                format!(
                    "this server does not let API callers read its environment variable {variable}; \
                     send the secret itself, or start the server with `ferry serve --allow-secret-env {variable}`"
                ),
            ));
        }
    }
    Ok(())
}

impl ConnectionInput {
    /// The connection to save. `replacing` lets an omitted secret mean "keep the stored one".
    pub fn into_new_connection(
        self,
        name: &str,
        replacing: bool,
    ) -> Result<NewConnection, ApiError> {
        let kind = self
            .kind
            .ok_or_else(|| ApiError::invalid("`kind` is required: stripe, duckdb or postgres"))?;
        // Read as any JSON value, so that a bad one is refused in ferry's words.
        let timeout = |setting: TimeoutSetting, value: Option<serde_json::Value>| {
            value
                .filter(|value| !value.is_null())
                .map(|value| declare::timeout_seconds(setting, &value))
                .transpose()
                .map_err(ApiError::from)
        };
        let warehouse = WarehouseSettings {
            statement_timeout_seconds: timeout(
                TimeoutSetting::Statement,
                self.statement_timeout_seconds,
            )?,
            preview_timeout_seconds: timeout(
                TimeoutSetting::Preview,
                self.preview_timeout_seconds,
            )?,
            change_detection_schema: self
                .change_detection_schema
                .as_deref()
                .map(declare::parse_change_detection_schema)
                .transpose()?
                .flatten(),
        };
        if matches!(kind, KindInput::Stripe)
            && (warehouse.statement_timeout_seconds.is_some()
                || warehouse.preview_timeout_seconds.is_some()
                || warehouse.change_detection_schema.is_some())
        {
            return Err(ApiError::invalid(
                "`statement_timeout_seconds`, `preview_timeout_seconds` and \
                 `change_detection_schema` are settings of a warehouse (duckdb or postgres) \
                 connection, not of a Stripe one",
            ));
        }
        match kind {
            KindInput::Stripe => {
                let key = secret_input(
                    self.api_key,
                    self.api_key_env,
                    "api_key",
                    "api_key_env",
                    replacing,
                )?;
                let settings = StripeSettings {
                    api_base: self.api_base.filter(|b| !b.trim().is_empty()),
                    max_rps: self.max_rps,
                    max_rps_per_endpoint: self.max_rps_per_endpoint,
                };
                Ok(declare::stripe_connection(name, key, &settings))
            }
            KindInput::Duckdb => {
                let path = self
                    .path
                    .filter(|p| !p.trim().is_empty())
                    .ok_or_else(|| ApiError::invalid("`path` (the DuckDB file) is required"))?;
                Ok(declare::duckdb_connection(
                    name,
                    std::path::Path::new(path.trim()),
                    &warehouse,
                ))
            }
            KindInput::Postgres => {
                let url = secret_input(self.url, self.url_env, "url", "url_env", replacing)?;
                Ok(declare::postgres_connection(name, url, &warehouse))
            }
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionList {
    pub connections: Vec<ConnectionView>,
}

#[utoipa::path(get, path = "/api/v1/connections", tag = "connections",
    responses((status = 200, body = ConnectionList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ConnectionList>, ApiError> {
    let connections = state.store().list_connections().await?;
    Ok(Json(ConnectionList {
        connections: connections.iter().map(ConnectionView::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/connections/{name}", tag = "connections",
    params(("name" = String, Path)),
    responses((status = 200, body = ConnectionView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let record = declare::require_connection(state.store(), &name).await?;
    Ok(Json(ConnectionView::from(&record)))
}

/// Creates a connection after testing it (Stripe reads `/v1/balance`; a warehouse runs `SELECT 1`).
#[utoipa::path(post, path = "/api/v1/connections", tag = "connections",
    request_body = ConnectionInput,
    responses((status = 201, body = ConnectionView),
        (status = 409, description = "the name is taken (names are unique ignoring case)", body = crate::error::ErrorBody),
        (status = 422, description = "invalid input or the connection test failed", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<ConnectionInput>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let name = input
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("`name` is required"))?;
    if state.store().get_connection(&name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "connection '{name}' already exists; PUT /api/v1/connections/{name} replaces it"
            ),
        ));
    }
    check_secret_env(&state, &input)?;
    let test = !input.skip_test;
    let connection = input.into_new_connection(&name, false)?;
    let record = declare::save_connection(state.store(), &connection, test).await?;
    Ok((StatusCode::CREATED, Json(ConnectionView::from(&record))))
}

/// Replaces a connection's settings (tested first). Omit the secret to keep the stored one.
#[utoipa::path(put, path = "/api/v1/connections/{name}", tag = "connections",
    params(("name" = String, Path)), request_body = ConnectionInput,
    responses((status = 200, body = ConnectionView),
        (status = 404, description = "no secret was given to keep, and the connection does not exist", body = crate::error::ErrorBody),
        (status = 409, description = "a new name differs only in case from an existing connection's", body = crate::error::ErrorBody),
        (status = 422, description = "invalid input or the connection test failed", body = crate::error::ErrorBody)))]
pub async fn replace(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<ConnectionInput>,
) -> Result<Json<ConnectionView>, ApiError> {
    check_name_matches(&name, input.name.as_deref())?;
    let existing = state.store().get_connection(&name).await?;
    check_secret_env(&state, &input)?;
    let test = !input.skip_test;
    let connection = input.into_new_connection(&name, existing.is_some())?;
    let record = declare::save_connection(state.store(), &connection, test).await?;
    Ok(Json(ConnectionView::from(&record)))
}

#[utoipa::path(delete, path = "/api/v1/connections/{name}", tag = "connections",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "a model or sync uses it", body = crate::error::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.store().remove_connection(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ferry_engine::EngineError::UnknownConnection(name).into())
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub message: String,
}

/// Tests a saved connection. A failed test is an answer, not an error: `ok` is false and
/// `message` says why.
#[utoipa::path(post, path = "/api/v1/connections/{name}/test", tag = "connections",
    params(("name" = String, Path)),
    responses((status = 200, body = TestResult), (status = 404, body = crate::error::ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TestResult>, ApiError> {
    match declare::test_saved_connection(state.store(), &name).await {
        Ok(()) => Ok(Json(TestResult {
            ok: true,
            message: format!("connection '{name}' works"),
        })),
        Err(ferry_engine::EngineError::ConnectionTest(message)) => {
            Ok(Json(TestResult { ok: false, message }))
        }
        Err(other) => Err(other.into()),
    }
}

pub fn kind_label(kind: ConnectionKind) -> &'static str {
    ferry_engine::connections::kind_spec(kind).label
}
