//! tokio-postgres' TLS hooks (`MakeTlsConnect`, `TlsConnect`, `TlsStream`) over rustls, with
//! the certificate checks of libpq's modes, and TLS failures worded with their fix.
//!
//! Written here rather than taken from `tokio-postgres-rustls`: the glue is small, and this way
//! a handshake failure is classified where rustls reports it (an untrusted certificate, a host
//! name the certificate does not name) instead of from the text of a wrapped error.

use crate::{RootCertificates, SslMode, TlsSettings, Verification};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

/// What went wrong setting up TLS, each with what to do about it. No variant holds a password:
/// the only inputs are the host name, the sslrootcert path and rustls' words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error(
        "the server does not accept TLS, which sslmode={mode} requires; use sslmode=prefer or \
         disable, or turn on ssl on the server"
    )]
    ServerRefusedTls { mode: SslMode },

    /// The server refused an unencrypted login (pg_hba.conf's `hostssl`).
    #[error(
        "the server accepts only encrypted connections ({server_message}); use \
         sslmode=require, verify-ca or verify-full instead of sslmode={mode}"
    )]
    ServerRequiresTls {
        mode: SslMode,
        server_message: String,
    },

    #[error(
        "the server's certificate is not signed by a certificate authority ferry trusts \
         ({reason}); pass the server's CA certificate with sslrootcert=PATH"
    )]
    UntrustedCertificate { reason: String },

    #[error(
        "the server's certificate is not signed by the CA certificate in sslrootcert={} \
         ({reason}); pass the CA certificate that signed the server's certificate with \
         sslrootcert=PATH",
        path.display()
    )]
    NotSignedByRootCertificate { path: PathBuf, reason: String },

    #[error(
        "the server's certificate is not valid for the host name `{host}` (sslmode=verify-full \
         checks it); connect with a host name the certificate names, or use sslmode=verify-ca \
         to check only who signed it"
    )]
    HostNameMismatch { host: String },

    /// Expired, not yet valid, revoked, a bad signature: the server's to fix.
    #[error(
        "the server's certificate was refused: {reason}; the server needs a valid certificate"
    )]
    InvalidCertificate { reason: String },

    #[error(
        "cannot read the root certificate sslrootcert={}: {reason}; give the path of a readable \
         PEM file holding the server's CA certificate",
        path.display()
    )]
    UnreadableRootCertificate { path: PathBuf, reason: String },

    #[error("the TLS handshake with the server failed: {reason}")]
    Handshake { reason: String },
}

/// Finds the TLS failure in an error from `tokio_postgres::Config::connect`, if it is one.
pub(crate) fn tls_failure(error: &tokio_postgres::Error, mode: SslMode) -> Option<TlsError> {
    let cause = std::error::Error::source(error)?;
    if let Some(tls_error) = cause.downcast_ref::<TlsError>() {
        return Some(tls_error.clone());
    }
    // tokio-postgres' own words when the server answers the SSL request with "no".
    (cause.to_string() == "server does not support TLS")
        .then_some(TlsError::ServerRefusedTls { mode })
}

/// Makes one TLS connector per host tokio-postgres connects to; cheap to clone, one pointer
/// wide.
#[derive(Clone)]
pub struct TlsConnector(Arc<ConnectorSettings>);

struct ConnectorSettings {
    config: Arc<ClientConfig>,
    root_file: Option<PathBuf>,
}

impl TlsConnector {
    pub(crate) fn new(settings: &TlsSettings) -> Result<TlsConnector, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let root_file = match &settings.root_certificates {
            RootCertificates::File(path) => Some(path.clone()),
            RootCertificates::WebPki => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match settings.verification() {
            Verification::Nothing => Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }),
            verification => {
                let roots = match &root_file {
                    Some(path) => read_root_certificates(path)?,
                    None => RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    },
                };
                let chain = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|error| TlsError::Handshake {
                    reason: error.to_string(),
                })?;
                Arc::new(ChainVerifier {
                    chain,
                    check_host_name: verification == Verification::ChainAndHostName,
                })
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Handshake {
                reason: error.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsConnector(Arc::new(ConnectorSettings {
            config: Arc::new(config),
            root_file,
        })))
    }
}

