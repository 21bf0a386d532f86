//! The one way ferry opens a PostgreSQL connection: a connection string read with libpq's TLS
//! settings (`sslmode`, `sslrootcert`), TLS done by rustls.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and nothing about certificates: what
//! is checked is the TLS connector's business. So the TLS settings are taken out of the
//! connection string here (its parser refuses `verify-ca`, `verify-full` and `sslrootcert`),
//! tokio-postgres gets the rest plus the mode it understands, and the connector checks the
//! server's certificate the way libpq does for the mode asked for. The warehouse source and the
//! PostgreSQL workspace store both connect through [`PostgresTarget::connect`], so they accept
//! the same connection strings and say the same errors.

mod connection_string;
mod tls;

pub use connection_string::ConnectionStringError;
pub use tls::{TlsConnector, TlsError, TlsStream};

use std::path::PathBuf;
use tokio_postgres::config::Host;

/// A connection of ferry's: the socket, TLS or not, as tokio-postgres drives it.
pub type PostgresConnection = tokio_postgres::Connection<tokio_postgres::Socket, TlsStream>;

/// libpq's `sslmode`, minus `allow` (plain first, TLS only if the server insists), which no
/// hosted PostgreSQL needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, else plain; the certificate is not checked (unless
    /// `sslrootcert` names a file). libpq's default, and so ferry's.
    Prefer,
    /// TLS or nothing; the certificate is not checked (unless `sslrootcert` names a file).
    Require,
    /// TLS, and the certificate must be signed by a trusted authority; any host name.
    VerifyCa,
    /// TLS, a trusted certificate, and it must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The value as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<SslMode> {
        [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == text)
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Where the certificate authorities that sign the server's certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCertificates {
    /// The public web PKI (Mozilla's list, compiled in): `sslrootcert` absent or `system`.
    WebPki,
    /// `sslrootcert=PATH`: the PEM certificates in that file, and only those.
    File(PathBuf),
}

/// What the connection string said about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_certificates: RootCertificates,
}

impl TlsSettings {
    /// What the connector checks of the server's certificate. As libpq does, `prefer` and
    /// `require` check the chain when `sslrootcert` names a file (verify-ca's check).
    fn verification(&self) -> Verification {
        match (self.mode, &self.root_certificates) {
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, RootCertificates::WebPki) => {
                Verification::Nothing
            }
            (SslMode::Disable | SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, _) => {
                Verification::Chain
            }
            (SslMode::VerifyFull, _) => Verification::ChainAndHostName,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    Nothing,
    Chain,
    ChainAndHostName,
}

/// What a connection string that leaves them out gets: libpq's defaults for PostgreSQL, and
/// others for servers that speak its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub port: u16,
    pub ssl_mode: SslMode,
}

impl Defaults {
    /// libpq's: port 5432, `sslmode=prefer`.
    pub const POSTGRES: Defaults = Defaults {
        port: 5432,
        ssl_mode: SslMode::Prefer,
    };

    /// Amazon Redshift's: port 5439, and TLS with the certificate checked against the public
    /// authorities (Redshift's are signed by Amazon's, which webpki-roots holds) and its host
    /// name: a cluster is reached over the internet or a VPC, and accepts TLS by default.
    pub const REDSHIFT: Defaults = Defaults {
        port: 5439,
        ssl_mode: SslMode::VerifyFull,
    };
}

/// A parsed connection string: tokio-postgres' configuration and the TLS settings.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    config: tokio_postgres::Config,
    tls: TlsSettings,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TLS could not be set up as the connection string asks; the message names the fix.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Anything else: unreachable, refused login, a server error.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

impl PostgresTarget {
    /// Reads a `postgres://…` URL or a `host=… dbname=…` string. Nothing is opened or read yet
    /// (the `sslrootcert` file is read on connecting).
    pub fn parse(connection_string: &str) -> Result<PostgresTarget, ConnectionStringError> {
        PostgresTarget::parse_with(connection_string, &Defaults::POSTGRES)
    }

