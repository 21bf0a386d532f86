//! OAuth 2.0 access tokens for BigQuery: a service account key (a JWT bearer grant, the
//! assertion signed RS256 with the key), application default credentials (the file
//! `GOOGLE_APPLICATION_CREDENTIALS` names, else gcloud's, holding a service account key or an
//! `authorized_user` refresh token), or the GCE/GKE metadata server (workload identity).
//!
//! Tokens are cached per credential for the whole process until shortly before they expire, so
//! a run, its previews and a long stream of pages share one token and refresh it when needed.
//! Nothing here ever puts a private key, a refresh token or an access token in an error or in
//! `Debug` output: they live in [`Secret`]s or in ring's key pair, which prints no private part.

use super::BigQueryCredential;
use base64::Engine as _;
use ferry_core::Secret;
use ferry_http::{HttpClient, HttpPolicy, OutboundRequest, RateLimitPolicy, RetryPolicy};
use reqwest::header::{HeaderName, HeaderValue};
use ring::signature::RsaKeyPair;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Google's OAuth 2.0 token endpoint.
pub const DEFAULT_TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";
/// What the tokens may do: BigQuery only (not the whole cloud platform).
pub(crate) const BIGQUERY_SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// The metadata server of GCE, GKE (workload identity), Cloud Run and Cloud Functions.
const DEFAULT_METADATA_SERVER: &str = "http://metadata.google.internal";
/// How long a signed assertion is valid; Google accepts at most one hour.
const ASSERTION_LIFETIME_SECONDS: u64 = 3600;
/// A cached token is replaced this long before it expires, so that no request carries a token
/// that expires on the way.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Where a connection's tokens come from, resolved once per query (ADC looks at the environment
/// and the file system then).
#[derive(Clone)]
pub(crate) struct TokenSource {
    kind: TokenSourceKind,
    /// The cache entry's key: which credential, without any secret in clear.
    cache_key: String,
}

#[derive(Clone)]
enum TokenSourceKind {
    ServiceAccount {
        client_email: String,
        key_id: Option<String>,
        key: Arc<RsaKeyPair>,
        token_endpoint: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_endpoint: String,
    },
    MetadataServer {
        base: String,
    },
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.describe())
    }
}

/// A credential that cannot give tokens; `reason` says why and what to change. Never holds a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthError {
    pub(crate) reason: String,
    /// The token endpoint or metadata server could not be reached at all (an outage rather than
    /// a refused credential).
    pub(crate) unreachable: bool,
}

impl AuthError {
    fn refused(reason: impl Into<String>) -> AuthError {
        AuthError {
            reason: reason.into(),
            unreachable: false,
        }
    }
}

impl TokenSource {
    /// Reads the credential: parses a key, or finds application default credentials.
    /// `token_endpoint` overrides Google's (tests); `metadata_server` likewise.
    pub(crate) fn resolve(
        credential: &BigQueryCredential,
        token_endpoint: Option<&str>,
        metadata_server: Option<&str>,
    ) -> Result<TokenSource, AuthError> {
        match credential {
            BigQueryCredential::ServiceAccountKey(key_json) => from_key_file_json(
                key_json,
                token_endpoint,
                "the connection's service account key",
            ),
            BigQueryCredential::ApplicationDefault => {
                let environment_file = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
                    .filter(|path| !path.is_empty())
                    .map(PathBuf::from);
                let metadata_server = metadata_server
                    .map(str::to_string)
                    .or_else(|| {
                        std::env::var("GCE_METADATA_HOST")
                            .ok()
                            .filter(|host| !host.is_empty())
                            .map(|host| format!("http://{host}"))
                    })
                    .unwrap_or_else(|| DEFAULT_METADATA_SERVER.to_string());
                application_default(
                    environment_file.as_deref(),
                    gcloud_default_file().as_deref(),
                    token_endpoint,
                    &metadata_server,
                )
            }
        }
    }

