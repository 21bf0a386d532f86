//! Models: a SQL editor whose "Run" shows the first rows, and the list.

use super::layout::{
    clip, csrf_field, empty_state, error_box, page_header, shell, time, Page, Section,
};
use crate::api::models::{rows_preview, RowsPreview};
use crate::auth::Caller;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ferry_engine::declare;
use ferry_state::ConnectionRecord;
use maud::{html, Markup};
use serde::Deserialize;

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    let models = state.store().list_models().await?;
    Ok(shell(
        &caller,
        Section::Models,
        "Models",
        html! {
            (page_header("Models", Some("SQL queries that select the rows to sync."),
                html! { a.button.primary href="/models/new" { "New model" } }))
            @if models.is_empty() {
                (empty_state("No model yet",
                    "A model is a SQL query on one of your sources, such as the customers to send to Stripe with their plan and signup channel.",
                    "/models/new", "New model"))
            } @else {
                table.table {
                    thead { tr { th { "Name" } th { "Source" } th { "SQL" } th { "Updated" } } }
                    tbody {
                        @for model in &models {
                            tr {
                                td { a href={"/models/" (model.name)} { strong { (model.name) } } }
                                td { (model.connection) }
                                td.mono { (clip(&model.sql.split_whitespace().collect::<Vec<_>>().join(" "), 80)) }
                                td { (time(model.updated_at)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct ModelForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    connection: String,
    #[serde(default)]
    sql: String,
    /// Set when editing: the name is then fixed.
    #[serde(default)]
    existing: String,
}

fn editor(
    caller: &Caller,
    sources: &[ConnectionRecord],
    form: &ModelForm,
    problem: Option<&str>,
) -> Markup {
    let editing = !form.existing.is_empty();
    let title = if editing {
        format!("Model {}", form.existing)
    } else {
        "New model".to_string()
    };
    shell(
        caller,
        Section::Models,
        &title,
        html! {
            (page_header(&title, Some("Write a query, run it to check the rows, then save."), html! {
                @if editing {
                    form.inline method="post" action={"/models/" (form.existing) "/delete"}
                        onsubmit="return confirm('Remove this model?')" {
                        (csrf_field(caller))
                        button.danger type="submit" { "Remove" }
                    }
                }
            }))
            @if sources.is_empty() {
                (empty_state("Connect a source first", "A model runs on a warehouse: connect a DuckDB file or a PostgreSQL database.", "/sources/new", "New source"))
            } @else {
                @if let Some(problem) = problem { (error_box(problem)) }
                form.card #model-form method="post" action="/models" {
                    (csrf_field(caller))
                    input type="hidden" name="existing" value=(form.existing);
                    div.field-row {
                        div.field {
                            label for="name" { "Name" }
                            @if editing {
                                input #name name="name" value=(form.existing) readonly;
                            } @else {
                                input #name name="name" value=(form.name) required placeholder="customers" pattern=(super::layout::NAME_INPUT_PATTERN) title=(super::layout::NAME_INPUT_TITLE);
                            }
                        }
                        div.field {
                            label for="connection" { "Source" }
                            select #connection name="connection" {
                                @for source in sources {
                                    option value=(source.name) selected[source.name == form.connection] {
                                        (source.name) " (" (crate::api::connections::kind_label(source.kind)) ")"
                                    }
                                }
                            }
                        }
                    }
                    div.field {
                        label for="sql" { "SQL" }
                        textarea #sql.code name="sql" rows="10" spellcheck="false" required
                            placeholder="select email, name, plan from customers" { (form.sql) }
                        p.help { "One read-only query: SELECT or WITH … SELECT. It runs in a read-only transaction." }
                    }
                    div.form-actions {
                        button type="button" hx-post="/models/run" hx-include="#model-form"
                            hx-target="#rows" hx-indicator="#running" { "Run" }
                        button.primary type="submit" { "Save model" }
                        span #running.htmx-indicator { "Running…" }
                    }
                }
                section #rows {}
            }
        },
    )
}

async fn warehouse_connections(state: &AppState) -> Result<Vec<ConnectionRecord>, Page> {
    Ok(state
        .store()
        .list_connections()
        .await?
        .into_iter()
        .filter(|c| c.kind.is_source())
        .collect())
}

pub async fn new(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    let sources = warehouse_connections(&state).await?;
    Ok(editor(&caller, &sources, &ModelForm::default(), None))
}

pub async fn edit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Markup, Page> {
    let model = declare::require_model(state.store(), &name).await?;
    let sources = warehouse_connections(&state).await?;
    let form = ModelForm {
        name: model.name.clone(),
        connection: model.connection,
        sql: model.sql,
        existing: model.name,
    };
    Ok(editor(&caller, &sources, &form, None))
}

pub async fn save(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<ModelForm>,
) -> Result<Response, Page> {
    let name = if form.existing.is_empty() {
        form.name.trim()
    } else {
        form.existing.as_str()
    }
    .to_string();
    let problem = if form.existing.is_empty() && state.store().get_model(&name).await?.is_some() {
        Some(format!(
            "a model named '{name}' already exists; choose another name"
        ))
    } else {
        declare::save_model(state.store(), &name, &form.connection, &form.sql)
            .await
            .err()
            .map(|e| crate::ApiError::from(e).message)
    };
    match problem {
        None => Ok(Redirect::to("/models").into_response()),
        Some(problem) => {
            let sources = warehouse_connections(&state).await?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                editor(&caller, &sources, &form, Some(&problem)),
            )
                .into_response())
        }
    }
}

pub fn rows_table(preview: &RowsPreview) -> Markup {
    html! {
        div.table-scroll {
            table.table.data {
                thead { tr { @for column in &preview.columns { th { (column.name) br; span.type { (column.type_name) } } } } }
                tbody {
                    @for row in &preview.rows {
                        tr {
                            @for cell in row {
                                @match cell {
                                    serde_json::Value::Null => td.null { "NULL" },
                                    serde_json::Value::String(text) => td { (clip(text, 80)) },
                                    other => td { (clip(&other.to_string(), 80)) },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// htmx: the editor's "Run": the first rows of the query as it is typed, not yet saved.
pub async fn run_query(State(state): State<AppState>, Form(form): Form<ModelForm>) -> Markup {
    match rows_preview(&state, &form.connection, &form.sql, Some(20)).await {
        Ok(preview) => html! {
            h2 { "First rows" }
            @if preview.rows.is_empty() {
                p.muted { "The query returned no rows." }
            } @else {
                p.muted { (preview.rows.len()) " rows shown (at most 20)." }
                (rows_table(&preview))
            }
        },
        Err(error) => error_box(&error.message),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, Page> {
    if !state.store().remove_model(&name).await? {
        return Err(Page::not_found(format!("model '{name}' does not exist")));
    }
    Ok(Redirect::to("/models"))
}
