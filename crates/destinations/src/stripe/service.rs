//! Stripe Customers over the shared HTTP stack: create, update, find by email or by listing.

use super::config::{StripeConfig, StripeConnectionError, STRIPE_VERSION};
use ferry_http::{HttpClient, HttpError, InboundResponse, OutboundRequest};
use ferry_stripe_wire::error::ErrorBody;
use ferry_stripe_wire::form;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde_json::{Map, Value as Json};

const FORM: &str = "application/x-www-form-urlencoded";

/// A customer as Stripe returned it: its id and the whole object, for diffing and matching.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub id: String,
    pub object: Json,
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
        Ok(StripeService {
            config,
            http,
            authorization,
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
            200 => Ok(()),
            401 => Err(StripeConnectionError::InvalidKey { hint, message }),
            403 => Err(StripeConnectionError::MissingPermission { hint, message }),
            status => Err(StripeConnectionError::Unexpected { status, message }),
        }
    }

    /// Creates a customer. The idempotency key makes a retry, or a rerun after a crash,
    /// return the customer the first attempt created instead of creating another; the flag
    /// says whether Stripe answered with such a replay (`Idempotent-Replayed: true`).
    pub async fn create_customer(
        &self,
        body: &str,
        idempotency_key: &str,
    ) -> Result<(Customer, bool), StripeCallError> {
        let request = self.request(
            Method::POST,
            "/v1/customers",
            "POST /v1/customers",
            Some(body.to_string()),
            Some(idempotency_key),
        );
        let sent = self.http.send(&request).await;
        let replayed = sent
            .as_ref()
            .is_ok_and(|r| r.header("idempotent-replayed") == Some("true"));
        Ok((self.customer_from(sent)?, replayed))
    }

    /// The customer with this id, or `None` when it was deleted or never existed.
    pub async fn retrieve_customer(&self, id: &str) -> Result<Option<Customer>, StripeCallError> {
        let request = self.request(
            Method::GET,
            &format!("/v1/customers/{id}"),
            "GET /v1/customers/{id}",
            None,
            None,
        );
        match self.customer_from(self.http.send(&request).await) {
            Ok(customer) if customer.object.get("deleted") == Some(&Json::Bool(true)) => Ok(None),
            Ok(customer) => Ok(Some(customer)),
            Err(StripeCallError::Refused { status: 404, .. }) => Ok(None),
            Err(other) => Err(other),
        }
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

    pub async fn update_customer(
        &self,
        id: &str,
        body: &str,
        idempotency_key: &str,
    ) -> Result<Customer, StripeCallError> {
        let request = self.request(
            Method::POST,
            &format!("/v1/customers/{id}"),
            "POST /v1/customers/{id}",
            Some(body.to_string()),
            Some(idempotency_key),
        );
        self.customer_from(self.http.send(&request).await)
    }

    /// Customers whose email is exactly `email` (Stripe's filter is case-sensitive and
    /// immediately consistent), newest first.
    pub async fn customers_with_email(
        &self,
        email: &str,
    ) -> Result<Vec<Customer>, StripeCallError> {
        let query = form::encode(&Map::from_iter([
            ("email".to_string(), Json::String(email.to_string())),
            ("limit".to_string(), Json::from(100)),
        ]));
        let page = self.list_page(&query).await?;
        Ok(page.0)
    }

    /// Customers whose email matches `email` ignoring case, found through search. Search lags
    /// behind writes: use it only to find more matches, never to conclude there is none.
    pub async fn search_customers_by_email(
        &self,
        email: &str,
    ) -> Result<Vec<Customer>, StripeCallError> {
        let escaped = email.replace('\\', "\\\\").replace('\'', "\\'");
        let query = form::encode(&Map::from_iter([
            (
                "query".to_string(),
                Json::String(format!("email:'{escaped}'")),
            ),
            ("limit".to_string(), Json::from(100)),
        ]));
        let request = self.request(
            Method::GET,
            &format!("/v1/customers/search?{query}"),
            "GET /v1/customers/search",
            None,
            None,
        );
        let body = self.json_from(self.http.send(&request).await)?;
        Ok(customers_in(&body))
    }

    /// One page of all customers, newest first. Returns the page and whether more follow.
    pub async fn list_customers_page(
        &self,
        starting_after: Option<&str>,
    ) -> Result<(Vec<Customer>, bool), StripeCallError> {
        let mut params = Map::from_iter([("limit".to_string(), Json::from(100))]);
        if let Some(after) = starting_after {
            params.insert(
                "starting_after".to_string(),
                Json::String(after.to_string()),
            );
        }
        self.list_page(&form::encode(&params)).await
    }

    async fn list_page(&self, query: &str) -> Result<(Vec<Customer>, bool), StripeCallError> {
        let request = self.request(
            Method::GET,
            &format!("/v1/customers?{query}"),
            "GET /v1/customers",
            None,
            None,
        );
        let body = self.json_from(self.http.send(&request).await)?;
        // An answer that is not a list must not read as "no customers": ferry would create them all.
        let is_list = body.get("object").and_then(Json::as_str) == Some("list")
            && body.get("data").is_some_and(Json::is_array);
        if !is_list {
            return Err(StripeCallError::Unavailable {
                problem: "Stripe answered a customer listing with something that is not a list; check --api-base".to_string(),
            });
        }
        let has_more = body
            .get("has_more")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        Ok((customers_in(&body), has_more))
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
            url: format!("{}{path}", self.config.api_base.trim_end_matches('/')),
            endpoint: endpoint.to_string(),
            headers,
            body: body.map(|b| (b, FORM)),
        }
    }

    fn customer_from(
        &self,
        sent: Result<InboundResponse, HttpError>,
    ) -> Result<Customer, StripeCallError> {
        let body = self.json_from(sent)?;
        match body.get("id").and_then(Json::as_str) {
            Some(id) => Ok(Customer {
                id: id.to_string(),
                object: body.clone(),
            }),
            None => Err(StripeCallError::Unavailable {
                problem: "Stripe answered without a customer id".to_string(),
            }),
        }
    }

    fn json_from(&self, sent: Result<InboundResponse, HttpError>) -> Result<Json, StripeCallError> {
        let response = sent.map_err(|e| StripeCallError::Unavailable {
            problem: e.to_string(),
        })?;
        let request_id = response.header("request-id").map(str::to_string);
        if response.is_success() {
            return serde_json::from_str(&response.body).map_err(|e| {
                StripeCallError::Unavailable {
                    problem: format!("Stripe answered with JSON ferry cannot read ({e})"),
                }
            });
        }
        let parsed: Option<ErrorBody> = serde_json::from_str(&response.body).ok();
        let message = error_message(&response);
        match response.status {
            401 | 403 => Err(StripeCallError::Unauthorized {
                status: response.status,
                message,
                request_id,
            }),
            status => Err(StripeCallError::Refused {
                status,
                code: parsed.as_ref().and_then(|b| b.error.code.clone()),
                message,
                param: parsed.and_then(|b| b.error.param),
                request_id,
            }),
        }
    }
}

fn customers_in(list: &Json) -> Vec<Customer> {
    list.get("data")
        .and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|c| {
                    Some(Customer {
                        id: c.get("id")?.as_str()?.to_string(),
                        object: c.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn error_message(response: &InboundResponse) -> String {
    serde_json::from_str::<ErrorBody>(&response.body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| format!("HTTP {}", response.status))
}
