//! The command line: argument definitions and dispatch. Commands are plain functions over an
//! opened workspace, so `ferry quickstart` (and tests) can call them in-process.

mod alerts;
mod config_file;
mod connections;
mod models;
mod output;
mod quickstart;
mod runs;
mod sequences;
mod serve;
mod syncs;

use clap::{Args, Parser, Subcommand};
use ferry_core::Secret;
use ferry_state::{StateStore, WorkspaceOptions};
use std::fmt;
use std::path::PathBuf;

/// Sync SQL models from your warehouse into Stripe.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The workspace directory (SQLite state and the key that encrypts secrets).
    #[arg(long, global = true, env = "FERRY_HOME", default_value = ".ferry")]
    pub workspace: PathBuf,
    /// Keep the state in PostgreSQL instead of the workspace's SQLite file (postgres://…).
    #[arg(long, global = true, env = "FERRY_STATE_URL", hide_env_values = true)]
    pub state_url: Option<String>,
    /// More log output (-v info, -vv debug). Secrets are never logged.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How log lines are written on stderr: `text` for people, or `json`, one object a line
    /// for a log collector; a line written during a run names its run and sync (`span.run`,
    /// `span.sync`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FERRY_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the workspace (done automatically by the other commands).
    Init,
    /// Connect a Stripe account or a warehouse.
    #[command(subcommand)]
    Connect(connections::ConnectCommand),
    /// List, test or remove connections.
    Connections(connections::ConnectionsArgs),
    /// Create, list and look at models (SQL queries that select the rows to sync).
    #[command(subcommand)]
    Model(models::ModelCommand),
    /// Create, preview and run syncs.
    #[command(subcommand)]
    Sync(syncs::SyncCommand),
    /// Run syncs one after another (products, then prices…), stopping when a step fails or
    /// rejects too many rows.
    #[command(subcommand)]
    Sequence(sequences::SequenceCommand),
    /// The run history of all syncs, or of one.
    Runs(runs::RunsArgs),
    /// One run in detail.
    #[command(subcommand)]
    Run(runs::RunCommand),
    /// Build a demo workspace, preview and run a sync into Stripe's emulator (or your test account).
    Quickstart(quickstart::QuickstartArgs),
    /// Default alert settings, the alerts raised now, and the events sent to alert channels.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Serve the REST API and the web UI.
    Serve(serve::ServeArgs),
    /// Create, list and revoke the API tokens that open the API and the UI.
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Make the workspace match a ferry.yaml: print the plan, apply it with --yes.
    Apply(config_file::ApplyArgs),
    /// Write the workspace's connections, models and syncs as a ferry.yaml.
    Export(config_file::ExportArgs),
    /// Run a local emulator of a destination's API.
    #[command(subcommand)]
    Emulate(EmulateCommand),
    /// Print shell completions: `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `ferry --version`: the version and the Stripe API version every request is pinned to.
pub fn version_text() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{} (Stripe API version {})",
            env!("CARGO_PKG_VERSION"),
            ferry_destinations::stripe::STRIPE_VERSION
        )
    });
    &TEXT
}

/// The parsed command line, with [`version_text`] as the version.
pub fn parse_command_line() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().version(version_text()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

#[derive(Subcommand, Debug)]
pub enum EmulateCommand {
    /// A Stripe-compatible API server for tests, demos and benchmarks.
    Stripe(ferry_stripe_emulator::EmulateStripeArgs),
}

/// An error with the exit code it maps to: 1 the run failed, 2 usage or configuration.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        self.code
    }
    pub fn config(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code: 2,
            error: error.into(),
        }
    }
    pub fn failed(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code: 1,
            error: error.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl From<ferry_state::StateError> for CliError {
    /// An unreachable workspace database is an outage (1), not a usage error (2).
    fn from(error: ferry_state::StateError) -> Self {
        if error.is_unreachable() {
            CliError::failed(error)
        } else {
            CliError::config(error)
        }
    }
}

impl From<ferry_engine::EngineError> for CliError {
    fn from(error: ferry_engine::EngineError) -> Self {
        use ferry_engine::EngineError as E;
        let code = match &error {
            E::UnknownSync(_)
            | E::UnknownConnection(_)
            | E::UnknownModel(_)
            | E::Query(_)
            | E::MissingDependency { .. }
            | E::WrongConnectionKind { .. }
            | E::InvalidSync(_)
            | E::Config(_) => 2,
            E::State(state) if !state.is_unreachable() => 2,
            E::State(_)
            | E::WarehouseUnreachable(_)
            | E::ConnectionTest(_)
            | E::LockLost
            | E::Source { .. }
            | E::StripeKey(_)
            | E::StripeLookup(_)
            | E::ChangeDetection(_)
            | E::RetirementRefused(_) => 1,
        };
        CliError {
            code,
            error: error.into(),
        }
    }
}

pub type CliResult<T = u8> = Result<T, CliError>;

pub fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info,ferry=info",
        _ => "debug,hyper=info,reqwest=info,h2=info,rustls=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            // Colours only for a person at a terminal, not in files, pipes or a service's journal.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The innermost span's fields (a run's `run` and `sync`) under `span`; the list of
        // every enclosing span would repeat them on each line for nothing.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

pub fn workspace_options(global: &GlobalArgs) -> CliResult<WorkspaceOptions> {
    let master_key = std::env::var("FERRY_MASTER_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .map(Secret::new);
    Ok(WorkspaceOptions {
        dir: global.workspace.clone(),
        state_url: global.state_url.clone(),
        master_key,
    })
}

pub async fn open_workspace(global: &GlobalArgs) -> CliResult<StateStore> {
    Ok(StateStore::initialize(&workspace_options(global)?).await?)
}

pub async fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Init => {
            let store = open_workspace(&cli.global).await?;
            println!(
                "Workspace ready at {} ({} state).",
                cli.global.workspace.display(),
                store.backend_name()
            );
            Ok(0)
        }
        Command::Connect(command) => {
            connections::connect(&open_workspace(&cli.global).await?, command).await
        }
        Command::Connections(args) => {
            connections::connections(&open_workspace(&cli.global).await?, args).await
        }
        Command::Model(command) => {
            models::model(&open_workspace(&cli.global).await?, command).await
        }
        Command::Sync(command) => syncs::sync(&open_workspace(&cli.global).await?, command).await,
        Command::Sequence(command) => {
            sequences::sequence(&open_workspace(&cli.global).await?, command).await
        }
        Command::Runs(args) => runs::runs(&open_workspace(&cli.global).await?, args).await,
        Command::Run(command) => runs::run(&open_workspace(&cli.global).await?, command).await,
        Command::Alerts(command) => {
            alerts::alerts(&open_workspace(&cli.global).await?, command).await
        }
        Command::Serve(args) => serve::serve(open_workspace(&cli.global).await?, args).await,
        Command::Token(command) => serve::token(&open_workspace(&cli.global).await?, command).await,
        Command::Apply(args) => config_file::apply(&open_workspace(&cli.global).await?, args).await,
        Command::Export(args) => {
            config_file::export(&open_workspace(&cli.global).await?, args).await
        }
        Command::Quickstart(args) => quickstart::quickstart(args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "ferry", &mut std::io::stdout());
            Ok(0)
        }
        Command::Emulate(EmulateCommand::Stripe(args)) => {
            ferry_stripe_emulator::run_from_cli(args)
                .await
                .map_err(CliError::failed)?;
            Ok(0)
        }
    }
}

/// `text` for people, `json` for programs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}
