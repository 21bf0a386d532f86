//! Destinations (Stripe accounts) and sources (warehouses).

use super::layout::{csrf_field, empty_state, error_box, page_header, shell, time, Page, Section};
use crate::api::connections::ConnectionInput;
use crate::api::connections::KindInput;
use crate::auth::Caller;
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ferry_engine::connections::{kind_spec, ConnectionSettings, WarehouseSettings};
use ferry_engine::declare::{self, TimeoutSetting};
use ferry_state::{ConnectionKind, ConnectionRecord, SecretRef};
use maud::{html, Markup};
use serde::Deserialize;

fn secret_text(record: &ConnectionRecord) -> String {
    match &record.secret {
        Some(SecretRef::Encrypted(encrypted)) => encrypted.hint().to_string(),
        Some(SecretRef::EnvVar(variable)) => format!("from ${variable}"),
        None => String::new(),
    }
}

/// ` · statement timeout 60s · preview timeout none · change detection in schema ferry` for the
/// settings a warehouse connection sets; nothing for those left to their defaults.
fn settings_text(settings: &WarehouseSettings) -> String {
    settings
        .described()
        .iter()
        .map(|part| format!(" · {part}"))
        .collect()
}

/// A connection's details for the tables of destinations and sources.
fn details(record: &ConnectionRecord) -> Markup {
    match ConnectionSettings::of_record(record) {
        Ok(ConnectionSettings::Stripe(stripe)) => html! {
            (ferry_destinations::stripe::config::display_api_base(stripe.api_base()))
            " · key " (secret_text(record))
            " · API version " (ferry_destinations::stripe::STRIPE_VERSION)
        },
        Ok(ConnectionSettings::Duckdb(duckdb)) => html! {
            (duckdb.path.display().to_string()) (settings_text(&duckdb.warehouse))
        },
        Ok(ConnectionSettings::Postgres(postgres)) => html! {
            "URL " (secret_text(record)) (settings_text(&postgres))
        },
        Err(error) => html! { span.fail { (error.to_string()) } },
    }
}

fn connection_rows(caller: &Caller, records: &[&ConnectionRecord]) -> Markup {
    html! {
        table.table {
            thead { tr { th { "Name" } th { "Type" } th { "Details" } th { "Added" } th {} } }
            tbody {
                @for record in records {
                    tr {
                        td { strong { (record.name) } }
                        td { (crate::api::connections::kind_label(record.kind)) }
                        td.mono { (details(record)) }
                        td { (time(record.created_at)) }
                        td.row-actions {
                            a.button.small href={"/connections/" (record.name) "/edit"} { "Edit" }
                            button.small hx-post={"/connections/" (record.name) "/test"}
                                hx-target="next .test-result" hx-swap="innerHTML" { "Test" }
                            form.inline method="post" action={"/connections/" (record.name) "/delete"}
                                onsubmit="return confirm('Remove this connection?')" {
                                (csrf_field(caller))
                                button.small.danger type="submit" { "Remove" }
                            }
                            span.test-result {}
                        }
                    }
                }
            }
        }
    }
}

