//! The registry entries of triggers: connections that start ferry's work from outside rather
//! than hold records or hear of runs. A dbt Cloud job's webhook, and a request signed by an
//! orchestrator (Airflow, Dagster, a script), each start one sync or one sequence when they
//! arrive at `ferry serve`'s `/hooks/NAME`. Their settings and signing secrets are declared here
//! the way `channel_kinds.rs` declares the alert channels', so every door (`ferry connect`, the
//! API, the UI, `ferry.yaml`) takes them with no code of its own; the server checks the
//! signatures (`server/src/hooks.rs`).

use crate::connections::{KindSpec, SecretSpec, SettingSpec, SettingValue};
use ferry_state::ConnectionKind;
use serde::{Deserialize, Deserializer, Serialize};

const SYNC: SettingSpec = SettingSpec {
    key: "sync",
    flag: "--sync",
    value: SettingValue::Text,
    required: false,
    label: "Sync to run",
    help: "The sync a trigger runs (give this or a sequence)",
    placeholder: "customers",
};

const SEQUENCE: SettingSpec = SettingSpec {
    key: "sequence",
    flag: "--sequence",
    value: SettingValue::Text,
    required: false,
    label: "Sequence to run",
    help: "The sequence a trigger runs, its syncs one after another (give this or a sync)",
    placeholder: "catalogue",
};

pub const DBT_CLOUD: KindSpec = KindSpec {
    kind: ConnectionKind::DbtCloud,
    label: "dbt Cloud job",
    help: "Run a sync or a sequence when a dbt Cloud job run succeeds: in dbt Cloud, create a \
           webhook for `job.run.completed` whose endpoint is ferry's /hooks/NAME",
    is_source: false,
    secret: Some(SecretSpec {
        what: "webhook secret",
        value_field: "signing_secret",
        env_field: "signing_secret_env",
        example_env: "DBT_CLOUD_WEBHOOK_SECRET",
        flag: "--signing-secret-env",
        label: "Webhook secret",
        help: "The secret dbt Cloud shows once the webhook is created; dbt Cloud signs each \
               event with it (hex HMAC-SHA256 of the body, in the Authorization header). Given \
               as a value it is stored encrypted; prefer an environment variable",
        placeholder: "the secret dbt Cloud showed",
        optional: false,
    }),
    settings: &[
        SYNC,
        SEQUENCE,
        SettingSpec {
            key: "job_id",
            flag: "--job-id",
            value: SettingValue::Text,
            required: false,
            label: "dbt Cloud job id",
            help: "Only a run of this job starts it (the number in the job's URL); empty: a \
                   run of any job whose webhook points here",
            placeholder: "123456",
        },
    ],
};

pub const SIGNED_TRIGGER: KindSpec = KindSpec {
    kind: ConnectionKind::Trigger,
    label: "Signed trigger (Airflow, Dagster, scripts)",
    help: "Run a sync or a sequence when a request signed with the trigger's secret arrives at \
           ferry's /hooks/NAME: `Ferry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \
           \"<t>.<body>\">`, the scheme of ferry's own webhooks, refused after 5 minutes",
    is_source: false,
    secret: Some(SecretSpec {
        what: "signing secret",
        value_field: "signing_secret",
        env_field: "signing_secret_env",
        example_env: "FERRY_TRIGGER_SECRET",
        flag: "--signing-secret-env",
        label: "Signing secret",
        help: "The key the orchestrator signs each request with. Given as a value it is stored \
               encrypted; prefer an environment variable",
        placeholder: "a long random string",
        optional: false,
    }),
    settings: &[SYNC, SEQUENCE],
};

/// What a trigger starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerTarget {
    Sync(String),
    Sequence(String),
}

impl TriggerTarget {
    /// `sync 'customers'`, `sequence 'catalogue'`.
    pub fn describe(&self) -> String {
        match self {
            TriggerTarget::Sync(name) => format!("sync '{name}'"),
            TriggerTarget::Sequence(name) => format!("sequence '{name}'"),
        }
    }
}

/// A dbt Cloud trigger's settings besides its webhook secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbtCloudSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    /// dbt Cloud sends job ids as text; `ferry.yaml` may write a number.
    #[serde(
        default,
        deserialize_with = "text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_id: Option<String>,
}

/// A signed trigger's settings besides its signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTriggerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
}

fn text_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) if text.trim().is_empty() => None,
            Some(serde_json::Value::String(text)) => Some(text.trim().to_string()),
            Some(serde_json::Value::Number(number)) => Some(number.to_string()),
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "job_id is the dbt Cloud job's number, not {other}"
                )))
            }
        },
    )
}

/// The one target of a trigger, or the fix when it names none or both.
pub fn target_of(
    sync: &Option<String>,
    sequence: &Option<String>,
) -> Result<TriggerTarget, String> {
    let given = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
    };
    match (given(sync), given(sequence)) {
        (Some(sync), None) => Ok(TriggerTarget::Sync(sync)),
        (None, Some(sequence)) => Ok(TriggerTarget::Sequence(sequence)),
        (None, None) => Err(
            "a trigger runs a sync or a sequence: set `sync` (--sync NAME) or `sequence` \
             (--sequence NAME)"
                .to_string(),
        ),
        (Some(_), Some(_)) => Err(
            "a trigger runs one thing: set `sync` or `sequence`, not both (a sequence runs \
             several syncs in order)"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_names_exactly_one_target() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            target_of(&some("customers"), &None),
            Ok(TriggerTarget::Sync("customers".into()))
        );
        assert_eq!(
            target_of(&Some(" ".into()), &some("catalogue")),
            Ok(TriggerTarget::Sequence("catalogue".into()))
        );
        assert!(target_of(&None, &None).unwrap_err().contains("set `sync`"));
        assert!(target_of(&some("a"), &some("b"))
            .unwrap_err()
            .contains("not both"));
    }

    #[test]
    fn a_job_id_is_text_or_a_number() {
        let read = |json: &str| serde_json::from_str::<DbtCloudSettings>(json);
        assert_eq!(
            read(r#"{"sync": "s", "job_id": 123}"#).unwrap().job_id,
            Some("123".into())
        );
        assert_eq!(
            read(r#"{"sync": "s", "job_id": "77"}"#).unwrap().job_id,
            Some("77".into())
        );
        assert_eq!(read(r#"{"sync": "s"}"#).unwrap().job_id, None);
        assert!(read(r#"{"sync": "s", "job_id": [1]}"#).is_err());
    }
}
