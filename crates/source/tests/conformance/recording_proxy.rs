//! A small HTTP proxy between ferry and an emulator (snowduck, crucible), one per test: it
//! writes down every request ferry sends, so a case can see the cancel ferry sent or the pages
//! it stopped asking for; it answers Google's token endpoint itself (the BigQuery emulator has
//! none); and it can make snowduck treat every submission as asynchronous, which is how real
//! Snowflake answers a statement that is still running (202), and how snowduck keeps one
//! running until it is cancelled.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The access token the proxy's token endpoint issues; the emulator takes any.
pub const ACCESS_TOKEN: &str = "ya29.conformance-token";

/// One request ferry sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
}

pub struct RecordingProxy {
    base_url: String,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    requests: Mutex<Vec<Recorded>>,
    asynchronous_submissions: AtomicBool,
}

impl RecordingProxy {
    /// Listens on a free loopback port of this test's runtime and forwards to `upstream`.
    pub async fn start(upstream: &str) -> RecordingProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            requests: Mutex::new(Vec::new()),
            asynchronous_submissions: AtomicBool::new(false),
        });
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port for the proxy");
        let base_url = format!("http://{}", listener.local_addr().expect("its address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        RecordingProxy { base_url, state }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every request forwarded so far (not the token requests), in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("not poisoned").clone()
    }

    /// From now on, every statement submitted to snowduck is submitted with `async=true`:
    /// snowduck answers 202 and never runs it, as Snowflake answers a statement that is still
    /// running after its first 45 seconds.
    pub fn make_submissions_asynchronous(&self) {
        self.state
            .asynchronous_submissions
            .store(true, Ordering::SeqCst);
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .expect("the request body");
    if parts.method == Method::POST && parts.uri.path() == "/token" {
        return answer(
            200,
            &format!(
                r#"{{"access_token": "{ACCESS_TOKEN}", "expires_in": 3599, "token_type": "Bearer"}}"#
            ),
        );
    }
    let path = parts.uri.path().to_string();
    let mut query = parts.uri.query().unwrap_or_default().to_string();
    state.requests.lock().expect("not poisoned").push(Recorded {
        method: parts.method.clone(),
        path: path.clone(),
    });
    if parts.method == Method::POST
        && path == "/api/v2/statements"
        && state.asynchronous_submissions.load(Ordering::SeqCst)
    {
        query = if query.is_empty() {
            "async=true".to_string()
        } else {
            format!("{query}&async=true")
        };
    }
    let url = if query.is_empty() {
        format!("{}{path}", state.upstream)
    } else {
        format!("{}{path}?{query}", state.upstream)
    };
    let mut outbound = state.client.request(parts.method, url).body(body);
    for (name, value) in copied_headers(&parts.headers) {
        outbound = outbound.header(name, value);
    }
    match outbound.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            answer(status, &body)
        }
        Err(error) => answer(502, &format!(r#"{{"message": "proxy: {error}"}}"#)),
    }
}

/// The headers the emulators read: credentials and the body's type.
fn copied_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            name == "authorization" || name == "content-type" || name.starts_with("x-snowflake")
        })
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect()
}

fn answer(status: u16, body: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("a valid status"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}
