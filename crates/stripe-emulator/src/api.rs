//! The `/v1` routes: every request goes through the same pipeline, in Stripe's order.
//!
//! 1. unrecognized URL → 404; 2. authentication → 401, permission → 403; 3. rate limits → 429;
//! 4. body and params (JSON body, malformed form, unknown or invalid params) → 400;
//! 5. injected fault: 5xx, 429 `lock_timeout`, or dropped connection;
//! 6. idempotency: replay, 400 `idempotency_error` or 409 `idempotency_key_in_use`;
//! 7. added latency (while the idempotency key is held), execution, storage of the result;
//! 8. injected lost response: the result stands but the connection is cut.
//!
//! Steps 1–5 store nothing under the idempotency key, so retrying them with the same key is safe.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Map, Value};

use ferry_stripe_wire::customer::validate_customer_params;
use ferry_stripe_wire::error::{API_ERROR, IDEMPOTENCY_ERROR};
use ferry_stripe_wire::form::{decode, leaf_text};
use ferry_stripe_wire::invoice::{INVOICE, INVOICE_ITEM, INVOICE_STATUSES};
use ferry_stripe_wire::params::{boolean_of, is_supported_currency};
use ferry_stripe_wire::price::{PRICE, RECURRING_INTERVALS, USAGE_TYPES};
use ferry_stripe_wire::product::PRODUCT;
use ferry_stripe_wire::subscription::{COLLECTION_METHODS, SUBSCRIPTION};
use ferry_stripe_wire::{ParamError, Problem, StripeError};

use crate::auth::{authenticate, authorize, Caller, Permission};
use crate::catalog::PageQuery;
use crate::catalog_objects::{deleted_stub, price_for_response, text_is};
use crate::catalog_writes::{self, no_such, Failure, Origin};
use crate::connection::ConnectionCutter;
use crate::customer_object::{apply_params, new_customer};
use crate::events::{EventQuery, EventSource, TypeFilter};
use crate::faults::{decide, FaultKind};
use crate::idempotency::{Claim, Fingerprint, StoredResponse};
use crate::invoices::{self, InvoiceItemListQuery, InvoiceListQuery};
use crate::search::{
    SearchQuery, Searchable, CUSTOMER_SEARCH, INVOICE_SEARCH, PRICE_SEARCH, PRODUCT_SEARCH,
};
use crate::state::{new_invoice_prefix, new_object_id, unix_now, RecordedRequest, SharedState};
use crate::store::{CreatedRange, ListQuery, Lookup, SharedObject, UnknownCursor};
use crate::subscriptions::{self, SubscriptionListQuery, LIST_STATUSES};
use crate::writes::{self, DuplicateId, WriteError};
use std::borrow::Cow;

/// The version echoed in `Stripe-Version` when the client sends none.
pub(crate) const DEFAULT_STRIPE_VERSION: &str = "2020-08-27";
const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;
/// `types[]` of `GET /v1/events` takes at most this many names.
const EVENT_TYPES_MAX: usize = 20;
/// `lookup_keys[]` of `GET /v1/prices` takes at most this many keys.
const LOOKUP_KEYS_MAX: usize = ferry_stripe_wire::price::LOOKUP_KEYS_FILTER_MAX;

/// The Stripe endpoints the emulator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    CreateCustomer,
    ListCustomers,
    SearchCustomers,
    SearchProducts,
    SearchPrices,
    RetrieveCustomer,
    UpdateCustomer,
    DeleteCustomer,
    RetrieveBalance,
    RetrieveAccount,
    ListEvents,
    RetrieveEvent,
    CreateProduct,
    ListProducts,
    RetrieveProduct,
    UpdateProduct,
    DeleteProduct,
    CreatePrice,
    ListPrices,
    RetrievePrice,
    UpdatePrice,
    CreateSubscription,
    ListSubscriptions,
    RetrieveSubscription,
    UpdateSubscription,
    CancelSubscription,
    CreateInvoice,
    ListInvoices,
    SearchInvoices,
    RetrieveInvoice,
    UpdateInvoice,
    DeleteInvoice,
    ListInvoiceLines,
    FinalizeInvoice,
    SendInvoice,
    VoidInvoice,
    MarkInvoiceUncollectible,
    PayInvoice,
    CreateInvoiceItem,
    ListInvoiceItems,
    RetrieveInvoiceItem,
    UpdateInvoiceItem,
    DeleteInvoiceItem,
}

impl Endpoint {
    fn from_route(method: &Method, template: &str) -> Option<Endpoint> {
        let endpoint = match (method.as_str(), template) {
            ("POST", "/v1/customers") => Endpoint::CreateCustomer,
            ("GET", "/v1/customers") => Endpoint::ListCustomers,
            ("GET", "/v1/customers/search") => Endpoint::SearchCustomers,
            ("GET", "/v1/products/search") => Endpoint::SearchProducts,
            ("GET", "/v1/prices/search") => Endpoint::SearchPrices,
            ("GET", "/v1/customers/{id}") => Endpoint::RetrieveCustomer,
            ("POST", "/v1/customers/{id}") => Endpoint::UpdateCustomer,
            ("DELETE", "/v1/customers/{id}") => Endpoint::DeleteCustomer,
            ("GET", "/v1/balance") => Endpoint::RetrieveBalance,
            ("GET", "/v1/account") => Endpoint::RetrieveAccount,
            ("GET", "/v1/events") => Endpoint::ListEvents,
            ("GET", "/v1/events/{id}") => Endpoint::RetrieveEvent,
            ("POST", "/v1/products") => Endpoint::CreateProduct,
            ("GET", "/v1/products") => Endpoint::ListProducts,
            ("GET", "/v1/products/{id}") => Endpoint::RetrieveProduct,
            ("POST", "/v1/products/{id}") => Endpoint::UpdateProduct,
            ("DELETE", "/v1/products/{id}") => Endpoint::DeleteProduct,
            ("POST", "/v1/prices") => Endpoint::CreatePrice,
            ("GET", "/v1/prices") => Endpoint::ListPrices,
            ("GET", "/v1/prices/{id}") => Endpoint::RetrievePrice,
            ("POST", "/v1/prices/{id}") => Endpoint::UpdatePrice,
            ("POST", "/v1/subscriptions") => Endpoint::CreateSubscription,
            ("GET", "/v1/subscriptions") => Endpoint::ListSubscriptions,
            ("GET", "/v1/subscriptions/{id}") => Endpoint::RetrieveSubscription,
            ("POST", "/v1/subscriptions/{id}") => Endpoint::UpdateSubscription,
            ("DELETE", "/v1/subscriptions/{id}") => Endpoint::CancelSubscription,
            ("POST", "/v1/invoices") => Endpoint::CreateInvoice,
            ("GET", "/v1/invoices") => Endpoint::ListInvoices,
            ("GET", "/v1/invoices/search") => Endpoint::SearchInvoices,
            ("GET", "/v1/invoices/{id}") => Endpoint::RetrieveInvoice,
            ("POST", "/v1/invoices/{id}") => Endpoint::UpdateInvoice,
            ("DELETE", "/v1/invoices/{id}") => Endpoint::DeleteInvoice,
            ("GET", "/v1/invoices/{id}/lines") => Endpoint::ListInvoiceLines,
            ("POST", "/v1/invoices/{id}/finalize") => Endpoint::FinalizeInvoice,
            ("POST", "/v1/invoices/{id}/send") => Endpoint::SendInvoice,
            ("POST", "/v1/invoices/{id}/void") => Endpoint::VoidInvoice,
            ("POST", "/v1/invoices/{id}/mark_uncollectible") => Endpoint::MarkInvoiceUncollectible,
            ("POST", "/v1/invoices/{id}/pay") => Endpoint::PayInvoice,
            ("POST", "/v1/invoiceitems") => Endpoint::CreateInvoiceItem,
            ("GET", "/v1/invoiceitems") => Endpoint::ListInvoiceItems,
            ("GET", "/v1/invoiceitems/{id}") => Endpoint::RetrieveInvoiceItem,
            ("POST", "/v1/invoiceitems/{id}") => Endpoint::UpdateInvoiceItem,
            ("DELETE", "/v1/invoiceitems/{id}") => Endpoint::DeleteInvoiceItem,
            // Prices cannot be deleted: `DELETE /v1/prices/{id}` is an unknown URL, as on Stripe.
            _ => return None,
        };
        Some(endpoint)
    }

