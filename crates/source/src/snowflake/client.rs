//! The SQL API v2 calls ferry makes, over ferry's HTTP stack: submit a statement, ask for its
//! status, fetch a result partition, cancel. Answers are turned into typed results here, and
//! every error into a `SourceError` a person can act on, without the credential.

use super::decode::RowType;
use super::jwt::KeyPairSigner;
use super::{SnowflakeConfig, SnowflakeCredential};
use crate::{SourceError, SqlFlavor, SqlPosition, TimeoutSetting};
use ferry_http::{HttpClient, HttpError, HttpPolicy, InboundResponse, OutboundRequest};
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::time::{Duration, SystemTime};

/// The most Snowflake lets a statement run (7 days); its `timeout: 0` means this.
const SNOWFLAKE_MAX_TIMEOUT_SECONDS: u64 = 604_800;

/// A successful answer: the result's columns and one partition of rows (the first one when it
/// answers a submission or a status request).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResultSet {
    #[serde(default)]
    pub(crate) statement_handle: Option<String>,
    #[serde(default)]
    pub(crate) result_set_meta_data: Option<ResultSetMetaData>,
    #[serde(default)]
    pub(crate) data: Vec<Vec<Option<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResultSetMetaData {
    #[serde(default)]
    pub(crate) row_type: Vec<RowType>,
    /// One entry (row count, sizes) per partition; absent or null when the whole result is
    /// in partition 0. Only their number matters here.
    #[serde(default)]
    pub(crate) partition_info: Option<Vec<serde_json::Value>>,
}

impl ResultSet {
    pub(crate) fn partition_count(&self) -> usize {
        self.result_set_meta_data
            .as_ref()
            .and_then(|meta| meta.partition_info.as_ref())
            .map_or(1, |partitions| partitions.len().max(1))
    }
}

/// What Snowflake says about a statement that has not finished, or has failed
/// (`QueryStatus`, `QueryFailureStatus`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    statement_handle: Option<String>,
}

/// The answer to a submission or a status request.
pub(crate) enum Progress {
    Done(Box<ResultSet>),
    /// Still running (HTTP 202): ask again later, or cancel by this handle.
    Running {
        handle: String,
    },
}

/// How requests authenticate: the `Authorization` token and its kind.
enum Authenticator {
    KeyPair(Box<KeyPairSigner>),
    Token { token: String, kind: &'static str },
}

/// One connection's worth of Snowflake: where, who, and the HTTP client.
pub(crate) struct SnowflakeClient {
    http: HttpClient,
    base_url: reqwest::Url,
    authenticator: Authenticator,
    config: SnowflakeConfig,
    target: String,
}

impl SnowflakeClient {
    /// Reads the credential (a key is parsed and decrypted now, so a wrong passphrase fails
    /// before anything is sent) and builds the HTTP client.
    pub(crate) fn new(config: &SnowflakeConfig) -> Result<SnowflakeClient, SourceError> {
        let target = config.describe();
        let base_url = config.base_url();
        let base_url =
            reqwest::Url::parse(&base_url).map_err(|error| SourceError::ConnectionFailed {
                target: target.clone(),
                reason: format!("`{base_url}` is not a valid URL ({error})"),
                fix: "correct the connection's base_url (`--base-url`), or leave it out for \
                      https://ACCOUNT.snowflakecomputing.com"
                    .to_string(),
            })?;
        let authenticator = match &config.credential {
            SnowflakeCredential::KeyPair {
                private_key_pem,
                passphrase,
            } => Authenticator::KeyPair(Box::new(
                KeyPairSigner::new(
                    private_key_pem.expose(),
                    passphrase.as_ref().map(|secret| secret.expose()),
                    &config.account,
                    &config.user,
                )
                .map_err(|error| SourceError::AuthenticationFailed {
                    target: target.clone(),
                    reason: error.to_string(),
                    fix: format!(
                        "give ferry the PKCS#8 PEM private key whose public key is registered on \
                         user `{user}` (`ALTER USER {user} SET RSA_PUBLIC_KEY='…'`)",
                        user = config.user
                    ),
                })?,
            )),
            SnowflakeCredential::OAuthToken(token) => Authenticator::Token {
                token: token.expose().to_string(),
                kind: "OAUTH",
            },
            SnowflakeCredential::ProgrammaticAccessToken(token) => Authenticator::Token {
                token: token.expose().to_string(),
                kind: "PROGRAMMATIC_ACCESS_TOKEN",
            },
        };
        let http = HttpClient::new(HttpPolicy {
            service: "snowflake",
            // Snowflake publishes no request rate; it answers 429 when busy, which the stack
            // retries with backoff.
            rate_limits: ferry_http::RateLimitPolicy::unlimited(),
            retry: ferry_http::RetryPolicy::default(),
            max_in_flight: 4,
            // A submission may be held up to 45 s before Snowflake answers 202, and a
            // partition is up to tens of megabytes.
            attempt_timeout: Duration::from_secs(120),
        })
        .map_err(|error| SourceError::ConnectionFailed {
            target: target.clone(),
            reason: error.to_string(),
            fix: "check the machine's TLS setup (ferry could not build its HTTP client)"
                .to_string(),
        })?;
        Ok(SnowflakeClient {
            http,
            base_url,
            authenticator,
            config: config.clone(),
            target,
        })
    }

