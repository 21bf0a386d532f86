//! `ferry apply` and `ferry export`: the workspace as a YAML file kept in Git.
//!
//! The file is one more door into the same workspace: `apply` reads it, compares it with what
//! the workspace holds, and saves every created or changed object through
//! `ferry_engine::declare`, exactly as `ferry connect`, `ferry model create` and
//! `ferry sync create` do (same connection tests, same SQL check, same sync validation, same
//! errors). It never deletes: objects the file does not mention are kept. `export` writes the
//! workspace back as such a file; applying an export changes nothing.
//!
//! Secrets never live in the file: it names environment variables (`api_key_env`, `url_env`),
//! and a connection that already exists may leave its secret out to keep the stored one.

use super::output::plural;
use super::{CliError, CliResult, Format};
use anyhow::anyhow;
use clap::Args;
use ferry_core::{
    Behavior, FieldMapping, KeyMapping, MirrorSettings, NullPolicy, ObjectKind, Schedule, SyncSpec,
};
use ferry_engine::connections::{kind_spec, ConnectionSettings, KindSpec};
use ferry_engine::declare;
use ferry_state::{
    ConnectionKind, ConnectionRecord, ModelRecord, NewConnection, SecretInput, SecretRef,
    StateStore, SyncRecord,
};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// The only version of the file format so far.
const FILE_VERSION: u32 = 1;

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The file that declares connections, models and syncs.
    #[arg(short = 'f', long = "file", default_value = "ferry.yaml")]
    pub file: PathBuf,
    /// Apply the plan; without it, only print the plan.
    #[arg(long)]
    pub yes: bool,
    /// `text` for people, `json` for programs (the plan, and whether it was applied).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write here instead of standard output.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

// ----- the file, as written -----

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    version: u32,
    connections: Option<Named<ConnectionDecl>>,
    models: Option<Named<ModelDecl>>,
    syncs: Option<Named<SyncDecl>>,
    /// The workspace's default alerts, for every sync without `alerts` of its own: the same
    /// fields as a sync's `alerts`.
    alert_defaults: Option<ferry_core::AlertSettings>,
    /// Syncs run one after another: `steps` (the syncs, in order),
    /// `stop_when_rejected_over_percent` and `schedule`.
    sequences: Option<Named<ferry_core::SequenceSpec>>,
}

/// One connection: its kind, and its settings by their stored names, which the kind's registry
/// entry checks (an unknown one is named with its line).
#[derive(Deserialize, Debug)]
struct ConnectionDecl {
    kind: String,
    #[serde(flatten)]
    settings: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ModelDecl {
    connection: String,
    sql: Option<String>,
    file: Option<PathBuf>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SyncDecl {
    model: String,
    destination: String,
    object: Option<ObjectKind>,
    behavior: Option<Behavior>,
    key: PairDecl,
    #[serde(default)]
    mappings: Vec<PairDecl>,
    nulls: Option<NullPolicy>,
    /// `every 15m`, `hourly`, `daily at 06:30`: when `ferry serve` runs the sync by itself.
    schedule: Option<Schedule>,
    /// With `behavior: mirror`: `max_retire_percent` (default 10), `delete_customers` and
    /// `cancel_subscriptions_now`.
    #[serde(default)]
    mirror: MirrorSettings,
    /// With `object: invoice`: `line_key` (the column telling lines apart), `finalize`
    /// (`never`, the default, or `when-created`) and `reissue_finalized` (void and reissue a
    /// finalized invoice whose lines changed; default false).
    invoice: Option<ferry_core::InvoiceSettings>,
    /// `channels` (alert channel connections), `on_failure` (default true),
    /// `rejected_over_percent`, `slower_than_minutes`, `row_drop_over_percent`. Absent: the
    /// workspace's defaults.
    alerts: Option<ferry_core::AlertSettings>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PairDecl {
    column: String,
    field: String,
}

/// A YAML mapping of objects by name, in file order.
#[derive(Debug)]
struct Named<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for NamedVisitor<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to objects")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut entries: Vec<(String, T)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if entries.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "'{name}' is declared twice"
                        )));
                    }
                    let value = map.next_value::<T>()?;
                    entries.push((name, value));
                }
                Ok(Named(entries))
            }
        }
        deserializer.deserialize_map(NamedVisitor(PhantomData))
    }
}

impl<T> Named<T> {
    fn entries(this: &Option<Named<T>>) -> &[(String, T)] {
        this.as_ref().map(|n| n.0.as_slice()).unwrap_or_default()
    }
}

// ----- the file, resolved -----

/// What the file declares, with paths made absolute, SQL read and defaults filled in.
struct Desired {
    connections: Vec<NewConnection>,
    models: Vec<DesiredModel>,
    syncs: Vec<(String, SyncSpec)>,
    alert_defaults: Option<ferry_core::AlertSettings>,
    sequences: Vec<(String, ferry_core::SequenceSpec)>,
}

struct DesiredModel {
    name: String,
    connection: String,
    sql: String,
}

fn config_error(message: impl fmt::Display) -> CliError {
    CliError::config(anyhow!("{message}"))
}

/// Reads, parses and checks the file on its own (without the workspace).
fn read_file(path: &Path) -> CliResult<Desired> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| config_error(format_args!("cannot read {}: {e}", path.display())))?;
    let shown = path.display();
    // A first pass over the generic tree finds literal secrets before anything else looks at
    // (and could quote) their values.
    let tree: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| config_error(format_args!("{shown}: {e}")))?;
    refuse_literal_secrets(&tree, &text, &shown.to_string())?;
    let doc: FileDoc =
        serde_yaml_ng::from_str(&text).map_err(|e| config_error(format_args!("{shown}: {e}")))?;
    if doc.version != FILE_VERSION {
        return Err(config_error(format_args!(
            "{shown}: version {} is not supported; this ferry reads `version: {FILE_VERSION}`",
            doc.version
        )));
    }
    // Paths in the file are relative to its folder, wherever ferry runs from.
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    resolve(doc, &base, &shown.to_string(), &text)
}

