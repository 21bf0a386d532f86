//! The run's request log: each attempt the run made to Stripe for one of its records, as sent
//! and as answered, kept in the workspace with the record's outcome (the record's debugger in
//! the UI and the API, like Hightouch's debugger or Census's API inspector).
//!
//! The HTTP client hands every attempt to the run's [`RequestLog`]; the log keeps those made
//! while a record's execution is being polled (it runs inside [`for_row`], a task-local naming
//! the row), and the committer writes them with the next batch. Lookups made for a whole chunk
//! belong to no record and are not kept. Memory stays bounded: the log is drained at every
//! commit, and each body is capped by the HTTP stack.

use chrono::{DateTime, Utc};
use ferry_http::{Exchange, ExchangeRecorder};
use ferry_state::StripeExchange;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

tokio::task_local! {
    /// The row whose execution is being polled.
    static RECORD_ROW: u64;
}

/// Runs `work` (one record's execution) with its requests logged under `row_number`.
pub(crate) fn for_row<F: Future>(row_number: u64, work: F) -> impl Future<Output = F::Output> {
    RECORD_ROW.scope(row_number, work)
}

/// The exchanges of a run's records not yet committed.
#[derive(Default)]
pub(crate) struct RequestLog {
    next_sequence: AtomicU64,
    waiting: Mutex<Vec<StripeExchange>>,
}

impl RequestLog {
    /// The exchanges logged since the last call, for the next commit.
    pub(crate) fn drain(&self) -> Vec<StripeExchange> {
        std::mem::take(&mut *self.waiting.lock().expect("request log poisoned"))
    }
}

impl ExchangeRecorder for RequestLog {
    fn wants(&self) -> bool {
        RECORD_ROW.try_with(|_| ()).is_ok()
    }

    fn record(&self, exchange: Exchange) {
        let Ok(row_number) = RECORD_ROW.try_with(|row| *row) else {
            return;
        };
        let logged = StripeExchange {
            row_number,
            sequence: self.next_sequence.fetch_add(1, Ordering::Relaxed),
            sent_at: DateTime::<Utc>::from(exchange.sent_at),
            method: exchange.method,
            path: exchange.path,
            idempotency_key: exchange.idempotency_key,
            request_body: exchange.request_body,
            status: exchange.status,
            response_body: exchange.response_body,
            request_id: exchange.request_id,
            error: exchange.error,
            duration_ms: u64::try_from(exchange.duration.as_millis()).unwrap_or(u64::MAX),
        };
        self.waiting
            .lock()
            .expect("request log poisoned")
            .push(logged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn exchange(path: &str) -> Exchange {
        Exchange {
            sent_at: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
            method: "POST".into(),
            path: path.into(),
            idempotency_key: Some("key".into()),
            request_body: Some("email=a%40b.c".into()),
            status: Some(200),
            response_body: Some("{}".into()),
            request_id: Some("req_1".into()),
            error: None,
            duration: Duration::from_millis(7),
        }
    }

    #[tokio::test]
    async fn only_requests_made_for_a_record_are_kept_under_its_row_in_order() {
        let log = RequestLog::default();
        assert!(!log.wants());
        log.record(exchange("/v1/customers/search"));
        for_row(4, async {
            assert!(log.wants());
            log.record(exchange("/v1/customers"));
            tokio::task::yield_now().await;
            log.record(exchange("/v1/customers/cus_1"));
        })
        .await;
        for_row(9, async { log.record(exchange("/v1/customers/cus_2")) }).await;
        let kept: Vec<(u64, u64, String)> = log
            .drain()
            .into_iter()
            .map(|e| (e.row_number, e.sequence, e.path))
            .collect();
        assert_eq!(
            kept,
            [
                (4, 0, "/v1/customers".to_string()),
                (4, 1, "/v1/customers/cus_1".to_string()),
                (9, 2, "/v1/customers/cus_2".to_string()),
            ]
        );
        assert!(log.drain().is_empty(), "drained once");
    }
}
