//! The SQL each warehouse writes its own way: how names and text are quoted, the key's text
//! form, the row hash, the bookkeeping tables' definitions, how to ask whether a schema or
//! table exists, and the upsert of acknowledged rows. Everything else change detection runs
//! (the anti-join and the window in [`super::change_query`], the order of the checks in
//! [`super::open_table`]) is the same SQL on every warehouse.
//!
//! Every hash covers the fingerprint and every read column, and tells NULL from the empty text
//! and no two lists of values apart: PostgreSQL hashes the row's own text form; DuckDB,
//! Snowflake and MySQL each value as `n` (NULL) or `v`, its length, `:` and its text; BigQuery
//! the row as JSON (`TO_JSON_STRING`, where NULL is `null` and text is quoted).

use super::DiffSpec;

/// The warehouses change detection runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Dialect {
    Postgres,
    DuckDb,
    /// MySQL and MariaDB, where a schema is a database.
    Mysql,
    /// Snowflake folds unquoted names to upper case, so ferry's own schema and tables are
    /// named in upper case (`FERRY.SYNC_…`), as `CREATE SCHEMA ferry` would name them.
    Snowflake,
    /// BigQuery: a schema is a dataset of the project jobs run in, created in the connection's
    /// location.
    BigQuery {
        project: String,
        location: String,
    },
}

/// At most this many rows, and about this much SQL text, per upsert statement written out as
/// text (Snowflake, BigQuery), well inside their 1 MB statement limits.
const ROWS_PER_STATEMENT: usize = 1000;
const TEXT_PER_STATEMENT: usize = 256 * 1024;

/// The longest key MySQL's bookkeeping table holds: its primary key is a VARCHAR(768) of
/// utf8mb4, 3072 bytes, InnoDB's limit for one index (DYNAMIC rows). Stripe's keys are far
/// shorter (an email is at most 512 characters); a longer one is never acknowledged, so its row
/// travels at every run and is compared with ferry's workspace.
pub(super) const MYSQL_LONGEST_KEY: usize = 768;

impl Dialect {
    /// One of ferry's own names (the schema, a table), quoted.
    pub(super) fn name(&self, name: &str) -> String {
        match self {
            Dialect::Snowflake => double_quoted(&name.to_uppercase()),
            _ => self.column(name),
        }
    }

