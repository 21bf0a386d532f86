//! Errors as the API answers them: a status, a machine code and a message for people. Internal
//! failures (the workspace database, a bug) are logged in full and answered with a short
//! message, so no SQL, path or stack trace reaches a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_engine::EngineError;
use ferry_state::StateError;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// `{"error": {"code": "not_found", "message": "…"}}`
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `unauthorized`, `not_found`, `invalid`, `conflict`,
    /// `connection_test_failed`, `upstream`, `internal`, …
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs an API token: send `Authorization: Bearer ferry_…` (create one with `ferry token create NAME`)",
        )
    }
    fn internal(what: &str, detail: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(problem = %detail, "{what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what}; the server log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StateError> for ApiError {
    fn from(error: StateError) -> ApiError {
        use StateError as S;
        match &error {
            S::InvalidName { .. } | S::InvalidInput(_) | S::EnvVarNotSet { .. } => {
                ApiError::invalid(error.to_string())
            }
            S::NotFound { .. } => ApiError::not_found(error.to_string()),
            S::AlreadyExists { .. }
            | S::NameTakenIgnoringCase { .. }
            | S::InUse { .. }
            | S::SyncLocked { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            S::WrongMasterKey { .. } | S::DamagedSecret { .. } | S::MissingMasterKey { .. } => {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "secret_unreadable",
                    error.to_string(),
                )
            }
            _ => ApiError::internal("the workspace database failed", &error),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        use EngineError as E;
        match error {
            E::State(state) => state.into(),
            E::UnknownSync(_) | E::UnknownConnection(_) | E::UnknownModel(_) => {
                ApiError::not_found(error.to_string())
            }
            E::ConnectionTest(message) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "connection_test_failed",
                message,
            ),
            E::Query(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "query_failed", message)
            }
            E::MissingDependency { .. }
            | E::WrongConnectionKind { .. }
            | E::InvalidSync(_)
            | E::Config(_)
            | E::StripeKey(_) => ApiError::invalid(error.to_string()),
            E::LockLost => ApiError::new(StatusCode::CONFLICT, "lock_lost", error.to_string()),
            E::RetirementRefused(_) => ApiError::new(
                StatusCode::CONFLICT,
                "mass_retire_refused",
                error.to_string(),
            ),
            E::Source { .. }
            | E::StripeLookup(_)
            | E::WarehouseUnreachable(_)
            | E::ChangeDetection(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream", error.to_string())
            }
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API is described at /api/openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; the API is described at /api/openapi.json",
    )
}

/// The error codes a run's start can be refused with, for a refusal read back from the run
/// queue (where another server process may have written it).
const RUN_REFUSAL_CODES: &[&str] = &[
    "conflict",
    "connection_test_failed",
    "internal",
    "invalid",
    "lock_lost",
    "mass_retire_refused",
    "not_found",
    "paused",
    "query_failed",
    "secret_unreadable",
    "upstream",
];

/// `code` as the API's static error code; a code this version does not know (written by a
/// newer server) is answered as `run_not_started`.
pub fn static_code(code: &str) -> &'static str {
    RUN_REFUSAL_CODES
        .iter()
        .copied()
        .find(|known| *known == code)
        .unwrap_or("run_not_started")
}
