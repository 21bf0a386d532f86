//! Alert channels: where ferry tells people that a sync started, finished, failed or raised an
//! alert. Each channel is one module with one way in (`send`) and one connection test:
//! - `webhook`: a JSON event, signed with HMAC-SHA256 in `Ferry-Signature`;
//! - `slack`: a Slack incoming webhook, a message in Slack's blocks;
//! - `email`: a plain-text email over SMTP (STARTTLS, TLS or none; AUTH when a user is set).
//!
//! No state here: what to send, when to try again and what was answered is the engine's
//! (`engine/src/alerts.rs`), kept in the workspace. HTTP goes through `crates/http`.

pub mod email;

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