/// `base/path` with `.` and `..` resolved by their text, so the same file names the same path
/// whichever directory `ferry apply` runs in.
fn join_clean(base: &Path, path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Fields that would hold a secret itself, for a connection whose kind is not known (the kind's
/// own secret field is taken from the registry): refused without repeating the value.
const LITERAL_SECRET_FIELDS: [(&str, &str); 4] = [
    ("api_key", "api_key_env"),
    ("secret_key", "api_key_env"),
    ("url", "url_env"),
    ("password", "url_env"),
];

fn refuse_literal_secrets(tree: &serde_yaml_ng::Value, text: &str, shown: &str) -> CliResult<()> {
    let Some(connections) = tree.get("connections").and_then(|c| c.as_mapping()) else {
        return Ok(());
    };
    for (name, body) in connections {
        let name = name.as_str().unwrap_or("?");
        // A known kind's secret is its registry's value field (a webhook's `url` is not a
        // secret, its `signing_secret` is); an unknown kind is held to the usual names.
        let kind = body
            .get("kind")
            .and_then(|kind| kind.as_str())
            .and_then(KindSpec::named);
        let fields: Vec<(&str, &str, &str)> = match kind {
            Some(spec) => spec
                .secret
                .iter()
                .map(|secret| (secret.value_field, secret.env_field, secret.what))
                .collect(),
            None => LITERAL_SECRET_FIELDS
                .iter()
                .map(|(field, instead)| {
                    let what = if *instead == "api_key_env" {
                        "API key"
                    } else {
                        "connection URL"
                    };
                    (*field, *instead, what)
                })
                .collect(),
        };
        for (field, instead, what) in fields {
            if body.get(field).is_none() {
                continue;
            }
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(&format!("{field}:")))
                .map(|i| format!(" (line {})", i + 1))
                .unwrap_or_default();
            return Err(config_error(format_args!(
                "{shown}: connection '{name}' has `{field}:`{line}: ferry refuses secrets written \
                 in the file, which ends up in Git (the value is not repeated here). Put the \
                 {what} in an environment variable and write `{instead}: VARIABLE` instead, or \
                 store it encrypted in the workspace with `ferry connect` and leave it out of the \
                 file"
            )));
        }
    }
    Ok(())
}

fn check_env_name(connection: &str, field: &str, variable: &str) -> CliResult<()> {
    let mut bytes = variable.bytes();
    let is_name = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let looks_like_key = ["sk_", "rk_", "pk_", "whsec_"]
        .iter()
        .any(|p| variable.starts_with(p));
    if is_name && !looks_like_key {
        return Ok(());
    }
    Err(config_error(format_args!(
        "connection '{connection}': `{field}` must be the name of an environment variable (like \
         {}), and its value is not one (it is not repeated here in case it is the secret itself); \
         put the secret in an environment variable and write that variable's name",
        if field == "url_env" {
            "WAREHOUSE_URL"
        } else {
            "STRIPE_API_KEY"
        }
    )))
}

/// ` (line N)` for the first line holding `field:` after connection `name`'s own line.
fn line_of(text: &str, name: &str, field: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.trim_start().trim_end().trim_end_matches(':') == name)
        .unwrap_or(0);
    lines
        .iter()
        .enumerate()
        .skip(start)
        .find(|(_, line)| line.trim_start().starts_with(&format!("{field}:")))
        .map(|(index, _)| format!(" (line {})", index + 1))
        .unwrap_or_default()
}

