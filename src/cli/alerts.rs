//! `ferry alerts`: the workspace's default alert settings, the alerts raised now, and the
//! deliveries of events to alert channels with their answers.

use super::output::{clip, print_table};
use super::{CliError, CliResult};
use clap::{Args, Subcommand};
use ferry_core::AlertSettings;
use ferry_state::StateStore;

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// The default alert settings (for every sync without its own) and the alerts raised now.
    Show,
    /// Set the default alert settings of every sync that has none of its own.
    Defaults(AlertArgs),
    /// The events sent to alert channels, newest first, each with its channel's last answer.
    Deliveries(DeliveriesArgs),
}

/// The alert flags of `ferry sync create` and `ferry alerts defaults`.
#[derive(Args, Debug, Clone, Default)]
pub struct AlertArgs {
    /// An alert channel (a webhook, slack or email connection) told of the alerts; repeat for
    /// several. On `ferry sync create`, any --alert flag gives the sync settings of its own
    /// in place of the workspace's defaults.
    #[arg(long = "alert-channel", value_name = "CONNECTION")]
    pub alert_channels: Vec<String>,
    /// No alert when a run fails (there is one by default).
    #[arg(long)]
    pub no_alert_on_failure: bool,
    /// Alert when a completed run rejects more than this share of its rows (0: any row).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub alert_rejected_over: Option<u32>,
    /// Alert when a run takes longer than this.
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u32).range(1..))]
    pub alert_slower_than: Option<u32>,
    /// Alert when the model's row count drops by more than this share against the last
    /// completed run.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub alert_row_drop_over: Option<u32>,
}

impl AlertArgs {
    /// The settings the flags give; `None` when none was given.
    pub fn settings(&self) -> Option<AlertSettings> {
        let given = !self.alert_channels.is_empty()
            || self.no_alert_on_failure
            || self.alert_rejected_over.is_some()
            || self.alert_slower_than.is_some()
            || self.alert_row_drop_over.is_some();
        given.then(|| AlertSettings {
            channels: self.alert_channels.clone(),
            on_failure: !self.no_alert_on_failure,
            rejected_over_percent: self.alert_rejected_over,
            slower_than_minutes: self.alert_slower_than,
            row_drop_over_percent: self.alert_row_drop_over,
        })
    }
}

#[derive(Args, Debug)]
pub struct DeliveriesArgs {
    /// Only this sync's.
    #[arg(long)]
    pub sync: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

pub async fn alerts(store: &StateStore, command: AlertsCommand) -> CliResult {
    match command {
        AlertsCommand::Show => {
            match ferry_engine::alerts::alert_defaults(store).await? {
                Some(settings) => println!("Default alerts: {}.", settings.summary()),
                None => println!(
                    "No default alerts: syncs without alert settings of their own raise none. \
                     Set them with `ferry alerts defaults --alert-channel NAME …`."
                ),
            }
            let raised = store.list_raised_alerts().await?;
            if raised.is_empty() {
                println!("No alert is raised.");
            } else {
                let rows: Vec<Vec<String>> = raised
                    .iter()
                    .map(|alert| {
                        vec![
                            alert.sync.clone(),
                            alert.condition.as_str().to_string(),
                            alert.raised_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            clip(&alert.message, 80),
                        ]
                    })
                    .collect();
                print_table(&["SYNC", "ALERT", "RAISED (UTC)", "WHY"], &rows);
            }
            Ok(0)
        }
        AlertsCommand::Defaults(args) => {
            let settings = args.settings().ok_or_else(|| {
                CliError::config(anyhow::anyhow!(
                    "give the defaults as flags: --alert-channel NAME (repeatable), \
                     --alert-rejected-over PERCENT, --alert-slower-than MINUTES, \
                     --alert-row-drop-over PERCENT, --no-alert-on-failure"
                ))
            })?;
            ferry_engine::alerts::set_alert_defaults(store, &settings)
                .await
                .map_err(CliError::config)?;
            println!(
                "Default alerts saved: {}. They apply to every sync without alert settings of \
                 its own.",
                settings.summary()
            );
            Ok(0)
        }
        AlertsCommand::Deliveries(args) => {
            let deliveries = store
                .list_deliveries(args.sync.as_deref(), args.limit)
                .await?;
            if deliveries.is_empty() {
                println!(
                    "No deliveries yet. Events go to the alert channels (`ferry connect \
                     webhook|slack|email`) when syncs run."
                );
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = deliveries
                .iter()
                .map(|delivery| {
                    let answer = match (&delivery.answer_status, &delivery.answer) {
                        (Some(status), Some(text)) => format!("{status} {text}"),
                        (None, Some(text)) => text.clone(),
                        (Some(status), None) => status.to_string(),
                        (None, None) => "-".to_string(),
                    };
                    vec![
                        delivery.id.clone(),
                        delivery.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        delivery.sync.clone(),
                        delivery.event_type.clone(),
                        delivery.channel.clone(),
                        delivery.status.as_str().to_string(),
                        delivery.attempts.to_string(),
                        delivery
                            .next_attempt_at
                            .map(|at| at.format("%H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".to_string()),
                        clip(&answer.split_whitespace().collect::<Vec<_>>().join(" "), 60),
                    ]
                })
                .collect();
            print_table(
                &[
                    "DELIVERY",
                    "CREATED (UTC)",
                    "SYNC",
                    "EVENT",
                    "CHANNEL",
                    "STATUS",
                    "ATTEMPTS",
                    "NEXT TRY",
                    "ANSWER",
                ],
                &rows,
            );
            Ok(0)
        }
    }
}
