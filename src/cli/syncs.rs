//! `ferry sync …`: declare, preview and run syncs.

use super::output::{plural, print_table};
use super::{CliError, CliResult, Format};
use clap::{Args, Subcommand, ValueEnum};
use ferry_core::{
    Behavior, FieldMapping, KeyMapping, MirrorSettings, NullPolicy, ObjectKind, Outcome, RunStatus,
    Schedule, SyncSpec,
};
use ferry_engine::{Preview, RunOptions, RunReport};
use ferry_state::StateStore;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum SyncCommand {
    /// Declare a sync: model → Stripe object, behavior, mapping key and mapper.
    Create(Box<SyncCreateArgs>),
    /// Show what a run would create, update, leave alone and reject, and why. Sends no write.
    Preview {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run a sync once.
    Run(SyncRunArgs),
    /// List the syncs.
    List,
    /// One sync's settings and last runs.
    Show { name: String },
    /// Remove a sync with its run history and snapshot (refused while it runs).
    Remove { name: String },
    /// Stop the sync's schedule, and runs asked for by `ferry sync run` and the API, until it
    /// is resumed; its settings and history are kept.
    Pause { name: String },
    /// Start the sync's schedule again, counted from now (skipped runs are not made up).
    Resume { name: String },
}

#[derive(Args, Debug)]
pub struct SyncCreateArgs {
    pub name: String,
    #[arg(long)]
    pub model: String,
    /// The Stripe connection to write to.
    #[arg(long)]
    pub destination: String,
    /// The Stripe object each row becomes.
    #[arg(long, value_enum, default_value_t = ObjectArg(ObjectKind::Customer))]
    pub object: ObjectArg,
    #[arg(long, value_enum, default_value_t = BehaviorArg::UpdateOrCreate)]
    pub behavior: BehaviorArg,
    /// COLUMN=FIELD: the column that identifies a record and the Stripe field it matches: a
    /// customer's `email`, a product's own `id` (`sku=id`), or an external id in metadata
    /// (`user_id=metadata.user_id`).
    #[arg(long)]
    pub key: String,
    /// COLUMN=FIELD, repeatable: a column written into a Stripe field (`name`, `phone`,
    /// `address.city`, `metadata.plan`, …). Instead of a column: a constant in single quotes
    /// (`'gold'=metadata.tier`) or a template (`{{first_name}} {{last_name}}=name`). A field
    /// holding another record's id can name that record by its key instead:
    /// `sku=product(metadata.sku)` sends the id of the product whose `metadata.sku` is `sku`.
    #[arg(long = "map")]
    pub mappings: Vec<String>,
    /// What a NULL does: leave the Stripe field alone, or clear it.
    #[arg(long, value_enum, default_value_t = NullsArg::Skip)]
    pub nulls: NullsArg,
    /// Run by itself while `ferry serve` runs: `every 15m`, `hourly`, `daily at 06:30`,
    /// `daily at 06:30 in Europe/Paris`, `cron 0 6 * * 1-5` (UTC unless a zone follows `in`).
    #[arg(long, value_parser = Schedule::parse)]
    pub schedule: Option<Schedule>,
    /// Mirror: a run retires at most this share (percent) of the sync's records, unless run
    /// with --allow-mass-retire.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_retire_percent: u32,
    /// Mirror on customers: delete the customers whose rows left the model (Stripe cannot undo
    /// a deletion; without this flag a customer sync cannot mirror).
    #[arg(long)]
    pub delete_customers: bool,
    /// Mirror on subscriptions: cancel the subscriptions whose rows left the model at once,
    /// not at the end of the period already paid for.
    #[arg(long)]
    pub cancel_now: bool,
    /// Mirror on invoices: void the finalized invoices whose rows left the model (drafts are
    /// deleted either way; without this flag a finalized one is left and reported).
    #[arg(long)]
    pub void_open: bool,
    /// Invoices from order lines (one model row per line): the column telling an invoice's
    /// lines apart; required with `--object invoice`.
    #[arg(long)]
    pub line_key: Option<String>,
    /// Invoices: `never` leaves them drafts; `when-created` finalizes each once its lines are
    /// on it (and sends those collected by `send_invoice`).
    #[arg(long, value_parser = parse_finalize)]
    pub finalize: Option<ferry_core::Finalize>,
    /// Invoices: a finalized invoice whose lines changed in the model is voided and issued
    /// again as a new invoice (without this flag it is reported and left as it is; a paid
    /// one is always reported).
    #[arg(long)]
    pub reissue_finalized: bool,
    #[command(flatten)]
    pub alerts: super::alerts::AlertArgs,
}

fn parse_finalize(text: &str) -> Result<ferry_core::Finalize, String> {
    ferry_core::Finalize::parse(text).ok_or_else(|| {
        format!("`{text}` is not a finalize setting: give `never` or `when-created`")
    })
}

/// `--object`: every object of the registry, by the name `ferry.yaml` and the API use.
#[derive(Debug, Clone, Copy)]
pub struct ObjectArg(pub ObjectKind);

impl ValueEnum for ObjectArg {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: std::sync::LazyLock<Vec<ObjectArg>> =
            std::sync::LazyLock::new(|| ObjectKind::ALL.map(ObjectArg).to_vec());
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let schema = ferry_destinations::stripe::stripe_object(self.0).schema();
        let keys: Vec<&str> = schema.key_fields.iter().map(|key| key.path).collect();
        let matched = match keys.as_slice() {
            [] => "an external id in metadata".to_string(),
            keys => format!("{} or an external id in metadata", keys.join(" or ")),
        };
        Some(
            clap::builder::PossibleValue::new(self.0.as_str())
                .help(format!("{}, matched by {matched}", schema.plural)),
        )
    }
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum BehaviorArg {
    /// Update the matched records, create the others.
    UpdateOrCreate,
    /// Update the matched records; report the others as not found.
    UpdateOnly,
    /// Create the records that have no match; leave the matched ones alone.
    CreateOnly,
    /// Update or create, and retire the records whose rows left the model (customers deleted
    /// with --delete-customers, products deleted or archived, prices archived).
    Mirror,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum NullsArg {
    Skip,
    Clear,
}

#[derive(Args, Debug)]
pub struct SyncRunArgs {
    pub name: String,
    /// Ignore what earlier runs confirmed: look every record up again and send what differs.
    #[arg(long)]
    pub full_resync: bool,
    /// Mirror: retire what left the model even beyond the sync's max retire percent (after
    /// checking the model: an empty table looks the same).
    #[arg(long)]
    pub allow_mass_retire: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Exit with code 3 when any row was rejected.
    #[arg(long)]
    pub fail_on_rejected: bool,
    /// Run a paused sync all the same (without it a paused sync refuses to run, so that an
    /// orchestrator's task does not write while someone paused the sync).
    #[arg(long)]
    pub even_if_paused: bool,
}

pub async fn sync(store: &StateStore, command: SyncCommand) -> CliResult {
    match command {
        SyncCommand::Create(args) => create(store, *args).await,
        SyncCommand::Preview { name, format } => {
            let setup = ferry_engine::load_sync_setup(store, &name).await?;
            let preview = ferry_engine::preview_sync(store, &setup).await?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&preview).expect("a preview serializes")
                ),
                Format::Text => print_preview(&name, &preview),
            }
            Ok(0)
        }
        SyncCommand::Run(args) => {
            if let Some(sync) = store.get_sync(&args.name).await? {
                if let (Some(paused_at), false) = (sync.paused_at, args.even_if_paused) {
                    return Err(CliError::config(anyhow::anyhow!(
                        "sync '{}' is paused (since {}); resume it with `ferry sync resume {}`, \
                         or pass --even-if-paused to run it once all the same",
                        args.name,
                        paused_at.format("%Y-%m-%d %H:%M UTC"),
                        args.name
                    )));
                }
            }
            let options = RunFlags {
                full_resync: args.full_resync,
                allow_mass_retire: args.allow_mass_retire,
            };
            let report = run(store, &args.name, options, args.format).await?;
            Ok(run_exit_code(&report, args.fail_on_rejected))
        }
        SyncCommand::List => {
            let syncs = store.list_syncs().await?;
            if syncs.is_empty() {
                println!("No syncs yet. Create one with `ferry sync create NAME --model M --destination STRIPE --key email=email --map name=name`.");
                return Ok(0);
            }
            let mut rows = Vec::new();
            let now = chrono::Utc::now();
            for sync in syncs {
                let last = store
                    .list_runs(Some(&sync.name), 1)
                    .await?
                    .into_iter()
                    .next();
                rows.push(vec![
                    sync.name.clone(),
                    sync.spec.model.clone(),
                    sync.spec.destination.clone(),
                    sync.spec.behavior.as_str().to_string(),
                    next_run_text(&sync, last.as_ref().map(|r| r.started_at), now),
                    last.map(|r| {
                        format!(
                            "{} {}",
                            r.status.as_str(),
                            r.started_at.format("%Y-%m-%d %H:%M")
                        )
                    })
                    .unwrap_or_else(|| "never run".into()),
                ]);
            }
            print_table(
                &[
                    "NAME",
                    "MODEL",
                    "DESTINATION",
                    "BEHAVIOR",
                    "NEXT RUN",
                    "LAST RUN",
                ],
                &rows,
            );
            Ok(0)
        }
        SyncCommand::Remove { name } => {
            ferry_engine::declare::remove_sync(store, &name).await?;
            println!("Removed sync '{name}' with its run history.");
            Ok(0)
        }
        SyncCommand::Pause { name } => pause_or_resume(store, &name, true).await,
        SyncCommand::Resume { name } => pause_or_resume(store, &name, false).await,
        SyncCommand::Show { name } => {
            let sync = store.get_sync(&name).await?.ok_or_else(|| {
                CliError::config(anyhow::anyhow!(
                    "no sync named '{name}'; `ferry sync list` lists them"
                ))
            })?;
            let spec = &sync.spec;
            println!(
                "Sync '{}': model '{}' → Stripe {} in '{}'",
                sync.name,
                spec.model,
                ferry_destinations::stripe::stripe_object(spec.object)
                    .schema()
                    .plural,
                spec.destination
            );
            println!(
                "  behavior: {}; nulls: {}",
                spec.behavior.as_str(),
                match spec.nulls {
                    NullPolicy::Skip => "skip",
                    NullPolicy::Clear => "clear",
                }
            );
            println!("  key:      {} = {}", spec.key.column, spec.key.field);
            if spec.behavior == Behavior::Mirror {
                println!(
                    "  mirror:   retires at most {}% of the records per run{}",
                    spec.mirror.max_retire_percent,
                    if spec.mirror.delete_customers {
                        "; deletes customers"
                    } else if spec.mirror.cancel_subscriptions_now {
                        "; cancels subscriptions at once"
                    } else {
                        ""
                    }
                );
            }
            if let Some(schedule) = &spec.schedule {
                println!("  schedule: {schedule} (while `ferry serve` runs)");
            }
            match &spec.alerts {
                Some(alerts) => println!("  alerts:   {}", alerts.summary()),
                None => println!("  alerts:   the workspace's defaults (`ferry alerts show`)"),
            }
            for alert in store.raised_alerts(&name).await? {
                println!(
                    "  ALERT:    {} since {}: {}",
                    alert.condition,
                    alert.raised_at.format("%Y-%m-%d %H:%M UTC"),
                    alert.message
                );
            }
            let runs = store.list_runs(Some(&name), 5).await?;
            if spec.schedule.is_some() || sync.paused_at.is_some() {
                println!(
                    "  next run: {}",
                    next_run_text(
                        &sync,
                        runs.first().map(|run| run.started_at),
                        chrono::Utc::now()
                    )
                );
            }
            for mapping in &spec.mappings {
                println!("  map:      {} → {}", mapping.column, mapping.field);
            }
            if !runs.is_empty() {
                println!();
                super::runs::print_runs(&runs);
            }
            Ok(0)
        }
    }
}

