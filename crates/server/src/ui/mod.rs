//! The web UI: server-rendered HTML (maud) with htmx for the parts that update in place. It
//! follows the flow a Census user knows: Destinations → Sources → Models → Syncs (with the
//! Mapper) → Preview → Run → Run history. Handlers call the same engine functions as the API.

mod alerts;
mod connections;
mod health;
mod layout;
mod login;
mod models;
mod runs;
mod sequences;
mod syncs;

use crate::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

pub use layout::Page;

/// Pages and forms behind the session; every path here is listed in [`UI_ROUTES`] for the
/// authentication test.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route(
            "/destinations",
            get(connections::destinations).post(connections::create_destination),
        )
        .route("/destinations/new", get(connections::new_destination))
        .route(
            "/sources",
            get(connections::sources).post(connections::create_source),
        )
        .route("/sources/new", get(connections::new_source))
        .route("/alerts", get(alerts::page))
        .route("/alerts/channels", post(connections::create_channel))
        .route("/alerts/defaults", post(alerts::save_defaults))
        .route("/alerts/channels/new", get(connections::new_channel))
        .route("/connections/{name}/edit", get(connections::edit))
        .route("/connections/{name}/test", post(connections::test))
        .route("/connections/{name}/delete", post(connections::delete))
        .route("/models", get(models::list).post(models::save))
        .route("/models/new", get(models::new))
        .route("/models/run", post(models::run_query))
        .route("/models/{name}", get(models::edit))
        .route("/models/{name}/delete", post(models::delete))
        .route("/syncs", get(syncs::list).post(syncs::save))
        .route("/syncs/new", get(syncs::new))
        .route("/syncs/form", post(syncs::refresh_form))
        .route("/syncs/check", post(syncs::check_form))
        .route("/syncs/{name}", get(syncs::show))
        .route("/syncs/{name}/edit", get(syncs::edit))
        .route("/syncs/{name}/preview", get(syncs::preview_page))
        .route("/syncs/{name}/preview/result", get(syncs::preview_result))
        .route("/syncs/{name}/run", post(syncs::run))
        .route("/syncs/{name}/pause", post(syncs::pause))
        .route("/syncs/{name}/resume", post(syncs::resume))
        .route("/syncs/{name}/delete", post(syncs::delete))
        .route("/sequences", get(sequences::list).post(sequences::save))
        .route("/sequences/new", get(sequences::new))
        .route("/triggers", post(connections::create_trigger))
        .route("/triggers/new", get(connections::new_trigger))
        .route("/sequences/{name}", get(sequences::show))
        .route(
            "/sequences/{name}/edit",
            get(sequences::edit).post(sequences::save_edit),
        )
        .route("/sequences/{name}/run", post(sequences::run))
        .route("/sequences/{name}/delete", post(sequences::delete))
        .route("/runs", get(runs::history))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/status", get(runs::status))
        .route("/runs/{id}/records/live", get(runs::live_records))
        .route("/runs/{id}/records/{row}", get(runs::record))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/records.csv", get(runs::csv))
        .route("/logout", post(login::logout))
}

/// Every UI route as (method, path with sample parameters), for the test that proves none
/// answers without a session.
pub const UI_ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/destinations"),
    ("POST", "/destinations"),
    ("GET", "/destinations/new"),
    ("GET", "/sources"),
    ("POST", "/sources"),
    ("GET", "/sources/new"),
    ("GET", "/alerts"),
    ("POST", "/alerts/channels"),
    ("POST", "/alerts/defaults"),
    ("GET", "/alerts/channels/new"),
    ("GET", "/connections/x/edit"),
    ("POST", "/connections/x/test"),
    ("POST", "/connections/x/delete"),
    ("GET", "/models"),
    ("POST", "/models"),
    ("GET", "/models/new"),
    ("POST", "/models/run"),
    ("GET", "/models/x"),
    ("POST", "/models/x/delete"),
    ("GET", "/syncs"),
    ("POST", "/syncs"),
    ("GET", "/syncs/new"),
    ("POST", "/syncs/form"),
    ("POST", "/syncs/check"),
    ("GET", "/syncs/x"),
    ("GET", "/syncs/x/edit"),
    ("GET", "/syncs/x/preview"),
    ("GET", "/syncs/x/preview/result"),
    ("POST", "/syncs/x/run"),
    ("POST", "/syncs/x/pause"),
    ("POST", "/syncs/x/resume"),
    ("POST", "/syncs/x/delete"),
    ("GET", "/sequences"),
    ("POST", "/sequences"),
    ("GET", "/sequences/new"),
    ("POST", "/triggers"),
    ("GET", "/triggers/new"),
    ("GET", "/sequences/x"),
    ("GET", "/sequences/x/edit"),
    ("POST", "/sequences/x/edit"),
    ("POST", "/sequences/x/run"),
    ("POST", "/sequences/x/delete"),
    ("GET", "/runs"),
    ("GET", "/runs/x"),
    ("GET", "/runs/x/status"),
    ("GET", "/runs/x/records/live"),
    ("GET", "/runs/x/records/x"),
    ("POST", "/runs/x/cancel"),
    ("GET", "/runs/x/records.csv"),
    ("POST", "/logout"),
];

/// The sign-in page, the health check and the static assets: the only routes without auth.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::page).post(login::submit))
        .route("/healthz", get(|| async { "ok" }))
        .route("/assets/htmx.min.js", get(htmx))
        .route("/assets/style.css", get(style))
}

async fn htmx() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../assets/htmx.min.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/style.css"),
    )
}

async fn home(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
) -> Result<axum::response::Response, Page> {
    let store = state.store();
    let connections = store.list_connections().await.map_err(Page::from_state)?;
    let has_destination = connections
        .iter()
        .any(|c| c.kind == ferry_state::ConnectionKind::Stripe);
    let has_source = connections.iter().any(|c| c.kind.is_source());
    let has_model = !store
        .list_models()
        .await
        .map_err(Page::from_state)?
        .is_empty();
    let has_sync = !store
        .list_syncs()
        .await
        .map_err(Page::from_state)?
        .is_empty();
    if has_destination && has_source && has_model && has_sync {
        return Ok(health::page(&state, &caller).await?.into_response());
    }
    Ok(layout::home(&caller, has_destination, has_source, has_model, has_sync).into_response())
}
