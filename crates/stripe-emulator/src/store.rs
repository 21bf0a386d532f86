//! The in-memory customer store: immediately consistent reads and lists, plus a write history so
//! that search can see every customer as it was `search_delay` ago.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// A Stripe object as stored; shared so that history entries, events and responses are cheap
/// clones.
pub(crate) type SharedObject = Arc<Map<String, Value>>;

/// A customer object as stored.
pub(crate) type Customer = SharedObject;

/// Newest-first order: `created` second, then creation sequence within the second.
pub(crate) type OrderKey = (i64, u64);

pub(crate) struct CustomerStore {
    records: HashMap<String, CustomerRecord>,
    /// Live customers by order key; the list endpoint walks it backwards.
    live_order: BTreeMap<OrderKey, String>,
    /// Live and deleted customers whose deletion search may still not have seen.
    searchable_order: BTreeMap<OrderKey, String>,
    /// Exact email → live customers with it, for `GET /v1/customers?email=`.
    email_index: HashMap<String, BTreeSet<OrderKey>>,
    next_sequence: u64,
    /// The current search delay, so that writes can forget history search no longer needs.
    pub(crate) search_delay: Duration,
}

struct CustomerRecord {
    order_key: OrderKey,
    /// `None` once deleted.
    current: Option<Customer>,
    /// The customer after each write, oldest first (`None` = deleted). A `None` time means
    /// "always visible" (seeded customers). Pruned to the newest entry search can already see.
    history: VecDeque<(Option<Instant>, Option<Customer>)>,
}

/// What one customer lookup found.
pub(crate) enum Lookup {
    Live(Customer),
    Deleted,
    Missing,
}

/// Filters and cursor of `GET /v1/customers`, already validated.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListQuery {
    pub email: Option<String>,
    pub created: CreatedRange,
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
}

/// Bounds on `created` (inclusive, after turning `gt`/`lt` into `gte`/`lte`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreatedRange {
    pub min: i64,
    pub max: i64,
}

impl Default for CreatedRange {
    fn default() -> CreatedRange {
        CreatedRange {
            min: i64::MIN,
            max: i64::MAX,
        }
    }
}

/// A list cursor that names no customer.
#[derive(Debug)]
pub(crate) struct UnknownCursor;

impl CustomerStore {
    pub(crate) fn new(search_delay: Duration) -> CustomerStore {
        CustomerStore {
            records: HashMap::new(),
            live_order: BTreeMap::new(),
            searchable_order: BTreeMap::new(),
            email_index: HashMap::new(),
            next_sequence: 0,
            search_delay,
        }
    }

    /// Stores a new customer and returns it as stored. `written_at` is `None` for seeded
    /// customers (visible to search at once).
    pub(crate) fn insert(
        &mut self,
        customer: Map<String, Value>,
        written_at: Option<Instant>,
    ) -> Customer {
        let id = customer["id"].as_str().unwrap_or_default().to_owned();
        let created = customer["created"].as_i64().unwrap_or_default();
        self.next_sequence += 1;
        let order_key = (created, self.next_sequence);
        let customer = Arc::new(customer);
        if let Some(email) = customer["email"].as_str() {
            self.index_email(email, order_key);
        }
        self.live_order.insert(order_key, id.clone());
        self.searchable_order.insert(order_key, id.clone());
        let record = CustomerRecord {
            order_key,
            current: Some(customer.clone()),
            history: VecDeque::from([(written_at, Some(customer.clone()))]),
        };
        self.records.insert(id, record);
        customer
    }

    pub(crate) fn get(&self, id: &str) -> Lookup {
        match self.records.get(id) {
            Some(CustomerRecord {
                current: Some(customer),
                ..
            }) => Lookup::Live(customer.clone()),
            Some(_) => Lookup::Deleted,
            None => Lookup::Missing,
        }
    }

    /// Replaces a live customer with its updated version; returns it as stored.
    pub(crate) fn replace(&mut self, updated: Map<String, Value>, written_at: Instant) -> Customer {
        let updated = Arc::new(updated);
        let id = updated["id"].as_str().unwrap_or_default();
        let Some(record) = self.records.get_mut(id) else {
            return updated;
        };
        let order_key = record.order_key;
        let old_email = record
            .current
            .as_ref()
            .and_then(|customer| customer["email"].as_str().map(str::to_owned));
        record.current = Some(updated.clone());
        record
            .history
            .push_back((Some(written_at), Some(updated.clone())));
        forget_unseeable_history(record, written_at.checked_sub(self.search_delay));
        let new_email = updated["email"].as_str();
        if old_email.as_deref() != new_email {
            if let Some(old_email) = old_email {
                self.unindex_email(&old_email, order_key);
            }
            if let Some(new_email) = new_email {
                self.index_email(new_email, order_key);
            }
        }
        updated
    }

