//! Who may call what. The API takes an API token as `Bearer`; the UI signs in with a token once
//! and then carries a session cookie (HttpOnly, SameSite=Strict, Secure behind HTTPS). Every UI
//! request that changes something must also carry the session's CSRF token, as the `_csrf`
//! form field or the `X-CSRF-Token` header (htmx sends the header).

use crate::error::ApiError;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::num::NonZeroU32;

use std::time::Duration;

pub const SESSION_COOKIE: &str = "ferry_session";
pub const CSRF_FIELD: &str = "_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A session ends after this long without a request.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// Who a request is from, once authenticated.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The API token's name (for the UI: the token the session signed in with).
    pub token_name: String,
    /// The session's CSRF token (empty for API calls, which need none: no cookie is involved).
    pub csrf: String,
}

/// UI sessions, kept in the workspace (only the hash of each session id), so that a restarted
/// server, or another `ferry serve` on the same PostgreSQL workspace, knows them: nobody is
/// signed out by a deploy or sent to sign in again by a load balancer.
#[derive(Default)]
pub struct Sessions;

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Sessions {
    /// Starts a session; returns its id (the cookie value). Sessions idle for too long are
    /// removed on the way.
    pub async fn create(
        &self,
        store: &ferry_state::StateStore,
        token_name: &str,
    ) -> Result<String, ferry_state::StateError> {
        let id = random_token();
        let now = Utc::now();
        store.prune_ui_sessions(now - idle()).await?;
        store
            .create_ui_session(&ferry_state::UiSession {
                id_hash: digest(&id),
                token_name: token_name.to_string(),
                csrf: random_token(),
                signed_in_at: now,
                last_seen_at: now,
            })
            .await?;
        Ok(id)
    }

    /// The live session with this id, and when it signed in; seeing it keeps it alive.
    async fn find(
        &self,
        store: &ferry_state::StateStore,
        id: &str,
    ) -> Result<Option<(Caller, DateTime<Utc>)>, ferry_state::StateError> {
        let now = Utc::now();
        let found = store
            .touch_ui_session(&digest(id), now, now - idle())
            .await?;
        Ok(found.map(|session| {
            (
                Caller {
                    token_name: session.token_name,
                    csrf: session.csrf,
                },
                session.signed_in_at,
            )
        }))
    }

    pub async fn end(
        &self,
        store: &ferry_state::StateStore,
        id: &str,
    ) -> Result<(), ferry_state::StateError> {
        store.end_ui_session(&digest(id)).await.map(|_| ())
    }
}

fn idle() -> chrono::Duration {
    chrono::Duration::from_std(SESSION_IDLE).expect("twelve hours fit")
}

/// Failed sign-ins per client: a burst of 10, then one every 6 seconds. A token is 256 random
/// bits, so this is not what keeps it from being guessed; it keeps a guesser from making the
/// server hash, query and log without end. Only failures count, and a valid token signs in even
/// while its address is limited, so nobody can lock the owner out by failing on purpose.
///
/// Clients are told apart by their address as the TCP connection shows it (IPv6 by /64, the
/// block one machine usually gets). Behind a reverse proxy every request comes from the proxy's
/// address, so all clients share one budget there; the valid-token pass keeps that from locking
/// anyone out. `X-Forwarded-For` is not trusted: anyone can send it.
pub struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

/// Clients remembered at most before the ones with a full budget again are forgotten.
const LIMITER_KEYS: usize = 10_000;