fn resolve(doc: FileDoc, base: &Path, shown: &str, text: &str) -> CliResult<Desired> {
    let mut connections = Vec::new();
    for (name, decl) in Named::entries(&doc.connections) {
        ferry_state::validate_name(ferry_state::ObjectType::Connection, name)?;
        let spec = KindSpec::named(&decl.kind).ok_or_else(|| {
            config_error(format_args!(
                "{shown}: connection '{name}': `kind: {}` is not a kind of connection ferry \
                 knows; use {}",
                decl.kind,
                KindSpec::names(false)
            ))
        })?;
        let kind = spec.kind;
        let accepted = spec.file_fields();
        if let Some(field) = decl
            .settings
            .keys()
            .find(|field| !accepted.contains(&field.as_str()))
        {
            return Err(config_error(format_args!(
                "{shown}: connection '{name}': `{field}` is not a setting of a {kind} \
                 connection{}; a {kind} connection takes {}",
                line_of(text, name, field),
                accepted
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut settings = decl.settings.clone();
        let secret = match &spec.secret {
            None => None,
            Some(secret) => match settings.remove(secret.env_field) {
                Some(serde_json::Value::String(variable)) => {
                    check_env_name(name, secret.env_field, &variable)?;
                    Some(SecretInput::EnvVar(variable))
                }
                // Decided against the workspace: keep the stored secret, or an error.
                None | Some(serde_json::Value::Null) => Some(SecretInput::Keep),
                Some(_) => {
                    return Err(config_error(format_args!(
                        "{shown}: connection '{name}': `{}` must be the name of an environment \
                         variable, such as {}",
                        secret.env_field, secret.example_env
                    )))
                }
            },
        };
        let settings = ConnectionSettings::from_door(name, kind, settings, base)
            .map_err(|error| config_error(format_args!("{shown}: connection '{name}': {error}")))?;
        let connection = declare::new_connection(name, &settings, secret);
        connections.push(connection);
    }

    let mut models = Vec::new();
    for (name, decl) in Named::entries(&doc.models) {
        ferry_state::validate_name(ferry_state::ObjectType::Model, name)?;
        let sql = match (&decl.sql, &decl.file) {
            (Some(sql), None) => sql.clone(),
            (None, Some(file)) => {
                let path = join_clean(base, file);
                std::fs::read_to_string(&path).map_err(|e| {
                    config_error(format_args!(
                        "{shown}: model '{name}': cannot read its SQL file {}: {e}",
                        path.display()
                    ))
                })?
            }
            (Some(_), Some(_)) => {
                return Err(config_error(format_args!(
                    "{shown}: model '{name}' has both `sql:` and `file:`; keep one"
                )))
            }
            (None, None) => {
                return Err(config_error(format_args!(
                    "{shown}: model '{name}' needs its query: `sql: |` with the SQL, or `file:` \
                     with a .sql file relative to the folder of {shown}"
                )))
            }
        };
        if sql.trim().is_empty() {
            return Err(config_error(format_args!(
                "{shown}: model '{name}' has an empty query"
            )));
        }
        models.push(DesiredModel {
            name: name.clone(),
            connection: decl.connection.clone(),
            sql,
        });
    }

    let mut syncs = Vec::new();
    for (name, decl) in Named::entries(&doc.syncs) {
        ferry_state::validate_name(ferry_state::ObjectType::Sync, name)?;
        let spec = SyncSpec {
            invoice: decl.invoice.clone(),
            model: decl.model.clone(),
            destination: decl.destination.clone(),
            object: decl.object.unwrap_or(ObjectKind::Customer),
            behavior: decl.behavior.unwrap_or(Behavior::UpdateOrCreate),
            key: KeyMapping {
                column: decl.key.column.clone(),
                field: decl.key.field.clone(),
            },
            mappings: decl
                .mappings
                .iter()
                .map(|m| FieldMapping {
                    column: m.column.clone(),
                    field: m.field.clone(),
                })
                .collect(),
            nulls: decl.nulls.unwrap_or_default(),
            schedule: decl.schedule.clone(),
            alerts: decl.alerts.clone(),
            mirror: decl.mirror,
        };
        if spec.mirror.max_retire_percent > 100 {
            return Err(config_error(format_args!(
                "{shown}: sync '{name}': mirror.max_retire_percent is {}; give a percentage from 0 to 100",
                spec.mirror.max_retire_percent
            )));
        }
        syncs.push((name.clone(), spec));
    }
    Ok(Desired {
        connections,
        models,
        syncs,
        alert_defaults: doc.alert_defaults,
        sequences: doc.sequences.map(|named| named.0).unwrap_or_default(),
    })
}

// ----- the plan -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Connection,
    /// The workspace's default alerts: one, without a name.
    AlertDefaults,
    Model,
    Sync,
    Sequence,
}

impl What {
    fn as_str(self) -> &'static str {
        match self {
            What::Connection => "connection",
            What::AlertDefaults => "alert_defaults",
            What::Model => "model",
            What::Sync => "sync",
            What::Sequence => "sequence",
        }
    }

    /// How a plan line names the object.
    fn subject(self, name: &str) -> String {
        match self {
            What::AlertDefaults => "alert defaults".to_string(),
            _ => format!("{} {name}", self.as_str()),
        }
    }

    /// How an error names the object.
    fn named(self, name: &str) -> String {
        match self {
            What::AlertDefaults => "the alert defaults".to_string(),
            _ => format!("{} '{name}'", self.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Create,
    Change(Vec<&'static str>),
    Unchanged,
    /// In the workspace, not in the file: left alone.
    Keep,
}

/// One line of the plan; `index` points into the matching list of [`Desired`].
struct Step {
    what: What,
    name: String,
    detail: String,
    action: Action,
    index: Option<usize>,
}

struct Workspace {
    connections: Vec<ConnectionRecord>,
    models: Vec<ModelRecord>,
    syncs: Vec<SyncRecord>,
    alert_defaults: Option<ferry_core::AlertSettings>,
    sequences: Vec<ferry_state::SequenceRecord>,
}

async fn load_workspace(store: &StateStore) -> CliResult<Workspace> {
    Ok(Workspace {
        connections: store.list_connections().await?,
        models: store.list_models().await?,
        syncs: store.list_syncs().await?,
        alert_defaults: ferry_engine::alerts::alert_defaults(store).await?,
        sequences: store.list_sequences().await?,
    })
}

/// The fields of alert settings that differ.
fn alert_changes(
    desired: &ferry_core::AlertSettings,
    stored: &ferry_core::AlertSettings,
) -> Vec<&'static str> {
    let mut changes = Vec::new();
    if desired.channels != stored.channels {
        changes.push("channels");
    }
    if desired.on_failure != stored.on_failure {
        changes.push("on_failure");
    }
    if desired.rejected_over_percent != stored.rejected_over_percent {
        changes.push("rejected_over_percent");
    }
    if desired.slower_than_minutes != stored.slower_than_minutes {
        changes.push("slower_than_minutes");
    }
    if desired.row_drop_over_percent != stored.row_drop_over_percent {
        changes.push("row_drop_over_percent");
    }
    changes
}

/// The field of the file that names the environment variable holding the kind's secret.
fn secret_field(kind: ConnectionKind) -> &'static str {
    kind_spec(kind)
        .secret
        .as_ref()
        .map_or("api_key_env", |secret| secret.env_field)
}

/// The kind's secret in words and an example variable, for hints.
fn secret_words(kind: ConnectionKind) -> (&'static str, &'static str) {
    kind_spec(kind)
        .secret
        .as_ref()
        .map_or(("API key", "STRIPE_API_KEY"), |secret| {
            (secret.what, secret.example_env)
        })
}

/// What differs between a connection in the file and the stored one.
fn connection_changes(desired: &NewConnection, stored: &ConnectionRecord) -> Vec<&'static str> {
    let mut changes = Vec::new();
    if desired.kind != stored.kind {
        changes.push("kind");
    }
    match (
        ConnectionSettings::of_new(desired),
        ConnectionSettings::of_record(stored),
    ) {
        (Ok(desired), Ok(stored)) => changes.extend(desired.changed_settings(&stored)),
        // Stored settings this ferry cannot read are replaced by the file's.
        _ => changes.push("settings"),
    }
    let secret_changed = match (&desired.secret, &stored.secret) {
        (None, None) | (Some(SecretInput::Keep), _) => false,
        (Some(SecretInput::EnvVar(variable)), Some(SecretRef::EnvVar(stored))) => {
            variable != stored
        }
        _ => true,
    };
    if secret_changed {
        changes.push(secret_field(desired.kind));
    }
    changes
}

/// The fields of a sequence that differ.
fn sequence_changes(
    desired: &ferry_core::SequenceSpec,
    stored: &ferry_core::SequenceSpec,
) -> Vec<&'static str> {
    let mut changes = Vec::new();
    if desired.steps != stored.steps {
        changes.push("steps");
    }
    if desired.stop_when_rejected_over_percent != stored.stop_when_rejected_over_percent {
        changes.push("stop_when_rejected_over_percent");
    }
    if desired.schedule != stored.schedule {
        changes.push("schedule");
    }
    changes
}

fn sync_changes(desired: &SyncSpec, stored: &SyncSpec) -> Vec<&'static str> {
    let mut changes = Vec::new();
    if desired.model != stored.model {
        changes.push("model");
    }
    if desired.destination != stored.destination {
        changes.push("destination");
    }
    if desired.object != stored.object {
        changes.push("object");
    }
    if desired.behavior != stored.behavior {
        changes.push("behavior");
    }
    if desired.key != stored.key {
        changes.push("key");
    }
    if desired.mappings != stored.mappings {
        changes.push("mappings");
    }
    if desired.schedule != stored.schedule {
        changes.push("schedule");
    }
    if desired.nulls != stored.nulls {
        changes.push("nulls");
    }
    if desired.mirror != stored.mirror {
        changes.push("mirror");
    }
    if desired.alerts != stored.alerts {
        changes.push("alerts");
    }
    changes
}

fn action_for(changes: Vec<&'static str>) -> Action {
    if changes.is_empty() {
        Action::Unchanged
    } else {
        Action::Change(changes)
    }
}

/// Compares the file with the workspace. Settles what the file left to the workspace (an
/// omitted secret), and checks everything that can be checked without contacting a system:
/// references between objects, their kinds, and that the variables holding new secrets are set.
fn plan(desired: &Desired, workspace: &Workspace) -> CliResult<Vec<Step>> {
    let stored_connections: HashMap<&str, &ConnectionRecord> = workspace
        .connections
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let stored_models: HashMap<&str, &ModelRecord> = workspace
        .models
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let stored_syncs: HashMap<&str, &SyncRecord> = workspace
        .syncs
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut steps = Vec::new();

    // Connections.
    let mut kinds: HashMap<String, ConnectionKind> = workspace
        .connections
        .iter()
        .map(|c| (c.name.clone(), c.kind))
        .collect();
    for (index, connection) in desired.connections.iter().enumerate() {
        let stored = stored_connections.get(connection.name.as_str()).copied();
        // A kind that may go without its secret (BigQuery's application default credentials)
        // keeps the stored one when the file leaves it out, or has none.
        let secret_optional = kind_spec(connection.kind)
            .secret
            .as_ref()
            .is_some_and(|secret| secret.optional);
        if matches!(connection.secret, Some(SecretInput::Keep)) {
            let keepable = stored.is_some_and(|s| s.kind == connection.kind && s.secret.is_some());
            if !keepable && !secret_optional {
                let field = secret_field(connection.kind);
                let (what, example) = secret_words(connection.kind);
                return Err(config_error(format_args!(
                    "connection '{}' {} so the file must say where its {what} is: add \
                     `{field}: {example}` (the name of an environment variable that holds it)",
                    connection.name,
                    if stored.is_some() {
                        "has no stored secret of this kind,"
                    } else {
                        "is not in the workspace yet,"
                    }
                )));
            }
        }
        let action = match stored {
            None => Action::Create,
            Some(stored) => action_for(connection_changes(connection, stored)),
        };
        if matches!(action, Action::Create | Action::Change(_)) {
            if let Some(SecretInput::EnvVar(variable)) = &connection.secret {
                if std::env::var(variable).map_or(true, |v| v.is_empty()) {
                    return Err(config_error(format_args!(
                        "connection '{}': environment variable {variable} (from `{}`) is not \
                         set; export it before `ferry apply`, it is read to test the connection \
                         and at every sync",
                        connection.name,
                        secret_field(connection.kind)
                    )));
                }
            }
        }
        kinds.insert(connection.name.clone(), connection.kind);
        steps.push(Step {
            what: What::Connection,
            name: connection.name.clone(),
            detail: connection.kind.as_str().to_string(),
            action,
            index: Some(index),
        });
    }
    let in_file: HashSet<&str> = desired
        .connections
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for stored in &workspace.connections {
        if !in_file.contains(stored.name.as_str()) {
            steps.push(keep(What::Connection, &stored.name));
        }
    }

    // The default alerts, once their channels exist.
    match (&desired.alert_defaults, &workspace.alert_defaults) {
        (Some(wanted), stored) => steps.push(Step {
            what: What::AlertDefaults,
            name: String::new(),
            detail: wanted.summary(),
            action: match stored {
                None => Action::Create,
                Some(stored) => action_for(alert_changes(wanted, stored)),
            },
            index: None,
        }),
        (None, Some(_)) => steps.push(keep(What::AlertDefaults, "")),
        (None, None) => {}
    }

    // Models.
    let mut model_names: HashSet<String> =
        workspace.models.iter().map(|m| m.name.clone()).collect();
    for (index, model) in desired.models.iter().enumerate() {
        match kinds.get(&model.connection) {
            None => {
                return Err(config_error(format_args!(
                    "model '{}' reads from connection '{}', which is neither in the file nor in \
                     the workspace; declare it under `connections:`",
                    model.name, model.connection
                )))
            }
            Some(kind) if !kind.is_source() => {
                return Err(config_error(format_args!(
                    "model '{}' reads from connection '{}', a {kind} connection; a model reads \
                     from a warehouse: a {} connection",
                    model.name,
                    model.connection,
                    KindSpec::names(true)
                )))
            }
            Some(_) => {}
        }
        let action = match stored_models.get(model.name.as_str()) {
            None => Action::Create,
            Some(stored) => {
                let mut changes = Vec::new();
                if stored.connection != model.connection {
                    changes.push("connection");
                }
                if stored.sql.trim_end() != model.sql.trim_end() {
                    changes.push("sql");
                }
                action_for(changes)
            }
        };
        model_names.insert(model.name.clone());
        steps.push(Step {
            what: What::Model,
            name: model.name.clone(),
            detail: format!("on {}", model.connection),
            action,
            index: Some(index),
        });
    }
    let in_file: HashSet<&str> = desired.models.iter().map(|m| m.name.as_str()).collect();
    for stored in &workspace.models {
        if !in_file.contains(stored.name.as_str()) {
            steps.push(keep(What::Model, &stored.name));
        }
    }

    // Syncs.
    for (index, (name, spec)) in desired.syncs.iter().enumerate() {
        if !model_names.contains(&spec.model) {
            return Err(config_error(format_args!(
                "sync '{name}' reads model '{}', which is neither in the file nor in the \
                 workspace; declare it under `models:`",
                spec.model
            )));
        }
        match kinds.get(&spec.destination) {
            None => {
                return Err(config_error(format_args!(
                    "sync '{name}' writes to connection '{}', which is neither in the file nor in \
                     the workspace; declare it under `connections:` with `kind: stripe`",
                    spec.destination
                )))
            }
            Some(kind) if *kind != ConnectionKind::Stripe => {
                return Err(config_error(format_args!(
                    "sync '{name}' writes to connection '{}', a {kind} connection; a sync writes \
                     to a stripe connection",
                    spec.destination
                )))
            }
            Some(_) => {}
        }
        let action = match stored_syncs.get(name.as_str()) {
            None => Action::Create,
            Some(stored) => action_for(sync_changes(spec, &stored.spec)),
        };
        steps.push(Step {
            what: What::Sync,
            name: name.clone(),
            detail: format!("{} → {}", spec.model, spec.destination),
            action,
            index: Some(index),
        });
    }
    let in_file: HashSet<&str> = desired.syncs.iter().map(|(n, _)| n.as_str()).collect();
    for stored in &workspace.syncs {
        if !in_file.contains(stored.name.as_str()) {
            steps.push(keep(What::Sync, &stored.name));
        }
    }
    // Sequences, after the syncs they name.
    let sync_names: HashSet<&str> = in_file
        .iter()
        .copied()
        .chain(workspace.syncs.iter().map(|s| s.name.as_str()))
        .collect();
    for (index, (name, spec)) in desired.sequences.iter().enumerate() {
        if let Some(problem) = spec.problems().first() {
            return Err(config_error(format_args!("sequence '{name}': {problem}")));
        }
        if let Some(missing) = spec
            .steps
            .iter()
            .find(|step| !sync_names.contains(step.as_str()))
        {
            return Err(config_error(format_args!(
                "sequence '{name}' runs sync '{missing}', which is neither in the file nor in \
                 the workspace; declare it under `syncs:`"
            )));
        }
        let action = match workspace.sequences.iter().find(|s| &s.name == name) {
            None => Action::Create,
            Some(stored) => action_for(sequence_changes(spec, &stored.spec)),
        };
        steps.push(Step {
            what: What::Sequence,
            name: name.clone(),
            detail: spec.steps.join(" → "),
            action,
            index: Some(index),
        });
    }
    for stored in &workspace.sequences {
        if !desired
            .sequences
            .iter()
            .any(|(name, _)| *name == stored.name)
        {
            steps.push(keep(What::Sequence, &stored.name));
        }
    }
    Ok(steps)
}

fn keep(what: What, name: &str) -> Step {
    Step {
        what,
        name: name.to_string(),
        detail: String::new(),
        action: Action::Keep,
        index: None,
    }
}

fn plan_line(step: &Step) -> String {
    let subject = step.what.subject(&step.name);
    match &step.action {
        Action::Create => format!("+ create {subject} ({})", step.detail),
        Action::Change(fields) => format!("~ change {subject}: {}", fields.join(", ")),
        Action::Unchanged => format!("= unchanged {subject}"),
        Action::Keep => {
            format!("  keep {subject} (not in the file; ferry apply never deletes)")
        }
    }
}

struct Counts {
    create: usize,
    change: usize,
    unchanged: usize,
    keep: usize,
}

fn count(steps: &[Step]) -> Counts {
    let of = |f: fn(&Action) -> bool| steps.iter().filter(|s| f(&s.action)).count();
    Counts {
        create: of(|a| matches!(a, Action::Create)),
        change: of(|a| matches!(a, Action::Change(_))),
        unchanged: of(|a| matches!(a, Action::Unchanged)),
        keep: of(|a| matches!(a, Action::Keep)),
    }
}

fn plan_json(steps: &[Step], counts: &Counts, applied: bool) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| {
            let (action, changes) = match &s.action {
                Action::Create => ("create", vec![]),
                Action::Change(fields) => ("change", fields.clone()),
                Action::Unchanged => ("unchanged", vec![]),
                Action::Keep => ("keep", vec![]),
            };
            json!({"action": action, "object": s.what.as_str(), "name": s.name, "changes": changes})
        })
        .collect();
    json!({
        "plan": steps,
        "summary": {
            "create": counts.create, "change": counts.change,
            "unchanged": counts.unchanged, "keep": counts.keep,
        },
        "applied": applied,
    })
}

