//! Takes libpq's TLS settings (`sslmode`, `sslrootcert`) out of a connection string, in either
//! of its two forms, leaving the rest for tokio-postgres' own parser.
//!
//! The split follows tokio-postgres' parser (`tokio_postgres::config`) so that both read the
//! same keys and values: URL query parameters are percent-decoded, and in the `key=value` form
//! values may be quoted with `'` and escape characters with `\`. The parts that stay are passed
//! on as written, never decoded and encoded again.

use crate::{RootCertificates, SslMode, TlsSettings};
use std::path::PathBuf;

/// A connection string ferry cannot use; no variant holds the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionStringError {
    #[error(
        "sslmode `{0}` is not one of disable, prefer, require, verify-ca, verify-full (prefer, \
         the default, uses TLS when the server offers it)"
    )]
    UnknownSslMode(String),

    /// libpq 16 makes `sslrootcert=system` imply verify-full, and refuses weaker modes: any
    /// certificate a public authority signed would do for the server.
    #[error(
        "sslmode={0} may not be used with sslrootcert=system, which trusts every public \
         certificate authority; use sslmode=verify-full, or leave sslmode out"
    )]
    WeakModeWithSystemRoots(SslMode),

    #[error(
        "sslrootcert is empty; give the path of a PEM file holding the server's CA certificate"
    )]
    EmptyRootCertificate,

    /// tokio-postgres refused the rest of the string.
    #[error("{}", describe_error_chain(.0))]
    Driver(tokio_postgres::Error),
}

/// Returns the connection string without `sslmode` and `sslrootcert`, and what they said;
/// `default_mode` when it does not say (libpq's `prefer`, Redshift's `verify-full`).
pub(crate) fn split_tls_settings(
    connection_string: &str,
    default_mode: SslMode,
) -> Result<(String, TlsSettings), ConnectionStringError> {
    let (rest, raw) = match url_body(connection_string) {
        Some(body_start) => split_url(connection_string, body_start),
        None => split_key_value(connection_string),
    };
    Ok((rest, raw.validate(default_mode)?))
}

/// The last value of each setting, as written (decoded), before it is checked.
#[derive(Debug, Default)]
struct RawTlsSettings {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

impl RawTlsSettings {
    /// Keeps the value if `key` is one of ours; says whether it was.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            _ => return false,
        }
        true
    }

    fn validate(self, default_mode: SslMode) -> Result<TlsSettings, ConnectionStringError> {
        let mode = match self.sslmode.as_deref() {
            None => None,
            Some(text) => Some(
                SslMode::parse(text)
                    .ok_or_else(|| ConnectionStringError::UnknownSslMode(text.to_string()))?,
            ),
        };
        match self.sslrootcert.as_deref() {
            None => Ok(TlsSettings {
                mode: mode.unwrap_or(default_mode),
                root_certificates: RootCertificates::WebPki,
            }),
            Some("") => Err(ConnectionStringError::EmptyRootCertificate),
            Some("system") => match mode.unwrap_or(SslMode::VerifyFull) {
                SslMode::VerifyFull => Ok(TlsSettings {
                    mode: SslMode::VerifyFull,
                    root_certificates: RootCertificates::WebPki,
                }),
                weaker => Err(ConnectionStringError::WeakModeWithSystemRoots(weaker)),
            },
            Some(path) => Ok(TlsSettings {
                mode: mode.unwrap_or(default_mode),
                root_certificates: RootCertificates::File(PathBuf::from(path)),
            }),
        }
    }
}

/// Where a `postgres://` or `postgresql://` URL's body starts; `None` for `key=value` strings.
fn url_body(text: &str) -> Option<usize> {
    ["postgres://", "postgresql://"]
        .into_iter()
        .find(|prefix| text.starts_with(prefix))
        .map(str::len)
}

fn split_url(url: &str, body_start: usize) -> (String, RawTlsSettings) {
    // As tokio-postgres reads it: the credentials end at the first '@', and the parameters
    // start at the first '?' after them (a password may hold a '?').
    let after_credentials = url[body_start..]
        .find('@')
        .map_or(body_start, |at| body_start + at + 1);
    let Some(question_mark) = url[after_credentials..].find('?') else {
        return (url.to_string(), RawTlsSettings::default());
    };
    let (base, query) = url.split_at(after_credentials + question_mark);
    let mut settings = RawTlsSettings::default();
    let kept: Vec<&str> = query[1..]
        .split('&')
        .filter(|parameter| {
            let Some((key, value)) = parameter.split_once('=') else {
                return true;
            };
            !settings.take(&percent_decode(key), percent_decode(value))
        })
        .collect();
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, settings)
}

