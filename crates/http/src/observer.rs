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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HttpClient, HttpPolicy, OutboundRequest, RetryPolicy};
    use std::sync::{LazyLock, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Everything the stack reported, as the server's metrics would count it.
    #[derive(Default)]
    struct Reported {
        answers: Mutex<Vec<(&'static str, AttemptAnswer)>>,
        waits: Mutex<Vec<(&'static str, Duration)>>,
    }

    impl HttpObserver for Reported {
        fn attempt_answered(&self, service: &'static str, answer: AttemptAnswer) {
            self.answers.lock().unwrap().push((service, answer));
        }
        fn waited_for_rate_limiter(&self, service: &'static str, waited: Duration) {
            self.waits.lock().unwrap().push((service, waited));
        }
    }

    static REPORTED: LazyLock<Reported> = LazyLock::new(Reported::default);
    const SERVICE: &str = "observer-test";

    #[tokio::test]
    async fn each_attempt_is_reported_with_its_service_and_its_answer_or_transport_error() {
        install_observer(&*REPORTED);
        let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answering_address = answering.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = answering.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket
                        .write_all(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        // A port nothing listens on any more.
        let refusing_address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = HttpClient::new(HttpPolicy {
            service: SERVICE,
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..HttpPolicy::default()
        })
        .unwrap();
        let get = |address: std::net::SocketAddr| OutboundRequest {
            method: reqwest::Method::GET,
            url: format!("http://{address}/v1/balance").parse().unwrap(),
            endpoint: "GET /v1/balance".to_string(),
            headers: Vec::new(),
            body: None,
        };
        // One attempt each: a 429 is retryable, so the client gives up on both.
        assert!(client.send(&get(answering_address)).await.is_err());
        assert!(client.send(&get(refusing_address)).await.is_err());

        let answers: Vec<AttemptAnswer> = REPORTED
            .answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(service, _)| *service == SERVICE)
            .map(|(_, answer)| *answer)
            .collect();
        assert_eq!(
            answers,
            [AttemptAnswer::Status(429), AttemptAnswer::TransportError]
        );
        let waits = REPORTED
            .waits
            .lock()
            .unwrap()
            .iter()
            .filter(|(service, _)| *service == SERVICE)
            .count();
        assert_eq!(
            waits, 2,
            "every attempt waited its turn at the rate limiter"
        );
    }
}