// ----- apply -----

pub async fn apply(store: &StateStore, args: ApplyArgs) -> CliResult {
    let desired = read_file(&args.file)?;
    let workspace = load_workspace(store).await?;
    let steps = plan(&desired, &workspace)?;
    let counts = count(&steps);
    let text = args.format == Format::Text;
    if text {
        for step in &steps {
            println!("{}", plan_line(step));
        }
        println!(
            "\nPlan: {} to create, {} to change, {} unchanged.",
            counts.create, counts.change, counts.unchanged
        );
    }
    let pending = counts.create + counts.change;
    if !args.yes || pending == 0 {
        if text {
            if pending == 0 {
                println!("Nothing to apply: the workspace already matches the file.");
            } else {
                println!("Nothing applied. Run again with --yes to apply.");
            }
        } else {
            print_json(&plan_json(&steps, &counts, false));
        }
        return Ok(0);
    }
    if text {
        println!();
    }
    let mut done = 0;
    for step in &steps {
        if !matches!(step.action, Action::Create | Action::Change(_)) {
            continue;
        }
        match apply_step(store, &desired, &workspace, step).await {
            Ok(message) => {
                done += 1;
                if text {
                    println!("{message}");
                }
            }
            Err(error) => {
                let verb = if step.action == Action::Create {
                    "create"
                } else {
                    "change"
                };
                let note = match done {
                    0 => "Nothing was applied.".to_string(),
                    _ => {
                        let left = pending - done;
                        format!(
                            "{} applied, the other {left} {} not; fix the problem and run \
                             `ferry apply --yes` again to go on from there.",
                            if done == 1 {
                                "The object before it was".to_string()
                            } else {
                                format!("The {done} objects before it were")
                            },
                            if left == 1 { "was" } else { "were" },
                        )
                    }
                };
                return Err(CliError {
                    code: error.code,
                    error: anyhow!(
                        "could not {verb} {}: {:#}\n{note}",
                        step.what.named(&step.name),
                        error.error
                    ),
                });
            }
        }
    }
    if text {
        println!(
            "\nApplied: {} created, {} changed, {} unchanged.",
            counts.create, counts.change, counts.unchanged
        );
    } else {
        print_json(&plan_json(&steps, &counts, true));
    }
    Ok(0)
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON serializes")
    );
}