    /// Submits `sql` to run with at most `timeout` (zero: Snowflake's maximum), in a session
    /// pinned to UTC that accepts a single statement.
    pub(crate) async fn submit(
        &self,
        sql: &str,
        timeout: Duration,
        timeout_setting: TimeoutSetting,
    ) -> Result<Progress, SourceError> {
        let timeout_seconds = if timeout.is_zero() {
            0
        } else {
            timeout
                .as_secs()
                .saturating_add(u64::from(timeout.subsec_nanos() > 0))
                .min(SNOWFLAKE_MAX_TIMEOUT_SECONDS)
        };
        let mut body = serde_json::json!({
            "statement": sql,
            "timeout": timeout_seconds,
            "warehouse": self.config.warehouse,
            "resultSetMetaData": {"format": "jsonv2"},
            "parameters": {
                // Timestamps without a zone are read as UTC, whatever the account's default.
                "TIMEZONE": "UTC",
                // Pinned so BINARY columns always arrive as hex.
                "BINARY_OUTPUT_FORMAT": "HEX",
                // A second statement smuggled into a model is refused by Snowflake itself.
                "MULTI_STATEMENT_COUNT": "1",
                "QUERY_TAG": "ferry",
            },
        });
        for (key, value) in [
            ("database", &self.config.database),
            ("schema", &self.config.schema),
            ("role", &self.config.role),
        ] {
            if let Some(value) = value {
                body[key] = serde_json::Value::String(value.clone());
            }
        }
        // One request id per submission, reused by every retry of it, with `retry=true`: a
        // resubmission Snowflake already received returns the first one's statement instead
        // of running the model twice.
        let mut url = self.url("/api/v2/statements");
        url.query_pairs_mut()
            .append_pair("requestId", &request_id())
            .append_pair("retry", "true");
        let request = self.request(
            reqwest::Method::POST,
            url,
            "POST /api/v2/statements",
            Some(body.to_string()),
        )?;
        let response = self.send(&request, None).await?;
        self.progress(response, sql, (timeout, timeout_setting))
    }

    /// Asks how the statement is doing; when it is done, the answer holds partition 0.
    pub(crate) async fn status(
        &self,
        handle: &str,
        sql: &str,
        timeout: (Duration, TimeoutSetting),
    ) -> Result<Progress, SourceError> {
        let url = self.url(&format!("/api/v2/statements/{handle}"));
        let request = self.request(
            reqwest::Method::GET,
            url,
            "GET /api/v2/statements/{handle}",
            None,
        )?;
        let response = self.send(&request, None).await?;
        self.progress(response, sql, timeout)
    }

    /// The rows of partition `partition` (1 and up; Snowflake sends it gzip-encoded).
    pub(crate) async fn partition(
        &self,
        handle: &str,
        partition: usize,
        rows_read: u64,
    ) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let mut url = self.url(&format!("/api/v2/statements/{handle}"));
        url.query_pairs_mut()
            .append_pair("partition", &partition.to_string());
        let request = self.request(
            reqwest::Method::GET,
            url,
            "GET /api/v2/statements/{handle}",
            None,
        )?;
        let response = self.send(&request, Some(rows_read)).await?;
        if response.status != 200 {
            return Err(self.failure(&response, "", (Duration::ZERO, TimeoutSetting::Statement)));
        }
        let result: ResultSet =
            serde_json::from_str(&response.body).map_err(|error| SourceError::ConnectionLost {
                rows_read,
                reason: format!(
                    "Snowflake sent partition {partition} in a form ferry cannot read ({error})"
                ),
            })?;
        Ok(result.data)
    }