    /// [`PostgresTarget::parse`] with another server's defaults for what the string leaves
    /// out (Redshift's port and TLS).
    pub fn parse_with(
        connection_string: &str,
        defaults: &Defaults,
    ) -> Result<PostgresTarget, ConnectionStringError> {
        let (mut rest, tls) =
            connection_string::split_tls_settings(connection_string, defaults.ssl_mode)?;
        if defaults.port != Defaults::POSTGRES.port {
            rest = connection_string::with_default_port(&rest, defaults.port);
        }
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(ConnectionStringError::Driver)?;
        // libpq ignores sslmode on unix sockets, where PostgreSQL never offers TLS.
        let only_sockets = !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|host| matches!(host, Host::Unix(_)));
        config.ssl_mode(match tls.mode {
            _ if only_sockets => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        Ok(PostgresTarget { config, tls })
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// For settings the caller adds (a default `connect_timeout`).
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    pub fn tls_settings(&self) -> &TlsSettings {
        &self.tls
    }

    /// The connector for this target's TLS settings; it reads the `sslrootcert` file. Also
    /// what a `CancelToken` needs to reach the server the same way.
    pub fn tls_connector(&self) -> Result<TlsConnector, TlsError> {
        TlsConnector::new(&self.tls)
    }

    /// Connects (TLS as the settings ask, through `connector`, made by
    /// [`PostgresTarget::tls_connector`]) and logs in. A TLS failure comes back as
    /// [`ConnectError::Tls`], worded for a person; as libpq does, `prefer` tries once more
    /// without TLS when the TLS handshake itself failed.
    pub async fn connect(
        &self,
        connector: &TlsConnector,
    ) -> Result<(tokio_postgres::Client, PostgresConnection), ConnectError> {
        let error = match self.config.connect(connector.clone()).await {
            Ok(connected) => return Ok(connected),
            Err(error) => error,
        };
        let Some(tls_error) = tls::tls_failure(&error, self.tls.mode) else {
            return Err(self.plain_connection_refused(error));
        };
        if self.tls.mode != SslMode::Prefer {
            return Err(ConnectError::Tls(tls_error));
        }
        let mut plain = self.config.clone();
        plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
        plain.connect(connector.clone()).await.map_err(|error| {
            match self.plain_connection_refused(error) {
                // A server that wants TLS: why TLS failed is what the user needs to know.
                ConnectError::Tls(TlsError::ServerRequiresTls { .. }) => {
                    ConnectError::Tls(tls_error)
                }
                other => other,
            }
        })
    }

    /// A server whose pg_hba.conf lets only TLS in (`hostssl`) refuses a plain login with
    /// "… no encryption": said as what to change in the connection string.
    fn plain_connection_refused(&self, error: tokio_postgres::Error) -> ConnectError {
        let refused_plain = error.as_db_error().is_some_and(|database_error| {
            database_error.code().code().starts_with("28")
                && database_error.message().ends_with("no encryption")
        });
        if refused_plain {
            let message = error.as_db_error().map(|e| e.message().to_string());
            return ConnectError::Tls(TlsError::ServerRequiresTls {
                mode: self.tls.mode,
                server_message: message.unwrap_or_default(),
            });
        }
        ConnectError::Postgres(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_without_port_or_sslmode_gets_the_servers_defaults() {
        let cases = [
            (
                "postgres://u:p@db.example.com/dev",
                Defaults::POSTGRES,
                5432,
                SslMode::Prefer,
            ),
            (
                "postgres://u:p@db.example.com/dev",
                Defaults::REDSHIFT,
                5439,
                SslMode::VerifyFull,
            ),
            (
                "host=db.example.com dbname=dev",
                Defaults::REDSHIFT,
                5439,
                SslMode::VerifyFull,
            ),
            (
                "postgres://u:p@db.example.com:6000/dev?sslmode=require",
                Defaults::REDSHIFT,
                6000,
                SslMode::Require,
            ),
            (
                "host=db.example.com port=7000 sslmode=disable",
                Defaults::REDSHIFT,
                7000,
                SslMode::Disable,
            ),
        ];
        for (string, defaults, port, mode) in cases {
            let target = PostgresTarget::parse_with(string, &defaults).unwrap();
            assert_eq!(target.config().get_ports(), [port], "{string}");
            assert_eq!(target.tls_settings().mode, mode, "{string}");
        }
    }
}
