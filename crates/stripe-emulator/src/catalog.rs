//! The in-memory product catalog: products and prices, immediately consistent for retrieve and
//! list, listed newest first with Stripe's cursors, and the account-wide index of price lookup
//! keys. Search sees them late, as Stripe's does (see [`Collection::search_snapshot`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::store::{
    range_is_valid, tighter_lower, tighter_upper, CreatedRange, OrderKey, SharedObject,
    UnknownCursor,
};

/// One page request of a list endpoint, already validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageQuery {
    pub created: CreatedRange,
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
}

/// Objects of one kind by id, in newest-first order (`created` second, then insertion order).
#[derive(Default)]
pub(crate) struct Collection {
    records: HashMap<String, (OrderKey, SharedObject)>,
    order: BTreeMap<OrderKey, String>,
    next_sequence: u64,
    /// For search: when each object was last written, and what it was before the first write
    /// search may not see yet (`None`: it did not exist).
    recent_writes: HashMap<String, (Instant, Option<SharedObject>)>,
}

impl Collection {
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.records.contains_key(id)
    }

    pub(crate) fn get(&self, id: &str) -> Option<SharedObject> {
        self.records.get(id).map(|(_, object)| object.clone())
    }

    /// Stores an object under its `id`, or replaces the object with that id keeping its place in
    /// the order; returns it as stored.
    pub(crate) fn put(&mut self, object: Map<String, Value>) -> SharedObject {
        let id = object["id"].as_str().unwrap_or_default().to_owned();
        let object = Arc::new(object);
        let now = Instant::now();
        if let Some((_, stored)) = self.records.get_mut(&id) {
            let before = stored.clone();
            self.recent_writes
                .entry(id)
                .and_modify(|(written_at, _)| *written_at = now)
                .or_insert((now, Some(before)));
            *stored = object.clone();
            return object;
        }
        self.recent_writes.insert(id.clone(), (now, None));
        // Listed by `created`; an invoice item has none and is listed by its `date`.
        let created = object
            .get("created")
            .or_else(|| object.get("date"))
            .and_then(Value::as_i64)
            .unwrap_or_default();
        self.next_sequence += 1;
        let key = (created, self.next_sequence);
        self.order.insert(key, id.clone());
        self.records.insert(id, (key, object.clone()));
        object
    }

    /// Forgets an object; returns it as it was.
    pub(crate) fn remove(&mut self, id: &str) -> Option<SharedObject> {
        let (key, object) = self.records.remove(id)?;
        self.order.remove(&key);
        self.recent_writes.remove(id);
        Some(object)
    }

    /// Every object as search sees it, newest first, starting after `after` (a search page
    /// cursor): an object created less than `delay` ago is not found yet, and one changed less
    /// than `delay` ago is found as it was before (one step back: several changes within the
    /// delay show the state before the first). A deleted object leaves search at once.
    pub(crate) fn search_snapshot(
        &mut self,
        now: Instant,
        delay: Duration,
        after: Option<OrderKey>,
    ) -> Vec<(OrderKey, SharedObject)> {
        self.recent_writes
            .retain(|_, (written_at, _)| now.saturating_duration_since(*written_at) < delay);
        let upper = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        self.order
            .range((Bound::Unbounded, upper))
            .rev()
            .filter_map(|(key, id)| {
                let seen = match self.recent_writes.get(id) {
                    Some((_, before)) => before.clone()?,
                    None => self.records.get(id)?.1.clone(),
                };
                Some((*key, seen))
            })
            .collect()
    }

    /// Every object, newest first.
    pub(crate) fn all(&self) -> Vec<SharedObject> {
        self.order
            .values()
            .rev()
            .filter_map(|id| self.get(id))
            .collect()
    }

    /// Every object, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &SharedObject> {
        self.records.values().map(|(_, object)| object)
    }

    /// One page, newest first, of the objects `keep` accepts, and whether more follow in the
    /// direction of travel. A cursor naming no object is an error.
    pub(crate) fn list(
        &self,
        page: &PageQuery,
        keep: impl Fn(&Map<String, Value>) -> bool,
    ) -> Result<(Vec<SharedObject>, bool), UnknownCursor> {
        let mut lower = Bound::Included((page.created.min, 0));
        let mut upper = Bound::Included((page.created.max, u64::MAX));
        if let Some(cursor) = &page.starting_after {
            let (key, _) = self.records.get(cursor).ok_or(UnknownCursor)?;
            upper = tighter_upper(upper, Bound::Excluded(*key));
        }
        if let Some(cursor) = &page.ending_before {
            let (key, _) = self.records.get(cursor).ok_or(UnknownCursor)?;
            lower = tighter_lower(lower, Bound::Excluded(*key));
        }
        if !range_is_valid(&lower, &upper) {
            return Ok((Vec::new(), false));
        }
        let wanted = page.limit + 1;
        // `ending_before` pages towards newer objects: walk forwards from the cursor.
        let walk_forwards = page.ending_before.is_some() && page.starting_after.is_none();
        let matching = self
            .order
            .range((lower, upper))
            .filter_map(|(_, id)| self.records.get(id).map(|(_, object)| object))
            .filter(|object| keep(object));
        let mut found: Vec<SharedObject> = if walk_forwards {
            matching.take(wanted).cloned().collect()
        } else {
            matching.rev().take(wanted).cloned().collect()
        };
        let has_more = found.len() > page.limit;
        found.truncate(page.limit);
        if walk_forwards {
            found.reverse();
        }
        Ok((found, has_more))
    }
}