/// Saves one created or changed object through the engine, as the CLI command would.
async fn apply_step(
    store: &StateStore,
    desired: &Desired,
    workspace: &Workspace,
    step: &Step,
) -> CliResult<String> {
    let verb = if step.action == Action::Create {
        "Created"
    } else {
        "Changed"
    };
    if step.what == What::AlertDefaults {
        let defaults = desired
            .alert_defaults
            .as_ref()
            .expect("only declared defaults are applied");
        ferry_engine::alerts::set_alert_defaults(store, defaults).await?;
        return Ok(format!(
            "{verb} the default alerts: {}.",
            defaults.summary()
        ));
    }
    let index = step.index.expect("only file objects are applied");
    match step.what {
        What::Connection => {
            let connection = &desired.connections[index];
            declare::save_connection(store, connection, true).await?;
            let tested = match connection.kind {
                ConnectionKind::Stripe => "the key works",
                _ => "it answers",
            };
            Ok(format!(
                "{verb} connection {} ({}); {tested}.",
                connection.name, connection.kind
            ))
        }
        What::Model => {
            let model = &desired.models[index];
            // The syncs this apply saves again are checked when saved; the others must still
            // fit the model's columns, which `save_model_before_syncs` checks before saving.
            let saved_next: Vec<&str> = desired
                .syncs
                .iter()
                .filter(|(name, spec)| {
                    workspace
                        .syncs
                        .iter()
                        .find(|stored| &stored.name == name)
                        .is_none_or(|stored| &stored.spec != spec)
                })
                .map(|(name, _)| name.as_str())
                .collect();
            let columns = declare::save_model_before_syncs(
                store,
                &model.name,
                &model.connection,
                &model.sql,
                &saved_next,
            )
            .await?;
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            Ok(format!(
                "{verb} model {} (columns: {}).",
                model.name,
                names.join(", ")
            ))
        }
        What::AlertDefaults => unreachable!("applied above"),
        What::Sync => {
            let (name, spec) = &desired.syncs[index];
            declare::save_sync(store, name, spec).await?;
            Ok(format!(
                "{verb} sync {name} ({} → {}).",
                spec.model, spec.destination
            ))
        }
        What::Sequence => {
            let (name, spec) = &desired.sequences[index];
            store.put_sequence(name, spec).await?;
            Ok(format!(
                "{verb} sequence {name} ({}).",
                spec.steps.join(" → ")
            ))
        }
    }
}

