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
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[derive(Default)]
pub struct Sessions {
    /// sha256(session id) → session. Only hashes are kept, like tokens in the database.
    by_hash: Mutex<HashMap<String, Session>>,
}

struct Session {
    token_name: String,
    csrf: String,
    last_seen: Instant,
    /// When the session began: a token of the same name created later is another token, and
    /// does not revive a session of a revoked one.
    signed_in_at: DateTime<Utc>,
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Sessions {
    /// Starts a session; returns its id (the cookie value).
    pub fn create(&self, token_name: &str) -> String {
        let id = random_token();
        let mut sessions = self.by_hash.lock().expect("sessions lock");
        sessions.retain(|_, s| s.last_seen.elapsed() < SESSION_IDLE);
        sessions.insert(
            digest(&id),
            Session {
                token_name: token_name.to_string(),
                csrf: random_token(),
                last_seen: Instant::now(),
                signed_in_at: Utc::now(),
            },
        );
        id
    }

    /// The live session with this id, and when it signed in.
    fn find(&self, id: &str) -> Option<(Caller, DateTime<Utc>)> {
        let mut sessions = self.by_hash.lock().expect("sessions lock");
        let session = sessions.get_mut(&digest(id))?;
        if session.last_seen.elapsed() >= SESSION_IDLE {
            sessions.remove(&digest(id));
            return None;
        }
        session.last_seen = Instant::now();
        Some((
            Caller {
                token_name: session.token_name.clone(),
                csrf: session.csrf.clone(),
            },
            session.signed_in_at,
        ))
    }

    pub fn end(&self, id: &str) {
        self.by_hash
            .lock()
            .expect("sessions lock")
            .remove(&digest(id));
    }
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
    let found = session_id(request.headers())
        .and_then(|id| state.inner.sessions.find(&id).map(|found| (id, found)));
    let Some((id, (caller, signed_in_at))) = found else {
        return sign_in_first(request.headers());
    };
    // A session lives only as long as the token it signed in with: revoking the token ends it.
    match token_still_exists(&state, &caller.token_name, signed_in_at).await {
        Ok(true) => {}
        Ok(false) => {
            state.inner.sessions.end(&id);
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

    #[test]
    fn sessions_are_found_by_id_and_end() {
        let sessions = Sessions::default();
        let id = sessions.create("ui");
        let (caller, signed_in_at) = sessions.find(&id).expect("a live session");
        assert!(signed_in_at <= Utc::now());
        assert_eq!(caller.token_name, "ui");
        assert!(caller.csrf.len() >= 40);
        assert!(sessions.find("not-a-session").is_none());
        sessions.end(&id);
        assert!(sessions.find(&id).is_none());
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