    /// The credential in words, for messages: `service account ferry@p.iam.gserviceaccount.com`.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            TokenSourceKind::ServiceAccount { client_email, .. } => {
                format!("service account {client_email}")
            }
            TokenSourceKind::AuthorizedUser { client_id, .. } => {
                format!("the gcloud user credentials of OAuth client {client_id}")
            }
            TokenSourceKind::MetadataServer { base } => {
                format!("the metadata server's default service account ({base})")
            }
        }
    }

    /// An access token, from the cache while it has more than [`REFRESH_MARGIN`] left.
    pub(crate) async fn access_token(&self, http: &HttpClient) -> Result<Secret, AuthError> {
        if let Some(token) = cached_token(&self.cache_key) {
            return Ok(token);
        }
        let (token, lifetime) = self.fetch_token(http).await?;
        // A token that lives less than twice the margin (a test server's) is kept for half its
        // life rather than not at all.
        let keep_for = lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2));
        if let Ok(mut cache) = TOKEN_CACHE.lock() {
            cache.insert(
                self.cache_key.clone(),
                CachedToken {
                    token: token.clone(),
                    replace_after: Instant::now() + keep_for,
                },
            );
        }
        Ok(token)
    }

    /// Forgets the cached token (BigQuery refused it: revoked, or the clock was off).
    pub(crate) fn forget_token(&self) {
        if let Ok(mut cache) = TOKEN_CACHE.lock() {
            cache.remove(&self.cache_key);
        }
    }

    async fn fetch_token(&self, http: &HttpClient) -> Result<(Secret, Duration), AuthError> {
        match &self.kind {
            TokenSourceKind::ServiceAccount {
                client_email,
                key_id,
                key,
                token_endpoint,
            } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let assertion = signed_assertion(
                    key,
                    key_id.as_deref(),
                    &AssertionClaims {
                        iss: client_email,
                        scope: BIGQUERY_SCOPE,
                        aud: token_endpoint,
                        iat: now,
                        exp: now + ASSERTION_LIFETIME_SECONDS,
                    },
                )?;
                let body = form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.expose()),
                ]);
                let fix = "check that the key is current (not deleted or disabled in the Google \
                           Cloud console, IAM → Service accounts → Keys) and that this machine's \
                           clock is right";
                token_grant(http, token_endpoint, body, &self.describe(), fix).await
            }
            TokenSourceKind::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_endpoint,
            } => {
                let body = form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose()),
                    ("refresh_token", refresh_token.expose()),
                ]);
                let fix = "sign in again with `gcloud auth application-default login`, or use a \
                           service account key";
                token_grant(http, token_endpoint, body, &self.describe(), fix).await
            }
            TokenSourceKind::MetadataServer { base } => metadata_token(base).await,
        }
    }
}

/// The claims of a JWT bearer grant (RFC 7523), as Google's token endpoint wants them.
#[derive(Debug, serde::Serialize)]
pub(crate) struct AssertionClaims<'a> {
    pub(crate) iss: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) aud: &'a str,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
}

/// `header.claims.signature`, each part base64url without padding, signed RS256
/// (RSASSA-PKCS1-v1_5 with SHA-256), as RFC 7515 says.
pub(crate) fn signed_assertion(
    key: &RsaKeyPair,
    key_id: Option<&str>,
    claims: &AssertionClaims<'_>,
) -> Result<Secret, AuthError> {
    let base64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(key_id) = key_id {
        header["kid"] = serde_json::Value::String(key_id.to_string());
    }
    let claims =
        serde_json::to_vec(claims).map_err(|error| AuthError::refused(error.to_string()))?;
    let signing_input = format!(
        "{}.{}",
        base64url.encode(header.to_string()),
        base64url.encode(claims)
    );
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| {
        AuthError::refused("could not sign the token request with the service account key")
    })?;
    Ok(Secret::new(format!(
        "{signing_input}.{}",
        base64url.encode(signature)
    )))
}

