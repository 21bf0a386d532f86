//! The key index: per destination account and object, the match keys of every record there
//! (a lower-cased email, an external id in metadata) and the ids that carry them, kept in the
//! workspace so that "does a customer with this key exist?" costs no request.
//!
//! It is built once by listing every record, then kept fresh by listing only the records
//! created since the last refresh (`created[gte]`, consistent) and by reading the account's
//! change events since then (`GET /v1/events`: updates that change a key, deletions). Stripe
//! keeps events for 30 days, so an index not refreshed for longer is built again. "No record has
//! this key" is concluded from a fresh index, never from search.

use crate::EngineError;
use ferry_destinations::stripe::{MappedKey, StripeCallError, StripeObject, StripeService};
use ferry_state::{IndexState, IndexedRecord, StateStore};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;

/// Events older than this are not trusted to still be listed (Stripe keeps 30 days).
const EVENTS_TRUSTED_FOR: chrono::TimeDelta = chrono::TimeDelta::days(29);
/// Overlap when listing "created since": watermarks are Stripe's own `created` times, which have
/// one-second resolution, and a record whose create was still committing when the last listing
/// ran may carry a slightly earlier time than the newest one seen.
const OVERLAP_SECONDS: i64 = 5;
/// Under the create lock, the index is refreshed again only if its last refresh is older than
/// this: between refreshes, ferry's own writes (this run's and other syncs') go straight into
/// the index, so only records made outside ferry can be missing.
pub(crate) const REFRESH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// Records per page, Stripe's maximum.
const PAGE_SIZE: u64 = 100;
/// Index writes are batched by this many records.
const WRITE_BATCH: usize = 1_000;

/// The index of one account and object, as one run uses it.
pub(crate) struct KeyIndex<'a> {
    pub(crate) store: &'a StateStore,
    pub(crate) stripe: &'a StripeService,
    pub(crate) object: &'static dyn StripeObject,
    /// The account and object (`stripe https://api.stripe.com acct_1… customer`).
    pub(crate) scope: String,
    /// The keys every record is indexed under: this sync's, plus those already indexed.
    pub(crate) keys: Vec<MappedKey>,
}

/// What keeping the index fresh cost, for logs and the run's request count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refresh {
    pub(crate) rebuilt: bool,
    pub(crate) records_listed: u64,
    pub(crate) events_applied: u64,
}

