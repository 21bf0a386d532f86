//! The email channel: a plain-text message over SMTP (lettre, rustls over ring), through
//! STARTTLS, TLS from the first byte, or nothing for a local relay; AUTH when a user is set.
//!
//! Each step of a session (resolve, connect, STARTTLS, login, send) has its own error, in words
//! that name the server and the setting to change; the step and the kind of failure decide
//! whether trying again later may help (`ChannelError::retryable`). The password never appears
//! in an error: lettre does not print it, and [`send_email`] and [`test_email`] cut it out of
//! anything a server might have echoed.

use crate::ChannelError;
use ferry_core::Secret;
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::{Response, Severity};
use lettre::Message;
use serde::{Deserialize, Serialize};
use std::error::Error as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How long one send (or connection test) may take, from the DNS lookup to the server's answer.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain text first, then `STARTTLS` before anything else; refuses a server without it.
    /// Usually port 587 (submission).
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", SMTPS). Usually port 465.
    Tls,
    /// No encryption at all, usually port 25: only for a relay on the same machine or network.
    /// Never with a login, which would send the password in clear.
    None,
}

impl SmtpSecurity {
    /// The port servers usually listen on for this security: 587, 465 or 25.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }

    fn setting(self) -> &'static str {
        match self {
            SmtpSecurity::Starttls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::None => "none",
        }
    }
}

/// Where and how to send email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// The SMTP server's name (`smtp.example.com`), as on its certificate, or an IP address.
    pub host: String,
    /// `None`: the usual port of `security` ([`SmtpSecurity::default_port`]).
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    /// Logs in (AUTH PLAIN or LOGIN) as this user when set; `password` must be set too.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender: `ferry <ferry@example.com>` or a bare address.
    pub from: String,
    /// The recipients, each like `from`; every one gets the same message.
    pub to: Vec<String>,
    /// A PEM file with an extra trusted root certificate, for a server whose certificate a
    /// private CA signed. The public CAs (Mozilla's list) stay trusted.
    pub ca_file: Option<PathBuf>,
}

impl EmailSettings {
    /// `port`, else the usual port of `security`.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }
}

/// One notice, as email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    pub subject: String,
    pub text: String,
}

/// Sends one plain-text message to every `to`. Ok: the server's answer to the message (e.g.
/// `250 2.0.0 Ok: queued as 4Q2…`), kept as the delivery's answer.
pub async fn send_email(
    settings: &EmailSettings,
    message: &EmailMessage,
) -> Result<String, ChannelError> {
    let result = async {
        let settings = validate(settings).map_err(ChannelError::permanent)?;
        let email = compose(&settings, message)?;
        let (session, response) = within_timeout(&settings, async {
            let mut session = open_session(&settings).await?;
            let response = session
                .send(email.envelope(), &email.formatted())
                .await
                .map_err(|error| explain(&error, Step::Send, &settings))?;
            Ok((session, response))
        })
        .await?;
        // The server took the message: whatever QUIT does, it was delivered (an error now
        // would have the message sent again).
        quit(session).await;
        Ok(reply_text(&response))
    }
    .await;
    result.map_err(|error| without_password(error, settings))
}

/// The connection test: connects, STARTTLS or TLS as set, EHLO, and AUTH when a user is set;
/// sends no mail.
pub async fn test_email(settings: &EmailSettings) -> Result<(), ChannelError> {
    let result = async {
        let settings = validate(settings).map_err(ChannelError::permanent)?;
        let session = within_timeout(&settings, open_session(&settings)).await?;
        quit(session).await;
        Ok(())
    }
    .await;
    result.map_err(|error| without_password(error, settings))
}

/// Checks the settings without any IO: the host, the port, the addresses, and that a login
/// has both a user and a password and is encrypted. An error names the setting and the fix.
pub fn check_email_settings(settings: &EmailSettings) -> Result<(), String> {
    validate(settings).map(|_| ())
}

/// Settings that passed [`check_email_settings`], with the addresses parsed.
struct ValidSettings<'a> {
    host: &'a str,
    port: u16,
    security: SmtpSecurity,
    login: Option<(&'a str, &'a Secret)>,
    from: Mailbox,
    to: Vec<Mailbox>,
    ca_file: Option<&'a PathBuf>,
}