/// Products, prices, subscriptions, invoices and invoice items, behind one lock because their
/// rules cross (a price needs its product, a product with prices cannot be deleted, a default
/// price belongs to its product, a subscription's items name active recurring prices, an invoice
/// item names a one-time price and its invoice's lines and totals follow its items).
#[derive(Default)]
pub(crate) struct Catalog {
    pub products: Collection,
    prices: Collection,
    /// Canceled ones included: they stay retrievable, as on Stripe.
    pub subscriptions: Collection,
    /// Drafts, open, paid, void and uncollectible ones; a deleted draft leaves.
    pub invoices: Collection,
    /// Pending ones (on no invoice yet) and those on an invoice. Written through
    /// [`Catalog::put_invoice_item`] and [`Catalog::remove_invoice_item`], which keep
    /// `items_on_invoice`.
    pub invoice_items: Collection,
    /// Invoice → its items' ids, oldest first: an invoice's items are found without reading
    /// every item of the account (each item written refreshes its invoice's lines).
    items_on_invoice: HashMap<String, Vec<String>>,
    /// Customer → the sequence number its next finalized invoice takes (starting at the
    /// customer's `next_invoice_sequence`).
    pub invoice_sequences: HashMap<String, i64>,
    /// Lookup key → the price holding it; unique per account, active or not.
    lookup_keys: HashMap<String, String>,
}

impl Catalog {
    /// Stores an invoice item, keeping the list of its invoice's items.
    pub(crate) fn put_invoice_item(&mut self, item: Map<String, Value>) -> SharedObject {
        let id = item["id"].as_str().unwrap_or_default().to_owned();
        let before = self
            .invoice_items
            .get(&id)
            .and_then(|old| old["invoice"].as_str().map(str::to_owned));
        let after = item["invoice"].as_str().map(str::to_owned);
        if before != after {
            if let Some(ids) = before.and_then(|old| self.items_on_invoice.get_mut(&old)) {
                ids.retain(|other| *other != id);
            }
            if let Some(invoice) = after {
                self.items_on_invoice.entry(invoice).or_default().push(id);
            }
        }
        self.invoice_items.put(item)
    }

    /// Removes an invoice item, and it from its invoice's list.
    pub(crate) fn remove_invoice_item(&mut self, id: &str) -> Option<SharedObject> {
        let removed = self.invoice_items.remove(id)?;
        if let Some(ids) = removed["invoice"]
            .as_str()
            .and_then(|invoice| self.items_on_invoice.get_mut(invoice))
        {
            ids.retain(|other| other != id);
        }
        Some(removed)
    }

