//! Writing to a DuckDB file, for the places that own the warehouse: the quickstart's demo data
//! and test fixtures. Syncs never call this; they open DuckDB read-only.

use crate::SourceError;
use std::path::Path;

/// Runs `sql` (one or more statements) on the DuckDB file at `path`, creating the file if it
/// does not exist, and closes it so that read-only readers can open it afterwards.
pub fn duckdb_execute(path: &Path, sql: &str) -> Result<(), SourceError> {
    let failed = |e: duckdb::Error| SourceError::Sql {
        message: format!("DuckDB at {}: {e}", path.display()),
        position: None,
    };
    let connection = duckdb::Connection::open(path).map_err(failed)?;
    connection.execute_batch(sql).map_err(failed)?;
    connection.close().map_err(|(_, e)| failed(e))
}
