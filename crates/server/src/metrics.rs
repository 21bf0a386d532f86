//! What `/metrics` serves: the process's counters in the Prometheus / OpenMetrics text format,
//! kept by `prometheus-client`. Runs are counted where the server's runs end (the run
//! registry, through which the API, the UI and the scheduler all start theirs); Stripe
//! requests, 429s and rate-limiter waits are counted by `ferry_http`'s observer hook, on the
//! request path itself.
//!
//! Labels hold sync names, outcomes and HTTP statuses only: nothing a request carries (keys,
//! URLs, customer data) can reach them.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use ferry_core::{Outcome, RunCounts, RunStatus};
use ferry_http::{AttemptAnswer, HttpObserver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

/// The content type of the OpenMetrics text format, which Prometheus asks for first.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the run duration histogram, in seconds: a small sync takes about a second,
/// a first load of a large model an hour or more.
const RUN_DURATION_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The Stripe service's name in `ferry_http::HttpPolicy::service`: only its requests are
/// counted as Stripe requests (Snowflake and BigQuery go through the same stack).
const STRIPE_SERVICE: &str = "stripe";

/// The process's metrics. One per process, since the HTTP stack's observer is.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Makes the HTTP stack report to [`global`]; later calls change nothing.
pub fn observe_http() {
    ferry_http::install_observer(global());
}

pub struct Metrics {
    registry: Registry,
    runs: Family<SyncStatusLabels, Counter>,
    records: Family<SyncOutcomeLabels, Counter>,
    run_duration: Family<SyncLabels, Histogram, fn() -> Histogram>,
    last_success: Family<SyncLabels, Gauge<f64, AtomicU64>>,
    stripe_requests: Family<StatusLabels, Counter>,
    stripe_rate_limited: Counter,
    rate_limiter_wait: Counter<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    sync: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncStatusLabels {
    sync: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncOutcomeLabels {
    sync: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::default(),
            runs: Family::default(),
            records: Family::default(),
            run_duration: Family::new_with_constructor(run_duration_histogram),
            last_success: Family::default(),
            stripe_requests: Family::default(),
            stripe_rate_limited: Counter::default(),
            rate_limiter_wait: Counter::default(),
        };
        let mut registry = Registry::default();
        // Counters are registered without `_total`, and help texts without their full stop:
        // the encoder adds both.
        registry.register(
            "ferry_runs",
            "Runs that ended, by sync and status (completed, failed, cancelled)",
            metrics.runs.clone(),
        );
        registry.register(
            "ferry_records",
            "Model rows by the outcome a run gave them (created, updated, unchanged, not_found, rejected, failed, retired, not_attempted)",
            metrics.records.clone(),
        );
        registry.register(
            "ferry_run_duration_seconds",
            "How long runs took, from the start request to the recorded end",
            metrics.run_duration.clone(),
        );
        registry.register(
            "ferry_last_success_timestamp_seconds",
            "When the sync's last completed run ended (Unix time)",
            metrics.last_success.clone(),
        );
        registry.register(
            "ferry_stripe_requests",
            "Requests to Stripe by HTTP status of the answer (retries included; status=\"error\": no answer, a transport error)",
            metrics.stripe_requests.clone(),
        );
        registry.register(
            "ferry_stripe_rate_limited",
            "Answers 429 (rate limited) received from Stripe",
            metrics.stripe_rate_limited.clone(),
        );
        registry.register(
            "ferry_rate_limiter_wait_seconds",
            "Time requests spent waiting for ferry's own rate limiter before being sent",
            metrics.rate_limiter_wait.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts a run that ended and was recorded: its status, its records by outcome, its
    /// duration and, if it completed, the time of this success.
    pub fn run_ended(&self, sync: &str, status: RunStatus, counts: &RunCounts, took: Duration) {
        self.runs
            .get_or_create(&SyncStatusLabels {
                sync: sync.to_string(),
                status: status.as_str(),
            })
            .inc();
        for (outcome, count) in records_by_outcome(counts) {
            // Added even when zero, so that every outcome's series exists from the first run
            // and `rate()` over it needs no special case.
            self.records
                .get_or_create(&SyncOutcomeLabels {
                    sync: sync.to_string(),
                    outcome,
                })
                .inc_by(count);
        }
        let labels = SyncLabels {
            sync: sync.to_string(),
        };
        self.run_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if status == RunStatus::Completed {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_success
                .get_or_create(&labels)
                .set(now.as_secs_f64());
        }
    }

    /// The text a scrape reads.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl HttpObserver for Metrics {
    fn attempt_answered(&self, service: &'static str, answer: AttemptAnswer) {
        if service != STRIPE_SERVICE {
            return;
        }
        self.stripe_requests
            .get_or_create(&StatusLabels {
                status: status_label(answer),
            })
            .inc();
        if answer == AttemptAnswer::Status(429) {
            self.stripe_rate_limited.inc();
        }
    }

    fn waited_for_rate_limiter(&self, _service: &'static str, waited: Duration) {
        self.rate_limiter_wait.inc_by(waited.as_secs_f64());
    }
}

/// `GET /metrics`, on the API (with a token) and on `--metrics-addr` (without).
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, content_type = "application/openmetrics-text", body = String,
        description = "Runs, records, Stripe requests and rate limiting, in the OpenMetrics text format that Prometheus scrapes")))]
pub async fn serve_metrics() -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        global().render(),
    )
        .into_response()
}

