//! The registry of connection kinds: what each kind (Stripe, DuckDB, PostgreSQL) is, its
//! settings as a typed struct, which setting is its secret, its label and help, whether models
//! read from it, and its connection test, declared once here. Every door (the CLI's `ferry
//! connect`, the API, the web UI's forms, `ferry.yaml` and `ferry export`) converts what it is
//! given into these settings, and everything that uses a connection reads them through here;
//! nothing else reads the stored settings by key.
//!
//! The stored `config` JSON is the settings struct serialized (field names are the stored keys,
//! a setting left to its default is not stored): stripe `{"api_base", "max_rps",
//! "max_rps_per_endpoint"}` with the API key as the secret; duckdb `{"path",
//! "statement_timeout_seconds", "preview_timeout_seconds", "change_detection_schema"}`; postgres
//! `{"statement_timeout_seconds", "preview_timeout_seconds", "change_detection_schema"}` with the
//! URL as the secret.
//!
//! The registry lives in the engine because the connection test needs a source and a
//! destination, which only the engine joins; the front ends (the binary and the server) already
//! depend on the engine, so no new edge enters the crate graph.

pub use crate::channel_kinds::{
    EmailChannelSettings, SlackSettings, WebhookSettings, EMAIL, SLACK, WEBHOOK,
};
pub use crate::trigger_kinds::{
    DbtCloudSettings, SignedTriggerSettings, TriggerTarget, DBT_CLOUD, SIGNED_TRIGGER,
};
use crate::EngineError;
use ferry_core::Secret;
use ferry_destinations::stripe::{StripeConfig, STRIPE_API_BASE};
use ferry_source::{QueryOptions, SourceConfig, TimeoutSetting};
use ferry_state::{ConnectionKind, ConnectionRecord, NewConnection, StateStore};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

// ----- the registry -----

/// What one kind of connection is. One entry per kind in [`REGISTRY`].
#[derive(Debug)]
pub struct KindSpec {
    pub kind: ConnectionKind,
    /// The kind's name for people: `PostgreSQL`.
    pub label: &'static str,
    /// One sentence on what it connects (`ferry connect KIND --help`), without a final period.
    pub help: &'static str,
    /// Whether models read from it (a warehouse) rather than syncs write to it.
    pub is_source: bool,
    /// The setting that is a secret (stored encrypted or as an environment variable's name),
    /// if the kind has one.
    pub secret: Option<SecretSpec>,
    /// Its settings besides the secret, in the order `ferry export` writes them: the fields of
    /// its settings struct, by their stored names.
    pub settings: &'static [SettingSpec],
}

/// A kind's secret setting.
#[derive(Debug)]
pub struct SecretSpec {
    /// What the secret is, in words: `API key`, `URL`.
    pub what: &'static str,
    /// The API field (and `ferry connect` flag, with `--`) that takes the value itself.
    pub value_field: &'static str,
    /// The field of `ferry.yaml` and the API that names the environment variable holding it.
    pub env_field: &'static str,
    /// A variable name to show in hints.
    pub example_env: &'static str,
    /// The `ferry connect` flag to give it again with.
    pub flag: &'static str,
    /// Its label in the web UI's form.
    pub label: &'static str,
    /// What it is and how it is kept, for `ferry connect --help`, the UI and the API's
    /// documentation.
    pub help: &'static str,
    /// An example value for the UI's empty field.
    pub placeholder: &'static str,
    /// Whether a connection may have none (BigQuery, signed in by application default
    /// credentials instead).
    pub optional: bool,
}

/// One setting of a kind, besides the secret.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    /// Its name as stored, and in `ferry.yaml` and the API.
    pub key: &'static str,
    /// The `ferry connect` flag that sets it.
    pub flag: &'static str,
    /// How its value is written.
    pub value: SettingValue,
    /// Whether a connection of the kind must set it.
    pub required: bool,
    /// Its label in the web UI's form.
    pub label: &'static str,
    /// What it does and its default, for `ferry connect --help`, the UI and the API's
    /// documentation.
    pub help: &'static str,
    /// An example value for the UI's empty field.
    pub placeholder: &'static str,
}

/// How a setting's value is written at a door. The CLI and the web UI take text, which
/// [`setting_from_text`] turns into the JSON the API and `ferry.yaml` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingValue {
    /// Text: a URL, a name.
    Text,
    /// A file or folder on the machine ferry runs on, stored absolute: relative to the CLI's
    /// working directory, or to the folder of `ferry.yaml`.
    Path,
    /// Several folders, as [`SettingValue::Path`] each: the CLI's flag repeats, the UI takes
    /// one per line, the API and `ferry.yaml` a list.
    Paths,
    /// A whole number of seconds, 0 to [`MAX_TIMEOUT_SECONDS`] (0: no limit).
    Seconds,
    /// A whole number (requests per second).
    Count,
}

impl SettingValue {
    /// The placeholder for the value in `--help`.
    pub fn value_name(self) -> &'static str {
        match self {
            SettingValue::Text => "TEXT",
            SettingValue::Path => "PATH",
            SettingValue::Paths => "FOLDER",
            SettingValue::Seconds => "SECONDS",
            SettingValue::Count => "N",
        }
    }

    /// Its JSON Schema type, for the API's documentation.
    pub fn json_type(self) -> &'static str {
        match self {
            SettingValue::Text | SettingValue::Path => "string",
            SettingValue::Paths => "array",
            SettingValue::Seconds | SettingValue::Count => "integer",
        }
    }
}

/// The settings every warehouse has: how long its queries may run, and where change
/// detection keeps its tables.
const WAREHOUSE_SETTINGS: [SettingSpec; 3] = [
    SettingSpec {
        key: "statement_timeout_seconds",
        flag: "--statement-timeout",
        value: SettingValue::Seconds,
        required: false,
        label: "Statement timeout (seconds)",
        help: "The longest a run, a sync preview or a model's column check may keep the \
               warehouse working on the model before it is cancelled, in seconds (default 300; \
               0 means no limit; at most 86400)",
        placeholder: "300",
    },
    SettingSpec {
        key: "preview_timeout_seconds",
        flag: "--preview-timeout",
        value: SettingValue::Seconds,
        required: false,
        label: "Preview timeout (seconds)",
        help: "The longest a model preview (`ferry model show`, the web UI's preview) may run \
               while you wait for it, in seconds (default 30; 0 means no limit; at most 86400)",
        placeholder: "30",
    },
    SettingSpec {
        key: CHANGE_DETECTION_SCHEMA,
        flag: "--change-detection-schema",
        value: SettingValue::Text,
        required: false,
        label: "Change detection schema",
        help: "Keep change detection's tables in this schema of the warehouse, so only new and \
               changed rows travel (needs the right to create tables there; saving the \
               connection creates the schema). Lower-case letters, digits and `_`. Off by \
               default: ferry only reads",
        placeholder: "ferry",
    },
];

/// Every kind of connection ferry knows. Adding a warehouse is a source module, its settings
/// struct, an entry here and a variant of [`ConnectionSettings`].
pub const REGISTRY: [KindSpec; 13] = [
    STRIPE,
    DUCKDB,
    POSTGRES,
    REDSHIFT,
    MYSQL,
    SNOWFLAKE,
    BIGQUERY,
    FILES,
    WEBHOOK,
    SLACK,
    EMAIL,
    DBT_CLOUD,
    SIGNED_TRIGGER,
];

pub const STRIPE: KindSpec = KindSpec {
    kind: ConnectionKind::Stripe,
    label: "Stripe",
    help: "Connect a Stripe account. The key is tested at once with a read of /v1/balance",
    is_source: false,
    secret: Some(SecretSpec {
        what: "API key",
        value_field: "api_key",
        env_field: "api_key_env",
        example_env: "STRIPE_API_KEY",
        flag: "--api-key-env",
        label: "Secret or restricted key",
        help: "The account's secret key (sk_…) or a restricted key (rk_…) with write access to \
               the objects ferry syncs. Given as a value it is stored encrypted in the \
               workspace; prefer an environment variable (only its name is stored), since a key \
               on the command line stays in your shell history",
        placeholder: "sk_test_…",
        optional: false,
    }),
    settings: &[
        SettingSpec {
            key: "api_base",
            flag: "--api-base",
            value: SettingValue::Text,
            required: false,
            label: "API base",
            help: "Another Stripe-compatible server, such as `ferry emulate stripe`'s URL \
                   (default: Stripe's own API, https://api.stripe.com)",
            placeholder: STRIPE_API_BASE,
        },
        SettingSpec {
            key: "max_rps",
            flag: "--max-rps",
            value: SettingValue::Count,
            required: false,
            label: "Requests per second",
            help: "Requests per second for the whole account (default: 25 for test keys, 100 \
                   for live ones; 0 turns the limit off, for emulator benchmarks only)",
            placeholder: "25",
        },
        SettingSpec {
            key: "max_rps_per_endpoint",
            flag: "--max-rps-per-endpoint",
            value: SettingValue::Count,
            required: false,
            label: "Requests per second per endpoint",
            help: "Requests per second per endpoint (default 25, Stripe's limit; 0 turns it off)",
            placeholder: "25",
        },
    ],
};