    /// Method and path template: the unit of the per-endpoint rate limit.
    fn name(self) -> &'static str {
        match self {
            Endpoint::CreateCustomer => "POST /v1/customers",
            Endpoint::ListCustomers => "GET /v1/customers",
            Endpoint::SearchCustomers => "GET /v1/customers/search",
            Endpoint::SearchProducts => "GET /v1/products/search",
            Endpoint::SearchPrices => "GET /v1/prices/search",
            Endpoint::RetrieveCustomer => "GET /v1/customers/{id}",
            Endpoint::UpdateCustomer => "POST /v1/customers/{id}",
            Endpoint::DeleteCustomer => "DELETE /v1/customers/{id}",
            Endpoint::RetrieveBalance => "GET /v1/balance",
            Endpoint::RetrieveAccount => "GET /v1/account",
            Endpoint::ListEvents => "GET /v1/events",
            Endpoint::RetrieveEvent => "GET /v1/events/{id}",
            Endpoint::CreateProduct => "POST /v1/products",
            Endpoint::ListProducts => "GET /v1/products",
            Endpoint::RetrieveProduct => "GET /v1/products/{id}",
            Endpoint::UpdateProduct => "POST /v1/products/{id}",
            Endpoint::DeleteProduct => "DELETE /v1/products/{id}",
            Endpoint::CreatePrice => "POST /v1/prices",
            Endpoint::ListPrices => "GET /v1/prices",
            Endpoint::RetrievePrice => "GET /v1/prices/{id}",
            Endpoint::UpdatePrice => "POST /v1/prices/{id}",
            Endpoint::CreateSubscription => "POST /v1/subscriptions",
            Endpoint::ListSubscriptions => "GET /v1/subscriptions",
            Endpoint::RetrieveSubscription => "GET /v1/subscriptions/{id}",
            Endpoint::UpdateSubscription => "POST /v1/subscriptions/{id}",
            Endpoint::CancelSubscription => "DELETE /v1/subscriptions/{id}",
            Endpoint::CreateInvoice => "POST /v1/invoices",
            Endpoint::ListInvoices => "GET /v1/invoices",
            Endpoint::SearchInvoices => "GET /v1/invoices/search",
            Endpoint::RetrieveInvoice => "GET /v1/invoices/{id}",
            Endpoint::UpdateInvoice => "POST /v1/invoices/{id}",
            Endpoint::DeleteInvoice => "DELETE /v1/invoices/{id}",
            Endpoint::ListInvoiceLines => "GET /v1/invoices/{id}/lines",
            Endpoint::FinalizeInvoice => "POST /v1/invoices/{id}/finalize",
            Endpoint::SendInvoice => "POST /v1/invoices/{id}/send",
            Endpoint::VoidInvoice => "POST /v1/invoices/{id}/void",
            Endpoint::MarkInvoiceUncollectible => "POST /v1/invoices/{id}/mark_uncollectible",
            Endpoint::PayInvoice => "POST /v1/invoices/{id}/pay",
            Endpoint::CreateInvoiceItem => "POST /v1/invoiceitems",
            Endpoint::ListInvoiceItems => "GET /v1/invoiceitems",
            Endpoint::RetrieveInvoiceItem => "GET /v1/invoiceitems/{id}",
            Endpoint::UpdateInvoiceItem => "POST /v1/invoiceitems/{id}",
            Endpoint::DeleteInvoiceItem => "DELETE /v1/invoiceitems/{id}",
        }
    }

    fn permission(self) -> Permission {
        match self {
            Endpoint::CreateCustomer | Endpoint::UpdateCustomer | Endpoint::DeleteCustomer => {
                Permission::CustomersWrite
            }
            // Events show customers, so reading them needs what reading customers needs (Stripe
            // has a separate Events permission on restricted keys; the emulator does not).
            Endpoint::ListCustomers
            | Endpoint::SearchCustomers
            | Endpoint::RetrieveCustomer
            | Endpoint::ListEvents
            | Endpoint::RetrieveEvent => Permission::CustomersRead,
            Endpoint::RetrieveBalance => Permission::BalanceRead,
            Endpoint::RetrieveAccount => Permission::AccountRead,
            Endpoint::CreateProduct | Endpoint::UpdateProduct | Endpoint::DeleteProduct => {
                Permission::ProductsWrite
            }
            Endpoint::ListProducts | Endpoint::SearchProducts | Endpoint::RetrieveProduct => {
                Permission::ProductsRead
            }
            Endpoint::CreatePrice | Endpoint::UpdatePrice => Permission::PricesWrite,
            Endpoint::ListPrices | Endpoint::SearchPrices | Endpoint::RetrievePrice => {
                Permission::PricesRead
            }
            Endpoint::CreateSubscription
            | Endpoint::UpdateSubscription
            | Endpoint::CancelSubscription => Permission::SubscriptionsWrite,
            Endpoint::ListSubscriptions | Endpoint::RetrieveSubscription => {
                Permission::SubscriptionsRead
            }
            // One permission covers invoices and invoice items, as Stripe's Invoices
            // permission does.
            Endpoint::CreateInvoice
            | Endpoint::UpdateInvoice
            | Endpoint::DeleteInvoice
            | Endpoint::FinalizeInvoice
            | Endpoint::SendInvoice
            | Endpoint::VoidInvoice
            | Endpoint::MarkInvoiceUncollectible
            | Endpoint::PayInvoice
            | Endpoint::CreateInvoiceItem
            | Endpoint::UpdateInvoiceItem
            | Endpoint::DeleteInvoiceItem => Permission::InvoicesWrite,
            Endpoint::ListInvoices
            | Endpoint::SearchInvoices
            | Endpoint::RetrieveInvoice
            | Endpoint::ListInvoiceLines
            | Endpoint::ListInvoiceItems
            | Endpoint::RetrieveInvoiceItem => Permission::InvoicesRead,
        }
    }

    /// Whether the path ends with a record's id.
    fn has_path_id(self) -> bool {
        matches!(
            self,
            Endpoint::RetrieveCustomer
                | Endpoint::UpdateCustomer
                | Endpoint::DeleteCustomer
                | Endpoint::RetrieveEvent
                | Endpoint::RetrieveProduct
                | Endpoint::UpdateProduct
                | Endpoint::DeleteProduct
                | Endpoint::RetrievePrice
                | Endpoint::UpdatePrice
                | Endpoint::RetrieveSubscription
                | Endpoint::UpdateSubscription
                | Endpoint::CancelSubscription
                | Endpoint::RetrieveInvoice
                | Endpoint::UpdateInvoice
                | Endpoint::DeleteInvoice
                | Endpoint::ListInvoiceLines
                | Endpoint::FinalizeInvoice
                | Endpoint::SendInvoice
                | Endpoint::VoidInvoice
                | Endpoint::MarkInvoiceUncollectible
                | Endpoint::PayInvoice
                | Endpoint::RetrieveInvoiceItem
                | Endpoint::UpdateInvoiceItem
                | Endpoint::DeleteInvoiceItem
        )
    }
}

/// Entry point of every `/v1` route. The pipeline runs in its own task so that a client hanging
/// up mid-request does not stop it: on Stripe, too, a request that started executing finishes.
pub(crate) async fn handle_v1(
    State(state): State<Arc<SharedState>>,
    ConnectInfo(cutter): ConnectInfo<ConnectionCutter>,
    matched_path: MatchedPath,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let template = matched_path.as_str().to_owned();
    let pipeline = tokio::spawn(async move {
        let request = IncomingRequest {
            method,
            uri,
            headers,
            body,
        };
        run_pipeline(&state, request, Some(&template)).await
    });
    let reply = match pipeline.await {
        Ok(reply) => reply,
        Err(join_error) => {
            tracing::error!(%join_error, "The request pipeline panicked.");
            Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                StripeError::of_kind(API_ERROR, "The emulator failed internally."),
            )
        }
    };
    if reply.cut {
        cutter.cut();
    }
    reply.into_response()
}

/// Any other path under `/v1`: Stripe's 404 for an unknown URL, recorded like other requests.
pub(crate) async fn handle_unrecognized_v1(
    State(state): State<Arc<SharedState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = IncomingRequest {
        method,
        uri,
        headers,
        body,
    };
    run_pipeline(&state, request, None).await.into_response()
}

struct IncomingRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// A response about to be sent (or, when `cut`, withheld).
struct Reply {
    status: StatusCode,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    cut: bool,
}

impl Reply {
    /// Serializes straight from the stored objects: building a `Value` tree first would copy
    /// every customer on every read, which dominated the cost of list requests.
    fn json(status: StatusCode, body: &impl Serialize) -> Reply {
        Reply {
            status,
            body: Bytes::from(serde_json::to_vec(body).expect("JSON values serialize")),
            headers: Vec::new(),
            cut: false,
        }
    }

