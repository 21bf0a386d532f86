//! BigQuery's REST API v2, the three calls a model needs: `jobs.query`, `jobs.getQueryResults`
//! and `jobs.cancel`, through ferry's one HTTP stack, with a bearer token from [`TokenSource`].

use super::auth::{AuthError, TokenSource};
use super::decode::Schema;
use super::BigQueryConfig;
use ferry_http::{
    HttpClient, HttpError, HttpPolicy, InboundResponse, OutboundRequest, RateLimitPolicy,
    RetryPolicy,
};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde::Deserialize;
use std::time::Duration;

/// Longest a `jobs.query` or `getQueryResults` call waits for the job on BigQuery's side before
/// answering `jobComplete: false`. Short enough that a statement timeout or a dropped stream is
/// acted on promptly, long enough that a quick query needs one round trip.
pub(crate) const LONGEST_SERVER_WAIT: Duration = Duration::from_secs(10);

/// A query response (`jobs.query`) or a result page (`jobs.getQueryResults`): the two share
/// these fields.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryResults {
    #[serde(default)]
    pub(crate) job_complete: bool,
    /// Absent when `JOB_CREATION_OPTIONAL` let BigQuery answer without a job (the whole
    /// result is in this response).
    pub(crate) job_reference: Option<JobReference>,
    pub(crate) schema: Option<Schema>,
    #[serde(default)]
    pub(crate) rows: Vec<ResultRow>,
    pub(crate) page_token: Option<String>,
}

/// One row: `{"f": [{"v": …}, …]}`, a cell per schema field.
#[derive(Debug, Deserialize)]
pub(crate) struct ResultRow {
    pub(crate) f: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobReference {
    pub(crate) job_id: String,
    pub(crate) location: Option<String>,
}

/// Why a call failed, before the caller puts it in words for the model being read.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No token: the credential was refused or its endpoint unreachable.
    Auth(AuthError),
    /// BigQuery answered with an error: its HTTP status, the first error's `reason`
    /// (`invalidQuery`, `notFound`, `accessDenied`, …) and its message, kept as it is.
    Api {
        status: u16,
        reason: String,
        message: String,
    },
    /// BigQuery could not be reached, or kept failing (5xx, 429) until the retries ran out.
    Unreachable(String),
    /// An answer that is not what the API documents.
    Unexpected(String),
}

pub(crate) struct BigQueryClient {
    http: HttpClient,
    tokens: TokenSource,
    /// The API root with a trailing slash removed: `https://bigquery.googleapis.com`.
    api_base: reqwest::Url,
    project_id: String,
    location: String,
}

impl BigQueryClient {
    pub(crate) fn new(
        config: &BigQueryConfig,
        tokens: TokenSource,
    ) -> Result<BigQueryClient, String> {
        let http = HttpClient::new(http_policy()).map_err(|error| error.to_string())?;
        let api_base = reqwest::Url::parse(config.api_base.trim_end_matches('/'))
            .ok()
            .filter(|url| url.scheme() == "https" || url.scheme() == "http")
            .ok_or_else(|| {
                format!(
                    "the API base `{}` is not an http(s) URL; leave it out for {}",
                    config.api_base,
                    super::DEFAULT_API_BASE
                )
            })?;
        Ok(BigQueryClient {
            http,
            tokens,
            api_base,
            project_id: config.project_id.clone(),
            location: config.location.clone(),
        })
    }

    /// `POST /bigquery/v2/projects/{project}/queries`.
    pub(crate) async fn jobs_query(
        &self,
        body: &serde_json::Value,
    ) -> Result<QueryResults, CallError> {
        let url = self.url(&["queries"], &[]);
        let response = self
            .call(Method::POST, url, "POST queries", Some(body.to_string()))
            .await?;
        parse(&response)
    }

