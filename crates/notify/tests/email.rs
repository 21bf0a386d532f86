//! The email channel against a real SMTP server: aiosmtpd, started by the testkit for each
//! test with the TLS and login it needs, keeps every message as it received it. Errors are
//! checked for what a person reads (the server, the fix), whether ferry tries again, and that
//! they never hold the password.

use expect_test::{expect, Expect};
use ferry_core::Secret;
use ferry_notify::email::{
    check_email_settings, send_email, test_email, EmailMessage, EmailSettings, SmtpSecurity,
};
use ferry_notify::ChannelError;
use ferry_testkit::{SmtpOptions, SmtpServer, SmtpServerSecurity};

const USER: &str = "alerts";
const PASSWORD: &str = "smtp-secret-7f3e91";

/// A server with `security`, requiring the login USER / PASSWORD when `login` is true.
fn start_server(security: SmtpServerSecurity, login: bool) -> SmtpServer {
    SmtpServer::start(SmtpOptions {
        security,
        auth: login.then(|| (USER.to_string(), PASSWORD.to_string())),
    })
    .expect("the SMTP server starts")
}

/// Settings that reach `server` at `localhost` (the name on its certificate), trust its CA, and
/// log in as USER / PASSWORD; two recipients, one with a name.
fn settings_for(server: &SmtpServer, security: SmtpSecurity) -> EmailSettings {
    EmailSettings {
        host: "localhost".into(),
        port: Some(server.port()),
        security,
        username: Some(USER.into()),
        password: Some(Secret::new(PASSWORD)),
        from: "ferry <ferry@example.com>".into(),
        to: vec![
            "ops@example.com".into(),
            "Dana Díaz <dana@example.org>".into(),
        ],
        ca_file: Some(server.ca_certificate().to_path_buf()),
    }
}

fn without_login(settings: EmailSettings) -> EmailSettings {
    EmailSettings {
        username: None,
        password: None,
        ..settings
    }
}

/// Not ASCII on purpose: the subject and text must reach the reader as written.
fn notice() -> EmailMessage {
    EmailMessage {
        subject: "Sync “customers” failed".into(),
        text: "The sync customers failed at 10:02 UTC.\nStripe answered 401: café key revoked.\n"
            .into(),
    }
}

/// Sends `notice()` and checks that the server got it, as written, once.
async fn check_delivered(server: &SmtpServer, settings: &EmailSettings) {
    let answer = send_email(settings, &notice())
        .await
        .expect("the email is sent");
    assert_eq!(answer, "250 2.0.0 Ok: queued as 1");
    let messages = server.messages().unwrap();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let received = &messages[0];
    assert_eq!(received.from, "ferry <ferry@example.com>");
    assert_eq!(
        received.to,
        ["ops@example.com", "Dana Díaz <dana@example.org>"]
    );
    assert_eq!(received.subject, "Sync “customers” failed");
    assert_eq!(received.body.trim_end(), notice().text.trim_end());
    assert_eq!(received.envelope_from, "ferry@example.com");
    assert_eq!(
        received.envelope_to,
        ["ops@example.com", "dana@example.org"]
    );
}

/// The error a failed send gave, checked never to hold the password.
async fn send_error(settings: &EmailSettings) -> ChannelError {
    let error = send_email(settings, &notice())
        .await
        .expect_err("the send fails");
    assert!(
        !error.message.contains(PASSWORD),
        "the error holds the password: {error:?}"
    );
    if let Some(password) = &settings.password {
        assert!(
            !error.message.contains(password.expose()),
            "the error holds the password: {error:?}"
        );
    }
    error
}

#[tokio::test]
async fn starttls_with_login_delivers_to_every_recipient() {
    let server = start_server(SmtpServerSecurity::Starttls, true);
    check_delivered(&server, &settings_for(&server, SmtpSecurity::Starttls)).await;
}

#[tokio::test]
async fn implicit_tls_with_login_delivers() {
    let server = start_server(SmtpServerSecurity::Tls, true);
    check_delivered(&server, &settings_for(&server, SmtpSecurity::Tls)).await;
}