    /// Marks a live customer deleted; returns it as it was, or `None` if it was not live.
    pub(crate) fn delete(&mut self, id: &str, written_at: Instant) -> Option<Customer> {
        let record = self.records.get_mut(id)?;
        let customer = record.current.take()?;
        record.history.push_back((Some(written_at), None));
        forget_unseeable_history(record, written_at.checked_sub(self.search_delay));
        let order_key = record.order_key;
        self.live_order.remove(&order_key);
        if let Some(email) = customer["email"].as_str() {
            self.unindex_email(email, order_key);
        }
        Some(customer)
    }

    /// Live customers, newest first.
    pub(crate) fn all_live(&self) -> Vec<Customer> {
        self.live_order
            .values()
            .rev()
            .filter_map(|id| self.records.get(id)?.current.clone())
            .collect()
    }

    /// One page of `GET /v1/customers`, newest first, and whether more follow.
    pub(crate) fn list(&self, query: &ListQuery) -> Result<(Vec<Customer>, bool), UnknownCursor> {
        let mut lower = Bound::Included((query.created.min, 0));
        let mut upper = Bound::Included((query.created.max, u64::MAX));
        if let Some(cursor) = &query.starting_after {
            let key = self.records.get(cursor).ok_or(UnknownCursor)?.order_key;
            upper = tighter_upper(upper, Bound::Excluded(key));
        }
        if let Some(cursor) = &query.ending_before {
            let key = self.records.get(cursor).ok_or(UnknownCursor)?.order_key;
            lower = tighter_lower(lower, Bound::Excluded(key));
        }
        if !range_is_valid(&lower, &upper) {
            return Ok((Vec::new(), false));
        }
        let wanted = query.limit + 1;
        // `ending_before` pages towards newer customers: walk forwards from the cursor.
        let walk_forwards = query.ending_before.is_some() && query.starting_after.is_none();
        let keys: Vec<OrderKey> = match &query.email {
            Some(email) => {
                let Some(keys) = self.email_index.get(email) else {
                    return Ok((Vec::new(), false));
                };
                let range = keys.range((lower, upper)).copied();
                if walk_forwards {
                    range.take(wanted).collect()
                } else {
                    range.rev().take(wanted).collect()
                }
            }
            None => {
                let range = self.live_order.range((lower, upper)).map(|(key, _)| *key);
                if walk_forwards {
                    range.take(wanted).collect()
                } else {
                    range.rev().take(wanted).collect()
                }
            }
        };
        let has_more = keys.len() > query.limit;
        let mut page: Vec<Customer> = keys
            .into_iter()
            .take(query.limit)
            .filter_map(|key| {
                let id = self.live_order.get(&key)?;
                self.records.get(id)?.current.clone()
            })
            .collect();
        if walk_forwards {
            page.reverse();
        }
        Ok((page, has_more))
    }

    /// Every customer as search sees it `delay` after the fact, newest first, starting after
    /// `after` (a search page cursor). Also forgets history search can no longer see.
    pub(crate) fn search_snapshot(
        &mut self,
        now: Instant,
        delay: Duration,
        after: Option<OrderKey>,
    ) -> Vec<(OrderKey, Customer)> {
        let cutoff = now.checked_sub(delay);
        let mut snapshot = Vec::new();
        let mut forgotten = Vec::new();
        let upper = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        for (key, id) in self.searchable_order.range((Bound::Unbounded, upper)).rev() {
            let Some(record) = self.records.get_mut(id) else {
                continue;
            };
            forget_unseeable_history(record, cutoff);
            let Some((written_at, state)) = record.history.front() else {
                continue;
            };
            if !is_visible(written_at, cutoff) {
                continue;
            }
            match state {
                Some(customer) => snapshot.push((*key, customer.clone())),
                None => forgotten.push(*key),
            }
        }
        for key in forgotten {
            self.searchable_order.remove(&key);
        }
        snapshot
    }

    fn index_email(&mut self, email: &str, key: OrderKey) {
        self.email_index
            .entry(email.to_owned())
            .or_default()
            .insert(key);
    }

    fn unindex_email(&mut self, email: &str, key: OrderKey) {
        if let Some(keys) = self.email_index.get_mut(email) {
            keys.remove(&key);
            if keys.is_empty() {
                self.email_index.remove(email);
            }
        }
    }
}

/// Whether search, looking at the store as it was at `cutoff`, sees a write made at `written_at`.
fn is_visible(written_at: &Option<Instant>, cutoff: Option<Instant>) -> bool {
    match (written_at, cutoff) {
        (None, _) => true,
        (Some(written_at), Some(cutoff)) => *written_at <= cutoff,
        (Some(_), None) => false,
    }
}

