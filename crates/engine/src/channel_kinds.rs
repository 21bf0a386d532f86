//! The registry entries of the alert channels (webhook, Slack, email): connections ferry tells
//! of syncs' runs and alerts rather than reads or writes records. Their settings, secrets and
//! tests are declared here the way `connections.rs` declares the warehouses', so every door
//! (`ferry connect`, the API, the UI, `ferry.yaml`) takes them with no code of its own.

use crate::connections::{KindSpec, SecretSpec, SettingSpec, SettingValue};
use ferry_core::{EventKind, Secret};
use ferry_notify::email::{EmailSettings, SmtpSecurity};
use ferry_state::ConnectionKind;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

pub const WEBHOOK: KindSpec = KindSpec {
    kind: ConnectionKind::Webhook,
    label: "Webhook",
    help: "Send syncs' lifecycle events and alerts to a URL, as JSON signed with HMAC-SHA256 in \
           the Ferry-Signature header. Saving it sends a signed `ping` event",
    is_source: false,
    secret: Some(SecretSpec {
        what: "signing secret",
        value_field: "signing_secret",
        env_field: "signing_secret_env",
        example_env: "FERRY_WEBHOOK_SECRET",
        flag: "--signing-secret-env",
        label: "Signing secret",
        help: "The key each event is signed with (HMAC-SHA256 of `<t>.<body>`, as \
               `Ferry-Signature: t=…,v1=…`); the receiver checks it with the same key. Given \
               as a value it is stored encrypted; prefer an environment variable",
        placeholder: "a long random string",
        optional: false,
    }),
    settings: &[
        SettingSpec {
            key: "url",
            flag: "--url",
            value: SettingValue::Text,
            required: true,
            label: "URL",
            help: "Where the events are POSTed (https, or http on a trusted network)",
            placeholder: "https://hooks.example.com/ferry",
        },
        SettingSpec {
            key: "events",
            flag: "--events",
            value: SettingValue::Text,
            required: false,
            label: "Events",
            help: "The events it receives for every sync, separated by commas (default all: \
                   sync.started, sync.completed, sync.failed, sync.alert.raised, \
                   sync.alert.resolved)",
            placeholder: "sync.failed, sync.alert.raised, sync.alert.resolved",
        },
    ],
};

pub const SLACK: KindSpec = KindSpec {
    kind: ConnectionKind::Slack,
    label: "Slack",
    help: "Post syncs' alerts to a Slack channel through an incoming webhook. Saving it posts a \
           message saying so",
    is_source: false,
    secret: Some(SecretSpec {
        what: "webhook URL",
        value_field: "webhook_url",
        env_field: "webhook_url_env",
        example_env: "SLACK_WEBHOOK_URL",
        flag: "--webhook-url-env",
        label: "Incoming webhook URL",
        help: "The channel's incoming webhook (https://hooks.slack.com/services/…), a secret: \
               whoever has it can post there. Given as a value it is stored encrypted; prefer \
               an environment variable",
        placeholder: "https://hooks.slack.com/services/…",
        optional: false,
    }),
    settings: &[],
};

