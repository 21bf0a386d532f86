//! DuckDB: opens the warehouse file read-only and streams a model's rows from a dedicated thread.
//!
//! DuckDB's API is synchronous, so each query runs on its own OS thread that sends rows over a
//! bounded channel (the reader's pace throttles the query). DuckDB has no statement timeout, so
//! a watchdog thread interrupts the connection when DuckDB itself has been working on one step
//! (executing, or fetching the next chunk) for longer than the timeout; time spent waiting for a
//! slow reader does not count, as with PostgreSQL's per-fetch timer.

use crate::text_forms::{
    date_from_days, float_value_from_real, integer_value, interval_text, time_of_day_text,
    timestamp_from_ticks, unix_epoch, unsigned_integer_value,
};
use crate::{
    row_channel, Column, QueryOptions, RowBatcher, RowStream, SourceError, SqlFlavor,
    StreamMessage, TimeoutSetting, ValidatedModelSql,
};
use duckdb::core::{LogicalTypeHandle, LogicalTypeId};
use duckdb::types::{TimeUnit, Value as DuckDbValue};
use duckdb::{AccessMode, Config, Connection, InterruptHandle};
use ferry_core::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::debug;

/// Opens the file read-only and runs `SELECT 1`.
pub(crate) async fn test_duckdb_connection(path: &Path) -> Result<(), SourceError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let connection = open_read_only(&path)?;
        connection
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
            .map_err(|error| SourceError::DuckDbOpenFailed {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        Ok(())
    })
    .await
    .map_err(|error| SourceError::Warehouse {
        reason: format!("the DuckDB check stopped unexpectedly: {error}"),
    })?
}

/// Starts the model on its own thread and returns once DuckDB knows the result's columns.
pub(crate) async fn start_duckdb_query(
    path: &Path,
    model: ValidatedModelSql,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    let path = path.to_path_buf();
    let open = move || {
        open_read_only(&path).map(|connection| ModelConnection {
            connection,
            files_hints: None,
        })
    };
    start_model_thread("ferry-duckdb-model", open, model, options).await
}

/// A DuckDB connection made for one model: the DuckDB file's, or the files source's in-memory
/// database.
pub(crate) struct ModelConnection {
    pub(crate) connection: Connection,
    /// For a files connection, what to add to DuckDB's words when a model reaches past what
    /// the connection reads. `None` (a DuckDB file) keeps DuckDB's own words.
    pub(crate) files_hints: Option<FilesHints>,
}

/// What a files connection's model may read, said where DuckDB's refusal does not.
pub(crate) struct FilesHints {
    /// Added to a refused file access (a path outside the folders).
    pub(crate) outside_folders: String,
    /// Added to "Table with name … does not exist": which files are tables.
    pub(crate) missing_table: String,
}

/// Runs `model` on a thread of its own named `thread_name`, over the connection `open` makes on
/// that thread (so DuckDB's worker threads, started when it opens, carry the name too), with the
/// statement timeout and cancellation every DuckDB model gets. Returns once the columns are
/// known.
pub(crate) async fn start_model_thread<Open>(
    thread_name: &str,
    open: Open,
    model: ValidatedModelSql,
    options: &QueryOptions,
) -> Result<RowStream, SourceError>
where
    Open: FnOnce() -> Result<ModelConnection, SourceError> + Send + 'static,
{
    let (columns_sender, columns_receiver) = oneshot::channel();
    let (rows_sender, messages_receiver, rows_per_message) = row_channel(options);
    let statement_timeout = options.statement_timeout;
    let timeout_setting = options.timeout_setting;
    // The thread logs inside the caller's span (a run's `run` and `sync`), as a task would.
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            let _in_callers_span = span.enter();
            let model_connection = match open() {
                Ok(model_connection) => model_connection,
                Err(error) => {
                    let _ = columns_sender.send(Err(error));
                    return;
                }
            };
            read_model(
                &model_connection,
                &model,
                statement_timeout,
                timeout_setting,
                columns_sender,
                rows_sender,
            )
        })
        .map_err(|error| SourceError::Warehouse {
            reason: format!("cannot start a thread for DuckDB: {error}"),
        })?;
    let (columns, interrupt_handle) =
        columns_receiver
            .await
            .map_err(|_| SourceError::Warehouse {
                reason: "the DuckDB reader stopped before the model's columns were known".into(),
            })??;
    Ok(RowStream::new(
        columns,
        messages_receiver,
        rows_per_message,
        Some(interrupt_handle),
    ))
}