    /// Asks Snowflake to stop the statement. Best effort: the caller is already giving up on
    /// it, so a failure is only logged.
    pub(crate) async fn cancel(&self, handle: &str) {
        let mut url = self.url(&format!("/api/v2/statements/{handle}/cancel"));
        url.query_pairs_mut()
            .append_pair("requestId", &request_id());
        let outcome = match self.request(
            reqwest::Method::POST,
            url,
            "POST /api/v2/statements/{handle}/cancel",
            None,
        ) {
            Ok(request) => {
                tokio::time::timeout(Duration::from_secs(10), self.http.send(&request)).await
            }
            Err(_) => return,
        };
        match outcome {
            Ok(Ok(response)) if response.is_success() => {
                tracing::debug!(handle, "Snowflake statement cancelled.");
            }
            Ok(Ok(response)) => {
                tracing::debug!(
                    handle,
                    status = response.status,
                    "Snowflake did not cancel the statement."
                );
            }
            Ok(Err(error)) => {
                tracing::debug!(handle, error = %error, "Could not cancel the Snowflake statement.");
            }
            Err(_) => tracing::debug!(handle, "Cancelling the Snowflake statement timed out."),
        }
    }

    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base_url.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{path}"));
        url
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        endpoint: &str,
        body: Option<String>,
    ) -> Result<OutboundRequest, SourceError> {
        let (token, kind) = match &self.authenticator {
            Authenticator::KeyPair(signer) => (
                signer.token_at(SystemTime::now()).map_err(|error| {
                    SourceError::AuthenticationFailed {
                        target: self.target.clone(),
                        reason: error.to_string(),
                        fix: self.credential_hint(),
                    }
                })?,
                "KEYPAIR_JWT",
            ),
            Authenticator::Token { token, kind } => (token.clone(), *kind),
        };
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                SourceError::AuthenticationFailed {
                    target: self.target.clone(),
                    reason: "the token holds characters an HTTP header cannot carry".to_string(),
                    fix: "copy the token again, whole, into the connection's credential"
                        .to_string(),
                }
            })?;
        // Keeps the token out of any Debug print of the request.
        authorization.set_sensitive(true);
        Ok(OutboundRequest {
            method,
            url,
            endpoint: endpoint.to_string(),
            headers: vec![
                (reqwest::header::AUTHORIZATION, authorization),
                (
                    HeaderName::from_static("x-snowflake-authorization-token-type"),
                    HeaderValue::from_static(kind),
                ),
                (
                    reqwest::header::ACCEPT,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            body: body.map(|body| (body, "application/json")),
        })
    }

    /// Sends through the HTTP stack (retries, backoff); a transport failure becomes
    /// `ConnectionFailed` before any row was read and `ConnectionLost` after.
    async fn send(
        &self,
        request: &OutboundRequest,
        rows_read: Option<u64>,
    ) -> Result<InboundResponse, SourceError> {
        self.http.send(request).await.map_err(|error| {
            let reason = match &error {
                HttpError::RetriesExhausted {
                    last_response: Some(response),
                    attempts,
                    ..
                } => format!(
                    "Snowflake kept answering HTTP {}{} ({attempts} attempts)",
                    response.status,
                    snowflake_message(&response.body)
                        .map(|message| format!(": {message}"))
                        .unwrap_or_default()
                ),
                other => other.to_string(),
            };
            match rows_read {
                Some(rows_read) => SourceError::ConnectionLost { rows_read, reason },
                None => SourceError::ConnectionFailed {
                    target: self.target.clone(),
                    reason,
                    fix: format!(
                        "check the connection's account identifier (`{}`) and that this machine \
                         can reach {} over HTTPS",
                        self.config.account, self.base_url
                    ),
                },
            }
        })
    }

    fn progress(
        &self,
        response: InboundResponse,
        sql: &str,
        timeout: (Duration, TimeoutSetting),
    ) -> Result<Progress, SourceError> {
        match response.status {
            200 => {
                let result: ResultSet = serde_json::from_str(&response.body).map_err(|error| {
                    SourceError::Warehouse {
                        reason: format!("Snowflake answered in a form ferry cannot read ({error})"),
                    }
                })?;
                Ok(Progress::Done(Box::new(result)))
            }
            202 => {
                let status: StatusBody = serde_json::from_str(&response.body).unwrap_or_default();
                let handle = status
                    .statement_handle
                    .ok_or_else(|| SourceError::Warehouse {
                        reason: "Snowflake accepted the model but sent no statement handle".into(),
                    })?;
                Ok(Progress::Running { handle })
            }
            _ => Err(self.failure(&response, sql, timeout)),
        }
    }

    /// A final answer other than success, in words: whose fault and what to change.
    fn failure(
        &self,
        response: &InboundResponse,
        sql: &str,
        (timeout, timeout_setting): (Duration, TimeoutSetting),
    ) -> SourceError {
        let status: StatusBody = serde_json::from_str(&response.body).unwrap_or_default();
        let message = status
            .message
            .clone()
            .unwrap_or_else(|| format!("HTTP {}", response.status));
        let code = status.code.clone().unwrap_or_default();
        match response.status {
            401 | 403 => SourceError::AuthenticationFailed {
                target: self.target.clone(),
                reason: format!("{message} ({})", describe_code(&code, response.status)),
                fix: self.credential_hint(),
            },
            408 => SourceError::StatementTimeout {
                timeout,
                setting: timeout_setting,
                flavor: SqlFlavor::Snowflake,
            },
            422 if is_warehouse_problem(&message) => SourceError::Sql {
                message: format!(
                    "{message}; check the connection's `warehouse` (`{}`): it must exist, and \
                     the role must have USAGE on it",
                    self.config.warehouse
                ),
                position: None,
            },
            // `Object 'X' does not exist or not authorized.` (a table, a schema, a database):
            // Snowflake will not say which of the two.
            422 if message.contains("does not exist") => SourceError::Sql {
                position: snowflake_position(&message, sql),
                message: format!(
                    "{}; check the table's name, the connection's database and schema \
                     (`--database`, `--schema`), and that the role may SELECT from it",
                    message.trim_end()
                ),
            },
            422 => SourceError::Sql {
                position: snowflake_position(&message, sql),
                message,
            },
            404 => SourceError::Warehouse {
                reason: format!(
                    "Snowflake at {} answered 404 ({message}); check the account identifier",
                    self.base_url
                ),
            },
            status => SourceError::Warehouse {
                reason: format!("Snowflake answered HTTP {status}: {message}"),
            },
        }
    }

    /// What to check when Snowflake refuses the credential, per kind.
    fn credential_hint(&self) -> String {
        match &self.authenticator {
            Authenticator::KeyPair(signer) => format!(
                "check the account identifier (`{account}`) and user (`{user}`), and that the \
                 user's RSA_PUBLIC_KEY is the public half of this private key (its fingerprint \
                 is SHA256:{fingerprint}; `DESC USER {user}` shows RSA_PUBLIC_KEY_FP; register \
                 the public key with `ALTER USER {user} SET RSA_PUBLIC_KEY='…'`)",
                account = self.config.account,
                user = self.config.user,
                fingerprint = signer.fingerprint()
            ),
            Authenticator::Token { kind, .. } if *kind == "OAUTH" => format!(
                "check that the OAuth token is current and was issued for user `{}` of \
                 account `{}`",
                self.config.user, self.config.account
            ),
            Authenticator::Token { .. } => format!(
                "check that the programmatic access token is current, belongs to user `{}` \
                 of account `{}`, and that a network policy allows this address",
                self.config.user, self.config.account
            ),
        }
    }
}

