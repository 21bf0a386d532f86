//! Stripe's error body, `{"error": {"type", "code", "message", "param", "doc_url"}}`, shared by
//! the emulator (which writes it) and ferry's Stripe destination (which reads it).

use serde::{Deserialize, Serialize};

/// The `error` object of a Stripe error response. Absent fields are omitted when written, as
/// Stripe does, and default to `None` when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeError {
    /// `api_error`, `card_error`, `idempotency_error` or `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_url: Option<String>,
}

/// A whole error response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: StripeError,
}

/// The `type` values Stripe uses.
pub const INVALID_REQUEST_ERROR: &str = "invalid_request_error";
pub const IDEMPOTENCY_ERROR: &str = "idempotency_error";
pub const API_ERROR: &str = "api_error";

impl StripeError {
    /// An `invalid_request_error` without code or param.
    pub fn invalid_request(message: impl Into<String>) -> StripeError {
        StripeError {
            kind: INVALID_REQUEST_ERROR.to_owned(),
            code: None,
            message: message.into(),
            param: None,
            doc_url: None,
        }
    }

    /// An error of any `type`.
    pub fn of_kind(kind: &str, message: impl Into<String>) -> StripeError {
        StripeError {
            kind: kind.to_owned(),
            ..StripeError::invalid_request(message)
        }
    }

    /// Adds a `code` and the `doc_url` Stripe links for it
    /// (`https://stripe.com/docs/error-codes/parameter-unknown` for `parameter_unknown`).
    pub fn with_code(mut self, code: &str) -> StripeError {
        self.doc_url = Some(format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        ));
        self.code = Some(code.to_owned());
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> StripeError {
        self.param = Some(param.into());
        self
    }

    /// Wraps the error in the body Stripe sends.
    pub fn into_body(self) -> ErrorBody {
        ErrorBody { error: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn absent_fields_are_omitted_and_read_back_as_none() {
        let body = StripeError::invalid_request("No such customer: 'cus_x'")
            .with_code("resource_missing")
            .with_param("id")
            .into_body();
        let text = serde_json::to_string(&body).unwrap();
        expect![[r#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer: 'cus_x'","param":"id","doc_url":"https://stripe.com/docs/error-codes/resource-missing"}}"#]]
            .assert_eq(&text);
        let minimal: ErrorBody =
            serde_json::from_str(r#"{"error":{"type":"api_error","message":"boom"}}"#).unwrap();
        assert_eq!(minimal.error, StripeError::of_kind(API_ERROR, "boom"));
    }
}