// ----- export -----

pub async fn export(store: &StateStore, args: ExportArgs) -> CliResult {
    let workspace = load_workspace(store).await?;
    let text = export_text(&workspace)?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text)
                .map_err(|e| CliError::failed(anyhow!("cannot write {}: {e}", path.display())))?;
            let n = |count: usize, one, many| plural(count as u64, one, many);
            eprintln!(
                "Wrote {}, {} and {} to {}. Apply it with `ferry apply -f {}`.",
                n(workspace.connections.len(), "connection", "connections"),
                n(workspace.models.len(), "model", "models"),
                n(workspace.syncs.len(), "sync", "syncs"),
                path.display(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(0)
}

fn export_text(workspace: &Workspace) -> CliResult<String> {
    let mut out = String::new();
    out.push_str(
        "# The connections, models and syncs of a ferry workspace, written by `ferry export`.\n\
         # Apply it with `ferry apply -f FILE` (prints the plan) and `--yes` (applies it).\n",
    );
    let _ = writeln!(out, "version: {FILE_VERSION}");

    if !workspace.connections.is_empty() {
        out.push_str("connections:\n");
    }
    for connection in &workspace.connections {
        let _ = writeln!(out, "  {}:", scalar(&connection.name));
        let _ = writeln!(out, "    kind: {}", connection.kind);
        let field = secret_field(connection.kind);
        match &connection.secret {
            Some(SecretRef::EnvVar(variable)) => {
                let _ = writeln!(out, "    {field}: {}", scalar(variable));
            }
            Some(SecretRef::Encrypted(_)) => {
                let (what, _) = secret_words(connection.kind);
                let _ = writeln!(
                    out,
                    "    # The {what} is stored encrypted in the workspace, not in this file;\n    \
                     # `{field}: VARIABLE` would manage it from this file instead."
                );
            }
            None => {}
        }
        for (key, value) in ConnectionSettings::of_record(connection)?.set_values() {
            match value {
                serde_json::Value::String(text) => {
                    let _ = writeln!(out, "    {key}: {}", scalar(&text));
                }
                other => {
                    let _ = writeln!(out, "    {key}: {other}");
                }
            }
        }
    }

    if !workspace.models.is_empty() {
        out.push_str("models:\n");
    }
    for model in &workspace.models {
        let _ = writeln!(out, "  {}:", scalar(&model.name));
        let _ = writeln!(out, "    connection: {}", scalar(&model.connection));
        let _ = writeln!(out, "    sql: {}", sql_scalar(&model.sql));
    }

    if !workspace.syncs.is_empty() {
        out.push_str("syncs:\n");
    }
    for sync in &workspace.syncs {
        let spec = &sync.spec;
        let _ = writeln!(out, "  {}:", scalar(&sync.name));
        let _ = writeln!(out, "    model: {}", scalar(&spec.model));
        let _ = writeln!(out, "    destination: {}", scalar(&spec.destination));
        let _ = writeln!(out, "    object: {}", enum_text(&spec.object));
        let _ = writeln!(out, "    behavior: {}", spec.behavior.as_str());
        let _ = writeln!(
            out,
            "    key: {}",
            pair(&spec.key.column, &spec.key.field, "      ")
        );
        if spec.mappings.is_empty() {
            out.push_str("    mappings: []\n");
        } else {
            out.push_str("    mappings:\n");
            for mapping in &spec.mappings {
                let _ = writeln!(
                    out,
                    "      - {}",
                    pair(&mapping.column, &mapping.field, "        ").trim_start()
                );
            }
        }
        let _ = writeln!(out, "    nulls: {}", enum_text(&spec.nulls));
        if let Some(schedule) = &spec.schedule {
            let _ = writeln!(out, "    schedule: {}", scalar(&schedule.to_string()));
        }
        if !spec.mirror.is_default() {
            let _ = writeln!(
                out,
                "    mirror:\n      max_retire_percent: {}\n      delete_customers: {}\n      cancel_subscriptions_now: {}\n      void_open_invoices: {}",
                spec.mirror.max_retire_percent,
                spec.mirror.delete_customers,
                spec.mirror.cancel_subscriptions_now,
                spec.mirror.void_open_invoices
            );
        }
        if let Some(invoice) = &spec.invoice {
            let _ = writeln!(
                out,
                "    invoice:\n      line_key: {}\n      finalize: {}\n      reissue_finalized: {}",
                scalar(&invoice.line_key),
                invoice.finalize.as_str(),
                invoice.reissue_finalized
            );
        }
        if let Some(alerts) = &spec.alerts {
            out.push_str("    alerts:\n");
            write_alerts(&mut out, alerts, "      ");
        }
    }
    if let Some(defaults) = &workspace.alert_defaults {
        out.push_str("alert_defaults:\n");
        write_alerts(&mut out, defaults, "  ");
    }
    if !workspace.sequences.is_empty() {
        out.push_str("sequences:\n");
    }
    for sequence in &workspace.sequences {
        let spec = &sequence.spec;
        let _ = writeln!(out, "  {}:", scalar(&sequence.name));
        let steps: Vec<String> = spec.steps.iter().map(|step| scalar(step)).collect();
        let _ = writeln!(out, "    steps: [{}]", steps.join(", "));
        if let Some(percent) = spec.stop_when_rejected_over_percent {
            let _ = writeln!(out, "    stop_when_rejected_over_percent: {percent}");
        }
        if let Some(schedule) = &spec.schedule {
            let _ = writeln!(out, "    schedule: {}", scalar(&schedule.to_string()));
        }
    }
    Ok(out)
}

/// The fields of alert settings, each on a line with `indent`.
fn write_alerts(out: &mut String, alerts: &ferry_core::AlertSettings, indent: &str) {
    let channels: Vec<String> = alerts.channels.iter().map(|c| scalar(c)).collect();
    let _ = writeln!(out, "{indent}channels: [{}]", channels.join(", "));
    let _ = writeln!(out, "{indent}on_failure: {}", alerts.on_failure);
    for (field, value) in [
        ("rejected_over_percent", alerts.rejected_over_percent),
        ("slower_than_minutes", alerts.slower_than_minutes),
        ("row_drop_over_percent", alerts.row_drop_over_percent),
    ] {
        if let Some(value) = value {
            let _ = writeln!(out, "{indent}{field}: {value}");
        }
    }
}

/// A string as a YAML scalar: plain when that reads back the same, quoted otherwise.
fn scalar(text: &str) -> String {
    if is_plain(text) {
        return text.to_string();
    }
    if text.chars().any(|c| c.is_control()) {
        // A JSON string is a valid double-quoted YAML scalar.
        return serde_json::to_string(text).expect("a string serializes");
    }
    serde_yaml_ng::to_string(text)
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| serde_json::to_string(text).expect("a string serializes"))
}