type ColumnsAndInterrupt = (Vec<Column>, Arc<InterruptHandle>);

/// The body of the model thread: columns (or the setup error) through `columns_sender`, then
/// every row, then `Finished` or `Failed` through `rows_sender`.
fn read_model(
    model_connection: &ModelConnection,
    model: &ValidatedModelSql,
    statement_timeout: Duration,
    timeout_setting: TimeoutSetting,
    columns_sender: oneshot::Sender<Result<ColumnsAndInterrupt, SourceError>>,
    mut rows_sender: RowBatcher,
) {
    let connection = &model_connection.connection;
    let interrupt_handle = connection.interrupt_handle();
    let timer = StatementTimer::start(statement_timeout, Arc::clone(&interrupt_handle));
    let model_error = |error: duckdb::Error| {
        classify_model_error(
            &error,
            &timer,
            statement_timeout,
            timeout_setting,
            model_connection.files_hints.as_ref(),
        )
    };
    timer.database_working();
    let mut statement = match connection.prepare(model.statement()) {
        Ok(statement) => statement,
        Err(error) => {
            let _ = columns_sender.send(Err(model_error(error)));
            return;
        }
    };
    // `stream_arrow` runs the statement in DuckDB's streaming mode, which fetches result
    // chunks as they are read instead of materialising the whole result first. Its Arrow
    // iterator is dropped unused: the rows are read through `raw_query` below, which steps the
    // same streaming result and keeps DuckDB's own per-type decoding.
    if let Err(error) = statement.stream_arrow([]).map(drop) {
        let _ = columns_sender.send(Err(model_error(error)));
        return;
    }
    let mut columns = Vec::new();
    let mut value_kinds = Vec::new();
    for index in 0..statement.column_count() {
        let name = statement
            .column_name(index)
            .cloned()
            .unwrap_or_else(|_| format!("column{}", index + 1));
        let logical_type = statement.column_logical_type(index);
        let type_name = duckdb_type_name(&logical_type);
        let kind = duckdb_value_kind(&logical_type);
        if kind.contains_unsupported() {
            let _ = columns_sender.send(Err(SourceError::UnsupportedColumnType {
                column: name,
                type_name,
                flavor: SqlFlavor::Postgres,
            }));
            return;
        }
        columns.push(Column { name, type_name });
        value_kinds.push(kind);
    }
    timer.waiting_for_reader();
    if columns_sender
        .send(Ok((columns.clone(), Arc::clone(&interrupt_handle))))
        .is_err()
    {
        return;
    }

    let mut rows = statement.raw_query();
    let final_message = loop {
        timer.database_working();
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break StreamMessage::Finished,
            Err(error) => break StreamMessage::Failed(model_error(error)),
        };
        let values = match convert_row(row, &columns, &value_kinds) {
            Ok(values) => values,
            Err(error) => break StreamMessage::Failed(error),
        };
        timer.waiting_for_reader();
        if rows_sender.blocking_push(values).is_err() {
            debug!("Model stream dropped; stopping the DuckDB query.");
            return;
        }
    };
    timer.waiting_for_reader();
    rows_sender.blocking_finish(final_message);
}

/// Opens the warehouse read-only, so no model can change it. DuckDB would refuse to open a
/// missing file read-only anyway, but checking first gives a clearer message and guarantees
/// ferry never creates an empty warehouse by mistake.
/// The environment variable that sets how much memory DuckDB may use while it runs a model.
pub const DUCKDB_MEMORY_LIMIT_VARIABLE: &str = "FERRY_DUCKDB_MEMORY_LIMIT";

/// DuckDB's memory for a model by default. DuckDB keeps every block of a table it has scanned
/// cached until it reaches its limit, 80% of the machine's memory unless told otherwise: a
/// 10M-row table made ferry's preview grow by 150 MB of cache it never reads again. 128 MB
/// keeps ferry's memory flat and still sorts and joins millions of rows; a heavier model says
/// which variable to raise when DuckDB runs out.
const DEFAULT_DUCKDB_MEMORY_LIMIT: &str = "128MB";

