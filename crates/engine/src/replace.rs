//! Replacing a record Stripe cannot change in place: a price whose amount, currency or
//! recurrence changed. Four steps, each safe to repeat:
//!
//! 1. create the new record, taking over the key (`transfer_lookup_key`) and naming the old
//!    one in its metadata, under a create saved first (as every create is);
//! 2. read the parent (the price's product) and, if its default is the old record, point it at
//!    the new one (Stripe refuses to archive a product's default price);
//! 3. retire the old record (archive the price);
//! 4. commit: the new record is remembered and the saved create dropped.
//!
//! A run that stops anywhere before 4 leaves the saved create: the next run plans the row as a
//! replacement again, finds the new record by the key it took over (a consistent list call) and
//! goes on from step 2, so no second record is made.

use crate::execute::{
    id_only_snapshot_entry, pending_create_of, save_pending_create, settle_error, settled,
    short_hash, snapshot_entry, Execution, Settled,
};
use crate::plan::{replaced_by, PENDING_CREATE_MAX_AGE};
use crate::prepare::PreparedRecord;
use crate::EngineError;
use ferry_core::{changed_fields, Baseline, FieldValue, Outcome};
use ferry_destinations::stripe::encoder::{create_params, held_by_record, update_params};
use ferry_destinations::stripe::{record_to_fields, Replacement, StripeCallError, StripeRecord};
use ferry_state::PendingCreate;
use ferry_stripe_wire::form;
use serde_json::{json, Map, Value as Json};

/// What a replacement was asked to do.
pub(crate) struct Replacing {
    pub old_id: String,
    pub changes: Json,
    pub reason: String,
    /// The create an interrupted replacement saved.
    pub earlier: Option<PendingCreate>,
}

pub(crate) async fn replace(
    exec: &Execution<'_>,
    record: &PreparedRecord,
    job: Replacing,
) -> Result<Settled, EngineError> {
    let replacement = exec
        .object
        .replacement()
        .expect("only objects with a replacement plan one");
    let body = form::encode(&replacement_params(exec, replacement, record, &job.old_id));
    let fail = |error: StripeCallError, pending_key: Option<&str>| {
        settle_error(&record.key, record.row_number, error, pending_key)
    };

    // 1. The new record: made by the interrupted attempt, or made now.
    let made_earlier = match &job.earlier {
        Some(earlier) if replaced_by(earlier, replacement).as_deref() == Some(&job.old_id) => {
            match key_holder(exec, replacement, record).await {
                Ok(holder) => holder.filter(|holder| {
                    holder.id != job.old_id
                        && holder.object["metadata"][replacement.marker].as_str()
                            == Some(job.old_id.as_str())
                }),
                Err(error) => return fail(error, None),
            }
        }
        _ => None,
    };
    let (new, mut request_id, stale_fields, mut written) = match made_earlier {
        Some(new) => {
            // Made from an earlier row: brought up to date with this one.
            let live = record_to_fields(exec.schema(), &new.object);
            let mut changed = changed_fields(&record.payload, &Baseline::Live(&live), &[]);
            changed.retain(|path| held_by_record(exec.schema(), path));
            let (updatable, fixed): (Vec<String>, Vec<String>) =
                changed.into_iter().partition(|path| {
                    !exec
                        .schema()
                        .field(path)
                        .is_some_and(|field| field.create_only)
                });
            let mut request_id = None;
            if !updatable.is_empty() {
                let update =
                    form::encode(&update_params(exec.schema(), &record.payload, &updatable));
                let key = step_key(exec, record, "update");
                match exec
                    .stripe
                    .update(exec.schema(), &new.id, &update, &key)
                    .await
                {
                    Ok(written) => request_id = written.request_id,
                    Err(error) => {
                        return unfinished(exec, record, &job, &new.id, "update it", error)
                    }
                }
            }
            (new.id, request_id, fixed, vec![new.object])
        }
        None => {
            let pending = match job.earlier.clone() {
                // The very request an interrupted run saved: replayed under its key, so that
                // Stripe answers with the record if that attempt made it after all.
                Some(earlier)
                    if earlier.request_body == body
                        && chrono::Utc::now() - earlier.created_at < PENDING_CREATE_MAX_AGE =>
                {
                    earlier
                }
                _ => {
                    let fresh = pending_create_of(exec, record, body, chrono::Utc::now());
                    save_pending_create(exec, &fresh).await?;
                    fresh
                }
            };
            match exec
                .stripe
                .create(
                    exec.schema(),
                    &pending.request_body,
                    &pending.idempotency_key,
                )
                .await
            {
                Ok(written) => (
                    written.record.id,
                    written.request_id,
                    Vec::new(),
                    vec![written.record.object],
                ),
                // Refused (the row's new values break a rule): the old record stays as it is.
                Err(error) => return fail(error, Some(&pending.key)),
            }
        }
    };

    crate::crash_point::reached("replace:created");

    // 2. The parent's default follows the key.
    if let Some(parent_id) = parent_of(record, replacement) {
        match exec.stripe.retrieve(replacement.parent, &parent_id).await {
            Ok(Some(parent))
                if parent.object[replacement.parent_default].as_str() == Some(&job.old_id) =>
            {
                let repoint = form::encode(&Map::from_iter([(
                    replacement.parent_default.to_string(),
                    Json::String(new.clone()),
                )]));
                let key = step_key(exec, record, "default");
                if let Err(error) = exec
                    .stripe
                    .update(replacement.parent, &parent_id, &repoint, &key)
                    .await
                {
                    let doing = format!(
                        "make it the default price of {} `{parent_id}`",
                        replacement.parent.object
                    );
                    return unfinished(exec, record, &job, &new, &doing, error);
                }
            }
            Ok(_) => {}
            Err(error) => {
                let doing = format!("read {} `{parent_id}`", replacement.parent.object);
                return unfinished(exec, record, &job, &new, &doing, error);
            }
        }
    }

    crate::crash_point::reached("replace:repointed");

    // 3. The old record is retired (again, harmlessly, if an earlier attempt did it).
    let retire =
        form::encode(&Map::from_iter(replacement.retire.iter().map(
            |(param, value)| (param.to_string(), Json::String(value.to_string())),
        )));
    let key = step_key(exec, record, "retire");
    match exec
        .stripe
        .update(exec.schema(), &job.old_id, &retire, &key)
        .await
    {
        // The old record no longer holds the key: the index hears of it too.
        Ok(retired) => {
            request_id = request_id.or(retired.request_id);
            written.push(retired.record.object);
        }
        // Gone already: nothing left to retire.
        Err(StripeCallError::Refused { status: 404, .. }) => {}
        Err(error) => {
            let doing = format!("retire `{}`", job.old_id);
            return unfinished(exec, record, &job, &new, &doing, error);
        }
    }

    crate::crash_point::reached("replace:retired");

    // 4. Done: the new record is the one the key names.
    let mut changes = job.changes;
    if let Json::Object(changes) = &mut changes {
        changes.insert(
            "id".into(),
            json!({"before": job.old_id.as_str(), "after": new.as_str()}),
        );
    }
    let (outcome, reason, remember) = if stale_fields.is_empty() {
        (
            Outcome::Updated,
            format!("replaced `{}`: {}", job.old_id, job.reason),
            snapshot_entry(record, &new),
        )
    } else {
        // The row changed again, in what only a new replacement can change: the next run
        // sends every field to the new record, which replaces it in turn.
        (
            Outcome::Failed,
            format!(
                "replaced `{}` by `{new}`, but the row changed {} since; the next run replaces `{new}` in turn",
                job.old_id,
                stale_fields.join(", ")
            ),
            id_only_snapshot_entry(&record.match_key, &new),
        )
    };
    let mut done = settled(
        record.row_number,
        &record.key,
        outcome,
        Some(new.clone()),
        Some(reason),
        request_id,
        Some(changes.to_string()),
    );
    done.remember = Some(remember);
    done.pending_resolved = Some(record.match_key.clone());
    done.written = written;
    Ok(done)
}

