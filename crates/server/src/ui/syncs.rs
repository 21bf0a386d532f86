//! Syncs: the four-section form with the Mapper, the sync page, the preview and "Run".

use super::layout::{
    csrf_field, empty_state, error_box, page_header, shell, status_badge, time, Page, Section,
};
use super::runs::runs_table;
use crate::auth::Caller;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use ferry_core::{
    Behavior, FieldMapping, KeyMapping, MappingSource, NullPolicy, ObjectKind, SyncSpec,
};
use ferry_destinations::stripe::fields::{reference_fields, standard_paths};
use ferry_destinations::stripe::objects::object_kind_named;
use ferry_destinations::stripe::{stripe_object, ObjectSchema, StripeObject};
use ferry_engine::{declare, Preview};
use ferry_state::{ConnectionKind, SyncRecord};
use maud::{html, Markup};

/// The sync form as submitted. The Mapper's rows arrive as repeated fields, so the body is
/// parsed by hand rather than with `Form`, which cannot take repeated keys.
#[derive(Debug, Default, Clone)]
pub struct SyncForm {
    name: String,
    /// Set when editing: the name is then fixed.
    existing: String,
    model: String,
    destination: String,
    /// An object of the registry (`customer`, `product`, `price`); empty: `customer`.
    object: String,
    behavior: String,
    key_column: String,
    /// One of the object's key fields (`email`, a product's `id`) or `metadata`.
    key_field: String,
    key_metadata: String,
    nulls: String,
    /// Empty: manual runs only.
    schedule: String,
    /// Mirror's limit, in percent; empty: the default.
    max_retire_percent: String,
    delete_customers: bool,
    cancel_subscriptions_now: bool,
    void_open_invoices: bool,
    /// Invoices: the column telling an invoice's lines apart, and `never` or `when-created`.
    line_key: String,
    finalize: String,
    reissue_finalized: bool,
    rows: Vec<MapperRow>,
}

#[derive(Debug, Default, Clone)]
struct MapperRow {
    column: String,
    /// A standard field path, or `metadata` for a custom metadata key.
    field: String,
    metadata: String,
}

const METADATA: &str = "metadata";
/// The Mapper's choice "each line's metadata (custom key)", with the key in the box beside.
const LINE_METADATA: &str = "lines.metadata";

/// A choice field checked against its valid values; `None` (with a problem noted) when the
/// value is not one of them. An absent or empty field is `default`, or a problem without one.
fn choice<T: Copy>(
    field: &str,
    value: &str,
    valid: &[(&str, T)],
    default: Option<T>,
    problems: &mut Vec<String>,
) -> Option<T> {
    if let Some((_, chosen)) = valid.iter().find(|(text, _)| *text == value) {
        return Some(*chosen);
    }
    if value.is_empty() && default.is_some() {
        return default;
    }
    let names: Vec<&str> = valid.iter().map(|(text, _)| *text).collect();
    problems.push(if value.is_empty() {
        format!("{field}: choose one of {}", names.join(", "))
    } else {
        format!(
            "{field}: {value:?} is not a valid value; use one of {}",
            names.join(", ")
        )
    });
    None
}

