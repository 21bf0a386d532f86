//! `ferry serve`: the REST API under `/api`, and the web UI, from one workspace.
//!
//! Both call the same functions as the CLI (`ferry_engine::declare`, `run_sync`,
//! `preview_sync`), so the server is another door into the workspace, not a second
//! implementation. Every route but the sign-in page, the health check and the static assets
//! requires authentication: an API token as `Bearer` for `/api`, a session cookie for the UI.

mod api;
mod auth;
mod error;
mod form;
mod guard;
mod hooks;
mod log_throttle;
mod metrics;
mod openapi;
mod run_registry;
mod scheduler;
mod sequences;
mod ui;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use ferry_state::StateStore;
use std::net::SocketAddr;
use std::sync::Arc;

pub use auth::SESSION_COOKIE;
pub use error::ApiError;
pub use guard::AllowedHosts;
pub use metrics::OPENMETRICS_CONTENT_TYPE;
pub use openapi::openapi_document;
pub use ui::UI_ROUTES;

/// The largest request body the server reads. SQL models are the largest thing anyone sends.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Paths anyone may request without signing in.
pub const PUBLIC_PATHS: &[&str] = &["/login", "/healthz", "/assets/"];

pub struct ServerOptions {
    pub bind: SocketAddr,
    /// Mark the session cookie `Secure`: set when ferry is reached over HTTPS (behind a
    /// TLS-terminating proxy).
    pub secure_cookies: bool,
    /// How often scheduled syncs are checked; `None` for the default.
    pub scheduler_tick: Option<std::time::Duration>,
    /// Environment variables a connection created over the API may name as its secret
    /// (`api_key_env`, `url_env`). Empty: none, so an API token cannot make the server send one
    /// of its variables to a host of the caller's choosing.
    pub allowed_secret_env: Vec<String>,
    /// Host names (besides loopback and the bind address) that requests may name in their
    /// `Host` header: the names people reach the server by (`ferry serve --public-host`).
    pub public_hosts: Vec<String>,
    /// A second listener that serves `/metrics` only, without authentication, as Prometheus
    /// scrapes it (`ferry serve --metrics-addr`). The API serves `/metrics` with a token either way.
    pub metrics_listener: Option<tokio::net::TcpListener>,
    /// Runs this process holds at once (`ferry serve --max-runs`); more wait in the run queue
    /// for this server or another one on the workspace. `None` for the default.
    pub max_runs: Option<usize>,
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: StateStore,
    sessions: auth::Sessions,
    login_limiter: auth::LoginLimiter,
    runs: run_registry::RunRegistry,
    secure_cookies: bool,
    allowed_secret_env: Vec<String>,
    allowed_hosts: AllowedHosts,
    /// Scheduled runs that cannot start, warned about once per sync and interval.
    scheduler_warnings: log_throttle::LogThrottle<String>,
    /// Addresses refused sign-in, warned about once a minute each.
    login_warnings: log_throttle::LogThrottle<std::net::IpAddr>,
}