impl MakeTlsConnect<Socket> for TlsConnector {
    type Stream = TlsStream;
    type TlsConnect = HostTlsConnector;
    type Error = TlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<HostTlsConnector, TlsError> {
        // tokio-postgres asks for a connector before it knows whether TLS will be used (and
        // with "" for a unix socket), so a host that cannot be a server name fails only once
        // a handshake needs it.
        Ok(HostTlsConnector {
            config: Arc::clone(&self.0.config),
            server_name: ServerName::try_from(host.to_string()).ok(),
            host: host.to_string(),
            root_file: self.0.root_file.clone(),
        })
    }
}

/// A connector for one host.
pub struct HostTlsConnector {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    host: String,
    root_file: Option<PathBuf>,
}

impl TlsConnect<Socket> for HostTlsConnector {
    type Stream = TlsStream;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream, TlsError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let server_name = self.server_name.ok_or_else(|| TlsError::Handshake {
                reason: format!(
                    "`{}` is not a host name or IP address a certificate can name",
                    self.host
                ),
            })?;
            tokio_rustls::TlsConnector::from(self.config)
                .connect(server_name, socket)
                .await
                .map(|stream| TlsStream(Box::new(stream)))
                .map_err(|error| classify_handshake_error(&error, &self.host, self.root_file))
        })
    }
}

/// The encrypted socket.
pub struct TlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for TlsStream {
    /// No channel binding: tokio-postgres' default (`channel_binding=prefer`) then logs in with
    /// plain SCRAM, as it does without TLS.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(context, buffer)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

fn read_root_certificates(path: &Path) -> Result<RootCertStore, TlsError> {
    let unreadable = |reason: String| TlsError::UnreadableRootCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| unreadable(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| unreadable(error.to_string()))?;
        roots
            .add(certificate)
            .map_err(|error| unreadable(format!("a certificate in it is not valid: {error}")))?;
    }
    if roots.is_empty() {
        return Err(unreadable(
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string(),
        ));
    }
    Ok(roots)
}

/// rustls reports a refused certificate as an `io::Error` around a `rustls::Error`.
fn classify_handshake_error(error: &io::Error, host: &str, root_file: Option<PathBuf>) -> TlsError {
    let certificate_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|rustls_error| match rustls_error {
            rustls::Error::InvalidCertificate(certificate_error) => Some(certificate_error),
            _ => None,
        });
    let Some(certificate_error) = certificate_error else {
        return TlsError::Handshake {
            reason: error.to_string(),
        };
    };
    match (certificate_error, root_file) {
        (CertificateError::UnknownIssuer, None) => TlsError::UntrustedCertificate {
            reason: "unknown issuer".to_string(),
        },
        (CertificateError::UnknownIssuer, Some(path)) => TlsError::NotSignedByRootCertificate {
            path,
            reason: "unknown issuer".to_string(),
        },
        (
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            _,
        ) => TlsError::HostNameMismatch {
            host: host.to_string(),
        },
        (other, _) => TlsError::InvalidCertificate {
            reason: other.to_string(),
        },
    }
}

/// `prefer` and `require` without `sslrootcert`: encrypted, but any certificate will do, as
/// with libpq. The handshake's signatures are still checked (the server holds the key of the
/// certificate it sent).
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// verify-ca and verify-full: the chain must lead to a trusted root; the host name is checked
/// only for verify-full. rustls checks the chain before the name, so a name mismatch means
/// the chain was good.
#[derive(Debug)]
struct ChainVerifier {
    chain: Arc<WebPkiServerVerifier>,
    check_host_name: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}
