//! The one outbound HTTP stack: rate limits → concurrency → retry with jittered backoff →
//! timeout, configured per destination as data. No destination builds its own client, retry
//! loop or sleep (see ARCHITECTURE.md).

mod exchange;
mod limiter;
mod observer;
mod retry;

pub use exchange::{Exchange, ExchangeRecorder, EXCHANGE_BODY_LIMIT};
pub use limiter::{RateLimitPolicy, RateLimiters, RateSlots, SharedBudget, SharedRateBudget};
pub use observer::{install_observer, AttemptAnswer, HttpObserver};
pub use retry::{classify, classify_answer, Classification, RetryPolicy};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Everything that shapes how one destination is called.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    /// Who this client talks to (`stripe`, `snowflake`, `bigquery`, …), as metrics name it.
    pub service: &'static str,
    pub rate_limits: RateLimitPolicy,
    pub retry: RetryPolicy,
    /// Requests in flight at once; the rate limiter decides the pace, this bounds memory and sockets.
    pub max_in_flight: usize,
    /// The whole exchange for one attempt, from connect to the last byte of the body.
    pub attempt_timeout: Duration,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            service: "unnamed",
            rate_limits: RateLimitPolicy::default(),
            retry: RetryPolicy::default(),
            max_in_flight: 32,
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// One request, before it is sent. The body is text because every destination so far speaks
/// form-encoding or JSON; the same body is sent again on every retry.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    /// The rate-limit bucket this request counts against, e.g. `POST /v1/customers/{id}`.
    pub endpoint: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<(String, &'static str)>,
}

/// A final answer: a success or a response that retrying cannot change.
#[derive(Debug, Clone)]
pub struct InboundResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// Attempts made, this one included.
    pub attempts: u32,
}

impl InboundResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Every attempt failed with a retryable answer or a transport error.
    #[error("gave up after {attempts} attempts over {elapsed:?}: {last_problem}")]
    RetriesExhausted {
        attempts: u32,
        elapsed: Duration,
        last_problem: String,
        /// The last HTTP response, if the last attempt got one.
        last_response: Option<Box<InboundResponse>>,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// The shared client. Clone it freely: clones share limiters, the connection pool and counters.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    policy: HttpPolicy,
    limiters: RateLimiters,
    in_flight: Semaphore,
    requests_sent: AtomicU64,
    /// Keeps the attempts it wants (a run: those made for its records).
    recorder: Option<Arc<dyn ExchangeRecorder>>,
}

impl HttpClient {
    pub fn new(policy: HttpPolicy) -> Result<HttpClient, HttpError> {
        let limiters = RateLimiters::new(&policy.rate_limits);
        HttpClient::with_limiters(policy, limiters)
    }

    /// A client whose rate limits are kept in `shared`, a budget every process writing into
    /// the same account draws from, so that together they stay under the account's limits.
    pub fn with_shared_budget(
        policy: HttpPolicy,
        shared: SharedBudget,
    ) -> Result<HttpClient, HttpError> {
        let limiters = RateLimiters::sharing(&policy.rate_limits, shared);
        HttpClient::with_limiters(policy, limiters)
    }