impl AppState {
    pub fn new(store: StateStore, secure_cookies: bool) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                store,
                sessions: auth::Sessions,
                login_limiter: auth::LoginLimiter::new(),
                runs: run_registry::RunRegistry::default(),
                secure_cookies,
                allowed_secret_env: Vec::new(),
                allowed_hosts: AllowedHosts::loopback(),
                scheduler_warnings: log_throttle::LogThrottle::new(
                    scheduler::REPEATED_WARNING_INTERVAL,
                ),
                login_warnings: log_throttle::LogThrottle::new(std::time::Duration::from_secs(60)),
            }),
        }
    }

    /// The same state, answering to these hosts (see [`AllowedHosts`]) instead of loopback only.
    pub fn with_allowed_hosts(self, hosts: AllowedHosts) -> AppState {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_allowed_hosts is called before the state is shared"));
        AppState {
            inner: Arc::new(Inner {
                allowed_hosts: hosts,
                ..inner
            }),
        }
    }

    pub(crate) fn allowed_hosts(&self) -> &AllowedHosts {
        &self.inner.allowed_hosts
    }

    pub(crate) fn login_warnings(&self) -> &log_throttle::LogThrottle<std::net::IpAddr> {
        &self.inner.login_warnings
    }

    pub(crate) fn scheduler_warnings(&self) -> &log_throttle::LogThrottle<String> {
        &self.inner.scheduler_warnings
    }

    /// The same state, allowing these environment variables as connection secrets over the API.
    pub fn with_allowed_secret_env(self, names: Vec<String>) -> AppState {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            panic!("with_allowed_secret_env is called before the state is shared")
        });
        AppState {
            inner: Arc::new(Inner {
                allowed_secret_env: names,
                ..inner
            }),
        }
    }

    /// The same state, running at most `max_runs` runs at once in this process.
    pub fn with_max_runs(self, max_runs: usize) -> AppState {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_max_runs is called before the state is shared"));
        AppState {
            inner: Arc::new(Inner {
                runs: run_registry::RunRegistry::new(max_runs),
                ..inner
            }),
        }
    }

    /// Whether a connection made over the API may read its secret from this variable.
    pub(crate) fn secret_env_allowed(&self, name: &str) -> bool {
        !name.starts_with("FERRY_") && self.inner.allowed_secret_env.iter().any(|n| n == name)
    }

    pub fn store(&self) -> &StateStore {
        &self.inner.store
    }

    fn runs(&self) -> &run_registry::RunRegistry {
        &self.inner.runs
    }
}

/// The whole application: API, UI, assets.
pub fn router(state: AppState) -> Router {
    let api = api::routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_token,
    ));
    // Forms are checked once the session is (layers added later run first).
    let ui = ui::routes()
        .route_layer(axum::middleware::from_fn(form::reject_malformed_forms))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    let public =
        ui::public_routes().route_layer(axum::middleware::from_fn(form::reject_malformed_forms));
    // Orchestrators' triggers: authenticated by their signature, not by a token or a session.
    let hooks = Router::new().route("/hooks/{name}", axum::routing::post(hooks::receive));
    Router::new()
        .merge(api)
        .merge(ui)
        .merge(public)
        .merge(hooks)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost: a request for another host is refused before anything reads it, and every
        // answer, refusals included, carries the security headers.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check_host,
        ))
        .layer(axum::middleware::from_fn(guard::security_headers))
        .with_state(state)
}

/// What `--metrics-addr` serves: `/metrics` and nothing else, without authentication, as
/// Prometheus exporters do. Only counts and sync names are there, never a secret or a record;
/// bind it where only the monitoring system reaches it. No `Host` check: Prometheus names its
/// targets by address, and the page holds nothing a rebinding attack could use to act.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics::serve_metrics))
        .layer(axum::middleware::from_fn(guard::security_headers))
}

/// Whether serving on `bind` is allowed: loopback always; any other address only once an API
/// token exists, since that is what lets someone sign in.
pub async fn check_bind(store: &StateStore, bind: &SocketAddr) -> Result<(), String> {
    if bind.ip().is_loopback() {
        return Ok(());
    }
    let tokens = store.count_api_tokens().await.map_err(|e| e.to_string())?;
    if tokens == 0 {
        return Err(format!(
            "refusing to serve on {bind}, which other machines can reach, without authentication: \
             create an API token first with `ferry token create NAME`, or bind to 127.0.0.1"
        ));
    }
    Ok(())
}