pub const DUCKDB: KindSpec = KindSpec {
    kind: ConnectionKind::Duckdb,
    label: "DuckDB",
    help: "Connect a DuckDB database file (opened read-only by syncs, unless \
           --change-detection-schema lets ferry keep tables in it)",
    is_source: true,
    secret: None,
    settings: &[
        SettingSpec {
            key: "path",
            flag: "--path",
            value: SettingValue::Path,
            required: true,
            label: "DuckDB file",
            help: "The database file, on the machine ferry runs on; ferry opens it read-only",
            placeholder: "/data/warehouse.duckdb",
        },
        WAREHOUSE_SETTINGS[0],
        WAREHOUSE_SETTINGS[1],
        WAREHOUSE_SETTINGS[2],
    ],
};

pub const POSTGRES: KindSpec = KindSpec {
    kind: ConnectionKind::Postgres,
    label: "PostgreSQL",
    help: "Connect a PostgreSQL warehouse (models run in read-only transactions)",
    is_source: true,
    secret: Some(SecretSpec {
        what: "URL",
        value_field: "url",
        env_field: "url_env",
        example_env: "WAREHOUSE_URL",
        flag: "--url",
        label: "Connection URL",
        help: "postgres://user:password@host:port/db, stored encrypted (or read from an \
               environment variable). TLS as with libpq: ?sslmode=disable|prefer \
               (default)|require|verify-ca|verify-full, and &sslrootcert=PATH for the PEM \
               certificate of the server's CA",
        placeholder: "postgres://user:password@host:5432/db",
        optional: false,
    }),
    settings: &WAREHOUSE_SETTINGS,
};

pub const REDSHIFT: KindSpec = KindSpec {
    kind: ConnectionKind::Redshift,
    label: "Amazon Redshift",
    help: "Connect an Amazon Redshift cluster or serverless workgroup (PostgreSQL's protocol, \
           port 5439 and verified TLS by default; models run in read-only transactions)",
    is_source: true,
    secret: Some(SecretSpec {
        what: "URL",
        value_field: "url",
        env_field: "url_env",
        example_env: "REDSHIFT_URL",
        flag: "--url",
        label: "Connection URL",
        help: "postgres://user:password@cluster.abc123.eu-west-1.redshift.amazonaws.com/dev, \
               stored encrypted (or read from an environment variable). Port 5439 and \
               sslmode=verify-full unless the URL says otherwise (sslmode=require to skip the \
               certificate check, e.g. through an SSH tunnel)",
        placeholder: "postgres://user:password@cluster.abc123.eu-west-1.redshift.amazonaws.com/dev",
        optional: false,
    }),
    // Change detection inside the warehouse writes with `INSERT … ON CONFLICT`, which Redshift
    // does not have.
    settings: &[WAREHOUSE_SETTINGS[0], WAREHOUSE_SETTINGS[1]],
};

pub const MYSQL: KindSpec = KindSpec {
    kind: ConnectionKind::Mysql,
    label: "MySQL / MariaDB",
    help: "Connect a MySQL or MariaDB database (models run in read-only transactions, in a UTC \
           session)",
    is_source: true,
    secret: Some(SecretSpec {
        what: "URL",
        value_field: "url",
        env_field: "url_env",
        example_env: "MYSQL_URL",
        flag: "--url",
        label: "Connection URL",
        help: "mysql://user:password@host:3306/database, stored encrypted (or read from an \
               environment variable). TLS as MySQL's clients: ?ssl-mode=DISABLED|PREFERRED \
               (default)|REQUIRED|VERIFY_CA|VERIFY_IDENTITY, and &ssl-ca=PATH for the PEM \
               certificate of the server's CA",
        placeholder: "mysql://user:password@host:3306/database",
        optional: false,
    }),
    settings: &WAREHOUSE_SETTINGS,
};

/// A Snowflake or BigQuery setting that is plain text.
const fn text_setting(
    key: &'static str,
    flag: &'static str,
    required: bool,
    label: &'static str,
    help: &'static str,
    placeholder: &'static str,
) -> SettingSpec {
    SettingSpec {
        key,
        flag,
        value: SettingValue::Text,
        required,
        label,
        help,
        placeholder,
    }
}

pub const SNOWFLAKE: KindSpec = KindSpec {
    kind: ConnectionKind::Snowflake,
    label: "Snowflake",
    help: "Connect a Snowflake account through its SQL API, signed in with a key pair, an OAuth \
           token or a programmatic access token (give ferry a role that can only read)",
    is_source: true,
    secret: Some(SecretSpec {
        what: "credential",
        value_field: "credential",
        env_field: "credential_env",
        example_env: "SNOWFLAKE_PRIVATE_KEY",
        flag: "--credential-env",
        label: "Private key or token",
        help: "With key-pair authentication (the default), the user's RSA private key as PKCS#8 \
               PEM (`-----BEGIN PRIVATE KEY-----`, or an encrypted one with \
               --private-key-passphrase-env); with --authentication oauth or \
               programmatic_access_token, the token. Stored encrypted, or read from an \
               environment variable (SNOWFLAKE_PRIVATE_KEY=\"$(cat rsa_key.p8)\")",
        placeholder: "-----BEGIN PRIVATE KEY-----",
        optional: false,
    }),
    settings: &[
        text_setting(
            "account",
            "--account",
            true,
            "Account identifier",
            "The account identifier: organization and account name (`myorg-myaccount`) or a \
             locator with its region (`xy12345.us-east-2.aws`)",
            "myorg-myaccount",
        ),
        text_setting(
            "user",
            "--user",
            true,
            "User",
            "The user ferry signs in as",
            "FERRY",
        ),
        text_setting(
            "warehouse",
            "--warehouse",
            true,
            "Warehouse",
            "The virtual warehouse that runs the models (the role needs USAGE on it)",
            "SYNC_WH",
        ),
        text_setting(
            "database",
            "--database",
            false,
            "Database",
            "The database unqualified names in models refer to (default: the user's)",
            "ANALYTICS",
        ),
        text_setting(
            "schema",
            "--schema",
            false,
            "Schema",
            "The schema unqualified names in models refer to (default: the user's)",
            "PUBLIC",
        ),
        text_setting(
            "role",
            "--role",
            false,
            "Role",
            "The role models run as: give it SELECT only (default: the user's default role)",
            "FERRY_READER",
        ),
        text_setting(
            "authentication",
            "--authentication",
            false,
            "Authentication",
            "How the credential signs in: key_pair (the default), oauth or \
             programmatic_access_token",
            "key_pair",
        ),
        text_setting(
            "private_key_passphrase_env",
            "--private-key-passphrase-env",
            false,
            "Private key passphrase variable",
            "The environment variable holding the passphrase of an encrypted private key (only \
             its name is stored)",
            "SNOWFLAKE_KEY_PASSPHRASE",
        ),
        text_setting(
            "base_url",
            "--base-url",
            false,
            "API address",
            "Another address for the SQL API, for private connectivity (default: \
             https://ACCOUNT.snowflakecomputing.com)",
            "https://myorg-myaccount.privatelink.snowflakecomputing.com",
        ),
        WAREHOUSE_SETTINGS[0],
        WAREHOUSE_SETTINGS[1],
        WAREHOUSE_SETTINGS[2],
    ],
};

pub const BIGQUERY: KindSpec = KindSpec {
    kind: ConnectionKind::Bigquery,
    label: "BigQuery",
    help: "Connect a BigQuery project through its REST API, as a service account (its JSON key) \
           or with application default credentials",
    is_source: true,
    secret: Some(SecretSpec {
        what: "service account key",
        value_field: "service_account_key",
        env_field: "service_account_key_env",
        example_env: "BIGQUERY_SERVICE_ACCOUNT_KEY",
        flag: "--service-account-key-env",
        label: "Service account key (JSON)",
        help: "The service account's JSON key file's contents (roles: BigQuery Data Viewer on \
               the datasets, BigQuery Job User on the project), stored encrypted or read from \
               an environment variable. Without it, application default credentials: \
               GOOGLE_APPLICATION_CREDENTIALS, gcloud's, or the GCE/GKE metadata server",
        placeholder: "{\"type\": \"service_account\", …}",
        optional: true,
    }),
    settings: &[
        text_setting(
            "project_id",
            "--project-id",
            true,
            "Project",
            "The project query jobs run in and are billed to",
            "my-project",
        ),
        text_setting(
            "location",
            "--location",
            false,
            "Location",
            "Where the datasets the models read live (US, EU, us-central1); BigQuery infers it \
             when not set",
            "US",
        ),
        text_setting(
            "default_dataset",
            "--default-dataset",
            false,
            "Default dataset",
            "The dataset unqualified table names in models resolve to (`analytics` or \
             `other-project.analytics`)",
            "analytics",
        ),
        SettingSpec {
            key: "maximum_bytes_billed",
            flag: "--maximum-bytes-billed",
            value: SettingValue::Count,
            required: false,
            label: "Maximum bytes billed",
            help: "Refuse to run a model that would bill more bytes than this (default: the \
                   project's own limit)",
            placeholder: "10000000000",
        },
        text_setting(
            "api_base",
            "--api-base",
            false,
            "API address",
            "Another address for BigQuery's API, such as an emulator's (default: \
             https://bigquery.googleapis.com)",
            "https://bigquery.googleapis.com",
        ),
        WAREHOUSE_SETTINGS[0],
        WAREHOUSE_SETTINGS[1],
        WAREHOUSE_SETTINGS[2],
    ],
};

