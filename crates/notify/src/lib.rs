//! Alert channels: where ferry tells people that a sync started, finished, failed or raised an
//! alert. Each channel is one module with one way in (`send`) and one connection test:
//! - `webhook`: a JSON event, signed with HMAC-SHA256 in `Ferry-Signature`;
//! - `slack`: a Slack incoming webhook, a message in Slack's blocks;
//! - `email`: a plain-text email over SMTP (STARTTLS, TLS or none; AUTH when a user is set).
//!
//! No state here: what to send, when to try again and what was answered is the engine's
//! (`engine/src/alerts.rs`), kept in the workspace. HTTP goes through `crates/http`.

pub mod email;
pub mod slack;
pub mod webhook;

use ferry_http::{
    HttpClient, HttpError, HttpPolicy, InboundResponse, RateLimitPolicy, RetryPolicy,
};
use std::time::Duration;

/// What a channel answered a notice it took: the HTTP status or SMTP reply code, and the
/// answer's text (kept, cut to [`ANSWER_KEPT`], and shown with the delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAnswer {
    pub status: Option<u16>,
    pub text: String,
}

/// How much of an answer is kept with a delivery.
pub const ANSWER_KEPT: usize = 2_000;

/// The HTTP client webhooks and Slack are called with: a few quick retries of a transient
/// answer within one delivery (the workspace's delivery queue tries again later, over hours),
/// no rate limit of ferry's own (a notice per run is far below any receiver's), a short
/// timeout so a receiver that hangs cannot hold a run's end.
pub fn http_client(service: &'static str) -> Result<HttpClient, ChannelError> {
    HttpClient::new(HttpPolicy {
        service,
        rate_limits: RateLimitPolicy::unlimited(),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(2),
            max_total: Duration::from_secs(10),
            transient_answer: None,
        },
        max_in_flight: 8,
        attempt_timeout: Duration::from_secs(10),
    })
    .map_err(|error| ChannelError::permanent(format!("cannot make an HTTP client: {error}")))
}

/// Turns the HTTP stack's result into a delivery's answer: 2xx is taken; a final 4xx is
/// permanent (the receiver refused this notice and will refuse it again), except 408 and 429;
/// running out of retries (5xx, 429, a transport error) may work later.
pub(crate) fn http_answer(
    what: &str,
    result: Result<InboundResponse, HttpError>,
) -> Result<ChannelAnswer, ChannelError> {
    match result {
        Ok(response) if response.is_success() => Ok(ChannelAnswer {
            status: Some(response.status),
            text: cut(&response.body),
        }),
        Ok(response) => {
            let message = format!(
                "{what} answered HTTP {}: {}",
                response.status,
                one_line(&response.body)
            );
            Err(ChannelError {
                message,
                retryable: matches!(response.status, 408 | 429) || response.status >= 500,
            })
        }
        Err(HttpError::RetriesExhausted {
            last_problem,
            last_response,
            ..
        }) => Err(ChannelError::retryable(match last_response {
            Some(response) => format!(
                "{what} answered HTTP {}: {}",
                response.status,
                one_line(&response.body)
            ),
            None => format!("{what} could not be reached: {last_problem}"),
        })),
        Err(HttpError::InvalidRequest(problem)) => Err(ChannelError::permanent(format!(
            "{what} cannot be called: {problem}"
        ))),
    }
}

/// An answer's text, cut to what a delivery keeps.
pub fn cut(text: &str) -> String {
    if text.len() <= ANSWER_KEPT {
        return text.to_string();
    }
    let mut end = ANSWER_KEPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        "(an empty body)".to_string()
    } else {
        cut(&line).chars().take(300).collect()
    }
}

/// A channel that did not take a notice: what went wrong in words a person can act on (never
/// a secret), and whether trying again later may work (a server down, a 5xx, a timeout) or
/// not (refused credentials, a 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChannelError {
    pub message: String,
    pub retryable: bool,
}

impl ChannelError {
    pub fn retryable(message: impl Into<String>) -> ChannelError {
        ChannelError {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> ChannelError {
        ChannelError {
            message: message.into(),
            retryable: false,
        }
    }
}