impl ValidSettings<'_> {
    /// `host:port`, as error messages name the server.
    fn server(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// How to write `from`, and each of `to`, in error messages.
const FROM_FORMS: &str = "write it as ferry@example.com or \"ferry <ferry@example.com>\"";
const TO_FORMS: &str = "write each as ops@example.com or \"Ops team <ops@example.com>\"";

fn validate(settings: &EmailSettings) -> Result<ValidSettings<'_>, String> {
    let host = settings.host.trim();
    if host.is_empty() {
        return Err(
            "host is empty: set it to the SMTP server's name, like smtp.example.com".into(),
        );
    }
    if host.contains("://") || host.contains(char::is_whitespace) {
        return Err(format!(
            "host {host:?} is not a server name: give only the name, like smtp.example.com \
             (no smtp:// and no spaces)"
        ));
    }
    if host.contains(':') && host.parse::<IpAddr>().is_err() {
        return Err(format!(
            "host {host:?} is not a server name: put the port in the port setting, not in host"
        ));
    }
    if settings.port == Some(0) {
        return Err(format!(
            "port 0 is not a port: set port to the SMTP server's port, or leave it out for the \
             usual one ({} for security {})",
            settings.security.default_port(),
            settings.security.setting()
        ));
    }
    let login = match (&settings.username, &settings.password) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(
                "password is set without username: set username too (the SMTP login), \
                 or remove password if the server needs no login"
                    .into(),
            )
        }
        (Some(user), None) => {
            return Err(format!(
                "username {user:?} is set without password: set password too, or remove \
                 username if the server needs no login"
            ))
        }
        (Some(user), Some(_)) if user.trim().is_empty() => {
            return Err(
                "username is empty: set it to the SMTP login, or remove username and \
                 password if the server needs no login"
                    .into(),
            )
        }
        (Some(user), Some(password)) => Some((user.as_str(), password)),
    };
    if login.is_some() && settings.security == SmtpSecurity::None {
        return Err(
            "security none would send the password unencrypted: use security \
             starttls (usually port 587) or tls (usually 465), or remove username and password \
             for a relay that needs no login"
                .into(),
        );
    }
    if settings.ca_file.is_some() && settings.security == SmtpSecurity::None {
        return Err(
            "ca_file is set but security is none, so no certificate is checked: use \
             security starttls or tls, or remove ca_file"
                .into(),
        );
    }
    let from = settings.from.parse::<Mailbox>().map_err(|_| {
        format!(
            "from {:?} is not an email address: {FROM_FORMS}",
            settings.from
        )
    })?;
    if settings.to.is_empty() {
        return Err(format!(
            "to is empty: give at least one recipient; {TO_FORMS}"
        ));
    }
    let to = settings
        .to
        .iter()
        .map(|recipient| {
            recipient.parse::<Mailbox>().map_err(|_| {
                format!(
                    "to: {recipient:?} is not an email address: {TO_FORMS}, one address \
                     per entry"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ValidSettings {
        host,
        port: settings.effective_port(),
        security: settings.security,
        login,
        from,
        to,
        ca_file: settings.ca_file.as_ref(),
    })
}

/// The message as it goes on the wire: `From`, `To` (every recipient), `Subject`, `Date`,
/// `Message-ID`, and the text as a UTF-8 text/plain part.
fn compose(settings: &ValidSettings, message: &EmailMessage) -> Result<Message, ChannelError> {
    let mut builder = Message::builder()
        .from(settings.from.clone())
        .subject(message.subject.clone())
        .message_id(None);
    for recipient in &settings.to {
        builder = builder.to(recipient.clone());
    }
    builder
        .singlepart(SinglePart::plain(message.text.clone()))
        .map_err(|error| ChannelError::permanent(format!("cannot write the email: {error}")))
}

/// The step of an SMTP session an error happened in: it decides the words, and sometimes
/// whether to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    Starttls,
    Login,
    Send,
}

impl Step {
    fn during(self) -> &'static str {
        match self {
            Step::Connect => "when ferry connected",
            Step::Starttls => "during STARTTLS",
            Step::Login => "during the login",
            Step::Send => "while ferry sent the message",
        }
    }
}

/// Runs a session, failing (retryably) after [`SMTP_TIMEOUT`].
async fn within_timeout<T>(
    settings: &ValidSettings<'_>,
    session: impl Future<Output = Result<T, ChannelError>>,
) -> Result<T, ChannelError> {
    match tokio::time::timeout(SMTP_TIMEOUT, session).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ChannelError::retryable(format!(
            "the SMTP server {} did not answer within {} s: check host and port, and that no \
             firewall drops the connection{}",
            settings.server(),
            SMTP_TIMEOUT.as_secs(),
            match settings.security {
                SmtpSecurity::Tls => "",
                _ => "; if the port speaks TLS from the first byte (usually 465), set security tls",
            }
        ))),
    }
}