pub const EMAIL: KindSpec = KindSpec {
    kind: ConnectionKind::Email,
    label: "Email (SMTP)",
    help: "Email syncs' alerts through an SMTP server (STARTTLS, TLS or none; AUTH when a user \
           is set). Saving it signs in to the server without sending anything",
    is_source: false,
    secret: Some(SecretSpec {
        what: "password",
        value_field: "password",
        env_field: "password_env",
        example_env: "SMTP_PASSWORD",
        flag: "--password-env",
        label: "Password",
        help: "The SMTP user's password. Given as a value it is stored encrypted; prefer an \
               environment variable",
        placeholder: "",
        optional: true,
    }),
    settings: &[
        SettingSpec {
            key: "host",
            flag: "--host",
            value: SettingValue::Text,
            required: true,
            label: "SMTP server",
            help: "The SMTP server's host name",
            placeholder: "smtp.example.com",
        },
        SettingSpec {
            key: "port",
            flag: "--port",
            value: SettingValue::Count,
            required: false,
            label: "Port",
            help: "Its port (default 587 with STARTTLS, 465 with TLS, 25 with none)",
            placeholder: "587",
        },
        SettingSpec {
            key: "security",
            flag: "--security",
            value: SettingValue::Text,
            required: false,
            label: "Security",
            help: "starttls (the default), tls (from the first byte) or none (a relay on a \
                   trusted network only: the password would travel in clear)",
            placeholder: "starttls",
        },
        SettingSpec {
            key: "username",
            flag: "--username",
            value: SettingValue::Text,
            required: false,
            label: "User",
            help: "The user to sign in as (no sign-in when absent)",
            placeholder: "alerts@example.com",
        },
        SettingSpec {
            key: "from",
            flag: "--from",
            value: SettingValue::Text,
            required: true,
            label: "From",
            help: "The sender: an address, or a name and an address (`ferry <ferry@example.com>`)",
            placeholder: "ferry <ferry@example.com>",
        },
        SettingSpec {
            key: "to",
            flag: "--to",
            value: SettingValue::Text,
            required: true,
            label: "To",
            help: "The recipients, separated by commas",
            placeholder: "data-team@example.com, oncall@example.com",
        },
        SettingSpec {
            key: "ca_file",
            flag: "--ca-file",
            value: SettingValue::Path,
            required: false,
            label: "CA certificate",
            help: "A PEM file of the certificate authority that signed the server's \
                   certificate, when it is not a public one",
            placeholder: "/etc/ssl/private-ca.pem",
        },
    ],
};

/// A webhook channel's settings besides its signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    #[serde(deserialize_with = "webhook_url")]
    pub url: String,
    /// The events it receives, as written (checked); every event when absent.
    #[serde(
        default,
        deserialize_with = "event_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub events: Option<String>,
}

impl WebhookSettings {
    /// The events it receives.
    pub fn events(&self) -> Vec<EventKind> {
        EventKind::parse_list(self.events.as_deref().unwrap_or(""))
            .expect("the events were checked when the settings were read")
    }
}

/// A Slack channel has only its secret, the webhook's URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {}

/// An email channel's settings besides its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailChannelSettings {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(
        default,
        deserialize_with = "security",
        skip_serializing_if = "Option::is_none"
    )]
    pub security: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl EmailChannelSettings {
    /// What the SMTP client takes, with the password resolved.
    pub fn email_settings(&self, password: Option<Secret>) -> EmailSettings {
        EmailSettings {
            host: self.host.clone(),
            port: self.port,
            security: self
                .security
                .as_deref()
                .and_then(parse_security)
                .unwrap_or_default(),
            username: self.username.clone(),
            password,
            from: self.from.clone(),
            to: self
                .to
                .split(',')
                .map(str::trim)
                .filter(|address| !address.is_empty())
                .map(str::to_string)
                .collect(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// Everything that can be checked without the server: the addresses, a user for the
    /// password.
    pub fn check(&self, password: Option<Secret>) -> Result<(), String> {
        ferry_notify::email::check_email_settings(&self.email_settings(password))
    }
}

fn parse_security(text: &str) -> Option<SmtpSecurity> {
    match text.trim().to_ascii_lowercase().as_str() {
        "starttls" => Some(SmtpSecurity::Starttls),
        "tls" => Some(SmtpSecurity::Tls),
        "none" => Some(SmtpSecurity::None),
        _ => None,
    }
}

fn security<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    match text {
        None => Ok(None),
        Some(text) if parse_security(&text).is_some() => Ok(Some(text.trim().to_ascii_lowercase())),
        Some(text) => Err(serde::de::Error::custom(format!(
            "security `{text}` is not one of starttls, tls or none"
        ))),
    }
}

fn webhook_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    ferry_notify::webhook::check_url(&url)
        .map_err(|problem| serde::de::Error::custom(format!("url: {problem}")))?;
    Ok(url.trim().to_string())
}

fn event_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let events = EventKind::parse_list(&text)
        .map_err(|problem| serde::de::Error::custom(format!("events: {problem}")))?;
    if events.len() == EventKind::ALL.len() {
        return Ok(None);
    }
    Ok(Some(
        events
            .iter()
            .map(|event| event.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    ))
}