    /// The items on an invoice, oldest first.
    pub(crate) fn items_on_invoice(&self, invoice_id: &str) -> Vec<SharedObject> {
        self.items_on_invoice
            .get(invoice_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.invoice_items.get(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn prices(&self) -> &Collection {
        &self.prices
    }

    /// Prices as search sees them (see [`Collection::search_snapshot`]).
    pub(crate) fn search_prices(
        &mut self,
        now: Instant,
        delay: Duration,
        after: Option<OrderKey>,
    ) -> Vec<(OrderKey, SharedObject)> {
        self.prices.search_snapshot(now, delay, after)
    }

    /// The price that holds `key`, if any.
    pub(crate) fn lookup_key_holder(&self, key: &str) -> Option<&str> {
        self.lookup_keys.get(key).map(String::as_str)
    }

    /// Stores a new price or replaces one, keeping the lookup key index in step; returns it as
    /// stored. The caller has made sure its lookup key is free.
    pub(crate) fn put_price(&mut self, price: Map<String, Value>) -> SharedObject {
        let id = price["id"].as_str().unwrap_or_default().to_owned();
        if let Some(old_key) = self
            .prices
            .get(&id)
            .and_then(|old| old["lookup_key"].as_str().map(str::to_owned))
        {
            if self.lookup_keys.get(&old_key) == Some(&id) {
                self.lookup_keys.remove(&old_key);
            }
        }
        if let Some(key) = price["lookup_key"].as_str() {
            self.lookup_keys.insert(key.to_owned(), id);
        }
        self.prices.put(price)
    }

    /// Whether any price, active or not, belongs to the product.
    pub(crate) fn product_has_prices(&self, product_id: &str) -> bool {
        self.prices
            .values()
            .any(|price| price["product"].as_str() == Some(product_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(id: &str, created: i64) -> Map<String, Value> {
        match json!({"id": id, "created": created, "lookup_key": null}) {
            Value::Object(object) => object,
            _ => unreachable!(),
        }
    }

    fn ids(page: &[SharedObject]) -> Vec<&str> {
        page.iter()
            .map(|object| object["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn lists_newest_first_with_filters_and_cursors_both_ways() {
        let mut collection = Collection::default();
        for index in 0..6 {
            collection.put(object(&format!("o{index}"), 100 + index / 2));
        }
        let even =
            |object: &Map<String, Value>| object["id"].as_str().unwrap().ends_with(['0', '2', '4']);
        let page = PageQuery {
            limit: 2,
            ..PageQuery::default()
        };
        let (found, more) = collection.list(&page, even).unwrap();
        assert_eq!((ids(&found), more), (vec!["o4", "o2"], true));
        let after = PageQuery {
            starting_after: Some("o2".into()),
            ..page.clone()
        };
        let (found, more) = collection.list(&after, even).unwrap();
        assert_eq!((ids(&found), more), (vec!["o0"], false));
        let before = PageQuery {
            ending_before: Some("o0".into()),
            ..page.clone()
        };
        let (found, more) = collection.list(&before, |_| true).unwrap();
        assert_eq!((ids(&found), more), (vec!["o2", "o1"], true));
        let unknown = PageQuery {
            starting_after: Some("nope".into()),
            ..page
        };
        assert!(collection.list(&unknown, |_| true).is_err());
        collection.put(object("o1", 999));
        assert_eq!(
            ids(&collection.all()),
            vec!["o5", "o4", "o3", "o2", "o1", "o0"],
            "a replaced object keeps its place"
        );
        collection.remove("o3");
        assert_eq!(collection.all().len(), 5);
    }

    #[test]
    fn the_lookup_key_index_follows_price_writes() {
        let mut catalog = Catalog::default();
        let mut price = object("price_a", 1);
        price.insert("lookup_key".into(), json!("gold"));
        catalog.put_price(price.clone());
        assert_eq!(catalog.lookup_key_holder("gold"), Some("price_a"));
        price.insert("lookup_key".into(), json!("silver"));
        catalog.put_price(price.clone());
        assert_eq!(catalog.lookup_key_holder("gold"), None);
        assert_eq!(catalog.lookup_key_holder("silver"), Some("price_a"));
        price.insert("lookup_key".into(), Value::Null);
        catalog.put_price(price);
        assert_eq!(catalog.lookup_key_holder("silver"), None);
    }
}
