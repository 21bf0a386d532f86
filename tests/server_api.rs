//! End-to-end: the REST API of `ferry serve`, driven over real HTTP against the real binary.
//! Every assertion reads a status and a JSON body, what the workspace holds (through the API or
//! the CLI), or what the Stripe emulator holds and received.

mod common;

use common::{people_sql, Scene, Served, KEY};
use ferry_stripe_emulator::FaultConfig;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One HTTP answer, read in full.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    #[track_caller]
    fn json(&self) -> Json {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status.as_u16(),
                self.text.chars().take(2000).collect::<String>()
            )
        })
    }

    /// The `error.code` of an API error, after checking the whole error shape.
    #[track_caller]
    fn error_code(&self) -> String {
        let body = self.json();
        let code = body["error"]["code"].as_str().unwrap_or_else(|| {
            panic!("no error.code in a {} answer: {body}", self.status.as_u16())
        });
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.trim().is_empty(),
            "an error says what went wrong: {body}"
        );
        let content_type = self.header(CONTENT_TYPE.as_str());
        assert!(
            content_type.starts_with("application/json"),
            "an API error is JSON, not {content_type:?}: {body}"
        );
        code.to_string()
    }

    fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    #[track_caller]
    fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text.chars().take(2000).collect::<String>()
        );
        self
    }
}

/// Talks to a served workspace and keeps every body it received, for the checks that no
/// answer leaks a secret or an internal detail.
struct Probe {
    base: String,
    token: String,
    /// No default headers, no redirects followed, no cookies: every request says who it is.
    client: reqwest::Client,
    seen: Mutex<Vec<(u16, String)>>,
}

impl Probe {
    fn new(served: &Served) -> Probe {
        Probe {
            base: served.base.clone(),
            token: served.token.clone(),
            client: no_redirects(None),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the server answers");
        self.read(response).await
    }

    async fn read(&self, response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        self.seen
            .lock()
            .unwrap()
            .push((status.as_u16(), text.clone()));
        Reply {
            status,
            headers,
            text,
        }
    }

    /// An API request with the token.
    fn api(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.api(Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Json) -> Reply {
        self.send(self.api(Method::POST, path).json(&body)).await
    }

    async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.api(Method::POST, path)).await
    }

    async fn put(&self, path: &str, body: Json) -> Reply {
        self.send(self.api(Method::PUT, path).json(&body)).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(self.api(Method::DELETE, path)).await
    }

    /// Polls a run until it is no longer `running`.
    async fn wait_for_run(&self, id: &str, timeout: Duration) -> Json {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self
                .get(&format!("/api/v1/runs/{id}"))
                .await
                .expect(200)
                .json();
            if run["status"] != "running" {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} still running after {timeout:?}: {run}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Nothing the server answered or printed holds the Stripe key, and no error answer shows
    /// a panic, the workspace database or a path of the scene.
    fn assert_nothing_leaked(&self, scene: &Scene, served: &Served) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty());
        let scene_dir = scene.dir.path().display().to_string();
        let workspace = scene.workspace().display().to_string();
        for (status, body) in seen.iter() {
            assert!(
                !body.contains(KEY),
                "a {status} answer holds the full Stripe key: {body}"
            );
            if *status >= 400 {
                let lower = body.to_lowercase();
                for internal in ["panicked", "sqlite", "backtrace", ".rs:"] {
                    assert!(
                        !lower.contains(internal),
                        "a {status} answer shows {internal:?}: {body}"
                    );
                }
                assert!(
                    !body.contains(&workspace) && !body.contains(&scene_dir),
                    "a {status} answer shows a path of the workspace: {body}"
                );
            }
        }
        let output = served.output();
        assert!(
            !output.contains(KEY),
            "the server printed the Stripe key:\n{output}"
        );
        assert!(
            !output.contains("panicked"),
            "the server panicked:\n{output}"
        );
    }
}

fn no_redirects(local_address: Option<std::net::IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local_address)
        .build()
        .expect("a client")
}

/// `/api/v1/runs/{id}` → `/api/v1/runs/x`.
fn with_sample_params(path: &str) -> String {
    path.split('/')
        .map(|part| {
            if part.starts_with('{') && part.ends_with('}') {
                "x"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn stripe_connection(scene: &Scene, name: &str, key: &str) -> Json {
    json!({
        "name": name,
        "kind": "stripe",
        "api_key": key,
        "api_base": scene.emulator.url(),
    })
}

fn duckdb_connection(scene: &Scene, name: &str) -> Json {
    json!({ "name": name, "kind": "duckdb", "path": scene.warehouse().display().to_string() })
}

fn people_sync(name: &str, model: &str) -> Json {
    json!({
        "name": name,
        "model": model,
        "destination": "stripe",
        "behavior": "update-or-create",
        "key": { "column": "email", "field": "email" },
        "mappings": [
            { "column": "name", "field": "name" },
            { "column": "plan", "field": "metadata.plan" },
        ],
    })
}

/// Writes to `/v1/customers…` the emulator received so far.
fn customer_writes(scene: &Scene) -> usize {
    scene
        .stripe()
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/v1/customers"))
        .count()
}

/// A TCP server that answers nothing and keeps every byte it receives, to prove what was
/// (not) sent to it. Returns its `http://` address.
async fn capture_server() -> (String, std::sync::Arc<Mutex<String>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a capture port");
    let address = format!("http://{}", listener.local_addr().unwrap());
    let captured = std::sync::Arc::new(Mutex::new(String::new()));
    let sink = captured.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = socket.read(&mut buffer).await {
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            });
        }
    });
    (address, captured)
}