/// The new record's create params: the row's fields, the key taken over from the record
/// holding it, and the marker naming the record replaced.
fn replacement_params(
    exec: &Execution<'_>,
    replacement: &Replacement,
    record: &PreparedRecord,
    old_id: &str,
) -> Map<String, Json> {
    let mut params = create_params(exec.schema(), &record.payload);
    params.insert(replacement.transfer_param.into(), Json::Bool(true));
    let metadata = params
        .entry("metadata")
        .or_insert_with(|| Json::Object(Map::new()));
    if let Json::Object(metadata) = metadata {
        metadata.insert(replacement.marker.into(), Json::String(old_id.into()));
    }
    params
}

/// The record that holds the row's key in Stripe now (a consistent list call, never search).
async fn key_holder(
    exec: &Execution<'_>,
    replacement: &Replacement,
    record: &PreparedRecord,
) -> Result<Option<StripeRecord>, StripeCallError> {
    let filter = Map::from_iter([(
        format!("{}s", replacement.key_field),
        json!([record.match_key]),
    )]);
    let page = exec.stripe.list_page(exec.schema(), &filter).await?;
    Ok(page.records.into_iter().find(|holder| {
        holder.object[replacement.key_field].as_str() == Some(record.match_key.as_str())
    }))
}

fn parent_of(record: &PreparedRecord, replacement: &Replacement) -> Option<String> {
    match record.payload.get(replacement.parent_field) {
        Some(FieldValue::Text(id)) if !id.is_empty() => Some(id.clone()),
        _ => None,
    }
}

/// Each step's idempotency key: a retry within the run repeats the step's answer; the next
/// run's attempt is a new request (Stripe keeps a refusal under its key).
fn step_key(exec: &Execution<'_>, record: &PreparedRecord, step: &str) -> String {
    format!(
        "ferry-{}-r-{}-{}-{step}",
        exec.sync_uid,
        exec.run_id,
        short_hash(&record.match_key, 20)
    )
}

/// The new record exists but a later step failed: the row fails, and the saved create stays,
/// so that the next run finds the new record and finishes the replacement.
fn unfinished(
    exec: &Execution<'_>,
    record: &PreparedRecord,
    job: &Replacing,
    new_id: &str,
    doing: &str,
    error: StripeCallError,
) -> Result<Settled, EngineError> {
    if let StripeCallError::Unauthorized { message, .. } = error {
        return Err(EngineError::StripeKey(message));
    }
    let object = exec.schema().object;
    Ok(settled(
        record.row_number,
        &record.key,
        Outcome::Failed,
        Some(new_id.to_string()),
        Some(format!(
            "made {object} `{new_id}` to replace `{}`, but could not {doing}: {error}; the next run finishes the replacement",
            job.old_id
        )),
        error.request_id().map(str::to_string),
        None,
    ))
}
