//! `ferry sequence …`: syncs run one after another (products, then prices, then invoices),
//! stopping when a step fails or rejects too many of its rows. `ferry sequence run` drives the
//! steps in this process, as `ferry sync run` runs one sync, and records the sequence's run in
//! the workspace beside the runs of its syncs.

use super::output::print_table;
use super::syncs::{run as run_sync, RunFlags};
use super::{CliError, CliResult, Format};
use clap::{Args, Subcommand};
use ferry_core::{after_step, Schedule, SequenceMove, SequenceRunStatus, SequenceSpec, StepResult};
use ferry_state::{NewSequenceRun, SequenceRunRecord, SequenceRunUpdate, StateStore};

/// Who drives a sequence run started here: this process.
const CLI_DRIVER: &str = "cli";

#[derive(Subcommand, Debug)]
pub enum SequenceCommand {
    /// Declare a sequence (or replace one): its syncs in order, when it stops, its schedule.
    Create(SequenceCreateArgs),
    /// Run the sequence's syncs one after another, here, and wait. Exit code 0 when every
    /// step completed, 1 when a step failed or could not start, 3 when a step rejected more
    /// rows than the sequence allows, 2 on a usage or configuration error.
    Run { name: String },
    /// List the sequences.
    List,
    /// One sequence's steps and latest runs.
    Show { name: String },
    /// Remove a sequence and its runs' history (the runs of its syncs stay).
    Remove { name: String },
}

#[derive(Args, Debug)]
pub struct SequenceCreateArgs {
    pub name: String,
    /// The syncs to run, in order, separated by commas: `products,prices,invoices`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub steps: Vec<String>,
    /// Stop after a step that rejected more than this percent of its rows (0: any rejected
    /// row). Without it only a failed step stops the sequence.
    #[arg(long, value_name = "PERCENT")]
    pub stop_when_rejected_over: Option<u32>,
    /// When `ferry serve` runs it by itself, in the syncs' forms: `daily at 06:00`,
    /// `cron 0 6 * * 1-5 in Europe/Paris`, …
    #[arg(long)]
    pub schedule: Option<String>,
}

pub async fn sequence(store: &StateStore, command: SequenceCommand) -> CliResult {
    match command {
        SequenceCommand::Create(args) => {
            let schedule = args
                .schedule
                .as_deref()
                .map(Schedule::parse)
                .transpose()
                .map_err(|problem| CliError::config(anyhow::anyhow!("--schedule: {problem}")))?;
            let spec = SequenceSpec {
                steps: args.steps.iter().map(|s| s.trim().to_string()).collect(),
                stop_when_rejected_over_percent: args.stop_when_rejected_over,
                schedule,
            };
            let existed = store.get_sequence(&args.name).await?.is_some();
            let record = store.put_sequence(&args.name, &spec).await?;
            println!(
                "{} sequence '{}': {}; it {}.",
                if existed { "Replaced" } else { "Created" },
                record.name,
                record.spec.steps.join(" → "),
                record.spec.stop_rule()
            );
            println!("Run it with `ferry sequence run {}`.", record.name);
            Ok(0)
        }
        SequenceCommand::Run { name } => run(store, &name).await,
        SequenceCommand::List => {
            let sequences = store.list_sequences().await?;
            if sequences.is_empty() {
                println!("No sequences yet. Create one with `ferry sequence create NAME --steps products,prices`.");
                return Ok(0);
            }
            let mut rows = Vec::new();
            for sequence in sequences {
                let last = store
                    .list_sequence_runs(Some(&sequence.name), 1)
                    .await?
                    .into_iter()
                    .next();
                rows.push(vec![
                    sequence.name.clone(),
                    sequence.spec.steps.join(" → "),
                    sequence
                        .spec
                        .schedule
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| "manual".into()),
                    last.map(|run| {
                        format!(
                            "{} {}",
                            run.status.as_str(),
                            run.started_at.format("%Y-%m-%d %H:%M")
                        )
                    })
                    .unwrap_or_else(|| "never run".into()),
                ]);
            }
            print_table(&["NAME", "STEPS", "SCHEDULE", "LAST RUN"], &rows);
            Ok(0)
        }
        SequenceCommand::Show { name } => {
            let sequence = require(store, &name).await?;
            println!(
                "Sequence '{}': {}",
                sequence.name,
                sequence.spec.steps.join(" → ")
            );
            println!("  it {}", sequence.spec.stop_rule());
            println!(
                "  schedule: {}",
                sequence
                    .spec
                    .schedule
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "manual".into())
            );
            let runs = store.list_sequence_runs(Some(&name), 10).await?;
            if runs.is_empty() {
                println!("  not run yet");
            } else {
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|run| {
                        vec![
                            run.id.clone(),
                            run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            run.status.as_str().to_string(),
                            run.reason.clone(),
                            run.run_ids.join(" "),
                            run.message.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(
                    &["RUN", "STARTED", "STATUS", "BY", "STEP RUNS", "WHY"],
                    &rows,
                );
            }
            Ok(0)
        }
        SequenceCommand::Remove { name } => {
            require(store, &name).await?;
            if let Some(running) = store
                .running_sequence_runs()
                .await?
                .into_iter()
                .find(|run| run.sequence == name)
            {
                return Err(CliError::config(anyhow::anyhow!(
                    "sequence '{name}' is running (step {} of {}); let it end, or stop its current step's run, then remove it",
                    running.step + 1,
                    running.spec.steps.len()
                )));
            }
            store.remove_sequence(&name).await?;
            println!("Removed sequence '{name}' and its runs' history.");
            Ok(0)
        }
    }
}