    fn error(status: StatusCode, error: StripeError) -> Reply {
        Reply::json(status, &error.into_body())
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// What steps 1–6 decided.
enum Staged {
    /// Answer now with this reply (no execution).
    Reply(Reply),
    /// Run the endpoint; `idempotency_key` is held and must be completed.
    Execute {
        endpoint: Endpoint,
        caller: Caller,
        params: Map<String, Value>,
        /// The `{id}` of the path (a customer or an event).
        path_id: Option<String>,
        idempotency_key: Option<String>,
    },
}

async fn run_pipeline(
    state: &SharedState,
    request: IncomingRequest,
    template: Option<&str>,
) -> Reply {
    let sequence = state
        .request_sequence
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (faults, seed) = {
        let settings = state.settings();
        (settings.faults.clone(), settings.fault_seed)
    };
    let decision = decide(&faults, seed, sequence);
    let request_id = new_object_id("req");
    let endpoint = template.and_then(|template| Endpoint::from_route(&request.method, template));
    let idempotency_key = header_text(&request.headers, "idempotency-key");
    let version = header_text(&request.headers, "stripe-version")
        .unwrap_or_else(|| DEFAULT_STRIPE_VERSION.to_owned());
    let mut record = RecordedRequest {
        sequence,
        request_id: request_id.clone(),
        method: request.method.to_string(),
        path: request.uri.path().to_owned(),
        endpoint: endpoint.map(|endpoint| endpoint.name().to_owned()),
        params: Value::Null,
        idempotency_key: idempotency_key.clone(),
        status: None,
        fault: None,
        executed: false,
        replayed: false,
    };

    let staged = stage(
        state,
        &request,
        endpoint,
        decision.fault,
        decision.server_error_status,
        &mut record,
    );
    let held_key = match &staged {
        Staged::Execute {
            caller,
            idempotency_key: Some(key),
            ..
        } => Some(HeldKey {
            state,
            api_key: caller.key.clone(),
            key: key.clone(),
            completed: false,
        }),
        _ => None,
    };
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let mut reply = match staged {
        Staged::Reply(reply) => reply,
        Staged::Execute {
            endpoint,
            caller,
            params,
            path_id,
            idempotency_key: executed_key,
        } => {
            let source = EventSource {
                request_id: Some(request_id.clone()),
                idempotency_key: executed_key,
                api_version: version.clone(),
                livemode: Some(caller.livemode),
            };
            let reply = execute(
                state,
                endpoint,
                &caller,
                &params,
                path_id.as_deref(),
                &source,
            );
            record.executed = true;
            if let Some(held_key) = held_key {
                held_key.complete(StoredResponse {
                    status: reply.status.as_u16(),
                    body: reply.body.clone(),
                    request_id: request_id.clone(),
                });
            }
            if decision.fault == Some(FaultKind::LostResponse) {
                record.fault = Some(FaultKind::LostResponse);
                Reply { cut: true, ..reply }
            } else {
                reply
            }
        }
    };

    reply = reply.with_header("request-id", &request_id);
    reply = reply.with_header("stripe-version", &version);
    if let Some(key) = &idempotency_key {
        if request.method == Method::POST {
            reply = reply.with_header("idempotency-key", key);
        }
    }
    let outcome = match (reply.cut, record.fault) {
        (true, Some(FaultKind::DroppedConnection)) => "dropped".to_owned(),
        (true, _) => "lost_response".to_owned(),
        (false, _) => reply.status.as_u16().to_string(),
    };
    if record.fault != Some(FaultKind::DroppedConnection) {
        record.status = Some(reply.status.as_u16());
    }
    state.log().record(record, outcome);
    reply
}

/// An idempotency key claimed for execution. Should the request stop before completing (a panic,
/// or the runtime shutting down during the added latency), dropping it releases the key, so that
/// retries are not answered 409 forever.
struct HeldKey<'a> {
    state: &'a SharedState,
    api_key: String,
    key: String,
    completed: bool,
}

impl HeldKey<'_> {
    fn complete(mut self, response: StoredResponse) {
        self.state
            .idempotency()
            .complete(&self.api_key, &self.key, response);
        self.completed = true;
    }
}

impl Drop for HeldKey<'_> {
    fn drop(&mut self) {
        if !self.completed {
            self.state.idempotency().abandon(&self.api_key, &self.key);
        }
    }
}

/// Steps 1–6: everything that can answer without executing.
fn stage(
    state: &SharedState,
    request: &IncomingRequest,
    endpoint: Option<Endpoint>,
    fault: Option<FaultKind>,
    server_error_status: u16,
    record: &mut RecordedRequest,
) -> Staged {
    let Some(endpoint) = endpoint else {
        return Staged::Reply(unrecognized_url(&request.method, &request.uri));
    };
    let caller = match authenticate(
        &request.headers,
        &state.accepted_keys,
        &state.restricted_keys,
    ) {
        Ok(caller) => caller,
        Err(error) => {
            let reply = Reply::error(StatusCode::UNAUTHORIZED, error)
                .with_header("www-authenticate", "Basic realm=\"Stripe\"");
            return Staged::Reply(reply);
        }
    };
    if let Err(error) = authorize(&caller, endpoint.permission()) {
        return Staged::Reply(Reply::error(StatusCode::FORBIDDEN, error));
    }
    let is_search = matches!(
        endpoint,
        Endpoint::SearchCustomers
            | Endpoint::SearchProducts
            | Endpoint::SearchPrices
            | Endpoint::SearchInvoices
    );
    if let Err(reason) =
        state
            .limiter()
            .admit(caller.livemode, endpoint.name(), is_search, Instant::now())
    {
        let error = StripeError::invalid_request(
            "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits.",
        )
        .with_code("rate_limit");
        let reply = Reply::error(StatusCode::TOO_MANY_REQUESTS, error)
            .with_header("stripe-rate-limited-reason", reason.header_value());
        return Staged::Reply(reply);
    }

    let params = match read_params(request) {
        Ok(params) => params,
        Err(error) => return Staged::Reply(Reply::error(StatusCode::BAD_REQUEST, error)),
    };
    record.params = Value::Object(params.clone());
    if let Err(error) = validate_for(endpoint, &params) {
        return Staged::Reply(Reply::error(StatusCode::BAD_REQUEST, error));
    }
    let idempotency_key = match (&record.idempotency_key, &request.method) {
        (Some(key), &Method::POST) => Some(key.clone()),
        _ => None,
    };
    if let Some(key) = &idempotency_key {
        if key.chars().count() > IDEMPOTENCY_KEY_MAX_CHARS {
            let error = StripeError::invalid_request(format!(
                "Invalid Idempotency-Key: must be at most {IDEMPOTENCY_KEY_MAX_CHARS} characters"
            ))
            .with_param("Idempotency-Key");
            return Staged::Reply(Reply::error(StatusCode::BAD_REQUEST, error));
        }
    }

    match fault {
        Some(FaultKind::ServerError) => {
            record.fault = fault;
            let status = StatusCode::from_u16(server_error_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = StripeError::of_kind(
                API_ERROR,
                "An unknown error occurred (injected by the ferry Stripe emulator).",
            );
            return Staged::Reply(Reply::error(status, error));
        }
        Some(FaultKind::LockTimeout) => {
            record.fault = fault;
            let error = StripeError::invalid_request(
                "This object cannot be accessed right now because another API request or Stripe process is currently accessing it. If you see this error intermittently, retry the request. If you see this error frequently and are making multiple concurrent requests to a single object, make your requests serially or at a lower rate.",
            )
            .with_code("lock_timeout");
            return Staged::Reply(Reply::error(StatusCode::TOO_MANY_REQUESTS, error));
        }
        Some(FaultKind::DroppedConnection) => {
            record.fault = fault;
            let mut reply = Reply::json(StatusCode::INTERNAL_SERVER_ERROR, &Value::Null);
            reply.cut = true;
            return Staged::Reply(reply);
        }
        Some(FaultKind::LostResponse) | None => {}
    }

    // Ids chosen by callers (products) may need percent-encoding in the path. The id is the
    // third segment (`/v1/invoices/{id}/finalize`), whatever follows it.
    let path_id = endpoint
        .has_path_id()
        .then(|| request.uri.path().split('/').nth(3).map(percent_decode))
        .flatten();
    if let Some(key) = &idempotency_key {
        let fingerprint = Fingerprint::new(
            format!("{} {}", request.method, request.uri.path()),
            &params,
        );
        let claim = state.idempotency().claim(&caller.key, key, &fingerprint);
        match claim {
            Claim::Execute => {}
            Claim::Replay(stored) => {
                record.replayed = true;
                let reply = Reply {
                    status: StatusCode::from_u16(stored.status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    body: stored.body,
                    headers: Vec::new(),
                    cut: false,
                }
                .with_header("idempotent-replayed", "true")
                .with_header("original-request", &stored.request_id);
                return Staged::Reply(reply);
            }
            Claim::InUse => {
                let error = StripeError::invalid_request(format!(
                    "There is currently another in-progress request using this idempotency key ('{key}'). Try again once it has finished."
                ))
                .with_code("idempotency_key_in_use");
                return Staged::Reply(Reply::error(StatusCode::CONFLICT, error));
            }
            Claim::OtherEndpoint { first } => {
                let error = StripeError::of_kind(
                    IDEMPOTENCY_ERROR,
                    format!(
                        "Keys for idempotent requests can only be used for the same endpoint they were first used for ('{first}' vs '{}'). Try using a key other than '{key}' if you meant to execute a different request.",
                        fingerprint.method_and_path
                    ),
                );
                return Staged::Reply(Reply::error(StatusCode::BAD_REQUEST, error));
            }
            Claim::OtherParams => {
                let error = StripeError::of_kind(
                    IDEMPOTENCY_ERROR,
                    format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                    ),
                );
                return Staged::Reply(Reply::error(StatusCode::BAD_REQUEST, error));
            }
        }
    }
    Staged::Execute {
        endpoint,
        caller,
        params,
        path_id,
        idempotency_key,
    }
}

/// Query string for GET and DELETE; body for POST (plus query params the body does not set).
fn read_params(request: &IncomingRequest) -> Result<Map<String, Value>, StripeError> {
    let query = request.uri.query().unwrap_or_default();
    let mut params = decode(query).map_err(|error| error.to_stripe_error())?;
    if request.method == Method::POST && !request.body.is_empty() {
        let content_type = header_text(&request.headers, "content-type").unwrap_or_default();
        if content_type.to_ascii_lowercase().contains("json") {
            return Err(StripeError::invalid_request(
                "Invalid request (check that your POST content type is application/x-www-form-urlencoded). If you have any questions, we can help at https://support.stripe.com/.",
            ));
        }
        let body = std::str::from_utf8(&request.body).map_err(|_| {
            StripeError::invalid_request("Invalid request: the body is not valid UTF-8.")
        })?;
        let body_params = decode(body).map_err(|error| error.to_stripe_error())?;
        for (key, value) in body_params {
            params.insert(key, value);
        }
    }
    Ok(params)
}

/// The parameter checks that happen before the idempotency layer.
fn validate_for(endpoint: Endpoint, params: &Map<String, Value>) -> Result<(), StripeError> {
    let checked = match endpoint {
        Endpoint::CreateCustomer => validate_customer_params(params, false),
        Endpoint::UpdateCustomer => validate_customer_params(params, true),
        Endpoint::CreateProduct => PRODUCT.validate(params, false),
        Endpoint::UpdateProduct => PRODUCT.validate(params, true),
        Endpoint::CreatePrice => PRICE.validate(params, false),
        Endpoint::UpdatePrice => PRICE.validate(params, true),
        Endpoint::CreateSubscription => SUBSCRIPTION.validate(params, false),
        Endpoint::UpdateSubscription => SUBSCRIPTION.validate(params, true),
        Endpoint::CancelSubscription => check_cancel_params(params),
        Endpoint::CreateInvoice => INVOICE.validate(params, false),
        Endpoint::UpdateInvoice => INVOICE.validate(params, true),
        Endpoint::CreateInvoiceItem => INVOICE_ITEM.validate(params, false),
        Endpoint::UpdateInvoiceItem => INVOICE_ITEM.validate(params, true),
        Endpoint::FinalizeInvoice => check_booleans(params, &["auto_advance"]),
        Endpoint::PayInvoice => check_booleans(params, &["paid_out_of_band", "forgive"]),
        Endpoint::RetrieveCustomer
        | Endpoint::DeleteCustomer
        | Endpoint::RetrieveBalance
        | Endpoint::RetrieveAccount
        | Endpoint::RetrieveEvent
        | Endpoint::RetrieveProduct
        | Endpoint::DeleteProduct
        | Endpoint::RetrievePrice
        | Endpoint::RetrieveSubscription
        | Endpoint::RetrieveInvoice
        | Endpoint::DeleteInvoice
        | Endpoint::SendInvoice
        | Endpoint::VoidInvoice
        | Endpoint::MarkInvoiceUncollectible
        | Endpoint::RetrieveInvoiceItem
        | Endpoint::DeleteInvoiceItem => only_expand(params),
        Endpoint::ListCustomers => return parse_list_query(params).map(|_| ()),
        Endpoint::ListEvents => return parse_event_query(params).map(|_| ()),
        Endpoint::SearchCustomers => {
            return parse_search_params(params, &CUSTOMER_SEARCH).map(|_| ())
        }
        Endpoint::SearchProducts => {
            return parse_search_params(params, &PRODUCT_SEARCH).map(|_| ())
        }
        Endpoint::SearchPrices => return parse_search_params(params, &PRICE_SEARCH).map(|_| ()),
        Endpoint::ListProducts => return parse_product_list(params).map(|_| ()),
        Endpoint::ListPrices => return parse_price_list(params).map(|_| ()),
        Endpoint::ListSubscriptions => return parse_subscription_list(params).map(|_| ()),
        Endpoint::SearchInvoices => {
            return parse_search_params(params, &INVOICE_SEARCH).map(|_| ())
        }
        Endpoint::ListInvoices => return parse_invoice_list(params).map(|_| ()),
        Endpoint::ListInvoiceLines => return parse_lines_page(params).map(|_| ()),
        Endpoint::ListInvoiceItems => return parse_invoice_item_list(params).map(|_| ()),
    };
    checked.map_err(|error| error.to_stripe_error())
}

fn only_expand(params: &Map<String, Value>) -> Result<(), ParamError> {
    match params.keys().find(|key| key.as_str() != "expand") {
        Some(unknown) => Err(ParamError::new(unknown.clone(), Problem::Unknown)),
        None => Ok(()),
    }
}

/// `DELETE /v1/subscriptions/{id}`: `invoice_now` and `prorate` (booleans, accepted and
/// ignored: the emulator makes no invoices) and `expand`.
fn check_cancel_params(params: &Map<String, Value>) -> Result<(), ParamError> {
    for (name, value) in params {
        match name.as_str() {
            "invoice_now" | "prorate" => {
                if boolean_of(value).is_none() {
                    return Err(ParamError::new(name.clone(), Problem::NotBoolean));
                }
            }
            "expand" => {}
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown)),
        }
    }
    Ok(())
}

