//! End-to-end: alerts and lifecycle events, from runs of the real `ferry` binary to real
//! receivers started here: an HTTP server standing for a webhook receiver and for Slack's
//! incoming webhooks, and an SMTP server (Python's aiosmtpd) for email. What they received is
//! checked: the events, their signatures, one notice per change of state, the retries of a
//! receiver that was down, and that no secret shows in anything ferry printed.

mod common;

use common::{people_sql, Scene};
use ferry_testkit::{ReceivedEmail, SmtpOptions, SmtpServer, SmtpServerSecurity};
use hmac::{Hmac, Mac};
use serde_json::Value as Json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIGNING_SECRET: &str = "whsec_test_5b2a9c0e7d41f3";
const SLACK_PATH: &str = "/services/T0001/B0001/slacksecret93f1";
const SMTP_PASSWORD: &str = "smtp-pass-7c1e";

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Json {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A local HTTP server that keeps every request and answers 200, or 503 at `/hook` while told
/// to fail.
struct Receiver {
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
    failures_left: Arc<AtomicU32>,
}

impl Receiver {
    async fn start() -> Receiver {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let failures_left = Arc::new(AtomicU32::new(0));
        let (kept, failing) = (received.clone(), failures_left.clone());
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (kept, failing) = (kept.clone(), failing.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                kept.lock().unwrap().push(Received {
                    path: parts.uri.path().to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let fail = parts.uri.path() == "/hook"
                    && failing
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                            left.checked_sub(1)
                        })
                        .is_ok();
                if fail {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "down for a moment",
                    )
                } else {
                    (axum::http::StatusCode::OK, "ok")
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            base,
            received,
            failures_left,
        }
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The event types received at `path`, in order (a repeated attempt once per attempt).
    fn types_at(&self, path: &str) -> Vec<String> {
        self.at(path)
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn slack_texts(&self) -> Vec<String> {
        self.at(SLACK_PATH)
            .iter()
            .map(|r| r.json()["text"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

fn check_signature(request: &Received) {
    let header = request.header("ferry-signature").expect("a signature");
    let (t, v1) = header
        .split_once(',')
        .map(|(t, v)| {
            (
                t.strip_prefix("t=").unwrap(),
                v.strip_prefix("v1=").unwrap(),
            )
        })
        .expect("t=…,v1=…");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", request.body).as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the signature is the body's HMAC with the signing secret");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..120).contains(&age), "signed {age} s ago");
}

/// `GET /api/v1/deliveries` of the sync, from a blocking thread (the test's runtime serves the
/// receivers).
fn api_deliveries(served: &common::Served) -> Vec<Json> {
    let url = served.url("/api/v1/deliveries?sync=people-to-stripe");
    let token = served.token.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let answer: Json = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["deliveries"].as_array().cloned().unwrap_or_default()
        })
    })
    .join()
    .unwrap()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scene with a people model (4 rows, one with a bad email), a webhook that takes every
/// event but `sync.started`, a Slack channel and an email channel, and a sync that alerts
/// Slack and email when over 10% of rows are rejected.
async fn scene_with_channels(receiver: &Receiver, smtp: &SmtpServer) -> Scene {
    let mut scene = Scene::new().await;
    scene
        .env
        .push(("SMTP_PASSWORD".to_string(), SMTP_PASSWORD.to_string()));
    scene
        .env
        .push(("FERRY_DELIVERY_RETRIES".to_string(), "1,1,1".to_string()));
    scene.warehouse_sql(&people_sql(4));
    scene.warehouse_sql("update people set email = 'not an email' where id = 2");
    scene.connect().await;
    let hook_url = format!("{}/hook", receiver.base);
    scene
        .ferry(&[
            "connect",
            "webhook",
            "hooks",
            "--url",
            &hook_url,
            "--signing-secret",
            SIGNING_SECRET,
            "--events",
            "sync.completed, sync.failed, sync.alert.raised, sync.alert.resolved",
        ])
        .await
        .ok();
    // A second webhook with every event (the default), `sync.started` included.
    let all_url = format!("{}/all", receiver.base);
    scene
        .ferry(&[
            "connect",
            "webhook",
            "everything",
            "--url",
            &all_url,
            "--signing-secret",
            SIGNING_SECRET,
        ])
        .await
        .ok();
    let slack_url = format!("{}{SLACK_PATH}", receiver.base);
    scene
        .ferry(&["connect", "slack", "team", "--webhook-url", &slack_url])
        .await
        .ok();
    let port = smtp.port().to_string();
    let ca = smtp.ca_certificate().display().to_string();
    scene
        .ferry(&[
            "connect",
            "email",
            "oncall",
            "--host",
            "localhost",
            "--port",
            &port,
            "--security",
            "starttls",
            "--username",
            "ferry",
            "--password-env",
            "SMTP_PASSWORD",
            "--from",
            "ferry <ferry@example.com>",
            "--to",
            "data@example.com, oncall@example.com",
            "--ca-file",
            &ca,
        ])
        .await
        .ok();
    scene
        .email_sync(&[
            "--alert-channel",
            "team",
            "--alert-channel",
            "oncall",
            "--alert-rejected-over",
            "10",
        ])
        .await;
    scene
}

fn received_mails(smtp: &SmtpServer) -> Vec<ReceivedEmail> {
    smtp.messages().expect("the SMTP server's messages")
}

fn smtp() -> SmtpServer {
    SmtpServer::start(SmtpOptions {
        security: SmtpServerSecurity::Starttls,
        auth: Some(("ferry".to_string(), SMTP_PASSWORD.to_string())),
    })
    .expect("the SMTP server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_raised_once_resolved_once_and_reach_every_channel() {
    let receiver = Receiver::start().await;
    let smtp = smtp();
    let scene = scene_with_channels(&receiver, &smtp).await;

    // Saving the channels tested them: a signed ping, a message in Slack, no email.
    let pings = receiver.at("/hook");
    assert_eq!(pings.len(), 1, "{pings:?}");
    assert_eq!(pings[0].json()["type"], "ping");
    check_signature(&pings[0]);
    assert_eq!(receiver.slack_texts().len(), 1);
    assert!(receiver.slack_texts()[0].contains("ferry is connected"));
    assert!(
        received_mails(&smtp).is_empty(),
        "the SMTP test sends nothing"
    );

    // Run 1: 1 of 4 rows rejected (25% > 10%): the alert is raised.
    let first = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(first["rejected"], 1, "{first}");
    assert_eq!(
        receiver.types_at("/hook"),
        ["ping", "sync.completed", "sync.alert.raised"]
    );
    for request in &receiver.at("/hook")[1..] {
        check_signature(request);
        assert_eq!(
            request.header("ferry-event"),
            request.json()["type"].as_str()
        );
        assert!(request
            .header("ferry-delivery")
            .unwrap()
            .starts_with("dlv_"));
    }
    let raised = receiver.at("/hook")[2].json();
    assert_eq!(raised["data"]["sync"]["name"], "people-to-stripe");
    assert_eq!(raised["data"]["alert"]["condition"], "rejected_rows");
    assert_eq!(raised["data"]["run"]["counts"]["rejected"], 1);
    assert_eq!(raised["data"]["run"]["id"], first["run_id"]);
    let slack = receiver.slack_texts();
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert!(
        slack[1].contains("Alert on sync people-to-stripe: rejected rows")
            && slack[1].contains("1 of 4 rows rejected (25%), over the alert's 10%"),
        "{}",
        slack[1]
    );
    let mails = received_mails(&smtp);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        mails[0].subject,
        "[ferry] Alert on sync people-to-stripe: rejected rows"
    );
    assert!(
        mails[0].body.contains("1 of 4 rows rejected"),
        "{}",
        mails[0].body
    );
    assert!(
        mails[0]
            .to
            .iter()
            .any(|to| to.contains("oncall@example.com")),
        "{:?}",
        mails[0].to
    );

    // Run 2, the same rows: still over, and no second notice.
    scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        receiver.types_at("/hook")[3..],
        ["sync.completed"],
        "a raised alert is not raised again"
    );
    assert_eq!(receiver.slack_texts().len(), 2);
    assert_eq!(received_mails(&smtp).len(), 1);
    let shown = scene
        .ferry(&["sync", "show", "people-to-stripe"])
        .await
        .ok();
    assert!(
        shown.stdout.contains("ALERT:    rejected_rows"),
        "{}",
        shown.stdout
    );

    // The row is mended: run 3 resolves the alert, once, everywhere.
    scene.warehouse_sql("update people set email = 'p2@example.com' where id = 2");
    scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        receiver.types_at("/hook")[4..],
        ["sync.completed", "sync.alert.resolved"]
    );
    let slack = receiver.slack_texts();
    assert!(
        slack.len() == 3 && slack[2].contains("Resolved on sync people-to-stripe: rejected rows"),
        "{slack:?}"
    );
    assert_eq!(received_mails(&smtp).len(), 2);
    assert!(received_mails(&smtp)[1].subject.contains("Resolved"));

    // The webhook with every event heard each run start and end, and the alert twice.
    let mut heard = receiver.types_at("/all");
    heard.sort();
    assert_eq!(
        heard,
        [
            "ping",
            "sync.alert.raised",
            "sync.alert.resolved",
            "sync.completed",
            "sync.completed",
            "sync.completed",
            "sync.started",
            "sync.started",
            "sync.started",
        ]
    );

    // Every delivery is kept with its answer.
    let deliveries = scene
        .ferry(&["alerts", "deliveries", "--limit", "50"])
        .await
        .ok();
    assert_eq!(
        deliveries.stdout.matches(" delivered ").count(),
        // `hooks`: completed ×3, raised, resolved; Slack and email: raised, resolved;
        // `everything`: started ×3, completed ×3, raised, resolved
        17,
        "{}",
        deliveries.stdout
    );

    // A channel a sync's alerts name cannot be removed from under it.
    let refused = scene.ferry(&["connections", "remove", "team"]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("is used by the alerts of sync 'people-to-stripe'"),
        "{}",
        refused.stderr
    );

    // No secret shows anywhere ferry prints.
    let listed = scene.ferry(&["connections"]).await.ok();
    let exported = scene.ferry(&["export"]).await.ok();
    for output in [
        &listed.stdout,
        &deliveries.stdout,
        &exported.stdout,
        &shown.stdout,
    ] {
        for secret in [SIGNING_SECRET, "slacksecret93f1", SMTP_PASSWORD] {
            assert!(!output.contains(secret), "{secret} shows in:\n{output}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_the_event_later_and_a_failed_run_alerts() {
    let receiver = Receiver::start().await;
    let smtp = smtp();
    let scene = scene_with_channels(&receiver, &smtp).await;
    let served = scene.serve(&[]).await;

    // The webhook answers 503 to the first 3 attempts (one delivery's quick retries): the
    // delivery waits, and the server tries again a second later.
    receiver.failures_left.store(3, Ordering::SeqCst);
    scene.warehouse_sql("drop table people");
    let run = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    // Three quick attempts answered 503, then the queue's retry a second later.
    wait_for("the failed event's retry", || {
        receiver
            .types_at("/hook")
            .iter()
            .filter(|t| *t == "sync.failed")
            .count()
            == 4
    })
    .await;
    assert_eq!(
        receiver
            .types_at("/hook")
            .iter()
            .filter(|t| *t == "sync.alert.raised")
            .count(),
        1
    );
    let slack = receiver.slack_texts();
    assert!(
        slack
            .iter()
            .any(|text| text.contains("Alert on sync people-to-stripe: a failed run")),
        "{slack:?}"
    );

    // The API shows each delivery with its attempts and last answer.
    let mut failed_event = Json::Null;
    wait_for("the retried delivery to be recorded", || {
        failed_event = api_deliveries(&served)
            .into_iter()
            .find(|d| d["event_type"] == "sync.failed")
            .unwrap_or_default();
        failed_event["status"] == "delivered"
    })
    .await;
    assert_eq!(failed_event["attempts"], 2, "{failed_event}");
    assert_eq!(failed_event["answer_status"], 200, "{failed_event}");
    let alerts: Json = served
        .api()
        .get(served.url("/api/v1/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alerts["raised"][0]["condition"], "run_failed", "{alerts}");
    assert!(!served.output().contains(SIGNING_SECRET));
}
