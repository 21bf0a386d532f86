//! End-to-end: what `ferry serve` tells a monitoring system and a log collector. `/metrics` is
//! scraped on the API with a token and on `--metrics-addr` without one, and its counters are
//! checked against what the Stripe emulator itself recorded; `--log-format json` lines are
//! parsed and a run's lines must name their run and sync.

mod common;

use common::{people_sql, Scene, Served, KEY};
use ferry_stripe_emulator::FaultConfig;
use reqwest::StatusCode;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_records_and_stripe_answers_as_they_happened() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(4));
    scene.warehouse_sql("update people set email = 'not an email' where id = 1");
    scene.warehouse_sql(
        "create table more_people as select * from people where false;
         insert into more_people select id + 10, 'more' || id || '@example.com', name, phone, plan from people where id > 1",
    );
    connect_with_a_slow_rate_limiter(&scene).await;
    scene.email_sync(&[]).await;
    scene
        .ferry(&[
            "model",
            "create",
            "more-people",
            "--connection",
            "warehouse",
            "--sql",
            "select * from more_people order by id",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "more-to-stripe",
            "--model",
            "more-people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
        ])
        .await
        .ok();
    let test_started = unix_now();
    let served = scene
        .serve(&[
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "-v",
        ])
        .await;
    // What the emulator receives from here on is what the server sent.
    let requests_before_the_server = scene.stripe().requests().len();

    // A sync with a rejected row, then one whose requests Stripe sometimes answers 429.
    let people_run = run_through_the_api(&served, "people-to-stripe").await;
    assert_eq!(people_run["counts"]["created"], 3, "{people_run}");
    assert_eq!(people_run["counts"]["rejected"], 1, "{people_run}");
    scene.stripe().set_fault_seed(7);
    scene.stripe().set_faults(FaultConfig {
        lock_timeout_rate: 0.4,
        ..FaultConfig::default()
    });
    let more_run = run_through_the_api(&served, "more-to-stripe").await;
    scene.stripe().set_faults(FaultConfig::default());
    assert_eq!(more_run["counts"]["created"], 3, "{more_run}");

    // The API's /metrics needs the token, like the rest of the API.
    let refused = reqwest::get(served.url("/metrics")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let scraped = served
        .api()
        .get(served.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        scraped.headers()
    );
    let with_token = Scrape::parse(&scraped.text().await.unwrap());
    // --metrics-addr serves the same counters without a token.
    let metrics_url = metrics_address(&served).await;
    let open = reqwest::get(&metrics_url).await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let without_token = Scrape::parse(&open.text().await.unwrap());

    // What Stripe answered, as the emulator recorded it.
    let mut answered: BTreeMap<String, f64> = BTreeMap::new();
    for request in &scene.stripe().requests()[requests_before_the_server..] {
        let status = request
            .status
            .map_or("error".to_string(), |status| status.to_string());
        *answered.entry(status).or_default() += 1.0;
    }
    let rate_limited = answered.get("429").copied().unwrap_or_default();
    assert!(
        rate_limited >= 1.0,
        "the fault seed gave no 429; pick another: {answered:?}"
    );

    for scrape in [&with_token, &without_token] {
        for (sync, created) in [("people-to-stripe", 3.0), ("more-to-stripe", 3.0)] {
            assert_eq!(
                scrape.value(&format!(
                    "ferry_runs_total{{sync=\"{sync}\",status=\"completed\"}}"
                )),
                1.0
            );
            assert_eq!(
                scrape.value(&format!(
                    "ferry_records_total{{sync=\"{sync}\",outcome=\"created\"}}"
                )),
                created
            );
            assert_eq!(
                scrape.value(&format!(
                    "ferry_run_duration_seconds_count{{sync=\"{sync}\"}}"
                )),
                1.0
            );
            let success = scrape.value(&format!(
                "ferry_last_success_timestamp_seconds{{sync=\"{sync}\"}}"
            ));
            assert!(
                success >= test_started && success <= unix_now(),
                "{success}"
            );
        }
        assert_eq!(
            scrape.value("ferry_records_total{sync=\"people-to-stripe\",outcome=\"rejected\"}"),
            1.0
        );
        assert_eq!(
            scrape.value("ferry_records_total{sync=\"more-to-stripe\",outcome=\"rejected\"}"),
            0.0
        );
        assert_eq!(
            scrape.series_of("ferry_stripe_requests_total"),
            answered
                .iter()
                .map(|(status, count)| (format!("{{status=\"{status}\"}}"), *count))
                .collect::<BTreeMap<_, _>>(),
            "ferry counted what the emulator answered"
        );
        assert_eq!(
            scrape.value("ferry_stripe_rate_limited_total"),
            rate_limited
        );
        // At 4 requests a second, with a burst of one, most requests waited for a token.
        let waited = scrape.value("ferry_rate_limiter_wait_seconds_total");
        assert!(waited >= 0.5, "waited {waited} s for ferry's rate limiter");
        assert!(!scrape.text.contains(KEY), "{}", scrape.text);
    }

    // Every line the server logged is JSON; those written during a run name it and its sync.
    let logged = std::fs::read_to_string(&served.stderr_path).unwrap();
    let lines: Vec<Json> = logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for (run, sync) in [
        (&people_run, "people-to-stripe"),
        (&more_run, "more-to-stripe"),
    ] {
        let finished = lines
            .iter()
            .find(|line| {
                line["fields"]["message"] == "Sync run finished." && line["span"]["sync"] == sync
            })
            .unwrap_or_else(|| panic!("no end of run logged for {sync}:\n{logged}"));
        assert_eq!(finished["span"]["run"], run["id"], "{finished}");
        assert_eq!(finished["level"], "INFO", "{finished}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_run_logs_json_lines_that_name_the_run_and_the_sync() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(2));
    scene.connect().await;
    scene.email_sync(&[]).await;
    let ran = scene
        .ferry(&[
            "--log-format",
            "json",
            "-v",
            "sync",
            "run",
            "people-to-stripe",
            "--format",
            "json",
        ])
        .await
        .ok();
    let run_id = ran.json()["run_id"].as_str().unwrap().to_string();
    let lines: Vec<Json> = ran
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let in_the_run: Vec<&Json> = lines
        .iter()
        .filter(|line| line["span"]["run"] == run_id.as_str())
        .collect();
    assert!(
        !in_the_run.is_empty(),
        "no line names the run:\n{}",
        ran.stderr
    );
    for line in in_the_run {
        assert_eq!(line["span"]["sync"], "people-to-stripe", "{line}");
    }
    // Without the flag the log stays for people.
    let text = scene
        .ferry(&["-v", "sync", "run", "people-to-stripe"])
        .await
        .ok();
    assert!(
        text.stderr.contains("Sync run finished.") && !text.stderr.contains("{\"timestamp\""),
        "{}",
        text.stderr
    );
}

/// Stripe as `stripe` with ferry's own limiter at 4 requests a second, so that runs wait for
/// it; the warehouse as `warehouse`.
async fn connect_with_a_slow_rate_limiter(scene: &Scene) {
    scene.connect_stripe(&["--max-rps", "4"]).await;
    let warehouse = scene.warehouse().display().to_string();
    scene
        .ferry(&["connect", "duckdb", "warehouse", "--path", &warehouse])
        .await
        .ok();
}

/// Starts a run of `sync` over the API and waits for its end; the run as the API shows it.
async fn run_through_the_api(served: &Served, sync: &str) -> Json {
    let api = served.api();
    let started: Json = api
        .post(served.url(&format!("/api/v1/syncs/{sync}/runs")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().expect("a run id").to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run: Json = api
            .get(served.url(&format!("/api/v1/runs/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] != "running" {
            assert_eq!(run["status"], "completed", "{run}");
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not end: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `/metrics` URL on `--metrics-addr` that the server printed.
async fn metrics_address(served: &Served) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let printed = served.output();
        if let Some(url) = printed.lines().find_map(|line| {
            line.trim()
                .strip_prefix("Metrics: ")
                .filter(|rest| rest.contains("no token"))
                .and_then(|rest| rest.split_whitespace().next())
        }) {
            return url.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address printed:\n{printed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One scrape, read as Prometheus reads it: `name{labels} value` lines.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                (
                    series.to_string(),
                    value.parse().unwrap_or_else(|_| panic!("a number: {line}")),
                )
            })
            .collect();
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    #[track_caller]
    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in the scrape:\n{}", self.text))
    }

    /// The labels and values of every series of one metric.
    fn series_of(&self, metric: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter_map(|(series, value)| {
                let labels = series.strip_prefix(metric)?;
                (labels.is_empty() || labels.starts_with('{')).then(|| (labels.to_string(), *value))
            })
            .collect()
    }
}