    fn with_limiters(policy: HttpPolicy, limiters: RateLimiters) -> Result<HttpClient, HttpError> {
        let client = reqwest::Client::builder()
            .timeout(policy.attempt_timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(policy.max_in_flight)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                client,
                limiters,
                in_flight: Semaphore::new(policy.max_in_flight.max(1)),
                requests_sent: AtomicU64::new(0),
                recorder: None,
                policy,
            }),
        })
    }

    /// Hands each attempt `recorder` wants to it, as sent and as answered. Call it on a new
    /// client, before it is cloned.
    pub fn recording_exchanges(mut self, recorder: Arc<dyn ExchangeRecorder>) -> HttpClient {
        Arc::get_mut(&mut self.inner)
            .expect("a recorder is given to a client before it is cloned")
            .recorder = Some(recorder);
        self
    }

    pub fn policy(&self) -> &HttpPolicy {
        &self.inner.policy
    }

    /// Requests put on the wire so far, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests_sent.load(Ordering::Relaxed)
    }

    /// Sends `request`, retrying what the retry policy says is transient. Returns the first
    /// response that is final (a success or a permanent error), or `RetriesExhausted`.
    pub async fn send(&self, request: &OutboundRequest) -> Result<InboundResponse, HttpError> {
        let started = Instant::now();
        let retry = &self.inner.policy.retry;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.attempt(request).await;
            let (classification, problem, response) = match outcome {
                Ok(response) => {
                    let classification =
                        classify_answer(retry, response.status, &response.headers, &response.body);
                    (classification, None, Some(response))
                }
                Err(transport) => (Classification::Retry, Some(transport), None),
            };
            match classification {
                Classification::Final => {
                    let mut response = response.expect("a final classification has a response");
                    response.attempts = attempt;
                    return Ok(response);
                }
                Classification::Retry => {
                    let problem = problem.unwrap_or_else(|| {
                        describe_failed_response(response.as_ref().expect("no transport error"))
                    });
                    let delay = retry.delay_before_attempt(attempt + 1, &mut rand::rng());
                    let out_of_attempts = attempt >= retry.max_attempts;
                    let out_of_time = started.elapsed() + delay > retry.max_total;
                    if out_of_attempts || out_of_time {
                        return Err(HttpError::RetriesExhausted {
                            attempts: attempt,
                            elapsed: started.elapsed(),
                            last_problem: problem,
                            last_response: response.map(|mut r| {
                                r.attempts = attempt;
                                Box::new(r)
                            }),
                        });
                    }
                    tracing::debug!(
                        endpoint = %request.endpoint,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        problem = %problem,
                        "Retrying request."
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn attempt(&self, request: &OutboundRequest) -> Result<InboundResponse, String> {
        let _permit = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| "client is shutting down".to_string())?;
        let waiting_since = Instant::now();
        self.inner.limiters.wait_for(&request.endpoint).await;
        let service = self.inner.policy.service;
        let observer = observer::observer();
        if let Some(observer) = observer {
            observer.waited_for_rate_limiter(service, waiting_since.elapsed());
        }
        let recorder = self.inner.recorder.as_ref().filter(|r| r.wants());
        let (sent_at, sent) = (std::time::SystemTime::now(), Instant::now());
        let answered = self.put_on_the_wire(request).await;
        if let Some(recorder) = recorder {
            recorder.record(Exchange::of(request, &answered, sent_at, sent.elapsed()));
        }
        if let Some(observer) = observer {
            observer.attempt_answered(
                service,
                match &answered {
                    Ok(response) => AttemptAnswer::Status(response.status),
                    Err(_) => AttemptAnswer::TransportError,
                },
            );
        }
        answered
    }

    /// One attempt's exchange, once it may be sent.
    async fn put_on_the_wire(&self, request: &OutboundRequest) -> Result<InboundResponse, String> {
        let mut builder = self
            .inner
            .client
            .request(request.method.clone(), request.url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some((body, content_type)) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        self.inner.requests_sent.fetch_add(1, Ordering::Relaxed);
        // Transport errors are described without the URL's query or any header: both may
        // carry customer data, and headers carry the API key.
        let response = builder
            .send()
            .await
            .map_err(|e| describe_transport_error(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| {
            format!(
                "response lost while reading its body ({})",
                describe_transport_error(&e)
            )
        })?;
        // Stripe answers in UTF-8; `text()` would parse the content type for a charset first.
        let body = match String::from_utf8(body.into()) {
            Ok(text) => text,
            Err(not_utf8) => String::from_utf8_lossy(not_utf8.as_bytes()).into_owned(),
        };
        Ok(InboundResponse {
            status,
            headers,
            body,
            attempts: 1,
        })
    }
}

fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "connection closed mid-response"
    } else if error.is_request() {
        "connection failed while sending"
    } else {
        "transport error"
    };
    // reqwest's Display includes the URL; keep only the scheme, host and port.
    let place = error
        .url()
        .map(|u| {
            format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?"))
                + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
        })
        .unwrap_or_default();
    let mut source = std::error::Error::source(error);
    let mut root = String::new();
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    format!(
        "{kind} ({place}){}",
        if root.is_empty() {
            String::new()
        } else {
            format!(": {root}")
        }
    )
}

fn describe_failed_response(response: &InboundResponse) -> String {
    let request_id = response.header("request-id").unwrap_or("no request id");
    format!("HTTP {} ({request_id})", response.status)
}
