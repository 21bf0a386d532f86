//! `/api/v1/models`: SQL queries that select the rows to sync, and their first rows.

use super::{check_name_matches, ApiJson, ApiPath, ApiQuery};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_engine::declare;
use ferry_state::ModelRecord;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelView {
    pub name: String,
    /// The warehouse connection it runs on.
    pub connection: String,
    pub sql: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&ModelRecord> for ModelView {
    fn from(record: &ModelRecord) -> ModelView {
        ModelView {
            name: record.name.clone(),
            connection: record.connection.clone(),
            sql: record.sql.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInput {
    /// Required when creating; on replace it must match the path if given.
    pub name: Option<String>,
    pub connection: String,
    /// One read-only query (SELECT or WITH … SELECT).
    pub sql: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ColumnView {
    pub name: String,
    /// The warehouse's name for the type (`VARCHAR`, `int4`, …).
    #[serde(rename = "type")]
    pub type_name: String,
}

/// The first rows of a query; each cell is a scalar: a string, a number, a boolean or null.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowsPreview {
    pub columns: Vec<ColumnView>,
    /// Each row's cells in column order. Numbers and booleans as themselves; text, dates,
    /// timestamps and exact decimals as strings; JSON and list values as their JSON text (a
    /// string); NULL as null. A cell over 1,000 characters ends with
    /// `…[truncated: N characters]`.
    #[schema(schema_with = preview_rows_schema)]
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Rows were left out because the preview reached 1 MiB.
    pub rows_left_out: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewParams {
    /// How many rows (default 20, at most 500).
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryInput {
    pub connection: String,
    pub sql: String,
    /// How many rows (default 20, at most 500).
    pub limit: Option<usize>,
}

const DEFAULT_PREVIEW_ROWS: usize = 20;
const MAX_PREVIEW_ROWS: usize = 500;

pub async fn rows_preview(
    state: &AppState,
    connection: &str,
    sql: &str,
    limit: Option<usize>,
) -> Result<RowsPreview, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PREVIEW_ROWS).min(MAX_PREVIEW_ROWS);
    let preview = declare::preview_query(state.store(), connection, sql, limit).await?;
    let (columns, rows) = (preview.columns, preview.rows);
    Ok(RowsPreview {
        rows_left_out: preview.rows_left_out,
        columns: columns
            .into_iter()
            .map(|c| ColumnView {
                name: c.name,
                type_name: c.type_name,
            })
            .collect(),
        rows: rows
            .iter()
            .map(|row| row.iter().map(preview_cell).collect())
            .collect(),
    })
}

/// A warehouse value as a preview cell: always a scalar, so a cell is the same kind of thing
/// whatever its size (a long list is cut as text anyway) and the document can say what it is.
fn preview_cell(value: &ferry_core::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value.to_json() {
        Ok(structured @ (J::Array(_) | J::Object(_))) => J::String(structured.to_string()),
        Ok(scalar) => scalar,
        Err(_) => J::String(value.to_string()),
    }
}

/// `rows`: an array of rows, each an array of cells that are strings, numbers, booleans or null.
fn preview_rows_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    let cell = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::String,
            Type::Number,
            Type::Boolean,
            Type::Null,
        ]))
        .description(Some(
            "A cell: a string, a number, a boolean or null (JSON and list values as their JSON text)",
        ));
    ArrayBuilder::new()
        .items(ArrayBuilder::new().items(cell))
        .build()
}

#[utoipa::path(get, path = "/api/v1/models", tag = "models",
    responses((status = 200, body = ModelList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let models = state.store().list_models().await?;
    Ok(Json(ModelList {
        models: models.iter().map(ModelView::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "models",
    params(("name" = String, Path)),
    responses((status = 200, body = ModelView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ModelView>, ApiError> {
    let model = declare::require_model(state.store(), &name).await?;
    Ok(Json(ModelView::from(&model)))
}

/// Creates a model after running its query once, so a typo shows now.
#[utoipa::path(post, path = "/api/v1/models", tag = "models", request_body = ModelInput,
    responses((status = 201, body = ModelView),
        (status = 404, description = "the connection does not exist", body = crate::error::ErrorBody),
        (status = 409, description = "the name is taken (names are unique ignoring case)", body = crate::error::ErrorBody),
        (status = 422, description = "the query failed or is not read-only", body = crate::error::ErrorBody),
        (status = 502, description = "the warehouse failed", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<ModelInput>,
) -> Result<(StatusCode, Json<ModelView>), ApiError> {
    let name = input
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("`name` is required"))?;
    if state.store().get_model(&name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("model '{name}' already exists; PUT /api/v1/models/{name} replaces it"),
        ));
    }
    declare::save_model(state.store(), &name, &input.connection, &input.sql).await?;
    let model = declare::require_model(state.store(), &name).await?;
    Ok((StatusCode::CREATED, Json(ModelView::from(&model))))
}

#[utoipa::path(put, path = "/api/v1/models/{name}", tag = "models",
    params(("name" = String, Path)), request_body = ModelInput,
    responses((status = 200, body = ModelView),
        (status = 404, description = "the connection does not exist", body = crate::error::ErrorBody),
        (status = 409, description = "a new name differs only in case from an existing model's", body = crate::error::ErrorBody),
        (status = 422, description = "the query failed, is not read-only, or no longer fits a sync that reads the model", body = crate::error::ErrorBody),
        (status = 502, description = "the warehouse failed", body = crate::error::ErrorBody)))]
pub async fn replace(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<ModelInput>,
) -> Result<Json<ModelView>, ApiError> {
    check_name_matches(&name, input.name.as_deref())?;
    declare::save_model(state.store(), &name, &input.connection, &input.sql).await?;
    let model = declare::require_model(state.store(), &name).await?;
    Ok(Json(ModelView::from(&model)))
}

#[utoipa::path(delete, path = "/api/v1/models/{name}", tag = "models",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "a sync uses it", body = crate::error::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.store().remove_model(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ferry_engine::EngineError::UnknownModel(name).into())
    }
}

/// Runs a saved model and returns its first rows.
#[utoipa::path(post, path = "/api/v1/models/{name}/preview", tag = "models",
    params(("name" = String, Path), PreviewParams),
    responses((status = 200, body = RowsPreview),
        (status = 404, description = "the model or its connection does not exist", body = crate::error::ErrorBody),
        (status = 422, description = "the query failed", body = crate::error::ErrorBody),
        (status = 502, description = "the warehouse failed", body = crate::error::ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<PreviewParams>,
) -> Result<Json<RowsPreview>, ApiError> {
    let model = declare::require_model(state.store(), &name).await?;
    Ok(Json(
        rows_preview(&state, &model.connection, &model.sql, params.limit).await?,
    ))
}

/// Runs a query that is not saved yet (the model editor's "Run") and returns its first rows.
#[utoipa::path(post, path = "/api/v1/queries/preview", tag = "models", request_body = QueryInput,
    responses((status = 200, body = RowsPreview),
        (status = 404, description = "the connection does not exist", body = crate::error::ErrorBody),
        (status = 422, description = "the query failed or is not read-only", body = crate::error::ErrorBody),
        (status = 502, description = "the warehouse failed", body = crate::error::ErrorBody)))]
pub async fn preview_query(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<QueryInput>,
) -> Result<Json<RowsPreview>, ApiError> {
    Ok(Json(
        rows_preview(&state, &input.connection, &input.sql, input.limit).await?,
    ))
}
