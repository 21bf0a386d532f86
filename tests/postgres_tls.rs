//! End-to-end: PostgreSQL over TLS, with libpq's `sslmode` and `sslrootcert`, against throwaway
//! servers the tests start: one that accepts only TLS (a certificate for `localhost` signed by
//! a CA made for it), one without TLS. Every failure is read as the user reads it, and never
//! shows the password.

mod common;

use common::{people_sql, postgres_execute, Scene};
use ferry_testkit::{Listen, PgServer, TCP_PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_reads_a_warehouse_that_only_accepts_tls() {
    let pg = start(Listen::TcpTlsOnly).await;
    seed_people(&pg, 12).await;
    let scene = Scene::new().await;
    scene.connect_stripe(&[]).await;

    // Plain TCP is refused by the server itself (hostnossl … reject), and the message says
    // which sslmode to use.
    let plain = connect(
        &scene,
        "plain",
        &pg.tcp_url("localhost", "warehouse", "sslmode=disable"),
    )
    .await;
    check(
        plain,
        Err(
            "over TLS: the server accepts only encrypted connections (pg_hba.conf rejects \
             connection for host \"127.0.0.1\", user \"postgres\", database \"warehouse\", no \
             encryption); use sslmode=require, verify-ca or verify-full instead of \
             sslmode=disable",
        ),
        "sslmode=disable",
    );

    let url = pg.tcp_url(
        "localhost",
        "warehouse",
        &format!("sslmode=verify-full&sslrootcert={}", ca(&pg)),
    );
    scene
        .ferry(&["connect", "postgres", "warehouse", "--url", &url])
        .await
        .ok();
    scene
        .ferry(&[
            "model",
            "create",
            "people",
            "--connection",
            "warehouse",
            "--sql",
            // Each row says whether its session is encrypted, as the server sees it.
            "select people.*, (select ssl from pg_stat_ssl where pid = pg_backend_pid()) as tls \
             from people order by id",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "people-to-stripe",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "name=name",
            "--map",
            "tls=metadata.tls",
        ])
        .await
        .ok();
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["created"], 12, "{run}");
    let customers = scene.stripe().customers();
    assert_eq!(customers.len(), 12);
    let seven = &scene.customers_with_email("person7@example.com")[0];
    assert_eq!(seven["name"], "Person 7");
    assert_eq!(seven["metadata"]["tls"], "true", "{seven}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_checks_what_libpq_checks_of_the_certificate() {
    let pg = start(Listen::TcpTlsOnly).await;
    seed_people(&pg, 1).await;
    let scene = Scene::new().await;
    let ca = ca(&pg);
    // The certificate names `localhost`, not 127.0.0.1.
    let cases: &[(&str, String, Result<(), &str>)] = &[
        // require: encrypted, the certificate not checked (any host, no CA).
        ("127.0.0.1", "sslmode=require".into(), Ok(())),
        // prefer (the default) takes TLS when the server offers it.
        ("127.0.0.1", String::new(), Ok(())),
        // verify-ca: the chain, not the host name.
        (
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            Ok(()),
        ),
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            Ok(()),
        ),
        (
            "localhost",
            "sslmode=verify-full".into(),
            Err(
                "over TLS: the server's certificate is not signed by a certificate authority \
                 ferry trusts (unknown issuer); pass the server's CA certificate with \
                 sslrootcert=PATH",
            ),
        ),
        (
            "localhost",
            "sslmode=verify-ca".into(),
            Err("pass the server's CA certificate with sslrootcert=PATH"),
        ),
        (
            "127.0.0.1",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            Err(
                "over TLS: the server's certificate is not valid for the host name \
                 `127.0.0.1` (sslmode=verify-full checks it); connect with a host name the \
                 certificate names, or use sslmode=verify-ca to check only who signed it",
            ),
        ),
        // require with sslrootcert checks the chain, as libpq does: here a CA that did not
        // sign the server's certificate (the server's own certificate is no CA).
        (
            "localhost",
            format!(
                "sslmode=require&sslrootcert={}",
                pg.socket_dir().join("data/server.crt").display()
            ),
            Err("is not signed by the CA certificate in sslrootcert="),
        ),
        // prefer, as libpq, tries plain after a failed TLS handshake; this server refuses
        // plain, so the handshake's failure is what is reported.
        (
            "localhost",
            format!(
                "sslmode=prefer&sslrootcert={}",
                pg.socket_dir().join("data/server.crt").display()
            ),
            Err("is not signed by the CA certificate in sslrootcert="),
        ),
        (
            "localhost",
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem".into(),
            Err(
                "over TLS: cannot read the root certificate sslrootcert=/nonexistent/ca.pem: \
                 No such file or directory (os error 2); give the path of a readable PEM file \
                 holding the server's CA certificate",
            ),
        ),
        (
            "localhost",
            "sslmode=verify_full".into(),
            Err(
                "sslmode `verify_full` is not one of disable, prefer, require, verify-ca, \
                 verify-full",
            ),
        ),
    ];
    for (index, (host, parameters, expected)) in cases.iter().enumerate() {
        let url = pg.tcp_url(host, "warehouse", parameters);
        let connected = connect(&scene, &format!("case{index}"), &url).await;
        check(connected, *expected, &format!("{host} ?{parameters}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_only_when_tls_is_required() {
    let pg = start(Listen::Tcp).await;
    seed_people(&pg, 1).await;
    let scene = Scene::new().await;
    let refused = "over TLS: the server does not accept TLS, which sslmode=require requires; \
                   use sslmode=prefer or disable, or turn on ssl on the server";
    let cases: &[(&str, Result<(), &str>)] = &[
        ("sslmode=require", Err(refused)),
        (
            "sslmode=verify-full",
            Err("the server does not accept TLS, which sslmode=verify-full requires"),
        ),
        // prefer falls back to plain; so does its absence (prefer is the default).
        ("sslmode=prefer", Ok(())),
        ("", Ok(())),
        ("sslmode=disable", Ok(())),
    ];
    for (index, (parameters, expected)) in cases.iter().enumerate() {
        let url = pg.tcp_url("localhost", "warehouse", parameters);
        let connected = connect(&scene, &format!("case{index}"), &url).await;
        check(connected, *expected, &format!("?{parameters}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_can_live_on_a_postgres_that_only_accepts_tls() {
    let pg = start(Listen::TcpTlsOnly).await;
    pg.create_database("ferry_state").unwrap();

    // Without the CA, verify-full stops at once and says why, without the password.
    let mut scene = Scene::new().await;
    scene.env.push((
        "FERRY_STATE_URL".into(),
        pg.tcp_url("localhost", "ferry_state", "sslmode=verify-full"),
    ));
    let refused = scene.ferry(&["connections"]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "over TLS: the server's certificate is not signed by a certificate authority ferry \
             trusts"
        ),
        "{}",
        refused.stderr
    );
    assert_no_password(&refused);

    scene.env = vec![(
        "FERRY_STATE_URL".into(),
        pg.tcp_url(
            "localhost",
            "ferry_state",
            &format!("sslmode=verify-full&sslrootcert={}", ca(&pg)),
        ),
    )];
    scene.warehouse_sql(&people_sql(5));
    scene.connect().await;
    scene.email_sync(&[]).await;
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["created"], 5, "{run}");
    assert!(!scene.workspace().join("ferry.db").exists());
    // The run is in PostgreSQL: a second run finds every record unchanged.
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["unchanged"], 5, "{run}");
}

/// Redshift is PostgreSQL's protocol with other defaults: TLS with the certificate and host name
/// checked unless the URL says otherwise. (Its port, 5439, is the default of a URL without one:
/// a unit test of `ferry_postgres_connect::Defaults::REDSHIFT`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redshift_connection_verifies_tls_by_default_and_syncs() {
    let pg = start(Listen::TcpTlsOnly).await;
    seed_people(&pg, 4).await;
    let scene = Scene::new().await;
    scene.connect_stripe(&[]).await;

    // No sslmode: verify-full, so a certificate no trusted authority signed is refused.
    let refused = scene
        .ferry(&[
            "connect",
            "redshift",
            "cluster",
            "--url",
            &pg.tcp_url("localhost", "warehouse", ""),
        ])
        .await;
    assert_no_password(&refused);
    assert!(
        refused.stderr.contains(
            "over TLS: the server's certificate is not signed by a certificate authority ferry \
             trusts"
        ),
        "{}",
        refused.stderr
    );
    // Change detection writes with INSERT … ON CONFLICT, which Redshift lacks: not offered.
    let unsupported = scene
        .ferry(&[
            "connect",
            "redshift",
            "cluster",
            "--url",
            &pg.tcp_url("localhost", "warehouse", ""),
            "--change-detection-schema",
            "ferry",
        ])
        .await;
    assert_eq!(unsupported.code, 2, "{}", unsupported.stderr);
    assert!(
        unsupported.stderr.contains("--change-detection-schema"),
        "{}",
        unsupported.stderr
    );

    // With the cluster's CA (and still no sslmode): verified, and the sync reads over TLS.
    let url = pg.tcp_url(
        "localhost",
        "warehouse",
        &format!("sslrootcert={}", ca(&pg)),
    );
    scene
        .ferry(&["connect", "redshift", "cluster", "--url", &url])
        .await
        .ok();
    let listed = scene.ferry(&["connections"]).await.ok();
    assert!(
        listed.stdout.contains("cluster  redshift"),
        "{}",
        listed.stdout
    );
    scene
        .ferry(&[
            "model",
            "create",
            "people",
            "--connection",
            "cluster",
            "--sql",
            "select people.*, (select ssl from pg_stat_ssl where pid = pg_backend_pid()) as tls \
             from people order by id",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "people-to-stripe",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "tls=metadata.tls",
        ])
        .await
        .ok();
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["created"], 4, "{run}");
    let customers = scene.stripe().customers();
    assert_eq!(customers.len(), 4);
    assert!(
        customers
            .iter()
            .all(|customer| customer["metadata"]["tls"] == "true"),
        "every row was read over TLS: {customers:?}"
    );

    // A server without TLS is refused, since the default requires it.
    let plain = start(Listen::Tcp).await;
    seed_people(&plain, 1).await;
    let refused = scene
        .ferry(&[
            "connect",
            "redshift",
            "plain",
            "--url",
            &plain.tcp_url("localhost", "warehouse", ""),
        ])
        .await;
    assert!(
        refused
            .stderr
            .contains("the server does not accept TLS, which sslmode=verify-full requires"),
        "{}",
        refused.stderr
    );
}

async fn start(listen: Listen) -> PgServer {
    tokio::task::spawn_blocking(move || PgServer::start_with(listen).expect("PostgreSQL starts"))
        .await
        .unwrap()
}

/// A `warehouse` database with `count` people (id, email, name), written through the socket.
async fn seed_people(pg: &PgServer, count: u32) {
    let url = pg.create_database("warehouse").unwrap();
    postgres_execute(
        &url,
        &format!(
            "create table people as select i as id, 'person' || i || '@example.com' as email, \
             'Person ' || i as name from generate_series(1, {count}) i"
        ),
    )
    .await;
}

fn ca(pg: &PgServer) -> String {
    pg.ca_certificate()
        .expect("a TLS server has a CA")
        .display()
        .to_string()
}

/// `ferry connect postgres NAME --url URL`, which tests the connection: `Err(stderr)` if it
/// failed. The password is in neither output either way.
async fn connect(scene: &Scene, name: &str, url: &str) -> Result<(), String> {
    let ran = scene
        .ferry(&["connect", "postgres", name, "--url", url])
        .await;
    assert_no_password(&ran);
    if ran.code == 0 {
        Ok(())
    } else {
        Err(ran.stderr)
    }
}

/// A connection that should work worked; one that should fail failed with `expected` in its
/// message.
#[track_caller]
fn check(connected: Result<(), String>, expected: Result<(), &str>, case: &str) {
    match (&connected, expected) {
        (Ok(()), Ok(())) => {}
        (Err(stderr), Err(part)) if stderr.contains(part) => {}
        _ => panic!("{case}: expected {expected:?}, got {connected:?}"),
    }
}

#[track_caller]
fn assert_no_password(ran: &common::Ran) {
    assert!(
        !ran.stdout.contains(TCP_PASSWORD) && !ran.stderr.contains(TCP_PASSWORD),
        "the password was printed:\n{}\n{}",
        ran.stdout,
        ran.stderr
    );
}