/// Safe unquoted, in block and in flow context alike.
fn is_plain(text: &str) -> bool {
    let reserved = [
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~",
    ];
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !reserved.contains(&text.to_ascii_lowercase().as_str())
}

/// `{column: a, field: b}`, or the block form when a part needs quoting.
fn pair(column: &str, field: &str, indent: &str) -> String {
    if is_plain(column) && is_plain(field) {
        format!("{{column: {column}, field: {field}}}")
    } else {
        format!(
            "\n{indent}column: {}\n{indent}field: {}",
            scalar(column),
            scalar(field)
        )
    }
}

/// A core enum in its serde (kebab-case) form.
fn enum_text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// SQL as a literal block (`|`), which keeps it readable; checked by reading it back, and
/// double-quoted when a block cannot carry it exactly.
fn sql_scalar(sql: &str) -> String {
    let block = literal_block(sql, "      ");
    let reads_back = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&format!(
        "models:\n  m:\n    sql: {block}\n"
    ))
    .ok()
    .and_then(|tree| {
        tree.get("models")?
            .get("m")?
            .get("sql")?
            .as_str()
            .map(str::to_string)
    });
    if reads_back.as_deref() == Some(sql) {
        block
    } else {
        serde_json::to_string(sql).expect("a string serializes")
    }
}

