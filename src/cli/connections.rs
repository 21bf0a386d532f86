//! `ferry connect …` and `ferry connections …`: Stripe accounts and warehouses.

use super::output::print_table;
use super::{CliError, CliResult};
use clap::{Arg, ArgAction, ArgGroup, ArgMatches, Args, Command, Subcommand};
use ferry_core::Secret;
use ferry_engine::connections::{self, ConnectionSettings, KindSpec, SettingSpec, SettingValue};
use ferry_state::{ConnectionKind, ConnectionRecord, SecretInput, StateStore};

/// `ferry connect KIND NAME …`: one subcommand per kind of the registry, its flags made from
/// the kind's settings (`--path`, `--statement-timeout`, …), its secret's two flags (`--url`
/// or `--url-env`) and `--skip-test`. Nothing here knows a kind: a new warehouse's registry
/// entry is its subcommand.
#[derive(Debug)]
pub struct ConnectCommand {
    kind: ConnectionKind,
    name: String,
    secret: Option<SecretInput>,
    /// Each setting given, by its stored name, with the texts given for it.
    settings: Vec<(&'static SettingSpec, Vec<String>)>,
    skip_test: bool,
}

impl ConnectCommand {
    /// The command `ferry connect KIND NAME` with these settings (by their stored names, as
    /// typed) would give: for the quickstart, which shows the command and runs it.
    pub fn new(
        kind: ConnectionKind,
        name: &str,
        secret: Option<SecretInput>,
        settings: &[(&str, String)],
    ) -> ConnectCommand {
        let spec = connections::kind_spec(kind);
        ConnectCommand {
            kind,
            name: name.to_string(),
            secret,
            settings: settings
                .iter()
                .map(|(key, text)| {
                    let setting = spec.setting(key).expect("a setting of the kind");
                    (setting, vec![text.clone()])
                })
                .collect(),
            skip_test: false,
        }
    }
}

/// The argument id of a kind's setting: its stored name.
fn setting_arg(setting: &SettingSpec) -> Arg {
    let arg = Arg::new(setting.key)
        .long(setting.flag.trim_start_matches("--"))
        .value_name(setting.value.value_name())
        .help(format!("{}.", setting.help))
        .required(setting.required);
    match setting.value {
        SettingValue::Paths => arg.action(ArgAction::Append),
        SettingValue::Seconds => arg.allow_hyphen_values(true).value_parser(seconds_arg),
        SettingValue::Count => arg.value_parser(clap::value_parser!(u32)),
        SettingValue::Text if setting.key == connections::CHANGE_DETECTION_SCHEMA => {
            arg.value_name("SCHEMA").value_parser(schema_arg)
        }
        SettingValue::Text | SettingValue::Path => arg,
    }
}

fn kind_command(spec: &'static KindSpec) -> Command {
    let mut command = Command::new(spec.kind.as_str()).about(spec.help).arg(
        Arg::new("name")
            .required(true)
            .help("The connection's name"),
    );
    if let Some(secret) = &spec.secret {
        let value = secret.value_field;
        let env = secret.env_field;
        command = command
            .arg(
                Arg::new(value)
                    .long(secret.value_flag().trim_start_matches("--").to_string())
                    .value_name("VALUE")
                    .help(format!("The {} itself. {}.", secret.what, secret.help))
                    .conflicts_with(env),
            )
            .arg(
                Arg::new(env)
                    .long(secret.env_flag().trim_start_matches("--").to_string())
                    .value_name("VARIABLE")
                    .help(format!(
                        "Read the {} from this environment variable at every use; only the \
                         variable's name is stored.",
                        secret.what
                    )),
            )
            .group(ArgGroup::new("secret").args([value, env]).required(true));
    }
    for setting in spec.settings {
        command = command.arg(setting_arg(setting));
    }
    command.arg(
        Arg::new("skip_test")
            .long("skip-test")
            .action(ArgAction::SetTrue)
            .help("Save the connection without testing it."),
    )
}

impl clap::FromArgMatches for ConnectCommand {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let (name, matches) = matches.subcommand().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::MissingSubcommand,
                "name the kind of connection: ferry connect KIND NAME …",
            )
        })?;
        let spec = KindSpec::named(name).ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidSubcommand,
                format!("no kind of connection is named {name}"),
            )
        })?;
        let text = |id: &str| -> Vec<String> {
            matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|value| value.to_string_lossy().into_owned())
                .collect()
        };
        let secret = spec.secret.as_ref().and_then(|secret| {
            let value = text(secret.value_field).pop();
            let env = text(secret.env_field).pop();
            match (value, env) {
                (Some(value), _) => Some(SecretInput::Value(Secret::new(value))),
                (None, Some(variable)) => Some(SecretInput::EnvVar(variable)),
                (None, None) => None,
            }
        });
        Ok(ConnectCommand {
            kind: spec.kind,
            name: matches
                .get_one::<String>("name")
                .cloned()
                .unwrap_or_default(),
            secret,
            settings: spec
                .settings
                .iter()
                .map(|setting| (setting, text(setting.key)))
                .filter(|(_, texts)| !texts.is_empty())
                .collect(),
            skip_test: matches.get_flag("skip_test"),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Subcommand for ConnectCommand {
    fn augment_subcommands(mut command: Command) -> Command {
        for spec in &connections::REGISTRY {
            command = command.subcommand(kind_command(spec));
        }
        command.subcommand_required(true)
    }

    fn augment_subcommands_for_update(command: Command) -> Command {
        Self::augment_subcommands(command)
    }

    fn has_subcommand(name: &str) -> bool {
        KindSpec::named(name).is_some()
    }
}

fn seconds_arg(text: &str) -> Result<u32, String> {
    let max = ferry_engine::declare::MAX_TIMEOUT_SECONDS;
    text.parse::<u32>()
        .ok()
        .filter(|seconds| *seconds <= max)
        .ok_or_else(|| format!("give a whole number of seconds between 0 (no limit) and {max}"))
}

fn schema_arg(text: &str) -> Result<String, String> {
    ferry_source::warehouse_diff::check_schema_name(text).map(|()| text.to_string())
}

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    #[command(subcommand)]
    pub command: Option<ConnectionsCommand>,
}

#[derive(Subcommand, Debug)]
pub enum ConnectionsCommand {
    /// Test a connection: Stripe reads /v1/balance, a warehouse runs `SELECT 1`.
    Test { name: String },
    /// Remove a connection no model or sync uses.
    Remove { name: String },
}

pub async fn connect(store: &StateStore, command: ConnectCommand) -> CliResult {
    let spec = connections::kind_spec(command.kind);
    let base = std::env::current_dir().unwrap_or_default();
    let given = command
        .settings
        .iter()
        .filter_map(|(setting, texts)| {
            connections::setting_from_text(setting, texts, &base)
                .map(|value| (setting.key.to_string(), value))
        })
        .collect();
    let settings = ConnectionSettings::from_door(&command.name, command.kind, given, &base)?;
    let connection =
        ferry_engine::declare::new_connection(&command.name, &settings, command.secret);
    let saved =
        ferry_engine::declare::save_connection(store, &connection, !command.skip_test).await?;
    println!(
        "Connected {} as '{}' ({}){}.",
        spec.label,
        command.name,
        describe(&saved),
        if command.skip_test {
            ", not tested"
        } else {
            "; it works"
        }
    );
    Ok(0)
}

pub async fn connections(store: &StateStore, args: ConnectionsArgs) -> CliResult {
    match args.command {
        None => {
            let list = store.list_connections().await?;
            if list.is_empty() {
                println!("No connections yet. Add one with `ferry connect stripe NAME --api-key-env STRIPE_API_KEY` or `ferry connect duckdb NAME --path FILE`.");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| vec![c.name.clone(), c.kind.as_str().to_string(), describe(c)])
                .collect();
            print_table(&["NAME", "KIND", "DETAILS"], &rows);
        }
        Some(ConnectionsCommand::Test { name }) => {
            ferry_engine::declare::test_saved_connection(store, &name).await?;
            println!("Connection '{name}' works.");
        }
        Some(ConnectionsCommand::Remove { name }) => {
            if store.remove_connection(&name).await? {
                println!("Removed connection '{name}'.");
            } else {
                return Err(CliError::config(anyhow::anyhow!(
                    "no connection named '{name}'"
                )));
            }
        }
    }
    Ok(0)
}

/// A connection's details for the listing; settings that cannot be read show the error, so the
/// other connections are still listed.
fn describe(connection: &ConnectionRecord) -> String {
    let secret = connection
        .secret
        .as_ref()
        .map(|s| s.describe())
        .unwrap_or_default();
    match ConnectionSettings::of_record(connection) {
        Ok(settings) => settings.details(&secret).join("  "),
        Err(error) => error.to_string(),
    }
}
