//! Destinations (Stripe accounts) and sources (warehouses).

use super::layout::{csrf_field, empty_state, error_box, page_header, shell, time, Page, Section};
use crate::api::connections::ConnectionInput;
use crate::auth::Caller;
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ferry_engine::connections::{
    self, kind_spec, ConnectionSettings, KindSpec, SettingSpec, SettingValue, REGISTRY,
};
use ferry_engine::declare;
use ferry_state::{ConnectionKind, ConnectionRecord, SecretRef};
use maud::{html, Markup, PreEscaped};
use std::fmt::Write as _;

fn secret_text(record: &ConnectionRecord) -> String {
    match &record.secret {
        Some(SecretRef::Encrypted(encrypted)) => encrypted.hint().to_string(),
        Some(SecretRef::EnvVar(variable)) => format!("from ${variable}"),
        None => String::new(),
    }
}

/// A connection's details for the tables of destinations and sources.
fn details(record: &ConnectionRecord) -> Markup {
    match ConnectionSettings::of_record(record) {
        Ok(settings) => html! { (settings.details(&secret_text(record)).join(" · ")) },
        Err(error) => html! { span.fail { (error.to_string()) } },
    }
}

pub(crate) fn connection_rows(caller: &Caller, records: &[&ConnectionRecord]) -> Markup {
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

/// A connection form as posted, and as shown again: the kind chosen and, for every kind the
/// page offers, its fields named `KIND.SETTING` (`postgres.url`, `duckdb.path`), so that what
/// was typed for one kind survives switching to another. Only the chosen kind's are read.
#[derive(Default, Debug)]
pub struct ConnectionForm {
    /// Set when editing: the name is then fixed and an empty secret keeps the stored one.
    existing: String,
    name: String,
    kind: String,
    fields: Vec<(String, String)>,
    /// The stored secret's hint, shown when editing.
    secret_hint: String,
}

impl ConnectionForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> ConnectionForm {
        let mut form = ConnectionForm::default();
        for (field, value) in pairs {
            match field.as_str() {
                "existing" => form.existing = value,
                "name" => form.name = value,
                "kind" => form.kind = value,
                // The CSRF token and anything else are not settings.
                _ if field.contains('.') => form.fields.push((field, value)),
                _ => {}
            }
        }
        form
    }

    /// A saved connection's form: its settings as texts, its secret never (a secret typed
    /// once is not sent to the browser again).
    fn of_record(record: &ConnectionRecord) -> Result<ConnectionForm, ferry_engine::EngineError> {
        let settings = ConnectionSettings::of_record(record)?;
        let kind = record.kind.as_str();
        let fields = settings
            .to_config()
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| {
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Array(items) => items
                        .iter()
                        .filter_map(serde_json::Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    other => other.to_string(),
                };
                (format!("{kind}.{key}"), text)
            })
            .collect();
        Ok(ConnectionForm {
            existing: record.name.clone(),
            name: record.name.clone(),
            kind: kind.to_string(),
            fields,
            secret_hint: secret_text(record),
        })
    }

    fn texts(&self, kind: &str, key: &str) -> Vec<String> {
        let field = format!("{kind}.{key}");
        self.fields
            .iter()
            .filter(|(name, _)| *name == field)
            .map(|(_, value)| value.clone())
            .collect()
    }

    fn text(&self, kind: &str, key: &str) -> String {
        self.texts(kind, key).join("\n")
    }

    /// The connection the form declares, as the API takes it.
    fn input(&self, spec: &KindSpec) -> ConnectionInput {
        let kind = spec.kind.as_str();
        let base = std::env::current_dir().unwrap_or_default();
        let mut settings = serde_json::Map::new();
        for setting in spec.settings {
            if let Some(value) =
                connections::setting_from_text(setting, &self.texts(kind, setting.key), &base)
            {
                settings.insert(setting.key.to_string(), value);
            }
        }
        if let Some(secret) = &spec.secret {
            let value = self.text(kind, secret.value_field).trim().to_string();
            settings.insert(secret.value_field.to_string(), value.into());
        }
        ConnectionInput {
            kind: Some(kind.to_string()),
            settings,
            ..ConnectionInput::default()
        }
    }
}

/// The kinds a page offers: Stripe for destinations, the warehouses for sources, webhook,
/// Slack and email for alert channels.
fn kinds_of(section: Section) -> Vec<&'static KindSpec> {
    REGISTRY
        .iter()
        .filter(|spec| section_of(spec.kind) == section)
        .collect()
}

/// The section a connection of `kind` belongs to.
fn section_of(kind: ConnectionKind) -> Section {
    if kind.is_source() {
        Section::Sources
    } else if kind.is_channel() {
        Section::Alerts
    } else if kind.is_trigger() {
        Section::Sequences
    } else {
        Section::Destinations
    }
}

/// A connection section's words and paths: what one is called, where its form posts, the page
/// that lists them, its subtitle and a name to suggest.
struct SectionWords {
    what: &'static str,
    post_to: &'static str,
    list: &'static str,
    subtitle: &'static str,
    example_name: &'static str,
}