impl LoginLimiter {
    pub fn new() -> LoginLimiter {
        let quota = Quota::per_minute(NonZeroU32::new(10).expect("non-zero"))
            .allow_burst(NonZeroU32::new(10).expect("non-zero"));
        LoginLimiter {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Counts a failed sign-in from `client`: `Err(wait)` when the client is over its budget
    /// and should wait that long before failing again.
    pub fn record_failure(&self, client: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() >= LIMITER_KEYS {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&client_key(client))
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// The budget a client address draws on: an IPv4 address (also when written as IPv6), or the
/// /64 block of an IPv6 address.
fn client_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

/// `/api/*`: a valid API token, or 401.
pub async fn require_api_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer_token(request.headers()) else {
        return ApiError::unauthorized().into_response();
    };
    match state.store().verify_api_token(token).await {
        Ok(Some(record)) => {
            request.extensions_mut().insert(Caller {
                token_name: record.name,
                csrf: String::new(),
            });
            next.run(request).await
        }
        Ok(None) => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this API token is not valid (revoked, or never created in this workspace)",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(crate::guard::INVALID_TOKEN_CHALLENGE),
            );
            response
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// UI pages: a live session, or a redirect to the sign-in page; changes also need the CSRF token.
pub async fn require_session(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(id) = session_id(request.headers()) else {
        return sign_in_first(request.headers());
    };
    let found = match state.inner.sessions.find(state.store(), &id).await {
        Ok(found) => found,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Some((caller, signed_in_at)) = found else {
        return sign_in_first(request.headers());
    };
    // A session lives only as long as the token it signed in with: revoking the token ends it.
    match token_still_exists(&state, &caller.token_name, signed_in_at).await {
        Ok(true) => {}
        Ok(false) => {
            if let Err(error) = state.inner.sessions.end(state.store(), &id).await {
                return ApiError::from(error).into_response();
            }
            return sign_in_first(request.headers());
        }
        Err(error) => return ApiError::from(error).into_response(),
    }
    let request = if request.method() == Method::GET || request.method() == Method::HEAD {
        request
    } else {
        match check_csrf(request, &caller.csrf).await {
            Ok(request) => request,
            Err(response) => return response,
        }
    };
    let mut request = request;
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Whether the token named `token_name` that a session signed in with at `signed_in_at` is still
/// in the workspace. A token of that name created after the sign-in is a different token.
async fn token_still_exists(
    state: &AppState,
    token_name: &str,
    signed_in_at: DateTime<Utc>,
) -> Result<bool, ferry_state::StateError> {
    Ok(state
        .store()
        .list_api_tokens()
        .await?
        .iter()
        .any(|token| token.name == token_name && token.created_at <= signed_in_at))
}

fn sign_in_first(headers: &HeaderMap) -> Response {
    if headers.contains_key("hx-request") {
        // htmx follows this header with a full page load instead of swapping in a fragment.
        (
            StatusCode::UNAUTHORIZED,
            [("hx-redirect", "/login")],
            "sign in first",
        )
            .into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

async fn check_csrf(request: Request, expected: &str) -> Result<Request, Response> {
    let refused = || {
        (
            StatusCode::FORBIDDEN,
            "This form is out of date or did not come from ferry (CSRF check failed). Reload the page and try again.",
        )
            .into_response()
    };
    if let Some(value) = request.headers().get(CSRF_HEADER) {
        return if constant_time_eq(value.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            Err(refused())
        };
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, crate::MAX_BODY_BYTES)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "request too large").into_response())?;
    let presented = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.into_owned());
    match presented {
        Some(value) if constant_time_eq(value.as_bytes(), expected.as_bytes()) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(refused()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn session_cookie(id: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_IDLE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

pub fn expired_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

impl AppState {
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }
    pub(crate) fn login_limiter(&self) -> &LoginLimiter {
        &self.inner.login_limiter
    }
    pub(crate) fn secure_cookies(&self) -> bool {
        self.inner.secure_cookies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_are_kept_in_the_workspace_found_by_id_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let options = ferry_state::WorkspaceOptions::in_dir(dir.path());
        let store = ferry_state::StateStore::initialize(&options).await.unwrap();
        let sessions = Sessions;
        let id = sessions.create(&store, "ui").await.unwrap();
        // Another server process (here: another open of the workspace) knows the session.
        let other = ferry_state::StateStore::open_existing(&options)
            .await
            .unwrap();
        let (caller, signed_in_at) = sessions
            .find(&other, &id)
            .await
            .unwrap()
            .expect("a live session");
        assert!(signed_in_at <= Utc::now());
        assert_eq!(caller.token_name, "ui");
        assert!(caller.csrf.len() >= 40);
        assert!(sessions
            .find(&store, "not-a-session")
            .await
            .unwrap()
            .is_none());
        sessions.end(&store, &id).await.unwrap();
        assert!(sessions.find(&other, &id).await.unwrap().is_none());
    }

    #[test]
    fn the_login_limiter_refuses_after_a_burst_and_says_how_long_to_wait() {
        let limiter = LoginLimiter::new();
        let client = IpAddr::from([10, 0, 0, 1]);
        let allowed = (0..30)
            .filter(|_| limiter.record_failure(client).is_ok())
            .count();
        assert_eq!(allowed, 10);
        let wait = limiter.record_failure(client).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        assert!(
            limiter.record_failure(IpAddr::from([10, 0, 0, 2])).is_ok(),
            "per client"
        );
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64_block() {
        let limiter = LoginLimiter::new();
        let host = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for i in 0..10 {
            assert!(limiter.record_failure(host(i)).is_ok());
        }
        assert!(limiter.record_failure(host(99)).is_err(), "same /64");
        let elsewhere = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(limiter.record_failure(elsewhere).is_ok(), "another /64");
        assert_eq!(
            client_key("::ffff:10.0.0.1".parse().unwrap()),
            IpAddr::from([10, 0, 0, 1])
        );
    }

    #[test]
    fn the_session_cookie_is_http_only_and_strict() {
        let cookie = session_cookie("abc", false);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("Secure"));
        assert!(session_cookie("abc", true).ends_with("; Secure"));
    }
}