pub const FILES: KindSpec = KindSpec {
    kind: ConnectionKind::Files,
    label: "Files (CSV, Parquet, JSON)",
    help: "Connect folders of CSV, Parquet and JSON files, read by the embedded DuckDB: each data \
           file is a table named after it, and models can read nothing outside the folders",
    is_source: true,
    secret: None,
    settings: &[
        SettingSpec {
            key: "folders",
            flag: "--folder",
            value: SettingValue::Paths,
            required: true,
            label: "Folders",
            help: "A folder of data files on the machine ferry runs on (repeat --folder for \
                   several; one per line in the form)",
            placeholder: "/data/exports",
        },
        WAREHOUSE_SETTINGS[0],
        WAREHOUSE_SETTINGS[1],
    ],
};

/// The registry's entry for a kind.
pub fn kind_spec(kind: ConnectionKind) -> &'static KindSpec {
    REGISTRY
        .iter()
        .find(|spec| spec.kind == kind)
        .expect("every ConnectionKind has a registry entry")
}

impl KindSpec {
    /// The stored names of its settings, the secret's environment field first if it has one:
    /// what `ferry.yaml` accepts for this kind.
    pub fn file_fields(&self) -> Vec<&'static str> {
        self.secret
            .iter()
            .map(|secret| secret.env_field)
            .chain(self.settings.iter().map(|setting| setting.key))
            .collect()
    }

    /// Its setting stored as `key`.
    pub fn setting(&self, key: &str) -> Option<&'static SettingSpec> {
        self.settings.iter().find(|setting| setting.key == key)
    }

    /// The kind named `name` (`postgres`), as every door takes it.
    pub fn named(name: &str) -> Option<&'static KindSpec> {
        REGISTRY.iter().find(|spec| spec.kind.as_str() == name)
    }

    /// The kinds' names, for errors: `stripe, duckdb or postgres`.
    pub fn names(source_only: bool) -> String {
        let names: Vec<&str> = REGISTRY
            .iter()
            .filter(|spec| spec.is_source || !source_only)
            .map(|spec| spec.kind.as_str())
            .collect();
        match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

impl SecretSpec {
    /// The `ferry connect` flag that takes the value itself: `--api-key`, `--url`.
    pub fn value_flag(&self) -> String {
        format!("--{}", self.value_field.replace('_', "-"))
    }

    /// The `ferry connect` flag that names the environment variable: `--url-env`.
    pub fn env_flag(&self) -> String {
        format!("--{}", self.env_field.replace('_', "-"))
    }
}

/// A setting's value as typed on the command line or in a form (several for
/// [`SettingValue::Paths`]), as the JSON the API and `ferry.yaml` take; `None` when it is left
/// empty. Paths are made absolute against `base`. Numbers are checked when the settings are
/// read ([`ConnectionSettings::parse`]), in the same words for every door.
pub fn setting_from_text(
    setting: &SettingSpec,
    texts: &[String],
    base: &Path,
) -> Option<serde_json::Value> {
    let texts: Vec<&str> = texts
        .iter()
        .flat_map(|text| text.lines())
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .collect();
    let first = *texts.first()?;
    Some(match setting.value {
        SettingValue::Text => first.into(),
        SettingValue::Path => absolute_path(base, Path::new(first))
            .display()
            .to_string()
            .into(),
        SettingValue::Paths => texts
            .iter()
            .map(|text| absolute_path(base, Path::new(text)).display().to_string())
            .collect::<Vec<_>>()
            .into(),
        SettingValue::Seconds | SettingValue::Count => match first.parse::<u64>() {
            Ok(number) => number.into(),
            // Left as text, it is refused in the setting's own words.
            Err(_) => first.into(),
        },
    })
}

/// `path` joined to `base` when relative, with `.` and `..` resolved by name (the file may
/// not exist yet): what ferry stores, so a sync finds the file from any working directory.
pub fn absolute_path(base: &Path, path: &Path) -> PathBuf {
    use std::path::Component;
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let joined = std::path::absolute(&joined).unwrap_or(joined);
    let mut clean = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

// ----- the settings, per kind -----

/// A connection's settings, typed by its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionSettings {
    Stripe(StripeSettings),
    Duckdb(DuckdbSettings),
    Postgres(WarehouseSettings),
    /// A Redshift connection's: a warehouse's, without change detection.
    Redshift(WarehouseSettings),
    /// A MySQL or MariaDB connection's: a warehouse's, without change detection.
    Mysql(WarehouseSettings),
    Snowflake(SnowflakeSettings),
    Bigquery(BigquerySettings),
    Files(FilesSettings),
    Webhook(WebhookSettings),
    Slack(SlackSettings),
    Email(EmailChannelSettings),
    DbtCloud(DbtCloudSettings),
    Trigger(SignedTriggerSettings),
}

/// A Stripe connection's settings besides its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSettings {
    /// Another Stripe-compatible server (the emulator); Stripe's own API when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Requests per second for the whole account; Stripe's own limits when absent, 0 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rps: Option<u32>,
    /// Requests per second per endpoint; 25 when absent, 0 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rps_per_endpoint: Option<u32>,
}

/// A DuckDB connection's settings: its database file and the settings every warehouse has.
/// (serde cannot deny unknown fields next to `flatten`; [`ConnectionSettings::parse`] refuses
/// them first, from the registry's list, for every kind.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuckdbSettings {
    /// The database file, absolute.
    pub path: PathBuf,
    #[serde(flatten)]
    pub warehouse: WarehouseSettings,
}

/// A Snowflake connection's settings besides its credential (the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnowflakeSettings {
    pub account: String,
    pub user: String,
    /// Snowflake's virtual warehouse (stored as `warehouse`).
    #[serde(rename = "warehouse")]
    pub compute_warehouse: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// How the credential signs in; a key pair when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<SnowflakeAuthentication>,
    /// The environment variable holding an encrypted private key's passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_passphrase_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(flatten)]
    pub timeouts: WarehouseSettings,
}

/// What a Snowflake connection's credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnowflakeAuthentication {
    KeyPair,
    Oauth,
    ProgrammaticAccessToken,
}

/// A BigQuery connection's settings besides its service account key (the secret, optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BigquerySettings {
    pub project_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_bytes_billed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    #[serde(flatten)]
    pub timeouts: WarehouseSettings,
}

/// A files connection's settings: its folders (absolute) and a warehouse's timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesSettings {
    pub folders: Vec<PathBuf>,
    #[serde(flatten)]
    pub timeouts: WarehouseSettings,
}

/// A warehouse connection's settings besides where it is: how long its queries may run, in
/// seconds (0: no limit, at most [`MAX_TIMEOUT_SECONDS`]), and where ferry may keep what it
/// needs for change detection inside the warehouse. Absent ones take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseSettings {
    /// Runs, sync previews and finding a model's columns; 300 (5 minutes) when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "statement_timeout"
    )]
    pub statement_timeout_seconds: Option<u32>,
    /// Model previews, which a person waits for; 30 when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "preview_timeout"
    )]
    pub preview_timeout_seconds: Option<u32>,
    /// The schema of the warehouse where ferry keeps, per sync, the key and row hash of every
    /// row Stripe acknowledged, so that the warehouse itself finds the new and changed rows and
    /// only those travel to ferry. Absent (the default): ferry only reads, and compares every
    /// row with its workspace.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "schema_name"
    )]
    pub change_detection_schema: Option<String>,
}

/// The stored setting (and `ferry.yaml` key, and API field) that turns on change detection
/// inside the warehouse; the CLI's flag is `--change-detection-schema`.
pub const CHANGE_DETECTION_SCHEMA: &str = "change_detection_schema";

/// The longest a warehouse timeout may be set to: 24 hours. (0 means no limit at all.)
pub const MAX_TIMEOUT_SECONDS: u32 = 86_400;

/// A setting that cannot be read: the connection, the field, what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub connection: String,
    pub kind: ConnectionKind,
    /// The setting at fault; `None` when the settings are not a JSON object at all.
    pub field: Option<String>,
    pub problem: String,
}