/// Booleans among `names`, and `expand`: the params of an invoice action
/// (`POST /v1/invoices/{id}/finalize`, `/pay`).
fn check_booleans(params: &Map<String, Value>, names: &[&str]) -> Result<(), ParamError> {
    for (name, value) in params {
        if names.contains(&name.as_str()) {
            if boolean_of(value).is_none() {
                return Err(ParamError::new(name.clone(), Problem::NotBoolean));
            }
        } else if name != "expand" {
            return Err(ParamError::new(name.clone(), Problem::Unknown));
        }
    }
    Ok(())
}

/// `GET /v1/invoices`: `customer`, `status`, `collection_method`, `created`, `limit`, cursors.
fn parse_invoice_list(params: &Map<String, Value>) -> Result<InvoiceListQuery, StripeError> {
    let mut query = InvoiceListQuery {
        page: PageQuery {
            limit: 10,
            ..PageQuery::default()
        },
        ..InvoiceListQuery::default()
    };
    for (name, value) in params {
        if page_param(&mut query.page, name, value)? {
            continue;
        }
        match name.as_str() {
            "customer" => query.customer = Some(required_text(value, name, 5000)?),
            "status" => query.status = Some(parse_enum(value, name, INVOICE_STATUSES)?),
            "collection_method" => {
                query.collection_method = Some(parse_enum(value, name, COLLECTION_METHODS)?)
            }
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error()),
        }
    }
    if query.page.starting_after.is_some() && query.page.ending_before.is_some() {
        return Err(both_cursors());
    }
    Ok(query)
}

/// `GET /v1/invoiceitems`: `customer`, `invoice`, `pending`, `created`, `limit`, cursors.
fn parse_invoice_item_list(
    params: &Map<String, Value>,
) -> Result<InvoiceItemListQuery, StripeError> {
    let mut query = InvoiceItemListQuery {
        page: PageQuery {
            limit: 10,
            ..PageQuery::default()
        },
        ..InvoiceItemListQuery::default()
    };
    for (name, value) in params {
        if page_param(&mut query.page, name, value)? {
            continue;
        }
        match name.as_str() {
            "customer" => query.customer = Some(required_text(value, name, 5000)?),
            "invoice" => query.invoice = Some(required_text(value, name, 5000)?),
            "pending" => query.pending = Some(parse_boolean(value, name)?),
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error()),
        }
    }
    if query.page.starting_after.is_some() && query.page.ending_before.is_some() {
        return Err(both_cursors());
    }
    Ok(query)
}

/// `GET /v1/invoices/{id}/lines`: `limit` and cursors (no `created`: lines have none).
fn parse_lines_page(params: &Map<String, Value>) -> Result<PageQuery, StripeError> {
    let mut page = PageQuery {
        limit: 10,
        ..PageQuery::default()
    };
    for (name, value) in params {
        if name == "created" || !page_param(&mut page, name, value)? {
            return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error());
        }
    }
    if page.starting_after.is_some() && page.ending_before.is_some() {
        return Err(both_cursors());
    }
    Ok(page)
}

/// `GET /v1/subscriptions`: `customer`, `price`, `status` (default: all but canceled and
/// incomplete_expired; `all`, `ended`, or one status), `collection_method`, `created`, `limit`,
/// cursors.
fn parse_subscription_list(
    params: &Map<String, Value>,
) -> Result<SubscriptionListQuery, StripeError> {
    let mut query = SubscriptionListQuery {
        page: PageQuery {
            limit: 10,
            ..PageQuery::default()
        },
        ..SubscriptionListQuery::default()
    };
    for (name, value) in params {
        if page_param(&mut query.page, name, value)? {
            continue;
        }
        match name.as_str() {
            "customer" => query.customer = Some(required_text(value, name, 5000)?),
            "price" => query.price = Some(required_text(value, name, 5000)?),
            "status" => query.status = Some(parse_enum(value, name, LIST_STATUSES)?),
            "collection_method" => {
                query.collection_method = Some(parse_enum(value, name, COLLECTION_METHODS)?)
            }
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error()),
        }
    }
    if query.page.starting_after.is_some() && query.page.ending_before.is_some() {
        return Err(both_cursors());
    }
    Ok(query)
}

