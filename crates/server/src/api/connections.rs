//! `/api/v1/connections`: Stripe accounts and warehouses.

use super::{check_name_matches, ApiJson, ApiPath};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_core::Secret;
use ferry_engine::connections::{ConnectionSettings, KindSpec, REGISTRY};
use ferry_engine::declare;
use ferry_state::{ConnectionKind, ConnectionRecord, NewConnection, SecretInput, SecretRef};
use serde::{Deserialize, Serialize};

/// A connection as the API shows it. Secrets never leave the server: an encrypted key shows as
/// its hint (`sk_test_…4242`), an environment reference as the variable's name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub name: String,
    /// `stripe`, or a warehouse (`duckdb`, `postgres`, …).
    pub kind: String,
    /// Its settings besides the secret, those that are set, by their stored names (see
    /// `ConnectionInput`).
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

/// A connection to create or replace: its kind, and the kind's settings by their stored names
/// (the OpenAPI document lists every kind's, from the registry of connection kinds). Give a
/// secret as its value (stored encrypted) or as the name of an environment variable; on
/// replace, give neither to keep the stored one.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ConnectionInput {
    /// Required when creating; on replace it must match the path if given.
    pub name: Option<String>,
    /// The kind of connection: `stripe`, or a warehouse.
    pub kind: Option<String>,
    /// Save without testing the connection.
    #[serde(default)]
    pub skip_test: bool,
    /// The kind's settings and its secret's two fields (`api_key` or `api_key_env`, `url` or
    /// `url_env`, …).
    /// (The OpenAPI document lists them from the registry: `openapi::connection_input`.)
    #[serde(flatten)]
    #[schema(ignore)]
    pub settings: serde_json::Map<String, serde_json::Value>,
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
    let variables = REGISTRY
        .iter()
        .filter_map(|spec| spec.secret.as_ref())
        .filter_map(|secret| input.settings.get(secret.env_field))
        .filter_map(serde_json::Value::as_str);
    for variable in variables {
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
        let kinds = KindSpec::names(false);
        let kind = self
            .kind
            .ok_or_else(|| ApiError::invalid(format!("`kind` is required: {kinds}")))?;
        let spec = KindSpec::named(&kind).ok_or_else(|| {
            ApiError::invalid(format!(
                "`kind` is `{kind}`, which is not a kind of connection ferry knows: {kinds}"
            ))
        })?;
        let mut settings = self.settings;
        let text_field = |settings: &mut serde_json::Map<String, serde_json::Value>,
                          field: &str|
         -> Result<Option<String>, ApiError> {
            match settings.remove(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(text)) => Ok(Some(text)),
                Some(other) => Err(ApiError::invalid(format!(
                    "`{field}` must be a string, not {other}"
                ))),
            }
        };
        // The secret's fields are taken out first, so that the settings are checked (an
        // unknown field named) before a missing secret is.
        let given_secret = match &spec.secret {
            None => None,
            Some(secret) => Some((
                secret,
                text_field(&mut settings, secret.value_field)?,
                text_field(&mut settings, secret.env_field)?,
            )),
        };
        // The server's working directory is the base of a relative path, as it always was.
        let base = std::env::current_dir().unwrap_or_default();
        let settings = ConnectionSettings::from_door(name, spec.kind, settings, &base)?;
        let secret = match given_secret {
            None => None,
            // Neither given: none at all when the kind may go without (BigQuery's application
            // default credentials) and nothing is stored to keep.
            Some((secret, value, env))
                if secret.optional
                    && !replacing
                    && [&value, &env]
                        .iter()
                        .all(|text| text.as_deref().is_none_or(str::is_empty)) =>
            {
                None
            }
            Some((secret, value, env)) => Some(secret_input(
                value,
                env,
                secret.value_field,
                secret.env_field,
                replacing,
            )?),
        };
        Ok(declare::new_connection(name, &settings, secret))
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

/// One kind of connection, as the registry declares it: what a client needs to build a form
/// for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KindView {
    /// The `kind` to give when creating one: `postgres`.
    pub kind: String,
    pub label: String,
    pub help: String,
    /// Whether models read from it (a warehouse) rather than syncs write to it (Stripe).
    pub is_source: bool,
    /// Whether it is an alert channel (webhook, Slack, email), told of runs and alerts.
    pub is_channel: bool,
    pub secret: Option<SecretFieldsView>,
    pub settings: Vec<SettingView>,
}

/// A kind's secret: give `value_field` (stored encrypted) or `env_field`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretFieldsView {
    pub what: String,
    pub value_field: String,
    pub env_field: String,
    pub help: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingView {
    pub key: String,
    /// Its JSON type: `string`, `integer`, or `array` (of strings).
    #[serde(rename = "type")]
    pub value_type: String,
    pub required: bool,
    pub label: String,
    pub help: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KindList {
    pub kinds: Vec<KindView>,
}

/// The kinds of connection this ferry knows, with their settings.
#[utoipa::path(get, path = "/api/v1/connection-kinds", tag = "connections",
    responses((status = 200, body = KindList)))]
pub async fn kinds() -> Json<KindList> {
    Json(KindList {
        kinds: REGISTRY
            .iter()
            .map(|spec| KindView {
                kind: spec.kind.as_str().to_string(),
                label: spec.label.to_string(),
                help: spec.help.to_string(),
                is_source: spec.is_source,
                is_channel: spec.kind.is_channel(),
                secret: spec.secret.as_ref().map(|secret| SecretFieldsView {
                    what: secret.what.to_string(),
                    value_field: secret.value_field.to_string(),
                    env_field: secret.env_field.to_string(),
                    help: secret.help.to_string(),
                }),
                settings: spec
                    .settings
                    .iter()
                    .map(|setting| SettingView {
                        key: setting.key.to_string(),
                        value_type: setting.value.json_type().to_string(),
                        required: setting.required,
                        label: setting.label.to_string(),
                        help: setting.help.to_string(),
                    })
                    .collect(),
            })
            .collect(),
    })
}

pub fn kind_label(kind: ConnectionKind) -> &'static str {
    ferry_engine::connections::kind_spec(kind).label
}