impl SettingsError {
    /// The error for settings read from the workspace: names the connection and the field, and
    /// says how to correct it (`ferry connect` again with the setting's flag).
    pub fn stored(self) -> EngineError {
        let spec = kind_spec(self.kind);
        let fix = match self.field.as_deref().and_then(|field| spec.setting(field)) {
            Some(setting) => format!("reconnect it with a valid {}", setting.flag),
            None => format!(
                "connect it again with `ferry connect {} {} …` to replace its settings",
                self.kind, self.connection
            ),
        };
        EngineError::Config(format!(
            "connection '{}': {}; {fix}",
            self.connection, self.problem
        ))
    }
}

impl ConnectionSettings {
    /// A connection's settings from their stored (or given) JSON, every one checked.
    pub fn parse(
        connection: &str,
        kind: ConnectionKind,
        config: &serde_json::Value,
    ) -> Result<ConnectionSettings, SettingsError> {
        let error = |field: Option<String>, problem: String| SettingsError {
            connection: connection.to_string(),
            kind,
            field,
            problem,
        };
        let spec = kind_spec(kind);
        let object = config.as_object().ok_or_else(|| {
            error(
                None,
                format!("its settings must be a JSON object, not {config}"),
            )
        })?;
        if let Some(unknown) = object.keys().find(|key| spec.setting(key).is_none()) {
            return Err(error(
                Some(unknown.clone()),
                format!(
                    "`{unknown}` is not a setting of a {kind} connection, which takes {}",
                    spec.settings
                        .iter()
                        .map(|setting| format!("`{}`", setting.key))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // Nulls mean "not set", as every door has always read them.
        let config = serde_json::Value::Object(
            object
                .iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        );
        let settings = match kind {
            ConnectionKind::Stripe => typed(&config).map(ConnectionSettings::Stripe),
            ConnectionKind::Duckdb => typed(&config).map(ConnectionSettings::Duckdb),
            ConnectionKind::Postgres => typed(&config).map(ConnectionSettings::Postgres),
            ConnectionKind::Redshift => typed(&config).map(ConnectionSettings::Redshift),
            ConnectionKind::Mysql => typed(&config).map(ConnectionSettings::Mysql),
            ConnectionKind::Snowflake => typed(&config).map(ConnectionSettings::Snowflake),
            ConnectionKind::Bigquery => typed(&config).map(ConnectionSettings::Bigquery),
            ConnectionKind::Files => typed(&config).map(ConnectionSettings::Files),
            ConnectionKind::Webhook => typed(&config).map(ConnectionSettings::Webhook),
            ConnectionKind::Slack => typed(&config).map(ConnectionSettings::Slack),
            ConnectionKind::Email => typed(&config).map(ConnectionSettings::Email),
            ConnectionKind::DbtCloud => typed(&config).map(ConnectionSettings::DbtCloud),
            ConnectionKind::Trigger => typed(&config).map(ConnectionSettings::Trigger),
        };
        settings.map_err(|(field, problem)| {
            // A field's own message names it; serde's generic ones get the name in front.
            let field = field.or_else(|| {
                spec.settings
                    .iter()
                    .map(|setting| setting.key)
                    .find(|key| problem.starts_with(key) || problem.contains(&format!("`{key}`")))
                    .map(str::to_string)
            });
            let problem = match &field {
                Some(key) if problem.starts_with("missing field") => {
                    let what = spec.setting(key).map_or("", |setting| setting.label);
                    format!("`{key}` ({what}) is required")
                }
                Some(field)
                    if !problem.starts_with(field.as_str())
                        && !problem.contains(&format!("`{field}`")) =>
                {
                    format!("{field}: {problem}")
                }
                _ => problem,
            };
            error(field, problem)
        })
    }

    /// The settings a door was given, by their stored names (JSON values as the API and
    /// `ferry.yaml` take them; [`setting_from_text`] turns the CLI's and the UI's text into
    /// them), checked and put in their stored form: relative paths made absolute against
    /// `base`, Stripe's API base trimmed and always stored.
    pub fn from_door(
        connection: &str,
        kind: ConnectionKind,
        mut given: serde_json::Map<String, serde_json::Value>,
        base: &Path,
    ) -> Result<ConnectionSettings, EngineError> {
        let spec = kind_spec(kind);
        for (key, value) in given.iter_mut() {
            let Some(setting) = spec.setting(key) else {
                continue;
            };
            let absolute = |value: &serde_json::Value| match value {
                serde_json::Value::String(text) if !text.trim().is_empty() => {
                    absolute_path(base, Path::new(text.trim()))
                        .display()
                        .to_string()
                        .into()
                }
                other => other.clone(),
            };
            match (setting.value, &*value) {
                (SettingValue::Path, _) => *value = absolute(value),
                (SettingValue::Paths, serde_json::Value::Array(items)) => {
                    *value = items.iter().map(absolute).collect::<Vec<_>>().into();
                }
                // Empty text is "not set", as in every form.
                (SettingValue::Text, serde_json::Value::String(text)) if text.trim().is_empty() => {
                    *value = serde_json::Value::Null;
                }
                _ => {}
            }
        }
        // The problem alone: each door says which connection it is about, if it must.
        let settings =
            ConnectionSettings::parse(connection, kind, &serde_json::Value::Object(given))
                .map_err(|error| EngineError::Config(error.problem))?;
        Ok(match settings {
            ConnectionSettings::Stripe(stripe) => ConnectionSettings::Stripe(StripeSettings {
                api_base: Some(stripe.api_base().trim().trim_end_matches('/').to_string()),
                ..stripe
            }),
            other => other,
        })
    }

    /// What a listing shows of a connection besides its name and kind: Stripe's API base, a
    /// warehouse's file or folders, its secret as `hint` says it (`from $WAREHOUSE_URL`), and
    /// the settings it sets.
    pub fn details(&self, secret_hint: &str) -> Vec<String> {
        let mut parts = Vec::new();
        let config = self.to_config();
        for setting in self.spec().settings {
            match (setting.value, config.get(setting.key)) {
                // The schema is said by `described`, with what it is for.
                (
                    SettingValue::Path | SettingValue::Text,
                    Some(serde_json::Value::String(text)),
                ) if setting.key != CHANGE_DETECTION_SCHEMA => {
                    parts.push(text.clone());
                }
                (SettingValue::Paths, Some(serde_json::Value::Array(items))) => parts.push(
                    items
                        .iter()
                        .filter_map(serde_json::Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                _ => {}
            }
        }
        if let Some(secret) = &self.spec().secret {
            parts.push(format!("{} {secret_hint}", secret.what));
        }
        if let Some(warehouse) = self.warehouse() {
            parts.extend(warehouse.described());
        }
        if let ConnectionSettings::Stripe(_) = self {
            // Every request names it; people comparing with Stripe's changelog look for it.
            parts.push(format!(
                "API version {}",
                ferry_destinations::stripe::STRIPE_VERSION
            ));
        }
        parts
    }

    /// The settings of a stored connection, every one checked; a bad one is an error naming
    /// the connection, the setting and the fix.
    pub fn of_record(connection: &ConnectionRecord) -> Result<ConnectionSettings, EngineError> {
        ConnectionSettings::parse(&connection.name, connection.kind, &connection.config)
            .map_err(SettingsError::stored)
    }

    /// The settings of a connection about to be saved.
    pub fn of_new(connection: &NewConnection) -> Result<ConnectionSettings, EngineError> {
        ConnectionSettings::parse(&connection.name, connection.kind, &connection.config).map_err(
            |error| {
                EngineError::Config(format!(
                    "connection '{}': {}",
                    error.connection, error.problem
                ))
            },
        )
    }

    /// The JSON the workspace stores: only the settings that are set.
    pub fn to_config(&self) -> serde_json::Value {
        let value = match self {
            ConnectionSettings::Stripe(settings) => serde_json::to_value(settings),
            ConnectionSettings::Duckdb(settings) => serde_json::to_value(settings),
            ConnectionSettings::Postgres(settings)
            | ConnectionSettings::Redshift(settings)
            | ConnectionSettings::Mysql(settings) => serde_json::to_value(settings),
            ConnectionSettings::Snowflake(settings) => serde_json::to_value(settings),
            ConnectionSettings::Bigquery(settings) => serde_json::to_value(settings),
            ConnectionSettings::Files(settings) => serde_json::to_value(settings),
            ConnectionSettings::Webhook(settings) => serde_json::to_value(settings),
            ConnectionSettings::Slack(settings) => serde_json::to_value(settings),
            ConnectionSettings::Email(settings) => serde_json::to_value(settings),
            ConnectionSettings::DbtCloud(settings) => serde_json::to_value(settings),
            ConnectionSettings::Trigger(settings) => serde_json::to_value(settings),
        };
        value.expect("settings serialize to JSON")
    }

    /// The settings that differ between two connections' settings, by their stored names, in
    /// the registry's order (a setting of one kind only differs when the other kind is set).
    pub fn changed_settings(&self, other: &ConnectionSettings) -> Vec<&'static str> {
        let (mine, theirs) = (self.to_config(), other.to_config());
        let mut changed: Vec<&'static str> = Vec::new();
        for key in REGISTRY
            .iter()
            .flat_map(|spec| spec.settings.iter().map(|setting| setting.key))
        {
            if !changed.contains(&key) && mine.get(key) != theirs.get(key) {
                changed.push(key);
            }
        }
        changed
    }

    /// The settings that are set, by their stored names, with their values in the order the
    /// registry lists them: what `ferry export` writes.
    pub fn set_values(&self) -> Vec<(&'static str, serde_json::Value)> {
        let config = self.to_config();
        self.spec()
            .settings
            .iter()
            .filter_map(|setting| {
                config
                    .get(setting.key)
                    .map(|value| (setting.key, value.clone()))
            })
            .collect()
    }

    pub fn kind(&self) -> ConnectionKind {
        match self {
            ConnectionSettings::Stripe(_) => ConnectionKind::Stripe,
            ConnectionSettings::Duckdb(_) => ConnectionKind::Duckdb,
            ConnectionSettings::Postgres(_) => ConnectionKind::Postgres,
            ConnectionSettings::Redshift(_) => ConnectionKind::Redshift,
            ConnectionSettings::Mysql(_) => ConnectionKind::Mysql,
            ConnectionSettings::Snowflake(_) => ConnectionKind::Snowflake,
            ConnectionSettings::Bigquery(_) => ConnectionKind::Bigquery,
            ConnectionSettings::Files(_) => ConnectionKind::Files,
            ConnectionSettings::Webhook(_) => ConnectionKind::Webhook,
            ConnectionSettings::Slack(_) => ConnectionKind::Slack,
            ConnectionSettings::Email(_) => ConnectionKind::Email,
            ConnectionSettings::DbtCloud(_) => ConnectionKind::DbtCloud,
            ConnectionSettings::Trigger(_) => ConnectionKind::Trigger,
        }
    }

    /// What a trigger starts; `None` for the other kinds.
    pub fn trigger_target(&self) -> Option<Result<TriggerTarget, String>> {
        match self {
            ConnectionSettings::DbtCloud(settings) => Some(crate::trigger_kinds::target_of(
                &settings.sync,
                &settings.sequence,
            )),
            ConnectionSettings::Trigger(settings) => Some(crate::trigger_kinds::target_of(
                &settings.sync,
                &settings.sequence,
            )),
            _ => None,
        }
    }

    pub fn spec(&self) -> &'static KindSpec {
        kind_spec(self.kind())
    }

    /// The settings every warehouse has; `None` for Stripe and the alert channels.
    pub fn warehouse(&self) -> Option<&WarehouseSettings> {
        match self {
            ConnectionSettings::Stripe(_)
            | ConnectionSettings::Webhook(_)
            | ConnectionSettings::Slack(_)
            | ConnectionSettings::Email(_)
            | ConnectionSettings::DbtCloud(_)
            | ConnectionSettings::Trigger(_) => None,
            ConnectionSettings::Duckdb(settings) => Some(&settings.warehouse),
            ConnectionSettings::Postgres(settings)
            | ConnectionSettings::Redshift(settings)
            | ConnectionSettings::Mysql(settings) => Some(settings),
            ConnectionSettings::Snowflake(settings) => Some(&settings.timeouts),
            ConnectionSettings::Bigquery(settings) => Some(&settings.timeouts),
            ConnectionSettings::Files(settings) => Some(&settings.timeouts),
        }
    }

    /// The source a warehouse connection reads, its secret resolved (`None`: not given yet,
    /// tested as empty). Stripe is not a source.
    pub fn source(
        &self,
        store: &StateStore,
        connection: &str,
        secret: Option<Secret>,
    ) -> Result<SourceConfig, EngineError> {
        match self {
            ConnectionSettings::Duckdb(settings) => duckdb_source(store, &settings.path),
            ConnectionSettings::Postgres(_) => Ok(SourceConfig::Postgres {
                url: secret.unwrap_or_else(|| Secret::new("")),
            }),
            ConnectionSettings::Redshift(_) => Ok(SourceConfig::Redshift {
                url: secret.unwrap_or_else(|| Secret::new("")),
            }),
            ConnectionSettings::Mysql(_) => Ok(SourceConfig::Mysql {
                url: secret.unwrap_or_else(|| Secret::new("")),
            }),
            ConnectionSettings::Snowflake(settings) => Ok(SourceConfig::Snowflake(
                settings.source(secret.unwrap_or_else(|| Secret::new("")))?,
            )),
            ConnectionSettings::Bigquery(settings) => {
                Ok(SourceConfig::BigQuery(settings.source(secret)))
            }
            ConnectionSettings::Files(settings) => files_source(store, &settings.folders),
            ConnectionSettings::Stripe(_)
            | ConnectionSettings::Webhook(_)
            | ConnectionSettings::Slack(_)
            | ConnectionSettings::Email(_)
            | ConnectionSettings::DbtCloud(_)
            | ConnectionSettings::Trigger(_) => Err(EngineError::WrongConnectionKind {
                name: connection.to_string(),
                actual: self.kind().to_string(),
                expected: "a warehouse (a source connection)",
            }),
        }
    }

    /// What is checked before a connection is saved, even untested: a Stripe API base that
    /// may receive the key, a DuckDB file that is not ferry's own workspace.
    pub fn check_before_saving(&self, store: &StateStore) -> Result<(), EngineError> {
        match self {
            ConnectionSettings::Stripe(stripe) => {
                stripe.checked_api_base().map_err(EngineError::Config)?;
            }
            ConnectionSettings::Duckdb(duckdb) => {
                duckdb_source(store, &duckdb.path)?;
            }
            ConnectionSettings::Files(files) => {
                files_source(store, &files.folders)?;
            }
            ConnectionSettings::DbtCloud(_) | ConnectionSettings::Trigger(_) => {
                // The sync or sequence it names may be declared after it (`ferry.yaml` applies
                // connections first); it is looked up when a request arrives.
                if let Some(Err(problem)) = self.trigger_target() {
                    return Err(EngineError::Config(problem));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The connection test: Stripe reads `/v1/balance` with the key, a warehouse runs
    /// `SELECT 1`, a webhook receives a signed `ping`, Slack a message saying it is connected,
    /// and an SMTP server is signed in to without a message sent.
    pub async fn test(
        &self,
        store: &StateStore,
        connection: &str,
        secret: Option<Secret>,
    ) -> Result<(), EngineError> {
        match self {
            ConnectionSettings::Stripe(settings) => {
                let key = secret.ok_or_else(|| {
                    EngineError::Config("a Stripe connection needs an API key".to_string())
                })?;
                let mut stripe = StripeConfig::new(key);
                stripe.api_base = settings.checked_api_base().map_err(EngineError::Config)?;
                stripe
                    .test_connection()
                    .await
                    .map_err(|e| EngineError::ConnectionTest(e.to_string()))
            }
            ConnectionSettings::Webhook(_)
            | ConnectionSettings::Slack(_)
            | ConnectionSettings::Email(_) => {
                crate::alerts::test_channel(self, connection, secret).await
            }
            // Nothing to reach: a trigger is reached. Its secret must be readable.
            ConnectionSettings::DbtCloud(_) | ConnectionSettings::Trigger(_) => match secret {
                Some(secret) if !secret.expose().is_empty() => Ok(()),
                _ => Err(EngineError::Config(format!(
                    "trigger '{connection}' needs a signing secret to check requests with"
                ))),
            },
            _ => {
                let source = self.source(store, connection, secret)?;
                ferry_source::test_connection(&source)
                    .await
                    .map_err(|e| EngineError::ConnectionTest(e.to_string()))
            }
        }
    }
}

impl StripeSettings {
    /// The API base, Stripe's own when not set.
    pub fn api_base(&self) -> &str {
        self.api_base.as_deref().unwrap_or(STRIPE_API_BASE)
    }

    /// The API base, checked before any key is sent to it.
    pub fn checked_api_base(&self) -> Result<String, String> {
        ferry_destinations::stripe::config::validate_api_base(self.api_base())
    }
}

impl WarehouseSettings {
    /// How long a query may run under `setting`: the connection's, or the default (5 minutes,
    /// 30 seconds). Zero means no limit.
    pub fn timeout(&self, setting: TimeoutSetting) -> std::time::Duration {
        let seconds = match setting {
            TimeoutSetting::Statement => self.statement_timeout_seconds,
            TimeoutSetting::Preview => self.preview_timeout_seconds,
        };
        match (seconds, setting) {
            (Some(seconds), _) => std::time::Duration::from_secs(u64::from(seconds)),
            (None, TimeoutSetting::Statement) => ferry_source::DEFAULT_STATEMENT_TIMEOUT,
            (None, TimeoutSetting::Preview) => ferry_source::PREVIEW_STATEMENT_TIMEOUT,
        }
    }

    /// The settings it sets, in words for listings (`statement timeout 60s`, `preview timeout
    /// none`, `change detection in schema ferry`); nothing for those left to their defaults.
    pub fn described(&self) -> Vec<String> {
        let mut parts = Vec::new();
        for (seconds, label) in [
            (self.statement_timeout_seconds, "statement timeout"),
            (self.preview_timeout_seconds, "preview timeout"),
        ] {
            match seconds {
                Some(0) => parts.push(format!("{label} none")),
                Some(seconds) => parts.push(format!("{label} {seconds}s")),
                None => {}
            }
        }
        if let Some(schema) = &self.change_detection_schema {
            parts.push(format!("change detection in schema {schema}"));
        }
        parts
    }
}

/// What a valid timeout setting is, in the words of every door's error.
pub fn timeout_problem(setting: TimeoutSetting) -> String {
    format!(
        "{} must be a whole number of seconds between 0 (no limit) and {MAX_TIMEOUT_SECONDS}",
        setting.key()
    )
}

/// A timeout setting's value as given in JSON or YAML, checked.
pub fn timeout_seconds(setting: TimeoutSetting, value: &serde_json::Value) -> Result<u32, String> {
    value
        .as_u64()
        .filter(|seconds| *seconds <= u64::from(MAX_TIMEOUT_SECONDS))
        .map(|seconds| seconds as u32)
        .ok_or_else(|| timeout_problem(setting))
}

/// A change detection schema as given in JSON or YAML, checked: a plain SQL name that every
/// warehouse accepts quoted or not; empty or null is "not set".
pub fn schema_setting(value: &serde_json::Value) -> Result<Option<String>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) => schema_text(text),
        other => Err(format!(
            "{CHANGE_DETECTION_SCHEMA}: {other} is not a schema name; give a name such as `ferry`"
        )),
    }
}

/// A change detection schema as typed (empty: not set), checked.
pub fn schema_text(text: &str) -> Result<Option<String>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    ferry_source::warehouse_diff::check_schema_name(text)
        .map(|()| Some(text.to_string()))
        .map_err(|problem| format!("{CHANGE_DETECTION_SCHEMA}: {problem}"))
}

// ----- a stored connection, for what uses it -----

/// A stored connection's secret, resolved; `None` for a kind without one. A kind with a secret
/// whose connection has none is an error saying how to give it.
pub fn saved_secret(
    store: &StateStore,
    connection: &ConnectionRecord,
) -> Result<Option<Secret>, EngineError> {
    let spec = kind_spec(connection.kind);
    match (&spec.secret, &connection.secret) {
        (None, _) => Ok(None),
        (Some(_), Some(secret)) => Ok(Some(store.resolve_secret(secret)?)),
        (Some(secret), None) if secret.optional => Ok(None),
        (Some(secret), None) => Err(EngineError::Config(format!(
            "{} connection '{}' has no {}; reconnect it with {}",
            spec.label, connection.name, secret.what, secret.flag
        ))),
    }
}

pub fn stripe_config(
    store: &StateStore,
    connection: &ConnectionRecord,
) -> Result<StripeConfig, EngineError> {
    expect_kind(connection, ConnectionKind::Stripe, "a Stripe destination")?;
    let ConnectionSettings::Stripe(settings) = ConnectionSettings::of_record(connection)? else {
        unreachable!("the kind was checked above")
    };
    let secret = saved_secret(store, connection)?.expect("a Stripe connection has a secret");
    let mut config = StripeConfig::new(secret);
    // Checked again here: a workspace saved by an older ferry may hold an unsafe one.
    config.api_base = settings.checked_api_base().map_err(|problem| {
        EngineError::Config(format!(
            "Stripe connection '{}': {problem}; reconnect it with a valid --api-base",
            connection.name
        ))
    })?;
    config.max_requests_per_second = settings.max_rps;
    config.max_requests_per_second_per_endpoint = settings.max_rps_per_endpoint;
    Ok(config)
}

pub fn source_config(
    store: &StateStore,
    connection: &ConnectionRecord,
) -> Result<SourceConfig, EngineError> {
    if !kind_spec(connection.kind).is_source {
        return Err(EngineError::WrongConnectionKind {
            name: connection.name.clone(),
            actual: connection.kind.as_str().to_string(),
            expected: "a warehouse (a source connection)",
        });
    }
    let settings = ConnectionSettings::of_record(connection)?;
    let secret = saved_secret(store, connection)?;
    settings.source(store, &connection.name, secret)
}

/// How a warehouse connection's queries run: with its `statement_timeout_seconds` (runs, sync
/// previews, finding a model's columns) or its `preview_timeout_seconds` (model previews), or
/// their defaults (5 minutes, 30 seconds) when the connection does not set them.
///
/// Only the timeout asked for is read here, so that a bad preview timeout (a workspace edited
/// by hand) does not stop runs; every other use reads all the settings.
pub fn query_options(
    connection: &ConnectionRecord,
    setting: TimeoutSetting,
) -> Result<QueryOptions, EngineError> {
    let timeouts = StoredTimeouts::deserialize(&connection.config).unwrap_or_default();
    let value = match setting {
        TimeoutSetting::Statement => timeouts.statement_timeout_seconds,
        TimeoutSetting::Preview => timeouts.preview_timeout_seconds,
    };
    let seconds = match value {
        None | Some(serde_json::Value::Null) => None,
        // Checked again here: saving checks it, but a workspace may have been edited by hand.
        Some(value) => Some(timeout_seconds(setting, &value).map_err(|problem| {
            SettingsError {
                connection: connection.name.clone(),
                kind: connection.kind,
                field: Some(setting.key().to_string()),
                problem,
            }
            .stored()
        })?),
    };
    let warehouse = WarehouseSettings {
        statement_timeout_seconds: seconds.filter(|_| setting == TimeoutSetting::Statement),
        preview_timeout_seconds: seconds.filter(|_| setting == TimeoutSetting::Preview),
        change_detection_schema: None,
    };
    Ok(QueryOptions {
        statement_timeout: warehouse.timeout(setting),
        timeout_setting: setting,
        ..QueryOptions::default()
    })
}

/// The two timeouts of a stored warehouse connection, each read alone (see [`query_options`]).
#[derive(Deserialize, Default)]
struct StoredTimeouts {
    #[serde(default)]
    statement_timeout_seconds: Option<serde_json::Value>,
    #[serde(default)]
    preview_timeout_seconds: Option<serde_json::Value>,
}

/// The connection's `change_detection_schema`: where, in the warehouse, ferry keeps what change
/// detection needs; `None` when ferry only reads (the default).
pub fn change_detection_schema(
    connection: &ConnectionRecord,
) -> Result<Option<String>, EngineError> {
    Ok(ConnectionSettings::of_record(connection)?
        .warehouse()
        .and_then(|warehouse| warehouse.change_detection_schema.clone()))
}

/// A DuckDB warehouse at `path`, refused when the path is ferry's own workspace (its database,
/// key or lock files, through any link): DuckDB opening and closing the workspace database in
/// this process would drop SQLite's locks on it and let another ferry process corrupt it.
pub fn duckdb_source(store: &StateStore, path: &Path) -> Result<SourceConfig, EngineError> {
    if store.is_inside_workspace(path) {
        return Err(EngineError::Config(format!(
            "{} is inside ferry's workspace ({}); a DuckDB connection must point at your \
             warehouse's database file, never at ferry's own files",
            path.display(),
            store.workspace_dir().display()
        )));
    }
    Ok(SourceConfig::DuckDb {
        path: path.to_path_buf(),
    })
}

/// Files in `folders`, refused when one of them is ferry's workspace, lies inside it or holds
/// it (through any link): a model could otherwise open the workspace's database, and DuckDB
/// opening and closing it in this process would drop SQLite's locks on it.
pub fn files_source(store: &StateStore, folders: &[PathBuf]) -> Result<SourceConfig, EngineError> {
    let workspace = store.workspace_dir();
    let workspace_resolved =
        std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    for folder in folders {
        let resolved = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.clone());
        if store.is_inside_workspace(folder)
            || store.is_inside_workspace(&resolved)
            || workspace_resolved.starts_with(&resolved)
        {
            return Err(EngineError::Config(format!(
                "{} holds or is inside ferry's workspace ({}); a files connection must name \
                 folders of your data files, never ferry's own",
                folder.display(),
                workspace.display()
            )));
        }
    }
    Ok(SourceConfig::Files {
        folders: folders.to_vec(),
    })
}

impl SnowflakeSettings {
    /// The source, with the stored credential read as the authentication says, and an
    /// encrypted key's passphrase read from its variable.
    fn source(&self, credential: Secret) -> Result<ferry_source::SnowflakeConfig, EngineError> {
        use ferry_source::SnowflakeCredential;
        let credential = match self
            .authentication
            .unwrap_or(SnowflakeAuthentication::KeyPair)
        {
            SnowflakeAuthentication::KeyPair => {
                let passphrase = match &self.private_key_passphrase_env {
                    None => None,
                    Some(variable) => Some(Secret::new(std::env::var(variable).map_err(|_| {
                        EngineError::Config(format!(
                            "environment variable {variable} (the private key's \
                                 passphrase, from private_key_passphrase_env) is not set; \
                                 export it in the environment of ferry"
                        ))
                    })?)),
                };
                SnowflakeCredential::KeyPair {
                    private_key_pem: credential,
                    passphrase,
                }
            }
            SnowflakeAuthentication::Oauth => SnowflakeCredential::OAuthToken(credential),
            SnowflakeAuthentication::ProgrammaticAccessToken => {
                SnowflakeCredential::ProgrammaticAccessToken(credential)
            }
        };
        Ok(ferry_source::SnowflakeConfig {
            account: self.account.clone(),
            user: self.user.clone(),
            warehouse: self.compute_warehouse.clone(),
            database: self.database.clone(),
            schema: self.schema.clone(),
            role: self.role.clone(),
            credential,
            base_url: self.base_url.clone(),
        })
    }
}

impl BigquerySettings {
    /// The source: as the service account whose key is the secret, or with application
    /// default credentials without one.
    fn source(&self, key: Option<Secret>) -> ferry_source::BigQueryConfig {
        ferry_source::BigQueryConfig {
            project_id: self.project_id.clone(),
            location: self.location.clone().unwrap_or_default(),
            default_dataset: self.default_dataset.clone(),
            maximum_bytes_billed: self.maximum_bytes_billed,
            credential: match key {
                Some(key) => ferry_source::BigQueryCredential::ServiceAccountKey(key),
                None => ferry_source::BigQueryCredential::ApplicationDefault,
            },
            api_base: self
                .api_base
                .clone()
                .unwrap_or_else(|| ferry_source::BIGQUERY_API_BASE.to_string()),
            token_endpoint: None,
        }
    }
}

// ----- private helpers -----// ----- private helpers -----

/// Settings from JSON; on failure, the field at fault (when serde knows it) and the problem.
fn typed<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize(config).map_err(|error| {
        let path = error.path().to_string();
        let field = (!path.is_empty() && path != "." && path != "?").then_some(path);
        (field, error.into_inner().to_string())
    })
}

fn statement_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    timeout_field(d, TimeoutSetting::Statement)
}

fn preview_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    timeout_field(d, TimeoutSetting::Preview)
}

