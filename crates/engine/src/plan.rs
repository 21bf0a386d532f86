//! Deciding what each record needs: nothing, an update of some fields, a create, or a report.
//! The preview stops here; a run goes on to execute the plan.

use crate::matching::{find_existing_customers, Matches};
use crate::prepare::{PreparedRecord, ValidatedSync};
use crate::EngineError;
use ferry_core::{changed_fields, Baseline, Behavior, FieldValue, Payload};
use ferry_destinations::stripe::{customer_to_fields, StripeService};
use ferry_state::{PendingCreate, SnapshotEntry};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;

/// Stripe keeps an idempotency key for at least 24 hours; past this age a saved create is not
/// replayed blindly but looked up first.
pub(crate) const PENDING_CREATE_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(23);

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The payload equals what Stripe holds. `remember` when the id was found by lookup and
    /// should be saved so that the next run skips the lookup.
    Unchanged {
        stripe_id: String,
        remember: bool,
    },
    Update {
        stripe_id: String,
        changed: Vec<String>,
        changes: Json,
    },
    Create {
        changes: Json,
    },
    /// A create whose idempotency key and body are saved: sent with them, so that Stripe
    /// returns the customer it made if an earlier attempt made one. `from_earlier_run`: an
    /// interrupted run saved it, and a lookup just now found no customer with the key.
    ReplayCreate {
        pending: PendingCreate,
        from_earlier_run: bool,
    },
    NotFound,
    Reject {
        reason: String,
    },
    /// The lookup failed for good; retried next run.
    Fail {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct PlannedRecord {
    pub record: PreparedRecord,
    pub action: Action,
    /// An interrupted run saved a create for this key, and the lookup found the customer it
    /// (or someone) made: the saved create is dropped once this record settles.
    pub drops_pending: bool,
}

pub struct PlanInputs<'a> {
    pub sync: &'a ValidatedSync,
    pub behavior: Behavior,
    pub snapshot: &'a HashMap<String, SnapshotEntry>,
    pub pending: &'a HashMap<String, PendingCreate>,
    pub full_resync: bool,
}

pub async fn plan_records(
    stripe: &StripeService,
    inputs: &PlanInputs<'_>,
    records: Vec<PreparedRecord>,
) -> Result<Vec<PlannedRecord>, EngineError> {
    let mut planned = Vec::with_capacity(records.len());
    let mut unknown = Vec::new();
    for record in records {
        let remembered = inputs
            .snapshot
            .get(&record.match_key)
            .filter(|_| !inputs.full_resync);
        match remembered {
            Some(entry) => planned.push(PlannedRecord {
                action: action_from_snapshot(&record, entry),
                record,
                drops_pending: false,
            }),
            // A create saved by an interrupted run is looked up like any new row: the run may
            // have died before sending it, and someone may have created the customer since.
            None => unknown.push(record),
        }
    }
    planned.extend(plan_from_lookups(stripe, inputs, unknown).await?);
    planned.sort_by_key(|p| p.record.row_number);
    Ok(planned)
}

/// Looks the creates of a plan up again and plans them anew; the other records keep their
/// action. Called once the run holds the create lock of the Stripe account: another sync may
/// have created some of these customers since they were planned.
pub async fn recheck_creates(
    stripe: &StripeService,
    inputs: &PlanInputs<'_>,
    planned: Vec<PlannedRecord>,
) -> Result<Vec<PlannedRecord>, EngineError> {
    let (creates, mut kept): (Vec<_>, Vec<_>) = planned.into_iter().partition(|p| {
        matches!(
            p.action,
            Action::Create { .. } | Action::ReplayCreate { .. }
        )
    });
    if creates.is_empty() {
        return Ok(kept);
    }
    tracing::debug!(
        creates = creates.len(),
        "Checking again, under the account's create lock, that the customers to create do not exist."
    );
    let records = creates.into_iter().map(|p| p.record).collect();
    kept.extend(plan_from_lookups(stripe, inputs, records).await?);
    kept.sort_by_key(|p| p.record.row_number);
    Ok(kept)
}

