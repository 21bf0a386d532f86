//! `ferry runs` and `ferry run show`: the run history and every record's outcome.

use super::output::{clip, print_table};
use super::{CliError, CliResult};
use clap::{Args, Subcommand, ValueEnum};
use ferry_core::Outcome;
use ferry_state::{RunRecord, StateStore};

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// Only this sync's runs.
    pub sync: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// A run's totals and its records.
    Show(RunShowArgs),
}

#[derive(Args, Debug)]
pub struct RunShowArgs {
    pub run_id: String,
    #[arg(long, value_enum, default_value_t = RecordFilter::All)]
    pub records: RecordFilter,
    #[arg(long, value_enum, default_value_t = RecordFormat::Text)]
    pub format: RecordFormat,
    /// At most this many records (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum RecordFilter {
    All,
    Created,
    Updated,
    Unchanged,
    NotFound,
    Rejected,
    Failed,
    /// Mirror: records retired because their rows left the model.
    Retired,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum RecordFormat {
    Text,
    Json,
    Csv,
}

pub async fn runs(store: &StateStore, args: RunsArgs) -> CliResult {
    ferry_engine::reap_dead_runs(store, args.sync.as_deref()).await?;
    let runs = store.list_runs(args.sync.as_deref(), args.limit).await?;
    if runs.is_empty() {
        println!("No runs yet. Start one with `ferry sync run NAME`.");
    } else {
        print_runs(&runs);
    }
    Ok(0)
}

pub fn print_runs(runs: &[RunRecord]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let c = &r.counts;
            vec![
                r.id.clone(),
                r.sync.clone(),
                r.status.as_str().to_string(),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.finished_at
                    .map(|f| format!("{:.1}s", (f - r.started_at).as_seconds_f64()))
                    .unwrap_or_else(|| "-".into()),
                c.rows.to_string(),
                c.created.to_string(),
                c.updated.to_string(),
                c.unchanged.to_string(),
                c.rejected.to_string(),
                c.failed.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "RUN",
            "SYNC",
            "STATUS",
            "STARTED (UTC)",
            "TOOK",
            "ROWS",
            "CREATED",
            "UPDATED",
            "UNCHANGED",
            "REJECTED",
            "FAILED",
        ],
        &rows,
    );
}

pub async fn run(store: &StateStore, command: RunCommand) -> CliResult {
    let RunCommand::Show(args) = command;
    ferry_engine::reap_dead_runs(store, None).await?;
    let run = store.get_run(&args.run_id).await?.ok_or_else(|| {
        CliError::config(anyhow::anyhow!(
            "no run '{}'; `ferry runs` lists them",
            args.run_id
        ))
    })?;
    let filter = match args.records {
        RecordFilter::All => None,
        RecordFilter::Created => Some(Outcome::Created),
        RecordFilter::Updated => Some(Outcome::Updated),
        RecordFilter::Unchanged => Some(Outcome::Unchanged),
        RecordFilter::NotFound => Some(Outcome::NotFound),
        RecordFilter::Rejected => Some(Outcome::Rejected),
        RecordFilter::Failed => Some(Outcome::Failed),
        RecordFilter::Retired => Some(Outcome::Retired),
    };
    let limit = if args.limit == 0 {
        usize::MAX
    } else {
        args.limit
    };
    let records = store.list_run_records(&run.id, filter, 0, limit).await?;
    let dashboard = dashboard_base(store, &run.sync).await;
    let dashboard_url = |id: &str| dashboard.as_ref().map(|base| format!("{base}/{id}"));
    let link = |id: &Option<String>| match id {
        Some(id) => dashboard_url(id).unwrap_or_else(|| id.clone()),
        None => String::new(),
    };
    match args.format {
        RecordFormat::Json => {
            let json = serde_json::json!({
                "run": {"id": run.id, "sync": run.sync, "status": run.status.as_str(), "started_at": run.started_at.to_rfc3339(), "finished_at": run.finished_at.map(|f| f.to_rfc3339()), "counts": run.counts, "error": run.error},
                "records": records.iter().map(|r| serde_json::json!({
                    "row": r.row_number, "key": r.key, "outcome": r.outcome.as_str(), "stripe_id": r.destination_id,
                    "reason": r.reason, "request_id": r.request_id,
                    "changes": r.changes.as_deref().and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok()),
                    "dashboard_url": r.destination_id.as_deref().and_then(dashboard_url),
                })).collect::<Vec<_>>(),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("serializes")
            );
        }
        RecordFormat::Csv => {
            let mut out = String::from("row,key,outcome,stripe_id,reason,request_id\n");
            for r in &records {
                let fields = [
                    r.row_number.to_string(),
                    r.key.clone(),
                    r.outcome.as_str().to_string(),
                    r.destination_id.clone().unwrap_or_default(),
                    r.reason.clone().unwrap_or_default(),
                    r.request_id.clone().unwrap_or_default(),
                ];
                out.push_str(
                    &fields
                        .iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push('\n');
            }
            print!("{out}");
        }
        RecordFormat::Text => {
            print_runs(std::slice::from_ref(&run));
            if let Some(error) = &run.error {
                println!("Reason: {error}");
            }
            println!();
            if records.is_empty() {
                println!("No records match. (Unchanged rows are counted, not listed.)");
            } else {
                let rows: Vec<Vec<String>> = records
                    .iter()
                    .map(|r| {
                        vec![
                            r.row_number.to_string(),
                            clip(&r.key, 40),
                            r.outcome.as_str().to_string(),
                            link(&r.destination_id),
                            r.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(&["ROW", "KEY", "OUTCOME", "STRIPE", "REASON"], &rows);
            }
        }
    }
    Ok(0)
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Where the sync's records are in Stripe's dashboard (`https://dashboard.stripe.com/test/customers`),
/// or `None` for a sync into another server than Stripe (the emulator).
async fn dashboard_base(store: &StateStore, sync: &str) -> Option<String> {
    let sync = store.get_sync(sync).await.ok()??;
    let connection = store.get_connection(&sync.spec.destination).await.ok()??;
    let config = ferry_engine::stripe_config(store, &connection).ok()?;
    config.dashboard_url(ferry_destinations::stripe::stripe_object(sync.spec.object).schema())
}
