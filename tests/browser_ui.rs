//! The web UI end to end in headless Chromium, clicking like a person: from an empty workspace,
//! sign in, connect Stripe (the emulator; first with a bad key), connect a DuckDB source, write
//! a model and run it, build a sync with the Mapper, read the preview, run it, and read the
//! outcome in the run page and the history. Then the customers are checked in the emulator.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). A screenshot of
//! every page is saved under `target/tmp/ui-screenshots/` (or `$FERRY_SCREENSHOTS`).

mod common;

use common::{people_sql, Scene, KEY};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use ferry_stripe_emulator::FaultConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CUSTOMERS: u32 = 12;

fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            let name = Path::new(candidates[0]).file_name()?;
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.exists())
            })
        })
}

/// A chromedriver process on a free port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let chromedriver = find_program(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
        .expect(
            "chromedriver not found. Install Debian's Chromium and its driver: \
             `apt-get install -y chromium chromium-driver` (.ci/run does this)",
        );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = format!("http://127.0.0.1:{port}/status");
    while reqwest::get(&status).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver
}

async fn start_browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = find_program(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]).expect(
        "chromium not found. Install Debian's Chromium: `apt-get install -y chromium chromium-driver`",
    );
    // The flags keep Chromium off the network this machine does not have, as a headless
    // test browser should be.
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities.as_object().expect("an object").clone())
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session with headless Chromium")
}

struct Camera {
    dir: PathBuf,
    count: usize,
}

impl Camera {
    fn new() -> Camera {
        let dir = std::env::var_os("FERRY_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the screenshot folder");
        Camera { dir, count: 0 }
    }

    async fn shoot(&mut self, browser: &Client, name: &str) {
        self.count += 1;
        let png = browser.screenshot().await.expect("a screenshot");
        let path = self.dir.join(format!("{:02}-{name}.png", self.count));
        std::fs::write(&path, png).expect("the screenshot is saved");
        println!("screenshot: {}", path.display());
    }
}