impl SyncForm {
    /// The chosen object; an unknown one reads as the default here and is refused by
    /// [`SyncForm::to_spec`].
    fn object(&self) -> &'static dyn StripeObject {
        stripe_object(ObjectKind::parse(&self.object).unwrap_or(ObjectKind::Customer))
    }

    /// A key field of another object (the object was just changed), or none yet, becomes
    /// this object's first key field.
    fn settle_key_field(&mut self) {
        let schema = self.object().schema();
        if self.key_field != METADATA && schema.key_field(&self.key_field).is_none() {
            // An object without a key of its own (a subscription) is matched by metadata.
            self.key_field = schema
                .key_fields
                .first()
                .map_or(METADATA, |key| key.path)
                .into();
        }
    }

    /// The form from a request body; a body that is not a UTF-8 form is refused (400).
    fn parse(body: &[u8]) -> Result<SyncForm, Page> {
        let fields =
            crate::form::parse_form(body).map_err(|problem| Page::bad_request(problem.0))?;
        let mut form = SyncForm::default();
        let (mut columns, mut fields_of_rows, mut metadata) = (Vec::new(), Vec::new(), Vec::new());
        let mut add_row = false;
        let mut remove_row = None;
        for (name, value) in fields {
            match name.as_str() {
                "name" => form.name = value.trim().to_string(),
                "existing" => form.existing = value,
                "model" => form.model = value,
                "destination" => form.destination = value,
                "object" => form.object = value,
                "behavior" => form.behavior = value,
                "key_column" => form.key_column = value,
                "key_field" => form.key_field = value,
                "key_metadata" => form.key_metadata = value.trim().to_string(),
                "nulls" => form.nulls = value,
                "schedule" => form.schedule = value.trim().to_string(),
                "max_retire_percent" => form.max_retire_percent = value.trim().to_string(),
                "delete_customers" => form.delete_customers = value == "1",
                "cancel_subscriptions_now" => form.cancel_subscriptions_now = value == "1",
                "void_open_invoices" => form.void_open_invoices = value == "1",
                "line_key" => form.line_key = value,
                "finalize" => form.finalize = value,
                "reissue_finalized" => form.reissue_finalized = value == "1",
                "map_column" => columns.push(value),
                "map_field" => fields_of_rows.push(value),
                "map_metadata" => metadata.push(value.trim().to_string()),
                "add_row" => add_row = true,
                "remove_row" => remove_row = value.parse::<usize>().ok(),
                _ => {}
            }
        }
        form.rows = columns
            .into_iter()
            .enumerate()
            .map(|(i, column)| MapperRow {
                column,
                field: fields_of_rows.get(i).cloned().unwrap_or_default(),
                metadata: metadata.get(i).cloned().unwrap_or_default(),
            })
            .collect();
        if let Some(i) = remove_row {
            if i < form.rows.len() {
                form.rows.remove(i);
            }
        }
        if add_row {
            form.rows.push(MapperRow::default());
        }
        Ok(form)
    }

    fn from_record(record: &SyncRecord) -> SyncForm {
        let spec = &record.spec;
        let (key_field, key_metadata) = match spec.key.field.strip_prefix("metadata.") {
            Some(key) => (METADATA.to_string(), key.to_string()),
            None => (spec.key.field.clone(), String::new()),
        };
        SyncForm {
            name: record.name.clone(),
            existing: record.name.clone(),
            model: spec.model.clone(),
            destination: spec.destination.clone(),
            object: spec.object.as_str().to_string(),
            behavior: spec.behavior.as_str().to_string(),
            key_column: spec.key.column.clone(),
            key_field,
            key_metadata,
            nulls: match spec.nulls {
                NullPolicy::Skip => "skip".into(),
                NullPolicy::Clear => "clear".into(),
            },
            schedule: spec
                .schedule
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            max_retire_percent: spec.mirror.max_retire_percent.to_string(),
            delete_customers: spec.mirror.delete_customers,
            cancel_subscriptions_now: spec.mirror.cancel_subscriptions_now,
            void_open_invoices: spec.mirror.void_open_invoices,
            line_key: spec
                .invoice
                .as_ref()
                .map(|invoice| invoice.line_key.clone())
                .unwrap_or_default(),
            finalize: spec
                .invoice
                .as_ref()
                .map(|invoice| invoice.finalize.as_str().to_string())
                .unwrap_or_default(),
            reissue_finalized: spec
                .invoice
                .as_ref()
                .is_some_and(|invoice| invoice.reissue_finalized),
            rows: spec
                .mappings
                .iter()
                .map(|m| match m.field.strip_prefix("metadata.") {
                    Some(key) => MapperRow {
                        column: m.column.clone(),
                        field: METADATA.to_string(),
                        metadata: key.to_string(),
                    },
                    None if m.field.starts_with("lines.metadata.") => MapperRow {
                        column: m.column.clone(),
                        field: LINE_METADATA.to_string(),
                        metadata: m.field["lines.metadata.".len()..].to_string(),
                    },
                    None => match m
                        .field
                        .strip_suffix(')')
                        .and_then(|f| f.split_once("(metadata."))
                    {
                        Some((reference, key)) => MapperRow {
                            column: m.column.clone(),
                            field: format!("{reference}({METADATA})"),
                            metadata: key.to_string(),
                        },
                        None => MapperRow {
                            column: m.column.clone(),
                            field: m.field.clone(),
                            metadata: String::new(),
                        },
                    },
                })
                .collect(),
        }
    }

    fn to_spec(&self) -> Result<SyncSpec, String> {
        let mut problems = Vec::new();
        if self.model.is_empty() {
            problems.push("choose a model".to_string());
        }
        if self.destination.is_empty() {
            problems.push("choose a Stripe destination".to_string());
        }
        if self.key_column.is_empty() {
            problems
                .push("choose the column that identifies a record (the mapping key)".to_string());
        }
        // Choices a person makes from fixed lists: a value not on the list is refused, as the
        // API refuses it, never replaced by a default.
        let object = choice(
            "object",
            &self.object,
            &ObjectKind::ALL.map(|kind| (kind.as_str(), kind)),
            Some(ObjectKind::Customer),
            &mut problems,
        );
        let behavior = choice(
            "behavior",
            &self.behavior,
            &Behavior::ALL.map(|behavior| (behavior.as_str(), behavior)),
            None,
            &mut problems,
        );
        let nulls = choice(
            "nulls",
            &self.nulls,
            &[NullPolicy::Skip, NullPolicy::Clear].map(|nulls| (nulls.as_str(), nulls)),
            Some(NullPolicy::Skip),
            &mut problems,
        );
        let schema = self.object().schema();
        let mut key_choices: Vec<(&str, Option<&str>)> = schema
            .key_fields
            .iter()
            .map(|key| (key.path, Some(key.path)))
            .collect();
        key_choices.push((METADATA, None));
        let key_field = match choice(
            "key_field",
            &self.key_field,
            &key_choices,
            Some(schema.key_fields.first().map(|key| key.path)),
            &mut problems,
        ) {
            Some(Some(path)) => path.to_string(),
            _ => {
                if self.key_metadata.is_empty() {
                    problems.push("name the metadata key that holds the external id".to_string());
                }
                format!("metadata.{}", self.key_metadata)
            }
        };
        let mut mappings = Vec::new();
        for (i, row) in self.rows.iter().enumerate() {
            if row.column.is_empty() && row.field.is_empty() {
                continue; // an empty row the user added and left
            }
            let reads_one_column = matches!(
                MappingSource::parse(&row.column),
                Ok(MappingSource::Column(_))
            );
            let field = if let Some(reference) = row.field.strip_suffix(&format!("({METADATA})")) {
                if row.metadata.is_empty() {
                    problems.push(format!(
                        "field row {} finds {reference}'s record by a metadata key: name the key",
                        i + 1
                    ));
                    continue;
                }
                format!("{reference}(metadata.{})", row.metadata)
            } else if row.field == METADATA || row.field == LINE_METADATA {
                let key = if !row.metadata.is_empty() {
                    row.metadata.clone()
                } else if reads_one_column {
                    row.column.clone()
                } else {
                    problems.push(format!(
                        "field row {} sends a constant or a template to metadata: name its metadata key",
                        i + 1
                    ));
                    continue;
                };
                format!("{}.{key}", row.field)
            } else {
                row.field.clone()
            };
            if row.column.is_empty() || field.is_empty() {
                problems.push(format!(
                    "field row {} needs both a column and a Stripe field",
                    i + 1
                ));
                continue;
            }
            mappings.push(FieldMapping {
                column: row.column.clone(),
                field,
            });
        }
        let schedule = match self.schedule.as_str() {
            "" | "manual" => None,
            text => match ferry_core::Schedule::parse(text) {
                Ok(schedule) => Some(schedule),
                Err(problem) => {
                    problems.push(format!("schedule: {problem}"));
                    None
                }
            },
        };
        let mut mirror = ferry_core::MirrorSettings {
            delete_customers: self.delete_customers,
            cancel_subscriptions_now: self.cancel_subscriptions_now,
            void_open_invoices: self.void_open_invoices,
            ..Default::default()
        };
        let finalize = choice(
            "finalize",
            &self.finalize,
            &ferry_core::Finalize::ALL.map(|finalize| (finalize.as_str(), finalize)),
            Some(ferry_core::Finalize::Never),
            &mut problems,
        );
        let invoice = match (object.map(stripe_object).and_then(|o| o.lines()), finalize) {
            (Some(_), Some(finalize)) => {
                if self.line_key.is_empty() {
                    problems.push(
                        "line_key: choose the column that tells an invoice's lines apart"
                            .to_string(),
                    );
                }
                Some(ferry_core::InvoiceSettings {
                    line_key: self.line_key.clone(),
                    finalize,
                    reissue_finalized: self.reissue_finalized,
                })
            }
            _ => None,
        };
        if !self.max_retire_percent.is_empty() {
            match self.max_retire_percent.parse::<u32>() {
                Ok(percent) if percent <= 100 => mirror.max_retire_percent = percent,
                _ => problems.push(format!(
                    "max_retire_percent: {:?} is not a whole number from 0 to 100",
                    self.max_retire_percent
                )),
            }
        }
        let (Some(object), Some(behavior), Some(nulls), true) =
            (object, behavior, nulls, problems.is_empty())
        else {
            return Err(problems.join("; "));
        };
        Ok(SyncSpec {
            invoice,
            model: self.model.clone(),
            destination: self.destination.clone(),
            object,
            behavior,
            key: KeyMapping {
                column: self.key_column.clone(),
                field: key_field,
            },
            mappings,
            nulls,
            schedule,
            mirror,
            alerts: None,
        })
    }
}

struct FormChoices {
    models: Vec<String>,
    destinations: Vec<String>,
    /// The chosen model's columns; empty when it has none or cannot run.
    columns: Vec<String>,
    columns_problem: Option<String>,
}

async fn choices(state: &AppState, form: &mut SyncForm) -> Result<FormChoices, Page> {
    let store = state.store();
    let models: Vec<String> = store
        .list_models()
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let destinations: Vec<String> = store
        .list_connections()
        .await?
        .into_iter()
        .filter(|c| c.kind == ConnectionKind::Stripe)
        .map(|c| c.name)
        .collect();
    if form.model.is_empty() {
        form.model = models.first().cloned().unwrap_or_default();
    }
    if form.destination.is_empty() {
        form.destination = destinations.first().cloned().unwrap_or_default();
    }
    let (columns, columns_problem) = if form.model.is_empty() {
        (Vec::new(), None)
    } else {
        match declare::model_columns(store, &form.model).await {
            Ok(columns) => (columns.into_iter().map(|c| c.name).collect(), None),
            Err(error) => (Vec::new(), Some(crate::ApiError::from(error).message)),
        }
    };
    // Sensible first choices: match on an `email` column, and offer one empty Mapper row.
    if form.key_column.is_empty() {
        form.key_column = columns
            .iter()
            .find(|c| c.eq_ignore_ascii_case("email"))
            .or(columns.first())
            .cloned()
            .unwrap_or_default();
    }
    form.settle_key_field();
    if form.rows.is_empty() && form.existing.is_empty() {
        form.rows.push(MapperRow::default());
    }
    Ok(FormChoices {
        models,
        destinations,
        columns,
        columns_problem,
    })
}