impl<'a> KeyIndex<'a> {
    pub(crate) async fn open(
        store: &'a StateStore,
        stripe: &'a StripeService,
        object: &'static dyn StripeObject,
        key: &MappedKey,
    ) -> Result<KeyIndex<'a>, EngineError> {
        let scope = stripe
            .create_scope(object.schema().object)
            .await
            .map_err(lookup_error)?;
        let mut keys = vec![key.clone()];
        if let Some(state) = store.index_state(&scope).await? {
            for name in state.key_names {
                if keys.iter().all(|k| k.field.path != name) {
                    if let Ok(other) = MappedKey::new(object.schema(), &name) {
                        keys.push(other);
                    }
                }
            }
        }
        keys.sort_by(|a, b| a.field.path.cmp(&b.field.path));
        Ok(KeyIndex {
            store,
            stripe,
            object,
            scope,
            keys,
        })
    }

    fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.field.path.clone()).collect()
    }

    /// Refreshes the index unless that was done less than [`REFRESH_EVERY`] ago.
    pub(crate) async fn refresh_if_stale(&self) -> Result<Refresh, EngineError> {
        let fresh = self
            .store
            .index_state(&self.scope)
            .await?
            .is_some_and(|state| chrono::Utc::now() - state.refreshed_at < REFRESH_EVERY);
        if fresh {
            return Ok(Refresh::default());
        }
        self.refresh(false).await
    }

    /// Brings the index up to date: built from a full listing when it never was, when it
    /// lacks one of the keys, when its events are too old to read (or `rebuild`); else the
    /// records created and the changes made since the last refresh.
    pub(crate) async fn refresh(&self, rebuild: bool) -> Result<Refresh, EngineError> {
        let now = chrono::Utc::now();
        let state = self.store.index_state(&self.scope).await?;
        let usable = state.filter(|state| {
            !rebuild
                && self.key_names().iter().all(|k| state.key_names.contains(k))
                // Events read at the last refresh must still be kept by Stripe.
                && now - state.refreshed_at < EVENTS_TRUSTED_FOR
        });
        match usable {
            None => self.build(now).await,
            Some(state) => self.catch_up(state, now).await,
        }
    }

    /// The ids of the records whose key `key` has one of `values` (normalized).
    pub(crate) async fn lookup(
        &self,
        key: &MappedKey,
        values: &[String],
    ) -> Result<HashMap<String, Vec<String>>, EngineError> {
        Ok(self
            .store
            .index_lookup(&self.scope, &key.field.path, values)
            .await?)
    }

    /// Records what ferry itself just created (`new`) or changed, so that later lookups (this
    /// run's next chunk, another sync) see it before the next refresh.
    pub(crate) async fn remember(&self, records: &[&Json], new: bool) -> Result<(), EngineError> {
        let indexed: Vec<IndexedRecord> =
            records.iter().filter_map(|r| self.entry(r, new)).collect();
        self.store.index_update(&self.scope, &indexed, &[]).await?;
        Ok(())
    }

    /// Forgets a record that Stripe says no longer exists.
    pub(crate) async fn forget(&self, id: &str) -> Result<(), EngineError> {
        self.store
            .index_update(&self.scope, &[], &[id.to_string()])
            .await?;
        Ok(())
    }

    fn entry(&self, record: &Json, new: bool) -> Option<IndexedRecord> {
        let id = record.get("id")?.as_str()?.to_string();
        let keys = self
            .keys
            .iter()
            .filter_map(|key| Some((key.field.path.clone(), key.of_record(record)?)))
            .collect();
        Some(IndexedRecord {
            destination_id: id,
            keys,
            new,
        })
    }

    async fn build(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Refresh, EngineError> {
        tracing::info!(
            object = self.object.schema().object,
            "Building the index of the account's records (one full listing)."
        );
        self.store.index_clear(&self.scope).await?;
        // Events from the listing's start on are read at the next refresh; the listing covers
        // what came before.
        let started = now.timestamp();
        let (listed, newest, served_at) = self.list(None).await?;
        self.store
            .index_save_state(
                &self.scope,
                &IndexState {
                    key_names: self.key_names(),
                    built_at: now,
                    // Stripe's clock when it served the listing's first page: whatever was
                    // made or changed some seconds before was in the listing. Without a `Date`
                    // header, ferry's clock stands in, a minute back against a difference.
                    created_through: newest.max(served_at).unwrap_or(started - 60),
                    events_through: served_at.unwrap_or(started - 60),
                    refreshed_at: now,
                },
            )
            .await?;
        Ok(Refresh {
            rebuilt: true,
            records_listed: listed,
            events_applied: 0,
        })
    }

    async fn catch_up(
        &self,
        state: IndexState,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Refresh, EngineError> {
        let (listed, newest_created, listing_served_at) = self
            .list(Some(state.created_through - OVERLAP_SECONDS))
            .await?;
        let (events, newest_event, events_served_at) = match self
            .apply_events(state.events_through - OVERLAP_SECONDS)
            .await
        {
            Ok(applied) => applied,
            // A restricted key may not read events: without them a key changed in Stripe would
            // go unseen, so the index is built again instead.
            Err(EngineError::StripeKey(reason)) => {
                tracing::info!(%reason, "Cannot read the account's events; rebuilding the index from a full listing.");
                return self.build(now).await;
            }
            Err(other) => return Err(other),
        };
        // Watermarks move, on Stripe's clock, to when it served the first page (what was made
        // or changed some seconds before that was listed), or to the newest record and event
        // seen. The next refresh starts `OVERLAP_SECONDS` before them, so a burst of creates
        // just before a refresh is listed again once, not at every refresh until the next.
        self.store
            .index_save_state(
                &self.scope,
                &IndexState {
                    created_through: newest_created
                        .max(listing_served_at)
                        .unwrap_or(state.created_through)
                        .max(state.created_through),
                    events_through: newest_event
                        .max(events_served_at)
                        .unwrap_or(state.events_through)
                        .max(state.events_through),
                    refreshed_at: now,
                    ..state
                },
            )
            .await?;
        Ok(Refresh {
            rebuilt: false,
            records_listed: listed,
            events_applied: events,
        })
    }

    /// Lists every record (or those created since `created_since`) into the index, with each of
    /// the object's listings (`StripeObject::listings`). Returns how
    /// many were listed, the newest `created` among them, and when the first page was served.
    async fn list(
        &self,
        created_since: Option<i64>,
    ) -> Result<(u64, Option<i64>, Option<i64>), EngineError> {
        let schema = self.object.schema();
        let mut listed = 0u64;
        let mut newest: Option<i64> = None;
        let mut first_served: Option<Option<i64>> = None;
        let mut batch = Vec::new();
        for filters in self.object.listings() {
            let mut starting_after: Option<String> = None;
            loop {
                let mut params = Map::from_iter([("limit".to_string(), Json::from(PAGE_SIZE))]);
                for (name, value) in *filters {
                    params.insert(name.to_string(), Json::String(value.to_string()));
                }
                if let Some(since) = created_since {
                    params.insert(
                        "created".to_string(),
                        Json::Object(Map::from_iter([("gte".to_string(), Json::from(since))])),
                    );
                }
                if let Some(after) = &starting_after {
                    params.insert("starting_after".to_string(), Json::String(after.clone()));
                }
                let page = self
                    .stripe
                    .list_keys_page(schema, &params)
                    .await
                    .map_err(lookup_error)?;
                first_served.get_or_insert(page.served_at);
                starting_after = page.records.last().map(|r| r.id.clone());
                listed += page.records.len() as u64;
                newest = newest.max(page.records.iter().filter_map(created_of).max());
                batch.extend(
                    page.records
                        .iter()
                        .filter_map(|r| self.entry(&r.object, false)),
                );
                if batch.len() >= WRITE_BATCH {
                    self.store.index_update(&self.scope, &batch, &[]).await?;
                    batch.clear();
                }
                if !page.has_more || starting_after.is_none() {
                    break;
                }
            }
        }
        self.store.index_update(&self.scope, &batch, &[]).await?;
        Ok((listed, newest, first_served.flatten()))
    }

    /// Applies the change events since `since`: for each record, its newest state (newest
    /// first, so a record's first event seen is its latest). Returns how many were applied, the
    /// newest event's `created`, and when the first page was served.
    async fn apply_events(
        &self,
        since: i64,
    ) -> Result<(u64, Option<i64>, Option<i64>), EngineError> {
        let mut newest: Option<i64> = None;
        let mut first_served: Option<Option<i64>> = None;
        let [updated, deleted] = self.object.change_events();
        let removal = self.object.deleted_event();
        let mut seen = std::collections::HashSet::new();
        let mut starting_after: Option<String> = None;
        let mut applied = 0u64;
        loop {
            let mut params = Map::from_iter([
                ("limit".to_string(), Json::from(PAGE_SIZE)),
                (
                    "types".to_string(),
                    Json::Array(vec![
                        Json::from(updated.clone()),
                        Json::from(deleted.clone()),
                    ]),
                ),
                (
                    "created".to_string(),
                    Json::Object(Map::from_iter([("gte".to_string(), Json::from(since))])),
                ),
            ]);
            if let Some(after) = &starting_after {
                params.insert("starting_after".to_string(), Json::String(after.clone()));
            }
            let page = self
                .stripe
                .events_page(&params)
                .await
                .map_err(lookup_error)?;
            first_served.get_or_insert(page.served_at);
            starting_after = page.records.last().map(|r| r.id.clone());
            newest = newest.max(page.records.iter().filter_map(created_of).max());
            let mut changed = Vec::new();
            let mut removed = Vec::new();
            for event in &page.records {
                let Some(record) = event.object.get("data").and_then(|d| d.get("object")) else {
                    continue;
                };
                let Some(id) = record.get("id").and_then(Json::as_str) else {
                    continue;
                };
                if !seen.insert(id.to_string()) {
                    continue;
                }
                applied += 1;
                let kind = event.object.get("type").and_then(Json::as_str);
                if kind.is_some() && kind == removal.as_deref() {
                    removed.push(id.to_string());
                } else if let Some(entry) = self.entry(record, false) {
                    changed.push(entry);
                }
            }
            self.store
                .index_update(&self.scope, &changed, &removed)
                .await?;
            if !page.has_more || starting_after.is_none() {
                return Ok((applied, newest, first_served.flatten()));
            }
        }
    }
}

fn created_of(record: &ferry_destinations::stripe::StripeRecord) -> Option<i64> {
    record.object.get("created").and_then(Json::as_i64)
}

pub(crate) fn lookup_error(error: StripeCallError) -> EngineError {
    match error {
        StripeCallError::Unauthorized { message, .. } => EngineError::StripeKey(message),
        other => EngineError::StripeLookup(other.to_string()),
    }
}