/// Reads a credentials file's JSON: a service account key or gcloud's `authorized_user`.
/// `origin` names where it came from, for messages.
pub(crate) fn from_key_file_json(
    json: &Secret,
    token_endpoint: Option<&str>,
    origin: &str,
) -> Result<TokenSource, AuthError> {
    // serde_json's own errors quote no input, but say where; that is enough and leaks nothing.
    let file: CredentialsFile = serde_json::from_str(json.expose()).map_err(|error| {
        AuthError::refused(format!(
            "{origin} is not a Google credentials JSON file ({error}); give the JSON key file \
             downloaded from IAM → Service accounts → Keys, as it is"
        ))
    })?;
    match file.kind.as_deref() {
        Some("service_account") => {
            let client_email = file.client_email.ok_or_else(|| {
                AuthError::refused(format!(
                    "{origin} has no `client_email`; give the whole JSON key file"
                ))
            })?;
            let private_key = file.private_key.ok_or_else(|| {
                AuthError::refused(format!(
                    "{origin} has no `private_key`; give the whole JSON key file"
                ))
            })?;
            let key = rsa_key_from_pem(private_key.expose()).map_err(|problem| {
                AuthError::refused(format!(
                    "the private key of {origin} ({client_email}) cannot be read: {problem}; \
                     download a new JSON key for the service account"
                ))
            })?;
            let token_endpoint = token_endpoint
                .map(str::to_string)
                .or(file.token_uri)
                .unwrap_or_else(|| DEFAULT_TOKEN_ENDPOINT.to_string());
            let cache_key = format!(
                "service_account {client_email} {} {token_endpoint} {}",
                file.private_key_id.as_deref().unwrap_or(""),
                fingerprint(private_key.expose())
            );
            Ok(TokenSource {
                kind: TokenSourceKind::ServiceAccount {
                    client_email,
                    key_id: file.private_key_id,
                    key: Arc::new(key),
                    token_endpoint,
                },
                cache_key,
            })
        }
        Some("authorized_user") => {
            let missing = |field: &str| {
                AuthError::refused(format!(
                    "{origin} has no `{field}`; run `gcloud auth application-default login` again"
                ))
            };
            let client_id = file.client_id.ok_or_else(|| missing("client_id"))?;
            let client_secret = file.client_secret.ok_or_else(|| missing("client_secret"))?;
            let refresh_token = file.refresh_token.ok_or_else(|| missing("refresh_token"))?;
            let token_endpoint = token_endpoint
                .map(str::to_string)
                .or(file.token_uri)
                .unwrap_or_else(|| DEFAULT_TOKEN_ENDPOINT.to_string());
            let cache_key = format!(
                "authorized_user {client_id} {token_endpoint} {}",
                fingerprint(refresh_token.expose())
            );
            Ok(TokenSource {
                kind: TokenSourceKind::AuthorizedUser {
                    client_id,
                    client_secret,
                    refresh_token,
                    token_endpoint,
                },
                cache_key,
            })
        }
        Some(other) => Err(AuthError::refused(format!(
            "{origin} is a credentials file of type `{other}`, which ferry cannot use; give a \
             service account key (`\"type\": \"service_account\"`) or gcloud's application \
             default credentials (`authorized_user`)"
        ))),
        None => Err(AuthError::refused(format!(
            "{origin} has no `type`; give the JSON key file downloaded from IAM → Service \
             accounts → Keys, as it is"
        ))),
    }
}