fn section_words(section: Section) -> SectionWords {
    match section {
        Section::Sources => SectionWords {
            what: "source",
            post_to: "/sources",
            list: "/sources",
            subtitle: "A warehouse that models read from, read-only.",
            example_name: "warehouse",
        },
        Section::Sequences => SectionWords {
            what: "trigger",
            post_to: "/triggers",
            list: "/sequences",
            subtitle: "An orchestrator starts a sync or a sequence: a dbt Cloud job's webhook, or \
                       a signed request from Airflow, Dagster or a script, at /hooks/NAME.",
            example_name: "dbt-prod",
        },
        Section::Alerts => SectionWords {
            what: "alert channel",
            post_to: "/alerts/channels",
            list: "/alerts",
            subtitle:
                "Where ferry tells people of runs and alerts: a signed webhook, Slack or email.",
            example_name: "ops-slack",
        },
        _ => SectionWords {
            what: "destination",
            post_to: "/destinations",
            list: "/destinations",
            subtitle: "Stripe",
            example_name: "stripe",
        },
    }
}

fn setting_field(form: &ConnectionForm, spec: &KindSpec, setting: &SettingSpec) -> Markup {
    let kind = spec.kind.as_str();
    let id = format!("{kind}-{}", setting.key);
    let name = format!("{kind}.{}", setting.key);
    let value = form.text(kind, setting.key);
    let numeric = matches!(setting.value, SettingValue::Seconds | SettingValue::Count);
    html! {
        div.field {
            label for=(id) { (setting.label) }
            @if setting.value == SettingValue::Paths {
                textarea id=(id) name=(name) rows="3" placeholder=(setting.placeholder) { (value) }
            } @else {
                input id=(id) name=(name) value=(value) placeholder=(setting.placeholder)
                    inputmode=[numeric.then_some("numeric")] autocomplete="off";
            }
            p.help { (setting.help) "." }
        }
    }
}

fn kind_fields(form: &ConnectionForm, spec: &KindSpec, editing: bool) -> Markup {
    let kind = spec.kind.as_str();
    let (required, optional): (Vec<&SettingSpec>, Vec<&SettingSpec>) =
        spec.settings.iter().partition(|setting| setting.required);
    let optional_set = optional
        .iter()
        .any(|setting| !form.text(kind, setting.key).trim().is_empty());
    let keeps_secret = editing && form.kind == kind && !form.secret_hint.is_empty();
    html! {
        div class={"kind-fields kind-" (kind)} {
            @if let Some(secret) = &spec.secret {
                @let id = format!("{kind}-{}", secret.value_field);
                div.field {
                    label for=(id) { (secret.label) }
                    // Never filled back in: a secret typed once is not sent to the browser again.
                    input id=(id) name={(kind) "." (secret.value_field)} type="password" autocomplete="off"
                        placeholder=(if keeps_secret {
                            format!("leave empty to keep the stored {} ({})", secret.what, form.secret_hint)
                        } else {
                            secret.placeholder.to_string()
                        });
                    p.help { (secret.help) "." }
                }
            }
            @for setting in &required { (setting_field(form, spec, setting)) }
            @if !optional.is_empty() {
                details open[optional_set] {
                    summary { "More settings" }
                    @for setting in &optional { (setting_field(form, spec, setting)) }
                }
            }
        }
    }
}

fn connection_form(
    caller: &Caller,
    section: Section,
    form: &ConnectionForm,
    problem: Option<&str>,
) -> Markup {
    let kinds = kinds_of(section);
    let chosen = kinds
        .iter()
        .find(|spec| spec.kind.as_str() == form.kind)
        .unwrap_or(&kinds[0]);
    let SectionWords {
        what,
        post_to,
        list,
        subtitle,
        example_name,
    } = section_words(section);
    let editing = !form.existing.is_empty();
    let title = if editing {
        format!("Edit {what} {}", form.existing)
    } else {
        format!("New {what}")
    };
    // Only the chosen kind's fields show; the choice needs no script.
    let mut css = String::from(".kind-fields { display: none; }\n");
    for spec in &kinds {
        let kind = spec.kind.as_str();
        let _ = writeln!(
            css,
            "form:has(#kind-{kind}:checked) .kind-{kind}, form:has(input[type=hidden][name=kind][value={kind}]) .kind-{kind} {{ display: block; }}"
        );
    }
    shell(
        caller,
        section,
        &title,
        html! {
            (page_header(&title, Some(subtitle), html! {}))
            @if let Some(problem) = problem { (error_box(problem)) }
            style { (PreEscaped(css)) }
            form.card method="post" action=(post_to) {
                (csrf_field(caller))
                input type="hidden" name="existing" value=(form.existing);
                div.field {
                    label for="name" { "Name" }
                    @if editing {
                        input #name name="name" value=(form.existing) readonly;
                    } @else {
                        input #name name="name" value=(form.name) required placeholder=(example_name) pattern=(super::layout::NAME_INPUT_PATTERN) title=(super::layout::NAME_INPUT_TITLE);
                        p.help { "Letters, digits, _ and -. Models and syncs refer to it by this name." }
                    }
                }
                @if kinds.len() > 1 {
                    fieldset.field {
                        legend { "Type" }
                        @for spec in &kinds {
                            @let kind = spec.kind.as_str();
                            label.choice title=(spec.help) {
                                input type="radio" name="kind" id={"kind-" (kind)} value=(kind) checked[spec.kind == chosen.kind];
                                " " (spec.label)
                            }
                        }
                    }
                } @else {
                    input type="hidden" name="kind" value=(chosen.kind.as_str());
                }
                @for spec in &kinds { (kind_fields(form, spec, editing)) }
                div.form-actions {
                    button.primary type="submit" { "Test and save" }
                    a.button href=(list) { "Cancel" }
                }
            }
        },
    )
}

