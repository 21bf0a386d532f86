//! Stripe's Events API: the log every executed customer, product, price, subscription, invoice
//! and invoice item write appends to, and
//! the queries `GET /v1/events` and `GET /v1/events/{id}` run over it (newest first, cursors,
//! `created` and type filters), with Stripe's 30-day retention.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::state::new_object_id;
use crate::store::{
    range_is_valid, tighter_lower, tighter_upper, CreatedRange, OrderKey, SharedObject,
    UnknownCursor,
};

pub(crate) const CUSTOMER_CREATED: &str = "customer.created";
pub(crate) const CUSTOMER_UPDATED: &str = "customer.updated";
pub(crate) const CUSTOMER_DELETED: &str = "customer.deleted";
pub(crate) const PRODUCT_CREATED: &str = "product.created";
pub(crate) const PRODUCT_UPDATED: &str = "product.updated";
pub(crate) const PRODUCT_DELETED: &str = "product.deleted";
pub(crate) const PRICE_CREATED: &str = "price.created";
pub(crate) const PRICE_UPDATED: &str = "price.updated";
pub(crate) const SUBSCRIPTION_CREATED: &str = "customer.subscription.created";
pub(crate) const SUBSCRIPTION_UPDATED: &str = "customer.subscription.updated";
pub(crate) const SUBSCRIPTION_DELETED: &str = "customer.subscription.deleted";
pub(crate) const INVOICE_CREATED: &str = "invoice.created";
pub(crate) const INVOICE_UPDATED: &str = "invoice.updated";
pub(crate) const INVOICE_DELETED: &str = "invoice.deleted";
pub(crate) const INVOICE_FINALIZED: &str = "invoice.finalized";
pub(crate) const INVOICE_SENT: &str = "invoice.sent";
pub(crate) const INVOICE_VOIDED: &str = "invoice.voided";
pub(crate) const INVOICE_PAID: &str = "invoice.paid";
pub(crate) const INVOICE_MARKED_UNCOLLECTIBLE: &str = "invoice.marked_uncollectible";
pub(crate) const INVOICEITEM_CREATED: &str = "invoiceitem.created";
pub(crate) const INVOICEITEM_UPDATED: &str = "invoiceitem.updated";
pub(crate) const INVOICEITEM_DELETED: &str = "invoiceitem.deleted";

/// How long Stripe keeps events: `GET /v1/events` goes back 30 days.
pub(crate) const STRIPE_EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What caused a write, as its event's `request`, `api_version` and `livemode` tell it.
#[derive(Debug, Clone)]
pub(crate) struct EventSource {
    /// The `/v1` request's `req_…` id; `None` for writes Stripe's API never saw (seeding, the
    /// handle, `/_emulator`), which Stripe shows as `request.id: null`.
    pub request_id: Option<String>,
    /// The idempotency key the request executed under, if any.
    pub idempotency_key: Option<String>,
    pub api_version: String,
    /// The caller's mode; `None` takes the customer's own `livemode`.
    pub livemode: Option<bool>,
}

/// One event as Stripe serializes it, keys in Stripe's order.
#[derive(Debug, Serialize)]
pub(crate) struct Event {
    id: String,
    object: &'static str,
    api_version: String,
    created: i64,
    data: EventData,
    livemode: bool,
    pending_webhooks: u32,
    request: EventRequest,
    #[serde(rename = "type")]
    event_type: &'static str,
    /// When it was recorded, on the monotonic clock: retention counts from here, so a test that
    /// shortens retention gets exact results whatever the wall clock does.
    #[serde(skip)]
    recorded_at: Instant,
}

#[derive(Debug, Serialize)]
struct EventData {
    /// Shared with the store (the object after the write, or as it was when deleted), so an
    /// event costs little more than its `previous_attributes`.
    #[serde(serialize_with = "serialize_shared")]
    object: SharedObject,
    /// Only on `*.updated` events, as on Stripe.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_attributes: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
struct EventRequest {
    id: Option<String>,
    idempotency_key: Option<String>,
}

fn serialize_shared<S: Serializer>(
    object: &SharedObject,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    object.as_ref().serialize(serializer)
}

/// Which event types `GET /v1/events` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum TypeFilter {
    #[default]
    Any,
    /// `type=`: one name, where `*` matches any run of characters (`customer.*`).
    Pattern(String),
    /// `types[]=`: exact names.
    OneOf(Vec<String>),
}

impl TypeFilter {
    fn matches(&self, event_type: &str) -> bool {
        match self {
            TypeFilter::Any => true,
            TypeFilter::Pattern(pattern) => wildcard_matches(pattern, event_type),
            TypeFilter::OneOf(types) => types.iter().any(|wanted| wanted == event_type),
        }
    }
}