/// The hidden `_csrf` field's value in a UI page.
fn csrf_in_page(html: &str) -> Option<String> {
    let at = html.find("name=\"_csrf\"")?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let value = tag.split("value=\"").nth(1)?;
    Some(value[..value.find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_token_or_a_session_and_sign_in_is_guarded() {
    let scene = Scene::new().await;
    let served = scene.serve(&[]).await;
    assert!(
        served.token.starts_with("ferry_"),
        "the server printed a sign-in token:\n{}",
        served.output()
    );
    let probe = Probe::new(&served);
    let bare = no_redirects(None);

    // The OpenAPI document itself needs the token.
    let refused = probe
        .send(bare.get(probe.url("/api/openapi.json")))
        .await
        .expect(401);
    assert_eq!(refused.error_code(), "unauthorized");
    let document = probe.get("/api/openapi.json").await.expect(200).json();
    let paths = document["paths"]
        .as_object()
        .expect("paths in the document");

    let mut operations = Vec::new();
    for (path, item) in paths {
        // `/metrics` is where Prometheus looks for it, outside `/api/v1`, with the same token.
        assert!(path.starts_with("/api/v1/") || path == "/metrics", "{path}");
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(
        operations.len() >= 25,
        "the document lists every operation, not {}: {operations:?}",
        operations.len()
    );

    for (method, path) in &operations {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let url = probe.url(&with_sample_params(path));

        let anonymous = probe
            .send(bare.request(method.clone(), &url).json(&json!({})))
            .await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token: {}",
            anonymous.text
        );
        assert_eq!(anonymous.error_code(), "unauthorized", "{method} {path}");
        assert_eq!(
            anonymous.header("www-authenticate"),
            "Bearer realm=\"ferry\"",
            "{method} {path}: a 401 says which scheme to use"
        );

        let wrong = probe
            .send(
                bare.request(method.clone(), &url)
                    .header(AUTHORIZATION, "Bearer ferry_wrong")
                    .json(&json!({})),
            )
            .await;
        assert_eq!(
            wrong.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token: {}",
            wrong.text
        );
        assert_eq!(wrong.error_code(), "unauthorized", "{method} {path}");
        assert_eq!(
            wrong.header("www-authenticate"),
            "Bearer realm=\"ferry\", error=\"invalid_token\"",
            "{method} {path}"
        );

        let not_bearer = probe
            .send(
                bare.request(method.clone(), &url)
                    .header(AUTHORIZATION, format!("Basic {}", served.token)),
            )
            .await;
        assert_eq!(
            not_bearer.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );

        // With the token, the route exists (whatever the sample parameters make it answer).
        let authorized = probe
            .send(
                probe
                    .api(method.clone(), &with_sample_params(path))
                    .json(&json!({})),
            )
            .await;
        assert_ne!(
            authorized.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not routed"
        );
        assert_ne!(
            authorized.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert!(
            !authorized.text.contains("no such route"),
            "{method} {path} is documented but not routed: {}",
            authorized.text
        );
        assert!(
            authorized.status.as_u16() < 500,
            "{method} {path} with sample parameters: {} {}",
            authorized.status,
            authorized.text
        );
    }
    // The fallback really says "no such route", so the check above means something.
    let unknown = probe.get("/api/v1/nothing-here").await.expect(404);
    assert_eq!(unknown.error_code(), "not_found");
    assert!(unknown.message().contains("no such route"));

    // Every UI route sends a visitor without a session to the sign-in page.
    for (method, path) in ferry_server::UI_ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        for cookie in [None, Some("ferry_session=not-a-session")] {
            let mut request = bare
                .request(method.clone(), probe.url(path))
                .form(&[("_csrf", "whatever")]);
            if let Some(cookie) = cookie {
                request = request.header(COOKIE, cookie);
            }
            let reply = probe.send(request).await;
            assert!(
                matches!(reply.status.as_u16(), 302 | 303 | 307),
                "{method} {path} (cookie {cookie:?}) answered {} instead of a redirect: {}",
                reply.status,
                reply.text
            );
            assert_eq!(reply.header("location"), "/login", "{method} {path}");
        }
        // An API token is not a session: it does not open the UI.
        let with_token = probe
            .send(
                bare.request(method.clone(), probe.url(path))
                    .header(AUTHORIZATION, format!("Bearer {}", served.token)),
            )
            .await;
        assert_eq!(with_token.header("location"), "/login", "{method} {path}");
    }

    // htmx requests are told where to go instead of getting a page to swap in.
    let htmx = probe
        .send(bare.get(probe.url("/runs")).header("HX-Request", "true"))
        .await
        .expect(401);
    assert_eq!(htmx.header("hx-redirect"), "/login");

    for path in [
        "/login",
        "/healthz",
        "/assets/style.css",
        "/assets/htmx.min.js",
    ] {
        let reply = probe.send(bare.get(probe.url(path))).await;
        assert_eq!(reply.status, StatusCode::OK, "{path} is public");
        assert!(!reply.text.is_empty(), "{path}");
    }

    // Sign in: the cookie is HttpOnly and SameSite=Strict.
    let signed_in = probe
        .send(
            bare.post(probe.url("/login"))
                .form(&[("token", served.token.as_str())]),
        )
        .await;
    assert!(
        signed_in.status.is_redirection(),
        "{} {}",
        signed_in.status,
        signed_in.text
    );
    assert_eq!(signed_in.header("location"), "/");
    let set_cookie = signed_in.header(SET_COOKIE.as_str());
    assert!(
        set_cookie.starts_with("ferry_session="),
        "Set-Cookie: {set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly"), "Set-Cookie: {set_cookie}");
    assert!(
        set_cookie.contains("SameSite=Strict"),
        "Set-Cookie: {set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let patch = probe
        .send(bare.patch(probe.url("/api/v1/connections")))
        .await;
    assert_eq!(patch.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(patch.text.contains("method_not_allowed"), "{}", patch.text);
    // Behind a TLS-terminating proxy the cookie is only ever sent back over HTTPS.
    let behind_tls = probe
        .send(
            bare.post(probe.url("/login"))
                .header("x-forwarded-proto", "https")
                .form(&[("token", served.token.as_str())]),
        )
        .await;
    assert!(
        behind_tls.header(SET_COOKIE.as_str()).contains("; Secure"),
        "{}",
        behind_tls.header(SET_COOKIE.as_str())
    );
    assert!(
        !set_cookie.contains(&served.token),
        "the cookie is not the token"
    );
    let session = set_cookie.split(';').next().unwrap().to_string();

    let home = probe
        .send(bare.get(probe.url("/")).header(COOKIE, &session))
        .await
        .expect(200);
    assert!(
        home.header("content-type").starts_with("text/html"),
        "{}",
        home.header("content-type")
    );
    assert!(home.text.contains("<html"), "{}", home.text);

    // A session is not an API token: the API answers only to Bearer.
    let cookie_only = probe
        .send(
            bare.get(probe.url("/api/v1/connections"))
                .header(COOKIE, &session),
        )
        .await
        .expect(401);
    assert_eq!(cookie_only.error_code(), "unauthorized");

    // Changes need the session's CSRF token as well as the cookie.
    for path in ["/models/run", "/logout"] {
        let without = probe
            .send(
                bare.post(probe.url(path))
                    .header(COOKIE, &session)
                    .form(&[("sql", "select 1")]),
            )
            .await;
        assert_eq!(
            without.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            without.text
        );
        let wrong_field = probe
            .send(
                bare.post(probe.url(path))
                    .header(COOKIE, &session)
                    .form(&[("_csrf", "not-the-token")]),
            )
            .await;
        assert_eq!(wrong_field.status, StatusCode::FORBIDDEN, "{path}");
        let wrong_header = probe
            .send(
                bare.post(probe.url(path))
                    .header(COOKIE, &session)
                    .header("X-CSRF-Token", "not-the-token"),
            )
            .await;
        assert_eq!(wrong_header.status, StatusCode::FORBIDDEN, "{path}");
    }
    // The refused sign-out did not end the session; a sign-out with the token does.
    let csrf = csrf_in_page(&home.text).expect("the page carries the CSRF token");
    let out = probe
        .send(
            bare.post(probe.url("/logout"))
                .header(COOKIE, &session)
                .header("X-CSRF-Token", &csrf),
        )
        .await;
    assert!(out.status.is_redirection(), "{} {}", out.status, out.text);
    assert!(out.header(SET_COOKIE.as_str()).contains("Max-Age=0"));
    let after = probe
        .send(bare.get(probe.url("/")).header(COOKIE, &session))
        .await;
    assert_eq!(
        after.header("location"),
        "/login",
        "the session ended with the sign-out"
    );

    // A wrong token is refused with a page that says so; after 10 failures from one address
    // the next wrong one is refused with 429 and how long to wait, but the right token still
    // signs in from there: failing on purpose cannot lock the owner out. Another loopback
    // address keeps its own budget.
    let guesser = no_redirects(Some([127, 0, 0, 2].into()));
    for attempt in 1..=10 {
        let reply = probe
            .send(
                guesser
                    .post(probe.url("/login"))
                    .form(&[("token", "ferry_guess")]),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert!(
            reply.text.contains("not valid"),
            "the page says the token is not valid: {}",
            reply.text
        );
        assert!(reply.header(SET_COOKIE.as_str()).is_empty());
    }
    let limited = probe
        .send(
            guesser
                .post(probe.url("/login"))
                .form(&[("token", "ferry_guess")]),
        )
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text
    );
    assert!(limited.header(SET_COOKIE.as_str()).is_empty());
    let retry_after: u64 = limited
        .header("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After in seconds: {:?}", limited.headers));
    assert!((1..=6).contains(&retry_after), "Retry-After: {retry_after}");
    assert!(
        limited
            .text
            .contains(&format!("Wait {retry_after} seconds")),
        "{}",
        limited.text
    );
    let owner = probe
        .send(
            guesser
                .post(probe.url("/login"))
                .form(&[("token", served.token.as_str())]),
        )
        .await;
    assert!(
        owner.status.is_redirection(),
        "the right token signs in from a limited address: {} {}",
        owner.status,
        owner.text
    );
    assert!(owner
        .header(SET_COOKIE.as_str())
        .starts_with("ferry_session="));
    let still_limited = probe
        .send(
            guesser
                .post(probe.url("/login"))
                .form(&[("token", "ferry_guess")]),
        )
        .await;
    assert_eq!(still_limited.status, StatusCode::TOO_MANY_REQUESTS);
    let elsewhere = probe
        .send(
            bare.post(probe.url("/login"))
                .form(&[("token", served.token.as_str())]),
        )
        .await;
    assert!(
        elsewhere.status.is_redirection(),
        "another address may still sign in: {}",
        elsewhere.status
    );
    let wrong_elsewhere = probe
        .send(
            no_redirects(Some([127, 0, 0, 3].into()))
                .post(probe.url("/login"))
                .form(&[("token", "ferry_guess")]),
        )
        .await;
    assert_eq!(
        wrong_elsewhere.status,
        StatusCode::UNAUTHORIZED,
        "another address has its own budget"
    );
    let output = served.output();
    assert_eq!(
        output.matches("Too many failed sign-ins").count(),
        1,
        "a limited address is logged once, not at every attempt:\n{output}"
    );
    let session = elsewhere
        .header(SET_COOKIE.as_str())
        .split(';')
        .next()
        .unwrap()
        .to_string();
    probe
        .send(bare.get(probe.url("/runs")).header(COOKIE, &session))
        .await
        .expect(200);

    // Revoking the token closes the API to it and ends the sessions it opened; a new token of
    // the same name is another token and revives neither.
    scene
        .ferry(&["token", "revoke", "first-sign-in"])
        .await
        .ok();
    let revoked = probe.get("/api/v1/connections").await.expect(401);
    assert_eq!(revoked.error_code(), "unauthorized");
    let ended = probe
        .send(bare.get(probe.url("/runs")).header(COOKIE, &session))
        .await;
    assert_eq!(
        ended.header("location"),
        "/login",
        "a session of a revoked token ended: {} {}",
        ended.status,
        ended.text
    );
    let renewed = scene
        .ferry(&["token", "create", "first-sign-in"])
        .await
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(renewed.starts_with("ferry_") && renewed != served.token);
    probe.get("/api/v1/connections").await.expect(401);
    let still_ended = probe
        .send(bare.get(probe.url("/runs")).header(COOKIE, &session))
        .await;
    assert_eq!(still_ended.header("location"), "/login");
    probe
        .send(
            bare.get(probe.url("/api/v1/connections"))
                .header(AUTHORIZATION, format!("Bearer {renewed}")),
        )
        .await
        .expect(200);

    probe.assert_nothing_leaked(&scene, &served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_models_syncs_and_runs_through_the_api() {
    const N: usize = 12;
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(N as u32));
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);

    // ---- Connections ----
    let created = api
        .post(
            "/api/v1/connections",
            stripe_connection(&scene, "stripe", KEY),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(created["name"], "stripe");
    assert_eq!(created["kind"], "stripe");
    assert_eq!(created["secret"]["source"], "encrypted");
    let hint = created["secret"]["hint"].as_str().unwrap().to_string();
    assert!(hint.starts_with("sk_test_"), "{hint}");
    assert!(hint.ends_with(&KEY[KEY.len() - 4..]), "{hint}");
    assert!(hint.len() < KEY.len());
    assert_eq!(created["config"]["api_base"], scene.emulator.url());
    assert!(
        scene
            .stripe()
            .requests()
            .iter()
            .any(|r| r.path == "/v1/balance"),
        "the connection was tested against the emulator"
    );

    let bad_key = api
        .post(
            "/api/v1/connections",
            stripe_connection(&scene, "stripe-bad", "sk_test_wrong"),
        )
        .await
        .expect(422);
    assert_eq!(bad_key.error_code(), "connection_test_failed");
    api.get("/api/v1/connections/stripe-bad").await.expect(404);

    let duplicate = api
        .post(
            "/api/v1/connections",
            stripe_connection(&scene, "stripe", KEY),
        )
        .await
        .expect(409);
    assert_eq!(duplicate.error_code(), "conflict");

    api.post(
        "/api/v1/connections",
        duckdb_connection(&scene, "warehouse"),
    )
    .await
    .expect(201);

    let listed = api.get("/api/v1/connections").await.expect(200).json();
    let names: Vec<&str> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(names.contains(&"stripe") && names.contains(&"warehouse"));
    let warehouse = api
        .get("/api/v1/connections/warehouse")
        .await
        .expect(200)
        .json();
    assert_eq!(warehouse["kind"], "duckdb");
    assert_eq!(
        warehouse["config"]["path"],
        scene.warehouse().display().to_string()
    );
    assert!(warehouse["secret"].is_null());

    // A replace without a key keeps the stored one; the saved connection still works.
    let replaced = api
        .put(
            "/api/v1/connections/stripe",
            json!({ "kind": "stripe", "api_base": scene.emulator.url(), "max_rps": 20 }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(replaced["secret"]["hint"], hint.as_str());
    assert_eq!(replaced["config"]["max_rps"], 20);
    // A replace with a key that does not work changes nothing.
    let refused = api
        .put(
            "/api/v1/connections/stripe",
            json!({ "kind": "stripe", "api_key": "sk_test_wrong", "api_base": scene.emulator.url() }),
        )
        .await
        .expect(422);
    assert_eq!(refused.error_code(), "connection_test_failed");
    let renamed = api
        .put(
            "/api/v1/connections/stripe",
            json!({ "name": "other", "kind": "stripe" }),
        )
        .await
        .expect(422);
    assert_eq!(renamed.error_code(), "invalid");
    // The stored key only ever goes to the server it was saved for: a replace that points the
    // connection elsewhere, or turns it into another kind, must bring its own secret.
    let (elsewhere, captured) = capture_server().await;
    let moved = api
        .put(
            "/api/v1/connections/stripe",
            json!({ "kind": "stripe", "api_base": elsewhere }),
        )
        .await
        .expect(422);
    assert_eq!(moved.error_code(), "invalid");
    assert!(moved.message().contains("API key again"), "{}", moved.text);
    // Nor can a caller make the server send one of its environment variables anywhere.
    for variable in ["FERRY_MASTER_KEY", "HOME"] {
        let exfiltrate = api
            .post(
                "/api/v1/connections",
                json!({ "name": "exfil", "kind": "stripe", "api_key_env": variable, "api_base": elsewhere }),
            )
            .await
            .expect(422);
        assert_eq!(exfiltrate.error_code(), "secret_env_not_allowed");
        assert!(
            exfiltrate.message().contains("--allow-secret-env"),
            "{}",
            exfiltrate.text
        );
    }
    let unsaved = api
        .put(
            "/api/v1/connections/stripe",
            json!({ "kind": "stripe", "api_base": elsewhere, "skip_test": true }),
        )
        .await
        .expect(422);
    assert_eq!(unsaved.error_code(), "invalid");
    let other_kind = api
        .put("/api/v1/connections/stripe", json!({ "kind": "postgres" }))
        .await
        .expect(422);
    assert_eq!(other_kind.error_code(), "invalid");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        captured.lock().unwrap().as_str(),
        "",
        "nothing was sent to the other server"
    );
    let kept = api
        .get("/api/v1/connections/stripe")
        .await
        .expect(200)
        .json();
    assert_eq!(kept["kind"], "stripe");
    assert_eq!(kept["config"]["api_base"], scene.emulator.url());
    let tested = api
        .post_empty("/api/v1/connections/stripe/test")
        .await
        .expect(200)
        .json();
    assert_eq!(tested["ok"], true, "{tested}");
    assert_eq!(
        api.get("/api/v1/connections/stripe")
            .await
            .expect(200)
            .json()["secret"]["hint"],
        hint.as_str()
    );
    api.post_empty("/api/v1/connections/nope/test")
        .await
        .expect(404);

    // The CLI sees what the API saved.
    let cli = scene.ferry(&["connections"]).await.ok();
    assert!(
        cli.stdout.contains("stripe") && cli.stdout.contains("warehouse"),
        "{}",
        cli.stdout
    );
    assert!(!cli.stdout.contains(KEY));

    // Bodies the API cannot read answer in its error shape.
    let unknown_field = api
        .post(
            "/api/v1/connections",
            json!({ "name": "x", "kind": "stripe", "api_keyy": "sk_test_x" }),
        )
        .await;
    assert!(
        unknown_field.status.is_client_error(),
        "{}",
        unknown_field.status
    );
    assert_eq!(unknown_field.error_code(), "invalid");
    assert!(
        unknown_field
            .message()
            .contains("`api_keyy` is not a setting of a stripe connection"),
        "{}",
        unknown_field.text
    );
    let malformed = api
        .send(
            api.api(Method::POST, "/api/v1/connections")
                .header(CONTENT_TYPE, "application/json")
                .body("{\"name\": \"x\", "),
        )
        .await;
    assert!(malformed.status.is_client_error(), "{}", malformed.status);
    assert_eq!(malformed.error_code(), "invalid_body");
    let not_json = api
        .send(api.api(Method::POST, "/api/v1/connections").body("name=x"))
        .await;
    assert!(not_json.status.is_client_error(), "{}", not_json.status);
    assert_eq!(not_json.error_code(), "invalid_body");
    let wrong_kind = api
        .post(
            "/api/v1/connections",
            json!({ "name": "x", "kind": "oracle" }),
        )
        .await;
    assert!(wrong_kind.status.is_client_error());
    assert_eq!(wrong_kind.error_code(), "invalid");
    assert!(
        wrong_kind
            .message()
            .contains("`kind` is `oracle`, which is not a kind of connection ferry knows"),
        "{}",
        wrong_kind.text
    );
    let bad_name = api
        .post(
            "/api/v1/connections",
            json!({ "name": "../../etc", "kind": "duckdb", "path": "x.duckdb", "skip_test": true }),
        )
        .await
        .expect(422);
    assert_eq!(bad_name.error_code(), "invalid");

    // ---- Models ----
    let model = api
        .post(
            "/api/v1/models",
            json!({ "name": "people", "connection": "warehouse", "sql": "select * from people order by id" }),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(model["name"], "people");
    assert_eq!(model["connection"], "warehouse");
    let typo = api
        .post(
            "/api/v1/models",
            json!({ "name": "typo", "connection": "warehouse", "sql": "select * from peple" }),
        )
        .await
        .expect(422);
    assert_eq!(typo.error_code(), "query_failed");
    assert!(typo.message().contains("peple"), "{}", typo.text);
    let writes = api
        .post(
            "/api/v1/models",
            json!({ "name": "wipe", "connection": "warehouse", "sql": "delete from people" }),
        )
        .await
        .expect(422);
    assert!(!writes.error_code().is_empty());
    let on_stripe = api
        .post(
            "/api/v1/models",
            json!({ "name": "wrong", "connection": "stripe", "sql": "select 1" }),
        )
        .await;
    assert!(on_stripe.status.is_client_error(), "{}", on_stripe.status);
    let missing = api
        .post(
            "/api/v1/models",
            json!({ "name": "lost", "connection": "nope", "sql": "select 1" }),
        )
        .await
        .expect(404);
    assert_eq!(missing.error_code(), "not_found");
    for name in ["typo", "wipe", "wrong", "lost"] {
        api.get(&format!("/api/v1/models/{name}")).await.expect(404);
    }
    let count = api
        .post(
            "/api/v1/queries/preview",
            json!({ "connection": "warehouse", "sql": "select count(*) as n from people" }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(count["columns"][0]["name"], "n");
    let n = &count["rows"][0][0];
    assert!(
        n.as_u64() == Some(N as u64) || n.as_str() == Some(&N.to_string()),
        "the refused model deleted nothing: {count}"
    );

    let preview = api
        .post_empty("/api/v1/models/people/preview?limit=3")
        .await
        .expect(200)
        .json();
    let columns: Vec<&str> = preview["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["id", "email", "name", "phone", "plan"]);
    assert!(preview["columns"][1]["type"].is_string());
    let rows = preview["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][1], "person1@example.com");
    assert_eq!(rows[2][2], "Person 3");
    let bad_limit = api
        .post_empty("/api/v1/models/people/preview?limit=lots")
        .await;
    assert!(bad_limit.status.is_client_error());
    assert_eq!(bad_limit.error_code(), "invalid_query");
    api.post_empty("/api/v1/models/nope/preview")
        .await
        .expect(404);

    let unsaved = api
        .post(
            "/api/v1/queries/preview",
            json!({ "connection": "warehouse", "sql": "select email, upper(plan) as plan from people where id <= 2 order by id" }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        unsaved["rows"],
        json!([
            ["person1@example.com", "PRO"],
            ["person2@example.com", "FREE"]
        ])
    );

    let used = api
        .delete("/api/v1/connections/warehouse")
        .await
        .expect(409);
    assert_eq!(used.error_code(), "conflict");
    api.get("/api/v1/connections/warehouse").await.expect(200);
    let gone = api.delete("/api/v1/connections/nope").await.expect(404);
    assert_eq!(gone.error_code(), "not_found");
    let cli = scene.ferry(&["model", "list"]).await.ok();
    assert!(cli.stdout.contains("people"), "{}", cli.stdout);

    // ---- Syncs ----
    let sync = api
        .post("/api/v1/syncs", people_sync("people-to-stripe", "people"))
        .await
        .expect(201)
        .json();
    assert_eq!(sync["name"], "people-to-stripe");
    assert_eq!(sync["spec"]["key"]["column"], "email");
    assert!(sync["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(sync["last_run"].is_null());
    // Another object: its own key fields, checked as the CLI checks them.
    let mut products = people_sync("people-as-products", "people");
    products["object"] = json!("product");
    let refused = api
        .post("/api/v1/syncs", products.clone())
        .await
        .expect(422);
    assert!(
        refused
            .message()
            .contains("`email` is not a Stripe Product field"),
        "{}",
        refused.text
    );
    products["key"]["field"] = json!("id");
    let saved = api.post("/api/v1/syncs", products).await.expect(201).json();
    assert_eq!(saved["spec"]["object"], "product");
    let preview = api
        .post_empty("/api/v1/syncs/people-as-products/preview")
        .await
        .expect(200)
        .json();
    assert_eq!(preview["create"], N, "{preview}");
    api.delete("/api/v1/syncs/people-as-products")
        .await
        .expect(204);
    // Mirror: a customer sync needs the opt-in; the settings are saved and shown.
    let mut mirrored = people_sync("people-mirror", "people");
    mirrored["behavior"] = json!("mirror");
    let refused = api
        .post("/api/v1/syncs", mirrored.clone())
        .await
        .expect(422);
    assert!(
        refused.message().contains("--delete-customers"),
        "{}",
        refused.text
    );
    mirrored["mirror"] = json!({"max_retire_percent": 20, "delete_customers": true});
    let saved = api.post("/api/v1/syncs", mirrored).await.expect(201).json();
    assert_eq!(
        saved["spec"]["mirror"],
        json!({"max_retire_percent": 20, "delete_customers": true, "cancel_subscriptions_now": false, "void_open_invoices": false}),
        "{saved}"
    );
    // The run input takes `allow_mass_retire` (an unknown field would be a 400).
    api.post(
        "/api/v1/syncs/nope/runs",
        json!({"allow_mass_retire": true}),
    )
    .await
    .expect(404);
    api.delete("/api/v1/syncs/people-mirror").await.expect(204);
    let mut no_column = people_sync("broken", "people");
    no_column["mappings"][0]["column"] = json!("nickname");
    let refused = api.post("/api/v1/syncs", no_column).await.expect(422);
    assert!(
        refused.message().contains("nickname"),
        "the error names the column: {}",
        refused.text
    );
    api.get("/api/v1/syncs/broken").await.expect(404);
    let duplicate = api
        .post("/api/v1/syncs", people_sync("people-to-stripe", "people"))
        .await
        .expect(409);
    assert_eq!(duplicate.error_code(), "conflict");
    let model_in_use = api.delete("/api/v1/models/people").await.expect(409);
    assert_eq!(model_in_use.error_code(), "conflict");
    let stripe_in_use = api.delete("/api/v1/connections/stripe").await.expect(409);
    assert_eq!(stripe_in_use.error_code(), "conflict");
    // A model change that drops a column a sync maps is refused, naming the sync.
    let breaking = api
        .put(
            "/api/v1/models/people",
            json!({ "connection": "warehouse", "sql": "select email, name from people" }),
        )
        .await
        .expect(422);
    assert!(
        breaking
            .message()
            .contains("sync 'people-to-stripe' reads model 'people'")
            && breaking.message().contains("plan"),
        "{}",
        breaking.text
    );
    let model = api.get("/api/v1/models/people").await.expect(200).json();
    assert_eq!(
        model["sql"], "select * from people order by id",
        "the model was kept"
    );

    let writes_before = customer_writes(&scene);
    let preview = api
        .post_empty("/api/v1/syncs/people-to-stripe/preview")
        .await
        .expect(200)
        .json();
    assert_eq!(preview["rows"], N);
    assert_eq!(preview["create"], N);
    assert_eq!(preview["update"], 0);
    assert_eq!(preview["rejected"], 0);
    assert_eq!(
        customer_writes(&scene),
        writes_before,
        "a preview writes nothing"
    );
    assert!(scene.stripe().customers().is_empty());

    // ---- Runs ----
    let started = api
        .post_empty("/api/v1/syncs/people-to-stripe/runs")
        .await
        .expect(202)
        .json();
    let run_id = started["id"].as_str().expect("a run id").to_string();
    assert_eq!(started["sync"], "people-to-stripe");
    assert!(
        ["running", "completed"].contains(&started["status"].as_str().unwrap()),
        "{started}"
    );
    let run = api.wait_for_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["counts"]["created"], N, "{run}");
    assert_eq!(run["counts"]["rows"], N, "{run}");
    assert!(run["finished_at"].is_string());
    assert!(run["error"].is_null());
    assert!(run["progress"].is_null());

    let customers = scene.stripe().customers();
    assert_eq!(customers.len(), N, "the emulator holds exactly the rows");
    for i in 1..=N {
        let found = scene.customers_with_email(&format!("person{i}@example.com"));
        assert_eq!(found.len(), 1, "person {i}");
        assert_eq!(found[0]["name"], format!("Person {i}"));
        assert_eq!(
            found[0]["metadata"]["plan"],
            if i % 2 == 0 { "free" } else { "pro" }
        );
    }

    // Pages by row number: the first page's `next_after` starts the second.
    let first = api
        .get(&format!(
            "/api/v1/runs/{run_id}/records?outcome=created&limit=1"
        ))
        .await
        .expect(200)
        .json();
    assert_eq!(first["next_after"], 1, "{first}");
    let page = api
        .get(&format!(
            "/api/v1/runs/{run_id}/records?outcome=created&limit=2&after=1"
        ))
        .await
        .expect(200)
        .json();
    assert_eq!(page["total"], N);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["next_after"], 3, "{page}");
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{page}");
    assert_eq!(
        records
            .iter()
            .map(|r| r["row"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    for record in records {
        assert_eq!(record["outcome"], "created");
        let id = record["stripe_id"].as_str().unwrap();
        let customer = scene.stripe().customer(id).expect("the customer exists");
        assert_eq!(customer["email"], record["key"]);
        // The emulator's customers are not in Stripe's dashboard: no link points there.
        assert!(record["stripe_url"].is_null(), "{record}");
        assert!(record["request_id"].as_str().unwrap().starts_with("req_"));
    }
    let none = api
        .get(&format!("/api/v1/runs/{run_id}/records?outcome=rejected"))
        .await
        .expect(200)
        .json();
    assert_eq!(none["total"], 0);
    assert_eq!(none["records"], json!([]));
    let bad_outcome = api
        .get(&format!("/api/v1/runs/{run_id}/records?outcome=exploded"))
        .await;
    assert!(bad_outcome.status.is_client_error());
    assert_eq!(bad_outcome.error_code(), "invalid_query");

    let csv = api
        .get(&format!("/api/v1/runs/{run_id}/records.csv"))
        .await
        .expect(200);
    assert!(csv.header("content-type").starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), N + 1, "{}", csv.text);
    assert!(
        lines[0].starts_with("row,key,outcome,stripe_id"),
        "{}",
        lines[0]
    );
    assert!(lines[1..].iter().all(|l| l.contains(",created,cus_")));
    assert!(lines[1].starts_with("1,person1@example.com,"));

    let listed = api
        .get("/api/v1/runs?sync=people-to-stripe")
        .await
        .expect(200)
        .json();
    assert_eq!(listed["runs"][0]["id"], run_id.as_str());
    let others = api.get("/api/v1/runs?sync=nope").await.expect(200).json();
    assert_eq!(others["runs"], json!([]));
    let shown = api
        .get("/api/v1/syncs/people-to-stripe")
        .await
        .expect(200)
        .json();
    assert_eq!(shown["last_run"]["id"], run_id.as_str());
    let cli = scene.ferry(&["runs", "people-to-stripe"]).await.ok();
    assert!(cli.stdout.contains(&run_id), "{}", cli.stdout);

    let not_running = api
        .post_empty(&format!("/api/v1/runs/{run_id}/cancel"))
        .await
        .expect(409);
    assert_eq!(not_running.error_code(), "not_running");

    // A second run finds nothing to do and writes nothing.
    let writes_before = customer_writes(&scene);
    let second = api
        .post("/api/v1/syncs/people-to-stripe/runs", json!({}))
        .await
        .expect(202)
        .json();
    let second_id = second["id"].as_str().unwrap().to_string();
    assert_ne!(second_id, run_id);
    let second = api.wait_for_run(&second_id, Duration::from_secs(60)).await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["counts"]["unchanged"], N, "{second}");
    assert_eq!(second["counts"]["created"], 0);
    assert_eq!(second["counts"]["updated"], 0);
    assert_eq!(
        customer_writes(&scene),
        writes_before,
        "no write on an unchanged run"
    );
    assert_eq!(scene.stripe().customers().len(), N);
    let listed = api
        .get("/api/v1/runs?sync=people-to-stripe&limit=1")
        .await
        .expect(200)
        .json();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
    assert_eq!(listed["runs"][0]["id"], second_id.as_str());

    let bad_run_body = api
        .send(
            api.api(Method::POST, "/api/v1/syncs/people-to-stripe/runs")
                .header(CONTENT_TYPE, "application/json")
                .body("{\"full_resync\": maybe}"),
        )
        .await;
    assert!(bad_run_body.status.is_client_error());
    assert_eq!(bad_run_body.error_code(), "invalid_body");
    api.post_empty("/api/v1/syncs/nope/runs").await.expect(404);
    api.post_empty("/api/v1/syncs/nope/preview")
        .await
        .expect(404);

    // ---- Errors ----
    let no_run = api.get("/api/v1/runs/does-not-exist").await.expect(404);
    assert_eq!(no_run.error_code(), "not_found");
    for path in [
        "/api/v1/runs/does-not-exist/records",
        "/api/v1/runs/does-not-exist/records.csv",
    ] {
        assert_eq!(api.get(path).await.expect(404).error_code(), "not_found");
    }
    let huge = "x".repeat(ferry_server::MAX_BODY_BYTES + 64 * 1024);
    let too_large = api
        .post(
            "/api/v1/queries/preview",
            json!({ "connection": "warehouse", "sql": huge }),
        )
        .await
        .expect(413);
    assert!(!too_large.error_code().is_empty());
    // The run endpoint reads its optional body itself; too large is still a JSON 413.
    let too_large = api
        .send(
            api.api(Method::POST, "/api/v1/syncs/people-to-stripe/runs")
                .header(CONTENT_TYPE, "application/json")
                .body(huge),
        )
        .await
        .expect(413);
    assert_eq!(too_large.error_code(), "invalid_body");
    // A path segment that is not UTF-8 is refused in the same shape.
    for path in [
        "/api/v1/connections/%FF",
        "/api/v1/runs/%FF/records",
        "/api/v1/runs/%FF/records.csv",
    ] {
        let reply = api.get(path).await.expect(400);
        assert_eq!(reply.error_code(), "invalid_path", "{path}");
    }
    let traversal = api.get("/api/v1/connections/..%2F..%2Fetc").await;
    assert!(traversal.status.is_client_error());
    assert!(!traversal.error_code().is_empty());

    // Deleting in dependency order works, and leaves the workspace empty.
    api.delete("/api/v1/syncs/people-to-stripe")
        .await
        .expect(204);
    api.delete("/api/v1/models/people").await.expect(204);
    api.delete("/api/v1/connections/warehouse")
        .await
        .expect(204);
    api.delete("/api/v1/connections/warehouse")
        .await
        .expect(404);
    assert_eq!(
        api.get("/api/v1/syncs").await.expect(200).json()["syncs"],
        json!([])
    );

    api.assert_nothing_leaked(&scene, &served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_sync_refuses_a_second_run_and_can_be_cancelled() {
    const N: usize = 200;
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(N as u32));
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    api.post(
        "/api/v1/connections",
        stripe_connection(&scene, "stripe", KEY),
    )
    .await
    .expect(201);
    api.post(
        "/api/v1/connections",
        duckdb_connection(&scene, "warehouse"),
    )
    .await
    .expect(201);
    api.post(
        "/api/v1/models",
        json!({ "name": "people", "connection": "warehouse", "sql": "select * from people order by id" }),
    )
    .await
    .expect(201);
    api.post("/api/v1/syncs", people_sync("slow", "people"))
        .await
        .expect(201);

    // Every Stripe request now takes a while, so the run is still going when we look.
    scene.stripe().set_faults(FaultConfig {
        latency: Duration::from_millis(400),
        ..FaultConfig::default()
    });
    let started = api
        .post_empty("/api/v1/syncs/slow/runs")
        .await
        .expect(202)
        .json();
    let run_id = started["id"].as_str().unwrap().to_string();
    assert_eq!(started["status"], "running", "{started}");

    let second = api.post_empty("/api/v1/syncs/slow/runs").await.expect(409);
    assert_eq!(second.error_code(), "conflict");
    // A storm of refused starts (a script retrying, a double click, scheduler ticks) is routine:
    // each is answered 409, and none is a warning in the server's log.
    let warnings_before = served.output().matches(" WARN ").count();
    // All at once, so the storm is over long before the run.
    let storm: Vec<_> = (0..40)
        .map(|_| {
            let start = api.api(Method::POST, "/api/v1/syncs/slow/runs");
            tokio::spawn(async move {
                let answer = start.send().await.expect("an answer");
                (answer.status(), answer.text().await.unwrap_or_default())
            })
        })
        .collect();
    for refused in storm {
        let (status, body) = refused.await.unwrap();
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    let output = served.output();
    assert_eq!(
        output.matches(" WARN ").count(),
        warnings_before,
        "refused starts were logged as warnings:\n{output}"
    );
    assert!(!output.contains("could not start"), "{output}");
    // Nor can the sync be removed from under its run.
    let removed = api.delete("/api/v1/syncs/slow").await.expect(409);
    assert_eq!(removed.error_code(), "conflict");
    let running = api
        .get(&format!("/api/v1/runs/{run_id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(running["status"], "running");
    assert!(running["progress"].is_object(), "{running}");

    // Let some creates land, then stop it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while scene.stripe().customers().is_empty() {
        assert!(Instant::now() < deadline, "the slow run never wrote");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The run's page lists the records as Stripe confirms them, the newest first, each one a
    // customer that exists in Stripe.
    let (cookie, _) = sign_in(&api).await;
    let ui = |path: String| {
        let request = api.client.get(api.url(&path)).header(COOKIE, &cookie);
        api.send(request)
    };
    let page = ui(format!("/runs/{run_id}")).await.expect(200);
    assert!(
        page.text
            .contains(&format!("hx-get=\"/runs/{run_id}/records/live\"")),
        "{}",
        page.text
    );
    let listed_ids = |html: &str| -> Vec<String> {
        html.split("cus_")
            .skip(1)
            .map(|rest| {
                let id: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                format!("cus_{id}")
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_listed = loop {
        let live = ui(format!("/runs/{run_id}/records/live")).await.expect(200);
        let ids = listed_ids(&live.text);
        if !ids.is_empty() {
            assert!(live.text.contains("the newest first"), "{}", live.text);
            assert!(live.text.contains("every 1s"), "{}", live.text);
            break ids;
        }
        assert!(Instant::now() < deadline, "no record listed: {}", live.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let in_stripe: std::collections::HashSet<String> = scene
        .stripe()
        .customers()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    for id in &first_listed {
        assert!(in_stripe.contains(id), "{id} is listed but not in Stripe");
    }
    // More are confirmed while we watch, and the list follows.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = ui(format!("/runs/{run_id}/records/live")).await.expect(200);
        if listed_ids(&live.text)
            .iter()
            .any(|id| !first_listed.contains(id))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the list never grew: {}",
            live.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cancelled = api
        .post_empty(&format!("/api/v1/runs/{run_id}/cancel"))
        .await
        .expect(202)
        .json();
    assert_eq!(cancelled["id"], run_id.as_str());
    let ended = api.wait_for_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    let created = ended["counts"]["created"].as_u64().unwrap() as usize;
    assert!(created > 0 && created < N, "{ended}");
    assert_eq!(
        scene.stripe().customers().len(),
        created,
        "the run recorded every customer Stripe created: {ended}"
    );
    let page = api
        .get(&format!("/api/v1/runs/{run_id}/records?outcome=created"))
        .await
        .expect(200)
        .json();
    assert_eq!(page["total"], created);
    let again = api
        .post_empty(&format!("/api/v1/runs/{run_id}/cancel"))
        .await
        .expect(409);
    assert_eq!(again.error_code(), "not_running");

    // Once it ended, the sync can run again, and the next run finishes the job.
    scene.stripe().set_faults(FaultConfig::default());
    let next = api
        .post_empty("/api/v1/syncs/slow/runs")
        .await
        .expect(202)
        .json();
    let next = api
        .wait_for_run(next["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(next["status"], "completed", "{next}");
    assert_eq!(next["counts"]["created"], N - created, "{next}");
    assert_eq!(next["counts"]["unchanged"], created, "{next}");
    assert_eq!(scene.stripe().customers().len(), N);

    // Once nothing runs, the sync can be removed, and its runs go with it.
    api.delete("/api/v1/syncs/slow").await.expect(204);
    api.get(&format!("/api/v1/runs/{run_id}")).await.expect(404);

    api.assert_nothing_leaked(&scene, &served);
}

/// Every attempt a run made to Stripe for a record is kept with the record, as sent and as
/// answered: the API lists them (retries included, each with Stripe's request id) and the UI
/// shows them, and the API key is in none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_records_requests_to_stripe_are_kept_and_shown_without_the_key() {
    const N: usize = 24;
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(N as u32));
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    people_model(&scene, &api).await;
    api.post("/api/v1/syncs", people_sync("people", "people"))
        .await
        .expect(201);
    // Some creates fail once with a 500 and are retried under the same idempotency key.
    scene.stripe().set_faults(FaultConfig {
        server_error_rate: 0.3,
        ..FaultConfig::default()
    });
    let started = api
        .post_empty("/api/v1/syncs/people/runs")
        .await
        .expect(202)
        .json();
    let run_id = started["id"].as_str().unwrap().to_string();
    let ended = api.wait_for_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["counts"]["created"], N, "{ended}");

    // What the emulator received for the creates, attempt by attempt.
    let received: std::collections::BTreeSet<(String, Option<u16>, Option<String>)> = scene
        .stripe()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/customers")
        .map(|r| (r.request_id, r.status, r.idempotency_key))
        .collect();
    assert!(
        received
            .iter()
            .any(|(_, status, _)| status.is_some_and(|status| status >= 500)),
        "the faults made some create fail once: {received:?}"
    );
    let records = api
        .get(&format!("/api/v1/runs/{run_id}/records"))
        .await
        .expect(200)
        .json();
    let records = records["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), N);
    let mut logged = std::collections::BTreeSet::new();
    let mut retried_rows = 0;
    for record in &records {
        let row = record["row"].as_u64().unwrap();
        let detail = api
            .get(&format!("/api/v1/runs/{run_id}/records/{row}"))
            .await
            .expect(200)
            .json();
        assert_eq!(detail["record"]["key"], record["key"], "{detail}");
        let requests = detail["requests"].as_array().unwrap();
        let last = requests
            .last()
            .unwrap_or_else(|| panic!("row {row} logged no request: {detail}"));
        // The create as sent: the key's email among the parameters, under an idempotency key.
        assert_eq!(last["method"], "POST", "{detail}");
        assert_eq!(last["path"], "/v1/customers", "{detail}");
        assert_eq!(last["status"], 200, "{detail}");
        assert!(
            last["request_params"]
                .as_array()
                .unwrap()
                .contains(&json!(["email", record["key"]])),
            "{detail}"
        );
        let answer: Json = serde_json::from_str(last["response_body"].as_str().unwrap()).unwrap();
        assert_eq!(answer["id"], record["stripe_id"], "{detail}");
        let key = last["idempotency_key"].as_str().unwrap();
        if requests.len() > 1 {
            retried_rows += 1;
            for earlier in &requests[..requests.len() - 1] {
                assert!(earlier["status"].as_u64().unwrap() >= 500, "{detail}");
                assert_eq!(
                    earlier["idempotency_key"], key,
                    "a retry reuses the key: {detail}"
                );
            }
        }
        for request in requests {
            logged.insert((
                request["request_id"].as_str().unwrap().to_string(),
                request["status"].as_u64().map(|status| status as u16),
                request["idempotency_key"].as_str().map(str::to_string),
            ));
        }
    }
    assert!(retried_rows > 0, "some row shows its failed attempt");
    assert_eq!(logged, received, "every attempt, as Stripe saw it");

    // The UI shows a row's requests, its failed attempt included.
    let row = records[0]["row"].as_u64().unwrap();
    let (cookie, _) = sign_in(&api).await;
    let page = api
        .send(
            api.client
                .get(api.url(&format!("/runs/{run_id}/records/{row}")))
                .header(COOKIE, &cookie),
        )
        .await
        .expect(200);
    assert!(page.text.contains("POST /v1/customers"), "{}", page.text);
    assert!(
        page.text.contains(records[0]["key"].as_str().unwrap()),
        "{}",
        page.text
    );
    let run_page = api
        .send(
            api.client
                .get(api.url(&format!("/runs/{run_id}")))
                .header(COOKIE, &cookie),
        )
        .await
        .expect(200);
    assert!(
        run_page
            .text
            .contains(&format!("href=\"/runs/{run_id}/records/{row}\"")),
        "the run page links each row to its requests"
    );
    let missing = api
        .get(&format!("/api/v1/runs/{run_id}/records/{}", N + 1))
        .await
        .expect(404);
    assert!(missing
        .message()
        .contains("unchanged rows are only counted"));
    api.assert_nothing_leaked(&scene, &served);
}

/// A server with room for one run queues the next: the API answers 202 `queued`, the queue and
/// the sync's page show it waiting, and it runs as soon as the first run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waits_in_the_queue_while_the_server_is_full_and_runs_once_there_is_room() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(200));
    let served = scene.serve(&["--max-runs", "1"]).await;
    let api = Probe::new(&served);
    people_model(&scene, &api).await;
    api.post("/api/v1/syncs", people_sync("first", "people"))
        .await
        .expect(201);
    let mut second = people_sync("second", "people");
    second["mappings"] = json!([{ "column": "name", "field": "name" }]);
    api.post("/api/v1/syncs", second).await.expect(201);
    scene.stripe().set_faults(FaultConfig {
        // Slow enough that the first run outlasts the second's wait for room.
        latency: Duration::from_secs(2),
        ..FaultConfig::default()
    });
    let first = api
        .post_empty("/api/v1/syncs/first/runs")
        .await
        .expect(202)
        .json();
    assert_eq!(first["status"], "running", "{first}");
    // No room: after waiting a while for one, the answer says where the run is.
    let queued = api
        .post_empty("/api/v1/syncs/second/runs")
        .await
        .expect(202)
        .json();
    assert_eq!(queued["status"], "queued", "{queued}");
    let request_id = queued["request"].as_str().unwrap().to_string();
    let queue = api.get("/api/v1/queue").await.expect(200).json();
    let waiting: Vec<&Json> = queue
        .as_array()
        .unwrap()
        .iter()
        .filter(|request| request["sync"] == "second")
        .collect();
    assert_eq!(waiting.len(), 1, "{queue}");
    assert_eq!(
        (
            waiting[0]["request"].as_str(),
            waiting[0]["status"].as_str()
        ),
        (Some(request_id.as_str()), Some("queued")),
        "{queue}"
    );
    let (cookie, _) = sign_in(&api).await;
    let page = api
        .send(
            api.client
                .get(api.url("/syncs/second"))
                .header(COOKIE, &cookie),
        )
        .await
        .expect(200);
    assert!(page.text.contains("id=\"queued-run\""), "{}", page.text);
    assert!(page.text.contains("it starts when a server has room"));

    // Once the first run ends, the queued one runs, and both did their work.
    scene.stripe().set_faults(FaultConfig::default());
    let ended = api
        .wait_for_run(first["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let second_run = loop {
        let runs = api.get("/api/v1/runs?sync=second").await.expect(200).json();
        if let Some(run) = runs["runs"].as_array().unwrap().first() {
            break run["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the queued run never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let done = api.wait_for_run(&second_run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(scene.stripe().customers().len(), 200);
    let page = api
        .send(
            api.client
                .get(api.url("/syncs/second"))
                .header(COOKIE, &cookie),
        )
        .await
        .expect(200);
    assert!(!page.text.contains("id=\"queued-run\""), "{}", page.text);
    api.assert_nothing_leaked(&scene, &served);
}

/// A model is SQL from whoever holds a token, run by the server. It must not read the server's
/// files: the workspace's `master.key` decrypts every stored secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_cannot_read_the_servers_files() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(1));
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    api.post(
        "/api/v1/connections",
        duckdb_connection(&scene, "warehouse"),
    )
    .await
    .expect(201);
    let master_key = scene.workspace().join("master.key");
    let secret = std::fs::read(&master_key).expect("the workspace has a master key");
    for function in ["read_text", "read_blob"] {
        let sql = format!("select content from {function}('{}')", master_key.display());
        let reply = api
            .post(
                "/api/v1/queries/preview",
                json!({ "connection": "warehouse", "sql": sql }),
            )
            .await;
        assert!(
            reply.status.is_client_error(),
            "{function} read the master key: {}",
            reply.text
        );
        let text = String::from_utf8_lossy(&secret);
        assert!(!reply.text.contains(text.trim()));
    }
}

/// A schedule is kept and shown by every door, and `ferry serve` does not run a freshly saved
/// schedule at once: the first run comes one interval after saving, leaving time to preview.
/// (`crates/server/src/scheduler.rs` tests that a due schedule starts exactly one run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_kept_and_a_fresh_one_waits_its_interval() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(5));
    scene.connect().await;
    scene.email_sync(&["--schedule", "every 5m"]).await;
    let shown = scene
        .ferry(&["sync", "show", "people-to-stripe"])
        .await
        .ok();
    assert!(
        shown.stdout.contains("schedule: every 5m"),
        "{}",
        shown.stdout
    );
    let too_often = scene
        .ferry(&[
            "sync",
            "create",
            "x",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--schedule",
            "every 1m",
        ])
        .await;
    assert_eq!(too_often.code, 2, "{}", too_often.stderr);
    assert!(
        too_often.stderr.contains("at most every 5 minutes"),
        "{}",
        too_often.stderr
    );
    let served = scene.serve(&["--scheduler-tick-seconds", "0.1"]).await;
    let api = served.api();
    // Many ticks pass; the first run is five minutes away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs: Json = api
        .get(served.url("/api/v1/runs?sync=people-to-stripe"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0, "{runs}");
    assert_eq!(scene.stripe().customers().len(), 0);
    // The schedule shows in the API and survives a round trip through PUT.
    let sync: Json = api
        .get(served.url("/api/v1/syncs/people-to-stripe"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sync["spec"]["schedule"], "every 5m");
    let mut input = sync["spec"].clone();
    input["schedule"] = json!("every 2 hours");
    let replaced = api
        .put(served.url("/api/v1/syncs/people-to-stripe"))
        .json(&input)
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced: Json = replaced.json().await.unwrap();
    assert_eq!(replaced["spec"]["schedule"], "every 2h");
    input["schedule"] = json!("whenever");
    let refused = api
        .put(served.url("/api/v1/syncs/people-to-stripe"))
        .json(&input)
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error());
    let body = refused.text().await.unwrap();
    assert!(body.contains("daily at 06:30"), "{body}");
}

/// A cron schedule in a time zone, its next run in every door, and pause: a paused sync's
/// schedule starts nothing and the CLI and the API refuse to run it unless told to, until it is
/// resumed; resuming counts the schedule from then. (`crates/server/src/scheduler.rs` tests that
/// a paused schedule starts no run and that a run that cannot start is recorded failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sync_runs_only_when_told_and_resumes_on_its_cron_schedule() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(5));
    scene.connect().await;
    scene
        .email_sync(&["--schedule", "cron 0 6 * * 1-5 in europe/paris"])
        .await;
    let shown = scene
        .ferry(&["sync", "show", "people-to-stripe"])
        .await
        .ok();
    assert!(
        shown
            .stdout
            .contains("schedule: cron 0 6 * * 1-5 in Europe/Paris")
            // 06:00 in Paris, summer or winter; the date depends on today.
            && (shown.stdout.contains(" 05:00 UTC") || shown.stdout.contains(" 04:00 UTC")),
        "{}",
        shown.stdout
    );
    let listed = scene.ferry(&["sync", "list"]).await.ok();
    assert!(listed.stdout.contains("NEXT RUN"), "{}", listed.stdout);

    let paused = scene
        .ferry(&["sync", "pause", "people-to-stripe"])
        .await
        .ok();
    assert!(paused.stdout.contains("Paused sync"), "{}", paused.stdout);
    let shown = scene
        .ferry(&["sync", "show", "people-to-stripe"])
        .await
        .ok();
    assert!(
        shown.stdout.contains("next run: paused since"),
        "{}",
        shown.stdout
    );
    let refused = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("is paused")
            && refused
                .stderr
                .contains("ferry sync resume people-to-stripe"),
        "{}",
        refused.stderr
    );
    assert_eq!(scene.stripe().customers().len(), 0);

    let served = scene.serve(&["--scheduler-tick-seconds", "0.1"]).await;
    let api = Probe::new(&served);
    let sync = api
        .get("/api/v1/syncs/people-to-stripe")
        .await
        .expect(200)
        .json();
    assert!(sync["paused_at"].is_string(), "{sync}");
    assert!(sync["next_run_at"].is_null(), "{sync}");
    // The UI, signed in as a person.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = api
        .send(
            bare.post(api.url("/login"))
                .form(&[("token", served.token.as_str())]),
        )
        .await;
    let session = signed_in.header(SET_COOKIE.as_str());
    let session = session.split(';').next().unwrap().to_string();
    let ui_page = |path: &str| bare.get(api.url(path)).header(COOKIE, &session);
    let page = api
        .send(ui_page("/syncs/people-to-stripe"))
        .await
        .expect(200);
    assert!(
        page.text
            .contains("action=\"/syncs/people-to-stripe/resume\"")
            && page.text.contains("badge paused"),
        "{}",
        page.text
    );
    let refused = api
        .post_empty("/api/v1/syncs/people-to-stripe/runs")
        .await
        .expect(409);
    assert_eq!(refused.error_code(), "paused");
    assert!(
        refused
            .message()
            .contains("POST /api/v1/syncs/people-to-stripe/resume"),
        "{}",
        refused.message()
    );
    let started = api
        .post(
            "/api/v1/syncs/people-to-stripe/runs",
            json!({"even_if_paused": true}),
        )
        .await
        .expect(202)
        .json();
    let run = api
        .wait_for_run(started["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(scene.stripe().customers().len(), 5);

    let resumed = api
        .post_empty("/api/v1/syncs/people-to-stripe/resume")
        .await
        .expect(200)
        .json();
    assert!(resumed["paused_at"].is_null(), "{resumed}");
    let next = resumed["next_run_at"].as_str().unwrap_or_default();
    assert!(
        next.ends_with("T05:00:00Z") || next.ends_with("T04:00:00Z"),
        "{resumed}"
    );
    // The home page is the workspace's health: the sync, its last run charted, its next run.
    let home = api.send(ui_page("/")).await.expect(200);
    assert!(
        home.text.contains("Every sync's last run went through.")
            && home.text.contains("href=\"/syncs/people-to-stripe\"")
            && home.text.contains("<svg class=\"trend\"")
            && home
                .text
                .contains("completed: 5 written, 0 rejected or failed")
            && home.text.contains("Next scheduled runs"),
        "{}",
        home.text
    );
    let page = api.send(ui_page("/syncs")).await.expect(200);
    assert!(
        page.text.contains(":00:00 UTC") && !page.text.contains("badge paused"),
        "the list shows the next run: {}",
        page.text
    );
    let page = api
        .send(ui_page("/syncs/people-to-stripe"))
        .await
        .expect(200);
    assert!(
        page.text
            .contains("action=\"/syncs/people-to-stripe/pause\""),
        "{}",
        page.text
    );
    let paused_again = api
        .post_empty("/api/v1/syncs/people-to-stripe/pause")
        .await
        .expect(200)
        .json();
    assert!(paused_again["paused_at"].is_string(), "{paused_again}");
    api.post_empty("/api/v1/syncs/nothing/pause")
        .await
        .expect(404);
    api.post_empty("/api/v1/syncs/people-to-stripe/resume")
        .await
        .expect(200);
    // Resumed, the CLI runs it again (nothing changed: nothing is sent).
    let ran = scene.ferry(&["sync", "run", "people-to-stripe"]).await.ok();
    assert!(ran.stdout.contains("unchanged"), "{}", ran.stdout);
    assert_eq!(scene.stripe().customers().len(), 5);
}

/// A DuckDB connection to the workspace's own files is refused before DuckDB opens anything:
/// DuckDB opening and closing `ferry.db` inside the server used to drop SQLite's locks, so the
/// next CLI command deleted the server's WAL under it (a revoked token kept working, then the
/// database was "malformed"). Afterwards the server and the CLI still share one consistent
/// workspace: a token revoked by the CLI is refused by the server at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duckdb_connection_to_the_workspace_is_refused_and_the_workspace_stays_whole() {
    let scene = Scene::new().await;
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    let workspace = scene.workspace();
    let hard_link = scene.dir.path().join("innocent.duckdb");
    std::fs::hard_link(workspace.join("ferry.db"), &hard_link).unwrap();
    let symlink = scene.dir.path().join("also-innocent.duckdb");
    std::os::unix::fs::symlink(workspace.join("ferry.db"), &symlink).unwrap();
    for (i, path) in [
        workspace.join("ferry.db"),
        workspace.join("ferry.db-wal"),
        workspace.join("master.key"),
        workspace.clone(),
        hard_link.clone(),
        symlink.clone(),
    ]
    .iter()
    .enumerate()
    {
        for skip_test in [false, true] {
            let reply = api
                .post(
                    "/api/v1/connections",
                    json!({ "name": format!("w{i}"), "kind": "duckdb",
                            "path": path.display().to_string(), "skip_test": skip_test }),
                )
                .await
                .expect(422);
            assert!(
                reply.message().contains("inside ferry's workspace"),
                "{}: {}",
                path.display(),
                reply.text
            );
        }
    }
    let listed = api.get("/api/v1/connections").await.expect(200).json();
    assert_eq!(
        listed["connections"],
        json!([]),
        "nothing was saved: {listed}"
    );

    // The CLI and the server still share the workspace: what one writes, the other sees.
    let created = scene.ferry(&["token", "create", "doomed"]).await.ok();
    let doomed = created.stdout.trim().to_string();
    let as_doomed = |path: &str| {
        reqwest::Client::new()
            .get(served.url(path))
            .header(AUTHORIZATION, format!("Bearer {doomed}"))
            .send()
    };
    assert_eq!(
        as_doomed("/api/v1/connections").await.unwrap().status(),
        StatusCode::OK
    );
    scene.ferry(&["token", "revoke", "doomed"]).await.ok();
    assert_eq!(
        as_doomed("/api/v1/connections").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a token revoked by the CLI is refused by the running server"
    );
    api.post(
        "/api/v1/connections",
        stripe_connection(&scene, "stripe", KEY),
    )
    .await
    .expect(201);
    drop(served);
    let check = rusqlite::Connection::open(workspace.join("ferry.db")).unwrap();
    let integrity: String = check
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let tokens: Vec<String> = check
        .prepare("SELECT name FROM api_tokens ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tokens, ["first-sign-in"], "the revoked token stays revoked");
    let connections: i64 = check
        .query_row("SELECT count(*) FROM connections", [], |row| row.get(0))
        .unwrap();
    assert_eq!(connections, 1, "the server's last write is in the database");
}

/// A preview of huge values stays small: each cell is cut with a visible marker, and rows stop
/// once the answer reaches its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_of_huge_values_are_capped_with_a_visible_marker() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(1));
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    api.post(
        "/api/v1/connections",
        duckdb_connection(&scene, "warehouse"),
    )
    .await
    .expect(201);
    let reply = api
        .post(
            "/api/v1/queries/preview",
            json!({ "connection": "warehouse", "sql": "select repeat('a', 10000000) as big from range(20)", "limit": 20 }),
        )
        .await
        .expect(200);
    assert!(reply.text.len() < 200_000, "{} bytes", reply.text.len());
    let body = reply.json();
    let cell = body["rows"][0][0].as_str().unwrap();
    assert!(
        cell.ends_with("…[truncated: 10000000 characters]"),
        "{}",
        &cell[cell.len() - 60..]
    );
    assert_eq!(body["rows"].as_array().unwrap().len(), 20);
    assert_eq!(body["rows_left_out"], false);
    // Many rows of capped cells still stop at the preview's cap.
    let reply = api
        .post(
            "/api/v1/queries/preview",
            json!({ "connection": "warehouse", "sql": "select repeat('b', 5000) as a, repeat('c', 5000) as b, repeat('d', 5000) as c from range(500)", "limit": 500 }),
        )
        .await
        .expect(200);
    let body = reply.json();
    assert!(reply.text.len() < 1_200_000, "{} bytes", reply.text.len());
    assert_eq!(body["rows_left_out"], true);
    assert!(body["rows"].as_array().unwrap().len() < 500);
}

/// Signs in over the UI with the served token: the session cookie, and the CSRF token its
/// pages carry.
async fn sign_in(probe: &Probe) -> (String, String) {
    let bare = no_redirects(None);
    let reply = probe
        .send(
            bare.post(probe.url("/login"))
                .form(&[("token", probe.token.as_str())]),
        )
        .await;
    assert!(
        reply.status.is_redirection(),
        "{} {}",
        reply.status,
        reply.text
    );
    let cookie = reply
        .header(SET_COOKIE.as_str())
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = probe
        .send(bare.get(probe.url("/runs")).header(COOKIE, &cookie))
        .await
        .expect(200);
    let csrf = csrf_in_page(&page.text).expect("the page carries the CSRF token");
    (cookie, csrf)
}

/// Connections `stripe` and `warehouse` and the model `people`, over the API.
async fn people_model(scene: &Scene, api: &Probe) {
    api.post(
        "/api/v1/connections",
        stripe_connection(scene, "stripe", KEY),
    )
    .await
    .expect(201);
    api.post("/api/v1/connections", duckdb_connection(scene, "warehouse"))
        .await
        .expect(201);
    api.post(
        "/api/v1/models",
        json!({ "name": "people", "connection": "warehouse", "sql": "select * from people order by id" }),
    )
    .await
    .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_form_refuses_choices_off_its_lists_and_forms_that_are_not_utf8() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(3));
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    people_model(&scene, &api).await;
    let (cookie, csrf) = sign_in(&api).await;
    let bare = no_redirects(None);
    let form = |field: &str, value: &str| -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = [
            ("_csrf", csrf.as_str()),
            ("existing", ""),
            ("model", "people"),
            ("destination", "stripe"),
            ("behavior", "update-only"),
            ("key_column", "email"),
            ("key_field", "email"),
            ("map_column", "name"),
            ("map_field", "name"),
            ("map_metadata", ""),
            ("nulls", "clear"),
            ("schedule", ""),
            ("name", "s"),
        ]
        .iter()
        .filter(|(name, _)| *name != field)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        fields.push((field.to_string(), value.to_string()));
        fields
    };
    let syncs = || async { api.get("/api/v1/syncs").await.expect(200).json()["syncs"].clone() };

    for (field, valid) in [
        ("behavior", "update-or-create, update-only, create-only"),
        ("nulls", "skip, clear"),
        ("object", "customer"),
        ("key_field", "email, metadata"),
    ] {
        let refused = api
            .send(
                bare.post(api.url("/syncs"))
                    .header(COOKIE, &cookie)
                    .form(&form(field, "bogus")),
            )
            .await
            .expect(422);
        assert!(
            refused.text.contains(&format!(
                "{field}: &quot;bogus&quot; is not a valid value; use one of {valid}"
            )),
            "the page names the field and its valid values: {}",
            refused.text
        );
        assert_eq!(syncs().await, json!([]), "{field}=bogus saved nothing");
    }

    // Bytes that are not UTF-8, percent-encoded or raw, are refused, not stored as U+FFFD.
    let encoded = format!(
        "_csrf={csrf}&existing=&model=people&destination=stripe&behavior=update-only\
         &key_column=email&key_field=email&map_column=name&map_field=name&map_metadata=&nulls=skip&name=s%FF"
    );
    let mut raw = format!(
        "_csrf={csrf}&existing=&model=people&destination=stripe&behavior=update-only\
         &key_column=email&key_field=email&nulls=skip&name=s"
    )
    .into_bytes();
    raw.push(0xff);
    for body in [encoded.into_bytes(), raw] {
        let refused = api
            .send(
                bare.post(api.url("/syncs"))
                    .header(COOKIE, &cookie)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body),
            )
            .await
            .expect(400);
        assert!(
            refused.text.contains("is not valid UTF-8"),
            "{}",
            refused.text
        );
        assert_eq!(syncs().await, json!([]));
    }
    // The other forms too: a model whose SQL is not UTF-8 is not saved with U+FFFD in it.
    let refused = api
        .send(
            bare.post(api.url("/models"))
                .header(COOKIE, &cookie)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!(
                    "_csrf={csrf}&name=other&connection=warehouse&sql=select+%27%E9%27+as+x"
                )),
        )
        .await
        .expect(400);
    assert!(refused.text.contains("&quot;sql&quot;"), "{}", refused.text);
    api.get("/api/v1/models/other").await.expect(404);

    // The same form with valid choices saves exactly what was chosen.
    let saved = api
        .send(
            bare.post(api.url("/syncs"))
                .header(COOKIE, &cookie)
                .form(&form("name", "s")),
        )
        .await;
    assert!(
        saved.status.is_redirection(),
        "{} {}",
        saved.status,
        saved.text
    );
    let sync = api.get("/api/v1/syncs/s").await.expect(200).json();
    assert_eq!(sync["spec"]["behavior"], "update-only", "{sync}");
    assert_eq!(sync["spec"]["nulls"], "clear", "{sync}");
    api.assert_nothing_leaked(&scene, &served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_host_is_refused_and_named_hosts_are_served() {
    let scene = Scene::new().await;
    let served = scene.serve(&["--public-host", "ferry.example.test"]).await;
    let probe = Probe::new(&served);
    let port = served.base.rsplit(':').next().unwrap().to_string();
    let bare = no_redirects(None);
    // DNS rebinding: the browser believes it talks to evil.example, and says so in Host.
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "localhost.evil.example",
    ] {
        let api = probe
            .send(
                probe
                    .api(Method::GET, "/api/v1/connections")
                    .header("host", host),
            )
            .await
            .expect(421);
        assert_eq!(api.error_code(), "unknown_host", "{host}");
        assert!(api.message().contains("--public-host"), "{}", api.text);
        let page = probe
            .send(bare.get(probe.url("/login")).header("host", host))
            .await
            .expect(421);
        assert!(page.text.contains("DNS rebinding"), "{}", page.text);
        assert_eq!(
            page.header("x-frame-options"),
            "DENY",
            "refusals carry the headers too"
        );
        let signed_in = probe
            .send(
                bare.post(probe.url("/login"))
                    .header("host", host)
                    .form(&[("token", served.token.as_str())]),
            )
            .await
            .expect(421);
        assert!(signed_in.header(SET_COOKIE.as_str()).is_empty());
    }
    // The names and addresses the server is reached by are served.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("ferry.example.test:{port}"),
        "FERRY.example.test".to_string(),
    ] {
        probe
            .send(
                probe
                    .api(Method::GET, "/api/v1/connections")
                    .header("host", &host),
            )
            .await
            .expect(200);
        probe
            .send(bare.get(probe.url("/login")).header("host", &host))
            .await
            .expect(200);
    }
    // A public host must be a host name, said before anything is served.
    let refused = scene
        .ferry(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--public-host",
            "https://ferry.example.test/",
        ])
        .await;
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("is not a host name"),
        "{}",
        refused.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(2));
    let served = scene.serve(&[]).await;
    let probe = Probe::new(&served);
    people_model(&scene, &probe).await;
    let (cookie, _) = sign_in(&probe).await;
    let bare = no_redirects(None);
    let page = |path: &str| bare.get(probe.url(path)).header(COOKIE, &cookie);
    let mut answers = vec![
        ("page", probe.send(page("/")).await),
        ("page", probe.send(page("/syncs/new")).await),
        ("page", probe.send(page("/models/people")).await),
        ("page", probe.send(page("/runs/nothing")).await),
        ("page", probe.send(bare.get(probe.url("/login"))).await),
        ("page", probe.send(bare.get(probe.url("/runs"))).await),
        ("api", probe.get("/api/v1/models").await),
        ("api", probe.get("/api/openapi.json").await),
        ("api", probe.get("/api/v1/models/nothing").await),
        (
            "api",
            probe.send(bare.get(probe.url("/api/v1/models"))).await,
        ),
        ("api", probe.get("/api/v1/nothing-here").await),
    ];
    answers.push((
        "page",
        probe
            .send(
                bare.post(probe.url("/login"))
                    .form(&[("token", "ferry_wrong")]),
            )
            .await,
    ));
    for (kind, answer) in &answers {
        let what = format!("{kind} answering {}", answer.status);
        assert_eq!(answer.header("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(answer.header("cache-control"), "no-store", "{what}");
        assert_eq!(answer.header("x-frame-options"), "DENY", "{what}");
        assert!(
            answer
                .header("content-security-policy")
                .contains("frame-ancestors 'none'"),
            "{what}"
        );
        if *kind == "page" {
            assert_eq!(answer.header("referrer-policy"), "same-origin", "{what}");
        }
        if answer.status == StatusCode::UNAUTHORIZED {
            assert!(
                answer.header("www-authenticate").starts_with("Bearer"),
                "{what}"
            );
        }
    }
    // Assets may be cached; they are still not sniffed.
    let style = probe
        .send(bare.get(probe.url("/assets/style.css")))
        .await
        .expect(200);
    assert!(style.header("cache-control").starts_with("public"));
    assert_eq!(style.header("x-content-type-options"), "nosniff");
}

/// The pinned checker that `scripts/test` installs (see there); a missing one fails the test with
/// the way to install it, never skips it.
fn openapi_spec_validator() -> std::path::PathBuf {
    const HOW: &str = "the OpenAPI document is checked with openapi-spec-validator, pinned in \
        scripts/openapi-spec-validator.txt; run the tests with scripts/test, which installs it, \
        or install it yourself with `python3 -m pip install -r scripts/openapi-spec-validator.txt` \
        and put it on PATH or set FERRY_OPENAPI_SPEC_VALIDATOR to its path";
    if let Some(path) = std::env::var_os("FERRY_OPENAPI_SPEC_VALIDATOR") {
        let path = std::path::PathBuf::from(path);
        assert!(
            path.is_file(),
            "FERRY_OPENAPI_SPEC_VALIDATOR={} does not exist: {HOW}",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("openapi-spec-validator"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("openapi-spec-validator is not installed: {HOW}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_valid_openapi() {
    let validator = openapi_spec_validator();
    let scene = Scene::new().await;
    let served = scene.serve(&[]).await;
    let probe = Probe::new(&served);
    let reply = probe.get("/api/openapi.json").await.expect(200);
    let document = reply.json();
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{}",
        document["openapi"]
    );
    let file = scene.dir.path().join("openapi.json");
    std::fs::write(&file, &reply.text).unwrap();
    let checked = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success(),
        "the served document is not valid OpenAPI: {said}"
    );
    assert!(said.contains("OK"), "{said}");
    // What the document says holds for the live server: a query parameter is read from the query.
    let runs = &document["paths"]["/api/v1/runs"]["get"]["parameters"];
    assert!(
        runs.as_array().unwrap().iter().all(|p| p["in"] == "query"),
        "{runs}"
    );
    probe.get("/api/v1/runs?limit=1").await.expect(200);
    let malformed = probe.get("/api/v1/runs?limit=ten").await.expect(400);
    assert_eq!(malformed.error_code(), "invalid_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_ignoring_case_and_never_start_with_a_dash() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(2));
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    people_model(&scene, &api).await;
    let taken = api
        .post(
            "/api/v1/models",
            json!({ "name": "PEOPLE", "connection": "warehouse", "sql": "select 1 as x" }),
        )
        .await
        .expect(409);
    assert_eq!(taken.error_code(), "conflict");
    assert!(
        taken.message().contains("model 'people' already exists"),
        "the refusal names the existing model: {}",
        taken.text
    );
    // PUT creates too, with the same rule.
    api.put(
        "/api/v1/models/People",
        json!({ "connection": "warehouse", "sql": "select 1 as x" }),
    )
    .await
    .expect(409);
    let dashed = api
        .post(
            "/api/v1/models",
            json!({ "name": "-rf", "connection": "warehouse", "sql": "select 1 as x" }),
        )
        .await
        .expect(422);
    assert!(
        dashed.message().contains("does not start with '-'"),
        "{}",
        dashed.text
    );
    let connection = api
        .post(
            "/api/v1/connections",
            duckdb_connection(&scene, "Warehouse"),
        )
        .await
        .expect(409);
    assert!(
        connection.message().contains("'warehouse'"),
        "{}",
        connection.text
    );
    // Refused before the key is tested: Stripe hears nothing of it.
    let requests_before = scene.stripe().requests().len();
    api.post(
        "/api/v1/connections",
        stripe_connection(&scene, "Stripe", KEY),
    )
    .await
    .expect(409);
    api.post(
        "/api/v1/connections",
        stripe_connection(&scene, "-stripe", KEY),
    )
    .await
    .expect(422);
    assert_eq!(scene.stripe().requests().len(), requests_before);
    api.post("/api/v1/syncs", people_sync("s1", "people"))
        .await
        .expect(201);
    let sync = api
        .post("/api/v1/syncs", people_sync("S1", "people"))
        .await
        .expect(409);
    assert!(
        sync.message().contains("sync 's1' already exists"),
        "{}",
        sync.text
    );
    // The CLI refuses the same way, for API tokens too.
    let token = scene.ferry(&["token", "create", "FIRST-SIGN-IN"]).await;
    assert_eq!(token.code, 2, "{}", token.stderr);
    assert!(
        token
            .stderr
            .contains("API token 'first-sign-in' already exists"),
        "{}",
        token.stderr
    );
    let models = api.get("/api/v1/models").await.expect(200).json();
    assert_eq!(models["models"].as_array().unwrap().len(), 1, "{models}");
}

/// Warehouse timeouts over the API and the source form: saved when whole seconds from 0 to
/// 86400, refused with 422 naming the field otherwise (nothing saved); a preview stops at the
/// connection's `preview_timeout_seconds` and says which setting to raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_timeouts_are_checked_by_the_api_and_the_source_form() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(3));
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    let path = scene.warehouse().display().to_string();
    let with = |extra: Json| {
        let mut body = duckdb_connection(&scene, "warehouse");
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    for (field, value) in [
        ("statement_timeout_seconds", json!(-1)),
        ("statement_timeout_seconds", json!(86401)),
        ("preview_timeout_seconds", json!(2.5)),
        ("preview_timeout_seconds", json!("30")),
    ] {
        let refused = api
            .post("/api/v1/connections", with(json!({ field: value })))
            .await
            .expect(422);
        assert_eq!(refused.error_code(), "invalid");
        assert_eq!(
            refused.message(),
            format!("{field} must be a whole number of seconds between 0 (no limit) and 86400")
        );
    }
    api.get("/api/v1/connections/warehouse").await.expect(404);
    let on_stripe = api
        .post(
            "/api/v1/connections",
            json!({ "name": "stripe", "kind": "stripe", "api_key": KEY,
                    "api_base": scene.emulator.url(), "preview_timeout_seconds": 5 }),
        )
        .await
        .expect(422);
    assert!(
        on_stripe.message().contains("`preview_timeout_seconds`"),
        "{}",
        on_stripe.text
    );
    api.get("/api/v1/connections/stripe").await.expect(404);

    let created = api
        .post(
            "/api/v1/connections",
            with(json!({ "statement_timeout_seconds": 120, "preview_timeout_seconds": 1 })),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(created["config"]["statement_timeout_seconds"], 120);
    assert_eq!(created["config"]["preview_timeout_seconds"], 1);

    // About 10^10 row pairs, minutes of work: stopped after the connection's 1 s.
    let started = Instant::now();
    let slow = api
        .post(
            "/api/v1/queries/preview",
            json!({ "connection": "warehouse",
                    "sql": "select sum(a.range * b.range) as n from range(100000) a, range(100000) b" }),
        )
        .await
        .expect(502);
    assert_eq!(slow.error_code(), "upstream");
    assert!(
        slow.message()
            .contains("the model ran longer than 1s and was cancelled")
            && slow
                .message()
                .contains("raise the connection's `preview_timeout_seconds`"),
        "{}",
        slow.text
    );
    assert!(started.elapsed() < Duration::from_secs(20), "stopped early");

    // The source form: a bad value shows the form again with the problem, and saves nothing.
    let (cookie, csrf) = sign_in(&api).await;
    let bare = no_redirects(None);
    let form = |statement: &str, preview: &str| -> Vec<(&str, String)> {
        vec![
            ("_csrf", csrf.clone()),
            ("existing", "warehouse".to_string()),
            ("name", "warehouse".to_string()),
            ("kind", "duckdb".to_string()),
            ("duckdb.path", path.clone()),
            ("postgres.url", String::new()),
            ("duckdb.statement_timeout_seconds", statement.to_string()),
            ("duckdb.preview_timeout_seconds", preview.to_string()),
        ]
    };
    let config = || async {
        api.get("/api/v1/connections/warehouse")
            .await
            .expect(200)
            .json()["config"]
            .clone()
    };
    for (statement, preview, field) in [
        ("soon", "", "statement_timeout_seconds"),
        ("", "-3", "preview_timeout_seconds"),
        ("100000", "", "statement_timeout_seconds"),
    ] {
        let refused = api
            .send(
                bare.post(api.url("/sources"))
                    .header(COOKIE, &cookie)
                    .form(&form(statement, preview)),
            )
            .await
            .expect(422);
        assert!(
            refused.text.contains(&format!(
                "{field} must be a whole number of seconds between 0 (no limit) and 86400"
            )),
            "{}",
            refused.text
        );
        assert!(
            refused.text.contains(&format!("value=\"{statement}\""))
                && refused.text.contains(&format!("value=\"{preview}\"")),
            "the form keeps what was typed: {}",
            refused.text
        );
        assert_eq!(config().await["statement_timeout_seconds"], 120);
    }
    // Valid: 0 is no limit, and an empty field goes back to the default.
    let saved = api
        .send(
            bare.post(api.url("/sources"))
                .header(COOKIE, &cookie)
                .form(&form(" 0 ", "")),
        )
        .await;
    assert!(
        saved.status.is_redirection(),
        "{} {}",
        saved.status,
        saved.text
    );
    let saved = config().await;
    assert_eq!(saved["statement_timeout_seconds"], 0, "{saved}");
    assert!(saved.get("preview_timeout_seconds").is_none(), "{saved}");
    let listed = api
        .send(bare.get(api.url("/sources")).header(COOKIE, &cookie))
        .await
        .expect(200);
    assert!(
        listed.text.contains("statement timeout none"),
        "{}",
        listed.text
    );
    let edit = api
        .send(
            bare.get(api.url("/connections/warehouse/edit"))
                .header(COOKIE, &cookie),
        )
        .await
        .expect(200);
    assert!(
        edit.text
            .contains("name=\"duckdb.statement_timeout_seconds\" value=\"0\""),
        "{}",
        edit.text
    );
}

/// `change_detection_schema` over the API and the source form: saved (which creates the schema
/// and its `ferry_syncs` table in the DuckDB file) and shown back, refused with 422 naming the
/// field when it is not a plain lower-case name or sits on a Stripe connection (nothing saved);
/// the form keeps what was typed, and an empty field turns the setting off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_detection_schema_is_checked_by_the_api_and_the_source_form() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(3));
    let registry = |schema: &str| {
        ferry_source::duckdb_execute(
            &scene.warehouse(),
            &format!("select sync_uid, sync_name, created_at from {schema}.ferry_syncs"),
        )
    };
    assert!(registry("ferry").is_err());
    let served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    let path = scene.warehouse().display().to_string();
    let with = |schema: Json| {
        let mut body = duckdb_connection(&scene, "warehouse");
        body["change_detection_schema"] = schema;
        body
    };
    for bad in ["Bad-Name", "1x", "ferry;drop"] {
        let refused = api
            .post("/api/v1/connections", with(json!(bad)))
            .await
            .expect(422);
        assert_eq!(refused.error_code(), "invalid");
        assert!(
            refused.message().starts_with(&format!(
                "change_detection_schema: `{bad}` is not a schema name ferry accepts"
            )),
            "{}",
            refused.text
        );
    }
    let not_text = api
        .post("/api/v1/connections", with(json!(5)))
        .await
        .expect(422);
    assert!(
        not_text.message().contains("change_detection_schema"),
        "{}",
        not_text.text
    );
    let on_stripe = api
        .post(
            "/api/v1/connections",
            json!({ "name": "stripe", "kind": "stripe", "api_key": KEY,
                    "api_base": scene.emulator.url(), "change_detection_schema": "ferry" }),
        )
        .await
        .expect(422);
    assert!(
        on_stripe.message().contains("`change_detection_schema`"),
        "{}",
        on_stripe.text
    );
    api.get("/api/v1/connections/warehouse").await.expect(404);
    api.get("/api/v1/connections/stripe").await.expect(404);
    assert!(
        registry("ferry").is_err(),
        "nothing refused touched the file"
    );

    let created = api
        .post("/api/v1/connections", with(json!("ferry")))
        .await
        .expect(201)
        .json();
    assert_eq!(created["config"]["change_detection_schema"], "ferry");
    let shown = api
        .get("/api/v1/connections/warehouse")
        .await
        .expect(200)
        .json();
    assert_eq!(shown["config"]["change_detection_schema"], "ferry");
    registry("ferry").expect("saving created ferry.ferry_syncs in the warehouse");

    // The source form shows the field, refuses a bad value keeping it, and saves a good one.
    let (cookie, csrf) = sign_in(&api).await;
    let bare = no_redirects(None);
    let new_form = api
        .send(bare.get(api.url("/sources/new")).header(COOKIE, &cookie))
        .await
        .expect(200);
    assert!(
        new_form.text.contains("Change detection schema")
            && new_form
                .text
                .contains("name=\"duckdb.change_detection_schema\""),
        "{}",
        new_form.text
    );
    let form = |schema: &str| -> Vec<(&str, String)> {
        vec![
            ("_csrf", csrf.clone()),
            ("existing", "warehouse".to_string()),
            ("name", "warehouse".to_string()),
            ("kind", "duckdb".to_string()),
            ("duckdb.path", path.clone()),
            ("postgres.url", String::new()),
            ("duckdb.statement_timeout_seconds", String::new()),
            ("duckdb.preview_timeout_seconds", String::new()),
            ("duckdb.change_detection_schema", schema.to_string()),
        ]
    };
    let config = || async {
        api.get("/api/v1/connections/warehouse")
            .await
            .expect(200)
            .json()["config"]
            .clone()
    };
    let refused = api
        .send(
            bare.post(api.url("/sources"))
                .header(COOKIE, &cookie)
                .form(&form("Bad-Name")),
        )
        .await
        .expect(422);
    assert!(
        refused
            .text
            .contains("change_detection_schema: `Bad-Name` is not a schema name ferry accepts"),
        "{}",
        refused.text
    );
    assert!(
        refused
            .text
            .contains("name=\"duckdb.change_detection_schema\" value=\"Bad-Name\""),
        "the form keeps what was typed: {}",
        refused.text
    );
    assert_eq!(config().await["change_detection_schema"], "ferry");

    let saved = api
        .send(
            bare.post(api.url("/sources"))
                .header(COOKIE, &cookie)
                .form(&form(" ferry_ui ")),
        )
        .await;
    assert!(
        saved.status.is_redirection(),
        "{} {}",
        saved.status,
        saved.text
    );
    assert_eq!(config().await["change_detection_schema"], "ferry_ui");
    registry("ferry_ui").expect("saving created ferry_ui.ferry_syncs in the warehouse");
    let listed = api
        .send(bare.get(api.url("/sources")).header(COOKIE, &cookie))
        .await
        .expect(200);
    assert!(
        listed.text.contains("change detection in schema ferry_ui"),
        "{}",
        listed.text
    );
    let edit = api
        .send(
            bare.get(api.url("/connections/warehouse/edit"))
                .header(COOKIE, &cookie),
        )
        .await
        .expect(200);
    assert!(
        edit.text
            .contains("name=\"duckdb.change_detection_schema\" value=\"ferry_ui\""),
        "{}",
        edit.text
    );

    // Empty: back to the default, ferry only reads.
    let saved = api
        .send(
            bare.post(api.url("/sources"))
                .header(COOKIE, &cookie)
                .form(&form("")),
        )
        .await;
    assert!(saved.status.is_redirection(), "{}", saved.text);
    let saved = config().await;
    assert!(saved.get("change_detection_schema").is_none(), "{saved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_shuts_down_hands_its_run_back_and_the_next_server_finishes_it() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(400));
    let mut served = scene.serve(&[]).await;
    let api = Probe::new(&served);
    people_model(&scene, &api).await;
    api.post("/api/v1/syncs", people_sync("people", "people"))
        .await
        .expect(201);
    scene.stripe().set_faults(FaultConfig {
        latency: Duration::from_secs(1),
        ..FaultConfig::default()
    });
    let started = api
        .post_empty("/api/v1/syncs/people/runs")
        .await
        .expect(202)
        .json();
    let first_run = started["id"].as_str().unwrap().to_string();
    // Some customers exist: the run is mid-way when the server is told to stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while scene.stripe().customers().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the run never created a customer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .expect("kill runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = served.child.try_wait().expect("the server's status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop within 60 s of SIGTERM:\n{}",
            served.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{}", served.output());
    let partial = scene.stripe().customers().len();
    assert!(
        partial < 400,
        "the run was stopped mid-way, not finished: {partial}"
    );

    // The next server claims the request and resumes the run, with nothing created twice.
    scene.stripe().set_faults(FaultConfig::default());
    let next = scene.serve(&[]).await;
    let api = Probe {
        base: next.base.clone(),
        ..Probe::new(&served)
    };
    let stopped = api
        .get(&format!("/api/v1/runs/{first_run}"))
        .await
        .expect(200)
        .json();
    assert_eq!(stopped["status"], "interrupted", "{stopped}");
    assert!(
        stopped["error"].as_str().unwrap().contains("shut down"),
        "{stopped}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        let runs = api.get("/api/v1/runs?sync=people").await.expect(200).json();
        let newer = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|run| run["id"] != first_run.as_str())
            .and_then(|run| run["id"].as_str().map(str::to_string));
        if let Some(id) = newer {
            break id;
        }
        assert!(Instant::now() < deadline, "no server resumed the run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let done = api.wait_for_run(&resumed, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let customers = scene.stripe().customers();
    assert_eq!(customers.len(), 400, "every row once");
    let emails: std::collections::HashSet<&str> = customers
        .iter()
        .map(|c| c["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails.len(), 400, "no duplicate");
    let queue = api.get("/api/v1/queue").await.expect(200).json();
    assert!(queue.as_array().unwrap().is_empty(), "{queue}");
}