    /// `GET /bigquery/v2/projects/{project}/queries/{jobId}`: waits up to `wait` for the job,
    /// then returns its state and, once complete, a page of at most `max_results` rows.
    pub(crate) async fn get_query_results(
        &self,
        job: &JobReference,
        page_token: Option<&str>,
        max_results: usize,
        wait: Duration,
    ) -> Result<QueryResults, CallError> {
        let mut query = vec![
            ("maxResults", max_results.to_string()),
            ("timeoutMs", wait.as_millis().to_string()),
            ("formatOptions.useInt64Timestamp", "true".to_string()),
        ];
        if let Some(location) = self.job_location(job) {
            query.push(("location", location.to_string()));
        }
        if let Some(token) = page_token {
            query.push(("pageToken", token.to_string()));
        }
        let url = self.url(&["queries", &job.job_id], &query);
        let response = self
            .call(Method::GET, url, "GET queries/{jobId}", None)
            .await?;
        parse(&response)
    }

    /// `POST /bigquery/v2/projects/{project}/jobs/{jobId}/cancel`. BigQuery stops the job soon
    /// after; only its own slots are spent until then.
    pub(crate) async fn cancel(&self, job: &JobReference) -> Result<(), CallError> {
        let location: Vec<(&str, String)> = self
            .job_location(job)
            .map(|location| ("location", location.to_string()))
            .into_iter()
            .collect();
        let url = self.url(&["jobs", &job.job_id, "cancel"], &location);
        self.call(Method::POST, url, "POST jobs/{jobId}/cancel", None)
            .await
            .map(|_| ())
    }

    /// Where the job runs: as BigQuery's answer says, else as the connection says.
    fn job_location<'a>(&'a self, job: &'a JobReference) -> Option<&'a str> {
        job.location
            .as_deref()
            .or(Some(self.location.as_str()))
            .filter(|location| !location.is_empty())
    }

    /// `{api_base}/bigquery/v2/projects/{project}/{segments…}?{query}`, each segment escaped
    /// (a domain-scoped project id holds a `:`).
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> reqwest::Url {
        let mut url = self.api_base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["bigquery", "v2", "projects", &self.project_id])
                .extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(name, value)| (*name, value.as_str())));
        }
        url
    }

    /// Sends with a bearer token. A 401 (a token revoked or expired early) is answered once
    /// more with a fresh token before it counts as refused.
    async fn call(
        &self,
        method: Method,
        url: reqwest::Url,
        endpoint: &str,
        body: Option<String>,
    ) -> Result<InboundResponse, CallError> {
        let mut fresh_token_tried = false;
        loop {
            let token = self
                .tokens
                .access_token(&self.http)
                .await
                .map_err(CallError::Auth)?;
            let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| {
                    CallError::Auth(AuthError {
                        reason: "the access token holds characters an HTTP header cannot carry"
                            .to_string(),
                        unreachable: false,
                    })
                })?;
            authorization.set_sensitive(true);
            let request = OutboundRequest {
                method: method.clone(),
                url: url.clone(),
                endpoint: endpoint.to_string(),
                headers: vec![(AUTHORIZATION, authorization)],
                body: body.clone().map(|body| (body, "application/json")),
            };
            let response = match self.http.send(&request).await {
                Ok(response) => response,
                // Only 409, 429, 5xx and a 403 for a rate limit are retried: BigQuery busy or
                // failing, not the model.
                Err(error @ HttpError::RetriesExhausted { .. }) => {
                    return Err(CallError::Unreachable(error.to_string()))
                }
                Err(error) => return Err(CallError::Unreachable(error.to_string())),
            };
            if response.is_success() {
                return Ok(response);
            }
            if response.status == 401 && !fresh_token_tried {
                self.tokens.forget_token();
                fresh_token_tried = true;
                continue;
            }
            return Err(api_error(&response));
        }
    }
}