async fn plan_from_lookups(
    stripe: &StripeService,
    inputs: &PlanInputs<'_>,
    records: Vec<PreparedRecord>,
) -> Result<Vec<PlannedRecord>, EngineError> {
    let lookup_refs: Vec<&PreparedRecord> = records.iter().collect();
    let matches =
        find_existing_customers(stripe, inputs.sync, &lookup_refs, inputs.snapshot.len()).await?;
    let now = chrono::Utc::now();
    Ok(records
        .into_iter()
        .map(|record| {
            let pending = inputs.pending.get(&record.match_key);
            // Stripe keeps an idempotency key for at least 24 hours; an older saved create is
            // not replayed (its key may be forgotten) but made anew with a new key.
            let replayable = pending.filter(|p| now - p.created_at < PENDING_CREATE_MAX_AGE);
            let action = action_from_lookup(inputs, &record, &matches, replayable);
            let drops_pending = pending.is_some()
                && matches!(action, Action::Update { .. } | Action::Unchanged { .. });
            PlannedRecord {
                record,
                action,
                drops_pending,
            }
        })
        .collect())
}

fn action_from_snapshot(record: &PreparedRecord, entry: &SnapshotEntry) -> Action {
    if entry.payload_hash == record.payload.hash() {
        return Action::Unchanged {
            stripe_id: entry.stripe_id.clone(),
            remember: false,
        };
    }
    let last_write = Payload::from_json(&entry.payload).unwrap_or_default();
    let changed = changed_fields(&record.payload, &Baseline::LastWrite(&last_write), &[]);
    if changed.is_empty() {
        // Same values, other hash (a field left the mapping): nothing to send, but remember
        // the new payload so the next run compares against it.
        return Action::Unchanged {
            stripe_id: entry.stripe_id.clone(),
            remember: true,
        };
    }
    let before = |path: &str| {
        last_write
            .get(path)
            .map(FieldValue::to_json)
            .unwrap_or(Json::Null)
    };
    Action::Update {
        stripe_id: entry.stripe_id.clone(),
        changes: describe_changes(&record.payload, &changed, before),
        changed,
    }
}

fn action_from_lookup(
    inputs: &PlanInputs<'_>,
    record: &PreparedRecord,
    matches: &Matches,
    pending: Option<&PendingCreate>,
) -> Action {
    let found = match matches.get(&record.match_key) {
        Some(Ok(found)) => found,
        Some(Err(reason)) => {
            return Action::Fail {
                reason: reason.clone(),
            }
        }
        None => {
            return Action::Fail {
                reason: "the key was not looked up".into(),
            }
        }
    };
    match found.as_slice() {
        [] => match inputs.behavior {
            Behavior::UpdateOrCreate => match pending {
                Some(pending) => Action::ReplayCreate {
                    pending: pending.clone(),
                    from_earlier_run: true,
                },
                None => {
                    let all: Vec<String> = record
                        .payload
                        .fields
                        .iter()
                        .filter(|(_, v)| **v != FieldValue::Clear)
                        .map(|(k, _)| k.clone())
                        .collect();
                    Action::Create {
                        changes: describe_changes(&record.payload, &all, |_| Json::Null),
                    }
                }
            },
            Behavior::UpdateOnly => Action::NotFound,
        },
        [customer] => {
            let live = customer_to_fields(&customer.object);
            let key_path = inputs.sync.key_field.path.as_str();
            let case_insensitive: &[&str] = if inputs.sync.key_is_email() {
                &["email"]
            } else {
                &[]
            };
            let mut changed =
                changed_fields(&record.payload, &Baseline::Live(&live), case_insensitive);
            // The key itself matched already (trimmed, and ignoring case for emails).
            changed.retain(|path| path != key_path || !inputs.sync.key_is_email());
            if changed.is_empty() {
                Action::Unchanged {
                    stripe_id: customer.id.clone(),
                    remember: true,
                }
            } else {
                let before = |path: &str| {
                    live.get(path)
                        .map(FieldValue::to_json)
                        .unwrap_or(Json::Null)
                };
                Action::Update {
                    stripe_id: customer.id.clone(),
                    changes: describe_changes(&record.payload, &changed, before),
                    changed,
                }
            }
        }
        several => {
            let ids: Vec<&str> = several.iter().map(|c| c.id.as_str()).collect();
            Action::Reject {
                reason: format!(
                    "ambiguous: {} Stripe customers match `{}` ({}); merge or delete the extra ones in Stripe, then run again",
                    several.len(),
                    record.key,
                    ids.join(", ")
                ),
            }
        }
    }
}

/// `{"name": {"before": "Ada", "after": "Ada L."}}`, for previews and run logs.
fn describe_changes(payload: &Payload, changed: &[String], before: impl Fn(&str) -> Json) -> Json {
    let mut changes = Map::new();
    for path in changed {
        let after = payload
            .get(path)
            .map(FieldValue::to_json)
            .unwrap_or(Json::Null);
        changes.insert(
            path.clone(),
            json!({"before": before(path), "after": after}),
        );
    }
    Json::Object(changes)
}