/// Connects, protects the connection as set, says EHLO and logs in: a session ready for MAIL.
async fn open_session(settings: &ValidSettings<'_>) -> Result<AsyncSmtpConnection, ChannelError> {
    let tls = match settings.security {
        SmtpSecurity::None => None,
        SmtpSecurity::Starttls | SmtpSecurity::Tls => Some(tls_parameters(settings).await?),
    };
    let addresses = resolve(settings).await?;
    let hello = ClientId::default();
    let implicit_tls = match settings.security {
        SmtpSecurity::Tls => tls.clone(),
        SmtpSecurity::Starttls | SmtpSecurity::None => None,
    };
    let mut session =
        AsyncSmtpConnection::connect_tokio1(addresses.as_slice(), None, &hello, implicit_tls, None)
            .await
            .map_err(|error| explain(&error, Step::Connect, settings))?;
    if let (SmtpSecurity::Starttls, Some(tls)) = (settings.security, tls) {
        session
            .starttls(tls, &hello)
            .await
            .map_err(|error| explain(&error, Step::Starttls, settings))?;
    }
    if let Some((user, password)) = settings.login {
        let credentials = Credentials::new(user.to_string(), password.expose().to_string());
        session
            .auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
            .await
            .map_err(|error| explain(&error, Step::Login, settings))?;
    }
    Ok(session)
}

/// How long to wait for the answer to QUIT, once the work is done.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Says QUIT, politely and briefly: the session's work is done whatever the server answers.
async fn quit(mut session: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(QUIT_TIMEOUT, session.quit()).await;
}