/// The connection string (without its TLS settings) with `port` for each host that names none,
/// unless it sets `port` itself. tokio-postgres fills in 5432 for a host without a port, so a
/// server with another default port (Redshift's 5439) must be given it before parsing.
pub(crate) fn with_default_port(rest: &str, port: u16) -> String {
    match url_body(rest) {
        Some(body_start) => {
            let after_credentials = rest[body_start..]
                .find('@')
                .map_or(body_start, |at| body_start + at + 1);
            let authority_end = rest[after_credentials..]
                .find(['/', '?'])
                .map_or(rest.len(), |end| after_credentials + end);
            let hosts = &rest[after_credentials..authority_end];
            let query = rest[authority_end..]
                .split_once('?')
                .map(|(_, query)| query);
            let sets_port = query.is_some_and(|query| {
                query.split('&').any(|parameter| {
                    parameter
                        .split_once('=')
                        .is_some_and(|(key, _)| key == "port")
                })
            });
            if hosts.is_empty() || sets_port {
                return rest.to_string();
            }
            let hosts: Vec<String> = hosts
                .split(',')
                .map(|host| {
                    let has_port = match host.strip_prefix('[') {
                        Some(bracketed) => bracketed.contains("]:"),
                        None => host.contains(':'),
                    };
                    if has_port || host.is_empty() {
                        host.to_string()
                    } else {
                        format!("{host}:{port}")
                    }
                })
                .collect();
            format!(
                "{}{}{}",
                &rest[..after_credentials],
                hosts.join(","),
                &rest[authority_end..]
            )
        }
        None => {
            let mut scanner = KeyValueScanner {
                text: rest,
                position: 0,
            };
            while let Some((key, _, _)) = scanner.next_pair() {
                if key == "port" {
                    return rest.to_string();
                }
            }
            format!("{rest} port={port}")
        }
    }
}

fn split_key_value(text: &str) -> (String, RawTlsSettings) {
    let mut settings = RawTlsSettings::default();
    let mut kept = Vec::new();
    let mut scanner = KeyValueScanner { text, position: 0 };
    while let Some((key, value, written)) = scanner.next_pair() {
        if !settings.take(key, value) {
            kept.push(written);
        }
    }
    if scanner.position < text.len() {
        // Not something tokio-postgres would read either: hand it the whole string, so its
        // error is the one the user sees.
        return (text.to_string(), RawTlsSettings::default());
    }
    (kept.join(" "), settings)
}

/// Reads `key = value` pairs like tokio-postgres' `Parser`.
struct KeyValueScanner<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> KeyValueScanner<'a> {
    /// The next key, its decoded value and the pair as written; `None` at the end or at
    /// something that is not a pair (then `position` stops short of the end).
    fn next_pair(&mut self) -> Option<(&'a str, String, &'a str)> {
        self.skip_whitespace();
        let start = self.position;
        let key_length = self.rest().find(|c: char| c.is_whitespace() || c == '=')?;
        if key_length == 0 {
            return None;
        }
        let key = &self.rest()[..key_length];
        self.position += key_length;
        self.skip_whitespace();
        if !self.rest().starts_with('=') {
            self.position = start;
            return None;
        }
        self.position += 1;
        self.skip_whitespace();
        let value = match self.read_value() {
            Some(value) => value,
            None => {
                self.position = start;
                return None;
            }
        };
        Some((key, value, &self.text[start..self.position]))
    }

    fn read_value(&mut self) -> Option<String> {
        let quoted = self.rest().starts_with('\'');
        if quoted {
            self.position += 1;
        }
        let mut value = String::new();
        let mut characters = self.rest().char_indices();
        while let Some((offset, character)) = characters.next() {
            let ends = if quoted {
                character == '\''
            } else {
                character.is_whitespace()
            };
            if ends {
                self.position += offset + usize::from(quoted);
                return (quoted || !value.is_empty()).then_some(value);
            }
            if character == '\\' {
                if let Some((_, escaped)) = characters.next() {
                    value.push(escaped);
                }
            } else {
                value.push(character);
            }
        }
        if quoted {
            return None; // no closing quote
        }
        self.position = self.text.len();
        (!value.is_empty()).then_some(value)
    }

    fn rest(&self) -> &'a str {
        &self.text[self.position..]
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        self.position += rest.len() - rest.trim_start().len();
    }
}