/// Application default credentials, in Google's order: the file `GOOGLE_APPLICATION_CREDENTIALS`
/// names, then gcloud's well-known file, then the metadata server (checked only when a token is
/// first needed).
pub(crate) fn application_default(
    environment_file: Option<&Path>,
    gcloud_file: Option<&Path>,
    token_endpoint: Option<&str>,
    metadata_server: &str,
) -> Result<TokenSource, AuthError> {
    if let Some(path) = environment_file {
        let origin = format!(
            "the file GOOGLE_APPLICATION_CREDENTIALS names ({})",
            path.display()
        );
        let json = std::fs::read_to_string(path).map_err(|error| {
            AuthError::refused(format!(
                "cannot read {origin}: {error}; point GOOGLE_APPLICATION_CREDENTIALS at a \
                 readable service account key file, or unset it"
            ))
        })?;
        return from_key_file_json(&Secret::new(json), token_endpoint, &origin);
    }
    if let Some(path) = gcloud_file.filter(|path| path.is_file()) {
        let origin = format!(
            "gcloud's application default credentials ({})",
            path.display()
        );
        let json = std::fs::read_to_string(path)
            .map_err(|error| AuthError::refused(format!("cannot read {origin}: {error}")))?;
        return from_key_file_json(&Secret::new(json), token_endpoint, &origin);
    }
    let base = metadata_server.trim_end_matches('/').to_string();
    Ok(TokenSource {
        cache_key: format!("metadata {base}"),
        kind: TokenSourceKind::MetadataServer { base },
    })
}

/// gcloud's file: `$CLOUDSDK_CONFIG/application_default_credentials.json`, by default under
/// `~/.config/gcloud`.
fn gcloud_default_file() -> Option<PathBuf> {
    let config_dir = match std::env::var_os("CLOUDSDK_CONFIG").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config/gcloud"),
    };
    Some(config_dir.join("application_default_credentials.json"))
}

#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key_id: Option<String>,
    #[serde(default, deserialize_with = "optional_secret")]
    private_key: Option<Secret>,
    token_uri: Option<String>,
    client_id: Option<String>,
    #[serde(default, deserialize_with = "optional_secret")]
    client_secret: Option<Secret>,
    #[serde(default, deserialize_with = "optional_secret")]
    refresh_token: Option<Secret>,
}

/// A PKCS#8 RSA private key in PEM (`-----BEGIN PRIVATE KEY-----`), as Google's key files hold.
pub(crate) fn rsa_key_from_pem(pem: &str) -> Result<RsaKeyPair, String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let start = pem
        .find(BEGIN)
        .ok_or("it is not a PEM `BEGIN PRIVATE KEY` block")?
        + BEGIN.len();
    let end = pem[start..]
        .find(END)
        .ok_or("its PEM block has no END line")?
        + start;
    let base64_text: String = pem[start..end]
        .chars()
        .filter(|character| !character.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64_text)
        .map_err(|_| "its PEM block is not valid base64")?;
    RsaKeyPair::from_pkcs8(&der)
        .map_err(|rejected| format!("it is not an RSA key ring accepts ({rejected})"))
}

/// A short hash of a secret, to tell two keys apart in the cache without keeping either.
fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

struct CachedToken {
    token: Secret,
    replace_after: Instant,
}

static TOKEN_CACHE: LazyLock<Mutex<HashMap<String, CachedToken>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn cached_token(cache_key: &str) -> Option<Secret> {
    let cache = TOKEN_CACHE.lock().ok()?;
    let entry = cache.get(cache_key)?;
    (Instant::now() < entry.replace_after).then(|| entry.token.clone())
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default, deserialize_with = "optional_secret")]
    access_token: Option<Secret>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// POSTs a grant to a token endpoint and reads the access token; a refusal keeps Google's