/// The public CAs (webpki-roots), plus the one in `ca_file` if set.
async fn tls_parameters(settings: &ValidSettings<'_>) -> Result<TlsParameters, ChannelError> {
    let mut builder = TlsParameters::builder(settings.host.to_string());
    if let Some(path) = settings.ca_file {
        let pem = tokio::fs::read(path).await.map_err(|error| {
            ChannelError::permanent(format!(
                "cannot read ca_file {}: {error}; set ca_file to the PEM file of the CA that \
                 signed the SMTP server's certificate",
                path.display()
            ))
        })?;
        let certificate = Some(&pem)
            .filter(|pem| contains(pem, b"-----BEGIN CERTIFICATE-----"))
            .and_then(|pem| Certificate::from_pem(pem).ok())
            .ok_or_else(|| {
                ChannelError::permanent(format!(
                    "ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----): set it \
                     to the PEM file of the CA that signed the SMTP server's certificate",
                    path.display()
                ))
            })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build_rustls().map_err(|error| {
        ChannelError::permanent(format!(
            "cannot set up TLS for the SMTP server {}: {error}",
            settings.server()
        ))
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The server's addresses, looked up here so that a name that does not resolve has its own
/// message.
async fn resolve(settings: &ValidSettings<'_>) -> Result<Vec<SocketAddr>, ChannelError> {
    let addresses = tokio::net::lookup_host((settings.host, settings.port))
        .await
        .map_err(|error| {
            ChannelError::retryable(format!(
                "cannot find the SMTP server {}: {error}; check host",
                settings.server()
            ))
        })?
        .collect::<Vec<_>>();
    if addresses.is_empty() {
        return Err(ChannelError::retryable(format!(
            "cannot find the SMTP server {}: the name has no address; check host",
            settings.server()
        )));
    }
    Ok(addresses)
}

/// An SMTP error in words a person can act on, and whether trying again may help: a refused
/// or lost connection, a timeout and a 4xx reply may; a TLS failure, a refused login and a 5xx
/// reply will not until someone changes something.
fn explain(
    error: &lettre::transport::smtp::Error,
    step: Step,
    settings: &ValidSettings,
) -> ChannelError {
    let server = settings.server();
    if let Some(tls_error) = find_cause::<rustls::Error>(error) {
        return ChannelError::permanent(explain_tls(tls_error, &server, settings.host));
    }
    if let Some(code) = error.status() {
        let reply = format!("{code} {}", reply_of(error));
        let what = match step {
            Step::Login => "refused the login",
            Step::Send => "refused the message",
            Step::Connect => "refused the connection",
            Step::Starttls => "refused STARTTLS",
        };
        if code.severity == Severity::TransientNegativeCompletion {
            return ChannelError::retryable(format!(
                "the SMTP server {server} {what} for now: {reply}; a temporary refusal, so \
                 trying again later may work"
            ));
        }
        let fix = match (step, code.to_string().as_str()) {
            (Step::Login, _) => format!(
                "check username ({}) and password; a provider with two-step login may want an \
                 app password",
                settings.login.map(|(user, _)| user).unwrap_or_default()
            ),
            (_, "530") => "the server wants a login or STARTTLS first: check security, \
                 username and password"
                .to_string(),
            (Step::Send, _) => "check from (many servers only accept their own addresses) \
                 and to"
                .to_string(),
            (Step::Connect | Step::Starttls, _) => {
                "check host, port and security, or ask the server's administrator".to_string()
            }
        };
        return ChannelError::permanent(format!("the SMTP server {server} {what}: {reply}; {fix}"));
    }
    if error.is_timeout() {
        return ChannelError::retryable(format!(
            "the SMTP server {server} did not answer in time {}; check host and port",
            step.during()
        ));
    }
    if let Some(io_error) = find_cause::<std::io::Error>(error) {
        if io_error.kind() == std::io::ErrorKind::ConnectionRefused {
            return ChannelError::retryable(format!(
                "cannot connect to the SMTP server {server}: connection refused, nothing \
                 listens on that port; check host and port, and that the server runs"
            ));
        }
        if step == Step::Connect && !error.is_response() {
            return ChannelError::retryable(format!(
                "cannot connect to the SMTP server {server}: {io_error}; check host and port"
            ));
        }
    }
    if error.is_client() {
        let message = match step {
            Step::Starttls => format!(
                "the SMTP server {server} does not offer STARTTLS: if its port speaks TLS from \
                 the first byte (usually 465) set security tls; use security none only for a \
                 local relay"
            ),
            Step::Login => format!(
                "the SMTP server {server} offers no login ferry can use (AUTH PLAIN or LOGIN) \
                 on this connection: remove username and password if it needs no login, or \
                 check security ({})",
                settings.security.setting()
            ),
            Step::Connect | Step::Send => {
                format!("cannot send to the SMTP server {server}: {error}")
            }
        };
        return ChannelError::permanent(message);
    }
    if error.is_response() {
        return ChannelError::permanent(format!(
            "the server at {server} does not answer as an SMTP server should ({error}): check \
             port and security ({})",
            settings.security.setting()
        ));
    }
    ChannelError::retryable(format!(
        "the connection to the SMTP server {server} broke {}: {error}",
        step.during()
    ))
}

fn explain_tls(error: &rustls::Error, server: &str, host: &str) -> String {
    use rustls::CertificateError;
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "the SMTP server {server} has a certificate that no trusted CA signed ({error}): set \
             ca_file to the PEM file of the CA that signed it, or give the server a \
             certificate from a public CA"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the SMTP server {server} has a certificate that is not for the name {host} \
             ({error}): set host to a name the certificate holds"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!(
            "the SMTP server {server} has an expired certificate ({error}): the server needs a \
             new certificate"
        ),
        _ => format!(
            "the TLS handshake with the SMTP server {server} failed ({error}): check security, \
             tls for a port that speaks TLS from the first byte (usually 465), starttls for one \
             that starts in plain text (usually 587)"
        ),
    }
}

/// The first error of type `E` in `error`'s chain of causes, looking inside `std::io::Error`s
/// too (whose `source` skips the error they wrap, where tokio-rustls keeps rustls' error).
fn find_cause<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(cause) = current {
        if let Some(found) = cause.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(wrapped) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(found) = wrapped.downcast_ref::<E>() {
                return Some(found);
            }
        }
        current = cause.source();
    }
    None
}

/// The text of a negative reply (lettre keeps it as the error's source).
fn reply_of(error: &lettre::transport::smtp::Error) -> String {
    error
        .source()
        .map(|source| source.to_string())
        .unwrap_or_default()
}

/// `250 2.0.0 Ok: queued as …`: the code and the reply's lines.
fn reply_text(response: &Response) -> String {
    let lines = response.message().collect::<Vec<_>>();
    format!("{} {}", response.code(), lines.join(" "))
}

/// The error with every copy of the password cut out, in case a server echoed it.
fn without_password(mut error: ChannelError, settings: &EmailSettings) -> ChannelError {
    if let Some(password) = &settings.password {
        if !password.expose().is_empty() {
            error.message = error.message.replace(password.expose(), "…");
        }
    }
    error
}