pub async fn destinations(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    let all = state.store().list_connections().await?;
    let stripe: Vec<_> = all
        .iter()
        .filter(|c| c.kind == ConnectionKind::Stripe)
        .collect();
    Ok(shell(
        &caller,
        Section::Destinations,
        "Destinations",
        html! {
            (page_header("Destinations", Some("The Stripe accounts ferry writes to."),
                html! { a.button.primary href="/destinations/new" { "New destination" } }))
            @if stripe.is_empty() {
                (empty_state("No destination yet",
                    "Connect your Stripe account with a secret or restricted key. ferry tests it at once by reading your balance.",
                    "/destinations/new", "New destination"))
            } @else {
                (connection_rows(&caller, &stripe))
            }
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct DestinationForm {
    /// Set when editing: the name is then fixed and an empty key keeps the stored one.
    #[serde(default)]
    existing: String,
    /// The stored key's hint, shown when editing.
    #[serde(skip)]
    key_hint: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    api_base: String,
    #[serde(default)]
    max_rps: String,
}

fn destination_form(caller: &Caller, form: &DestinationForm, problem: Option<&str>) -> Markup {
    let editing = !form.existing.is_empty();
    let title = if editing {
        format!("Edit destination {}", form.existing)
    } else {
        "New destination".to_string()
    };
    shell(
        caller,
        Section::Destinations,
        &title,
        html! {
            (page_header(&title, Some("Stripe"), html! {}))
            @if let Some(problem) = problem { (error_box(problem)) }
            form.card method="post" action="/destinations" {
                (csrf_field(caller))
                input type="hidden" name="existing" value=(form.existing);
                div.field {
                    label for="name" { "Name" }
                    @if editing {
                        input #name name="name" value=(form.existing) readonly;
                    } @else {
                        input #name name="name" value=(form.name) required placeholder="stripe" pattern=(super::layout::NAME_INPUT_PATTERN) title=(super::layout::NAME_INPUT_TITLE);
                        p.help { "Letters, digits, _ and -. Syncs refer to the destination by this name." }
                    }
                }
                div.field {
                    label for="api_key" { "API key" }
                    // Never filled back in: a key typed once is not sent to the browser again.
                    @if editing {
                        input #api_key name="api_key" type="password" autocomplete="off"
                            placeholder={"leave empty to keep the stored key (" (form.key_hint) ")"};
                    } @else {
                        input #api_key name="api_key" type="password" required autocomplete="off" placeholder="sk_test_… or rk_test_…";
                    }
                    p.help { "A secret key, or a restricted key with write access to Customers and Products and read access to Balance. Stored encrypted." }
                }
                details open[!form.api_base.is_empty() || !form.max_rps.is_empty()] {
                    summary { "Advanced" }
                    div.field {
                        label for="api_base" { "API base URL" }
                        input #api_base name="api_base" value=(form.api_base) placeholder="https://api.stripe.com";
                        p.help { "Another Stripe-compatible server, such as " code { "ferry emulate stripe" } "." }
                    }
                    div.field {
                        label for="max_rps" { "Requests per second" }
                        input #max_rps name="max_rps" value=(form.max_rps) inputmode="numeric" placeholder="25 for test keys, 100 for live keys";
                    }
                }
                div.form-actions {
                    button.primary type="submit" { "Test and save" }
                    a.button href="/destinations" { "Cancel" }
                }
            }
        },
    )
}

pub async fn new_destination(Extension(caller): Extension<Caller>) -> Markup {
    destination_form(&caller, &DestinationForm::default(), None)
}

fn parse_rps(text: &str) -> Result<Option<u32>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::invalid(format!(
            "requests per second must be a whole number, got '{text}'"
        ))
    })
}

pub async fn create_destination(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<DestinationForm>,
) -> Response {
    let result = async {
        let input = ConnectionInput {
            kind: Some(KindInput::Stripe),
            api_key: Some(form.api_key.trim().to_string()),
            api_base: Some(form.api_base.trim().to_string()),
            max_rps: parse_rps(&form.max_rps)?,
            ..ConnectionInput::default()
        };
        if form.existing.is_empty() {
            save_new(&state, &form.name, input).await
        } else {
            save_changed(&state, &form.existing, input).await
        }
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/destinations").into_response(),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            destination_form(&caller, &form, Some(&error.message)),
        )
            .into_response(),
    }
}

/// Tests and saves a connection a form declares; a taken name is refused, not replaced.
async fn save_new(state: &AppState, name: &str, input: ConnectionInput) -> Result<(), ApiError> {
    let name = name.trim();
    if state.store().get_connection(name).await?.is_some() {
        return Err(ApiError::invalid(format!(
            "a connection named '{name}' already exists; choose another name"
        )));
    }
    let connection = input.into_new_connection(name, false)?;
    declare::save_connection(state.store(), &connection, true).await?;
    Ok(())
}

/// Tests and saves a changed connection; an empty secret keeps the stored one (and may then not
/// follow a new API base: see `declare::save_connection`).
async fn save_changed(
    state: &AppState,
    name: &str,
    input: ConnectionInput,
) -> Result<(), ApiError> {
    let saved = declare::require_connection(state.store(), name).await?;
    let mut connection = input.into_new_connection(name, true)?;
    // Settings the form does not show (set through the CLI, the API or a file) are kept: the
    // Stripe form has no field for the per-endpoint limit. The others the forms show: left
    // empty, they go back to their defaults.
    if let (Ok(ConnectionSettings::Stripe(saved)), Ok(ConnectionSettings::Stripe(mut new))) = (
        ConnectionSettings::of_record(&saved),
        ConnectionSettings::of_new(&connection),
    ) {
        new.max_rps_per_endpoint = new.max_rps_per_endpoint.or(saved.max_rps_per_endpoint);
        connection.config = ConnectionSettings::Stripe(new).to_config();
    }
    declare::save_connection(state.store(), &connection, true).await?;
    Ok(())
}

