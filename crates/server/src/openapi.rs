//! The OpenAPI document, generated from the handlers' annotations and the types they use, so it
//! cannot drift from the code. Served at `/api/openapi.json`.

use crate::api::{connections, models, runs, syncs};
use crate::AppState;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry",
        description = "Reverse ETL into Stripe: connections, models, syncs and their runs. Every route takes an API token as `Authorization: Bearer ferry_…` (create one with `ferry token create NAME`)."
    ),
    paths(
        connections::list, connections::show, connections::create, connections::replace,
        connections::remove, connections::test,
        models::list, models::show, models::create, models::replace, models::remove,
        models::preview, models::preview_query,
        syncs::list, syncs::show, syncs::create, syncs::replace, syncs::remove,
        syncs::preview, syncs::start_run,
        runs::list, runs::show, runs::cancel, runs::records, runs::records_csv,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "connections", description = "Stripe accounts and warehouses"),
        (name = "models", description = "SQL queries that select the rows to sync"),
        (name = "syncs", description = "Model → Stripe, previews and runs"),
        (name = "runs", description = "Run status and per-record outcomes"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub async fn serve_document(_: axum::extract::State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}
