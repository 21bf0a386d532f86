//! The REST API: JSON CRUD for connections, models and syncs, previews, background runs and
//! their records. Every handler is annotated for the OpenAPI document (`crate::openapi`).

pub mod alerts;
pub mod connections;
pub mod models;
pub mod runs;
pub mod sequences;
pub mod syncs;

use crate::AppState;
use axum::routing::{get, post, put};
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(crate::openapi::serve_document))
        .route("/metrics", get(crate::metrics::serve_metrics))
        .route(
            "/api/v1/connections",
            get(connections::list).post(connections::create),
        )
        .route(
            "/api/v1/connections/{name}",
            get(connections::show)
                .put(connections::replace)
                .delete(connections::remove),
        )
        .route("/api/v1/connections/{name}/test", post(connections::test))
        .route("/api/v1/connection-kinds", get(connections::kinds))
        .route("/api/v1/models", get(models::list).post(models::create))
        .route(
            "/api/v1/models/{name}",
            get(models::show)
                .put(models::replace)
                .delete(models::remove),
        )
        .route("/api/v1/models/{name}/preview", post(models::preview))
        .route("/api/v1/queries/preview", post(models::preview_query))
        .route("/api/v1/syncs", get(syncs::list).post(syncs::create))
        .route(
            "/api/v1/syncs/{name}",
            get(syncs::show).put(syncs::replace).delete(syncs::remove),
        )
        .route("/api/v1/syncs/{name}/preview", post(syncs::preview))
        .route("/api/v1/syncs/{name}/runs", post(syncs::start_run))
        .route("/api/v1/syncs/{name}/pause", post(syncs::pause))
        .route("/api/v1/syncs/{name}/resume", post(syncs::resume))
        .route(
            "/api/v1/sequences",
            get(sequences::list).post(sequences::create),
        )
        .route(
            "/api/v1/sequences/{name}",
            get(sequences::show)
                .put(sequences::replace)
                .delete(sequences::remove),
        )
        .route(
            "/api/v1/sequences/{name}/runs",
            get(sequences::runs).post(sequences::start_run),
        )
        .route("/api/v1/sequence-runs/{id}", get(sequences::show_run))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/queue", get(runs::queue))
        .route("/api/v1/runs/{id}", get(runs::show))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{id}/records", get(runs::records))
        .route("/api/v1/runs/{id}/records/{row}", get(runs::record))
        .route("/api/v1/alerts", get(alerts::show))
        .route("/api/v1/alerts/defaults", put(alerts::put_defaults))
        .route("/api/v1/deliveries", get(alerts::deliveries))
        .route(
            "/api/v1/runs/{id}/records.csv",
            get(runs::records_csv_route),
        )
}

/// Rejects a body whose `name` disagrees with the path, so a PUT cannot rename by accident.
fn check_name_matches(path_name: &str, body_name: Option<&str>) -> Result<(), crate::ApiError> {
    match body_name {
        Some(name) if name != path_name => Err(crate::ApiError::invalid(format!(
            "the body names '{name}' but the path names '{path_name}'; renaming is not supported, create a new object instead"
        ))),
        _ => Ok(()),
    }
}

/// `Json<T>` whose rejections (malformed JSON, unknown fields, wrong types, too large) answer
/// in the API's error shape instead of axum's plain text.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    axum::Json<T>:
        axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = crate::ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(crate::ApiError::new(
                rejection.status(),
                "invalid_body",
                rejection.body_text(),
            )),
        }
    }
}

/// `Query<T>` with rejections in the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = crate::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(crate::ApiError::new(
                rejection.status(),
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

/// `Path<T>` with rejections (a segment that is not UTF-8, …) in the API's error shape.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = crate::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(crate::ApiError::new(
                rejection.status(),
                "invalid_path",
                rejection.body_text(),
            )),
        }
    }
}
