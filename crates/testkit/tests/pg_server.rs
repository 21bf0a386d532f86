//! Tests of the throwaway PostgreSQL server: it starts, answers, survives a restart, runs next
//! to other servers and leaves nothing behind.

use ferry_testkit::{Listen, PgServer};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn server_answers_queries_and_survives_a_restart() {
    let server = PgServer::start().expect("start PostgreSQL");
    let socket_dir = server.socket_dir().to_path_buf();
    assert_eq!(select_one(&server.url()).await, 1);
    assert_eq!(
        query_text(&server.url(), "SHOW server_version").await[..3],
        *"15."
    );
    assert_eq!(query_text(&server.url(), "SHOW fsync").await, "off");
    // Nothing listens on TCP: the only way in is the socket in the temporary directory.
    assert_eq!(query_text(&server.url(), "SHOW listen_addresses").await, "");

    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .expect("connect before restart");
    let connection_task = tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)")
        .await
        .expect("write before restart");

    server.restart().expect("restart PostgreSQL");

    // The old session was cut by the restart; a new one sees the data written before it.
    assert!(client.simple_query("SELECT 1").await.is_err());
    let _ = connection_task.await;
    assert_eq!(
        query_text(&server.url(), "SELECT id::text FROM kept").await,
        "42"
    );

    server.stop().expect("stop PostgreSQL");
    assert!(
        !socket_dir.exists(),
        "{} was not removed",
        socket_dir.display()
    );
}

#[tokio::test]
async fn create_database_returns_a_url_for_the_new_database() {
    let server = PgServer::start().expect("start PostgreSQL");
    let url = server
        .create_database("second_db")
        .expect("create database");
    assert_eq!(url, server.url_for_db("second_db"));
    assert_eq!(
        query_text(&url, "SELECT current_database()::text").await,
        "second_db"
    );
    let error = server.create_database("Bad-Name").unwrap_err().to_string();
    assert_eq!(
        error,
        "database name \"Bad-Name\" must be 1-63 characters of [a-z0-9_]"
    );
}

#[tokio::test]
async fn several_servers_run_side_by_side() {
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(PgServer::start);
        let second = scope.spawn(PgServer::start);
        (first.join().unwrap(), second.join().unwrap())
    });
    let (first, second) = (first.expect("first server"), second.expect("second server"));
    assert_ne!(first.socket_dir(), second.socket_dir());
    assert_eq!(select_one(&first.url()).await, 1);
    assert_eq!(select_one(&second.url()).await, 1);
    let first_dir = first.socket_dir().to_path_buf();
    drop(first);
    assert!(!first_dir.exists());
    // Stopping one server leaves the other untouched.
    assert_eq!(select_one(&second.url()).await, 1);
}

/// A server held by a process that is SIGKILLed (so no destructor runs) is still stopped and
/// its directory removed, by the watchdog. The test re-runs itself as that child process.
#[test]
fn server_of_a_killed_process_is_cleaned_up() {
    const CHILD_ENV: &str = "FERRY_TESTKIT_HOLD_SERVER_AND_WAIT";
    if std::env::var_os(CHILD_ENV).is_some() {
        let server = PgServer::start().expect("start PostgreSQL in the child");
        println!("SOCKET_DIR={}", server.socket_dir().display());
        std::thread::sleep(Duration::from_secs(120));
        return;
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "server_of_a_killed_process_is_cleaned_up",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let socket_dir = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("SOCKET_DIR=").map(PathBuf::from))
        .expect("the child prints its socket directory");
    let postmaster_pid = read_postmaster_pid(&socket_dir.join("data"));
    assert!(process_is_alive(postmaster_pid));

    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while (socket_dir.exists() || process_is_alive(postmaster_pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !socket_dir.exists(),
        "{} was left behind",
        socket_dir.display()
    );
    assert!(
        !process_is_alive(postmaster_pid),
        "postgres {postmaster_pid} still runs"
    );
}

#[tokio::test]
async fn a_tls_server_has_its_certificates_and_listens_on_loopback() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = PgServer::start_with(Listen::TcpTlsOnly).expect("start PostgreSQL with TLS");
    assert_eq!(query_text(&server.url(), "SHOW ssl").await, "on");
    assert_eq!(
        query_text(&server.url(), "SHOW listen_addresses").await,
        "127.0.0.1"
    );
    let data_dir = server.socket_dir().join("data");
    let key_mode = std::fs::metadata(data_dir.join("server.key"))
        .expect("server.key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let ca = std::fs::read_to_string(server.ca_certificate().expect("a CA")).expect("ca.pem");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert!(
        server
            .tcp_url("localhost", "ferry_test", "sslmode=require")
            .ends_with(&format!(":{}/ferry_test?sslmode=require", server.port())),
        "{}",
        server.tcp_url("localhost", "ferry_test", "sslmode=require")
    );
    assert_eq!(PgServer::start().unwrap().ca_certificate(), None);
}

async fn select_one(url: &str) -> i32 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client.query_one("SELECT 1", &[]).await.unwrap().get(0)
}

async fn query_text(url: &str, sql: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

fn read_postmaster_pid(data_dir: &Path) -> u32 {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).expect("postmaster.pid");
    text.lines().next().unwrap().trim().parse().unwrap()
}

fn process_is_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}