/// Drops history entries older than the newest one search can see at `cutoff`.
fn forget_unseeable_history(record: &mut CustomerRecord, cutoff: Option<Instant>) {
    while record.history.len() > 1 && is_visible(&record.history[1].0, cutoff) {
        record.history.pop_front();
    }
}

pub(crate) fn tighter_upper(
    current: Bound<OrderKey>,
    candidate: Bound<OrderKey>,
) -> Bound<OrderKey> {
    match (&current, &candidate) {
        (Bound::Included(a), Bound::Excluded(b)) if b <= a => candidate,
        (Bound::Included(_), Bound::Excluded(_)) => current,
        _ => candidate,
    }
}

pub(crate) fn tighter_lower(
    current: Bound<OrderKey>,
    candidate: Bound<OrderKey>,
) -> Bound<OrderKey> {
    match (&current, &candidate) {
        (Bound::Included(a), Bound::Excluded(b)) if b >= a => candidate,
        (Bound::Included(_), Bound::Excluded(_)) => current,
        _ => candidate,
    }
}

/// `BTreeMap::range` panics on an inverted range; such a range is simply empty.
pub(crate) fn range_is_valid(lower: &Bound<OrderKey>, upper: &Bound<OrderKey>) -> bool {
    match (lower, upper) {
        (Bound::Included(low), Bound::Included(high)) => low <= high,
        (Bound::Included(low), Bound::Excluded(high))
        | (Bound::Excluded(low), Bound::Included(high)) => low < high,
        (Bound::Excluded(low), Bound::Excluded(high)) => low < high,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer_object::new_customer;

    fn store_with(count: i64) -> CustomerStore {
        let mut store = CustomerStore::new(Duration::from_secs(2));
        for index in 0..count {
            let mut customer =
                new_customer(&format!("cus_{index}"), 1000 + index / 2, false, "AAA");
            customer.insert("email".into(), Value::String(format!("e{}", index % 2)));
            store.insert(customer, None);
        }
        store
    }

    fn ids(page: &[Customer]) -> Vec<&str> {
        page.iter()
            .map(|customer| customer["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn lists_newest_first_with_cursors_both_ways() {
        let store = store_with(5);
        let query = ListQuery {
            limit: 2,
            ..ListQuery::default()
        };
        let (page, more) = store.list(&query).unwrap();
        assert_eq!((ids(&page), more), (vec!["cus_4", "cus_3"], true));
        let after = ListQuery {
            starting_after: Some("cus_3".into()),
            ..query.clone()
        };
        let (page, more) = store.list(&after).unwrap();
        assert_eq!((ids(&page), more), (vec!["cus_2", "cus_1"], true));
        let before = ListQuery {
            ending_before: Some("cus_1".into()),
            ..query.clone()
        };
        let (page, more) = store.list(&before).unwrap();
        assert_eq!((ids(&page), more), (vec!["cus_3", "cus_2"], true));
        let by_email = ListQuery {
            email: Some("e0".into()),
            limit: 10,
            ..ListQuery::default()
        };
        let (page, more) = store.list(&by_email).unwrap();
        assert_eq!((ids(&page), more), (vec!["cus_4", "cus_2", "cus_0"], false));
        let created = ListQuery {
            created: CreatedRange {
                min: 1001,
                max: 1001,
            },
            limit: 10,
            ..ListQuery::default()
        };
        let (page, _) = store.list(&created).unwrap();
        assert_eq!(ids(&page), vec!["cus_3", "cus_2"]);
        let inverted = ListQuery {
            starting_after: Some("cus_3".into()),
            ending_before: Some("cus_1".into()),
            limit: 10,
            ..ListQuery::default()
        };
        let (page, _) = store.list(&inverted).unwrap();
        assert_eq!(ids(&page), vec!["cus_2"]);
    }

    #[test]
    fn search_sees_the_past() {
        let delay = Duration::from_secs(2);
        let mut store = CustomerStore::new(delay);
        let start = Instant::now();
        let mut customer = new_customer("cus_a", 1, false, "AAA");
        store.insert(customer.clone(), Some(start));
        customer.insert("name".into(), Value::String("new".into()));
        store.replace(customer, start + Duration::from_secs(1));
        assert!(store.search_snapshot(start, delay, None).is_empty());
        let seen = store.search_snapshot(start + Duration::from_secs(2), delay, None);
        assert_eq!(seen[0].1["name"], Value::Null);
        let seen = store.search_snapshot(start + Duration::from_secs(3), delay, None);
        assert_eq!(seen[0].1["name"], "new");
        store.delete("cus_a", start + Duration::from_secs(4));
        assert_eq!(
            store
                .search_snapshot(start + Duration::from_secs(5), delay, None)
                .len(),
            1
        );
        assert!(store
            .search_snapshot(start + Duration::from_secs(6), delay, None)
            .is_empty());
    }
}