fn timeout_field<'de, D: Deserializer<'de>>(
    d: D,
    setting: TimeoutSetting,
) -> Result<Option<u32>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    if value.is_null() {
        return Ok(None);
    }
    timeout_seconds(setting, &value)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn schema_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    schema_setting(&value).map_err(serde::de::Error::custom)
}

fn expect_kind(
    connection: &ConnectionRecord,
    kind: ConnectionKind,
    expected: &'static str,
) -> Result<(), EngineError> {
    if connection.kind == kind {
        Ok(())
    } else {
        Err(EngineError::WrongConnectionKind {
            name: connection.name.clone(),
            actual: connection.kind.as_str().to_string(),
            expected,
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::declare::{self, WarehouseSettings};
    use ferry_state::SecretInput;
    use std::time::Duration;

    fn record(connection: ferry_state::NewConnection) -> ConnectionRecord {
        ConnectionRecord {
            name: connection.name,
            kind: connection.kind,
            config: connection.config,
            secret: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn timeout(connection: &ConnectionRecord, setting: TimeoutSetting) -> Duration {
        let options = query_options(connection, setting).expect("valid settings");
        assert_eq!(options.timeout_setting, setting);
        options.statement_timeout
    }

    #[test]
    fn warehouse_timeouts_are_stored_only_when_given_and_read_back_with_defaults() {
        let plain = declare::duckdb_connection(
            "w",
            Path::new("/data/w.duckdb"),
            &WarehouseSettings::default(),
        );
        assert_eq!(
            plain.config,
            serde_json::json!({"path": "/data/w.duckdb"}),
            "nothing stored for the defaults"
        );
        let plain = record(plain);
        assert_eq!(
            timeout(&plain, TimeoutSetting::Statement),
            Duration::from_secs(300)
        );
        assert_eq!(
            timeout(&plain, TimeoutSetting::Preview),
            Duration::from_secs(30)
        );

        let set = record(declare::postgres_connection(
            "pg",
            SecretInput::EnvVar("WAREHOUSE_URL".into()),
            &WarehouseSettings {
                statement_timeout_seconds: Some(0),
                preview_timeout_seconds: Some(86_400),
                change_detection_schema: Some("ferry".into()),
            },
        ));
        assert_eq!(
            set.config,
            serde_json::json!({"statement_timeout_seconds": 0, "preview_timeout_seconds": 86400,
                "change_detection_schema": "ferry"})
        );
        assert_eq!(timeout(&set, TimeoutSetting::Statement), Duration::ZERO);
        assert_eq!(
            timeout(&set, TimeoutSetting::Preview),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn a_bad_stored_timeout_is_refused_naming_the_setting() {
        let mut connection = record(declare::duckdb_connection(
            "w",
            Path::new("/data/w.duckdb"),
            &WarehouseSettings::default(),
        ));
        connection.config["preview_timeout_seconds"] = serde_json::json!(-1);
        let error = query_options(&connection, TimeoutSetting::Preview)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "connection 'w': preview_timeout_seconds must be a whole number of seconds between \
             0 (no limit) and 86400; reconnect it with a valid --preview-timeout"
        );
        // The other setting is unaffected.
        assert_eq!(
            timeout(&connection, TimeoutSetting::Statement),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn timeouts_are_whole_seconds_from_zero_to_a_day() {
        use serde_json::json;
        let setting = TimeoutSetting::Statement;
        for good in [json!(0), json!(1), json!(86_400)] {
            assert!(declare::timeout_seconds(setting, &good).is_ok(), "{good}");
        }
        for bad in [
            json!(-1),
            json!(86_401),
            json!(1.5),
            json!("30"),
            json!(true),
        ] {
            assert_eq!(
                declare::timeout_seconds(setting, &bad)
                    .unwrap_err()
                    .to_string(),
                "statement_timeout_seconds must be a whole number of seconds between 0 (no \
                 limit) and 86400",
                "{bad}"
            );
        }
        assert_eq!(declare::parse_timeout_seconds(setting, " ").unwrap(), None);
        assert_eq!(
            declare::parse_timeout_seconds(setting, " 60 ").unwrap(),
            Some(60)
        );
        for bad in ["-1", "86401", "1.5", "1m", "99999999999"] {
            assert!(
                declare::parse_timeout_seconds(setting, bad).is_err(),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod registry_tests {
    use super::*;
    use serde_json::json;

    /// The stored settings as `ferry_engine` reads them: typed, or the error a user sees.
    fn check(
        kind: ConnectionKind,
        stored: serde_json::Value,
    ) -> Result<ConnectionSettings, String> {
        ConnectionSettings::parse("w", kind, &stored).map_err(|error| error.stored().to_string())
    }

    fn full(kind: ConnectionKind) -> ConnectionSettings {
        let warehouse = WarehouseSettings {
            statement_timeout_seconds: Some(600),
            preview_timeout_seconds: Some(0),
            change_detection_schema: Some("ferry".to_string()),
        };
        match kind {
            ConnectionKind::Stripe => ConnectionSettings::Stripe(StripeSettings {
                api_base: Some("http://127.0.0.1:12111".to_string()),
                max_rps: Some(25),
                max_rps_per_endpoint: Some(10),
            }),
            ConnectionKind::Duckdb => ConnectionSettings::Duckdb(DuckdbSettings {
                path: PathBuf::from("/data/w.duckdb"),
                warehouse,
            }),
            ConnectionKind::Postgres => ConnectionSettings::Postgres(warehouse),
            ConnectionKind::Redshift => ConnectionSettings::Redshift(WarehouseSettings {
                change_detection_schema: None,
                ..warehouse
            }),
            ConnectionKind::Mysql => ConnectionSettings::Mysql(warehouse),
            ConnectionKind::Snowflake => ConnectionSettings::Snowflake(SnowflakeSettings {
                account: "myorg-myaccount".to_string(),
                user: "FERRY".to_string(),
                compute_warehouse: "SYNC_WH".to_string(),
                database: Some("ANALYTICS".to_string()),
                schema: Some("PUBLIC".to_string()),
                role: Some("FERRY_READER".to_string()),
                authentication: Some(SnowflakeAuthentication::ProgrammaticAccessToken),
                private_key_passphrase_env: Some("PASSPHRASE".to_string()),
                base_url: Some("http://127.0.0.1:9".to_string()),
                timeouts: warehouse,
            }),
            ConnectionKind::Bigquery => ConnectionSettings::Bigquery(BigquerySettings {
                project_id: "my-project".to_string(),
                location: Some("EU".to_string()),
                default_dataset: Some("analytics".to_string()),
                maximum_bytes_billed: Some(10_000_000_000),
                api_base: Some("http://127.0.0.1:9".to_string()),
                timeouts: warehouse,
            }),
            ConnectionKind::Files => ConnectionSettings::Files(FilesSettings {
                folders: vec![PathBuf::from("/data/a"), PathBuf::from("/data/b")],
                timeouts: WarehouseSettings {
                    change_detection_schema: None,
                    ..warehouse
                },
            }),
            ConnectionKind::Webhook => ConnectionSettings::Webhook(WebhookSettings {
                url: "https://hooks.example.com/ferry".to_string(),
                events: Some("sync.failed, sync.alert.raised".to_string()),
            }),
            ConnectionKind::Slack => ConnectionSettings::Slack(SlackSettings {}),
            // Every setting set, as the test wants (a real trigger names one of the two).
            ConnectionKind::DbtCloud => ConnectionSettings::DbtCloud(DbtCloudSettings {
                sync: Some("customers".to_string()),
                sequence: Some("catalogue".to_string()),
                job_id: Some("123456".to_string()),
            }),
            ConnectionKind::Trigger => ConnectionSettings::Trigger(SignedTriggerSettings {
                sync: Some("customers".to_string()),
                sequence: Some("catalogue".to_string()),
            }),
            ConnectionKind::Email => ConnectionSettings::Email(EmailChannelSettings {
                host: "smtp.example.com".to_string(),
                port: Some(587),
                security: Some("starttls".to_string()),
                username: Some("alerts@example.com".to_string()),
                from: "ferry <ferry@example.com>".to_string(),
                to: "data@example.com, oncall@example.com".to_string(),
                ca_file: Some(PathBuf::from("/etc/ssl/ca.pem")),
            }),
        }
    }

    #[test]
    fn every_kind_reads_the_json_workspaces_store_today_and_writes_it_back_unchanged() {
        let stored = [
            (
                ConnectionKind::Stripe,
                json!({"api_base": "https://api.stripe.com"}),
            ),
            (
                ConnectionKind::Stripe,
                json!({"api_base": "http://127.0.0.1:12111", "max_rps": 25, "max_rps_per_endpoint": 10}),
            ),
            (ConnectionKind::Stripe, json!({"max_rps": 0})),
            (ConnectionKind::Duckdb, json!({"path": "/data/w.duckdb"})),
            (
                ConnectionKind::Duckdb,
                json!({"path": "/data/w.duckdb", "statement_timeout_seconds": 600,
                    "preview_timeout_seconds": 0, "change_detection_schema": "ferry"}),
            ),
            (ConnectionKind::Postgres, json!({})),
            (
                ConnectionKind::Postgres,
                json!({"statement_timeout_seconds": 0, "preview_timeout_seconds": 86400,
                    "change_detection_schema": "ferry_cd"}),
            ),
        ];
        for (kind, json) in stored {
            let settings = check(kind, json.clone()).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(settings.kind(), kind);
            assert_eq!(settings.to_config(), json, "{kind}");
            assert_eq!(
                serde_json::to_string(&settings.to_config()).unwrap(),
                serde_json::to_string(&json).unwrap(),
                "same keys in the same order"
            );
        }
        assert_eq!(
            check(ConnectionKind::Stripe, json!({})).unwrap(),
            ConnectionSettings::Stripe(StripeSettings::default())
        );
        let ConnectionSettings::Stripe(stripe) = check(ConnectionKind::Stripe, json!({})).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(
            stripe.api_base(),
            STRIPE_API_BASE,
            "Stripe's own API by default"
        );
    }

    #[test]
    fn a_null_setting_is_not_set() {
        assert_eq!(
            check(
                ConnectionKind::Postgres,
                json!({"statement_timeout_seconds": null, "change_detection_schema": null})
            )
            .unwrap(),
            ConnectionSettings::Postgres(WarehouseSettings::default())
        );
    }

    #[test]
    fn a_bad_setting_names_the_connection_the_field_and_the_fix() {
        let cases = [
            (
                ConnectionKind::Duckdb,
                json!({"path": "/w.duckdb", "threads": 4}),
                "connection 'w': `threads` is not a setting of a duckdb connection, which takes \
                 `path`, `statement_timeout_seconds`, `preview_timeout_seconds`, \
                 `change_detection_schema`; connect it again with `ferry connect duckdb w …` to \
                 replace its settings",
            ),
            (
                ConnectionKind::Postgres,
                json!({"path": "/w.duckdb"}),
                "connection 'w': `path` is not a setting of a postgres connection, which takes \
                 `statement_timeout_seconds`, `preview_timeout_seconds`, \
                 `change_detection_schema`; connect it again with `ferry connect postgres w …` \
                 to replace its settings",
            ),
            (
                ConnectionKind::Stripe,
                json!({"api_base": "https://api.stripe.com", "max_rps": "25"}),
                "connection 'w': max_rps: invalid type: string \"25\", expected u32; reconnect \
                 it with a valid --max-rps",
            ),
            (
                ConnectionKind::Stripe,
                json!({"max_rps_per_endpoint": -1}),
                "connection 'w': max_rps_per_endpoint: invalid value: integer `-1`, expected \
                 u32; reconnect it with a valid --max-rps-per-endpoint",
            ),
            (
                ConnectionKind::Stripe,
                json!({"api_base": 7}),
                "connection 'w': api_base: invalid type: integer `7`, expected a string; \
                 reconnect it with a valid --api-base",
            ),
            (
                ConnectionKind::Duckdb,
                json!({}),
                "connection 'w': `path` (DuckDB file) is required; reconnect it with a valid \
                 --path",
            ),
            (
                ConnectionKind::Duckdb,
                json!({"path": 3}),
                "connection 'w': path: invalid type: integer `3`, expected path string; \
                 reconnect it with a valid --path",
            ),
            (
                ConnectionKind::Duckdb,
                json!({"path": "/w.duckdb", "statement_timeout_seconds": "30"}),
                "connection 'w': statement_timeout_seconds must be a whole number of seconds \
                 between 0 (no limit) and 86400; reconnect it with a valid --statement-timeout",
            ),
            (
                ConnectionKind::Postgres,
                json!({"preview_timeout_seconds": 86401}),
                "connection 'w': preview_timeout_seconds must be a whole number of seconds \
                 between 0 (no limit) and 86400; reconnect it with a valid --preview-timeout",
            ),
            (
                ConnectionKind::Postgres,
                json!({"change_detection_schema": "Bad-Name"}),
                "connection 'w': change_detection_schema: `Bad-Name` is not a schema name ferry \
                 accepts: use lower-case letters, digits and `_` (at most 63 characters, not \
                 starting with a digit), for example `ferry`; reconnect it with a valid \
                 --change-detection-schema",
            ),
            (
                ConnectionKind::Postgres,
                json!({"change_detection_schema": 5}),
                "connection 'w': change_detection_schema: 5 is not a schema name; give a name \
                 such as `ferry`; reconnect it with a valid --change-detection-schema",
            ),
            (
                ConnectionKind::Stripe,
                json!("https://api.stripe.com"),
                "connection 'w': its settings must be a JSON object, not \
                 \"https://api.stripe.com\"; connect it again with `ferry connect stripe w …` to \
                 replace its settings",
            ),
        ];
        for (kind, stored, expected) in cases {
            assert_eq!(
                check(kind, stored.clone()).unwrap_err(),
                expected,
                "{stored}"
            );
        }
    }

    #[test]
    fn the_registry_lists_each_kinds_settings_as_its_struct_stores_them() {
        for kind in ConnectionKind::ALL {
            let spec = kind_spec(kind);
            assert_eq!(spec.kind, kind);
            assert_eq!(spec.is_source, kind.is_source(), "{kind}");
            let stored: Vec<String> = full(kind)
                .to_config()
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let listed: Vec<&str> = spec.settings.iter().map(|s| s.key).collect();
            assert_eq!(stored, listed, "{kind}");
            assert_eq!(
                full(kind).set_values().len(),
                listed.len(),
                "every setting is exported"
            );
        }
        assert_eq!(REGISTRY.len(), ConnectionKind::ALL.len());
    }

    #[test]
    fn changed_settings_are_named_in_the_registrys_order() {
        let duckdb = full(ConnectionKind::Duckdb);
        let mut other = duckdb.clone();
        if let ConnectionSettings::Duckdb(settings) = &mut other {
            settings.warehouse.preview_timeout_seconds = None;
            settings.warehouse.change_detection_schema = Some("ferry_cd".to_string());
        }
        assert_eq!(
            duckdb.changed_settings(&other),
            ["preview_timeout_seconds", "change_detection_schema"]
        );
        assert!(duckdb.changed_settings(&duckdb).is_empty());
        assert_eq!(
            full(ConnectionKind::Postgres).changed_settings(&duckdb),
            ["path"]
        );
    }
}
