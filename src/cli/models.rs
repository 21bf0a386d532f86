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
            let connection = store
                .get_connection(&args.connection)
                .await?
                .ok_or_else(|| {
                    CliError::config(anyhow::anyhow!(
                        "no connection named '{}'; `ferry connections` lists them",
                        args.connection
                    ))
                })?;
            let source = ferry_engine::source_config(store, &connection)?;
            // Run it once so that a typo shows now, not at the first sync.
            let (columns, _) = ferry_source::preview(&source, &sql, 1)
                .await
                .map_err(CliError::config)?;
            store.put_model(&args.name, &args.connection, &sql).await?;
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            println!(
                "Saved model '{}' with columns: {}.",
                args.name,
                names.join(", ")
            );
        }
        ModelCommand::Show { name, limit } => {
            let model = store.get_model(&name).await?.ok_or_else(|| {
                CliError::config(anyhow::anyhow!(
                    "no model named '{name}'; `ferry model list` lists them"
                ))
            })?;
            let connection = store
                .get_connection(&model.connection)
                .await?
                .ok_or_else(|| {
                    CliError::config(anyhow::anyhow!(
                        "model '{name}' uses connection '{}', which no longer exists",
                        model.connection
                    ))
                })?;
            let source = ferry_engine::source_config(store, &connection)?;
            let (columns, rows) = ferry_source::preview(&source, &model.sql, limit)
                .await
                .map_err(CliError::failed)?;
            let header: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| r.iter().map(|v| clip(&v.to_string(), 40)).collect())
                .collect();
            print_table(&header, &cells);
            println!(
                "({} shown)",
                super::output::plural(rows.len() as u64, "row", "rows")
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