fn parse_list_query(params: &Map<String, Value>) -> Result<ListQuery, StripeError> {
    let mut query = ListQuery {
        limit: 10,
        ..ListQuery::default()
    };
    for (name, value) in params {
        match name.as_str() {
            "email" => query.email = Some(required_text(value, name, 512)?),
            "created" => query.created = parse_created(value)?,
            "limit" => query.limit = parse_limit(value)?,
            "starting_after" => query.starting_after = Some(required_text(value, name, 5000)?),
            "ending_before" => query.ending_before = Some(required_text(value, name, 5000)?),
            "expand" => {}
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error()),
        }
    }
    if query.starting_after.is_some() && query.ending_before.is_some() {
        return Err(both_cursors());
    }
    Ok(query)
}

fn both_cursors() -> StripeError {
    StripeError::invalid_request(
        "You may only specify one of these parameters: ending_before, starting_after.",
    )
    .with_code("parameters_exclusive")
    .with_param("ending_before")
}

/// The params every list takes: `created`, `limit`, `starting_after`, `ending_before`,
/// `expand`. Returns whether `name` was one of them.
fn page_param(page: &mut PageQuery, name: &str, value: &Value) -> Result<bool, StripeError> {
    match name {
        "created" => page.created = parse_created(value)?,
        "limit" => page.limit = parse_limit(value)?,
        "starting_after" => page.starting_after = Some(required_text(value, name, 5000)?),
        "ending_before" => page.ending_before = Some(required_text(value, name, 5000)?),
        "expand" => {}
        _ => return Ok(false),
    }
    Ok(true)
}

fn parse_boolean(value: &Value, name: &str) -> Result<bool, StripeError> {
    boolean_of(value).ok_or_else(|| ParamError::new(name, Problem::NotBoolean).to_stripe_error())
}

/// `name[]=a&name[]=b` or `name[0]=a&name[1]=b`: at most `max` strings.
fn parse_strings(value: &Value, name: &str, max: usize) -> Result<Vec<String>, StripeError> {
    let Value::Array(items) = value else {
        return Err(
            ParamError::new(name, Problem::WrongShape { expected: "array" }).to_stripe_error(),
        );
    };
    if items.len() > max {
        return Err(ParamError::new(
            name,
            Problem::TooManyItems {
                max,
                actual: items.len(),
            },
        )
        .to_stripe_error());
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| required_text(item, &format!("{name}[{index}]"), 5000))
        .collect()
}

fn parse_enum(
    value: &Value,
    name: &str,
    allowed: &'static [&'static str],
) -> Result<String, StripeError> {
    match leaf_text(value) {
        Some(text) if allowed.contains(&text.as_ref()) => Ok(text.into_owned()),
        _ => Err(ParamError::new(
            name,
            Problem::NotInEnum {
                allowed: allowed.to_vec(),
            },
        )
        .to_stripe_error()),
    }
}

/// Whether `expand[]` asks for `path` (`tiers`, or `data.tiers` in a list).
fn expands(params: &Map<String, Value>, path: &str) -> bool {
    match params.get("expand") {
        Some(Value::Array(items)) => items
            .iter()
            .any(|item| leaf_text(item).as_deref() == Some(path)),
        _ => false,
    }
}

/// Filters and cursor of `GET /v1/products`, already validated.
#[derive(Debug, Default)]
struct ProductListQuery {
    page: PageQuery,
    active: Option<bool>,
    ids: Option<Vec<String>>,
    shippable: Option<bool>,
    url: Option<String>,
}

impl ProductListQuery {
    fn keeps(&self, product: &Map<String, Value>) -> bool {
        self.active
            .is_none_or(|active| product["active"].as_bool() == Some(active))
            && self.ids.as_ref().is_none_or(|ids| {
                ids.iter()
                    .any(|id| product["id"].as_str() == Some(id.as_str()))
            })
            // A product whose `shippable` was never set counts as not shippable.
            && self.shippable.is_none_or(|shippable| {
                product["shippable"].as_bool().unwrap_or(false) == shippable
            })
            && self
                .url
                .as_ref()
                .is_none_or(|url| product["url"].as_str() == Some(url.as_str()))
    }
}

/// `GET /v1/products`: `active`, `ids[]` (not with cursors), `shippable`, `url`, `created`,
/// `limit`, cursors.
fn parse_product_list(params: &Map<String, Value>) -> Result<ProductListQuery, StripeError> {
    let mut query = ProductListQuery {
        page: PageQuery {
            limit: 10,
            ..PageQuery::default()
        },
        ..ProductListQuery::default()
    };
    for (name, value) in params {
        if page_param(&mut query.page, name, value)? {
            continue;
        }
        match name.as_str() {
            "active" => query.active = Some(parse_boolean(value, name)?),
            "shippable" => query.shippable = Some(parse_boolean(value, name)?),
            "ids" => query.ids = Some(parse_strings(value, name, usize::MAX)?),
            "url" => query.url = Some(required_text(value, name, 5000)?),
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error()),
        }
    }
    if query.page.starting_after.is_some() && query.page.ending_before.is_some() {
        return Err(both_cursors());
    }
    if query.ids.is_some()
        && (query.page.starting_after.is_some() || query.page.ending_before.is_some())
    {
        return Err(StripeError::invalid_request(
            "`ids` cannot be used with `starting_after` or `ending_before`.",
        )
        .with_param("ids"));
    }
    Ok(query)
}

/// Filters and cursor of `GET /v1/prices`, already validated.
#[derive(Debug, Default)]
struct PriceListQuery {
    page: PageQuery,
    /// Without `active`, Stripe lists active prices only.
    active: bool,
    currency: Option<String>,
    product: Option<String>,
    price_type: Option<String>,
    lookup_keys: Option<Vec<String>>,
    interval: Option<String>,
    usage_type: Option<String>,
}

impl PriceListQuery {
    fn keeps(&self, price: &Map<String, Value>) -> bool {
        let recurring_is = |field: &str, wanted: &Option<String>| {
            wanted
                .as_ref()
                .is_none_or(|wanted| price["recurring"][field].as_str() == Some(wanted.as_str()))
        };
        price["active"].as_bool() == Some(self.active)
            && text_is(price, "currency", &self.currency)
            && text_is(price, "product", &self.product)
            && text_is(price, "type", &self.price_type)
            && recurring_is("interval", &self.interval)
            && recurring_is("usage_type", &self.usage_type)
            && self.lookup_keys.as_ref().is_none_or(|keys| {
                price["lookup_key"]
                    .as_str()
                    .is_some_and(|key| keys.iter().any(|wanted| wanted == key))
            })
    }
}

/// `GET /v1/prices`: `active` (default: active prices only), `currency`, `product`, `type`,
/// `lookup_keys[]` (up to 10), `recurring[interval]`, `recurring[usage_type]`, `created`,
/// `limit`, cursors.
fn parse_price_list(params: &Map<String, Value>) -> Result<PriceListQuery, StripeError> {
    let mut query = PriceListQuery {
        page: PageQuery {
            limit: 10,
            ..PageQuery::default()
        },
        active: true,
        ..PriceListQuery::default()
    };
    for (name, value) in params {
        if page_param(&mut query.page, name, value)? {
            continue;
        }
        match name.as_str() {
            "active" => query.active = parse_boolean(value, name)?,
            "currency" => {
                let currency = required_text(value, name, 5000)?;
                if !is_supported_currency(&currency) {
                    return Err(
                        ParamError::new(name.clone(), Problem::InvalidCurrency).to_stripe_error()
                    );
                }
                query.currency = Some(currency.to_ascii_lowercase());
            }
            "product" => query.product = Some(required_text(value, name, 5000)?),
            "type" => query.price_type = Some(parse_enum(value, name, &["one_time", "recurring"])?),
            "lookup_keys" => query.lookup_keys = Some(parse_strings(value, name, LOOKUP_KEYS_MAX)?),
            "recurring" => {
                let Value::Object(recurring) = value else {
                    return Err(ParamError::new(
                        name.clone(),
                        Problem::WrongShape { expected: "object" },
                    )
                    .to_stripe_error());
                };
                for (field, wanted) in recurring {
                    let field_name = format!("recurring[{field}]");
                    match field.as_str() {
                        "interval" => {
                            query.interval =
                                Some(parse_enum(wanted, &field_name, RECURRING_INTERVALS)?)
                        }
                        "usage_type" => {
                            query.usage_type = Some(parse_enum(wanted, &field_name, USAGE_TYPES)?)
                        }
                        _ => {
                            return Err(
                                ParamError::new(field_name, Problem::Unknown).to_stripe_error()
                            )
                        }
                    }
                }
            }
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error()),
        }
    }
    if query.page.starting_after.is_some() && query.page.ending_before.is_some() {
        return Err(both_cursors());
    }
    Ok(query)
}