fn literal_block(text: &str, indent: &str) -> String {
    let chomp = if text.ends_with("\n\n") {
        "+"
    } else if text.ends_with('\n') {
        ""
    } else {
        "-"
    };
    // An explicit indentation when the text starts with a space or an empty line.
    let indicator = if text.starts_with(' ') || text.starts_with('\n') {
        "2"
    } else {
        ""
    };
    let mut out = format!("|{indicator}{chomp}");
    let body = text.strip_suffix('\n').unwrap_or(text);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(indent);
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `key: VALUE` back the way `ferry apply` would.
    fn read_back(yaml_value: &str) -> String {
        let tree: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&format!("models:\n  m:\n    sql: {yaml_value}\n"))
                .expect("valid YAML");
        tree["models"]["m"]["sql"]
            .as_str()
            .expect("a string")
            .to_string()
    }

    #[test]
    fn sql_reads_back_exactly() {
        for sql in [
            "select 1",
            "select 1\n",
            "select 1\n\n\n",
            "  select 1\nfrom t",
            "\nselect 1",
            "select a,\n\n  b -- x: y # z\nfrom t where s = 'it''s'",
            "select '\t' as tab",
            "select 1\n   ",
            "select '\u{7}' as bell",
            "select 1 -- trailing spaces   \nfrom t",
        ] {
            assert_eq!(read_back(&sql_scalar(sql)), sql, "{sql:?}");
        }
        assert!(sql_scalar("select a\nfrom t\n").starts_with("|\n"));
        assert!(sql_scalar("select a\nfrom t").starts_with("|-\n"));
    }

    #[test]
    fn scalars_read_back_exactly() {
        for text in [
            "name",
            "true",
            "null",
            "1",
            "a: b",
            "x,y",
            "#x",
            "- x",
            "/tmp/a b/warehouse.duckdb",
            "http://127.0.0.1:12111",
            "é",
            "'gold'",
            "'O''Brien'",
            "{{first_name}} {{last_name}}",
            "Dear {{ name }}",
            "cron */15 9-17 * * 1-5 in Europe/Paris",
            "cron 0 6 * * MON#1",
            "cron @daily",
        ] {
            let pair_yaml = format!("x: {}\ny: {}\n", scalar(text), pair(text, text, "  "));
            let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(&pair_yaml).expect(&pair_yaml);
            assert_eq!(tree["x"].as_str(), Some(text), "{pair_yaml}");
            assert_eq!(tree["y"]["column"].as_str(), Some(text), "{pair_yaml}");
            assert_eq!(tree["y"]["field"].as_str(), Some(text), "{pair_yaml}");
        }
    }

    #[test]
    fn paths_join_by_their_text() {
        let base = Path::new("/work/config");
        assert_eq!(
            join_clean(base, Path::new("../data/w.duckdb")),
            Path::new("/work/data/w.duckdb")
        );
        assert_eq!(
            join_clean(base, Path::new("./w.duckdb")),
            Path::new("/work/config/w.duckdb")
        );
        assert_eq!(
            join_clean(base, Path::new("/abs/w.duckdb")),
            Path::new("/abs/w.duckdb")
        );
    }
}