    /// A column of the model, quoted exactly as the warehouse named it.
    pub(super) fn column(&self, name: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::DuckDb | Dialect::Snowflake => double_quoted(name),
            Dialect::Mysql => format!("`{}`", name.replace('`', "``")),
            // GoogleSQL's quoted identifiers take the escapes of its string literals.
            Dialect::BigQuery { .. } => {
                format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
            }
        }
    }

    /// The schema, qualified where the warehouse needs it (BigQuery: by the project).
    pub(super) fn schema(&self, schema: &str) -> String {
        match self {
            Dialect::BigQuery { project, .. } => {
                format!("{}.{}", self.column(project), self.name(schema))
            }
            _ => self.name(schema),
        }
    }

    /// A table of ferry's schema.
    pub(super) fn table(&self, schema: &str, table: &str) -> String {
        format!("{}.{}", self.schema(schema), self.name(table))
    }

    /// `ferry_syncs`, the registry of syncs that have a table.
    pub(super) fn registry(&self, schema: &str) -> String {
        self.table(schema, super::REGISTRY_TABLE)
    }

    /// The sync's table of acknowledged rows.
    pub(super) fn sync_table(&self, spec: &DiffSpec) -> String {
        self.table(&spec.schema, &spec.table_name())
    }

    /// The bookkeeping table's key column: `key` is a reserved word in MySQL.
    fn key_column(&self) -> &'static str {
        match self {
            Dialect::Mysql => "`key`",
            _ => "key",
        }
    }

    /// A text constant. MySQL reads backslashes as escapes unless `NO_BACKSLASH_ESCAPES` is
    /// set, so text holding one (or a control character) is written as hex there, which
    /// means the same text in every mode.
    pub(super) fn literal(&self, text: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::DuckDb => format!("'{}'", text.replace('\'', "''")),
            Dialect::Mysql if text.chars().any(|c| c == '\\' || c.is_control()) => {
                format!("CONVERT(X'{}' USING utf8mb4)", hex::encode(text))
            }
            Dialect::Mysql => format!("'{}'", text.replace('\'', "''")),
            Dialect::Snowflake => {
                format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
            }
            Dialect::BigQuery { .. } => {
                let mut quoted = String::with_capacity(text.len() + 2);
                quoted.push('\'');
                for character in text.chars() {
                    match character {
                        '\\' => quoted.push_str("\\\\"),
                        '\'' => quoted.push_str("\\'"),
                        '\n' => quoted.push_str("\\n"),
                        '\r' => quoted.push_str("\\r"),
                        '\t' => quoted.push_str("\\t"),
                        control if control.is_control() => {
                            quoted.push_str(&format!("\\u{:04x}", u32::from(control)));
                        }
                        other => quoted.push(other),
                    }
                }
                quoted.push('\'');
                quoted
            }
        }
    }

    /// The key as text, trimmed, lower-cased when keys ignore case. MySQL compares it byte for
    /// byte (`utf8mb4_bin`), as ferry does, where the server's default collation would take
    /// `A` and `a` for one key.
    pub(super) fn key_text(&self, column: &str, ignore_case: bool) -> String {
        let text = match self {
            Dialect::Postgres => format!("btrim(CAST({column} AS text))"),
            Dialect::DuckDb | Dialect::Snowflake => format!("trim(CAST({column} AS VARCHAR))"),
            Dialect::Mysql => format!("TRIM(CAST({column} AS CHAR CHARACTER SET utf8mb4))"),
            Dialect::BigQuery { .. } => format!("TRIM(CAST({column} AS STRING))"),
        };
        let text = if ignore_case {
            format!("lower({text})")
        } else {
            text
        };
        match self {
            Dialect::Mysql => format!("{text} COLLATE utf8mb4_bin"),
            _ => text,
        }
    }

    /// The row's position in the model, where it costs nothing. A window over the whole model
    /// runs in one process on PostgreSQL (keeping the hashing below it from running in
    /// parallel workers) and in one slot on Snowflake and BigQuery: there ferry numbers the
    /// rows that travel itself.
    pub(super) fn row_number(&self) -> &'static str {
        match self {
            Dialect::Postgres => "CAST(NULL AS bigint)",
            Dialect::DuckDb => "row_number() OVER ()",
            Dialect::Mysql => "CAST(NULL AS SIGNED)",
            Dialect::Snowflake => "CAST(NULL AS BIGINT)",
            Dialect::BigQuery { .. } => "CAST(NULL AS INT64)",
        }
    }

    /// A hash of the fingerprint and of the row's values (the fields, already qualified),
    /// unambiguous: NULL is not the text `NULL` nor the empty text, and no two rows of values
    /// hash the same text.
    ///
    /// PostgreSQL: the row's own text form (`ROW(…)::text` quotes what needs quoting and writes
    /// NULL as nothing), hashed by `hashtextextended` to 64 bits: twice as fast as `md5` there,
    /// and stable across versions (hash partitioning relies on it). DuckDB and Snowflake: each
    /// value as `n` (NULL) or `v`, its length, `:` and its text, hashed by `md5`. MySQL: the
    /// same with each value's bytes (`CAST(… AS BINARY)`), so a BLOB's bytes count as they are
    /// rather than as text in the session's character set. BigQuery: the row as a JSON object
    /// (`TO_JSON_STRING` of a STRUCT takes every type, ARRAY and STRUCT too), hashed by `MD5`.
    pub(super) fn row_hash(&self, fingerprint: &str, fields: &[String]) -> String {
        let fingerprint = self.literal(fingerprint);
        match self {
            Dialect::Postgres => format!(
                "CAST(hashtextextended({fingerprint} || CAST(ROW({}) AS text), 0) AS text)",
                fields.join(", ")
            ),
            Dialect::DuckDb | Dialect::Snowflake => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|field| {
                        let text = format!("CAST({field} AS VARCHAR)");
                        format!(
                            "(CASE WHEN {field} IS NULL THEN 'n' ELSE 'v' || CAST(length({text}) \
                             AS VARCHAR) || ':' || {text} END)"
                        )
                    })
                    .collect();
                format!("md5({fingerprint} || {})", parts.join(" || "))
            }
            Dialect::Mysql => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|field| {
                        let bytes = format!("CAST({field} AS BINARY)");
                        format!(
                            "IF({field} IS NULL, 'n', CONCAT('v', LENGTH({bytes}), ':', {bytes}))"
                        )
                    })
                    .collect();
                format!("MD5(CONCAT({fingerprint}, {}))", parts.join(", "))
            }
            Dialect::BigQuery { .. } => format!(
                "TO_HEX(MD5(CONCAT({fingerprint}, TO_JSON_STRING(STRUCT({})))))",
                fields.join(", ")
            ),
        }
    }

    /// Creates ferry's schema (a database on MySQL, a dataset in the connection's location on
    /// BigQuery).
    pub(super) fn create_schema(&self, schema: &str) -> String {
        let name = self.schema(schema);
        match self {
            Dialect::Mysql => format!("CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4"),
            Dialect::BigQuery { location, .. } if !location.is_empty() => format!(
                "CREATE SCHEMA IF NOT EXISTS {name} OPTIONS (location = {})",
                self.literal(location)
            ),
            _ => format!("CREATE SCHEMA IF NOT EXISTS {name}"),
        }
    }

    /// Creates `ferry_syncs`, one line per sync whose table was created.
    pub(super) fn create_registry(&self, schema: &str) -> String {
        let registry = self.registry(schema);
        match self {
            Dialect::Postgres | Dialect::DuckDb => format!(
                "CREATE TABLE IF NOT EXISTS {registry} (sync_uid VARCHAR(64) PRIMARY KEY, \
                 sync_name VARCHAR(200) NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL \
                 DEFAULT CURRENT_TIMESTAMP)"
            ),
            Dialect::Mysql => format!(
                "CREATE TABLE IF NOT EXISTS {registry} (sync_uid VARCHAR(64) NOT NULL PRIMARY \
                 KEY, sync_name VARCHAR(200) NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT \
                 CURRENT_TIMESTAMP) CHARACTER SET utf8mb4"
            ),
            Dialect::Snowflake => format!(
                "CREATE TABLE IF NOT EXISTS {registry} (sync_uid VARCHAR(64) NOT NULL PRIMARY \
                 KEY, sync_name VARCHAR(200) NOT NULL, created_at TIMESTAMP_TZ NOT NULL DEFAULT \
                 CURRENT_TIMESTAMP())"
            ),
            Dialect::BigQuery { .. } => format!(
                "CREATE TABLE IF NOT EXISTS {registry} (sync_uid STRING NOT NULL, sync_name \
                 STRING NOT NULL, created_at TIMESTAMP NOT NULL)"
            ),
        }
    }

    /// Adds the sync to `ferry_syncs`.
    pub(super) fn register(&self, spec: &DiffSpec) -> String {
        format!(
            "INSERT INTO {} (sync_uid, sync_name, created_at) VALUES ({}, {}, CURRENT_TIMESTAMP)",
            self.registry(&spec.schema),
            self.literal(&spec.sync_uid),
            self.literal(&spec.sync_name)
        )
    }

    /// A query that returns a row when the sync is in `ferry_syncs`.
    pub(super) fn registered(&self, spec: &DiffSpec) -> String {
        format!(
            "SELECT 1 FROM {} WHERE sync_uid = {}",
            self.registry(&spec.schema),
            self.literal(&spec.sync_uid)
        )
    }

    /// Creates the sync's table of acknowledged rows: its key (as the change query computes
    /// it) and its row hash.
    pub(super) fn create_sync_table(&self, spec: &DiffSpec) -> String {
        let table = self.sync_table(spec);
        match self {
            Dialect::Postgres | Dialect::DuckDb => format!(
                "CREATE TABLE IF NOT EXISTS {table} (key VARCHAR PRIMARY KEY, row_hash VARCHAR \
                 NOT NULL)"
            ),
            // DYNAMIC rows allow a 3072-byte index whatever the server's default row format.
            Dialect::Mysql => format!(
                "CREATE TABLE IF NOT EXISTS {table} (`key` VARCHAR({MYSQL_LONGEST_KEY}) NOT NULL \
                 PRIMARY KEY, row_hash VARCHAR(64) NOT NULL) ENGINE = InnoDB ROW_FORMAT = \
                 DYNAMIC CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ),
            Dialect::Snowflake => format!(
                "CREATE TABLE IF NOT EXISTS {table} (key VARCHAR NOT NULL PRIMARY KEY, row_hash \
                 VARCHAR NOT NULL)"
            ),
            Dialect::BigQuery { .. } => format!(
                "CREATE TABLE IF NOT EXISTS {table} (key STRING NOT NULL, row_hash STRING NOT \
                 NULL)"
            ),
        }
    }

    /// A query that returns a row when the schema exists; `None` on BigQuery, which has no
    /// INFORMATION_SCHEMA of datasets without naming a region (see
    /// [`Dialect::existence_probe`]).
    pub(super) fn schema_exists(&self, schema: &str) -> Option<String> {
        let name = self.literal(&self.stored_name(schema));
        match self {
            Dialect::Postgres => Some(format!("SELECT 1 FROM pg_namespace WHERE nspname = {name}")),
            Dialect::DuckDb | Dialect::Mysql | Dialect::Snowflake => Some(format!(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = {name}"
            )),
            Dialect::BigQuery { .. } => None,
        }
    }

    /// A query that returns a row when the table exists in ferry's schema; `None` on BigQuery.
    pub(super) fn table_exists(&self, schema: &str, table: &str) -> Option<String> {
        match self {
            Dialect::Postgres => Some(format!(
                "SELECT 1 WHERE to_regclass({}) IS NOT NULL",
                self.literal(&self.table(schema, table))
            )),
            Dialect::DuckDb | Dialect::Mysql | Dialect::Snowflake => Some(format!(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = {} AND table_name \
                 = {}",
                self.literal(&self.stored_name(schema)),
                self.literal(&self.stored_name(table))
            )),
            Dialect::BigQuery { .. } => None,
        }
    }

    /// BigQuery: a query that reads nothing from the table; the error that refuses it says
    /// whether the dataset or the table is missing ("Not found: Dataset …", "Not found: Table
    /// …").
    pub(super) fn existence_probe(&self, schema: &str, table: &str) -> String {
        format!("SELECT 1 FROM {} LIMIT 0", self.table(schema, table))
    }

    /// A name as the warehouse's catalog stores it.
    fn stored_name(&self, name: &str) -> String {
        match self {
            Dialect::Snowflake => name.to_uppercase(),
            _ => name.to_string(),
        }
    }

    /// Statements that upsert `(key, row hash)` pairs (one per key) into `table`, written out
    /// as text: Snowflake and BigQuery, which ferry reaches one statement at a time through
    /// their HTTP APIs. A matched row is written only when its hash changed, which spares the
    /// warehouse rewriting unchanged rows (a full resync acknowledges every row again).
    pub(super) fn upsert_statements(&self, table: &str, rows: &[(String, String)]) -> Vec<String> {
        let row_text = |(key, hash): &(String, String)| match self {
            Dialect::BigQuery { .. } => format!(
                "STRUCT({} AS key, {} AS row_hash)",
                self.literal(key),
                self.literal(hash)
            ),
            _ => format!("({}, {})", self.literal(key), self.literal(hash)),
        };
        let mut statements = Vec::new();
        let mut values: Vec<String> = Vec::new();
        let mut text = 0;
        for row in rows {
            let row = row_text(row);
            if !values.is_empty()
                && (values.len() == ROWS_PER_STATEMENT || text + row.len() > TEXT_PER_STATEMENT)
            {
                statements.push(self.merge(table, &values));
                values.clear();
                text = 0;
            }
            text += row.len() + 2;
            values.push(row);
        }
        if !values.is_empty() {
            statements.push(self.merge(table, &values));
        }
        statements
    }

    fn merge(&self, table: &str, values: &[String]) -> String {
        let values = values.join(", ");
        match self {
            Dialect::BigQuery { .. } => format!(
                "MERGE {table} AS t USING (SELECT * FROM UNNEST([{values}])) AS s ON t.key = \
                 s.key WHEN MATCHED AND t.row_hash <> s.row_hash THEN UPDATE SET row_hash = \
                 s.row_hash WHEN NOT MATCHED THEN INSERT (key, row_hash) VALUES (s.key, \
                 s.row_hash)"
            ),
            _ => format!(
                "MERGE INTO {table} AS t USING (SELECT k, h FROM (VALUES {values}) AS v (k, h)) \
                 AS s ON t.key = s.k WHEN MATCHED AND t.row_hash <> s.h THEN UPDATE SET \
                 row_hash = s.h WHEN NOT MATCHED THEN INSERT (key, row_hash) VALUES (s.k, s.h)"
            ),
        }
    }

    /// MySQL's upsert of `rows` pairs, as a statement with two placeholders per row.
    pub(super) fn mysql_upsert(&self, table: &str, rows: usize) -> String {
        let placeholders = vec!["(?, ?)"; rows].join(", ");
        // VALUES() in ON DUPLICATE KEY UPDATE is what both MySQL and MariaDB read (MySQL 8.0.20
        // deprecated it for an alias MariaDB does not have).
        format!(
            "INSERT INTO {table} ({}, row_hash) VALUES {placeholders} ON DUPLICATE KEY UPDATE \
             row_hash = VALUES(row_hash)",
            self.key_column()
        )
    }

    /// `DELETE FROM ferry_syncs` for one sync: what rebuilds a dropped table.
    pub(super) fn unregister(&self, spec: &DiffSpec) -> String {
        format!(
            "DELETE FROM {} WHERE sync_uid = {}",
            self.registry(&spec.schema),
            self.literal(&spec.sync_uid)
        )
    }
}

