//! Stripe's records over the shared HTTP stack: create, update, retrieve and list any object
//! ferry syncs (the object's schema gives the endpoint), and the account's events.

use super::config::{StripeConfig, StripeConnectionError, STRIPE_VERSION};
use ferry_http::{HttpClient, HttpError, InboundResponse, OutboundRequest};
use ferry_stripe_wire::error::ErrorBody;
use ferry_stripe_wire::{form, ObjectSchema};
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde_json::{Map, Value as Json};

const FORM: &str = "application/x-www-form-urlencoded";

/// A record as Stripe returned it: its id and the whole object, for diffing and matching.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeRecord {
    pub id: String,
    pub object: Json,
}

/// A write Stripe confirmed.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The record's id and the fields that can be keys (`created`, `email`, `lookup_key`,
    /// `metadata`): a write's answer is read only for these, which is much cheaper than the
    /// whole object. `StripeService::retrieve` reads a record whole.
    pub record: StripeRecord,
    /// Stripe's `Request-Id` of the answer.
    pub request_id: Option<String>,
    /// The answer replays an earlier request with the same idempotency key
    /// (`Idempotent-Replayed: true`).
    pub replayed: bool,
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<StripeRecord>,
    pub has_more: bool,
    /// When Stripe served the page, on Stripe's clock (its `Date` header, Unix seconds).
    pub served_at: Option<i64>,
}

/// Why a call did not succeed, sorted by what the caller must do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StripeCallError {
    /// Stripe refused this request for good (400, 402, 404): the record is rejected.
    #[error("Stripe refused the request: {message}{}{}", param.as_ref().map(|p| format!(" (param {p})")).unwrap_or_default(), request_id.as_ref().map(|r| format!(" [{r}]")).unwrap_or_default())]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
        param: Option<String>,
        request_id: Option<String>,
    },
    /// The key does not work or lacks a permission: every request will fail, stop the run.
    #[error("Stripe refused the API key: {message}{}", request_id.as_ref().map(|r| format!(" [{r}]")).unwrap_or_default())]
    Unauthorized {
        status: u16,
        message: String,
        request_id: Option<String>,
    },
    /// Transient failures outlasted every retry: the record failed and is retried next run.
    #[error("Stripe did not answer successfully: {problem}")]
    Unavailable { problem: String },
}

impl StripeCallError {
    pub fn request_id(&self) -> Option<&str> {
        match self {
            StripeCallError::Refused { request_id, .. }
            | StripeCallError::Unauthorized { request_id, .. } => request_id.as_deref(),
            StripeCallError::Unavailable { .. } => None,
        }
    }
}

/// Calls Stripe for one destination. Cheap to clone.
#[derive(Clone)]
pub struct StripeService {
    config: StripeConfig,
    http: HttpClient,
    authorization: HeaderValue,
    /// `api_base` parsed once: each request's URL is this with its path and query set, so the
    /// host is not parsed again per request.
    base_url: reqwest::Url,
}

impl StripeService {
    pub fn new(config: StripeConfig) -> Result<StripeService, HttpError> {
        let http = HttpClient::new(config.http_policy())?;
        Self::with_client(config, http)
    }

    pub fn with_client(config: StripeConfig, http: HttpClient) -> Result<StripeService, HttpError> {
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", config.api_key.expose())).map_err(
                |_| {
                    HttpError::InvalidRequest(
                        "the API key contains characters not allowed in an HTTP header".into(),
                    )
                },
            )?;
        authorization.set_sensitive(true);
        let base_url =
            reqwest::Url::parse(config.api_base.trim_end_matches('/')).map_err(|_| {
                HttpError::InvalidRequest(
                    "api_base is not a URL; give one such as https://api.stripe.com".into(),
                )
            })?;
        Ok(StripeService {
            config,
            http,
            authorization,
            base_url,
        })
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    pub fn config(&self) -> &StripeConfig {
        &self.config
    }