/// The edit page of a saved connection: a destination or a source, by its kind.
pub async fn edit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Markup, Page> {
    let record = declare::require_connection(state.store(), &name).await?;
    let text = |value: Option<u32>| value.map(|n| n.to_string()).unwrap_or_default();
    let warehouse_form = |path: String, warehouse: &WarehouseSettings| SourceForm {
        existing: record.name.clone(),
        name: record.name.clone(),
        kind: record.kind.as_str().to_string(),
        path,
        url: String::new(),
        statement_timeout: text(warehouse.statement_timeout_seconds),
        preview_timeout: text(warehouse.preview_timeout_seconds),
        change_detection_schema: warehouse
            .change_detection_schema
            .clone()
            .unwrap_or_default(),
    };
    Ok(match ConnectionSettings::of_record(&record)? {
        ConnectionSettings::Stripe(stripe) => destination_form(
            &caller,
            &DestinationForm {
                existing: record.name.clone(),
                key_hint: secret_text(&record),
                name: record.name.clone(),
                api_key: String::new(),
                api_base: stripe.api_base.clone().unwrap_or_default(),
                max_rps: text(stripe.max_rps),
            },
            None,
        ),
        ConnectionSettings::Duckdb(duckdb) => source_form(
            &caller,
            &warehouse_form(duckdb.path.display().to_string(), &duckdb.warehouse),
            None,
        ),
        ConnectionSettings::Postgres(postgres) => {
            source_form(&caller, &warehouse_form(String::new(), &postgres), None)
        }
    })
}