/// `"name"`, with inner quotes doubled.
fn double_quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::*;

    fn bigquery() -> Dialect {
        Dialect::BigQuery {
            project: "my-project".into(),
            location: "EU".into(),
        }
    }

    #[test]
    fn names_are_quoted_and_qualified_per_warehouse() {
        let cases = [
            (
                Dialect::Postgres,
                "\"ferry\".\"sync_00ab\"",
                "\"full name\"",
            ),
            (Dialect::Mysql, "`ferry`.`sync_00ab`", "`full name`"),
            (
                Dialect::Snowflake,
                "\"FERRY\".\"SYNC_00AB\"",
                "\"full name\"",
            ),
            (
                bigquery(),
                "`my-project`.`ferry`.`sync_00ab`",
                "`full name`",
            ),
        ];
        for (dialect, table, column) in cases {
            assert_eq!(dialect.sync_table(&spec()), table);
            assert_eq!(dialect.column("full name"), column);
        }
        assert_eq!(Dialect::Mysql.column("a`b"), "`a``b`");
        assert_eq!(bigquery().column("a`b"), "`a\\`b`");
        assert_eq!(Dialect::Postgres.column("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn text_constants_survive_each_warehouses_escapes() {
        let text = "it's a \\ back\nslash";
        assert_eq!(Dialect::DuckDb.literal(text), "'it''s a \\ back\nslash'");
        assert_eq!(
            Dialect::Mysql.literal(text),
            format!("CONVERT(X'{}' USING utf8mb4)", hex::encode(text))
        );
        assert_eq!(Dialect::Mysql.literal("o'hara"), "'o''hara'");
        assert_eq!(
            Dialect::Snowflake.literal(text),
            "'it\\'s a \\\\ back\nslash'"
        );
        assert_eq!(
            bigquery().literal("it's a \\ back\nslash\u{1}"),
            "'it\\'s a \\\\ back\\nslash\\u0001'"
        );
    }

    #[test]
    fn each_warehouse_computes_the_key_and_the_hash_in_its_own_sql() {
        let fields = ["q.a".to_string(), "q.b".to_string()];
        assert_eq!(
            Dialect::Mysql.key_text("q.`email`", true),
            "lower(TRIM(CAST(q.`email` AS CHAR CHARACTER SET utf8mb4))) COLLATE utf8mb4_bin"
        );
        assert_eq!(
            Dialect::Mysql.row_hash("f1", &fields),
            "MD5(CONCAT('f1', IF(q.a IS NULL, 'n', CONCAT('v', LENGTH(CAST(q.a AS BINARY)), ':', \
             CAST(q.a AS BINARY))), IF(q.b IS NULL, 'n', CONCAT('v', LENGTH(CAST(q.b AS \
             BINARY)), ':', CAST(q.b AS BINARY)))))"
        );
        assert_eq!(
            Dialect::Snowflake.key_text("q.\"EMAIL\"", false),
            "trim(CAST(q.\"EMAIL\" AS VARCHAR))"
        );
        assert_eq!(
            Dialect::Snowflake.row_hash("f1", &fields[..1]),
            "md5('f1' || (CASE WHEN q.a IS NULL THEN 'n' ELSE 'v' || CAST(length(CAST(q.a AS \
             VARCHAR)) AS VARCHAR) || ':' || CAST(q.a AS VARCHAR) END))"
        );
        assert_eq!(
            bigquery().key_text("q.`email`", true),
            "lower(TRIM(CAST(q.`email` AS STRING)))"
        );
        assert_eq!(
            bigquery().row_hash("f1", &fields),
            "TO_HEX(MD5(CONCAT('f1', TO_JSON_STRING(STRUCT(q.a, q.b)))))"
        );
    }

    #[test]
    fn the_bookkeeping_tables_are_made_for_each_warehouse() {
        assert_eq!(
            Dialect::Mysql.create_schema("ferry"),
            "CREATE DATABASE IF NOT EXISTS `ferry` CHARACTER SET utf8mb4"
        );
        assert_eq!(
            Dialect::Mysql.create_sync_table(&spec()),
            "CREATE TABLE IF NOT EXISTS `ferry`.`sync_00ab` (`key` VARCHAR(768) NOT NULL \
             PRIMARY KEY, row_hash VARCHAR(64) NOT NULL) ENGINE = InnoDB ROW_FORMAT = DYNAMIC \
             CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        );
        assert_eq!(
            Dialect::Snowflake.create_schema("ferry"),
            "CREATE SCHEMA IF NOT EXISTS \"FERRY\""
        );
        assert_eq!(
            Dialect::Snowflake
                .table_exists("ferry", "ferry_syncs")
                .unwrap(),
            "SELECT 1 FROM information_schema.tables WHERE table_schema = 'FERRY' AND \
             table_name = 'FERRY_SYNCS'"
        );
        assert_eq!(
            bigquery().create_schema("ferry"),
            "CREATE SCHEMA IF NOT EXISTS `my-project`.`ferry` OPTIONS (location = 'EU')"
        );
        assert_eq!(
            Dialect::BigQuery {
                project: "p".into(),
                location: String::new()
            }
            .create_schema("ferry"),
            "CREATE SCHEMA IF NOT EXISTS `p`.`ferry`"
        );
        assert_eq!(bigquery().schema_exists("ferry"), None);
        assert_eq!(
            bigquery().register(&spec()),
            "INSERT INTO `my-project`.`ferry`.`ferry_syncs` (sync_uid, sync_name, created_at) \
             VALUES ('00ab', 'customers', CURRENT_TIMESTAMP)"
        );
        assert_eq!(
            Dialect::Postgres
                .table_exists("ferry", "sync_00ab")
                .unwrap(),
            "SELECT 1 WHERE to_regclass('\"ferry\".\"sync_00ab\"') IS NOT NULL"
        );
    }

    #[test]
    fn upserts_merge_only_changed_hashes_in_statements_of_bounded_size() {
        let rows = vec![
            ("a@x.com".to_string(), "h1".to_string()),
            ("o'hara".to_string(), "h2".to_string()),
        ];
        assert_eq!(
            Dialect::Snowflake.upsert_statements("\"FERRY\".\"SYNC_00AB\"", &rows),
            [
                "MERGE INTO \"FERRY\".\"SYNC_00AB\" AS t USING (SELECT k, h FROM (VALUES \
              ('a@x.com', 'h1'), ('o\\'hara', 'h2')) AS v (k, h)) AS s ON t.key = s.k WHEN \
              MATCHED AND t.row_hash <> s.h THEN UPDATE SET row_hash = s.h WHEN NOT MATCHED \
              THEN INSERT (key, row_hash) VALUES (s.k, s.h)"
            ]
        );
        assert_eq!(
            bigquery().upsert_statements("`p`.`ferry`.`sync_00ab`", &rows),
            [
                "MERGE `p`.`ferry`.`sync_00ab` AS t USING (SELECT * FROM UNNEST([STRUCT('a@x.com' \
              AS key, 'h1' AS row_hash), STRUCT('o\\'hara' AS key, 'h2' AS row_hash)])) AS s ON \
              t.key = s.key WHEN MATCHED AND t.row_hash <> s.row_hash THEN UPDATE SET row_hash \
              = s.row_hash WHEN NOT MATCHED THEN INSERT (key, row_hash) VALUES (s.key, \
              s.row_hash)"
            ]
        );
        let many: Vec<(String, String)> = (0..2500)
            .map(|n| (format!("key{n}"), format!("hash{n}")))
            .collect();
        let statements = Dialect::Snowflake.upsert_statements("t", &many);
        assert_eq!(statements.len(), 3, "1000 rows a statement");
        let long: Vec<(String, String)> = (0..40)
            .map(|n| (format!("{n}{}", "k".repeat(20_000)), "h".to_string()))
            .collect();
        let statements = bigquery().upsert_statements("t", &long);
        assert!(statements.len() > 1);
        assert!(statements.iter().all(|s| s.len() < 300 * 1024));
        assert_eq!(
            statements
                .iter()
                .map(|s| s.matches("STRUCT(").count())
                .sum::<usize>(),
            40
        );
        assert_eq!(
            Dialect::Mysql.mysql_upsert("`ferry`.`sync_00ab`", 2),
            "INSERT INTO `ferry`.`sync_00ab` (`key`, row_hash) VALUES (?, ?), (?, ?) ON \
             DUPLICATE KEY UPDATE row_hash = VALUES(row_hash)"
        );
    }
}