    pub async fn read_balance(&self) -> Result<(), StripeConnectionError> {
        let request = self.request(Method::GET, "/v1/balance", "GET /v1/balance", None, None);
        let hint = self.config.api_key.hint();
        let response =
            self.http
                .send(&request)
                .await
                .map_err(|e| StripeConnectionError::Unreachable {
                    api_base: super::config::display_api_base(&self.config.api_base),
                    problem: e.to_string(),
                })?;
        let message = error_message(&response);
        match response.status {
            200 if is_balance(&response.body) => Ok(()),
            200 => Err(StripeConnectionError::NotStripe {
                api_base: super::config::display_api_base(&self.config.api_base),
            }),
            401 => Err(StripeConnectionError::InvalidKey { hint, message }),
            403 => Err(StripeConnectionError::MissingPermission { hint, message }),
            status => Err(StripeConnectionError::Unexpected { status, message }),
        }
    }

    /// Creates a record. The idempotency key makes a retry, or a rerun after a crash, return
    /// the record the first attempt created instead of creating another.
    pub async fn create(
        &self,
        schema: &ObjectSchema,
        body: &str,
        idempotency_key: &str,
    ) -> Result<Written, StripeCallError> {
        let request = self.request(
            Method::POST,
            schema.collection_path,
            &format!("POST {}", schema.collection_path),
            Some(body.to_string()),
            Some(idempotency_key),
        );
        self.written(self.http.send(&request).await)
    }

    pub async fn update(
        &self,
        schema: &ObjectSchema,
        id: &str,
        body: &str,
        idempotency_key: &str,
    ) -> Result<Written, StripeCallError> {
        let request = self.request(
            Method::POST,
            &format!("{}/{}", schema.collection_path, path_segment(id)),
            &format!("POST {}/{{id}}", schema.collection_path),
            Some(body.to_string()),
            Some(idempotency_key),
        );
        self.written(self.http.send(&request).await)
    }

    /// Asks a record to take a step of its life (`POST /v1/invoices/{id}/finalize`): `action`
    /// is the last path segment. The idempotency key makes a repeat answer as the first did.
    pub async fn act(
        &self,
        schema: &ObjectSchema,
        id: &str,
        action: &str,
        body: &str,
        idempotency_key: &str,
    ) -> Result<Written, StripeCallError> {
        let request = self.request(
            Method::POST,
            &format!("{}/{}/{action}", schema.collection_path, path_segment(id)),
            &format!("POST {}/{{id}}/{action}", schema.collection_path),
            Some(body.to_string()),
            Some(idempotency_key),
        );
        self.written(self.http.send(&request).await)
    }

    /// Deletes a record (`DELETE`, idempotent by nature: Stripe ignores idempotency keys
    /// there, and a repeat answers 404).
    pub async fn delete(
        &self,
        schema: &ObjectSchema,
        id: &str,
    ) -> Result<Written, StripeCallError> {
        let request = self.request(
            Method::DELETE,
            &format!("{}/{}", schema.collection_path, path_segment(id)),
            &format!("DELETE {}/{{id}}", schema.collection_path),
            None,
            None,
        );
        self.written(self.http.send(&request).await)
    }