async fn require(store: &StateStore, name: &str) -> CliResult<ferry_state::SequenceRecord> {
    store.get_sequence(name).await?.ok_or_else(|| {
        CliError::config(anyhow::anyhow!(
            "no sequence named '{name}'; `ferry sequence list` lists them"
        ))
    })
}

/// Runs the sequence's steps here, one after another, and returns the exit code.
async fn run(store: &StateStore, name: &str) -> CliResult {
    require(store, name).await?;
    refuse_if_running(store, name).await?;
    let Some(mut sequence_run) = store
        .create_sequence_run(&NewSequenceRun {
            sequence: name.to_string(),
            reason: CLI_DRIVER.to_string(),
            driver: CLI_DRIVER.to_string(),
            dedupe_key: None,
        })
        .await?
    else {
        return Err(CliError::failed(anyhow::anyhow!(
            "the workspace took a run without a dedupe key for a duplicate"
        )));
    };
    let steps = sequence_run.spec.steps.clone();
    loop {
        let step = sequence_run.step as usize;
        let sync = &steps[step];
        println!("Step {} of {}: sync '{sync}'", step + 1, steps.len());
        let mut run_ids = sequence_run.run_ids.clone();
        let result = match store.get_sync(sync).await? {
            None => StepResult::Refused {
                reason: format!("sync '{sync}' no longer exists"),
            },
            Some(record) if record.paused_at.is_some() => StepResult::Refused {
                reason: format!(
                    "sync '{sync}' is paused; resume it with `ferry sync resume {sync}`"
                ),
            },
            Some(_) => match run_sync(store, sync, RunFlags::default(), Format::Text).await {
                Ok(report) => {
                    run_ids.push(report.run_id.clone());
                    StepResult::Ran {
                        status: report.status,
                        counts: report.counts,
                        error: report.error,
                    }
                }
                Err(error) => StepResult::Refused {
                    reason: format!("{:#}", error.error),
                },
            },
        };
        let (next_step, status, message) = match after_step(&sequence_run.spec, step, &result) {
            SequenceMove::Run(next) => (next, SequenceRunStatus::Running, None),
            SequenceMove::Finish(status, message) => (step, status, Some(message)),
        };
        let moved = store
            .advance_sequence_run(
                &sequence_run.id,
                sequence_run.version,
                &SequenceRunUpdate {
                    step: next_step as u32,
                    run_ids,
                    status,
                    message: message.clone(),
                },
            )
            .await?;
        if !moved {
            return Err(CliError::failed(anyhow::anyhow!(
                "sequence run {} was changed by another process (marked interrupted?); stopping here",
                sequence_run.id
            )));
        }
        if let Some(message) = message {
            println!(
                "Sequence '{name}' {} (run {}): {message}.",
                match status {
                    SequenceRunStatus::Completed => "completed",
                    SequenceRunStatus::Stopped => "STOPPED",
                    _ => "FAILED",
                },
                sequence_run.id
            );
            return Ok(match status {
                SequenceRunStatus::Completed => 0,
                SequenceRunStatus::Stopped => 3,
                _ => 1,
            });
        }
        sequence_run = store
            .get_sequence_run(&sequence_run.id)
            .await?
            .ok_or_else(|| {
                CliError::failed(anyhow::anyhow!(
                    "sequence run {} was removed with its sequence; stopping here",
                    sequence_run.id
                ))
            })?;
    }
}

/// Refuses a second run of a sequence that runs now. A run left "running" by a `ferry sequence
/// run` that died (its current step's sync is not running) is marked interrupted instead.
async fn refuse_if_running(store: &StateStore, name: &str) -> CliResult<()> {
    for running in store.running_sequence_runs().await? {
        if running.sequence != name {
            continue;
        }
        if running.driver == CLI_DRIVER && !step_is_running(store, &running).await? {
            store
                .advance_sequence_run(
                    &running.id,
                    running.version,
                    &SequenceRunUpdate {
                        step: running.step,
                        run_ids: running.run_ids.clone(),
                        status: SequenceRunStatus::Interrupted,
                        message: Some(
                            "the `ferry sequence run` that drove it stopped before it ended"
                                .to_string(),
                        ),
                    },
                )
                .await?;
            continue;
        }
        return Err(CliError::config(anyhow::anyhow!(
            "sequence '{name}' is already running (run {}, step {} of {}{}); wait for it to end",
            running.id,
            running.step + 1,
            running.spec.steps.len(),
            if running.driver == CLI_DRIVER {
                ", in another `ferry sequence run`"
            } else {
                ", in `ferry serve`"
            }
        )));
    }
    Ok(())
}

async fn step_is_running(store: &StateStore, run: &SequenceRunRecord) -> CliResult<bool> {
    let Some(sync) = run.spec.steps.get(run.step as usize) else {
        return Ok(false);
    };
    Ok(match store.get_sync(sync).await? {
        Some(record) => store.sync_is_running(&record).await?,
        None => false,
    })
}