async fn pause_or_resume(store: &StateStore, name: &str, paused: bool) -> CliResult {
    let sync = store.set_sync_paused(name, paused).await?.ok_or_else(|| {
        CliError::config(anyhow::anyhow!(
            "no sync named '{name}'; `ferry sync list` lists them"
        ))
    })?;
    if paused {
        println!(
            "Paused sync '{name}': its schedule starts nothing and `ferry sync run` and \
             the API refuse to run it until `ferry sync resume {name}`."
        );
    } else {
        let last_start = store
            .list_runs(Some(name), 1)
            .await?
            .into_iter()
            .next()
            .map(|run| run.started_at);
        println!(
            "Resumed sync '{name}'; next scheduled run: {}.",
            next_run_text(&sync, last_start, chrono::Utc::now())
        );
    }
    Ok(0)
}

/// When the schedule starts the next run, as the CLI shows it.
fn next_run_text(
    sync: &ferry_state::SyncRecord,
    last_start: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    if let Some(paused_at) = sync.paused_at {
        return format!("paused since {}", paused_at.format("%Y-%m-%d %H:%M UTC"));
    }
    match sync.next_scheduled_run(last_start, now) {
        None => "manual".into(),
        Some(due) if due <= now => "due now (while `ferry serve` runs)".into(),
        Some(due) => due.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

fn parse_pair(text: &str, flag: &str) -> CliResult<(String, String)> {
    // At the last `=`: field paths hold none, constants and templates may.
    match text.rsplit_once('=') {
        Some((column, field)) if !column.trim().is_empty() && !field.trim().is_empty() => {
            Ok((column.trim().to_string(), field.trim().to_string()))
        }
        _ => Err(CliError::config(anyhow::anyhow!(
            "{flag} takes COLUMN=FIELD (for example `{flag} email=email`), got `{text}`"
        ))),
    }
}

async fn create(store: &StateStore, args: SyncCreateArgs) -> CliResult {
    let (key_column, key_field) = parse_pair(&args.key, "--key")?;
    let mut mappings = Vec::new();
    for text in &args.mappings {
        let (column, field) = parse_pair(text, "--map")?;
        mappings.push(FieldMapping { column, field });
    }
    let invoice = match (&args.line_key, args.finalize) {
        (Some(line_key), finalize) => Some(ferry_core::InvoiceSettings {
            line_key: line_key.clone(),
            finalize: finalize.unwrap_or_default(),
            reissue_finalized: args.reissue_finalized,
        }),
        (None, Some(_)) => {
            return Err(CliError::config(anyhow::anyhow!(
                "--finalize applies to invoices from order lines: give --line-key COLUMN too"
            )))
        }
        (None, None) if args.reissue_finalized => {
            return Err(CliError::config(anyhow::anyhow!(
            "--reissue-finalized applies to invoices from order lines: give --line-key COLUMN too"
        )))
        }
        (None, None) => None,
    };
    let spec = SyncSpec {
        invoice,
        model: args.model.clone(),
        destination: args.destination.clone(),
        object: args.object.0,
        behavior: match args.behavior {
            BehaviorArg::UpdateOrCreate => Behavior::UpdateOrCreate,
            BehaviorArg::UpdateOnly => Behavior::UpdateOnly,
            BehaviorArg::CreateOnly => Behavior::CreateOnly,
            BehaviorArg::Mirror => Behavior::Mirror,
        },
        key: KeyMapping {
            column: key_column,
            field: key_field,
        },
        mappings,
        nulls: match args.nulls {
            NullsArg::Skip => NullPolicy::Skip,
            NullsArg::Clear => NullPolicy::Clear,
        },
        schedule: args.schedule,
        alerts: args.alerts.settings(),
        mirror: MirrorSettings {
            max_retire_percent: args.max_retire_percent,
            delete_customers: args.delete_customers,
            cancel_subscriptions_now: args.cancel_now,
            void_open_invoices: args.void_open,
        },
    };
    ferry_engine::declare::save_sync(store, &args.name, &spec).await?;
    println!(
        "Saved sync '{}': {} rows of '{}' into Stripe {}, matched on {} = {}, {} mapped. Next: `ferry sync preview {}`.",
        args.name,
        spec.behavior.as_str(),
        spec.model,
        ferry_destinations::stripe::stripe_object(spec.object)
            .schema()
            .plural,
        spec.key.column,
        spec.key.field,
        plural(spec.mappings.len() as u64, "field", "fields"),
        args.name
    );
    Ok(0)
}

pub fn print_preview(name: &str, preview: &Preview) {
    println!(
        "Preview of sync '{name}' ({} read from the model):",
        plural(preview.rows, "row", "rows")
    );
    let lines = [
        ("to create", preview.create),
        ("to update", preview.update),
        ("to replace", preview.replace),
        ("to retire", preview.retire),
        ("unchanged", preview.unchanged),
        ("not found", preview.not_found),
        ("rejected", preview.rejected),
        ("lookup failed", preview.failed),
    ];
    for (label, count) in lines {
        if count > 0 || matches!(label, "to create" | "to update" | "unchanged" | "rejected") {
            println!("  {label:<14}{count:>8}");
        }
    }
    println!(
        "  The run will send about {}.",
        plural(preview.requests_estimate, "request", "requests")
    );
    if let Some(refused) = &preview.retire_refused {
        println!("  Mirror, as a run would say: {refused}.");
    }
    for (action, title) in [
        ("create", "Examples of creates"),
        ("update", "Examples of updates"),
        ("replace", "Examples of replacements"),
        ("retire", "Examples of records to retire"),
        ("reject", "Rejected rows"),
        ("fail", "Failed lookups"),
        ("not_found", "Not found in Stripe"),
    ] {
        let examples: Vec<_> = preview
            .examples
            .iter()
            .filter(|e| e.action == action)
            .collect();
        if examples.is_empty() {
            continue;
        }
        println!("\n{title}:");
        for example in examples {
            let id = example
                .stripe_id
                .as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default();
            println!("  row {} `{}`{id}", example.row, example.key);
            if let Some(reason) = &example.reason {
                println!("      {reason}");
            }
            if let Some(changes) = example.changes.as_ref().and_then(|c| c.as_object()) {
                for (field, change) in changes {
                    let before = &change["before"];
                    let after = &change["after"];
                    if before.is_null() {
                        println!("      {field}: {after}");
                    } else {
                        println!("      {field}: {before} → {after}");
                    }
                }
            }
        }
    }
}

/// How a run was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    pub full_resync: bool,
    pub allow_mass_retire: bool,
}

/// Runs a sync with a progress bar on a terminal and a clean stop on Ctrl-C / SIGTERM.
pub async fn run(
    store: &StateStore,
    name: &str,
    flags: RunFlags,
    format: Format,
) -> CliResult<RunReport> {
    let setup = ferry_engine::load_sync_setup(store, name).await?;
    let cancel = Arc::new(AtomicBool::new(false));
    spawn_stop_listener(cancel.clone());
    let bar = if std::io::stderr().is_terminal() && format == Format::Text {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_bar} {pos}/{len} rows  {per_sec}  {msg}")
                .expect("the template is valid"),
        );
        bar.set_message("reading the model…");
        Some(bar)
    } else {
        None
    };
    let options = RunOptions {
        full_resync: flags.full_resync,
        allow_mass_retire: flags.allow_mass_retire,
        progress: bar
            .clone()
            .map(|bar| Arc::new(move |_: Outcome| bar.inc(1)) as ferry_engine::ProgressFn),
        on_plan: bar.clone().map(|bar| {
            Arc::new(move |rows: u64| {
                bar.set_length(rows);
                bar.set_message("syncing");
            }) as Arc<dyn Fn(u64) + Send + Sync>
        }),
        cancel,
        // `sync.started` goes out while the run works, not after it.
        on_start: Some({
            let store = store.clone();
            Arc::new(move |_run_id: String| {
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(error) = ferry_engine::alerts::deliver_due(&store).await {
                        tracing::warn!(%error, "Could not send the run's start to the alert channels; it waits in the workspace.");
                    }
                });
            }) as Arc<dyn Fn(String) + Send + Sync>
        }),
    };
    let report = ferry_engine::run_sync(store, &setup, &options).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // The run's events go out now; one that a channel does not take waits in the workspace
    // for `ferry serve` (or the next run) to try again, so a receiver that is down costs this
    // command at most the bound below.
    match tokio::time::timeout(
        std::time::Duration::from_secs(30),
        ferry_engine::alerts::deliver_due(store),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "Could not send the run's alert deliveries; they wait in the workspace."),
        Err(_) => tracing::warn!("Sending the run's alert deliveries takes long; the rest wait in the workspace for `ferry serve`."),
    }
    match format {
        Format::Json => {
            let c = &report.counts;
            let json = serde_json::json!({
                "run_id": report.run_id, "status": report.status.as_str(),
                "created": c.created, "updated": c.updated, "unchanged": c.unchanged,
                "not_found": c.not_found, "rejected": c.rejected, "failed": c.failed,
                "not_attempted": c.not_attempted, "retired": c.retired,
                "requests": c.requests, "rows": c.rows, "error": report.error,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("serializes")
            );
        }
        Format::Text => print_report(name, &report),
    }
    Ok(report)
}

