//! The exchange log: each attempt as sent and as answered, handed to a recorder the client was
//! given (a run keeps those of its records, for the record's debugger in the UI and the API).
//!
//! Only what the request and the answer say goes in: the method, the path, the idempotency key
//! and the bodies. Headers are never copied (the `Authorization` header carries the API key),
//! and bodies are cut at [`EXCHANGE_BODY_LIMIT`] so that a huge answer costs a bounded amount.

use crate::{InboundResponse, OutboundRequest};
use std::time::{Duration, SystemTime};

/// How much of each body an exchange keeps; the rest is replaced by a marker.
pub const EXCHANGE_BODY_LIMIT: usize = 16 * 1024;

/// One attempt of a request, as sent and as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub sent_at: SystemTime,
    pub method: String,
    /// The path and query, without scheme and host: `/v1/customers/cus_123`.
    pub path: String,
    pub idempotency_key: Option<String>,
    pub request_body: Option<String>,
    /// None when no answer came.
    pub status: Option<u16>,
    pub response_body: Option<String>,
    /// The `Request-Id` the server gave its answer.
    pub request_id: Option<String>,
    /// Why no answer came (the transport error, without URL or headers).
    pub error: Option<String>,
    pub duration: Duration,
}

/// Whoever keeps a client's exchanges. Called on the request path: must be cheap, never block.
pub trait ExchangeRecorder: Send + Sync {
    /// Whether the attempt about to be made is to be kept (asked first, so that bodies are
    /// copied only for the attempts someone keeps).
    fn wants(&self) -> bool;
    fn record(&self, exchange: Exchange);
}

impl Exchange {
    pub(crate) fn of(
        request: &OutboundRequest,
        answered: &Result<InboundResponse, String>,
        sent_at: SystemTime,
        duration: Duration,
    ) -> Exchange {
        let url = &request.url;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let idempotency_key = request
            .headers
            .iter()
            .find(|(name, _)| name.as_str().eq_ignore_ascii_case("idempotency-key"))
            .and_then(|(_, value)| value.to_str().ok())
            .map(str::to_string);
        let (status, response_body, request_id, error) = match answered {
            Ok(response) => (
                Some(response.status),
                Some(capped(&response.body)),
                response.header("request-id").map(str::to_string),
                None,
            ),
            Err(problem) => (None, None, None, Some(problem.clone())),
        };
        Exchange {
            sent_at,
            method: request.method.to_string(),
            path,
            idempotency_key,
            request_body: request.body.as_ref().map(|(body, _)| capped(body)),
            status,
            response_body,
            request_id,
            error,
            duration,
        }
    }
}

/// `text` cut at [`EXCHANGE_BODY_LIMIT`] bytes (on a character boundary), with a marker.
fn capped(text: &str) -> String {
    if text.len() <= EXCHANGE_BODY_LIMIT {
        return text.to_string();
    }
    let mut end = EXCHANGE_BODY_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [{} more bytes not kept]",
        &text[..end],
        text.len() - end
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn request(body: &str) -> OutboundRequest {
        OutboundRequest {
            method: reqwest::Method::POST,
            url: "https://api.stripe.com/v1/customers?expand[]=x"
                .parse()
                .unwrap(),
            endpoint: "POST /v1/customers".into(),
            headers: vec![
                (
                    reqwest::header::AUTHORIZATION,
                    HeaderValue::from_static("Bearer sk_test_secret"),
                ),
                (
                    HeaderName::from_static("idempotency-key"),
                    HeaderValue::from_static("ferry-abc"),
                ),
            ],
            body: Some((body.to_string(), "application/x-www-form-urlencoded")),
        }
    }

    #[test]
    fn an_exchange_keeps_the_path_key_and_bodies_and_never_a_header() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("request-id", HeaderValue::from_static("req_1"));
        let answered = Ok(InboundResponse {
            status: 200,
            headers,
            body: r#"{"id":"cus_1"}"#.into(),
            attempts: 1,
        });
        let exchange = Exchange::of(
            &request("email=a%40b.c"),
            &answered,
            SystemTime::UNIX_EPOCH,
            Duration::from_millis(12),
        );
        assert_eq!(
            exchange,
            Exchange {
                sent_at: SystemTime::UNIX_EPOCH,
                method: "POST".into(),
                path: "/v1/customers?expand[]=x".into(),
                idempotency_key: Some("ferry-abc".into()),
                request_body: Some("email=a%40b.c".into()),
                status: Some(200),
                response_body: Some(r#"{"id":"cus_1"}"#.into()),
                request_id: Some("req_1".into()),
                error: None,
                duration: Duration::from_millis(12),
            }
        );
        assert!(!format!("{exchange:?}").contains("sk_test"));
    }

    #[test]
    fn no_answer_keeps_the_reason_and_long_bodies_are_cut_on_a_character() {
        let long = "é".repeat(EXCHANGE_BODY_LIMIT);
        let exchange = Exchange::of(
            &request(&long),
            &Err("timed out (https://api.stripe.com)".into()),
            SystemTime::UNIX_EPOCH,
            Duration::from_secs(30),
        );
        assert_eq!(exchange.status, None);
        assert_eq!(
            exchange.error.as_deref(),
            Some("timed out (https://api.stripe.com)")
        );
        let kept = exchange.request_body.unwrap();
        assert!(kept.starts_with(&"é".repeat(EXCHANGE_BODY_LIMIT / 2)));
        assert!(
            kept.ends_with(&format!("… [{} more bytes not kept]", EXCHANGE_BODY_LIMIT)),
            "{}",
            &kept[kept.len() - 40..]
        );
    }
}