fn http_policy() -> HttpPolicy {
    HttpPolicy {
        service: "bigquery",
        // BigQuery enforces its own quotas per project; a model makes a few calls a second at
        // most, so no client-side bucket is needed.
        rate_limits: RateLimitPolicy::unlimited(),
        max_in_flight: 4,
        // A call may wait LONGEST_SERVER_WAIT on BigQuery's side, then send a page of rows.
        attempt_timeout: LONGEST_SERVER_WAIT + Duration::from_secs(50),
        retry: RetryPolicy {
            transient_answer: Some(is_rate_limited),
            ..RetryPolicy::default()
        },
    }
}

/// BigQuery answers "too many requests" with HTTP 403 and the reason `rateLimitExceeded` (its
/// error reference: "retry using exponential backoff"), where other APIs say 429. Other 403s
/// (`accessDenied`, `quotaExceeded` for a daily quota) will not change if asked again.
fn is_rate_limited(status: u16, body: &str) -> bool {
    status == 403
        && matches!(
            api_error_from_body(status, body),
            CallError::Api { reason, .. } if reason == "rateLimitExceeded"
        )
}

fn parse(response: &InboundResponse) -> Result<QueryResults, CallError> {
    serde_json::from_str(&response.body).map_err(|error| {
        CallError::Unexpected(format!(
            "BigQuery's answer is not the query result the API documents ({error})"
        ))
    })
}

/// BigQuery's error body: `{"error": {"code", "message", "errors": [{"reason", "message"}],
/// "status"}}`.
fn api_error(response: &InboundResponse) -> CallError {
    api_error_from_body(response.status, &response.body)
}

fn api_error_from_body(status: u16, body: &str) -> CallError {
    #[derive(Deserialize)]
    struct Body {
        error: ErrorBody,
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        message: String,
        #[serde(default)]
        errors: Vec<ErrorItem>,
        #[serde(default)]
        status: String,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        reason: String,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(Body { error }) => CallError::Api {
            status,
            reason: error
                .errors
                .first()
                .map(|item| item.reason.clone())
                .filter(|reason| !reason.is_empty())
                .unwrap_or(error.status),
            message: error.message,
        },
        Err(_) => CallError::Api {
            status,
            reason: String::new(),
            message: format!("HTTP {status} without BigQuery's error body"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(reason: &str) -> String {
        serde_json::json!({"error": {"code": 403, "message": "…", "errors": [{"reason": reason}]}})
            .to_string()
    }

    #[test]
    fn a_403_for_a_rate_limit_is_retried_and_other_403s_are_not() {
        assert!(is_rate_limited(403, &error_body("rateLimitExceeded")));
        for reason in ["accessDenied", "quotaExceeded", "billingNotEnabled"] {
            assert!(!is_rate_limited(403, &error_body(reason)), "{reason}");
        }
        assert!(!is_rate_limited(403, "not BigQuery's body"));
        // 429 and 5xx are already retried by the status rules.
        assert!(!is_rate_limited(400, &error_body("rateLimitExceeded")));
    }

    /// Through ferry's HTTP stack with BigQuery's policy: a server that answers
    /// `403 rateLimitExceeded` once, then the result.
    #[tokio::test]
    async fn a_rate_limited_call_is_sent_again_and_succeeds() {
        use std::io::{BufRead as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/queries", listener.local_addr().unwrap());
        let answers = [
            ("403 Forbidden", error_body("rateLimitExceeded")),
            ("200 OK", r#"{"jobComplete": true}"#.to_string()),
        ];
        let server = std::thread::spawn(move || {
            // Answers first: `zip` asks its first iterator first, and a third accept would wait
            // for ever.
            for ((status, body), stream) in answers.into_iter().zip(listener.incoming()) {
                let stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                write!(
                    &stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: \
                     {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let http = HttpClient::new(http_policy()).unwrap();
        let response = http
            .send(&OutboundRequest {
                method: Method::GET,
                url: reqwest::Url::parse(&url).unwrap(),
                endpoint: "GET queries/{jobId}".to_string(),
                headers: Vec::new(),
                body: None,
            })
            .await
            .expect("the second answer is final");
        assert_eq!((response.status, response.attempts), (200, 2));
        server.join().unwrap();
    }
}