/// The memory DuckDB may use for a model: [`DUCKDB_MEMORY_LIMIT_VARIABLE`] or the default.
fn duckdb_memory_limit() -> String {
    std::env::var(DUCKDB_MEMORY_LIMIT_VARIABLE)
        .ok()
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| DEFAULT_DUCKDB_MEMORY_LIMIT.to_string())
}

pub(crate) fn open_read_only(path: &Path) -> Result<Connection, SourceError> {
    if !is_duckdb_file(path) {
        return Err(SourceError::DuckDbNotUsable {
            path: path.to_path_buf(),
        });
    }
    let open_failed = |error: duckdb::Error| SourceError::DuckDbOpenFailed {
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    // A model reads the warehouse's own tables, nothing else: with external access off, SQL
    // such as `read_text('/etc/passwd')`, `read_csv(…)` or `ATTACH` cannot reach the files of the
    // machine ferry runs on (through the server, a model comes from anyone with an API token),
    // and no extension is loaded from the network.
    let config = Config::default()
        .access_mode(AccessMode::ReadOnly)
        .and_then(|c| c.enable_external_access(false))
        .and_then(|c| c.enable_autoload_extension(false))
        .map_err(open_failed)?;
    let config = with_memory_limit(config).map_err(|reason| SourceError::DuckDbOpenFailed {
        path: path.to_path_buf(),
        reason,
    })?;
    Connection::open_with_flags(path, config).map_err(open_failed)
}

/// `config` with DuckDB's memory for a model set from [`DUCKDB_MEMORY_LIMIT_VARIABLE`]; the
/// error says what is wrong with the variable.
pub(crate) fn with_memory_limit(config: Config) -> Result<Config, String> {
    let memory_limit = duckdb_memory_limit();
    config.max_memory(&memory_limit).map_err(|_| {
        format!(
            "{DUCKDB_MEMORY_LIMIT_VARIABLE} is `{memory_limit}`, which is not a memory size \
             DuckDB understands; give one such as 512MB or 2GB"
        )
    })
}

/// Whether `path` is a regular file that starts like a DuckDB database: an 8-byte checksum,
/// then the magic bytes `DUCK`. Checked before DuckDB opens anything, so that DuckDB never
/// touches a file of another kind (a SQLite database whose locks its close would drop, a
/// device, a secret it would then quote in an error).
pub(crate) fn is_duckdb_file(path: &Path) -> bool {
    use std::io::Read as _;
    const MAGIC: &[u8; 4] = b"DUCK";
    let Ok(metadata) = std::fs::metadata(path) else {
        return false;
    };
    if !metadata.is_file() {
        return false;
    }
    let mut header = [0u8; 12];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .is_ok()
        && &header[8..12] == MAGIC
}

fn classify_model_error(
    error: &duckdb::Error,
    timer: &StatementTimer,
    statement_timeout: Duration,
    timeout_setting: TimeoutSetting,
    files_hints: Option<&FilesHints>,
) -> SourceError {
    if timer.interrupted_for_timeout() {
        return SourceError::StatementTimeout {
            timeout: statement_timeout,
            setting: timeout_setting,
            flavor: SqlFlavor::Postgres,
        };
    }
    let mut message = error.to_string();
    if message.contains("read-only mode") {
        return SourceError::ReadOnlyViolation { message };
    }
    if message.starts_with("Out of Memory Error") {
        // DuckDB suggests `SET memory_limit`, which a model cannot run: say what ferry reads.
        let first_line = message.lines().next().unwrap_or_default().to_string();
        message = format!(
            "{first_line}. ferry lets DuckDB use {} for a model; set \
             {DUCKDB_MEMORY_LIMIT_VARIABLE} higher (for example {DUCKDB_MEMORY_LIMIT_VARIABLE}=2GB) \
             in the environment of ferry to give it more",
            duckdb_memory_limit()
        );
    }
    if let Some(hints) = files_hints {
        // `Permission Error: Cannot access file "/etc/passwd" - file system operations are
        // disabled by configuration`: true, but it does not say what the model may read.
        if message.starts_with("Permission Error") {
            let first_line = message.lines().next().unwrap_or_default();
            return SourceError::Sql {
                message: format!("{first_line}; {}", hints.outside_folders),
                position: None,
            };
        }
        // `Catalog Error: Table with name x does not exist!`, then DuckDB's guess and the
        // excerpt: the hint goes after the first line, which names the problem.
        if message.starts_with("Catalog Error: Table with name") {
            let (first_line, rest) = message.split_once('\n').unwrap_or((&message, ""));
            let separator = if rest.is_empty() { "" } else { "\n" };
            return SourceError::Sql {
                message: format!("{first_line} {}{separator}{rest}", hints.missing_table),
                position: None,
            };
        }
    }
    // DuckDB's messages already carry the position as a `LINE n:` excerpt.
    SourceError::Sql {
        message,
        position: None,
    }
}

/// What DuckDB's row decoding loses and ferry needs back: JSON is VARCHAR with an alias, and a
/// TIMESTAMPTZ arrives as a plain timestamp; nested types carry their children's kinds.
#[derive(Debug, Clone, PartialEq)]
enum DuckDbValueKind {
    Plain,
    Json,
    TimestampWithTimeZone,
    List(Box<DuckDbValueKind>),
    Struct(Vec<DuckDbValueKind>),
    Map(Box<DuckDbValueKind>, Box<DuckDbValueKind>),
    /// BIT, BIGNUM, TIME WITH TIME ZONE, VARIANT and future types: no cheap, exact text form
    /// through this driver, so the column is refused with a hint to cast it.
    Unsupported,
}

impl DuckDbValueKind {
    fn contains_unsupported(&self) -> bool {
        match self {
            DuckDbValueKind::Unsupported => true,
            DuckDbValueKind::List(child) => child.contains_unsupported(),
            DuckDbValueKind::Struct(children) => children.iter().any(Self::contains_unsupported),
            DuckDbValueKind::Map(key, value) => {
                key.contains_unsupported() || value.contains_unsupported()
            }
            _ => false,
        }
    }
}

fn duckdb_value_kind(logical_type: &LogicalTypeHandle) -> DuckDbValueKind {
    if logical_type
        .get_alias()
        .is_some_and(|alias| alias.eq_ignore_ascii_case("json"))
    {
        return DuckDbValueKind::Json;
    }
    match logical_type.try_id() {
        Ok(LogicalTypeId::TimestampTZ) => DuckDbValueKind::TimestampWithTimeZone,
        Ok(LogicalTypeId::List | LogicalTypeId::Array) => {
            DuckDbValueKind::List(Box::new(duckdb_value_kind(&logical_type.child(0))))
        }
        Ok(LogicalTypeId::Struct) => DuckDbValueKind::Struct(
            (0..logical_type.num_children())
                .map(|index| duckdb_value_kind(&logical_type.child(index)))
                .collect(),
        ),
        Ok(LogicalTypeId::Map) => DuckDbValueKind::Map(
            Box::new(duckdb_value_kind(&logical_type.child(0))),
            Box::new(duckdb_value_kind(&logical_type.child(1))),
        ),
        Ok(
            LogicalTypeId::Bit
            | LogicalTypeId::Bignum
            | LogicalTypeId::TimeTZ
            | LogicalTypeId::Variant
            | LogicalTypeId::Invalid
            | LogicalTypeId::Any
            | LogicalTypeId::Unsupported,
        )
        | Err(_) => DuckDbValueKind::Unsupported,
        Ok(_) => DuckDbValueKind::Plain,
    }
}

/// The SQL name of a DuckDB type as a user would write it: `INTEGER`, `DECIMAL(18,2)`,
/// `VARCHAR[]`, `STRUCT(a INTEGER, b VARCHAR)`, `JSON`.
fn duckdb_type_name(logical_type: &LogicalTypeHandle) -> String {
    if let Some(alias) = logical_type.get_alias() {
        return alias;
    }
    let Ok(id) = logical_type.try_id() else {
        return format!("DuckDB type {}", logical_type.raw_id());
    };
    let simple = match id {
        LogicalTypeId::Boolean => "BOOLEAN",
        LogicalTypeId::Tinyint => "TINYINT",
        LogicalTypeId::Smallint => "SMALLINT",
        LogicalTypeId::Integer => "INTEGER",
        LogicalTypeId::Bigint => "BIGINT",
        LogicalTypeId::Hugeint => "HUGEINT",
        LogicalTypeId::UTinyint => "UTINYINT",
        LogicalTypeId::USmallint => "USMALLINT",
        LogicalTypeId::UInteger => "UINTEGER",
        LogicalTypeId::UBigint => "UBIGINT",
        LogicalTypeId::UHugeint => "UHUGEINT",
        LogicalTypeId::Float => "FLOAT",
        LogicalTypeId::Double => "DOUBLE",
        LogicalTypeId::Varchar => "VARCHAR",
        LogicalTypeId::Blob => "BLOB",
        LogicalTypeId::Date => "DATE",
        LogicalTypeId::Time => "TIME",
        LogicalTypeId::TimeNs => "TIME_NS",
        LogicalTypeId::TimeTZ => "TIME WITH TIME ZONE",
        LogicalTypeId::Timestamp => "TIMESTAMP",
        LogicalTypeId::TimestampS => "TIMESTAMP_S",
        LogicalTypeId::TimestampMs => "TIMESTAMP_MS",
        LogicalTypeId::TimestampNs => "TIMESTAMP_NS",
        LogicalTypeId::TimestampTZ => "TIMESTAMP WITH TIME ZONE",
        LogicalTypeId::Interval => "INTERVAL",
        LogicalTypeId::Uuid => "UUID",
        LogicalTypeId::Enum => "ENUM",
        LogicalTypeId::Bit => "BIT",
        LogicalTypeId::Bignum => "BIGNUM",
        LogicalTypeId::Geometry => "GEOMETRY",
        LogicalTypeId::Variant => "VARIANT",
        LogicalTypeId::SqlNull => "NULL",
        LogicalTypeId::Decimal => {
            return format!(
                "DECIMAL({},{})",
                logical_type.decimal_width(),
                logical_type.decimal_scale()
            )
        }
        LogicalTypeId::List | LogicalTypeId::Array => {
            return format!("{}[]", duckdb_type_name(&logical_type.child(0)))
        }
        LogicalTypeId::Struct | LogicalTypeId::Union => {
            let fields: Vec<String> = (0..logical_type.num_children())
                .map(|index| {
                    format!(
                        "{} {}",
                        logical_type.child_name(index),
                        duckdb_type_name(&logical_type.child(index))
                    )
                })
                .collect();
            let keyword = if id == LogicalTypeId::Struct {
                "STRUCT"
            } else {
                "UNION"
            };
            return format!("{keyword}({})", fields.join(", "));
        }
        LogicalTypeId::Map => {
            return format!(
                "MAP({}, {})",
                duckdb_type_name(&logical_type.child(0)),
                duckdb_type_name(&logical_type.child(1))
            )
        }
        other => return format!("{other:?}").to_uppercase(),
    };
    simple.to_string()
}

fn convert_row(
    row: &duckdb::Row<'_>,
    columns: &[Column],
    value_kinds: &[DuckDbValueKind],
) -> Result<Vec<Value>, SourceError> {
    let mut values = Vec::with_capacity(value_kinds.len());
    for (index, (kind, column)) in value_kinds.iter().zip(columns).enumerate() {
        let unreadable = |reason: String| SourceError::UnreadableValue {
            column: column.name.clone(),
            type_name: column.type_name.clone(),
            reason,
            flavor: SqlFlavor::Postgres,
        };
        // A column of type NULL (e.g. `VALUES (NULL), (NULL)`) makes the driver panic on read;
        // every value of it is NULL anyway.
        if column.type_name == "NULL" {
            values.push(Value::Null);
            continue;
        }
        let value_ref = row
            .get_ref(index)
            .map_err(|error| unreadable(error.to_string()))?;
        values.push(ferry_value(value_ref.to_owned(), kind).map_err(unreadable)?);
    }
    Ok(values)
}

/// DuckDB marks an infinite DATE with ±i32::MAX days and an infinite TIMESTAMP with ±i64::MAX.
fn infinity_text(is_positive_infinity: bool, is_negative_infinity: bool) -> Option<Value> {
    if is_positive_infinity {
        Some(Value::Text("infinity".into()))
    } else if is_negative_infinity {
        Some(Value::Text("-infinity".into()))
    } else {
        None
    }
}

fn ferry_value(value: DuckDbValue, kind: &DuckDbValueKind) -> Result<Value, String> {
    const OUT_OF_RANGE: &str = "it is outside the years ferry can represent (-262143 to 262142)";
    Ok(match value {
        DuckDbValue::Null => Value::Null,
        DuckDbValue::Boolean(boolean) => Value::Bool(boolean),
        DuckDbValue::TinyInt(integer) => Value::Int(i64::from(integer)),
        DuckDbValue::SmallInt(integer) => Value::Int(i64::from(integer)),
        DuckDbValue::Int(integer) => Value::Int(i64::from(integer)),
        DuckDbValue::BigInt(integer) => Value::Int(integer),
        DuckDbValue::HugeInt(integer) => integer_value(integer),
        DuckDbValue::UTinyInt(integer) => Value::Int(i64::from(integer)),
        DuckDbValue::USmallInt(integer) => Value::Int(i64::from(integer)),
        DuckDbValue::UInt(integer) => Value::Int(i64::from(integer)),
        DuckDbValue::UBigInt(integer) => unsigned_integer_value(u128::from(integer)),
        DuckDbValue::UHugeInt(integer) => unsigned_integer_value(integer),
        DuckDbValue::Float(real) => float_value_from_real(real),
        DuckDbValue::Double(double) => Value::Float(double),
        DuckDbValue::Decimal(decimal) => Value::Decimal(decimal.to_string()),
        DuckDbValue::Text(text) if *kind == DuckDbValueKind::Json => Value::Json(
            serde_json::from_str(&text)
                .map_err(|error| format!("the JSON does not parse: {error}"))?,
        ),
        DuckDbValue::Text(text) | DuckDbValue::Enum(text) => Value::Text(text),
        DuckDbValue::Blob(bytes) | DuckDbValue::Geometry(bytes) => Value::Bytes(bytes),
        DuckDbValue::Date32(days) => {
            if let Some(infinity) = infinity_text(days == i32::MAX, days <= -i32::MAX) {
                return Ok(infinity);
            }
            Value::Date(date_from_days(unix_epoch().date(), i64::from(days)).ok_or(OUT_OF_RANGE)?)
        }
        DuckDbValue::Timestamp(unit, ticks) => {
            if let Some(infinity) = infinity_text(ticks == i64::MAX, ticks <= -i64::MAX) {
                return Ok(infinity);
            }
            let timestamp = timestamp_from_ticks(unix_epoch(), ticks, ticks_per_second(unit))
                .ok_or(OUT_OF_RANGE)?;
            if *kind == DuckDbValueKind::TimestampWithTimeZone {
                Value::TimestampTz(timestamp.and_utc())
            } else {
                Value::Timestamp(timestamp)
            }
        }
        DuckDbValue::Time64(unit, ticks) => Value::Text(time_of_day_text(unit.to_micros(ticks))),
        DuckDbValue::Interval {
            months,
            days,
            nanos,
        } => Value::Text(interval_text(months, days, nanos / 1000)),
        DuckDbValue::List(items) | DuckDbValue::Array(items) => {
            let element_kind = match kind {
                DuckDbValueKind::List(element_kind) => element_kind.as_ref(),
                _ => &DuckDbValueKind::Plain,
            };
            Value::Array(
                items
                    .into_iter()
                    .map(|item| ferry_value(item, element_kind))
                    .collect::<Result<_, _>>()?,
            )
        }
        // Structs and maps have no ferry type; their JSON form keeps every field readable.
        DuckDbValue::Struct(fields) => {
            let mut object = serde_json::Map::new();
            for (index, (name, field)) in fields.iter().enumerate() {
                let field_kind = match kind {
                    DuckDbValueKind::Struct(field_kinds) => field_kinds.get(index),
                    _ => None,
                };
                let field_value =
                    ferry_value(field.clone(), field_kind.unwrap_or(&DuckDbValueKind::Plain))?;
                object.insert(name.clone(), json_of(&field_value)?);
            }
            Value::Json(serde_json::Value::Object(object))
        }
        DuckDbValue::Map(entries) => {
            let (key_kind, value_kind) = match kind {
                DuckDbValueKind::Map(key_kind, value_kind) => {
                    (key_kind.as_ref(), value_kind.as_ref())
                }
                _ => (&DuckDbValueKind::Plain, &DuckDbValueKind::Plain),
            };
            let mut object = serde_json::Map::new();
            for (key, value) in entries.iter() {
                let key = ferry_value(key.clone(), key_kind)?;
                let key_text = key
                    .to_scalar_text()
                    .map_err(|error| format!("a map key {error}"))?
                    .unwrap_or_default();
                object.insert(key_text, json_of(&ferry_value(value.clone(), value_kind)?)?);
            }
            Value::Json(serde_json::Value::Object(object))
        }
        DuckDbValue::Union(member) => ferry_value(*member, &DuckDbValueKind::Plain)?,
        other => return Err(format!("DuckDB value {other:?} has no ferry form")),
    })
}

fn json_of(value: &Value) -> Result<serde_json::Value, String> {
    value
        .to_json()
        .map_err(|error| format!("a nested value {error}"))
}

fn ticks_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// Interrupts the DuckDB connection when one database step has run longer than the timeout.
/// A zero timeout disables it, like PostgreSQL's `statement_timeout = 0`.
struct StatementTimer {
    shared: Arc<StatementTimerState>,
    /// Dropping the sender tells the watchdog to stop.
    stop_watchdog: Option<std::sync::mpsc::Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
}

struct StatementTimerState {
    /// When DuckDB started the step it is working on; `None` while ferry waits for the reader.
    working_since: Mutex<Option<Instant>>,
    interrupted_for_timeout: AtomicBool,
}

impl StatementTimer {
    fn start(timeout: Duration, interrupt_handle: Arc<InterruptHandle>) -> StatementTimer {
        let shared = Arc::new(StatementTimerState {
            working_since: Mutex::new(None),
            interrupted_for_timeout: AtomicBool::new(false),
        });
        if timeout.is_zero() {
            return StatementTimer {
                shared,
                stop_watchdog: None,
                watchdog: None,
            };
        }
        let (stop_sender, stop_receiver) = std::sync::mpsc::channel::<()>();
        let watched = Arc::clone(&shared);
        // Check often enough that a 1 s timeout fires within about 5%, rarely enough to cost
        // nothing.
        let tick = (timeout / 20).clamp(Duration::from_millis(10), Duration::from_millis(500));
        let watchdog = std::thread::Builder::new()
            .name("ferry-duckdb-timeout".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stop_receiver.recv_timeout(tick)
                {
                    let mut working_since = match watched.working_since.lock() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    if working_since.is_some_and(|since| since.elapsed() >= timeout) {
                        watched
                            .interrupted_for_timeout
                            .store(true, Ordering::SeqCst);
                        interrupt_handle.interrupt();
                        *working_since = None;
                    }
                }
            })
            .ok();
        StatementTimer {
            shared,
            stop_watchdog: Some(stop_sender),
            watchdog,
        }
    }

    fn database_working(&self) {
        self.set_working_since(Some(Instant::now()));
    }

    fn waiting_for_reader(&self) {
        self.set_working_since(None);
    }

    fn set_working_since(&self, working_since: Option<Instant>) {
        match self.shared.working_since.lock() {
            Ok(mut guard) => *guard = working_since,
            Err(poisoned) => *poisoned.into_inner() = working_since,
        }
    }

    fn interrupted_for_timeout(&self) -> bool {
        self.shared.interrupted_for_timeout.load(Ordering::SeqCst)
    }
}

impl Drop for StatementTimer {
    fn drop(&mut self) {
        drop(self.stop_watchdog.take());
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
    }
}

/// The path a DuckDB source reads, for messages.
pub(crate) fn describe_duckdb_target(path: &Path) -> String {
    format!("DuckDB file {}", path.display())
}
