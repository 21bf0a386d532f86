//! One helper for every conformance test: start an emulator on port 0, send real HTTP requests
//! with reqwest, and read replies as status + headers + JSON.

use std::time::Duration;

use ferry_stripe_emulator::{Emulator, EmulatorConfig, EmulatorHandle, RateLimits, TEST_API_KEY};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

/// A second valid test key, for per-key scoping tests.
pub const OTHER_TEST_KEY: &str = "sk_test_otherkey1234567890abcdef";
pub const LIVE_KEY: &str = "sk_live_livekey1234567890abcdef";

pub struct TestServer {
    pub emulator: Emulator,
    pub handle: EmulatorHandle,
    pub client: reqwest::Client,
    pub url: String,
}

/// A reply as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn error_type(&self) -> Option<&str> {
        self.body["error"]["type"].as_str()
    }

    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    pub fn error_param(&self) -> Option<&str> {
        self.body["error"]["param"].as_str()
    }

    pub fn error_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .expect("reply has an id")
            .to_owned()
    }
}

/// A config for tests: no rate limits, a short search delay.
pub fn test_config() -> EmulatorConfig {
    EmulatorConfig {
        rate_limits: RateLimits::disabled(),
        search_delay: Duration::from_millis(300),
        ..EmulatorConfig::default()
    }
}

pub async fn start() -> TestServer {
    start_with(test_config()).await
}

pub async fn start_with(config: EmulatorConfig) -> TestServer {
    let emulator = Emulator::start(config).await.expect("emulator starts");
    let url = emulator.url();
    TestServer {
        handle: emulator.handle(),
        emulator,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client builds"),
        url,
    }
}

impl TestServer {
    /// A request with the test key as Bearer auth.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TEST_API_KEY)
    }

    /// A form POST with the test key.
    pub fn form_post(&self, path: &str, body: &str) -> reqwest::RequestBuilder {
        self.request(Method::POST, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        send(self.form_post(path, body)).await
    }

    pub async fn post_idempotent(&self, path: &str, body: &str, key: &str) -> Reply {
        send(self.form_post(path, body).header("idempotency-key", key)).await
    }

    pub async fn get(&self, path_and_query: &str) -> Reply {
        send(self.request(Method::GET, path_and_query)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        send(self.request(Method::DELETE, path)).await
    }

    /// Creates a customer and returns its id.
    pub async fn create_customer(&self, body: &str) -> String {
        let reply = self.post("/v1/customers", body).await;
        assert_eq!(reply.status, 200, "create failed: {:?}", reply.body);
        reply.id()
    }

    /// Creates a product and returns its id.
    pub async fn create_product(&self, body: &str) -> String {
        let reply = self.post("/v1/products", body).await;
        assert_eq!(reply.status, 200, "product create failed: {:?}", reply.body);
        reply.id()
    }

    /// Creates a price and returns its id.
    pub async fn create_price(&self, body: &str) -> String {
        let reply = self.post("/v1/prices", body).await;
        assert_eq!(reply.status, 200, "price create failed: {:?}", reply.body);
        reply.id()
    }

    /// The newest event, as `GET /v1/events` lists it.
    pub async fn newest_event(&self) -> Value {
        let reply = self.get("/v1/events?limit=1").await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["data"][0].clone()
    }

    /// A DELETE on the control API: status and body.
    pub async fn control_delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .expect("control request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("control JSON"))
    }

    /// A GET on the control API.
    pub async fn control_get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("control request");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("control JSON")
    }

    /// A POST of JSON on the control API: status and body.
    pub async fn control_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("control request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("control JSON"))
    }
}

/// Sends a request that must get an HTTP response.
pub async fn send(builder: reqwest::RequestBuilder) -> Reply {
    let response = builder.send().await.expect("the emulator answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}
