//! Signing in with an API token, and out.

use super::layout::{error_box, head};
use crate::auth::{self, Caller};
use crate::AppState;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use std::net::SocketAddr;

fn login_page(problem: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in", false))
            body.login {
                main.login-card {
                    h1 { span.logo { "f" } "ferry" }
                    p.subtitle { "Sign in with an API token of this workspace." }
                    @if let Some(problem) = problem { (error_box(problem)) }
                    form method="post" action="/login" {
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="current-password"
                            placeholder="ferry_…" required autofocus;
                        button.primary type="submit" { "Sign in" }
                    }
                    p.hint {
                        "No token yet? Create one on the server's machine with "
                        code { "ferry token create NAME" } "."
                    }
                }
            }
        }
    }
}

/// Whether the cookie gets `Secure`: when asked (`--secure-cookies`), or when a TLS-terminating
/// proxy says the browser came over HTTPS.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.secure_cookies()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

pub async fn page() -> Markup {
    login_page(None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // The token is checked first: a valid one signs in even from an address that failed too
    // often (perhaps someone else behind the same proxy or NAT), so failing on purpose cannot
    // lock the owner out. Only failures draw on the address's budget.
    match state.store().verify_api_token(form.token.trim()).await {
        Ok(Some(record)) => {
            let session = match state.sessions().create(state.store(), &record.name).await {
                Ok(session) => session,
                Err(error) => return crate::ApiError::from(error).into_response(),
            };
            (
                [(
                    header::SET_COOKIE,
                    auth::session_cookie(&session, secure(&state, &headers)),
                )],
                Redirect::to("/"),
            )
                .into_response()
        }
        Ok(None) => {
            let client = peer.ip();
            match state.login_limiter().record_failure(client) {
                Ok(()) => (
                    StatusCode::UNAUTHORIZED,
                    login_page(Some("That token is not valid for this workspace.")),
                )
                    .into_response(),
                Err(wait) => {
                    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    if state.login_warnings().should_warn(&client, "limited") {
                        tracing::warn!(%client, "Too many failed sign-ins from this address; refusing its wrong tokens for now.");
                    } else {
                        tracing::debug!(%client, "Another failed sign-in from a limited address.");
                    }
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, seconds.max(1).to_string())],
                        login_page(Some(&format!(
                            "Too many failed sign-ins from this address. Wait {} seconds and try again.",
                            seconds.max(1)
                        ))),
                    )
                        .into_response()
                }
            }
        }
        Err(error) => {
            tracing::error!(problem = %error, "Checking a sign-in token failed.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                login_page(Some(
                    "The workspace database failed; the server log has the details.",
                )),
            )
                .into_response()
        }
    }
}

pub async fn logout(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = auth::session_id(&headers) {
        if let Err(error) = state.sessions().end(state.store(), &id).await {
            return crate::ApiError::from(error).into_response();
        }
    }
    (
        [(
            header::SET_COOKIE,
            auth::expired_cookie(secure(&state, &headers)),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}