/// Serves until `shutdown` resolves; background runs are asked to stop and awaited.
pub async fn serve(
    store: StateStore,
    options: ServerOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hosts = AllowedHosts::new(options.bind.ip(), &options.public_hosts)
        .map_err(|message| std::io::Error::new(std::io::ErrorKind::InvalidInput, message))?;
    let state = AppState::new(store, options.secure_cookies)
        .with_allowed_secret_env(options.allowed_secret_env)
        .with_allowed_hosts(hosts)
        .with_max_runs(options.max_runs.unwrap_or(run_registry::DEFAULT_MAX_RUNS));
    let app = router(state.clone());
    metrics::observe_http();
    let metrics_server = options.metrics_listener.map(|listener| {
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, metrics_router()).await {
                tracing::error!(%error, "The metrics listener stopped; /metrics is still served on the API with a token.");
            }
        })
    });
    let scheduler = tokio::spawn(scheduler::run_scheduler(
        state.clone(),
        options.scheduler_tick.unwrap_or(scheduler::DEFAULT_TICK),
    ));
    let claimer = {
        let state = state.clone();
        tokio::spawn(async move { state.runs().claim_forever(state.store()).await })
    };
    let deliveries = tokio::spawn(scheduler::run_deliveries(
        state.clone(),
        scheduler::DELIVERY_TICK,
    ));
    let sequences = tokio::spawn(sequences::drive_forever(state.clone()));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    scheduler.abort();
    claimer.abort();
    deliveries.abort();
    sequences.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    state.runs().stop_all().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_state::WorkspaceOptions;

    #[tokio::test]
    async fn only_loopback_is_served_before_a_token_exists() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = StateStore::initialize(&WorkspaceOptions::in_dir(dir.path()))
            .await
            .expect("a workspace");
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_bind(&store, &loopback).await.is_ok());
        let refusal = check_bind(&store, &everywhere).await.unwrap_err();
        assert!(refusal.contains("ferry token create"), "{refusal}");
        store.create_api_token("ops").await.expect("a token");
        assert!(check_bind(&store, &everywhere).await.is_ok());
    }

    #[test]
    fn the_openapi_document_lists_every_api_route() {
        let document = serde_json::to_value(openapi_document()).expect("JSON");
        let paths = document["paths"].as_object().expect("paths");
        for path in [
            "/api/v1/connections",
            "/api/v1/connections/{name}/test",
            "/api/v1/models/{name}/preview",
            "/api/v1/queries/preview",
            "/api/v1/syncs/{name}/runs",
            "/api/v1/sequences/{name}/runs",
            "/api/v1/sequence-runs/{id}",
            "/api/v1/runs/{id}/records.csv",
        ] {
            assert!(paths.contains_key(path), "{path} is missing");
        }
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}

/// The route tables are read from the source, so a route added without its entry in
/// `UI_ROUTES` or the OpenAPI document fails here, and the auth tests then cover it.
#[cfg(test)]
mod route_tables {
    use std::collections::BTreeSet;

    /// The paths of every `.route("PATH", …)` in a source file, parameters as `x`.
    fn routed_paths(source: &str) -> BTreeSet<String> {
        source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|rest| rest.split('"').next())
            .map(sample_path)
            .collect()
    }

    fn sample_path(path: &str) -> String {
        path.split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_ui_route_is_listed_for_the_auth_test() {
        let routed = routed_paths(include_str!("ui/mod.rs"));
        let public: BTreeSet<String> = [
            "/login",
            "/healthz",
            "/assets/htmx.min.js",
            "/assets/style.css",
        ]
        .map(String::from)
        .into();
        let listed: BTreeSet<String> = crate::UI_ROUTES
            .iter()
            .map(|(_, p)| p.to_string())
            .collect();
        let expected: BTreeSet<String> = routed.difference(&public).cloned().collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn every_api_route_is_in_the_openapi_document() {
        let routed = routed_paths(include_str!("api/mod.rs"));
        let document = serde_json::to_value(crate::openapi_document()).expect("JSON");
        let mut documented: BTreeSet<String> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(|p| sample_path(p))
            .collect();
        documented.insert("/api/openapi.json".to_string());
        assert_eq!(routed, documented);
    }
}