/// `%2F` → `/`, as tokio-postgres decodes URL parameters (a `+` stays a `+`). Invalid UTF-8
/// is replaced rather than refused: tokio-postgres will refuse it with its own message.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex_pair = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex_pair) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// tokio-postgres' `Display` is only the outer kind ("invalid connection string"); the causes
/// say what is wrong.
fn describe_error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    /// `MODE ROOTS | what tokio-postgres gets`, or `error: …`.
    fn check(connection_string: &str, expected: Expect) {
        let actual = match split_tls_settings(connection_string, SslMode::Prefer) {
            Ok((rest, settings)) => {
                let roots = match settings.root_certificates {
                    RootCertificates::WebPki => "webpki".to_string(),
                    RootCertificates::File(path) => format!("file:{}", path.display()),
                };
                format!("{} {roots} | {rest}", settings.mode)
            }
            Err(error) => format!("error: {error}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn urls() {
        check(
            "postgres://u:pw@db/app",
            expect!["prefer webpki | postgres://u:pw@db/app"],
        );
        check(
            "postgres://u:pw@db/app?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            expect!["verify-full file:/etc/ca.pem | postgres://u:pw@db/app"],
        );
        check(
            "postgresql://db/app?application_name=ferry&sslmode=require&connect_timeout=5",
            expect![
                "require webpki | postgresql://db/app?application_name=ferry&connect_timeout=5"
            ],
        );
        check(
            "postgres://db/app?sslrootcert=%2Ftmp%2Fmy%20ca.pem&sslmode=verify-ca",
            expect!["verify-ca file:/tmp/my ca.pem | postgres://db/app"],
        );
        check(
            "postgres://u:p?ss&sslmode=x@db/app?sslmode=disable",
            expect!["disable webpki | postgres://u:p?ss&sslmode=x@db/app"],
        );
        check(
            "postgres://db/app?sslmode=require&sslmode=verify-full",
            expect!["verify-full webpki | postgres://db/app"],
        );
        check(
            "postgres://db/app?password=secret&sslmode=require",
            expect!["require webpki | postgres://db/app?password=secret"],
        );
    }

    #[test]
    fn key_value_strings() {
        check(
            "host=db dbname=app sslmode=verify-full sslrootcert=/etc/ca.pem user=u",
            expect!["verify-full file:/etc/ca.pem | host=db dbname=app user=u"],
        );
        check(
            "host=db sslrootcert = '/path with space/it\\'s.pem'  sslmode= require",
            expect!["require file:/path with space/it's.pem | host=db"],
        );
        check(
            "host=/tmp/socket port=5432 user=postgres",
            expect!["prefer webpki | host=/tmp/socket port=5432 user=postgres"],
        );
        check(
            "password='a b' host=db sslmode=disable",
            expect!["disable webpki | password='a b' host=db"],
        );
        // Not a key=value string tokio-postgres reads: passed on whole for its own error.
        check(
            "host=db sslmode=require dbname",
            expect!["prefer webpki | host=db sslmode=require dbname"],
        );
    }

    #[test]
    fn modes_and_roots_that_are_refused_or_implied() {
        check(
            "postgres://db/app?sslmode=verify_full",
            expect![
                "error: sslmode `verify_full` is not one of disable, prefer, require, verify-ca, verify-full (prefer, the default, uses TLS when the server offers it)"
            ],
        );
        check(
            "host=db sslmode=allow",
            expect![
                "error: sslmode `allow` is not one of disable, prefer, require, verify-ca, verify-full (prefer, the default, uses TLS when the server offers it)"
            ],
        );
        check(
            "postgres://db/app?sslrootcert=system",
            expect!["verify-full webpki | postgres://db/app"],
        );
        check(
            "postgres://db/app?sslrootcert=system&sslmode=require",
            expect![
                "error: sslmode=require may not be used with sslrootcert=system, which trusts every public certificate authority; use sslmode=verify-full, or leave sslmode out"
            ],
        );
        check(
            "postgres://db/app?sslrootcert=",
            expect![
                "error: sslrootcert is empty; give the path of a PEM file holding the server's CA certificate"
            ],
        );
    }

    #[test]
    fn what_the_connector_checks() {
        let verification = |text: &str| {
            crate::PostgresTarget::parse(text)
                .unwrap()
                .tls_settings()
                .verification()
        };
        use crate::Verification::*;
        assert_eq!(verification("postgres://db/app"), Nothing);
        assert_eq!(verification("postgres://db/app?sslmode=require"), Nothing);
        assert_eq!(
            verification("postgres://db/app?sslmode=require&sslrootcert=ca.pem"),
            Chain
        );
        assert_eq!(verification("postgres://db/app?sslmode=verify-ca"), Chain);
        assert_eq!(
            verification("postgres://db/app?sslmode=verify-full"),
            ChainAndHostName
        );
    }

    #[test]
    fn unix_sockets_never_use_tls() {
        let target =
            crate::PostgresTarget::parse("host=/tmp/socket dbname=app sslmode=verify-full")
                .unwrap();
        assert_eq!(
            target.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        assert_eq!(target.tls_settings().mode, SslMode::VerifyFull);
        let target = crate::PostgresTarget::parse("postgres://db/app?sslmode=verify-ca").unwrap();
        assert_eq!(
            target.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }
}