/// Filters and cursor of `GET /v1/events`, already validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventQuery {
    pub created: CreatedRange,
    pub types: TypeFilter,
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
}

/// Events by order key: `created` second, then recording sequence, like customers. `created` is
/// kept from going backwards, so this order is also the order of recording, which lets pruning
/// stop at the first event still young enough.
pub(crate) struct EventLog {
    events: BTreeMap<OrderKey, Arc<Event>>,
    ids: HashMap<String, OrderKey>,
    next_sequence: u64,
    latest_created: i64,
    retention: Duration,
}

impl EventLog {
    pub(crate) fn new(retention: Duration) -> EventLog {
        EventLog {
            events: BTreeMap::new(),
            ids: HashMap::new(),
            next_sequence: 0,
            latest_created: i64::MIN,
            retention,
        }
    }

    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    /// Events older than the new retention are forgotten at once: lengthening it again later
    /// does not bring them back, as on Stripe where they are gone.
    pub(crate) fn set_retention(&mut self, retention: Duration, now: Instant) {
        self.retention = retention;
        self.prune(now);
    }

    /// Appends an event for a write that just executed; returns its id. `created` is the write's
    /// time in unix seconds.
    pub(crate) fn record(
        &mut self,
        event_type: &'static str,
        object: SharedObject,
        previous_attributes: Option<Map<String, Value>>,
        source: &EventSource,
        created: i64,
        now: Instant,
    ) -> String {
        self.prune(now);
        self.latest_created = self.latest_created.max(created);
        self.next_sequence += 1;
        let key = (self.latest_created, self.next_sequence);
        let livemode = source
            .livemode
            .unwrap_or_else(|| object["livemode"].as_bool().unwrap_or(false));
        let event = Event {
            id: new_object_id("evt"),
            object: "event",
            api_version: source.api_version.clone(),
            created: self.latest_created,
            data: EventData {
                object,
                previous_attributes,
            },
            livemode,
            pending_webhooks: 0,
            request: EventRequest {
                id: source.request_id.clone(),
                idempotency_key: source.idempotency_key.clone(),
            },
            event_type,
            recorded_at: now,
        };
        let id = event.id.clone();
        self.ids.insert(id.clone(), key);
        self.events.insert(key, Arc::new(event));
        id
    }

    /// One event, unless unknown or past retention.
    pub(crate) fn get(&mut self, id: &str, now: Instant) -> Option<Arc<Event>> {
        self.prune(now);
        let key = self.ids.get(id)?;
        self.events.get(key).cloned()
    }

    /// Every event within retention, newest first.
    pub(crate) fn all(&mut self, now: Instant) -> Vec<Arc<Event>> {
        self.prune(now);
        self.events.values().rev().cloned().collect()
    }

    /// One page of `GET /v1/events`, newest first, and whether more follow in the direction of
    /// travel. A cursor naming an event that is unknown or past retention is an error.
    pub(crate) fn list(
        &mut self,
        query: &EventQuery,
        now: Instant,
    ) -> Result<(Vec<Arc<Event>>, bool), UnknownCursor> {
        self.prune(now);
        let mut lower = Bound::Included((query.created.min, 0));
        let mut upper = Bound::Included((query.created.max, u64::MAX));
        if let Some(cursor) = &query.starting_after {
            let key = *self.ids.get(cursor).ok_or(UnknownCursor)?;
            upper = tighter_upper(upper, Bound::Excluded(key));
        }
        if let Some(cursor) = &query.ending_before {
            let key = *self.ids.get(cursor).ok_or(UnknownCursor)?;
            lower = tighter_lower(lower, Bound::Excluded(key));
        }
        if !range_is_valid(&lower, &upper) {
            return Ok((Vec::new(), false));
        }
        let wanted = query.limit + 1;
        // `ending_before` pages towards newer events: walk forwards from the cursor.
        let walk_forwards = query.ending_before.is_some() && query.starting_after.is_none();
        let matching = self
            .events
            .range((lower, upper))
            .map(|(_, event)| event)
            .filter(|event| query.types.matches(event.event_type));
        let mut page: Vec<Arc<Event>> = if walk_forwards {
            matching.take(wanted).cloned().collect()
        } else {
            matching.rev().take(wanted).cloned().collect()
        };
        let has_more = page.len() > query.limit;
        page.truncate(query.limit);
        if walk_forwards {
            page.reverse();
        }
        Ok((page, has_more))
    }