pub async fn new_destination(Extension(caller): Extension<Caller>) -> Markup {
    connection_form(
        &caller,
        Section::Destinations,
        &ConnectionForm::default(),
        None,
    )
}

pub async fn create_destination(
    state: State<AppState>,
    caller: Extension<Caller>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    save_form(state, caller, Section::Destinations, pairs).await
}

pub async fn new_channel(Extension(caller): Extension<Caller>) -> Markup {
    connection_form(&caller, Section::Alerts, &ConnectionForm::default(), None)
}

pub async fn create_channel(
    state: State<AppState>,
    caller: Extension<Caller>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    save_form(state, caller, Section::Alerts, pairs).await
}

pub async fn new_trigger(Extension(caller): Extension<Caller>) -> Markup {
    connection_form(
        &caller,
        Section::Sequences,
        &ConnectionForm::default(),
        None,
    )
}

pub async fn create_trigger(
    state: State<AppState>,
    caller: Extension<Caller>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    save_form(state, caller, Section::Sequences, pairs).await
}

pub async fn new_source(Extension(caller): Extension<Caller>) -> Markup {
    connection_form(&caller, Section::Sources, &ConnectionForm::default(), None)
}

pub async fn create_source(
    state: State<AppState>,
    caller: Extension<Caller>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    save_form(state, caller, Section::Sources, pairs).await
}

/// Tests and saves what a connection form declares; on a problem, the form again with what was
/// typed (but the secret) and the problem.
async fn save_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    section: Section,
    pairs: Vec<(String, String)>,
) -> Response {
    let mut form = ConnectionForm::from_pairs(pairs);
    let kinds = kinds_of(section);
    let result = async {
        let spec = kinds
            .iter()
            .find(|spec| spec.kind.as_str() == form.kind)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "choose a type: {}",
                    kinds
                        .iter()
                        .map(|spec| spec.label)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let input = form.input(spec);
        if form.existing.is_empty() {
            save_new(&state, &form.name, input).await
        } else {
            save_changed(&state, &form.existing, input).await
        }
    }
    .await;
    let list = section_words(section).list;
    match result {
        Ok(()) => Redirect::to(list).into_response(),
        Err(error) => {
            if !form.existing.is_empty() {
                if let Ok(Some(record)) = state.store().get_connection(&form.existing).await {
                    form.secret_hint = secret_text(&record);
                }
            }
            // A secret typed is not sent back to the browser.
            form.fields.retain(|(field, _)| {
                !REGISTRY.iter().any(|spec| {
                    spec.secret.as_ref().is_some_and(|secret| {
                        *field == format!("{}.{}", spec.kind.as_str(), secret.value_field)
                    })
                })
            });
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                connection_form(&caller, section, &form, Some(&error.message)),
            )
                .into_response()
        }
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
/// follow a new API base: see `declare::save_connection`). The form shows every setting of
/// the kind: one left empty goes back to its default.
async fn save_changed(
    state: &AppState,
    name: &str,
    input: ConnectionInput,
) -> Result<(), ApiError> {
    declare::require_connection(state.store(), name).await?;
    let connection = input.into_new_connection(name, true)?;
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
    let section = section_of(record.kind);
    Ok(connection_form(
        &caller,
        section,
        &ConnectionForm::of_record(&record)?,
        None,
    ))
}

pub async fn sources(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    let all = state.store().list_connections().await?;
    let warehouses: Vec<_> = all.iter().filter(|c| kind_spec(c.kind).is_source).collect();
    let labels: Vec<&str> = kinds_of(Section::Sources)
        .iter()
        .map(|spec| spec.label)
        .collect();
    Ok(shell(
        &caller,
        Section::Sources,
        "Sources",
        html! {
            (page_header("Sources", Some("The warehouses models read from."),
                html! { a.button.primary href="/sources/new" { "New source" } }))
            @if warehouses.is_empty() {
                (empty_state("No source yet",
                    &format!("Connect a warehouse: {}. Models run on it read-only.", labels.join(", ")),
                    "/sources/new", "New source"))
            } @else {
                (connection_rows(&caller, &warehouses))
            }
        },
    ))
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
    Ok(Redirect::to(section_words(section_of(record.kind)).list))
}