/// Snowflake's own error message in an answer's body, if there is one.
fn snowflake_message(body: &str) -> Option<String> {
    serde_json::from_str::<StatusBody>(body)
        .ok()
        .and_then(|status| status.message)
}

fn describe_code(code: &str, status: u16) -> String {
    if code.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}, code {code}")
    }
}

/// Snowflake refuses a missing or unusable warehouse in these words (000606 "No active
/// warehouse selected…", "Warehouse 'X' does not exist or not authorized").
fn is_warehouse_problem(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("no active warehouse")
        || (message.contains("warehouse") && message.contains("does not exist"))
}

/// Snowflake's compilation errors say `line 2 at position 4` (a 0-based column).
fn snowflake_position(message: &str, sql: &str) -> Option<SqlPosition> {
    let rest = &message[message.find("line ")? + "line ".len()..];
    let (line, rest) = rest.split_once(" at position ")?;
    let line: usize = line.trim().parse().ok()?;
    let column: usize = rest
        .split(|character: char| !character.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    (1..=sql.lines().count().max(1))
        .contains(&line)
        .then_some(SqlPosition {
            line,
            column: column + 1,
        })
}

/// A random UUID (version 4), as Snowflake wants a `requestId`.
fn request_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, request_id());
    }

    #[test]
    fn compilation_errors_point_at_the_line_and_column() {
        let sql = "SELECT\n  nme\nFROM t";
        let message = "SQL compilation error: error line 2 at position 2\ninvalid identifier 'NME'";
        assert_eq!(
            snowflake_position(message, sql),
            Some(SqlPosition { line: 2, column: 3 })
        );
        assert_eq!(snowflake_position("Object 'T' does not exist", sql), None);
    }
}