/// `error` and `error_description` (they never echo the assertion or refresh token).
async fn token_grant(
    http: &HttpClient,
    token_endpoint: &str,
    body: String,
    credential: &str,
    fix: &str,
) -> Result<(Secret, Duration), AuthError> {
    let url = reqwest::Url::parse(token_endpoint).map_err(|_| {
        AuthError::refused(format!(
            "the token endpoint `{token_endpoint}` is not a URL"
        ))
    })?;
    let request = OutboundRequest {
        method: reqwest::Method::POST,
        url,
        endpoint: "POST oauth2/token".to_string(),
        headers: Vec::new(),
        body: Some((body, "application/x-www-form-urlencoded")),
    };
    let response = http.send(&request).await.map_err(|error| AuthError {
        reason: format!("cannot reach Google's token endpoint ({token_endpoint}): {error}"),
        unreachable: true,
    })?;
    let parsed: Option<TokenResponse> = serde_json::from_str(&response.body).ok();
    match parsed {
        Some(TokenResponse {
            access_token: Some(token),
            expires_in,
            ..
        }) if response.is_success() => Ok((token, Duration::from_secs(expires_in.unwrap_or(3600)))),
        Some(TokenResponse {
            error: Some(error),
            error_description,
            ..
        }) => Err(AuthError::refused(format!(
            "Google refused {credential}: {error}{}; {fix}",
            error_description
                .map(|description| format!(" ({description})"))
                .unwrap_or_default()
        ))),
        _ => Err(AuthError::refused(format!(
            "Google's token endpoint ({token_endpoint}) answered HTTP {} without a token; {fix}",
            response.status
        ))),
    }
}

/// A token for the instance's (or the GKE workload's) service account, from the metadata
/// server. Its own client: a machine outside Google Cloud has no metadata server, and finding
/// that out must take seconds, not the two minutes of retries the API calls get.
async fn metadata_token(base: &str) -> Result<(Secret, Duration), AuthError> {
    let not_there = |problem: String| AuthError {
        reason: format!(
            "no credentials found: GOOGLE_APPLICATION_CREDENTIALS is not set, gcloud has no \
             application default credentials, and the metadata server ({base}) {problem}; set \
             GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or give the key as \
             the connection's credential"
        ),
        unreachable: true,
    };
    let http = HttpClient::new(HttpPolicy {
        service: "google-oauth",
        rate_limits: RateLimitPolicy::unlimited(),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
            max_total: Duration::from_secs(5),
            transient_answer: None,
        },
        max_in_flight: 2,
        attempt_timeout: Duration::from_secs(3),
    })
    .map_err(|error| not_there(error.to_string()))?;
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/computeMetadata/v1/instance/service-accounts/default/token"),
        [("scopes", BIGQUERY_SCOPE)],
    )
    .map_err(|_| not_there("is not a URL".to_string()))?;
    let request = OutboundRequest {
        method: reqwest::Method::GET,
        url,
        endpoint: "GET metadata token".to_string(),
        headers: vec![(
            HeaderName::from_static("metadata-flavor"),
            HeaderValue::from_static("Google"),
        )],
        body: None,
    };
    let response = http
        .send(&request)
        .await
        .map_err(|error| not_there(format!("did not answer ({error})")))?;
    if !response.is_success() {
        return Err(AuthError::refused(format!(
            "the metadata server ({base}) gave no token (HTTP {}); check that the instance or \
             the GKE workload has a service account (workload identity) with the BigQuery scope",
            response.status
        )));
    }
    match serde_json::from_str::<TokenResponse>(&response.body) {
        Ok(TokenResponse {
            access_token: Some(token),
            expires_in,
            ..
        }) => Ok((token, Duration::from_secs(expires_in.unwrap_or(3600)))),
        _ => Err(not_there("answered without a token".to_string())),
    }
}

