//! `ferry model …`: SQL queries that select the rows to sync.

use super::output::{clip, print_table};
use super::{CliError, CliResult};
use clap::{Args, Subcommand};
use ferry_state::StateStore;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Save a model: a read-only SQL query on a warehouse connection.
    Create(ModelCreateArgs),
    /// Run a model and show its first rows.
    Show {
        name: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// List the models.
    List,
    /// Remove a model no sync uses.
    Remove { name: String },
}

#[derive(Args, Debug)]
pub struct ModelCreateArgs {
    pub name: String,
    #[arg(long)]
    pub connection: String,
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub sql: Option<String>,
    #[arg(long)]
    pub file: Option<PathBuf>,
}

pub async fn model(store: &StateStore, command: ModelCommand) -> CliResult {
    match command {
        ModelCommand::Create(args) => {
            let sql = match (args.sql, &args.file) {
                (Some(sql), _) => sql,
                (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
                    CliError::config(anyhow::anyhow!("cannot read {}: {e}", file.display()))
                })?,
                (None, None) => {
                    return Err(CliError::config(anyhow::anyhow!(
                        "give the query with --sql or --file"
                    )))
                }
            };
            let columns =
                ferry_engine::declare::save_model(store, &args.name, &args.connection, &sql)
                    .await?;
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            println!(
                "Saved model '{}' with columns: {}.",
                args.name,
                names.join(", ")
            );
        }
        ModelCommand::Show { name, limit } => {
            let model = ferry_engine::declare::require_model(store, &name).await?;
            let preview =
                ferry_engine::declare::preview_query(store, &model.connection, &model.sql, limit)
                    .await?;
            let header: Vec<&str> = preview.columns.iter().map(|c| c.name.as_str()).collect();
            let cells: Vec<Vec<String>> = preview
                .rows
                .iter()
                .map(|r| r.iter().map(|v| clip(&v.to_string(), 40)).collect())
                .collect();
            print_table(&header, &cells);
            println!(
                "({} shown{})",
                super::output::plural(preview.rows.len() as u64, "row", "rows"),
                if preview.rows_left_out {
                    "; more left out: the preview is limited to 1 MiB"
                } else {
                    ""
                }
            );
        }
        ModelCommand::List => {
            let models = store.list_models().await?;
            if models.is_empty() {
                println!("No models yet. Create one with `ferry model create NAME --connection WAREHOUSE --sql 'select …'`.");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = models
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        m.connection.clone(),
                        clip(&m.sql.split_whitespace().collect::<Vec<_>>().join(" "), 60),
                    ]
                })
                .collect();
            print_table(&["NAME", "CONNECTION", "SQL"], &rows);
        }
        ModelCommand::Remove { name } => {
            if !store.remove_model(&name).await? {
                return Err(CliError::config(anyhow::anyhow!("no model named '{name}'")));
            }
            println!("Removed model '{name}'.");
        }
    }
    Ok(0)
}