pub async fn sources(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    let all = state.store().list_connections().await?;
    let warehouses: Vec<_> = all.iter().filter(|c| kind_spec(c.kind).is_source).collect();
    Ok(shell(
        &caller,
        Section::Sources,
        "Sources",
        html! {
            (page_header("Sources", Some("The warehouses models read from."),
                html! { a.button.primary href="/sources/new" { "New source" } }))
            @if warehouses.is_empty() {
                (empty_state("No source yet",
                    "Connect a DuckDB file or a PostgreSQL database. Models run on it read-only.",
                    "/sources/new", "New source"))
            } @else {
                (connection_rows(&caller, &warehouses))
            }
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct SourceForm {
    /// Set when editing: the name is then fixed and an empty URL keeps the stored one.
    #[serde(default)]
    existing: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    url: String,
    /// `statement_timeout_seconds`; empty for the default.
    #[serde(default)]
    statement_timeout: String,
    /// `preview_timeout_seconds`; empty for the default.
    #[serde(default)]
    preview_timeout: String,
    /// `change_detection_schema`; empty for the default (ferry only reads).
    #[serde(default)]
    change_detection_schema: String,
}

fn source_form(caller: &Caller, form: &SourceForm, problem: Option<&str>) -> Markup {
    let postgres = form.kind == "postgres";
    let editing = !form.existing.is_empty();
    let title = if editing {
        format!("Edit source {}", form.existing)
    } else {
        "New source".to_string()
    };
    shell(
        caller,
        Section::Sources,
        &title,
        html! {
            (page_header(&title, Some("A warehouse that models read from, read-only."), html! {}))
            @if let Some(problem) = problem { (error_box(problem)) }
            form.card method="post" action="/sources" {
                (csrf_field(caller))
                input type="hidden" name="existing" value=(form.existing);
                div.field {
                    label for="name" { "Name" }
                    @if editing {
                        input #name name="name" value=(form.existing) readonly;
                    } @else {
                        input #name name="name" value=(form.name) required placeholder="warehouse" pattern=(super::layout::NAME_INPUT_PATTERN) title=(super::layout::NAME_INPUT_TITLE);
                    }
                }
                fieldset.field {
                    legend { "Type" }
                    label.choice { input type="radio" name="kind" value="duckdb" checked[!postgres]; " DuckDB file" }
                    label.choice { input type="radio" name="kind" value="postgres" checked[postgres]; " PostgreSQL" }
                }
                div.field {
                    label for="path" { "DuckDB file (for DuckDB)" }
                    input #path name="path" value=(form.path) placeholder="/data/warehouse.duckdb";
                    p.help { "A path on the server's machine. ferry opens it read-only." }
                }
                div.field {
                    label for="url" { "Connection URL (for PostgreSQL)" }
                    input #url name="url" type="password" autocomplete="off"
                        placeholder=(if editing { "leave empty to keep the stored URL" } else { "postgres://user:password@host:5432/db" });
                    p.help { "Stored encrypted. Models run in read-only transactions with a statement timeout." }
                }
                details open[!form.statement_timeout.is_empty() || !form.preview_timeout.is_empty()] {
                    summary { "Timeouts" }
                    div.field {
                        label for="statement_timeout" { "Statement timeout (seconds)" }
                        input #statement_timeout name="statement_timeout" value=(form.statement_timeout) inputmode="numeric" placeholder="300";
                        p.help { "How long a run, a sync preview or a model's column check may keep the warehouse working on the model before it is cancelled. Empty for the default, 5 minutes; 0 for no limit; at most 86400 (24 hours)." }
                    }
                    div.field {
                        label for="preview_timeout" { "Preview timeout (seconds)" }
                        input #preview_timeout name="preview_timeout" value=(form.preview_timeout) inputmode="numeric" placeholder="30";
                        p.help { "How long a model preview may run while you wait for it. Empty for the default, 30 seconds; 0 for no limit; at most 86400." }
                    }
                }
                details open[!form.change_detection_schema.is_empty()] {
                    summary { "Change detection" }
                    div.field {
                        label for="change_detection_schema" { "Change detection schema" }
                        input #change_detection_schema name="change_detection_schema" value=(form.change_detection_schema) placeholder="ferry" autocomplete="off";
                        p.help { "Optional. ferry keeps its change detection tables in this schema of the warehouse, so only new and changed rows travel. Needs the right to create tables there (PostgreSQL: " code { "GRANT USAGE, CREATE ON SCHEMA ferry TO your_user" } "). Empty: ferry only reads." }
                    }
                }
                div.form-actions {
                    button.primary type="submit" { "Test and save" }
                    a.button href="/sources" { "Cancel" }
                }
            }
        },
    )
}

pub async fn new_source(Extension(caller): Extension<Caller>) -> Markup {
    source_form(&caller, &SourceForm::default(), None)
}

pub async fn create_source(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<SourceForm>,
) -> Response {
    let result = async {
        let timeout = |setting, text: &str| {
            declare::parse_timeout_seconds(setting, text)
                .map(|seconds| seconds.map(serde_json::Value::from))
                .map_err(ApiError::from)
        };
        let timeouts = ConnectionInput {
            statement_timeout_seconds: timeout(TimeoutSetting::Statement, &form.statement_timeout)?,
            preview_timeout_seconds: timeout(TimeoutSetting::Preview, &form.preview_timeout)?,
            change_detection_schema: declare::parse_change_detection_schema(
                &form.change_detection_schema,
            )?,
            ..ConnectionInput::default()
        };
        let input = match form.kind.as_str() {
            "postgres" => ConnectionInput {
                kind: Some(KindInput::Postgres),
                url: Some(form.url.trim().to_string()),
                ..timeouts
            },
            _ => ConnectionInput {
                kind: Some(KindInput::Duckdb),
                path: Some(form.path.trim().to_string()),
                ..timeouts
            },
        };
        if form.existing.is_empty() {
            save_new(&state, &form.name, input).await
        } else {
            save_changed(&state, &form.existing, input).await
        }
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/sources").into_response(),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            source_form(&caller, &form, Some(&error.message)),
        )
            .into_response(),
    }
}

/// htmx: the result of testing a saved connection, swapped in next to its button.
pub async fn test(State(state): State<AppState>, Path(name): Path<String>) -> Markup {
    match declare::test_saved_connection(state.store(), &name).await {
        Ok(()) => html! { span.ok { "✓ works" } },
        Err(error) => html! { span.fail { "✗ " (ApiError::from(error).message) } },
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, Page> {
    let record = declare::require_connection(state.store(), &name).await?;
    state.store().remove_connection(&name).await?;
    Ok(Redirect::to(if record.kind == ConnectionKind::Stripe {
        "/destinations"
    } else {
        "/sources"
    }))
}