    /// Forgets events past retention. Called on every access, so memory stays bounded by what
    /// retention keeps and an event once hidden never reappears.
    fn prune(&mut self, now: Instant) {
        while let Some(entry) = self.events.first_entry() {
            if now.saturating_duration_since(entry.get().recorded_at) < self.retention {
                break;
            }
            let event = entry.remove();
            self.ids.remove(&event.id);
        }
    }
}

/// Stripe's `data.previous_attributes` for an update: each top-level field whose value changed,
/// with its old value. Where old and new values are both hashes (`metadata`, `address`,
/// `invoice_settings`, …) only the entries that changed are listed, an entry the update added
/// showing as `null`, as Stripe does; arrays and scalars appear whole.
pub(crate) fn previous_attributes(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Map<String, Value> {
    let mut previous = Map::new();
    for (key, new_value) in new {
        let old_value = old.get(key).unwrap_or(&Value::Null);
        if old_value != new_value {
            let shown = match (old_value, new_value) {
                (Value::Object(old_entries), Value::Object(new_entries)) => {
                    Value::Object(previous_attributes(old_entries, new_entries))
                }
                _ => old_value.clone(),
            };
            previous.insert(key.clone(), shown);
        }
    }
    for (key, old_value) in old {
        if !new.contains_key(key) {
            previous.insert(key.clone(), old_value.clone());
        }
    }
    previous
}

/// `*` matches any run of characters (dots included), everything else itself.
fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let pattern = pattern.as_bytes();
    let text = text.as_bytes();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was and how much text it has swallowed so far, to backtrack to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> EventSource {
        EventSource {
            request_id: None,
            idempotency_key: None,
            api_version: "2020-08-27".into(),
            livemode: None,
        }
    }

    fn customer(id: &str) -> SharedObject {
        match json!({"id": id, "object": "customer", "livemode": false}) {
            Value::Object(object) => Arc::new(object),
            _ => unreachable!(),
        }
    }

    fn types(page: &[Arc<Event>]) -> Vec<&str> {
        page.iter().map(|event| event.event_type).collect()
    }

    #[test]
    fn wildcards_match_any_run_of_characters() {
        assert!(wildcard_matches("customer.*", "customer.created"));
        assert!(wildcard_matches(
            "customer.*",
            "customer.subscription.updated"
        ));
        assert!(wildcard_matches("*", "customer.deleted"));
        assert!(wildcard_matches("*.deleted", "customer.deleted"));
        assert!(wildcard_matches("customer.created", "customer.created"));
        assert!(!wildcard_matches("customer.*", "charge.succeeded"));
        assert!(!wildcard_matches("customer.created", "customer.created2"));
        assert!(!wildcard_matches("customer", "customer.created"));
    }

    #[test]
    fn previous_attributes_list_changed_fields_and_changed_hash_entries() {
        let old = json!({"email": "a@x.co", "name": null, "metadata": {"plan": "free", "k": "v"},
                         "preferred_locales": ["fr"], "balance": 0});
        let new = json!({"email": "b@x.co", "name": null, "metadata": {"plan": "pro", "k": "v", "added": "1"},
                         "preferred_locales": ["fr", "en"], "balance": 0});
        let (Value::Object(old), Value::Object(new)) = (old, new) else {
            unreachable!()
        };
        assert_eq!(
            Value::Object(previous_attributes(&old, &new)),
            json!({"email": "a@x.co", "metadata": {"plan": "free", "added": null},
                   "preferred_locales": ["fr"]})
        );
    }

    #[test]
    fn retention_forgets_old_events_and_cursors_to_them() {
        let start = Instant::now();
        let mut log = EventLog::new(Duration::from_secs(10));
        let first = log.record(
            CUSTOMER_CREATED,
            customer("cus_a"),
            None,
            &source(),
            100,
            start,
        );
        log.record(
            CUSTOMER_DELETED,
            customer("cus_a"),
            None,
            &source(),
            99, // the wall clock stepped back: the order still follows recording
            start + Duration::from_secs(5),
        );
        let all = log.all(start + Duration::from_secs(6));
        assert_eq!(types(&all), vec![CUSTOMER_DELETED, CUSTOMER_CREATED]);
        assert_eq!(all[0].created, 100);
        let later = start + Duration::from_secs(11);
        assert!(log.get(&first, later).is_none());
        let query = EventQuery {
            limit: 10,
            starting_after: Some(first),
            ..EventQuery::default()
        };
        assert!(log.list(&query, later).is_err());
        log.set_retention(Duration::ZERO, later);
        assert!(log.all(later).is_empty());
    }
}