/// A run's records by outcome, in the words runs use (`ferry run show`), and the rows it
/// never got to.
fn records_by_outcome(counts: &RunCounts) -> Vec<(&'static str, u64)> {
    let mut by_outcome: Vec<(&'static str, u64)> = Outcome::ALL
        .into_iter()
        .map(|outcome| (outcome.as_str(), counts.count_of(outcome)))
        .collect();
    by_outcome.push(("not_attempted", counts.not_attempted));
    by_outcome
}

fn status_label(answer: AttemptAnswer) -> String {
    match answer {
        AttemptAnswer::Status(status) => status.to_string(),
        AttemptAnswer::TransportError => "error".to_string(),
    }
}

fn run_duration_histogram() -> Histogram {
    Histogram::new(RUN_DURATION_BUCKETS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn a_scrape_reads_runs_records_and_stripe_answers() {
        let metrics = Metrics::new();
        let counts = RunCounts {
            rows: 4,
            created: 2,
            unchanged: 1,
            rejected: 1,
            ..RunCounts::default()
        };
        metrics.run_ended(
            "people",
            RunStatus::Completed,
            &counts,
            Duration::from_millis(1500),
        );
        metrics.attempt_answered("stripe", AttemptAnswer::Status(200));
        metrics.attempt_answered("stripe", AttemptAnswer::Status(429));
        metrics.attempt_answered("stripe", AttemptAnswer::TransportError);
        // Another service's answers are not Stripe's.
        metrics.attempt_answered("snowflake", AttemptAnswer::Status(429));
        metrics.waited_for_rate_limiter("stripe", Duration::from_millis(250));
        let text = series_sorted(&metrics.render());
        // The success time changes with the clock: checked apart, then left out.
        let (stable, timestamps): (Vec<&str>, Vec<&str>) = text
            .lines()
            .partition(|line| !line.starts_with("ferry_last_success_timestamp_seconds{"));
        assert_eq!(timestamps.len(), 1, "{text}");
        let success: f64 = timestamps[0]
            .rsplit(' ')
            .next()
            .and_then(|value| value.parse().ok())
            .expect("a number");
        assert!(success > 1.7e9, "{text}");
        expect![[r##"
            # HELP ferry_runs Runs that ended, by sync and status (completed, failed, cancelled).
            # TYPE ferry_runs counter
            ferry_runs_total{sync="people",status="completed"} 1
            # HELP ferry_records Model rows by the outcome a run gave them (created, updated, unchanged, not_found, rejected, failed, retired, not_attempted).
            # TYPE ferry_records counter
            ferry_records_total{sync="people",outcome="created"} 2
            ferry_records_total{sync="people",outcome="failed"} 0
            ferry_records_total{sync="people",outcome="not_attempted"} 0
            ferry_records_total{sync="people",outcome="not_found"} 0
            ferry_records_total{sync="people",outcome="rejected"} 1
            ferry_records_total{sync="people",outcome="retired"} 0
            ferry_records_total{sync="people",outcome="unchanged"} 1
            ferry_records_total{sync="people",outcome="updated"} 0
            # HELP ferry_run_duration_seconds How long runs took, from the start request to the recorded end.
            # TYPE ferry_run_duration_seconds histogram
            ferry_run_duration_seconds_bucket{le="+Inf",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="0.5",sync="people"} 0
            ferry_run_duration_seconds_bucket{le="1.0",sync="people"} 0
            ferry_run_duration_seconds_bucket{le="10.0",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="120.0",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="1800.0",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="2.5",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="30.0",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="300.0",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="3600.0",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="5.0",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="60.0",sync="people"} 1
            ferry_run_duration_seconds_bucket{le="600.0",sync="people"} 1
            ferry_run_duration_seconds_count{sync="people"} 1
            ferry_run_duration_seconds_sum{sync="people"} 1.5
            # HELP ferry_last_success_timestamp_seconds When the sync's last completed run ended (Unix time).
            # TYPE ferry_last_success_timestamp_seconds gauge
            # HELP ferry_stripe_requests Requests to Stripe by HTTP status of the answer (retries included; status="error": no answer, a transport error).
            # TYPE ferry_stripe_requests counter
            ferry_stripe_requests_total{status="200"} 1
            ferry_stripe_requests_total{status="429"} 1
            ferry_stripe_requests_total{status="error"} 1
            # HELP ferry_stripe_rate_limited Answers 429 (rate limited) received from Stripe.
            # TYPE ferry_stripe_rate_limited counter
            ferry_stripe_rate_limited_total 1
            # HELP ferry_rate_limiter_wait_seconds Time requests spent waiting for ferry's own rate limiter before being sent.
            # TYPE ferry_rate_limiter_wait_seconds counter
            ferry_rate_limiter_wait_seconds_total 0.25
            # EOF
        "##]]
        .assert_eq(&(stable.join("\n") + "\n"));
    }

    /// The scrape with each metric's series sorted: a family keeps them in a hash map.
    fn series_sorted(text: &str) -> String {
        let mut sorted = Vec::new();
        let mut series: Vec<&str> = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                series.sort_unstable();
                sorted.append(&mut series);
                sorted.push(line);
            } else {
                series.push(line);
            }
        }
        series.sort_unstable();
        sorted.append(&mut series);
        sorted.join("\n") + "\n"
    }

    #[test]
    fn a_failed_run_sets_no_success_time() {
        let metrics = Metrics::new();
        metrics.run_ended(
            "people",
            RunStatus::Failed,
            &RunCounts::default(),
            Duration::from_secs(1),
        );
        let text = metrics.render();
        assert!(
            text.contains("ferry_runs_total{sync=\"people\",status=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("ferry_last_success_timestamp_seconds{"),
            "{text}"
        );
    }
}
