//! A hook through which whoever runs ferry (the server's `/metrics`) learns what the HTTP stack
//! sees: each attempt's answer and the time spent waiting for ferry's own token buckets. The
//! facts are counted here, where they happen, rather than read back from logs.
//!
//! The observer is process-wide, like `tracing`'s global dispatcher: clients are made deep
//! inside destinations and sources, and threading a handle through every one of them would
//! change every constructor for one concern. Without an observer the hooks cost one atomic load.

use std::sync::OnceLock;
use std::time::Duration;

/// What one attempt got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptAnswer {
    /// The server answered with this HTTP status (a 429 included).
    Status(u16),
    /// No answer: the connection failed, timed out or closed before the whole response came.
    TransportError,
}

/// Told about every attempt of every client in the process. Implementations must be cheap and
/// must not block: they run on the request path.
pub trait HttpObserver: Send + Sync {
    /// One attempt ended. `service` is [`crate::HttpPolicy::service`] (`stripe`, `snowflake`, …).
    fn attempt_answered(&self, service: &'static str, answer: AttemptAnswer);
    /// An attempt waited this long for ferry's own rate limiter before it could be sent.
    fn waited_for_rate_limiter(&self, service: &'static str, waited: Duration);
}

static OBSERVER: OnceLock<&'static dyn HttpObserver> = OnceLock::new();

/// Installs the process's observer. Only the first call wins: a second one is refused and
/// returns `false`, since counters that changed hands midway would lie.
pub fn install_observer(observer: &'static dyn HttpObserver) -> bool {
    OBSERVER.set(observer).is_ok()
}

pub(crate) fn observer() -> Option<&'static dyn HttpObserver> {
    OBSERVER.get().copied()
}