async fn wait_for(browser: &Client, css: &str) -> Element {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}` did not appear: {e}"))
}

async fn click_button(browser: &Client, label: &str) {
    let xpath = format!("//button[normalize-space()='{label}']");
    browser
        .find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("no button '{label}': {e}"))
        .click()
        .await
        .expect("the button is clicked");
}

async fn click_link(browser: &Client, text: &str) {
    browser
        .find(Locator::LinkText(text))
        .await
        .unwrap_or_else(|e| panic!("no link '{text}': {e}"))
        .click()
        .await
        .expect("the link is clicked");
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let field = wait_for(browser, css).await;
    field.clear().await.expect("the field clears");
    field.send_keys(text).await.expect("typing works");
}

async fn scroll_to(browser: &Client, element: &Element) {
    let element = serde_json::to_value(element).expect("an element reference");
    browser
        .execute(
            "arguments[0].scrollIntoView({block: 'center'})",
            vec![element],
        )
        .await
        .expect("scrolling works");
}

async fn page_text(browser: &Client) -> String {
    browser
        .find(Locator::Css("body"))
        .await
        .expect("a body")
        .text()
        .await
        .expect("its text")
}

/// Waits until the page's heading is `expected`: after a click the old page may still be
/// showing for a moment, so whatever is found first can be the page being left.
async fn expect_heading(browser: &Client, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(h1) = browser.find(Locator::Css("h1")).await {
            if let Ok(text) = h1.text().await {
                if text == expected {
                    return;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected the page '{expected}', still on '{last}'");
}

/// Waits until the page's text contains `expected`.
async fn expect_text(browser: &Client, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(body) = browser.find(Locator::Css("body")).await {
            if body.text().await.is_ok_and(|t| t.contains(expected)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the page never said '{expected}':\n{}",
        page_text(browser).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_builds_and_runs_a_sync_in_the_browser() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(CUSTOMERS));
    let served = scene.serve(&[]).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().expect("a browser profile dir");
    let browser = start_browser(&driver, profile.path()).await;
    let mut camera = Camera::new();

    // Sign in with the token `ferry serve` printed at its first start.
    browser.goto(&served.url("/")).await.expect("the UI opens");
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/login"));
    camera.shoot(&browser, "sign-in").await;
    type_into(&browser, "#token", &served.token).await;
    click_button(&browser, "Sign in").await;
    expect_heading(&browser, "Get started").await;
    camera.shoot(&browser, "get-started").await;

    // The Stripe destination: a wrong key is refused with a reason, the right one is saved.
    click_link(&browser, "Connect Stripe").await;
    expect_heading(&browser, "New destination").await;
    type_into(&browser, "#name", "stripe").await;
    type_into(&browser, "#stripe-api_key", "sk_test_not_a_real_key").await;
    browser
        .find(Locator::Css("summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    type_into(&browser, "#stripe-api_base", &scene.emulator.url()).await;
    click_button(&browser, "Test and save").await;
    let problem = wait_for(&browser, ".alert.error")
        .await
        .text()
        .await
        .unwrap();
    assert!(problem.contains("rejected this API key"), "{problem}");
    camera.shoot(&browser, "destination-bad-key").await;
    type_into(&browser, "#stripe-api_key", KEY).await;
    click_button(&browser, "Test and save").await;
    expect_heading(&browser, "Destinations").await;
    let text = page_text(&browser).await;
    assert!(
        text.contains("stripe") && text.contains("sk_test_…"),
        "{text}"
    );
    assert!(
        !browser.source().await.unwrap().contains(KEY),
        "the key reached the page"
    );
    camera.shoot(&browser, "destinations").await;
    // Edit it: the key stays when left empty; the rate limit changes.
    click_link(&browser, "Edit").await;
    expect_heading(&browser, "Edit destination stripe").await;
    type_into(&browser, "#stripe-max_rps", "20").await;
    click_button(&browser, "Test and save").await;
    expect_heading(&browser, "Destinations").await;
    let shown = scene.ferry(&["connections"]).await.ok().stdout;
    assert!(shown.contains("sk_test_…"), "{shown}");
    // The Stripe API version every request names, in the CLI and on the page.
    let version = format!("API version {}", ferry_destinations::stripe::STRIPE_VERSION);
    assert!(shown.contains(&version), "{shown}");
    assert!(browser.source().await.unwrap().contains(&version));
    let config = served
        .api()
        .get(served.url("/api/v1/connections/stripe"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(config["config"]["max_rps"], 20, "{config}");
    assert_eq!(
        config["secret"]["hint"], "sk_test_…0000",
        "the key was kept"
    );

    // A DuckDB source.
    click_link(&browser, "Sources").await;
    expect_heading(&browser, "Sources").await;
    expect_text(&browser, "No source yet").await;
    click_link(&browser, "New source").await;
    expect_heading(&browser, "New source").await;
    type_into(&browser, "#name", "warehouse").await;
    type_into(
        &browser,
        "#duckdb-path",
        &scene.warehouse().display().to_string(),
    )
    .await;
    click_button(&browser, "Test and save").await;
    expect_heading(&browser, "Sources").await;
    camera.shoot(&browser, "sources").await;

    // A model: run it to see the first rows, then save it.
    click_link(&browser, "Models").await;
    expect_heading(&browser, "Models").await;
    click_link(&browser, "New model").await;
    expect_heading(&browser, "New model").await;
    type_into(&browser, "#name", "customers").await;
    type_into(
        &browser,
        "#sql",
        "select email, name, plan from people order by id",
    )
    .await;
    click_button(&browser, "Run").await;
    let first_rows = wait_for(&browser, "#rows table").await;
    let text = first_rows.text().await.unwrap();
    assert!(text.contains("person1@example.com"), "{text}");
    scroll_to(&browser, &first_rows).await;
    camera.shoot(&browser, "model-run").await;
    click_button(&browser, "Save model").await;
    expect_heading(&browser, "Models").await;
    assert!(page_text(&browser).await.contains("customers"));

    // A sync, with the Mapper: name → name, plan → metadata.plan; matched on email.
    click_link(&browser, "Syncs").await;
    expect_heading(&browser, "Syncs").await;
    click_link(&browser, "Add sync").await;
    expect_heading(&browser, "New sync").await;
    let key_column = wait_for(&browser, "#key_column").await;
    assert_eq!(
        key_column.prop("value").await.unwrap().as_deref(),
        Some("email")
    );
    // A Mapper row's source is typed (a column, offered from the model's, or a constant or a
    // template); a Tab leaves the field, which is when the form checks it.
    let columns = browser
        .find_all(Locator::Css("input[name=map_column]"))
        .await
        .unwrap();
    columns[0]
        .send_keys(&format!("name{}", Key::Tab))
        .await
        .unwrap();
    let fields = browser
        .find_all(Locator::Css("select[name=map_field]"))
        .await
        .unwrap();
    fields[0].select_by_value("name").await.unwrap();
    click_button(&browser, "+ Add field").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let columns = loop {
        let columns = browser
            .find_all(Locator::Css("input[name=map_column]"))
            .await
            .unwrap();
        if columns.len() == 2 {
            break columns;
        }
        assert!(
            Instant::now() < deadline,
            "the Mapper did not get a second row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The first row kept what was chosen across the re-render.
    assert_eq!(
        columns[0].prop("value").await.unwrap().as_deref(),
        Some("name")
    );
    columns[1]
        .send_keys(&format!("plan{}", Key::Tab))
        .await
        .unwrap();
    expect_text(
        &browser,
        "field row 2 needs both a column and a Stripe field",
    )
    .await;
    let fields = browser
        .find_all(Locator::Css("select[name=map_field]"))
        .await
        .unwrap();
    fields[1].select_by_value("metadata").await.unwrap();
    type_into(&browser, "#name", "customers-to-stripe").await;
    // The inline check agrees once every row is complete.
    let check = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#sync-checks .ok-box"))
        .await
        .expect("the inline check passes for a complete sync");
    scroll_to(&browser, &check).await;
    camera.shoot(&browser, "sync-mapper").await;
    click_button(&browser, "Save and preview").await;

    // The preview: everything is a create, nothing was written.
    expect_heading(&browser, "Preview of customers-to-stripe").await;
    let creates = wait_for(&browser, ".count.create .number")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(creates, CUSTOMERS.to_string());
    assert!(page_text(&browser).await.contains("Examples of creates"));
    assert_eq!(
        scene.stripe().customers().len(),
        0,
        "a preview writes nothing"
    );
    camera.shoot(&browser, "preview").await;

    // Run it against a slow Stripe, so the live progress shows, and watch it finish.
    scene.stripe().set_faults(FaultConfig {
        latency: Duration::from_millis(2500),
        ..FaultConfig::default()
    });
    click_button(&browser, "Run sync").await;
    expect_heading(&browser, "Run of customers-to-stripe").await;
    let live = wait_for(&browser, "#run-status .progress-line")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        live.contains("of 12 rows") || live.contains("Reading the model"),
        "{live}"
    );
    assert!(browser
        .find(Locator::Css("#run-status .badge.running"))
        .await
        .is_ok());
    camera.shoot(&browser, "run-in-progress").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if browser
            .find(Locator::Css("#run-status .badge.completed"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not complete:\n{}",
            page_text(&browser).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let created = wait_for(&browser, "#run-status .count.created .number")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(created, CUSTOMERS.to_string());
    let rows = browser
        .find_all(Locator::Css("table.records tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), CUSTOMERS as usize);
    // Each record shows its customer's id; the emulator's customers are not in Stripe's
    // dashboard, so no link points there.
    let shown_id = browser
        .find(Locator::Css("table.records td span.mono"))
        .await
        .expect("the customer's id on the record")
        .text()
        .await
        .unwrap();
    assert!(shown_id.starts_with("cus_"), "{shown_id}");
    assert!(browser
        .find(Locator::Css(
            "table.records a[href*='dashboard.stripe.com']"
        ))
        .await
        .is_err());
    camera.shoot(&browser, "run").await;

    // The record filter and the history.
    click_link(&browser, "rejected").await;
    assert!(page_text(&browser)
        .await
        .contains("No records with this outcome"));
    click_link(&browser, "Run history").await;
    let history = wait_for(&browser, "table.runs").await.text().await.unwrap();
    assert!(
        history.contains("customers-to-stripe") && history.contains("completed"),
        "{history}"
    );
    camera.shoot(&browser, "history").await;

    // A narrow window still shows the run.
    browser.set_window_size(400, 860).await.unwrap();
    browser.back().await.unwrap();
    browser.back().await.unwrap();
    camera.shoot(&browser, "run-narrow").await;

    // A full resync from the sync's page looks everyone up again and finds nothing to change.
    scene.stripe().set_faults(FaultConfig::default());
    browser.set_window_size(1280, 800).await.unwrap();
    browser
        .goto(&served.url("/syncs/customers-to-stripe"))
        .await
        .unwrap();
    expect_heading(&browser, "Sync customers-to-stripe").await;
    click_button(&browser, "Full resync").await;
    expect_heading(&browser, "Run of customers-to-stripe").await;
    wait_for(&browser, "#run-status .badge.completed").await;
    let unchanged = wait_for(&browser, "#run-status .count.unchanged .number")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(unchanged, CUSTOMERS.to_string());
    let line = wait_for(&browser, "#run-status .run-line")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !line.contains(" 0 requests"),
        "a full resync reads Stripe again: {line}"
    );
    browser.close().await.expect("the browser closes");

    // What Stripe holds: every person once, with the mapped fields.
    let customers = scene.stripe().customers();
    assert_eq!(customers.len(), CUSTOMERS as usize);
    for i in 1..=CUSTOMERS {
        let email = format!("person{i}@example.com");
        let matching: Vec<_> = customers
            .iter()
            .filter(|c| c["email"] == email.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "{email}");
        assert_eq!(matching[0]["name"], format!("Person {i}").as_str());
        assert_eq!(
            matching[0]["metadata"]["plan"],
            if i % 2 == 0 { "free" } else { "pro" }
        );
    }
    assert!(
        customers.iter().any(|c| c["id"] == shown_id.as_str()),
        "the id shown names a real customer"
    );
    assert!(
        !served.output().contains(KEY),
        "the server printed the API key"
    );
}

/// A source of one of the kinds beyond DuckDB and PostgreSQL, picked in the form: a folder
/// that is not there is refused in the form with the fix, the right one is saved, and the
/// CLI and the API see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_connects_a_folder_of_files_in_the_browser() {
    let scene = Scene::new().await;
    let folder = scene.dir.path().join("exports");
    std::fs::create_dir(&folder).expect("the folder is made");
    scene.warehouse_sql(&format!(
        "COPY (SELECT 'ada@example.com' AS email) TO '{}' (HEADER)",
        folder.join("people.csv").display()
    ));
    let served = scene.serve(&[]).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().expect("a browser profile dir");
    let browser = start_browser(&driver, profile.path()).await;
    let mut camera = Camera::new();

    browser
        .goto(&served.url("/login"))
        .await
        .expect("the UI opens");
    type_into(&browser, "#token", &served.token).await;
    click_button(&browser, "Sign in").await;
    expect_heading(&browser, "Get started").await;
    browser
        .goto(&served.url("/sources/new"))
        .await
        .expect("the source form opens");
    expect_heading(&browser, "New source").await;
    type_into(&browser, "#name", "exports").await;
    wait_for(&browser, "#kind-files")
        .await
        .click()
        .await
        .expect("the kind is picked");
    let missing = folder.join("missing").display().to_string();
    type_into(&browser, "#files-folders", &missing).await;
    click_button(&browser, "Test and save").await;
    let problem = wait_for(&browser, ".alert.error")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        problem.contains(&format!("there is no folder ferry can read at {missing}")),
        "{problem}"
    );
    camera.shoot(&browser, "files-source-missing-folder").await;

    let folder = folder.display().to_string();
    type_into(&browser, "#files-folders", &folder).await;
    click_button(&browser, "Test and save").await;
    expect_heading(&browser, "Sources").await;
    camera.shoot(&browser, "files-source-saved").await;
    let listed = scene.ferry(&["connections"]).await.ok().stdout;
    assert!(
        listed.contains("exports") && listed.contains(&folder),
        "{listed}"
    );
    let saved = served
        .api()
        .get(served.url("/api/v1/connections/exports"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(saved["kind"], "files", "{saved}");
    assert_eq!(
        saved["config"]["folders"],
        serde_json::json!([folder]),
        "{saved}"
    );
}