pub fn print_report(name: &str, report: &RunReport) {
    let c = &report.counts;
    let verdict = match report.status {
        RunStatus::Completed => "completed",
        RunStatus::Failed => "FAILED",
        RunStatus::Cancelled => "was cancelled",
        RunStatus::Running | RunStatus::Interrupted => "did not finish",
    };
    println!(
        "Run {} of sync '{name}' {verdict}: {} read.",
        report.run_id,
        plural(c.rows, "row", "rows")
    );
    let mut not_attempted = if c.not_attempted > 0 {
        format!(", {} not attempted", c.not_attempted)
    } else {
        String::new()
    };
    if c.retired > 0 {
        not_attempted.push_str(&format!(
            "; {} retired (their rows left the model)",
            c.retired
        ));
    }
    println!(
        "  {} created, {} updated, {} unchanged, {} not found, {} rejected, {} failed{not_attempted}; {} sent to Stripe.",
        c.created,
        c.updated,
        c.unchanged,
        c.not_found,
        c.rejected,
        c.failed,
        plural(c.requests, "request", "requests")
    );
    if let Some(error) = &report.error {
        println!("  Reason: {error}");
    }
    let show = |outcome: &str| format!("`ferry run show {} --records {outcome}`", report.run_id);
    match (c.rejected > 0, c.failed > 0) {
        (true, true) => println!(
            "  See why with {} and {}; they are retried on the next run.",
            show("rejected"),
            show("failed")
        ),
        (true, false) => println!(
            "  See why with {}; they are retried on the next run.",
            show("rejected")
        ),
        (false, true) => println!(
            "  See why with {}; they are retried on the next run.",
            show("failed")
        ),
        (false, false) => {}
    }
    if c.not_attempted > 0 {
        println!("  The rows not attempted are taken up by the next run.");
    }
}

fn run_exit_code(report: &RunReport, fail_on_rejected: bool) -> u8 {
    match report.status {
        RunStatus::Completed if fail_on_rejected && report.counts.rejected > 0 => 3,
        RunStatus::Completed => 0,
        _ => 1,
    }
}

/// First Ctrl-C / SIGTERM: stop sending, finish what is in flight, record the run as cancelled.
fn spawn_stop_listener(cancel: Arc<AtomicBool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        eprintln!(
            "Stopping: finishing the requests in flight, then recording the run as cancelled…"
        );
        cancel.store(true, Ordering::Relaxed);
    });
}