#[tokio::test]
async fn a_plain_relay_without_login_delivers() {
    let server = start_server(SmtpServerSecurity::Plain, false);
    let settings = EmailSettings {
        ca_file: None,
        ..without_login(settings_for(&server, SmtpSecurity::None))
    };
    check_delivered(&server, &settings).await;
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_never_printed() {
    let server = start_server(SmtpServerSecurity::Starttls, true);
    let settings = EmailSettings {
        password: Some(Secret::new("wrong-password-91c2")),
        ..settings_for(&server, SmtpSecurity::Starttls)
    };
    let error = send_error(&settings).await;
    let port = server.port();
    assert_eq!(
        error,
        ChannelError::permanent(format!(
            "the SMTP server localhost:{port} refused the login: 535 5.7.8 Authentication \
             credentials invalid; check username (alerts) and password; a provider with \
             two-step login may want an app password"
        ))
    );
    assert!(server.messages().unwrap().is_empty());
}

#[tokio::test]
async fn nothing_listening_is_retryable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let settings = EmailSettings {
        host: "127.0.0.1".into(),
        port: Some(port),
        security: SmtpSecurity::None,
        ..without_login(placeholder_settings())
    };
    let error = send_error(&settings).await;
    assert_eq!(
        error,
        ChannelError::retryable(format!(
            "cannot connect to the SMTP server 127.0.0.1:{port}: connection refused, nothing \
             listens on that port; check host and port, and that the server runs"
        ))
    );
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_asks_for_ca_file() {
    let server = start_server(SmtpServerSecurity::Starttls, true);
    let settings = EmailSettings {
        ca_file: None,
        ..settings_for(&server, SmtpSecurity::Starttls)
    };
    let error = send_error(&settings).await;
    let port = server.port();
    assert_eq!(
        error,
        ChannelError::permanent(format!(
            "the SMTP server localhost:{port} has a certificate that no trusted CA signed \
             (invalid peer certificate: UnknownIssuer): set ca_file to the PEM file of the CA \
             that signed it, or give the server a certificate from a public CA"
        ))
    );
}

#[tokio::test]
async fn a_ca_file_that_cannot_be_read_is_named() {
    let settings = EmailSettings {
        ca_file: Some("/nonexistent/ferry-ca.pem".into()),
        ..placeholder_settings()
    };
    let error = send_error(&settings).await;
    assert_eq!(
        error,
        ChannelError::permanent(
            "cannot read ca_file /nonexistent/ferry-ca.pem: No such file or directory (os error \
             2); set ca_file to the PEM file of the CA that signed the SMTP server's certificate"
        )
    );
}

#[tokio::test]
async fn starttls_to_a_server_without_it_is_permanent() {
    let server = start_server(SmtpServerSecurity::Plain, false);
    let settings = without_login(settings_for(&server, SmtpSecurity::Starttls));
    let error = send_error(&settings).await;
    let port = server.port();
    assert_eq!(
        error,
        ChannelError::permanent(format!(
            "the SMTP server localhost:{port} does not offer STARTTLS: if its port speaks TLS \
             from the first byte (usually 465) set security tls; use security none only for a \
             local relay"
        ))
    );
}

#[tokio::test]
async fn tls_to_a_port_that_starts_in_plain_text_is_permanent() {
    let server = start_server(SmtpServerSecurity::Starttls, true);
    let error = send_error(&settings_for(&server, SmtpSecurity::Tls)).await;
    let port = server.port();
    assert_eq!(
        error,
        ChannelError::permanent(format!(
            "the TLS handshake with the SMTP server localhost:{port} failed (received corrupt \
             message of type InvalidContentType): check security, tls for a port that speaks \
             TLS from the first byte (usually 465), starttls for one that starts in plain text \
             (usually 587)"
        ))
    );
}

#[tokio::test]
async fn a_recipient_refused_for_good_is_permanent_and_nothing_is_sent() {
    let server = start_server(SmtpServerSecurity::Starttls, true);
    let settings = EmailSettings {
        to: vec!["ops@example.com".into(), "gone@refused.example".into()],
        ..settings_for(&server, SmtpSecurity::Starttls)
    };
    let error = send_error(&settings).await;
    let port = server.port();
    assert_eq!(
        error,
        ChannelError::permanent(format!(
            "the SMTP server localhost:{port} refused the message: 550 5.1.1 \
             <gone@refused.example>: Recipient address rejected: User unknown; check from \
             (many servers only accept their own addresses) and to"
        ))
    );
    assert!(server.messages().unwrap().is_empty());
}

#[tokio::test]
async fn a_recipient_deferred_by_the_server_is_retryable() {
    let server = start_server(SmtpServerSecurity::Tls, true);
    let settings = EmailSettings {
        to: vec!["later@deferred.example".into()],
        ..settings_for(&server, SmtpSecurity::Tls)
    };
    let error = send_error(&settings).await;
    let port = server.port();
    assert_eq!(
        error,
        ChannelError::retryable(format!(
            "the SMTP server localhost:{port} refused the message for now: 451 4.3.0 \
             <later@deferred.example>: Temporary lookup failure, try again later; a temporary \
             refusal, so trying again later may work"
        ))
    );
}

#[tokio::test]
async fn the_connection_test_logs_in_and_sends_nothing() {
    let server = start_server(SmtpServerSecurity::Starttls, true);
    test_email(&settings_for(&server, SmtpSecurity::Starttls))
        .await
        .expect("the connection test passes");
    assert!(server.messages().unwrap().is_empty());
}

#[tokio::test]
async fn the_connection_test_fails_on_a_wrong_password() {
    let server = start_server(SmtpServerSecurity::Tls, true);
    let settings = EmailSettings {
        password: Some(Secret::new("wrong-password-91c2")),
        ..settings_for(&server, SmtpSecurity::Tls)
    };
    let error = test_email(&settings).await.expect_err("the test fails");
    assert!(!error.retryable, "{error:?}");
    assert!(error.message.contains("refused the login"), "{error:?}");
    assert!(!error.message.contains("wrong-password-91c2"), "{error:?}");
}

/// Settings that `check_email_settings` accepts, for the table below to change one thing.
fn placeholder_settings() -> EmailSettings {
    EmailSettings {
        host: "smtp.example.com".into(),
        port: None,
        security: SmtpSecurity::Starttls,
        username: Some(USER.into()),
        password: Some(Secret::new(PASSWORD)),
        from: "ferry <ferry@example.com>".into(),
        to: vec!["ops@example.com".into()],
        ca_file: None,
    }
}

/// `ok` or the error of `check_email_settings` for the placeholder settings as `change` left them.
fn check_settings(change: impl FnOnce(&mut EmailSettings), expected: Expect) {
    let mut settings = placeholder_settings();
    change(&mut settings);
    let outcome = match check_email_settings(&settings) {
        Ok(()) => "ok".to_string(),
        Err(message) => message,
    };
    expected.assert_eq(&outcome);
}

#[test]
fn settings_are_checked_without_io() {
    check_settings(|_| {}, expect!["ok"]);
    check_settings(|s| *s = without_login(s.clone()), expect!["ok"]);
    check_settings(
        |s| s.host = " ".into(),
        expect!["host is empty: set it to the SMTP server's name, like smtp.example.com"],
    );
    check_settings(
        |s| s.host = "smtp://smtp.example.com".into(),
        expect![[
            r#"host "smtp://smtp.example.com" is not a server name: give only the name, like smtp.example.com (no smtp:// and no spaces)"#
        ]],
    );
    check_settings(
        |s| s.host = "smtp.example.com:587".into(),
        expect![[
            r#"host "smtp.example.com:587" is not a server name: put the port in the port setting, not in host"#
        ]],
    );
    check_settings(|s| s.host = "::1".into(), expect!["ok"]);
    check_settings(|s| s.port = Some(0), expect!["port 0 is not a port: set port to the SMTP server's port, or leave it out for the usual one (587 for security starttls)"]);
    check_settings(|s| s.username = None, expect!["password is set without username: set username too (the SMTP login), or remove password if the server needs no login"]);
    check_settings(
        |s| s.password = None,
        expect![[
            r#"username "alerts" is set without password: set password too, or remove username if the server needs no login"#
        ]],
    );
    check_settings(|s| s.username = Some("".into()), expect!["username is empty: set it to the SMTP login, or remove username and password if the server needs no login"]);
    check_settings(|s| s.security = SmtpSecurity::None, expect!["security none would send the password unencrypted: use security starttls (usually port 587) or tls (usually 465), or remove username and password for a relay that needs no login"]);
    check_settings(
        |s| {
            *s = without_login(s.clone());
            s.security = SmtpSecurity::None;
            s.ca_file = Some("ca.pem".into());
        },
        expect!["ca_file is set but security is none, so no certificate is checked: use security starttls or tls, or remove ca_file"],
    );
    check_settings(
        |s| s.from = "ferry".into(),
        expect![[
            r#"from "ferry" is not an email address: write it as ferry@example.com or "ferry <ferry@example.com>""#
        ]],
    );
    check_settings(
        |s| s.to = vec![],
        expect![[
            r#"to is empty: give at least one recipient; write each as ops@example.com or "Ops team <ops@example.com>""#
        ]],
    );
    check_settings(
        |s| s.to = vec!["a@example.com, b@example.com".into()],
        expect![[
            r#"to: "a@example.com, b@example.com" is not an email address: write each as ops@example.com or "Ops team <ops@example.com>", one address per entry"#
        ]],
    );
    check_settings(
        |s| s.from = "Ferry Alerts <alerts@example.com>".into(),
        expect!["ok"],
    );
}

#[test]
fn the_usual_ports() {
    let ports = [
        SmtpSecurity::Starttls,
        SmtpSecurity::Tls,
        SmtpSecurity::None,
    ]
    .map(SmtpSecurity::default_port);
    assert_eq!(ports, [587, 465, 25]);
}
