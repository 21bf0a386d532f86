//! End-to-end: sequences run syncs one after another and stop where a step fails or rejects
//! too many rows, from a terminal (`ferry sequence run`) and from the servers' queue (the API,
//! the UI). The catalogue is Stripe's own order: prices name their product, so a price sync run
//! before its products rejects every row, and one run after them creates every price. The
//! assertions read what the emulator holds, the exit codes, and the workspace's history.

mod common;

use common::Scene;
use serde_json::{json, Value as Json};
use std::time::Duration;

const CATALOGUE_SQL: &str = "
create table plans as select * from (values ('pro', 'Pro'), ('team', 'Team')) t(sku, name);
create table price_list as select * from (values
    ('pro_monthly', 'pro', 'usd', 2000, 'month'),
    ('pro_yearly', 'pro', 'usd', 20000, 'year'),
    ('team_monthly', 'team', 'eur', 5000, 'month'),
    ('no_product', 'gone', 'usd', 100, 'month')
) t(lookup, sku, currency, amount, every)";

impl Scene {
    /// Two syncs: plans → Products (by sku), the price list → Prices naming their product.
    async fn catalogue(&self) {
        self.warehouse_sql(CATALOGUE_SQL);
        self.connect().await;
        for (name, sql) in [
            ("plans", "select * from plans order by sku"),
            ("price-list", "select * from price_list order by lookup"),
        ] {
            self.ferry(&[
                "model",
                "create",
                name,
                "--connection",
                "warehouse",
                "--sql",
                sql,
            ])
            .await
            .ok();
        }
        self.ferry(&[
            "sync",
            "create",
            "products",
            "--model",
            "plans",
            "--destination",
            "stripe",
            "--object",
            "product",
            "--key",
            "sku=id",
            "--map",
            "name=name",
        ])
        .await
        .ok();
        self.ferry(&[
            "sync",
            "create",
            "prices",
            "--model",
            "price-list",
            "--destination",
            "stripe",
            "--object",
            "price",
            "--key",
            "lookup=lookup_key",
            "--map",
            "sku=product",
            "--map",
            "currency=currency",
            "--map",
            "amount=unit_amount",
            "--map",
            "every=recurring.interval",
        ])
        .await
        .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_runs_its_syncs_in_order_and_stops_where_a_step_fails_or_rejects_too_much() {
    let scene = Scene::new().await;
    scene.catalogue().await;

    // Prices before products: every price names a product Stripe does not have yet, so the
    // first step rejects all its rows, and the products step never runs.
    scene
        .ferry(&[
            "sequence",
            "create",
            "catalogue",
            "--steps",
            "prices,products",
            "--stop-when-rejected-over",
            "30",
        ])
        .await
        .ok();
    let stopped = scene.ferry(&["sequence", "run", "catalogue"]).await;
    assert_eq!(stopped.code, 3, "{}\n{}", stopped.stdout, stopped.stderr);
    assert!(
        stopped
            .stdout
            .contains("step 1 (prices) rejected 4 of 4 rows (100%), over the sequence's 30%; products did not run"),
        "{}",
        stopped.stdout
    );
    assert!(scene.stripe().products().is_empty(), "products never ran");
    assert!(scene.stripe().prices().is_empty());

    // In Stripe's order: products, then prices. One price names no product (25% rejected,
    // within the 30%), the three others are created against the products the first step made.
    scene
        .ferry(&[
            "sequence",
            "create",
            "catalogue",
            "--steps",
            "products,prices",
            "--stop-when-rejected-over",
            "30",
        ])
        .await
        .ok();
    let completed = scene.ferry(&["sequence", "run", "catalogue"]).await;
    assert_eq!(
        completed.code, 0,
        "{}\n{}",
        completed.stdout, completed.stderr
    );
    assert!(
        completed.stdout.contains("all 2 steps completed"),
        "{}",
        completed.stdout
    );
    assert_eq!(scene.stripe().products().len(), 2);
    let prices = scene.stripe().prices();
    assert_eq!(prices.len(), 3, "{prices:?}");
    for price in &prices {
        assert!(
            ["pro", "team"].contains(&price["product"].as_str().unwrap()),
            "{price}"
        );
    }

    // The history: two runs, newest first, each step's run recorded in order.
    let show = scene.ferry(&["sequence", "show", "catalogue"]).await.ok();
    assert!(show.stdout.contains("products → prices"), "{}", show.stdout);
    let runs: Vec<&str> = show
        .stdout
        .lines()
        .filter(|l| l.starts_with("seqrun_"))
        .collect();
    assert_eq!(runs.len(), 2, "{}", show.stdout);
    assert!(
        runs[0].contains("completed") && runs[1].contains("stopped"),
        "{}",
        show.stdout
    );

    // A paused step stops the sequence before it: nothing of a paused sync runs.
    scene.ferry(&["sync", "pause", "prices"]).await.ok();
    let paused = scene.ferry(&["sequence", "run", "catalogue"]).await;
    assert_eq!(paused.code, 1, "{}\n{}", paused.stdout, paused.stderr);
    assert!(
        paused
            .stdout
            .contains("step 2 (prices) could not start: sync 'prices' is paused"),
        "{}",
        paused.stdout
    );
    scene.ferry(&["sync", "resume", "prices"]).await.ok();

    // A sync a sequence runs cannot be removed from under it.
    let refused = scene.ferry(&["sync", "remove", "prices"]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("sequence 'catalogue'"),
        "{}",
        refused.stderr
    );

    // Bad declarations name the field and the fix; nothing is saved.
    let unknown = scene
        .ferry(&["sequence", "create", "broken", "--steps", "products,nope"])
        .await;
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
    let twice = scene
        .ferry(&[
            "sequence",
            "create",
            "broken",
            "--steps",
            "products,products",
        ])
        .await;
    assert_eq!(twice.code, 2);
    assert!(twice.stderr.contains("twice"), "{}", twice.stderr);
    let list = scene.ferry(&["sequence", "list"]).await.ok();
    assert!(!list.stdout.contains("broken"), "{}", list.stdout);

    // Config as code: exported, and applying the export changes nothing.
    let exported = scene.ferry(&["export"]).await.ok();
    assert!(
        exported.stdout.contains("sequences:\n  catalogue:\n    steps: [products, prices]\n    stop_when_rejected_over_percent: 30\n"),
        "{}",
        exported.stdout
    );
    let file = scene.dir.path().join("exported.yaml");
    std::fs::write(&file, &exported.stdout).unwrap();
    let plan = scene
        .ferry(&["apply", "-f", file.to_str().unwrap()])
        .await
        .ok();
    assert!(
        plan.stdout.contains("= unchanged sequence catalogue"),
        "{}",
        plan.stdout
    );
    let changed = exported.stdout.replace(
        "stop_when_rejected_over_percent: 30",
        "stop_when_rejected_over_percent: 0\n    schedule: daily at 06:00",
    );
    std::fs::write(&file, changed).unwrap();
    scene
        .ferry(&["apply", "-f", file.to_str().unwrap(), "--yes"])
        .await
        .ok();
    let show = scene.ferry(&["sequence", "show", "catalogue"]).await.ok();
    assert!(show.stdout.contains("rejects any row"), "{}", show.stdout);
    assert!(show.stdout.contains("daily at 06:00"), "{}", show.stdout);
}

/// Polls a sequence run through the API until it is no longer running.
async fn wait_for_sequence_run(api: &reqwest::Client, url: &str) -> Json {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let run: Json = api.get(url).send().await.unwrap().json().await.unwrap();
        if run["status"] != "running" {
            return run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sequence run did not end within 2 minutes: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_run_a_sequence_step_by_step_through_the_queue() {
    let scene = Scene::new().await;
    scene.catalogue().await;
    let served = scene.serve(&[]).await;
    let api = served.api();

    let created = api
        .post(served.url("/api/v1/sequences"))
        .json(
            &json!({"name": "catalogue", "steps": ["products", "prices"],
                      "stop_when_rejected_over_percent": 30}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let missing = api
        .post(served.url("/api/v1/sequences"))
        .json(&json!({"name": "other", "steps": ["products", "nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("nope"));

    let started = api
        .post(served.url("/api/v1/sequences/catalogue/runs"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let started: Json = started.json().await.unwrap();
    let id = started["id"]
        .as_str()
        .expect("a sequence run id")
        .to_string();
    assert!(id.starts_with("seqrun_"), "{started}");
    // A second start while it runs is refused, naming the run.
    let again = api
        .post(served.url("/api/v1/sequences/catalogue/runs"))
        .send()
        .await
        .unwrap();
    let again_status = again.status();
    let again_text = again.text().await.unwrap();
    let run_url = served.url(&format!("/api/v1/sequence-runs/{id}"));
    let ended = wait_for_sequence_run(&api, &run_url).await;
    if again_status != 202 {
        // (It may have ended already on a fast machine; then the start was allowed.)
        assert_eq!(again_status, 409, "{again_text}");
        assert!(again_text.contains("already running"), "{again_text}");
    }
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["message"], "all 2 steps completed");
    let steps = ended["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, sync) in steps.iter().zip(["products", "prices"]) {
        assert_eq!(step["sync"], sync);
        assert_eq!(step["status"], "completed", "{step}");
        let run: Json = api
            .get(served.url(&format!(
                "/api/v1/runs/{}",
                step["run_id"].as_str().unwrap()
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(run["sync"], sync, "{run}");
    }
    assert_eq!(steps[0]["counts"]["created"], 2);
    assert_eq!(steps[1]["counts"]["created"], 3);
    assert_eq!(steps[1]["counts"]["rejected"], 1);
    assert_eq!(scene.stripe().products().len(), 2);
    assert_eq!(scene.stripe().prices().len(), 3);
    // The products' run ended before the prices' run started.
    let product_run: Json = api
        .get(served.url(&format!(
            "/api/v1/runs/{}",
            steps[0]["run_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let price_run: Json = api
        .get(served.url(&format!(
            "/api/v1/runs/{}",
            steps[1]["run_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        product_run["finished_at"].as_str().unwrap() <= price_run["started_at"].as_str().unwrap(),
        "{product_run}\n{price_run}"
    );

    // A paused step fails the sequence with the reason, and the step after it never runs.
    api.post(served.url("/api/v1/syncs/products/pause"))
        .send()
        .await
        .unwrap();
    let started: Json = api
        .post(served.url("/api/v1/sequences/catalogue/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failed = wait_for_sequence_run(
        &api,
        &served.url(&format!(
            "/api/v1/sequence-runs/{}",
            started["id"].as_str().unwrap()
        )),
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("step 1 (products) could not start: sync 'products' is paused"),
        "{failed}"
    );
    assert!(failed["steps"][1]["run_id"].is_null(), "{failed}");

    // The list and the sequence's runs, newest first.
    let listed: Json = api
        .get(served.url("/api/v1/sequences/catalogue/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "completed"], "{listed}");
    let sequences: Json = api
        .get(served.url("/api/v1/sequences"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sequences["sequences"][0]["last_run"]["status"], "failed");
    assert_eq!(
        sequences["sequences"][0]["stops"],
        "stops when a step fails or rejects over 30% of its rows"
    );

    // The sync it names cannot be deleted; the sequence can, and then the sync can.
    let refused = api
        .delete(served.url("/api/v1/syncs/prices"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("sequence 'catalogue'"));
    let removed = api
        .delete(served.url("/api/v1/sequences/catalogue"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let gone = api
        .delete(served.url("/api/v1/syncs/prices"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
}

fn hmac_hex(secret: &str, message: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

fn dbt_event(kind: &str, job: &str, status: &str, event_id: &str) -> String {
    json!({
        "accountId": 1, "webhooksID": "wsu_1", "eventId": event_id,
        "timestamp": "2026-12-03T06:00:00Z", "eventType": kind, "webhookName": "ferry",
        "data": {"jobId": job, "jobName": "Daily build", "runId": "9001",
                 "environmentName": "Production", "runStatus": status, "runStatusCode": 10}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dbt_cloud_job_and_a_signed_request_start_what_their_trigger_names() {
    let mut scene = Scene::new().await;
    scene.env.push(("DBT_SECRET".into(), "dbt-s3cret".into()));
    scene
        .env
        .push(("AIRFLOW_SECRET".into(), "airflow-s3cret".into()));
    scene.catalogue().await;
    scene
        .ferry(&[
            "sequence",
            "create",
            "catalogue",
            "--steps",
            "products,prices",
        ])
        .await
        .ok();
    // Triggers are connections: declared like one, their secrets kept like one.
    scene
        .ferry(&[
            "connect",
            "dbt_cloud",
            "dbt-prod",
            "--sequence",
            "catalogue",
            "--job-id",
            "123",
            "--signing-secret-env",
            "DBT_SECRET",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "connect",
            "trigger",
            "airflow",
            "--sync",
            "products",
            "--signing-secret-env",
            "AIRFLOW_SECRET",
        ])
        .await
        .ok();
    let both = scene
        .ferry(&[
            "connect",
            "trigger",
            "confused",
            "--sync",
            "products",
            "--sequence",
            "catalogue",
            "--signing-secret-env",
            "AIRFLOW_SECRET",
        ])
        .await;
    assert_eq!(both.code, 2);
    assert!(both.stderr.contains("not both"), "{}", both.stderr);

    let served = scene.serve(&[]).await;
    let api = served.api();
    // No token: the signature is the authentication.
    let anyone = reqwest::Client::new();
    let dbt = |body: String, secret: &str| {
        anyone
            .post(served.url("/hooks/dbt-prod"))
            .header("authorization", hmac_hex(secret, body.as_bytes()))
            .header("content-type", "application/json")
            .body(body)
    };

    let forged = dbt(
        dbt_event("job.run.completed", "123", "Success", "wev_0"),
        "guess",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(forged.status(), 401);
    for (event, reason) in [
        (
            dbt_event("job.run.started", "123", "Running", "wev_a"),
            "only job.run.completed",
        ),
        (
            dbt_event("job.run.completed", "124", "Success", "wev_b"),
            "follows job 123",
        ),
        (
            dbt_event("job.run.completed", "123", "Errored", "wev_c"),
            "ended Errored",
        ),
    ] {
        let answer = dbt(event, "dbt-s3cret").send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let answer: Json = answer.json().await.unwrap();
        assert_eq!(answer["status"], "ignored", "{answer}");
        assert!(
            answer["reason"].as_str().unwrap().contains(reason),
            "{answer}"
        );
    }
    assert!(scene.stripe().products().is_empty(), "nothing ran yet");

    let success = dbt_event("job.run.completed", "123", "Success", "wev_1");
    let started = dbt(success.clone(), "dbt-s3cret").send().await.unwrap();
    assert_eq!(started.status(), 202);
    let started: Json = started.json().await.unwrap();
    assert_eq!(started["status"], "started", "{started}");
    let run = wait_for_sequence_run(
        &api,
        &served.url(&format!(
            "/api/v1/sequence-runs/{}",
            started["sequence_run_id"].as_str().unwrap()
        )),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["reason"], "trigger");
    assert_eq!(scene.stripe().products().len(), 2);
    assert_eq!(scene.stripe().prices().len(), 3);
    // dbt Cloud delivers again when it did not hear back in time: nothing starts twice.
    let again = dbt(success, "dbt-s3cret").send().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Json = again.json().await.unwrap();
    assert_eq!(again["status"], "already_started", "{again}");

    // A signed request from an orchestrator, in ferry's own webhook scheme.
    let signed = |secret: &str, at: i64, body: &str| {
        let v1 = hmac_hex(secret, format!("{at}.{body}").as_bytes());
        anyone
            .post(served.url("/hooks/airflow"))
            .header("ferry-signature", format!("t={at},v1={v1}"))
            .body(body.to_string())
    };
    let now = chrono::Utc::now().timestamp();
    let stale = signed("airflow-s3cret", now - 600, "{}")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
    assert!(stale.text().await.unwrap().contains("stale_signature"));
    let unknown = anyone
        .post(served.url("/hooks/nobody"))
        .header("ferry-signature", "t=1,v1=00")
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        401,
        "an unknown trigger looks like a bad signature"
    );
    let started = signed("airflow-s3cret", now, "{}").send().await.unwrap();
    assert_eq!(started.status(), 202);
    let started: Json = started.json().await.unwrap();
    assert_eq!(started["status"], "started", "{started}");
    let run_id = started["run_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let run: Json = api
            .get(served.url(&format!("/api/v1/runs/{run_id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] != "running" {
            assert_eq!(run["status"], "completed", "{run}");
            assert_eq!(run["sync"], "products");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A paused sync refuses its orchestrators' triggers.
    scene.ferry(&["sync", "pause", "products"]).await.ok();
    let paused = signed("airflow-s3cret", now + 1, "{\"again\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 409);
    assert!(paused.text().await.unwrap().contains("paused"));

    // The secrets appear nowhere: not in the connection's view, not in the server's log.
    let view = api
        .get(served.url("/api/v1/connections/dbt-prod"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!view.contains("dbt-s3cret"), "{view}");
    assert!(!served.output().contains("dbt-s3cret"));
    assert!(!served.output().contains("airflow-s3cret"));
    let page = scene.ferry(&["connections"]).await.ok();
    assert!(page.stdout.contains("dbt-prod"), "{}", page.stdout);

    // The web UI: the sequences and their triggers, a sequence's page with each step's run, a
    // run started from its button, and the forms.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = browser
        .post(served.url("/login"))
        .form(&[("token", served.token.as_str())])
        .send()
        .await
        .unwrap();
    assert!(login.status().is_redirection(), "{}", login.status());
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = |path: &'static str| {
        let request = browser
            .get(served.url(path))
            .header("cookie", cookie.clone());
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        }
    };
    let list = page("/sequences").await;
    assert!(list.contains("products → prices"), "{list}");
    assert!(list.contains("POST /hooks/dbt-prod"), "{list}");
    assert!(list.contains("POST /hooks/airflow"), "{list}");
    assert!(!list.contains("dbt-s3cret"));
    let show = page("/sequences/catalogue").await;
    assert!(show.contains("all 2 steps completed"), "{show}");
    assert!(
        show.contains("href=\"/runs/run_"),
        "each step links to its run: {show}"
    );
    let form = page("/sequences/catalogue/edit").await;
    assert!(form.contains("option value=\"prices\" selected"), "{form}");
    let new_trigger = page("/triggers/new").await;
    assert!(new_trigger.contains("dbt Cloud job"), "{new_trigger}");
    assert!(
        !new_trigger.contains("Slack"),
        "only trigger kinds: {new_trigger}"
    );
    let sources = page("/sources").await;
    assert!(
        !sources.contains("dbt-prod"),
        "a trigger is no warehouse: {sources}"
    );
    scene.ferry(&["sync", "resume", "products"]).await.ok();
    let at = show.find("name=\"_csrf\" value=\"").expect("a CSRF field") + 20;
    let csrf = &show[at..at + show[at..].find('"').unwrap()];
    let ran = browser
        .post(served.url("/sequences/catalogue/run"))
        .header("cookie", cookie.clone())
        .form(&[("_csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert!(ran.status().is_redirection(), "{}", ran.status());
    let runs: Json = api
        .get(served.url("/api/v1/sequences/catalogue/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["runs"][0]["reason"], "ui", "{runs}");
    wait_for_sequence_run(
        &api,
        &served.url(&format!(
            "/api/v1/sequence-runs/{}",
            runs["runs"][0]["id"].as_str().unwrap()
        )),
    )
    .await;
}