/// `GET /v1/events`: `created`, `type` (with `*` wildcards) or `types[]` (up to 20 exact names,
/// not both), cursors, `limit`; `delivery_success` must be a boolean and is otherwise ignored
/// (the emulator delivers no webhooks, so every event counts as delivered).
fn parse_event_query(params: &Map<String, Value>) -> Result<EventQuery, StripeError> {
    let mut query = EventQuery {
        limit: 10,
        ..EventQuery::default()
    };
    let mut pattern = None;
    let mut types = None;
    for (name, value) in params {
        match name.as_str() {
            "created" => query.created = parse_created(value)?,
            "limit" => query.limit = parse_limit(value)?,
            "starting_after" => query.starting_after = Some(required_text(value, name, 5000)?),
            "ending_before" => query.ending_before = Some(required_text(value, name, 5000)?),
            "type" => pattern = Some(required_text(value, name, 5000)?),
            "types" => types = Some(parse_event_types(value)?),
            "delivery_success" => {
                let text = leaf_text(value).unwrap_or_default();
                if text != "true" && text != "false" {
                    return Err(ParamError::new(
                        name.clone(),
                        Problem::WrongShape {
                            expected: "boolean",
                        },
                    )
                    .to_stripe_error());
                }
            }
            "expand" => {}
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error()),
        }
    }
    query.types = match (pattern, types) {
        (Some(_), Some(_)) => {
            return Err(StripeError::invalid_request(
                "You may only specify one of these parameters: type, types.",
            )
            .with_code("parameters_exclusive")
            .with_param("types"))
        }
        (Some(pattern), None) => TypeFilter::Pattern(pattern),
        (None, Some(types)) => TypeFilter::OneOf(types),
        (None, None) => TypeFilter::Any,
    };
    if query.starting_after.is_some() && query.ending_before.is_some() {
        return Err(both_cursors());
    }
    Ok(query)
}

/// `types[]=a&types[]=b` or `types[0]=a&types[1]=b`: an array of names.
fn parse_event_types(value: &Value) -> Result<Vec<String>, StripeError> {
    let Value::Array(items) = value else {
        return Err(
            ParamError::new("types", Problem::WrongShape { expected: "array" }).to_stripe_error(),
        );
    };
    if items.len() > EVENT_TYPES_MAX {
        return Err(ParamError::new(
            "types",
            Problem::TooManyItems {
                max: EVENT_TYPES_MAX,
                actual: items.len(),
            },
        )
        .to_stripe_error());
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| required_text(item, &format!("types[{index}]"), 5000))
        .collect()
}

struct SearchParams {
    query: SearchQuery,
    limit: usize,
    page: Option<(i64, u64)>,
}

fn parse_search_params(
    params: &Map<String, Value>,
    searchable: &Searchable,
) -> Result<SearchParams, StripeError> {
    let mut query = None;
    let mut limit = 10;
    let mut page = None;
    for (name, value) in params {
        match name.as_str() {
            "query" => {
                let text = required_text(value, name, 10_000)?;
                let parsed = SearchQuery::parse(&text, searchable).map_err(|error| {
                    StripeError::invalid_request(format!("Invalid search query: {error}."))
                        .with_param("query")
                })?;
                query = Some(parsed);
            }
            "limit" => limit = parse_limit(value)?,
            "page" => {
                let token = required_text(value, name, 5000)?;
                page = Some(decode_page_token(&token).ok_or_else(|| {
                    StripeError::invalid_request(
                        "Invalid page: use the next_page of a previous search.",
                    )
                    .with_param("page")
                })?);
            }
            "expand" => {}
            _ => return Err(ParamError::new(name.clone(), Problem::Unknown).to_stripe_error()),
        }
    }
    let query =
        query.ok_or_else(|| ParamError::new("query", Problem::Missing).to_stripe_error())?;
    Ok(SearchParams { query, limit, page })
}

fn required_text(value: &Value, name: &str, max_chars: usize) -> Result<String, StripeError> {
    let text = leaf_text(value).ok_or_else(|| {
        ParamError::new(name, Problem::WrongShape { expected: "string" }).to_stripe_error()
    })?;
    let actual = text.chars().count();
    if actual > max_chars {
        return Err(ParamError::new(
            name,
            Problem::TooLong {
                max: max_chars,
                actual,
            },
        )
        .to_stripe_error());
    }
    Ok(text.into_owned())
}

fn parse_limit(value: &Value) -> Result<usize, StripeError> {
    let text = leaf_text(value).unwrap_or_default();
    let limit: i64 = text
        .parse()
        .map_err(|_| ParamError::new("limit", Problem::NotInteger).to_stripe_error())?;
    if limit < 1 {
        return Err(
            StripeError::invalid_request("This value must be greater than or equal to 1.")
                .with_param("limit"),
        );
    }
    if limit > 100 {
        return Err(
            StripeError::invalid_request("This value must be less than or equal to 100.")
                .with_param("limit"),
        );
    }
    Ok(limit as usize)
}

/// `created=N` or `created[gt|gte|lt|lte]=N`, as an inclusive range.
fn parse_created(value: &Value) -> Result<CreatedRange, StripeError> {
    let integer = |value: &Value, name: &str| -> Result<i64, StripeError> {
        leaf_text(value)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ParamError::new(name, Problem::NotInteger).to_stripe_error())
    };
    let mut range = CreatedRange::default();
    match value {
        Value::Object(bounds) => {
            for (operator, bound) in bounds {
                let name = format!("created[{operator}]");
                let at = integer(bound, &name)?;
                match operator.as_str() {
                    "gt" => range.min = range.min.max(at.saturating_add(1)),
                    "gte" => range.min = range.min.max(at),
                    "lt" => range.max = range.max.min(at.saturating_sub(1)),
                    "lte" => range.max = range.max.min(at),
                    _ => return Err(ParamError::new(name, Problem::Unknown).to_stripe_error()),
                }
            }
        }
        _ => {
            let at = integer(value, "created")?;
            range = CreatedRange { min: at, max: at };
        }
    }
    Ok(range)
}