    /// The record with this id, or `None` when it was deleted or never existed.
    pub async fn retrieve(
        &self,
        schema: &ObjectSchema,
        id: &str,
    ) -> Result<Option<StripeRecord>, StripeCallError> {
        let expand = if schema.expanded.is_empty() {
            String::new()
        } else {
            let fields = schema.expanded.iter().map(|f| Json::from(*f)).collect();
            let query = Map::from_iter([("expand".to_string(), Json::Array(fields))]);
            format!("?{}", form::encode(&query))
        };
        let request = self.request(
            Method::GET,
            &format!("{}/{}{expand}", schema.collection_path, path_segment(id)),
            &format!("GET {}/{{id}}", schema.collection_path),
            None,
            None,
        );
        match self.json_from(self.http.send(&request).await) {
            Ok(body) if body.get("deleted") == Some(&Json::Bool(true)) => Ok(None),
            Ok(body) => record_of(body).map(Some),
            Err(StripeCallError::Refused { status: 404, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// One page of the object's list, newest first, each record read only for its id, its
    /// `created` and the fields that can be keys (see [`Written::record`]).
    pub async fn list_keys_page(
        &self,
        schema: &ObjectSchema,
        params: &Map<String, Json>,
    ) -> Result<Page, StripeCallError> {
        let request = self.request(
            Method::GET,
            &format!("{}?{}", schema.collection_path, form::encode(params)),
            &format!("GET {}", schema.collection_path),
            None,
            None,
        );
        let response = self.success(self.http.send(&request).await)?;
        let list: KeysList =
            serde_json::from_str(&response.body).map_err(|_| StripeCallError::Unavailable {
                problem: format!(
                    "Stripe answered GET {} with something that is not a list; check --api-base",
                    schema.collection_path
                ),
            })?;
        if list.object != "list" {
            return Err(StripeCallError::Unavailable {
                problem: format!(
                    "Stripe answered GET {} with something that is not a list; check --api-base",
                    schema.collection_path
                ),
            });
        }
        Ok(Page {
            has_more: list.has_more,
            records: list.data.into_iter().map(KeyFields::into_record).collect(),
            served_at: served_at(&response),
        })
    }

    /// One page of the object's list, newest first, with `params` as query (`limit`,
    /// `starting_after`, `created[gte]`, …).
    pub async fn list_page(
        &self,
        schema: &ObjectSchema,
        params: &Map<String, Json>,
    ) -> Result<Page, StripeCallError> {
        let mut params = params.clone();
        if !schema.expanded.is_empty() {
            let fields = schema
                .expanded
                .iter()
                .map(|f| Json::from(format!("data.{f}")));
            params.insert("expand".into(), Json::Array(fields.collect()));
        }
        let (body, served_at) = self
            .list(schema.collection_path, &form::encode(&params))
            .await?;
        Ok(Page {
            has_more: body
                .get("has_more")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            records: records_in(&body),
            served_at,
        })
    }

    /// One page of the account's events (`GET /v1/events`), newest first, with `params` as
    /// query (`types[]`, `created[gte]`, `starting_after`, `limit`).
    pub async fn events_page(&self, params: &Map<String, Json>) -> Result<Page, StripeCallError> {
        self.list_page(&EVENTS, params).await
    }

    /// A name for "the records of this object in this Stripe account", the same for every
    /// connection to the account: runs that may create the same records take turns under a
    /// lock of this name. The account is read from `GET /v1/account`; a key that may not read
    /// it (a restricted key) is named by a hash of itself instead.
    pub async fn create_scope(&self, object: &str) -> Result<String, StripeCallError> {
        let request = self.request(Method::GET, "/v1/account", "GET /v1/account", None, None);
        let base = super::config::display_api_base(&self.config.api_base);
        match self.json_from(self.http.send(&request).await) {
            Ok(account) => match account.get("id").and_then(Json::as_str) {
                Some(id) => Ok(format!("stripe {base} {id} {object}")),
                None => Err(StripeCallError::Unavailable {
                    problem: "Stripe answered GET /v1/account without an account id".to_string(),
                }),
            },
            Err(StripeCallError::Unauthorized { status: 403, .. })
            | Err(StripeCallError::Refused { status: 404, .. }) => {
                use sha2::Digest as _;
                let digest = sha2::Sha256::digest(self.config.api_key.expose().as_bytes());
                Ok(format!(
                    "stripe {base} key-{} {object}",
                    hex::encode(&digest[..8])
                ))
            }
            Err(other) => Err(other),
        }
    }

    async fn list(
        &self,
        collection_path: &str,
        query: &str,
    ) -> Result<(Json, Option<i64>), StripeCallError> {
        let request = self.request(
            Method::GET,
            &format!("{collection_path}?{query}"),
            &format!("GET {collection_path}"),
            None,
            None,
        );
        let response = self.success(self.http.send(&request).await)?;
        let served_at = served_at(&response);
        let body: Json =
            serde_json::from_str(&response.body).map_err(|e| StripeCallError::Unavailable {
                problem: format!("Stripe answered with JSON ferry cannot read ({e})"),
            })?;
        // An answer that is not a list must not read as "no records": ferry would create them all.
        let is_list = body.get("object").and_then(Json::as_str) == Some("list")
            && body.get("data").is_some_and(Json::is_array);
        if !is_list {
            return Err(StripeCallError::Unavailable {
                problem: format!(
                    "Stripe answered GET {collection_path} with something that is not a list; check --api-base"
                ),
            });
        }
        Ok((body, served_at))
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        endpoint: &str,
        body: Option<String>,
        idempotency_key: Option<&str>,
    ) -> OutboundRequest {
        let mut headers = vec![
            (AUTHORIZATION, self.authorization.clone()),
            (
                HeaderName::from_static("stripe-version"),
                HeaderValue::from_static(STRIPE_VERSION),
            ),
        ];
        if let Some(key) = idempotency_key.and_then(|k| HeaderValue::from_str(k).ok()) {
            headers.push((HeaderName::from_static("idempotency-key"), key));
        }
        OutboundRequest {
            method,
            url: self.url(path),
            endpoint: endpoint.to_string(),
            headers,
            body: body.map(|b| (b, FORM)),
        }
    }

    /// `api_base` followed by `path` (which may carry a query).
    fn url(&self, path: &str) -> reqwest::Url {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut url = self.base_url.clone();
        match self.base_url.path().trim_end_matches('/') {
            "" => url.set_path(path),
            prefix => url.set_path(&format!("{prefix}{path}")),
        }
        url.set_query(query);
        url
    }

    fn written(
        &self,
        sent: Result<InboundResponse, HttpError>,
    ) -> Result<Written, StripeCallError> {
        let (request_id, replayed) = match &sent {
            Ok(response) => (
                response.header("request-id").map(str::to_string),
                response.header("idempotent-replayed") == Some("true"),
            ),
            Err(_) => (None, false),
        };
        let response = self.success(sent)?;
        let fields: KeyFields =
            serde_json::from_str(&response.body).map_err(|e| StripeCallError::Unavailable {
                problem: format!("Stripe answered with a record ferry cannot read ({e})"),
            })?;
        Ok(Written {
            record: fields.into_record(),
            request_id,
            replayed,
        })
    }

    /// The response of a request that succeeded, or the error it is.
    fn success(
        &self,
        sent: Result<InboundResponse, HttpError>,
    ) -> Result<InboundResponse, StripeCallError> {
        let response = sent.map_err(|e| StripeCallError::Unavailable {
            problem: e.to_string(),
        })?;
        if response.is_success() {
            return Ok(response);
        }
        Err(self.error_of(&response))
    }

    fn json_from(&self, sent: Result<InboundResponse, HttpError>) -> Result<Json, StripeCallError> {
        let response = self.success(sent)?;
        serde_json::from_str(&response.body).map_err(|e| StripeCallError::Unavailable {
            problem: format!("Stripe answered with JSON ferry cannot read ({e})"),
        })
    }

    fn error_of(&self, response: &InboundResponse) -> StripeCallError {
        let request_id = response.header("request-id").map(str::to_string);
        let parsed: Option<ErrorBody> = serde_json::from_str(&response.body).ok();
        let message = error_message(response);
        match response.status {
            401 | 403 => StripeCallError::Unauthorized {
                status: response.status,
                message,
                request_id,
            },
            status => StripeCallError::Refused {
                status,
                code: parsed.as_ref().and_then(|b| b.error.code.clone()),
                message,
                param: parsed.and_then(|b| b.error.param),
                request_id,
            },
        }
    }
}

/// What ferry reads of a record in a write's answer or a listing: its id, its `created`, the
/// fields that can be keys, and the few that the next steps of a write read (an invoice's
/// `customer`, `currency`, `status` and `collection_method`, which its lines and its
/// finalizing need). Everything else is skipped without being built.
#[derive(serde::Deserialize)]
struct KeyFields {
    id: String,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    lookup_key: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Json>>,
    #[serde(default)]
    customer: Option<Json>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    collection_method: Option<String>,
}

impl KeyFields {
    fn into_record(self) -> StripeRecord {
        let mut object = Map::new();
        object.insert("id".to_string(), Json::String(self.id.clone()));
        if let Some(created) = self.created {
            object.insert("created".to_string(), Json::from(created));
        }
        if let Some(email) = self.email {
            object.insert("email".to_string(), Json::String(email));
        }
        if let Some(lookup_key) = self.lookup_key {
            object.insert("lookup_key".to_string(), Json::String(lookup_key));
        }
        if let Some(metadata) = self.metadata {
            object.insert("metadata".to_string(), Json::Object(metadata));
        }
        for (name, value) in [
            ("customer", self.customer.filter(|value| !value.is_null())),
            ("currency", self.currency.map(Json::String)),
            ("status", self.status.map(Json::String)),
            (
                "collection_method",
                self.collection_method.map(Json::String),
            ),
        ] {
            if let Some(value) = value {
                object.insert(name.to_string(), value);
            }
        }
        StripeRecord {
            id: self.id,
            object: Json::Object(object),
        }
    }
}

#[derive(serde::Deserialize)]
struct KeysList {
    object: String,
    data: Vec<KeyFields>,
    #[serde(default)]
    has_more: bool,
}

/// The events list, read like an object's list.
static EVENTS: ObjectSchema = ObjectSchema {
    object: "event",
    label: "Event",
    plural: "events",
    collection_path: "/v1/events",
    params: &[],
    key_fields: &[],
    featured_fields: &[],
    dashboard_path: "events",
    rules: None,
    expanded: &[],
    fields_once: std::sync::OnceLock::new(),
};

fn record_of(body: Json) -> Result<StripeRecord, StripeCallError> {
    match body.get("id").and_then(Json::as_str) {
        Some(id) => Ok(StripeRecord {
            id: id.to_string(),
            object: body,
        }),
        None => Err(StripeCallError::Unavailable {
            problem: "Stripe answered without a record id".to_string(),
        }),
    }
}

fn records_in(list: &Json) -> Vec<StripeRecord> {
    list.get("data")
        .and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|record| {
                    Some(StripeRecord {
                        id: record.get("id")?.as_str()?.to_string(),
                        object: record.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An id as one URL path segment: ids ferry did not make (a product's own id) may hold any
/// character.
fn path_segment(id: &str) -> String {
    form::encode_component(id)
}

/// Whether a 200 answer to `GET /v1/balance` is Stripe's balance object, so that a server that
/// is not Stripe (a proxy's login page, say) does not pass the connection test.
fn is_balance(body: &str) -> bool {
    serde_json::from_str::<Json>(body)
        .ok()
        .is_some_and(|b| b.get("object").and_then(Json::as_str) == Some("balance"))
}

fn error_message(response: &InboundResponse) -> String {
    serde_json::from_str::<ErrorBody>(&response.body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| format!("HTTP {}", response.status))
}

/// When the answer was served, on the server's clock: its `Date` header in Unix seconds.
fn served_at(response: &InboundResponse) -> Option<i64> {
    let date = httpdate::parse_http_date(response.header("date")?).ok()?;
    let seconds = date.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(seconds).ok()
}