/// Reads a secret field (ferry-core's `Secret` only serializes, on purpose).
fn optional_secret<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Secret>, D::Error> {
    Option::<String>::deserialize(deserializer).map(|text| text.map(Secret::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE_KEY: &str = include_str!("test_keys/service_account_private.pem");
    const PUBLIC_KEY_DER: &[u8] = include_bytes!("test_keys/service_account_public.der");

    fn key_file(private_key: &str) -> Secret {
        Secret::new(
            serde_json::json!({
                "type": "service_account",
                "project_id": "ferry-test",
                "private_key_id": "key-1",
                "private_key": private_key,
                "client_email": "ferry@ferry-test.iam.gserviceaccount.com",
                "client_id": "1234",
                "token_uri": "https://oauth2.googleapis.com/token",
            })
            .to_string(),
        )
    }

    fn decode_part(part: &str) -> serde_json::Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url without padding");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn the_assertion_is_signed_rs256_and_verifies_with_the_public_key() {
        let key = rsa_key_from_pem(PRIVATE_KEY).expect("the fixture key reads");
        let claims = AssertionClaims {
            iss: "ferry@ferry-test.iam.gserviceaccount.com",
            scope: BIGQUERY_SCOPE,
            aud: DEFAULT_TOKEN_ENDPOINT,
            iat: 1_700_000_000,
            exp: 1_700_003_600,
        };
        let assertion = signed_assertion(&key, Some("key-1"), &claims).unwrap();
        let parts: Vec<&str> = assertion.expose().split('.').collect();
        assert_eq!(parts.len(), 3, "header.claims.signature");
        assert_eq!(
            decode_part(parts[0]),
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "key-1"})
        );
        assert_eq!(
            decode_part(parts[1]),
            serde_json::json!({
                "iss": "ferry@ferry-test.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/bigquery",
                "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        let public_key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            PUBLIC_KEY_DER,
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public_key
            .verify(signed.as_bytes(), &signature)
            .expect("the signature verifies with the key pair's public key");
        let mut tampered = signed.into_bytes();
        tampered[5] ^= 1;
        assert!(public_key.verify(&tampered, &signature).is_err());
    }

    #[test]
    fn a_key_file_is_read_and_never_printed() {
        let source = from_key_file_json(&key_file(PRIVATE_KEY), None, "the key").unwrap();
        assert_eq!(
            source.describe(),
            "service account ferry@ferry-test.iam.gserviceaccount.com"
        );
        let debug = format!("{source:?}");
        assert!(
            !debug.contains("PRIVATE KEY") && !debug.contains("MII"),
            "{debug}"
        );
        // The key's own token_uri is used unless the connection overrides it.
        match &source.kind {
            TokenSourceKind::ServiceAccount { token_endpoint, .. } => {
                assert_eq!(token_endpoint, DEFAULT_TOKEN_ENDPOINT)
            }
            _ => panic!("a service account"),
        }
    }

    #[test]
    fn bad_key_files_say_what_to_do_without_quoting_the_key() {
        let body_of_key: String = PRIVATE_KEY.lines().nth(3).unwrap().to_string();
        let broken_key = PRIVATE_KEY.replace(&body_of_key, &"A".repeat(body_of_key.len()));
        let cases = [
            (
                Secret::new("not json at all"),
                "is not a Google credentials JSON file",
            ),
            (
                Secret::new(r#"{"type": "external_account"}"#),
                "of type `external_account`",
            ),
            (
                key_file("-----BEGIN RSA PRIVATE KEY-----\nabc"),
                "not a PEM `BEGIN PRIVATE KEY` block",
            ),
            (key_file(&broken_key), "cannot be read"),
            (
                Secret::new(r#"{"type": "service_account", "client_email": "x@y"}"#),
                "has no `private_key`",
            ),
        ];
        for (json, expected) in cases {
            let error = from_key_file_json(&json, None, "the key").unwrap_err();
            assert!(error.reason.contains(expected), "{}", error.reason);
            assert!(!error.reason.contains(&body_of_key), "{}", error.reason);
            assert!(!error.unreachable);
        }
    }

    #[test]
    fn application_default_credentials_follow_googles_order() {
        let directory = tempfile::tempdir().unwrap();
        let key_path = directory.path().join("key.json");
        std::fs::write(&key_path, key_file(PRIVATE_KEY).expose()).unwrap();
        let user_path = directory.path().join("adc.json");
        std::fs::write(
            &user_path,
            r#"{"type": "authorized_user", "client_id": "cid", "client_secret": "cs-1",
                "refresh_token": "rt-secret-1"}"#,
        )
        .unwrap();
        let metadata = "http://127.0.0.1:1";
        let describe = |environment: Option<&Path>, gcloud: Option<&Path>| {
            application_default(environment, gcloud, None, metadata)
                .map(|source| format!("{source:?}"))
                .unwrap_or_else(|error| error.reason)
        };
        assert_eq!(
            describe(Some(&key_path), Some(&user_path)),
            "service account ferry@ferry-test.iam.gserviceaccount.com"
        );
        assert_eq!(
            describe(None, Some(&user_path)),
            "the gcloud user credentials of OAuth client cid"
        );
        assert_eq!(
            describe(None, Some(&directory.path().join("absent.json"))),
            "the metadata server's default service account (http://127.0.0.1:1)"
        );
        let missing = describe(Some(&directory.path().join("absent.json")), None);
        assert!(
            missing.starts_with("cannot read the file GOOGLE_APPLICATION_CREDENTIALS names"),
            "{missing}"
        );
    }

    /// A local server answering as Google's token endpoint and metadata server do, recording
    /// the form or headers it was sent.
    async fn fake_google() -> (String, std::sync::Arc<Mutex<Vec<String>>>) {
        use axum::http::HeaderMap;
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let token_seen = std::sync::Arc::clone(&seen);
        let metadata_seen = std::sync::Arc::clone(&seen);
        let router = axum::Router::new()
            .route(
                "/token",
                axum::routing::post(move |body: String| async move {
                    token_seen.lock().unwrap().push(body);
                    axum::Json(
                        serde_json::json!({"access_token": "user-token", "expires_in": 3599}),
                    )
                }),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                axum::routing::get(move |headers: HeaderMap, uri: axum::http::Uri| async move {
                    metadata_seen.lock().unwrap().push(format!(
                        "{} {}",
                        headers
                            .get("metadata-flavor")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-"),
                        uri.query().unwrap_or_default()
                    ));
                    axum::Json(
                        serde_json::json!({"access_token": "gce-token", "expires_in": 3599,
                        "token_type": "Bearer"}),
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (base, seen)
    }

    fn test_client() -> HttpClient {
        HttpClient::new(HttpPolicy::default()).unwrap()
    }

    #[tokio::test]
    async fn the_metadata_server_gives_workload_identity_tokens() {
        let (base, seen) = fake_google().await;
        let source = application_default(None, None, None, &base).unwrap();
        let token = source.access_token(&test_client()).await.unwrap();
        assert_eq!(token.expose(), "gce-token");
        // Cached: asked once for two tokens.
        source.access_token(&test_client()).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            ["Google scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fbigquery"]
        );
    }

    #[tokio::test]
    async fn no_metadata_server_says_how_to_give_credentials() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let source = application_default(None, None, None, &base).unwrap();
        let error = source.access_token(&test_client()).await.unwrap_err();
        assert!(error.unreachable);
        assert!(
            error
                .reason
                .starts_with("no credentials found: GOOGLE_APPLICATION_CREDENTIALS is not set"),
            "{}",
            error.reason
        );
        assert!(
            error
                .reason
                .ends_with("or give the key as the connection's credential"),
            "{}",
            error.reason
        );
    }

    #[tokio::test]
    async fn gcloud_user_credentials_are_refreshed_with_their_refresh_token() {
        let (base, seen) = fake_google().await;
        let directory = tempfile::tempdir().unwrap();
        let user_path = directory.path().join("adc.json");
        std::fs::write(
            &user_path,
            r#"{"type": "authorized_user", "client_id": "cid", "client_secret": "cs-1",
                "refresh_token": "rt-secret-1"}"#,
        )
        .unwrap();
        let endpoint = format!("{base}/token");
        let source =
            application_default(Some(&user_path), None, Some(&endpoint), "http://unused").unwrap();
        assert!(!format!("{source:?}").contains("rt-secret-1"));
        let token = source.access_token(&test_client()).await.unwrap();
        assert_eq!(token.expose(), "user-token");
        assert_eq!(
            *seen.lock().unwrap(),
            ["grant_type=refresh_token&client_id=cid&client_secret=cs-1&refresh_token=rt-secret-1"]
        );
    }
}