/// Step 7: run the endpoint. Problems found here (unknown id, merged metadata over the limit)
/// are stored under the idempotency key, as on Stripe.
fn execute(
    state: &SharedState,
    endpoint: Endpoint,
    caller: &Caller,
    params: &Map<String, Value>,
    path_id: Option<&str>,
    source: &EventSource,
) -> Reply {
    let customer_id = path_id.unwrap_or_default();
    match endpoint {
        Endpoint::CreateCustomer => {
            let mut customer = new_customer(
                &new_object_id("cus"),
                unix_now(),
                caller.livemode,
                &new_invoice_prefix(),
            );
            if let Err(error) = apply_params(&mut customer, params) {
                return Reply::error(StatusCode::BAD_REQUEST, error.to_stripe_error());
            }
            match writes::create_customer(state, customer, false, source) {
                Ok(stored) => Reply::json(StatusCode::OK, &*stored),
                // 14 random letters and digits do not collide in practice; should they, this is
                // the honest answer.
                Err(DuplicateId) => Reply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    StripeError::of_kind(API_ERROR, "The emulator drew a customer id in use."),
                ),
            }
        }
        Endpoint::RetrieveCustomer => match state.store().get(customer_id) {
            Lookup::Live(customer) => Reply::json(StatusCode::OK, &*customer),
            Lookup::Deleted => Reply::json(StatusCode::OK, &deleted_customer(customer_id)),
            Lookup::Missing => no_such_customer(customer_id),
        },
        Endpoint::UpdateCustomer => {
            match writes::update_customer(state, customer_id, params, source) {
                Ok(updated) => Reply::json(StatusCode::OK, &*updated),
                Err(WriteError::NoSuchCustomer) => no_such_customer(customer_id),
                Err(WriteError::Rejected(error)) => {
                    Reply::error(StatusCode::BAD_REQUEST, error.to_stripe_error())
                }
            }
        }
        Endpoint::DeleteCustomer => match writes::delete_customer(state, customer_id, source) {
            Ok(_) => Reply::json(StatusCode::OK, &deleted_customer(customer_id)),
            Err(_) => no_such_customer(customer_id),
        },
        Endpoint::ListCustomers => {
            let query = match parse_list_query(params) {
                Ok(query) => query,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            match state.store().list(&query) {
                Ok((page, has_more)) => Reply::json(
                    StatusCode::OK,
                    &ListBody {
                        object: "list",
                        data: page.iter().map(|customer| &**customer).collect(),
                        has_more,
                        url: "/v1/customers",
                    },
                ),
                Err(UnknownCursor) => {
                    unknown_cursor("customer", &query.starting_after, &query.ending_before)
                }
            }
        }
        Endpoint::ListEvents => {
            let query = match parse_event_query(params) {
                Ok(query) => query,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let listed = state.events().list(&query, Instant::now());
            match listed {
                Ok((page, has_more)) => Reply::json(
                    StatusCode::OK,
                    &ListBody {
                        object: "list",
                        data: page.iter().map(|event| &**event).collect(),
                        has_more,
                        url: "/v1/events",
                    },
                ),
                Err(UnknownCursor) => {
                    unknown_cursor("event", &query.starting_after, &query.ending_before)
                }
            }
        }
        Endpoint::RetrieveEvent => {
            let event_id = path_id.unwrap_or_default();
            let found = state.events().get(event_id, Instant::now());
            match found {
                Some(event) => Reply::json(StatusCode::OK, &*event),
                None => Reply::error(
                    StatusCode::NOT_FOUND,
                    StripeError::invalid_request(format!("No such event: '{event_id}'"))
                        .with_code("resource_missing")
                        .with_param("id"),
                ),
            }
        }
        Endpoint::SearchCustomers => {
            let search = match parse_search_params(params, &CUSTOMER_SEARCH) {
                Ok(search) => search,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let delay = state.settings().search_delay;
            let snapshot = state
                .store()
                .search_snapshot(Instant::now(), delay, search.page);
            let mut hits = snapshot
                .into_iter()
                .filter(|(_, customer)| search.query.matches(customer));
            let page: Vec<_> = hits.by_ref().take(search.limit).collect();
            let has_more = hits.next().is_some();
            let next_page = match (has_more, page.last()) {
                (true, Some((key, _))) => Some(encode_page_token(*key)),
                _ => None,
            };
            Reply::json(
                StatusCode::OK,
                &SearchBody {
                    object: "search_result",
                    data: page.iter().map(|(_, customer)| &**customer).collect(),
                    has_more,
                    next_page,
                    url: "/v1/customers/search",
                },
            )
        }
        Endpoint::SearchProducts | Endpoint::SearchPrices => {
            let (searchable, url) = if endpoint == Endpoint::SearchProducts {
                (&PRODUCT_SEARCH, "/v1/products/search")
            } else {
                (&PRICE_SEARCH, "/v1/prices/search")
            };
            let search = match parse_search_params(params, searchable) {
                Ok(search) => search,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let delay = state.settings().search_delay;
            let snapshot = {
                let mut catalog = state.catalog();
                if endpoint == Endpoint::SearchProducts {
                    catalog
                        .products
                        .search_snapshot(Instant::now(), delay, search.page)
                } else {
                    catalog.search_prices(Instant::now(), delay, search.page)
                }
            };
            let mut hits = snapshot
                .into_iter()
                .filter(|(_, record)| search.query.matches(record));
            let page: Vec<_> = hits.by_ref().take(search.limit).collect();
            let has_more = hits.next().is_some();
            let next_page = match (has_more, page.last()) {
                (true, Some((key, _))) => Some(encode_page_token(*key)),
                _ => None,
            };
            let with_tiers = expands(params, "data.tiers");
            let data: Vec<Map<String, Value>> = page
                .iter()
                .map(|(_, record)| {
                    if endpoint == Endpoint::SearchPrices {
                        price_for_response(record, with_tiers)
                    } else {
                        (**record).clone()
                    }
                })
                .collect();
            Reply::json(
                StatusCode::OK,
                &SearchBody {
                    object: "search_result",
                    data: data.iter().collect(),
                    has_more,
                    next_page,
                    url,
                },
            )
        }
        Endpoint::CreateProduct => {
            let origin = Origin {
                id: params
                    .get("id")
                    .and_then(leaf_text)
                    .map(|id| id.into_owned())
                    .unwrap_or_else(|| new_object_id("prod")),
                created: unix_now(),
                livemode: caller.livemode,
                seeded: false,
            };
            match catalog_writes::create_product(state, &origin, params, source) {
                Ok(product) => Reply::json(StatusCode::OK, &*product),
                Err(failure) => failure_reply(failure, || no_such_product(&origin.id)),
            }
        }
        Endpoint::RetrieveProduct => {
            let id = path_id.unwrap_or_default();
            let found = state.catalog().products.get(id);
            match found {
                Some(product) => Reply::json(StatusCode::OK, &*product),
                None => no_such_product(id),
            }
        }
        Endpoint::UpdateProduct => {
            let id = path_id.unwrap_or_default();
            match catalog_writes::update_product(state, id, params, source) {
                Ok(product) => Reply::json(StatusCode::OK, &*product),
                Err(failure) => failure_reply(failure, || no_such_product(id)),
            }
        }
        Endpoint::DeleteProduct => {
            let id = path_id.unwrap_or_default();
            match catalog_writes::delete_product(state, id, source) {
                Ok(_) => Reply::json(StatusCode::OK, &deleted_stub("product", id)),
                Err(failure) => failure_reply(failure, || no_such_product(id)),
            }
        }
        Endpoint::ListProducts => {
            let query = match parse_product_list(params) {
                Ok(query) => query,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let listed = state
                .catalog()
                .products
                .list(&query.page, |product| query.keeps(product));
            list_reply(listed, &query.page, "product", "/v1/products", |record| {
                Cow::Borrowed(&**record)
            })
        }
        Endpoint::CreatePrice => {
            let origin = Origin {
                id: new_object_id("price"),
                created: unix_now(),
                livemode: caller.livemode,
                seeded: false,
            };
            match catalog_writes::create_price(state, &origin, params, source) {
                Ok(price) => price_reply(&price, expands(params, "tiers")),
                Err(failure) => failure_reply(failure, || no_such_price(&origin.id)),
            }
        }
        Endpoint::RetrievePrice => {
            let id = path_id.unwrap_or_default();
            let found = state.catalog().prices().get(id);
            match found {
                Some(price) => price_reply(&price, expands(params, "tiers")),
                None => no_such_price(id),
            }
        }
        Endpoint::UpdatePrice => {
            let id = path_id.unwrap_or_default();
            match catalog_writes::update_price(state, id, params, source) {
                Ok(price) => price_reply(&price, expands(params, "tiers")),
                Err(failure) => failure_reply(failure, || no_such_price(id)),
            }
        }
        Endpoint::ListPrices => {
            let query = match parse_price_list(params) {
                Ok(query) => query,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let catalog = state.catalog();
            if let Some(product) = &query.product {
                if !catalog.products.contains(product) {
                    return Reply::error(
                        StatusCode::BAD_REQUEST,
                        no_such("product", product, "product"),
                    );
                }
            }
            let listed = catalog
                .prices()
                .list(&query.page, |price| query.keeps(price));
            drop(catalog);
            let with_tiers = expands(params, "data.tiers");
            list_reply(listed, &query.page, "price", "/v1/prices", |price| {
                Cow::Owned(price_for_response(price, with_tiers))
            })
        }
        Endpoint::CreateSubscription => {
            let origin = Origin {
                id: new_object_id("sub"),
                created: unix_now(),
                livemode: caller.livemode,
                seeded: false,
            };
            match subscriptions::create_subscription(state, &origin, params, source) {
                Ok(subscription) => Reply::json(StatusCode::OK, &*subscription),
                Err(failure) => failure_reply(failure, || no_such_subscription(&origin.id)),
            }
        }
        Endpoint::RetrieveSubscription => {
            let id = path_id.unwrap_or_default();
            let catalog = state.catalog();
            match catalog.subscriptions.get(id) {
                Some(subscription) => Reply::json(
                    StatusCode::OK,
                    &subscriptions::for_response(&catalog, &subscription),
                ),
                None => no_such_subscription(id),
            }
        }
        Endpoint::UpdateSubscription => {
            let id = path_id.unwrap_or_default();
            match subscriptions::update_subscription(state, id, params, source) {
                Ok(subscription) => {
                    let catalog = state.catalog();
                    Reply::json(
                        StatusCode::OK,
                        &subscriptions::for_response(&catalog, &subscription),
                    )
                }
                Err(failure) => failure_reply(failure, || no_such_subscription(id)),
            }
        }
        Endpoint::CancelSubscription => {
            let id = path_id.unwrap_or_default();
            match subscriptions::cancel_subscription(state, id, source) {
                Ok(subscription) => {
                    let catalog = state.catalog();
                    Reply::json(
                        StatusCode::OK,
                        &subscriptions::for_response(&catalog, &subscription),
                    )
                }
                Err(failure) => failure_reply(failure, || no_such_subscription(id)),
            }
        }
        Endpoint::ListSubscriptions => {
            let query = match parse_subscription_list(params) {
                Ok(query) => query,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let catalog = state.catalog();
            let listed = catalog
                .subscriptions
                .list(&query.page, |subscription| query.keeps(subscription));
            list_reply(
                listed,
                &query.page,
                "subscription",
                "/v1/subscriptions",
                |subscription| Cow::Owned(subscriptions::for_response(&catalog, subscription)),
            )
        }
        Endpoint::CreateInvoice => {
            let origin = new_origin("in", caller);
            match invoices::create_invoice(state, &origin, params, source) {
                Ok(invoice) => Reply::json(StatusCode::OK, &*invoice),
                Err(failure) => failure_reply(failure, || no_such_invoice(&origin.id)),
            }
        }
        Endpoint::RetrieveInvoice => {
            let id = path_id.unwrap_or_default();
            let found = state.catalog().invoices.get(id);
            match found {
                Some(invoice) => Reply::json(StatusCode::OK, &*invoice),
                None => no_such_invoice(id),
            }
        }
        Endpoint::UpdateInvoice
        | Endpoint::DeleteInvoice
        | Endpoint::FinalizeInvoice
        | Endpoint::SendInvoice
        | Endpoint::VoidInvoice
        | Endpoint::MarkInvoiceUncollectible
        | Endpoint::PayInvoice => {
            let id = path_id.unwrap_or_default();
            let written = match endpoint {
                Endpoint::UpdateInvoice => invoices::update_invoice(state, id, params, source),
                Endpoint::DeleteInvoice => invoices::delete_invoice(state, id, source),
                Endpoint::FinalizeInvoice => invoices::finalize_invoice(state, id, params, source),
                Endpoint::SendInvoice => invoices::send_invoice(state, id, source),
                Endpoint::VoidInvoice => invoices::void_invoice(state, id, source),
                Endpoint::MarkInvoiceUncollectible => {
                    invoices::mark_uncollectible(state, id, source)
                }
                _ => invoices::pay_invoice(state, id, params, source),
            };
            match written {
                Ok(_) if endpoint == Endpoint::DeleteInvoice => {
                    Reply::json(StatusCode::OK, &deleted_stub("invoice", id))
                }
                Ok(invoice) => Reply::json(StatusCode::OK, &*invoice),
                Err(failure) => failure_reply(failure, || no_such_invoice(id)),
            }
        }
        Endpoint::ListInvoices => {
            let query = match parse_invoice_list(params) {
                Ok(query) => query,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let listed = state
                .catalog()
                .invoices
                .list(&query.page, |invoice| query.keeps(invoice));
            list_reply(listed, &query.page, "invoice", "/v1/invoices", |record| {
                Cow::Borrowed(&**record)
            })
        }
        Endpoint::ListInvoiceLines => {
            let id = path_id.unwrap_or_default();
            let page = match parse_lines_page(params) {
                Ok(page) => page,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let lines = {
                let catalog = state.catalog();
                if !catalog.invoices.contains(id) {
                    return no_such_invoice(id);
                }
                invoices::lines_of(&catalog, id)
            };
            match invoices::page_of_lines(&lines, &page) {
                Ok((data, has_more)) => Reply::json(
                    StatusCode::OK,
                    &json!({
                        "object": "list",
                        "data": data,
                        "has_more": has_more,
                        "total_count": lines.len(),
                        "url": format!("/v1/invoices/{id}/lines"),
                    }),
                ),
                Err(UnknownCursor) => {
                    unknown_cursor("line item", &page.starting_after, &page.ending_before)
                }
            }
        }
        Endpoint::SearchInvoices => {
            let search = match parse_search_params(params, &INVOICE_SEARCH) {
                Ok(search) => search,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let delay = state.settings().search_delay;
            let snapshot =
                state
                    .catalog()
                    .invoices
                    .search_snapshot(Instant::now(), delay, search.page);
            let mut hits = snapshot
                .into_iter()
                .filter(|(_, record)| search.query.matches(record));
            let page: Vec<_> = hits.by_ref().take(search.limit).collect();
            let has_more = hits.next().is_some();
            let next_page = match (has_more, page.last()) {
                (true, Some((key, _))) => Some(encode_page_token(*key)),
                _ => None,
            };
            Reply::json(
                StatusCode::OK,
                &SearchBody {
                    object: "search_result",
                    data: page.iter().map(|(_, invoice)| &**invoice).collect(),
                    has_more,
                    next_page,
                    url: "/v1/invoices/search",
                },
            )
        }
        Endpoint::CreateInvoiceItem => {
            let origin = new_origin("ii", caller);
            match invoices::create_invoice_item(state, &origin, params, source) {
                Ok(item) => Reply::json(StatusCode::OK, &*item),
                Err(failure) => failure_reply(failure, || no_such_invoice_item(&origin.id)),
            }
        }
        Endpoint::RetrieveInvoiceItem => {
            let id = path_id.unwrap_or_default();
            let found = state.catalog().invoice_items.get(id);
            match found {
                Some(item) => Reply::json(StatusCode::OK, &*item),
                None => no_such_invoice_item(id),
            }
        }
        Endpoint::UpdateInvoiceItem => {
            let id = path_id.unwrap_or_default();
            match invoices::update_invoice_item(state, id, params, source) {
                Ok(item) => Reply::json(StatusCode::OK, &*item),
                Err(failure) => failure_reply(failure, || no_such_invoice_item(id)),
            }
        }
        Endpoint::DeleteInvoiceItem => {
            let id = path_id.unwrap_or_default();
            match invoices::delete_invoice_item(state, id, source) {
                Ok(_) => Reply::json(StatusCode::OK, &deleted_stub("invoiceitem", id)),
                Err(failure) => failure_reply(failure, || no_such_invoice_item(id)),
            }
        }
        Endpoint::ListInvoiceItems => {
            let query = match parse_invoice_item_list(params) {
                Ok(query) => query,
                Err(error) => return Reply::error(StatusCode::BAD_REQUEST, error),
            };
            let listed = state
                .catalog()
                .invoice_items
                .list(&query.page, |item| query.keeps(item));
            list_reply(
                listed,
                &query.page,
                "invoiceitem",
                "/v1/invoiceitems",
                |record| Cow::Borrowed(&**record),
            )
        }
        Endpoint::RetrieveBalance => {
            let funds = json!([{"amount": 0, "currency": "usd", "source_types": {"card": 0}}]);
            Reply::json(
                StatusCode::OK,
                &json!({
                    "object": "balance",
                    "available": funds,
                    "livemode": caller.livemode,
                    "pending": funds,
                }),
            )
        }
        Endpoint::RetrieveAccount => Reply::json(
            StatusCode::OK,
            &json!({
                "id": crate::auth::ACCOUNT_ID,
                "object": "account",
                "country": "US",
                "default_currency": "usd",
                "livemode": caller.livemode,
            }),
        ),
    }
}

/// `GET /v1/customers`, `/v1/events`, `/v1/products`, `/v1/prices`.
#[derive(Serialize)]
struct ListBody<'a, T: Serialize> {
    object: &'static str,
    data: Vec<&'a T>,
    has_more: bool,
    url: &'static str,
}

/// `GET /v1/customers/search`, `/v1/products/search`, `/v1/prices/search`.
#[derive(Serialize)]
struct SearchBody<'a> {
    object: &'static str,
    data: Vec<&'a Map<String, Value>>,
    has_more: bool,
    next_page: Option<String>,
    url: &'static str,
}

fn deleted_customer(id: &str) -> Value {
    json!({"id": id, "object": "customer", "deleted": true})
}

/// A list cursor that names nothing listable (for events: unknown or past retention).
/// The answer to a list call: a page of records, each shaped for the response by `shape`
/// (as stored, or with what the response adds), or the 404 of a cursor that names no record.
fn list_reply(
    listed: Result<(Vec<SharedObject>, bool), UnknownCursor>,
    page: &PageQuery,
    object: &str,
    url: &'static str,
    shape: impl for<'r> Fn(&'r SharedObject) -> Cow<'r, Map<String, Value>>,
) -> Reply {
    match listed {
        Ok((records, has_more)) => {
            let data: Vec<Cow<'_, Map<String, Value>>> = records.iter().map(shape).collect();
            Reply::json(
                StatusCode::OK,
                &ListBody {
                    object: "list",
                    data: data.iter().collect(),
                    has_more,
                    url,
                },
            )
        }
        Err(UnknownCursor) => unknown_cursor(object, &page.starting_after, &page.ending_before),
    }
}

fn unknown_cursor(
    object: &str,
    starting_after: &Option<String>,
    ending_before: &Option<String>,
) -> Reply {
    let (param, id) = match (starting_after, ending_before) {
        (Some(id), _) => ("starting_after", id.as_str()),
        (None, Some(id)) => ("ending_before", id.as_str()),
        (None, None) => ("starting_after", ""),
    };
    Reply::error(
        StatusCode::NOT_FOUND,
        StripeError::invalid_request(format!("No such {object}: '{id}'"))
            .with_code("resource_missing")
            .with_param(param),
    )
}

fn no_such_product(id: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, no_such("product", id, "id"))
}

/// Stripe names the path placeholder of prices `price`.
fn no_such_price(id: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, no_such("price", id, "price"))
}

fn no_such_subscription(id: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, no_such("subscription", id, "id"))
}

fn no_such_invoice(id: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, no_such("invoice", id, "id"))
}

fn no_such_invoice_item(id: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, no_such("invoiceitem", id, "id"))
}

/// A new object's id (`in_…`, `ii_…`), `created` now, and the caller's mode.
fn new_origin(prefix: &str, caller: &Caller) -> Origin {
    Origin {
        id: new_object_id(prefix),
        created: unix_now(),
        livemode: caller.livemode,
        seeded: false,
    }
}

fn failure_reply(failure: Failure, missing: impl FnOnce() -> Reply) -> Reply {
    match failure {
        Failure::Missing => missing(),
        Failure::Refused(error) => Reply::error(StatusCode::BAD_REQUEST, error),
    }
}

fn price_reply(price: &Map<String, Value>, with_tiers: bool) -> Reply {
    if with_tiers || !price.contains_key("tiers") {
        Reply::json(StatusCode::OK, price)
    } else {
        Reply::json(StatusCode::OK, &price_for_response(price, false))
    }
}

/// A path segment with its `%XX` escapes decoded (not `+`, which paths keep).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn no_such_customer(id: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        StripeError::invalid_request(format!("No such customer: '{id}'"))
            .with_code("resource_missing")
            .with_param("id"),
    )
}

fn unrecognized_url(method: &Method, uri: &Uri) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        StripeError::invalid_request(format!(
            "Unrecognized request URL ({method}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            uri.path()
        )),
    )
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Search pages continue after the last hit's position: `<created>_<sequence>` in base64.
fn encode_page_token((created, sequence): (i64, u64)) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created}_{sequence}"))
}

fn decode_page_token(token: &str) -> Option<(i64, u64)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (created, sequence) = text.split_once('_')?;
    Some((created.parse().ok()?, sequence.parse().ok()?))
}