fn column_select(
    name: &str,
    id: Option<&str>,
    columns: &[String],
    selected: &str,
    placeholder: &str,
) -> Markup {
    html! {
        select name=(name) id=[id] aria-label=(placeholder) {
            option value="" selected[selected.is_empty()] { (placeholder) }
            @for column in columns {
                option value=(column) selected[column == selected] { (column) }
            }
            @if !selected.is_empty() && !columns.iter().any(|c| c == selected) {
                option value=(selected) selected { (selected) " (not in the model)" }
            }
        }
    }
}

fn stripe_object_of(schema: &'static ObjectSchema) -> Option<&'static dyn StripeObject> {
    object_kind_named(schema.object).map(stripe_object)
}

/// What a mapping may set on each line of a record made of lines (`lines.amount`,
/// `lines.price(lookup_key)`): the line's fields but those it takes from its parent.
fn line_paths(lines: &'static ferry_destinations::stripe::Lines) -> Vec<String> {
    let own = |path: &str| {
        path != lines.parent_param && lines.inherited.iter().all(|(name, _)| *name != path)
    };
    let mut paths: Vec<String> = standard_paths(lines.schema)
        .into_iter()
        .filter(|path| own(path))
        .map(|path| format!("lines.{path}"))
        .collect();
    for (path, object) in reference_fields(lines.schema) {
        let target = object_kind_named(object).map(|kind| stripe_object(kind).schema());
        for key in target.map(|schema| schema.key_fields).unwrap_or_default() {
            if own(path) {
                paths.push(format!("lines.{path}({})", key.path));
            }
        }
    }
    paths
}

fn field_select(row: &MapperRow, schema: &'static ObjectSchema) -> Markup {
    html! {
        select name="map_field" aria-label="Stripe field" {
            option value="" selected[row.field.is_empty()] { "Choose a Stripe field" }
            optgroup label=(format!("{} fields", schema.label)) {
                @for path in standard_paths(schema) {
                    option value=(path) selected[row.field == *path] { (path) }
                }
            }
            optgroup label="Custom" {
                option value=(METADATA) selected[row.field == METADATA] { "metadata (custom key)" }
            }
            @if let Some(lines) = stripe_object_of(schema).and_then(|object| object.lines()) {
                optgroup label=(format!("Each line ({})", lines.schema.label)) {
                    @for path in line_paths(lines) {
                        option value=(path) selected[row.field == path] { (path) }
                    }
                    option value=(LINE_METADATA) selected[row.field == LINE_METADATA] { "lines.metadata (custom key)" }
                }
            }
            @let references = reference_fields(schema);
            @if !references.is_empty() {
                optgroup label="Another record, found by its key" {
                    @for (path, object) in references {
                        @let target = object_kind_named(object).map(|kind| stripe_object(kind).schema());
                        // A list of objects (`items`) holds its keys inside each item.
                        @let list = ferry_destinations::stripe::parse_field(schema, path)
                            .is_ok_and(|field| matches!(field.kind, ferry_destinations::stripe::FieldKind::ObjectList { .. }));
                        @for key in target.map(|schema| schema.key_fields).unwrap_or_default() {
                            @let value = format!("{path}({})", key.path);
                            option value=(value) selected[row.field == value] {
                                @if list {
                                    (path) ": a JSON list, each " (object) " named by its " (key.path)
                                } @else {
                                    (path) ": the " (object) " whose " (key.path) " is the value"
                                }
                            }
                        }
                        @let value = format!("{path}({METADATA})");
                        option value=(value) selected[row.field == value] {
                            @if list {
                                (path) ": a JSON list, each " (object) " named by the metadata key (beside)"
                            } @else {
                                (path) ": the " (object) " whose metadata key (beside) is the value"
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether the row's metadata key box is read: a custom metadata field, or a reference found
/// by a metadata key (`product(metadata)`).
fn reads_metadata_key(field: &str) -> bool {
    field == METADATA || field == LINE_METADATA || field.ends_with(&format!("({METADATA})"))
}

fn sync_form(
    caller: &Caller,
    form: &SyncForm,
    choices: &FormChoices,
    problem: Option<&str>,
) -> Markup {
    let editing = !form.existing.is_empty();
    let object = form.object();
    let schema = object.schema();
    let plural = schema.plural;
    let singular = schema.object;
    html! {
        form.sync-form #sync-form method="post" action="/syncs" {
            (csrf_field(caller))
            input type="hidden" name="existing" value=(form.existing);
            @if let Some(problem) = problem { (error_box(problem)) }
            section.card {
                h2 { span.step { "1" } "Select a source" }
                div.field {
                    label for="model" { "Model" }
                    select #model name="model" hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML" hx-trigger="change" {
                        @for model in &choices.models {
                            option value=(model) selected[*model == form.model] { (model) }
                        }
                    }
                    @if let Some(problem) = &choices.columns_problem {
                        p.help.error-text { "This model cannot run: " (problem) }
                    } @else {
                        p.help { (choices.columns.len()) " columns: " (choices.columns.join(", ")) }
                    }
                }
            }
            section.card {
                h2 { span.step { "2" } "Select a destination" }
                div.field-row {
                    div.field {
                        label for="destination" { "Stripe destination" }
                        select #destination name="destination" {
                            @for destination in &choices.destinations {
                                option value=(destination) selected[*destination == form.destination] { (destination) }
                            }
                        }
                    }
                    div.field {
                        label for="object" { "Object" }
                        select #object name="object" hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML" hx-trigger="change" {
                            @for kind in ObjectKind::ALL {
                                option value=(kind.as_str()) selected[kind.as_str() == schema.object] { (stripe_object(kind).schema().label) }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { span.step { "3" } "Select a sync behavior" }
                fieldset.field {
                    legend { "What happens to records found in Stripe, and to the others" }
                    label.choice {
                        input type="radio" name="behavior" value="update-or-create" checked[!matches!(form.behavior.as_str(), "update-only" | "create-only" | "mirror")]
                            hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML" hx-trigger="change";
                        " " strong { "Update or Create" } " — update matching " (plural) ", create the others"
                    }
                    label.choice {
                        input type="radio" name="behavior" value="update-only" checked[form.behavior == "update-only"]
                            hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML" hx-trigger="change";
                        " " strong { "Update Only" } " — update matching " (plural) ", report the others as not found"
                    }
                    label.choice {
                        input type="radio" name="behavior" value="create-only" checked[form.behavior == "create-only"]
                            hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML" hx-trigger="change";
                        " " strong { "Create Only" } " — create the " (plural) " that are not in Stripe, leave matching ones as they are"
                    }
                    label.choice {
                        input type="radio" name="behavior" value="mirror" checked[form.behavior == "mirror"]
                            hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML" hx-trigger="change";
                        " " strong { "Mirror" } " — update or create, and retire the " (plural) " whose rows left the model (" (object.retirement().describe()) ")"
                    }
                }
                @if form.behavior == "mirror" {
                    div.field {
                        label for="max_retire_percent" { "A run retires at most this share of the sync's " (plural) " (%), unless told to go beyond" }
                        input #max_retire_percent name="max_retire_percent" type="number" min="0" max="100"
                            value=(if form.max_retire_percent.is_empty() { "10" } else { &form.max_retire_percent });
                    }
                    @if schema.object == "customer" {
                        label.choice {
                            input type="checkbox" name="delete_customers" value="1" checked[form.delete_customers];
                            " Delete customers whose rows left the model. Stripe cannot undo this: their payment methods and subscriptions go with them."
                        }
                    }
                    @if schema.object == "subscription" {
                        label.choice {
                            input type="checkbox" name="cancel_subscriptions_now" value="1" checked[form.cancel_subscriptions_now];
                            " Cancel subscriptions whose rows left the model at once, not at the end of the period already paid for."
                        }
                    }
                    @if schema.object == "invoice" {
                        label.choice {
                            input type="checkbox" name="void_open_invoices" value="1" checked[form.void_open_invoices];
                            " Void finalized invoices whose rows left the model (drafts are deleted either way). Stripe cannot undo a void."
                        }
                    }
                }
                div.field {
                    label { "Mapping key: records are matched on" }
                    div.mapper-row {
                        (column_select("key_column", Some("key_column"), &choices.columns, &form.key_column, "Choose a column"))
                        span.arrow { "→" }
                        select #key_field name="key_field" aria-label="Stripe key field"
                            hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML" hx-trigger="change" {
                            @for key in schema.key_fields {
                                option value=(key.path) selected[form.key_field == key.path] { (key.path) }
                            }
                            option value=(METADATA) selected[form.key_field == METADATA] { "metadata (external id)" }
                        }
                        @if form.key_field == METADATA {
                            input name="key_metadata" value=(form.key_metadata) placeholder="user_id" aria-label="Metadata key";
                        }
                    }
                    p.help { (object.matching_help()) }
                }
                @if object.lines().is_some() {
                    div.field {
                        label for="line_key" { "Line key: the column that tells an invoice's lines apart (one model row per line)" }
                        (column_select("line_key", Some("line_key"), &choices.columns, &form.line_key, "Choose a column"))
                    }
                    fieldset.field {
                        legend { "Finalize" }
                        label.choice {
                            input type="radio" name="finalize" value="never" checked[form.finalize != "when-created"];
                            " " strong { "Never" } " — invoices stay drafts, and a changed line changes them, until someone finalizes them in Stripe"
                        }
                        label.choice {
                            input type="radio" name="finalize" value="when-created" checked[form.finalize == "when-created"];
                            " " strong { "When created" } " — finalized once every line is on them, and sent when collected by send_invoice"
                        }
                    }
                    div.field {
                        label.choice {
                            input type="checkbox" name="reissue_finalized" value="1" checked[form.reissue_finalized];
                            " Void and reissue: when a finalized invoice's lines change in the model, void it and issue a new invoice in its place (Stripe never changes a finalized invoice's lines; a paid one is only reported)"
                        }
                    }
                }
            }
            section.card {
                h2 { span.step { "4" } "Map fields" }
                p.help {
                    "Each row sends a model column to a Stripe field, or a constant in single quotes ('gold'), or a template of columns ({{first_name}} {{last_name}}). Choose “metadata (custom key)” to keep any column in the " (singular) "'s metadata."
                    @if !reference_fields(schema).is_empty() {
                        " A field that names another record (a price's product) can find it by its key: the column holds the key, ferry sends that record's id (sync that object first)."
                    }
                }
                datalist #model-columns {
                    @for column in &choices.columns { option value=(column) {} }
                }
                div #mapper {
                    @for (i, row) in form.rows.iter().enumerate() {
                        div.mapper-row {
                            input name="map_column" value=(row.column) list="model-columns" aria-label="Column, 'constant' or {{column}} template"
                                placeholder="column, 'constant' or {{column}} template";
                            span.arrow { "→" }
                            (field_select(row, schema))
                            input name="map_metadata" value=(row.metadata) placeholder="metadata key (default: the column name)"
                                aria-label="Metadata key" class=[(!reads_metadata_key(&row.field)).then_some("dim")];
                            button.small.link type="button" hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML"
                                hx-vals=(serde_json::json!({"remove_row": i.to_string()}).to_string()) title="Remove this row" { "✕" }
                        }
                    }
                }
                button.small type="button" hx-post="/syncs/form" hx-target="#sync-form" hx-swap="outerHTML"
                    hx-vals=r#"{"add_row": "1"}"# { "+ Add field" }
                div.field {
                    label for="nulls" { "Empty values (NULL)" }
                    select #nulls name="nulls" {
                        option value="skip" selected[form.nulls != "clear"] { "Leave the Stripe field as it is" }
                        option value="clear" selected[form.nulls == "clear"] { "Clear the Stripe field" }
                    }
                }
            }
            div #sync-checks hx-post="/syncs/check" hx-trigger="load, change from:#sync-form"
                hx-include="#sync-form" aria-live="polite" {}
            section.card {
                div.field {
                    label for="schedule" { "Schedule" }
                    input #schedule name="schedule" list="schedules" value=(form.schedule)
                        placeholder="manual: only when you press Run";
                    datalist #schedules {
                        option value="every 15m" {} option value="hourly" {} option value="every 6h" {}
                        option value="daily at 06:00" {} option value="daily at 06:00 in Europe/Paris" {}
                        option value="cron 0 6 * * 1-5" {} option value="cron */30 8-18 * * 1-5 in America/New_York" {}
                    }
                    p.help { "While " code { "ferry serve" } " runs: " code { "every 15m" } ", " code { "hourly" } ", " code { "daily at 06:30" } ", or a cron expression (minute hour day month weekday) such as " code { "cron 0 6 * * 1-5" } ". Clock times are UTC unless a time zone follows " code { "in" } ": " code { "daily at 06:30 in Europe/Paris" } ". Leave empty to run only when asked." }
                }
                div.field {
                    label for="name" { "Sync name" }
                    @if editing {
                        input #name name="name" value=(form.existing) readonly;
                    } @else {
                        input #name name="name" value=(form.name) required placeholder=(format!("{plural}-to-stripe")) pattern=(super::layout::NAME_INPUT_PATTERN) title=(super::layout::NAME_INPUT_TITLE);
                    }
                }
                div.form-actions {
                    button.primary type="submit" { "Save and preview" }
                    a.button href="/syncs" { "Cancel" }
                }
            }
        }
    }
}

async fn form_page(
    state: &AppState,
    caller: &Caller,
    mut form: SyncForm,
    problem: Option<&str>,
) -> Result<Markup, Page> {
    let choices = choices(state, &mut form).await?;
    let title = if form.existing.is_empty() {
        "New sync".to_string()
    } else {
        format!("Edit sync {}", form.existing)
    };
    if choices.models.is_empty() || choices.destinations.is_empty() {
        let (what, href, label) = if choices.destinations.is_empty() {
            (
                "a Stripe destination",
                "/destinations/new",
                "New destination",
            )
        } else {
            ("a model", "/models/new", "New model")
        };
        return Ok(shell(
            caller,
            Section::Syncs,
            &title,
            html! {
                (page_header(&title, None, html! {}))
                (empty_state(&format!("A sync needs {what} first"), "A sync sends the rows of a model to a Stripe destination.", href, label))
            },
        ));
    }
    Ok(shell(
        caller,
        Section::Syncs,
        &title,
        html! {
            (page_header(&title, Some("Model → Stripe: what data, where, how, and which fields."), html! {}))
            (sync_form(caller, &form, &choices, problem))
        },
    ))
}

pub async fn new(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    form_page(&state, &caller, SyncForm::default(), None).await
}

pub async fn edit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Markup, Page> {
    let record = require_sync(&state, &name).await?;
    form_page(&state, &caller, SyncForm::from_record(&record), None).await
}

/// htmx: the sync checked as it is being built (mapping key, each Mapper row, the schedule)
/// against the model's columns and Stripe's fields, without saving it.
pub async fn check_form(State(state): State<AppState>, body: Bytes) -> Result<Markup, Page> {
    let form = SyncForm::parse(&body)?;
    let problems = match form.to_spec() {
        Err(problem) => vec![problem],
        Ok(spec) => match declare::model_columns(state.store(), &spec.model).await {
            Err(error) => vec![crate::ApiError::from(error).message],
            Ok(columns) => {
                let names: Vec<String> = columns.into_iter().map(|c| c.name).collect();
                ferry_engine::prepare::validate_sync(&spec, &names)
                    .err()
                    .unwrap_or_default()
            }
        },
    };
    Ok(html! {
        @if problems.is_empty() {
            div.alert.ok-box { "✓ The sync fits its model and Stripe's fields." }
        } @else {
            div.alert.error {
                strong { "To fix before saving:" }
                ul { @for problem in &problems { li { (problem) } } }
            }
        }
    })
}

/// htmx: the form re-rendered after a change of model or key field, or a Mapper row added or
/// removed, keeping what was entered.
pub async fn refresh_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Markup, Page> {
    let mut form = SyncForm::parse(&body)?;
    let choices = choices(&state, &mut form).await?;
    Ok(sync_form(&caller, &form, &choices, None))
}

pub async fn save(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Page> {
    let form = SyncForm::parse(&body)?;
    let name = if form.existing.is_empty() {
        form.name.clone()
    } else {
        form.existing.clone()
    };
    let problem = match form.to_spec() {
        Err(problem) => Some(problem),
        Ok(_) if form.existing.is_empty() && state.store().get_sync(&name).await?.is_some() => {
            Some(format!(
                "a sync named '{name}' already exists; choose another name"
            ))
        }
        Ok(mut spec) => {
            // The form does not edit alerts (the API, the CLI and ferry.yaml do): an edit keeps
            // the sync's own.
            if !form.existing.is_empty() {
                if let Some(stored) = state.store().get_sync(&name).await? {
                    spec.alerts = stored.spec.alerts;
                }
            }
            declare::save_sync(state.store(), &name, &spec)
                .await
                .err()
                .map(|e| crate::ApiError::from(e).message)
        }
    };
    match problem {
        None => Ok(Redirect::to(&format!("/syncs/{name}/preview")).into_response()),
        Some(problem) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            form_page(&state, &caller, form, Some(&problem)).await?,
        )
            .into_response()),
    }
}

async fn require_sync(state: &AppState, name: &str) -> Result<SyncRecord, Page> {
    state
        .store()
        .get_sync(name)
        .await?
        .ok_or_else(|| Page::not_found(format!("sync '{name}' does not exist")))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    let syncs = state.store().list_syncs().await?;
    let mut rows = Vec::new();
    for sync in syncs {
        let last = state
            .store()
            .list_runs(Some(&sync.name), 1)
            .await?
            .into_iter()
            .next();
        rows.push((sync, last));
    }
    Ok(shell(
        &caller,
        Section::Syncs,
        "Syncs",
        html! {
            (page_header("Syncs", Some("Each sync sends a model's rows to Stripe."),
                html! { a.button.primary href="/syncs/new" { "Add sync" } }))
            @if rows.is_empty() {
                (empty_state("No sync yet", "Create a sync to send a model's rows to Stripe customers or products. You will see a preview before anything is written.", "/syncs/new", "Add sync"))
            } @else {
                table.table {
                    thead { tr { th { "Name" } th { "Model" } th { "Destination" } th { "Behavior" } th { "Next run" } th { "Last run" } } }
                    tbody {
                        @for (sync, last) in &rows {
                            tr {
                                td { a href={"/syncs/" (sync.name)} { strong { (sync.name) } } }
                                td { (sync.spec.model) }
                                td { (sync.spec.destination) " · " (stripe_object(sync.spec.object).schema().label) }
                                td { (behavior_label(sync.spec.behavior)) }
                                td { (next_run(sync, last.as_ref().map(|run| run.started_at))) }
                                td {
                                    @if let Some(run) = last {
                                        a href={"/runs/" (run.id)} { (status_badge(run.status.as_str())) } " " (time(run.started_at))
                                    } @else { span.muted { "never run" } }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// When the schedule starts the next run: a time, "due now", "paused" or "manual".
pub(super) fn next_run(
    sync: &SyncRecord,
    last_start: Option<chrono::DateTime<chrono::Utc>>,
) -> Markup {
    let now = chrono::Utc::now();
    html! {
        @if let Some(paused_at) = sync.paused_at {
            span.badge.paused title={"Paused since " (paused_at.format("%Y-%m-%d %H:%M UTC"))} { "paused" }
        } @else {
            @match sync.next_scheduled_run(last_start, now) {
                None => span.muted { "manual" },
                Some(due) if due <= now => span { "due now" },
                Some(due) => (time(due)),
            }
        }
    }
}

fn behavior_label(behavior: Behavior) -> &'static str {
    match behavior {
        Behavior::UpdateOrCreate => "Update or Create",
        Behavior::UpdateOnly => "Update Only",
        Behavior::CreateOnly => "Create Only",
        Behavior::Mirror => "Mirror",
    }
}

pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Markup, Page> {
    let sync = require_sync(&state, &name).await?;
    let runs = state.store().list_runs(Some(&name), 20).await?;
    let raised = state.store().raised_alerts(&name).await?;
    let deliveries = state.store().list_deliveries(Some(&name), 10).await?;
    // Runs asked for that no server has started yet (every one is busy, or the request waits
    // for the sync's previous run to end).
    let queued: Vec<_> = state
        .store()
        .pending_run_requests()
        .await?
        .into_iter()
        .filter(|request| request.sync == name && request.run_id.is_none())
        .collect();
    let spec = &sync.spec;
    Ok(shell(
        &caller,
        Section::Syncs,
        &name,
        html! {
            (page_header(&format!("Sync {name}"), Some(&format!("{} → Stripe {} in {}", spec.model, stripe_object(spec.object).schema().plural, spec.destination)), html! {
                a.button href={"/syncs/" (name) "/edit"} { "Edit" }
                a.button href={"/syncs/" (name) "/preview"} { "Preview" }
                form.inline method="post" action={"/syncs/" (name) "/run"} {
                    (csrf_field(&caller))
                    input type="hidden" name="full_resync" value="1";
                    button type="submit" title="Look every record up in Stripe again and repair what drifted" { "Full resync" }
                }
                @if spec.behavior == Behavior::Mirror {
                    form.inline method="post" action={"/syncs/" (name) "/run"} {
                        (csrf_field(&caller))
                        input type="hidden" name="allow_mass_retire" value="1";
                        button type="submit" title={"Retire what left the model even beyond " (spec.mirror.max_retire_percent) "% of the sync's records (preview first)"} { "Run, allowing mass retire" }
                    }
                }
                @if spec.schedule.is_some() || sync.paused_at.is_some() {
                    @if sync.paused_at.is_some() {
                        form.inline method="post" action={"/syncs/" (name) "/resume"} {
                            (csrf_field(&caller))
                            button type="submit" title="Start the schedule again, counted from now" { "Resume" }
                        }
                    } @else {
                        form.inline method="post" action={"/syncs/" (name) "/pause"} {
                            (csrf_field(&caller))
                            button type="submit" title="Stop the schedule and orchestrators' triggers; you can still run it here" { "Pause" }
                        }
                    }
                }
                form.inline method="post" action={"/syncs/" (name) "/run"} {
                    (csrf_field(&caller))
                    button.primary type="submit" { "Run now" }
                }
            }))
            section.card {
                dl.settings {
                    dt { "Behavior" } dd {
                        (behavior_label(spec.behavior))
                        @if spec.behavior == Behavior::Mirror {
                            " (retires at most " (spec.mirror.max_retire_percent) "% per run"
                            @if spec.object == ObjectKind::Customer && spec.mirror.delete_customers { "; deletes customers" }
                            @if spec.object == ObjectKind::Subscription {
                                @if spec.mirror.cancel_subscriptions_now { "; cancels at once" } @else { "; cancels at period end" }
                            }
                            ")"
                        }
                    }
                    dt { "Mapping key" } dd.mono { (spec.key.column) " → " (spec.key.field) }
                    dt { "Schedule" } dd {
                        @if let Some(schedule) = &spec.schedule { (schedule.to_string()) " (while ferry serve runs)" } @else { "manual" }
                    }
                    dt { "Next run" } dd #next-run { (next_run(&sync, runs.first().map(|run| run.started_at))) }
                dt { "Empty values" } dd { @if spec.nulls == NullPolicy::Clear { "clear the Stripe field" } @else { "leave the Stripe field" } }
                }
                table.table.compact {
                    thead { tr { th { "Model column" } th { "Stripe field" } } }
                    tbody {
                        @for mapping in &spec.mappings {
                            tr { td.mono { (mapping.column) } td.mono { (mapping.field) } }
                        }
                    }
                }
            }
            @for alert in &raised {
                div.alert.error role="alert" {
                    strong { "Alert: " (alert.condition.as_str().replace('_', " ")) }
                    " since " (super::layout::time(alert.raised_at)) ": " (alert.message)
                }
            }
            h2 { "Runs" }
            @for request in &queued {
                p.alert #queued-run {
                    strong { "Queued" }
                    " since " (super::layout::time(request.requested_at))
                    " (" (request.reason) @if request.full_resync { ", full resync" } "): it starts when a server has room."
                }
            }
            @if runs.is_empty() {
                p.muted { "No run yet. Preview the sync, then run it." }
            } @else {
                (runs_table(&runs, false))
            }
            h2 { "Alerts" }
            p {
                @match &spec.alerts {
                    Some(alerts) => { "Alerts " (alerts.summary()) "." }
                    None => { "The workspace's default alerts (" a href="/alerts" { "Alerts" } ")." }
                }
            }
            @if !deliveries.is_empty() {
                (super::alerts::deliveries_table(&deliveries))
            }
            form.inline.danger-zone method="post" action={"/syncs/" (name) "/delete"} onsubmit="return confirm('Delete this sync and its history?')" {
                (csrf_field(&caller))
                button.small.danger type="submit" { "Delete sync" }
            }
        },
    ))
}

pub async fn preview_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Markup, Page> {
    require_sync(&state, &name).await?;
    Ok(shell(
        &caller,
        Section::Syncs,
        &format!("Preview {name}"),
        html! {
            (page_header(&format!("Preview of {name}"), Some("What a run would do. Nothing has been written to Stripe."), html! {
                a.button href={"/syncs/" (name) "/edit"} { "Edit sync" }
                form.inline method="post" action={"/syncs/" (name) "/run"} {
                    (csrf_field(&caller))
                    button.primary type="submit" { "Run sync" }
                }
            }))
            div #preview hx-get={"/syncs/" (name) "/preview/result"} hx-trigger="load" {
                p.muted.loading { "Reading the model and looking the records up in Stripe…" }
            }
        },
    ))
}

fn change_list(changes: &serde_json::Value) -> Markup {
    html! {
        ul.changes {
            @if let Some(fields) = changes.as_object() {
                @for (field, change) in fields {
                    li {
                        span.mono { (field) } ": "
                        @if !change["before"].is_null() {
                            span.before { (json_text(&change["before"])) } " → "
                        }
                        span.after { (json_text(&change["after"])) }
                    }
                }
            }
        }
    }
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "(empty)".into(),
        other => other.to_string(),
    }
}

fn preview_body(preview: &Preview, dashboard: Option<&str>) -> Markup {
    let counts = [
        ("create", "To create", preview.create),
        ("update", "To update", preview.update),
        ("replace", "To replace", preview.replace),
        ("retire", "To retire", preview.retire),
        ("unchanged", "Unchanged", preview.unchanged),
        ("rejected", "Rejected", preview.rejected),
        ("not_found", "Not found", preview.not_found),
        ("failed", "Lookup failed", preview.failed),
    ];
    let examples =
        |action: &'static str| preview.examples.iter().filter(move |e| e.action == action);
    html! {
        div.counts {
            @for (class, label, count) in counts {
                @if count > 0 || matches!(class, "create" | "update" | "unchanged" | "rejected") {
                    div class={"count " (class)} { div.number { (count) } div.label { (label) } }
                }
            }
        }
        p.muted { (preview.rows) " rows read from the model. The run will send about " (preview.requests_estimate) " requests to Stripe." }
        @if let Some(refused) = &preview.retire_refused {
            div.alert.warn role="alert" { strong { "Mirror: " } "a run would stop before retiring: it " (refused) "." }
        }
        @if examples("create").next().is_some() {
            h2 { "Examples of creates" }
            table.table {
                thead { tr { th { "Row" } th { "Key" } th { "Fields" } } }
                tbody { @for e in examples("create") { tr { td { (e.row) } td.mono { (e.key) } td { @if let Some(c) = &e.changes { (change_list(c)) } } } } }
            }
        }
        @for (action, title) in [("update", "Examples of updates"), ("replace", "Examples of replacements")] {
            @if examples(action).next().is_some() {
                h2 { (title) }
                table.table {
                    thead { tr { th { "Row" } th { "Key" } th { "In Stripe" } th { "Before → after" } } }
                    tbody { @for e in examples(action) { tr {
                        td { (e.row) } td.mono { (e.key) }
                        td { @if let Some(id) = &e.stripe_id {
                            @if let Some(dashboard) = dashboard { a.mono href={(dashboard) "/" (id)} target="_blank" rel="noopener" { (id) } }
                            @else { span.mono { (id) } }
                        } }
                        td {
                            @if let Some(c) = &e.changes { (change_list(c)) }
                            @if let Some(reason) = &e.reason { p.reason.muted { (reason) } }
                        }
                    } } }
                }
            }
        }
        @for (action, title) in [("retire", "To retire (their rows left the model)"), ("reject", "Rejected rows"), ("fail", "Failed lookups"), ("not_found", "Not found in Stripe")] {
            @if examples(action).next().is_some() {
                h2 { (title) }
                table.table {
                    thead { tr { th { "Row" } th { "Key" } th { "Reason" } } }
                    tbody { @for e in examples(action) { tr { td { (e.row) } td.mono { (e.key) } td.reason { (e.reason.clone().unwrap_or_default()) } } } }
                }
            }
        }
    }
}

/// htmx: the preview itself, loaded after the page so the page shows at once.
pub async fn preview_result(State(state): State<AppState>, Path(name): Path<String>) -> Markup {
    let result = async {
        let setup = ferry_engine::load_sync_setup(state.store(), &name).await?;
        ferry_engine::preview_sync(state.store(), &setup).await
    }
    .await;
    match result {
        Ok(preview) => {
            let dashboard = crate::api::runs::dashboard_base(&state, &name).await;
            preview_body(&preview, dashboard.as_deref())
        }
        Err(error) => error_box(&crate::ApiError::from(error).message),
    }
}

pub async fn run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Redirect, Page> {
    // "Full resync" looks every record up again instead of trusting what earlier runs confirmed.
    let fields = crate::form::parse_form(&body).map_err(|problem| Page::bad_request(problem.0))?;
    let set = |name: &str| fields.iter().any(|(k, v)| k == name && v == "1");
    let outcome = state
        .runs()
        .start(
            state.store().clone(),
            &name,
            set("full_resync"),
            set("allow_mass_retire"),
            "ui",
            None,
        )
        .await?;
    match outcome {
        crate::run_registry::StartOutcome::Started(run_id) => {
            Ok(Redirect::to(&format!("/runs/{run_id}")))
        }
        // Every server is busy: the sync's page lists it as queued until one has room.
        _ => Ok(Redirect::to(&format!("/syncs/{name}"))),
    }
}

pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, Page> {
    set_paused(&state, &name, true).await
}

pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, Page> {
    set_paused(&state, &name, false).await
}

async fn set_paused(state: &AppState, name: &str, paused: bool) -> Result<Redirect, Page> {
    state
        .store()
        .set_sync_paused(name, paused)
        .await?
        .ok_or_else(|| Page::not_found(format!("sync '{name}' does not exist")))?;
    tracing::info!(sync = %name, "{}", if paused { "Paused the sync." } else { "Resumed the sync." });
    Ok(Redirect::to(&format!("/syncs/{name}")))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, Page> {
    declare::remove_sync(state.store(), &name).await?;
    Ok(Redirect::to("/syncs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapper_form_becomes_a_spec() {
        let body = b"name=s&model=m&destination=stripe&behavior=update-only&key_column=uid&key_field=metadata&key_metadata=user_id\
&map_column=full_name&map_field=name&map_metadata=&map_column=plan&map_field=metadata&map_metadata=\
&map_column=&map_field=&map_metadata=&nulls=clear";
        let spec = SyncForm::parse(body)
            .ok()
            .unwrap()
            .to_spec()
            .expect("a valid form");
        assert_eq!(spec.behavior, Behavior::UpdateOnly);
        assert_eq!(spec.key.field, "metadata.user_id");
        assert_eq!(spec.nulls, NullPolicy::Clear);
        let fields: Vec<_> = spec
            .mappings
            .iter()
            .map(|m| (m.column.as_str(), m.field.as_str()))
            .collect();
        assert_eq!(fields, [("full_name", "name"), ("plan", "metadata.plan")]);
    }

    /// Mirror's settings come from the form: the limit as a whole percentage, the customers'
    /// opt-in as a checkbox; a limit that is no percentage is refused, naming the field.
    #[test]
    fn mirror_settings_in_the_form() {
        let base =
            "name=s&model=m&destination=stripe&behavior=mirror&key_column=email&key_field=email\
&map_column=name&map_field=name&map_metadata=";
        let spec = |extra: &str| {
            SyncForm::parse(format!("{base}{extra}").as_bytes())
                .ok()
                .unwrap()
                .to_spec()
        };
        let mirrored = spec("&max_retire_percent=25&delete_customers=1").unwrap();
        assert_eq!(mirrored.behavior, Behavior::Mirror);
        assert_eq!(
            (
                mirrored.mirror.max_retire_percent,
                mirrored.mirror.delete_customers
            ),
            (25, true)
        );
        let defaults = spec("").unwrap();
        assert!(defaults.mirror.is_default(), "{:?}", defaults.mirror);
        for bad in ["101", "-1", "ten"] {
            let problem = spec(&format!("&max_retire_percent={bad}")).unwrap_err();
            assert!(
                problem.contains("max_retire_percent") && problem.contains("from 0 to 100"),
                "{bad}: {problem}"
            );
        }
    }

    /// Constants and templates go through the form as typed (URL-encoded); metadata needs a
    /// key named for them, since they have no column name to lend it.
    #[test]
    fn constants_and_templates_in_the_mapper() {
        let base = "name=s&model=m&destination=stripe&behavior=create-only&key_column=email&key_field=email\
&map_column=%27gold%27&map_field=metadata&map_metadata=tier\
&map_column=%7B%7Bfirst%7D%7D+%7B%7Blast%7D%7D&map_field=name&map_metadata=";
        let spec = SyncForm::parse(base.as_bytes())
            .ok()
            .unwrap()
            .to_spec()
            .expect("a valid form");
        let fields: Vec<_> = spec
            .mappings
            .iter()
            .map(|m| (m.column.as_str(), m.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [("'gold'", "metadata.tier"), ("{{first}} {{last}}", "name")]
        );
        let unnamed = format!("{base}&map_column=%27x%27&map_field=metadata&map_metadata=");
        let problem = SyncForm::parse(unnamed.as_bytes())
            .ok()
            .unwrap()
            .to_spec()
            .unwrap_err();
        assert!(
            problem.contains(
                "field row 3 sends a constant or a template to metadata: name its metadata key"
            ),
            "{problem}"
        );
    }

    /// The object picker drives the key choices, the Mapper's field list and the wording; a key
    /// field of the object chosen before becomes the new object's first key field.
    #[test]
    fn products_have_their_own_keys_fields_and_words() {
        let body = "model=m&destination=stripe&object=product&behavior=create-only&key_column=sku&key_field=id\
&map_column=title&map_field=name&map_metadata=&map_column=on&map_field=active&map_metadata=";
        let spec = SyncForm::parse(body.as_bytes())
            .ok()
            .unwrap()
            .to_spec()
            .expect("a valid form");
        assert_eq!(spec.object, ObjectKind::Product);
        assert_eq!(
            (spec.key.column.as_str(), spec.key.field.as_str()),
            ("sku", "id")
        );
        let problem = SyncForm::parse(body.replace("key_field=id", "key_field=email").as_bytes())
            .ok()
            .unwrap()
            .to_spec()
            .unwrap_err();
        assert!(
            problem.contains("key_field: \"email\" is not a valid value; use one of id, metadata"),
            "{problem}"
        );

        let form = SyncForm::parse(
            b"model=m&destination=stripe&object=product&key_column=sku&key_field=email&map_column=title&map_field=name&map_metadata=",
        )
        .ok()
        .unwrap();
        let choices = FormChoices {
            models: vec!["m".into()],
            destinations: vec!["stripe".into()],
            columns: vec!["sku".into(), "title".into()],
            columns_problem: None,
        };
        let mut form = form;
        form.settle_key_field();
        let caller = Caller {
            token_name: "t".into(),
            csrf: "c".into(),
        };
        let html = sync_form(&caller, &form, &choices, None).into_string();
        for expected in [
            r#"<option value="product" selected>Product</option>"#,
            r#"<option value="id" selected>id</option>"#,
            r#"<optgroup label="Product fields">"#,
            r#"<option value="unit_label">unit_label</option>"#,
            "update matching products, create the others",
            "kept in the product's metadata",
            r#"placeholder="products-to-stripe""#,
        ] {
            assert!(
                html.contains(expected),
                "`{expected}` missing from:\n{html}"
            );
        }
        assert!(!html.contains(r#"value="email""#), "{html}");
    }

    /// A price's product found by the product's id or by a metadata key: offered in the
    /// field list, read from the form with the metadata box, and shown again when editing.
    #[test]
    fn a_reference_is_chosen_in_the_mapper() {
        let body = "model=m&destination=stripe&object=price&behavior=update-or-create&key_column=plan&key_field=lookup_key\
&map_column=sku&map_field=product%28metadata%29&map_metadata=sku&map_column=amount&map_field=unit_amount&map_metadata=";
        let form = SyncForm::parse(body.as_bytes()).ok().unwrap();
        let spec = form.to_spec().expect("a valid form");
        assert_eq!(spec.mappings[0].field, "product(metadata.sku)");
        let problem = SyncForm::parse(body.replace("map_metadata=sku", "map_metadata=").as_bytes())
            .ok()
            .unwrap()
            .to_spec()
            .unwrap_err();
        assert!(
            problem.contains("field row 1 finds product's record by a metadata key: name the key"),
            "{problem}"
        );

        let record = SyncRecord {
            name: "prices".into(),
            uid: "0123456789abcdef".into(),
            spec,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            paused_at: None,
            resumed_at: None,
        };
        let edited = SyncForm::from_record(&record);
        assert_eq!(
            (
                edited.rows[0].field.as_str(),
                edited.rows[0].metadata.as_str()
            ),
            ("product(metadata)", "sku")
        );
        let choices = FormChoices {
            models: vec!["m".into()],
            destinations: vec!["stripe".into()],
            columns: vec!["plan".into(), "sku".into(), "amount".into()],
            columns_problem: None,
        };
        let caller = Caller {
            token_name: "t".into(),
            csrf: "c".into(),
        };
        let html = sync_form(&caller, &edited, &choices, None).into_string();
        for expected in [
            r#"<optgroup label="Another record, found by its key">"#,
            r#"<option value="product(id)">product: the product whose id is the value</option>"#,
            r#"<option value="product(metadata)" selected>product: the product whose metadata key (beside) is the value</option>"#,
        ] {
            assert!(
                html.contains(expected),
                "`{expected}` missing from:\n{html}"
            );
        }
    }

    /// A subscription has no key of its own: the form keys it by metadata, offers its items'
    /// prices by key, and asks how Mirror cancels.
    #[test]
    fn a_subscription_is_keyed_by_metadata_and_names_its_items_prices_by_key() {
        let mut form = SyncForm::parse(
            b"model=m&destination=stripe&object=subscription&behavior=mirror&key_column=contract&key_field=email&key_metadata=contract_id\
&map_column=items&map_field=items%28lookup_key%29&map_metadata=&cancel_subscriptions_now=1",
        )
        .ok()
        .unwrap();
        form.settle_key_field();
        assert_eq!(
            form.key_field, METADATA,
            "email is not a subscription's key"
        );
        let spec = form.to_spec().expect("a valid form");
        assert_eq!(spec.key.field, "metadata.contract_id");
        assert_eq!(spec.mappings[0].field, "items(lookup_key)");
        assert!(spec.mirror.cancel_subscriptions_now);
        let choices = FormChoices {
            models: vec!["m".into()],
            destinations: vec!["stripe".into()],
            columns: vec!["contract".into(), "items".into()],
            columns_problem: None,
        };
        let caller = Caller {
            token_name: "t".into(),
            csrf: "c".into(),
        };
        let html = sync_form(&caller, &form, &choices, None).into_string();
        for expected in [
            r#"<option value="items(lookup_key)" selected>items: a JSON list, each price named by its lookup_key</option>"#,
            r#"<option value="customer(email)">customer: the customer whose email is the value</option>"#,
            r#"name="cancel_subscriptions_now" value="1" checked"#,
        ] {
            assert!(
                html.contains(expected),
                "`{expected}` missing from:\n{html}"
            );
        }
    }

    /// An invoice sync names its line key column, when invoices are finalized and whether
    /// changed finalized ones are reissued; the Mapper offers each line's fields (its price
    /// found by lookup key among them, and its own metadata keys).
    #[test]
    fn an_invoice_form_names_its_line_key_and_finalizing() {
        let body = "model=m&destination=stripe&object=invoice&behavior=update-or-create&key_column=order_id&key_field=metadata&key_metadata=order_id\
&line_key=line_id&finalize=when-created&reissue_finalized=1&map_column=amount&map_field=lines.amount&map_metadata=\
&map_column=sku&map_field=lines.metadata&map_metadata=";
        let form = SyncForm::parse(body.as_bytes()).ok().unwrap();
        let spec = form.to_spec().expect("a valid form");
        assert_eq!(
            spec.mappings
                .iter()
                .map(|m| (m.column.as_str(), m.field.as_str()))
                .collect::<Vec<_>>(),
            [("amount", "lines.amount"), ("sku", "lines.metadata.sku")],
            "a line's metadata key defaults to the column's name"
        );
        let record = SyncRecord {
            name: "orders".into(),
            uid: "0123456789abcdef".into(),
            spec: spec.clone(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            paused_at: None,
            resumed_at: None,
        };
        let again = SyncForm::from_record(&record);
        assert_eq!(
            (
                again.rows[1].field.as_str(),
                again.rows[1].metadata.as_str()
            ),
            (LINE_METADATA, "sku")
        );
        assert_eq!(again.to_spec().unwrap().mappings, spec.mappings);
        assert_eq!(
            spec.invoice,
            Some(ferry_core::InvoiceSettings {
                line_key: "line_id".into(),
                finalize: ferry_core::Finalize::WhenCreated,
                reissue_finalized: true,
            })
        );
        let problem = SyncForm::parse(body.replace("line_key=line_id", "line_key=").as_bytes())
            .ok()
            .unwrap()
            .to_spec()
            .unwrap_err();
        assert!(problem.contains("line_key: choose the column"), "{problem}");
        let choices = FormChoices {
            models: vec!["m".into()],
            destinations: vec!["stripe".into()],
            columns: vec!["order_id".into(), "line_id".into(), "amount".into()],
            columns_problem: None,
        };
        let caller = Caller {
            token_name: "t".into(),
            csrf: "c".into(),
        };
        let html = sync_form(&caller, &form, &choices, None).into_string();
        for expected in [
            r#"<option value="lines.amount" selected>lines.amount</option>"#,
            r#"<option value="lines.price(lookup_key)">lines.price(lookup_key)</option>"#,
            r#"name="finalize" value="when-created" checked"#,
            r#"name="reissue_finalized" value="1" checked"#,
            r#"<option value="lines.metadata" selected>lines.metadata (custom key)</option>"#,
        ] {
            assert!(
                html.contains(expected),
                "`{expected}` missing from:\n{html}"
            );
        }
        assert!(
            !html.contains(r#"value="lines.customer""#),
            "a line takes its invoice's customer"
        );
    }

    #[test]
    fn rows_are_added_and_removed_in_place() {
        let body = b"map_column=a&map_field=name&map_metadata=&map_column=b&map_field=phone&map_metadata=&remove_row=0";
        let form = SyncForm::parse(body).ok().unwrap();
        assert_eq!(form.rows.len(), 1);
        assert_eq!(form.rows[0].column, "b");
        assert_eq!(SyncForm::parse(b"add_row=1").ok().unwrap().rows.len(), 1);
    }

    #[test]
    fn a_half_filled_row_is_named() {
        let body = b"model=m&destination=d&key_column=email&key_field=email&map_column=a&map_field=&map_metadata=";
        let problem = SyncForm::parse(body).ok().unwrap().to_spec().unwrap_err();
        assert!(problem.contains("field row 1"), "{problem}");
    }

    #[test]
    fn a_choice_outside_its_list_is_refused_naming_the_field_and_the_valid_values() {
        let valid = "model=m&destination=d&key_column=email&key_field=email&behavior=update-only";
        let spec = SyncForm::parse(valid.as_bytes()).ok().unwrap().to_spec();
        assert_eq!(
            spec.unwrap().nulls,
            NullPolicy::Skip,
            "nulls default to skip"
        );
        for (field, value, expected) in [
            ("behavior", "bogus", "behavior: \"bogus\" is not a valid value; use one of update-or-create, update-only, create-only, mirror"),
            ("behavior", "", "behavior: choose one of update-or-create, update-only, create-only, mirror"),
            ("nulls", "delete", "nulls: \"delete\" is not a valid value; use one of skip, clear"),
            ("object", "quote", "object: \"quote\" is not a valid value; use one of customer, product, price, subscription, invoice"),
            ("key_field", "phone", "key_field: \"phone\" is not a valid value; use one of email, metadata"),
        ] {
            let body = format!("{valid}&{field}={value}").replace("behavior=update-only&behavior=", "behavior=");
            let problem = SyncForm::parse(body.as_bytes())
                .ok()
                .unwrap()
                .to_spec()
                .unwrap_err();
            assert!(problem.contains(expected), "{field}={value}: {problem}");
        }
    }

    #[test]
    fn a_form_that_is_not_utf8_is_refused() {
        assert!(SyncForm::parse(b"name=s&behavior=%FF").is_err());
    }
}
