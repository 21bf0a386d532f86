//! Records made of several rows: an invoice from its order lines. The model has one row per
//! line; the rows of one invoice key meet in the stage (sorted by key) and are folded here into
//! one record: the invoice's own fields, which every line must give alike, and `lines`, the
//! lines in one canonical JSON list (sorted by line key), so that the invoice's hash changes
//! when any line does and a run sends nothing for an invoice none of whose lines changed.
//!
//! An invoice is synced whole or not at all: a line whose row was rejected (a bad value) holds
//! its whole invoice back, since an invoice missing a line would bill the wrong amount.

use crate::execute::{settle_error, settled, short_hash, snapshot_entry, Execution, Settled};
use crate::prepare::{PreparedRecord, RejectedRow};
use crate::EngineError;
use ferry_core::Outcome;
use ferry_core::{changed_fields, Baseline, FieldValue, Finalize, Payload};
use ferry_destinations::stripe::encoder::{create_params, held_by_record, update_params};
use ferry_destinations::stripe::{record_to_fields, Lines, StripeCallError, StripeService};
use ferry_stripe_wire::ObjectSchema;
use ferry_stripe_wire::{form, ParamError};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};

/// The payload field holding the lines, and the prefix of the line fields of a row.
pub(crate) const LINES: &str = "lines";
/// The metadata key on every invoice item ferry makes, holding the line key.
pub(crate) const LINE_MARKER: &str = "ferry_line";
/// A row's path for its line key, mapped from the sync's line key column.
pub(crate) const LINE_KEY_PATH: &str = "lines.metadata.ferry_line";
/// Stands in the stage for a line whose row was rejected, with the row's reason.
pub(crate) const REJECTED_LINE: &str = "__rejected_line";

/// The stand-in for a rejected line of invoice `key`: folding it holds the invoice back.
pub(crate) fn rejected_line(rejected: &RejectedRow, match_key: String) -> PreparedRecord {
    PreparedRecord::new(
        rejected.row_number,
        rejected.key.clone(),
        match_key,
        Payload {
            fields: BTreeMap::from([(
                REJECTED_LINE.to_string(),
                FieldValue::Text(rejected.reason.clone()),
            )]),
        },
    )
}

/// Folds the rows of one invoice key into the invoice's record, or rejects every row with
/// why the invoice cannot be synced. `max_lines` is Stripe's limit of items on an invoice.
pub(crate) fn fold(
    rows: Vec<PreparedRecord>,
    object: &str,
    max_lines: usize,
) -> Result<PreparedRecord, Vec<RejectedRow>> {
    let reject_all = |rows: &[PreparedRecord], reason: String| {
        rows.iter()
            .filter(|row| row.payload.get(REJECTED_LINE).is_none())
            .map(|row| RejectedRow {
                row_number: row.row_number,
                key: row.key.clone(),
                reason: reason.clone(),
            })
            .collect::<Vec<_>>()
    };
    let first = &rows[0];
    let key = first.key.clone();
    if let Some(held) = rows
        .iter()
        .find(|row| row.payload.get(REJECTED_LINE).is_some())
    {
        return Err(reject_all(
            &rows,
            format!(
                "{object} `{key}` is held back: its line at row {} was rejected; fix that row and the whole {object} is synced",
                held.row_number
            ),
        ));
    }
    if rows.len() > max_lines {
        return Err(reject_all(
            &rows,
            format!(
                "{object} `{key}` has {} lines; Stripe allows at most {max_lines} on one {object}: split it (a second key) or group lines in the model",
                rows.len()
            ),
        ));
    }
    let mut own: BTreeMap<String, (FieldValue, u64)> = BTreeMap::new();
    let mut lines: BTreeMap<String, (Json, u64)> = BTreeMap::new();
    for row in &rows {
        let mut line: BTreeMap<String, Json> = BTreeMap::new();
        for (path, value) in &row.payload.fields {
            if let Some(field) = path.strip_prefix("lines.") {
                line.insert(field.to_string(), value.to_json());
                continue;
            }
            match own.get(path) {
                Some((earlier, earlier_row)) if earlier != value => {
                    return Err(reject_all(
                        &rows,
                        format!(
                            "the lines of {object} `{key}` disagree on {path}: row {earlier_row} has {}, row {} has {}; every line of an {object} must give its {object} fields alike",
                            earlier.to_json(),
                            row.row_number,
                            value.to_json()
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    own.insert(path.clone(), (value.clone(), row.row_number));
                }
            }
        }
        // Every path a line does not give is one it leaves unset: lines compare as given.
        let line_key = match line.get(&format!("metadata.{LINE_MARKER}")) {
            Some(Json::String(line_key)) if !line_key.trim().is_empty() => {
                line_key.trim().to_string()
            }
            _ => {
                return Err(reject_all(
                    &rows,
                    format!(
                        "row {} of {object} `{key}` has no line key: every line needs one, unique within its {object}",
                        row.row_number
                    ),
                ))
            }
        };
        let line = Json::Object(line.into_iter().collect::<Map<String, Json>>());
        if let Some((_, earlier_row)) = lines.insert(line_key.clone(), (line, row.row_number)) {
            return Err(reject_all(
                &rows,
                format!(
                    "rows {earlier_row} and {} of {object} `{key}` have the same line key `{line_key}`: each line of an {object} needs its own",
                    row.row_number
                ),
            ));
        }
    }
    let mut fields: BTreeMap<String, FieldValue> = own
        .into_iter()
        .map(|(path, (value, _))| (path, value))
        .collect();
    let list = Json::Array(lines.into_values().map(|(line, _)| line).collect());
    fields.insert(LINES.to_string(), FieldValue::Text(list.to_string()));
    let mut folded = PreparedRecord::new(
        first.row_number,
        key,
        first.match_key.clone(),
        Payload { fields },
    );
    folded.warehouse_ack = None;
    Ok(folded)
}

/// The lines of an invoice's payload, each a payload of its own (`amount`, `metadata.ferry_line`,
/// `period.start`), in line key order.
pub(crate) fn lines_of(payload: &Payload) -> Vec<Payload> {
    let Some(FieldValue::Text(list)) = payload.get(LINES) else {
        return Vec::new();
    };
    match serde_json::from_str::<Json>(list) {
        Ok(Json::Array(lines)) => lines.iter().filter_map(Payload::from_json).collect(),
        _ => Vec::new(),
    }
}

/// The payload without its lines: the invoice's own fields.
pub(crate) fn without_lines(payload: &Payload) -> Payload {
    let mut own = payload.clone();
    own.fields.remove(LINES);
    own
}

/// The line key a line's payload carries.
pub(crate) fn line_key(line: &Payload) -> Option<&str> {
    match line.get(&format!("metadata.{LINE_MARKER}")) {
        Some(FieldValue::Text(key)) => Some(key.as_str()),
        _ => None,
    }
}

/// The params that create one line (an invoice item) on `parent`, the parent as Stripe
/// returned it: the line's own fields, what it takes from its parent, and the parent's id.
fn line_create_params(
    lines: &Lines,
    line: &Payload,
    parent: &Map<String, Json>,
) -> Map<String, Json> {
    let mut params = create_params(lines.schema, line);
    for (name, unless) in lines.inherited {
        let given_otherwise = unless.is_some_and(|other| params.contains_key(other));
        if !params.contains_key(*name) && !given_otherwise {
            if let Some(value) = parent.get(*name).filter(|value| value.is_string()) {
                params.insert(name.to_string(), value.clone());
            }
        }
    }
    params
}

/// Checks each line of a record as Stripe will receive it, with what it takes from its
/// parent's create `params`; the first line that breaks a rule says which rule.
pub(crate) fn check_lines(
    lines: &Lines,
    parent_params: &Map<String, Json>,
    payload: &Payload,
) -> Result<(), ParamError> {
    for line in lines_of(payload) {
        let mut params = line_create_params(lines, &line, parent_params);
        // The parent's id is known once it exists; any id stands in for it here.
        params.insert(
            lines.parent_param.to_string(),
            Json::String("pending".to_string()),
        );
        lines.schema.validate(&params, false)?;
    }
    Ok(())
}

/// Why a record's lines could not be brought up to date.
#[derive(Debug)]
pub(crate) enum LinesError {
    /// The parent is no longer a draft (an invoice finalized): its lines cannot change, and
    /// they differ from the model's.
    Finalized { status: String },
    /// Stripe refused or did not answer, while `doing` this.
    Stripe {
        doing: String,
        error: StripeCallError,
    },
}

/// The lines parent `id` holds that ferry made, by line key (lines someone else added carry
/// no line key: ferry leaves them alone).
async fn existing_lines(
    stripe: &StripeService,
    parent: &'static ObjectSchema,
    lines: &Lines,
    id: &str,
) -> Result<HashMap<String, Json>, LinesError> {
    let mut existing = HashMap::new();
    let mut starting_after: Option<String> = None;
    loop {
        let mut params = Map::from_iter([
            ("limit".to_string(), Json::from(100)),
            (lines.parent_param.to_string(), Json::String(id.to_string())),
        ]);
        if let Some(after) = &starting_after {
            params.insert("starting_after".to_string(), Json::String(after.clone()));
        }
        let page = stripe
            .list_page(lines.schema, &params)
            .await
            .map_err(|error| LinesError::Stripe {
                doing: format!(
                    "list the {} of {} `{id}`",
                    lines.schema.plural, parent.object
                ),
                error,
            })?;
        starting_after = page.records.last().map(|item| item.id.clone());
        for item in page.records {
            if let Some(line_key) = item.object["metadata"][lines.marker].as_str() {
                existing.insert(line_key.to_string(), item.object);
            }
        }
        if !page.has_more || starting_after.is_none() {
            break;
        }
    }
    Ok(existing)
}

/// Where a parent Stripe holds (`current`) stands against its record, once finalized.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finalized {
    /// Still a draft: everything can change.
    Draft,
    /// Finalized, and what changed (`changed`, its own fields) Stripe still takes.
    InStep,
    /// Finalized, and its lines or a field Stripe no longer changes differ from the record's:
    /// it is voided and issued again, when the sync allows it and it is not paid, else the row
    /// is reported.
    Differs { status: String },
}

/// Reads the lines of a finalized parent (one list call) to tell whether the record still
/// fits it; a draft needs no read.
pub(crate) async fn finalized_verdict(
    stripe: &StripeService,
    parent: &'static ObjectSchema,
    lines: &Lines,
    record: &PreparedRecord,
    current: &Json,
    changed: &[String],
) -> Result<Finalized, LinesError> {
    let status = current["status"].as_str().unwrap_or("draft");
    if status == "draft" {
        return Ok(Finalized::Draft);
    }
    let fixed_field_changed = changed.iter().any(|path| {
        let param = path.split('.').next().unwrap_or_default();
        param != lines.field && !lines.finalized_updatable.contains(&param)
    });
    let id = current["id"].as_str().unwrap_or_default();
    let existing = existing_lines(stripe, parent, lines, id).await?;
    let wanted = lines_of(&record.payload);
    if fixed_field_changed || !line_work(lines, &wanted, existing).is_empty() {
        return Ok(Finalized::Differs {
            status: status.to_string(),
        });
    }
    Ok(Finalized::InStep)
}

/// What a parent's lines need to match the record's: the lines to add, those to change (with
/// their changed fields and item ids) and the ids of those to delete.
struct LineWork<'r> {
    creates: Vec<(&'r Payload, &'r str)>,
    updates: Vec<(&'r Payload, &'r str, String, Vec<String>)>,
    deletes: Vec<String>,
}

impl LineWork<'_> {
    fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty()
    }
}

fn line_work<'r>(
    lines: &Lines,
    wanted: &'r [Payload],
    mut existing: HashMap<String, Json>,
) -> LineWork<'r> {
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    for line in wanted {
        let Some(line_key) = line_key(line) else {
            continue;
        };
        match existing.remove(line_key) {
            Some(item) => {
                let live = record_to_fields(lines.schema, &item);
                let mut changed = changed_fields(line, &Baseline::Live(&live), &[]);
                changed.retain(|path| held_by_record(lines.schema, path));
                if !changed.is_empty() {
                    let item_id = item["id"].as_str().unwrap_or_default().to_string();
                    updates.push((line, line_key, item_id, changed));
                }
            }
            None => creates.push((line, line_key)),
        }
    }
    let deletes = existing
        .values()
        .filter_map(|item| item["id"].as_str().map(str::to_string))
        .collect();
    LineWork {
        creates,
        updates,
        deletes,
    }
}

/// Brings `parent` (as Stripe returned it) to `record`: its lines to the record's lines, then
/// finalizes it when the sync says so (and sends it, when it is collected by `send_invoice`).
/// With `read_existing`, the lines the parent holds are read first, so that a line an
/// interrupted run added is found and kept rather than added twice, and what left the model
/// goes; a parent ferry has just created has none to read. Each line create carries an
/// idempotency key made of the run, the parent and the line key, so that a lost response is
/// replayed instead of adding another line (and a later run reads what is there first).
/// Returns the parent as Stripe last returned it.
pub(crate) async fn sync_lines(
    exec: &Execution<'_>,
    lines: &Lines,
    record: &PreparedRecord,
    parent: Json,
    read_existing: bool,
    finalize: Finalize,
    resumed_create: bool,
) -> Result<Json, LinesError> {
    let schema = exec.schema();
    let Some(parent_fields) = parent.as_object().cloned() else {
        return Ok(parent);
    };
    let id = parent_fields
        .get("id")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let status = parent_fields
        .get("status")
        .and_then(Json::as_str)
        .unwrap_or("draft")
        .to_string();
    crate::crash_point::reached("lines:start");
    let failed = |doing: String| move |error: StripeCallError| LinesError::Stripe { doing, error };
    let existing = if read_existing {
        existing_lines(exec.stripe, schema, lines, &id).await?
    } else {
        HashMap::new()
    };
    let wanted = lines_of(&record.payload);
    let work = line_work(lines, &wanted, existing);
    if status != "draft" {
        // A finalized invoice that already holds the model's lines is up to date, but one an
        // interrupted run created and finalized may still wait to be sent.
        if work.is_empty() {
            if resumed_create && finalize == Finalize::WhenCreated {
                return send_if_due(exec, parent).await;
            }
            return Ok(parent);
        }
        return Err(LinesError::Finalized { status });
    }
    let LineWork {
        creates,
        updates,
        deletes,
    } = work;
    let parent_hash = short_hash(&id, 16);
    for (line, line_key, item_id, changed) in updates {
        let body = form::encode(&update_params(lines.schema, line, &changed));
        let idempotency_key = format!(
            "ferry-{}-lu-{}-{parent_hash}-{}",
            exec.sync_uid,
            exec.run_id,
            short_hash(line_key, 16)
        );
        exec.stripe
            .update(lines.schema, &item_id, &body, &idempotency_key)
            .await
            .map_err(failed(format!("update line `{line_key}` ({item_id})")))?;
    }
    for (added, (line, line_key)) in creates.into_iter().enumerate() {
        let mut params = line_create_params(lines, line, &parent_fields);
        params.insert(lines.parent_param.to_string(), Json::String(id.clone()));
        let body = form::encode(&params);
        // Of this run: a retry replays it, and an interrupted run's lines are found by the
        // read above. A key shared across runs would replay a line deleted since (a line that
        // left the model and came back) instead of adding it again.
        let idempotency_key = format!(
            "ferry-{}-lc-{}-{parent_hash}-{}",
            exec.sync_uid,
            exec.run_id,
            short_hash(line_key, 16)
        );
        exec.stripe
            .create(lines.schema, &body, &idempotency_key)
            .await
            .map_err(failed(format!("add line `{line_key}`")))?;
        crate::crash_point::reached(&format!("lines:added:{}", added + 1));
    }
    for item_id in deletes {
        match exec.stripe.delete(lines.schema, &item_id).await {
            Ok(_) | Err(StripeCallError::Refused { status: 404, .. }) => {}
            Err(error) => return Err(failed(format!("delete line {item_id}"))(error)),
        }
    }
    let mut latest = parent;
    if finalize == Finalize::WhenCreated {
        crate::crash_point::reached("lines:finalize");
        let finalized = exec
            .stripe
            .act(
                schema,
                &id,
                "finalize",
                "",
                &step_key(exec, &id, "finalize"),
            )
            .await
            .map_err(failed(format!("finalize {} `{id}`", schema.object)))?;
        latest = send_if_due(exec, finalized.record.object).await?;
    }
    Ok(latest)
}

/// The idempotency key of a step on parent `id` (finalize, send): the same in every run, so
/// that a step an interrupted run took is answered again, not taken twice (within Stripe's
/// 24 hours; a create older than that is not resumed).
fn step_key(exec: &Execution<'_>, id: &str, step: &str) -> String {
    format!("ferry-{}-{step}-{}", exec.sync_uid, short_hash(id, 16))
}

/// Sends a finalized parent that its collection method says to send (an open `send_invoice`
/// invoice). Returns it as Stripe last returned it.
async fn send_if_due(exec: &Execution<'_>, parent: Json) -> Result<Json, LinesError> {
    if parent["collection_method"] != "send_invoice" || parent["status"] != "open" {
        return Ok(parent);
    }
    let schema = exec.schema();
    let id = parent["id"].as_str().unwrap_or_default().to_string();
    crate::crash_point::reached("lines:send");
    exec.stripe
        .act(schema, &id, "send", "", &step_key(exec, &id, "send"))
        .await
        .map(|sent| sent.record.object)
        .map_err(|error| LinesError::Stripe {
            doing: format!("send {} `{id}`", schema.object),
            error,
        })
}

/// Why the row of a finalized parent that differs from it is not sent.
pub(crate) fn finalized_reason(object: &str, key: &str, id: &str, status: &str) -> String {
    if status == "paid" {
        format!(
            "{object} `{key}` is paid in Stripe ({id}), and a paid {object} can be neither changed nor voided; its lines or amounts in the model differ. Issue a credit note in Stripe for what changed, or restore the model's lines"
        )
    } else {
        format!(
            "{object} `{key}` is {status} in Stripe ({id}), and Stripe does not change the lines or amounts of a finalized {object}; the model's differ. Let the sync issue a new one in its place, voiding this one (`--reissue-finalized`, `invoice: {{reissue_finalized: true}}`), or restore the model's lines"
        )
    }
}

/// What becomes of a record whose lines could not be brought up to date: a finalized parent
/// is reported with what to do; Stripe's refusal or silence as for any write.
pub(crate) fn settle_problem(
    exec: &Execution<'_>,
    record: &PreparedRecord,
    id: &str,
    problem: LinesError,
) -> Result<Settled, EngineError> {
    let object = exec.schema().object;
    let mut done = match problem {
        LinesError::Finalized { status } => settled(
            record.row_number,
            &record.key,
            Outcome::Rejected,
            Some(id.to_string()),
            Some(finalized_reason(object, &record.key, id, &status)),
            None,
            None,
        ),
        LinesError::Stripe { doing, error } => {
            let request_id = error.request_id().map(str::to_string);
            let outcome = match error {
                StripeCallError::Unauthorized { message, .. } => {
                    return Err(EngineError::StripeKey(message))
                }
                StripeCallError::Refused { .. } => Outcome::Rejected,
                StripeCallError::Unavailable { .. } => Outcome::Failed,
            };
            settled(
                record.row_number,
                &record.key,
                outcome,
                Some(id.to_string()),
                Some(format!("could not {doing}: {error}")),
                request_id,
                None,
            )
        }
    };
    done.row
        .as_mut()
        .expect("settled rows have a run record")
        .destination_id = Some(id.to_string());
    Ok(done)
}

/// Updates a record made of lines (an invoice): its own changed fields, then its lines, read
/// from Stripe first. A finalized invoice whose lines already match is up to date; one whose
/// lines differ is reported, since Stripe cannot change it.
pub(crate) async fn update(
    exec: &Execution<'_>,
    record: &PreparedRecord,
    destination_id: String,
    changed: &[String],
    changes: Json,
    drops_pending: Option<String>,
) -> Result<Settled, EngineError> {
    let schema = exec.schema();
    let lines = exec.object.lines().expect("called for objects with lines");
    let current = match exec.stripe.retrieve(schema, &destination_id).await {
        Ok(Some(found)) => found.object,
        Ok(None) => {
            let mut done = settled(
                record.row_number,
                &record.key,
                Outcome::Failed,
                Some(destination_id.clone()),
                Some(format!(
                    "Stripe {} {destination_id} no longer exists (deleted in Stripe?); the next run looks this key up again",
                    schema.object
                )),
                None,
                None,
            );
            done.forget = Some(record.match_key.clone());
            done.gone = Some(destination_id);
            return Ok(done);
        }
        Err(error) => return settle_error(&record.key, record.row_number, error, None),
    };
    let own_changed: Vec<String> = changed
        .iter()
        .filter(|path| *path != lines.field)
        .cloned()
        .collect();
    match finalized_verdict(exec.stripe, schema, lines, record, &current, &own_changed).await {
        Ok(Finalized::Draft | Finalized::InStep) => {}
        Ok(Finalized::Differs { status }) if exec.reissue_finalized && status != "paid" => {
            return reissue(exec, lines, record, current, changes, drops_pending).await;
        }
        Ok(Finalized::Differs { status }) => {
            return settle_problem(
                exec,
                record,
                &destination_id,
                LinesError::Finalized { status },
            )
        }
        Err(problem) => return settle_problem(exec, record, &destination_id, problem),
    }
    let own = update_params(schema, &without_lines(&record.payload), &own_changed);
    let mut latest = current;
    let mut request_id = None;
    if !own.is_empty() {
        let idempotency_key = format!(
            "ferry-{}-u-{}-{}",
            exec.sync_uid,
            exec.run_id,
            short_hash(&record.match_key, 20)
        );
        match exec
            .stripe
            .update(
                schema,
                &destination_id,
                &form::encode(&own),
                &idempotency_key,
            )
            .await
        {
            Ok(written) => {
                request_id = written.request_id;
                latest = written.record.object;
            }
            Err(error) => return settle_error(&record.key, record.row_number, error, None),
        }
    }
    // Found by its key while a create an interrupted run saved waits (`drops_pending`): this
    // is that create, resumed, and it may have been finalized but not yet sent.
    let resumed_create = drops_pending.is_some();
    let latest = match sync_lines(
        exec,
        lines,
        record,
        latest,
        true,
        exec.finalize,
        resumed_create,
    )
    .await
    {
        Ok(latest) => latest,
        Err(problem) => return settle_problem(exec, record, &destination_id, problem),
    };
    let mut done = settled(
        record.row_number,
        &record.key,
        Outcome::Updated,
        Some(destination_id.clone()),
        None,
        request_id,
        Some(changes.to_string()),
    );
    done.remember = Some(snapshot_entry(record, &destination_id));
    done.pending_resolved = drops_pending;
    done.written = vec![latest];
    Ok(done)
}

/// The metadata key on an invoice issued in place of a voided one, naming the voided one: an
/// interrupted reissue finds it by this and goes on instead of issuing a second.
pub(crate) const REISSUE_MARKER: &str = "ferry_reissues";
/// The metadata key on a voided invoice keeping the key it gave up to its reissue.
pub(crate) const REISSUED_KEY: &str = "ferry_reissued_key";

/// Voids `old` (finalized, its lines or fixed fields no longer the model's) and issues a new
/// invoice in its place. Each step is safe to repeat, and a run that stops anywhere leaves the
/// sync's state naming `old`, so the next run comes back here:
///
/// 1. `old` gives up its key (kept beside, under `ferry_reissued_key`), so that the key names
///    one invoice only, the new one, and the key index never finds two;
/// 2. `old` is voided (Stripe voids open and uncollectible invoices; a paid one never gets
///    here);
/// 3. the new invoice: found among the customer's invoices by the marker naming `old` (when
///    `old` was already void: an interrupted reissue may have made it), or created, marked;
/// 4. its lines, then finalized as the sync says, like any new invoice.
async fn reissue(
    exec: &Execution<'_>,
    lines: &Lines,
    record: &PreparedRecord,
    mut old: Json,
    changes: Json,
    drops_pending: Option<String>,
) -> Result<Settled, EngineError> {
    let schema = exec.schema();
    let old_id = old["id"].as_str().unwrap_or_default().to_string();
    let was = old["status"].as_str().unwrap_or_default().to_string();
    let step = |name: &str| {
        format!(
            "ferry-{}-{name}-{}-{}",
            exec.sync_uid,
            exec.run_id,
            short_hash(&old_id, 16)
        )
    };
    let stripe_problem = |doing: String, error: StripeCallError| {
        settle_problem(exec, record, &old_id, LinesError::Stripe { doing, error })
    };

    // 1. The key moves off the old invoice.
    if let Some(key_name) = exec.key_field.strip_prefix("metadata.") {
        if old["metadata"][key_name].is_string() {
            let body = form::encode(&Map::from_iter([(
                "metadata".to_string(),
                serde_json::json!({ key_name: "", REISSUED_KEY: record.key }),
            )]));
            match exec
                .stripe
                .update(schema, &old_id, &body, &step("unkey"))
                .await
            {
                Ok(written) => old = written.record.object,
                Err(error) => {
                    return stripe_problem(
                        format!("move the key off {} `{old_id}`", schema.object),
                        error,
                    )
                }
            }
        }
    }
    crate::crash_point::reached("reissue:unkeyed");

    // 2. Voided.
    if was == "open" || was == "uncollectible" {
        match exec
            .stripe
            .act(schema, &old_id, "void", "", &step("void"))
            .await
        {
            Ok(voided) => old = voided.record.object,
            Err(error) => {
                return stripe_problem(format!("void {} `{old_id}`", schema.object), error)
            }
        }
    }
    crate::crash_point::reached("reissue:voided");

    // 3. The new invoice.
    let earlier = if was == "void" {
        match earlier_reissue(exec, &old).await {
            Ok(found) => found,
            Err(error) => {
                return stripe_problem(
                    format!(
                        "list the {} of customer `{}`",
                        schema.plural,
                        old["customer"].as_str().unwrap_or_default()
                    ),
                    error,
                )
            }
        }
    } else {
        None
    };
    let made_earlier = earlier.is_some();
    let mut new = match earlier {
        Some(found) => found,
        None => {
            let mut params = exec.object.create_params(&record.payload);
            if let Json::Object(metadata) = params
                .entry("metadata")
                .or_insert_with(|| Json::Object(Map::new()))
            {
                metadata.insert(REISSUE_MARKER.to_string(), Json::String(old_id.clone()));
            }
            match exec
                .stripe
                .create(schema, &form::encode(&params), &step("reissue"))
                .await
            {
                Ok(written) => written.record.object,
                Err(error) => {
                    return stripe_problem(
                        format!(
                            "issue a new {} in place of voided `{old_id}`",
                            schema.object
                        ),
                        error,
                    )
                }
            }
        }
    };
    let new_id = new["id"].as_str().unwrap_or_default().to_string();
    crate::crash_point::reached("reissue:created");
    if made_earlier {
        // Made from an earlier row: its own fields follow this one.
        let live = record_to_fields(schema, &new);
        let mut changed =
            changed_fields(&without_lines(&record.payload), &Baseline::Live(&live), &[]);
        changed.retain(|path| held_by_record(schema, path));
        let own = update_params(schema, &without_lines(&record.payload), &changed);
        if !own.is_empty() {
            match exec
                .stripe
                .update(
                    schema,
                    &new_id,
                    &form::encode(&own),
                    &step("reissue-update"),
                )
                .await
            {
                Ok(written) => new = written.record.object,
                Err(error) => {
                    return stripe_problem(format!("update {} `{new_id}`", schema.object), error)
                }
            }
        }
    }

    // 4. Its lines, and finalized as the sync says.
    let latest = match sync_lines(
        exec,
        lines,
        record,
        new,
        made_earlier,
        exec.finalize,
        made_earlier,
    )
    .await
    {
        Ok(latest) => latest,
        Err(problem) => return settle_problem(exec, record, &new_id, problem),
    };
    let mut changes = changes;
    if let Json::Object(changes) = &mut changes {
        changes.insert(
            "id".into(),
            serde_json::json!({"before": old_id.as_str(), "after": new_id.as_str()}),
        );
    }
    let reason = if was == "void" {
        format!("issued `{new_id}` in place of voided `{old_id}`, whose lines Stripe cannot change")
    } else {
        format!(
            "voided `{old_id}` (it was {was}) and issued `{new_id}` in its place: Stripe does not change a finalized {}'s lines",
            schema.object
        )
    };
    let mut done = settled(
        record.row_number,
        &record.key,
        Outcome::Updated,
        Some(new_id.clone()),
        Some(reason),
        None,
        Some(changes.to_string()),
    );
    done.remember = Some(snapshot_entry(record, &new_id));
    done.pending_resolved = drops_pending;
    done.written = vec![old, latest];
    Ok(done)
}

/// The invoice an interrupted reissue of `old` made, if any: among its customer's invoices
/// (a consistent list), the one whose marker names `old` and that is not void itself.
async fn earlier_reissue(
    exec: &Execution<'_>,
    old: &Json,
) -> Result<Option<Json>, StripeCallError> {
    let old_id = old["id"].as_str().unwrap_or_default();
    let Some(customer) = old["customer"].as_str() else {
        return Ok(None);
    };
    let mut starting_after: Option<String> = None;
    loop {
        let mut params = Map::from_iter([
            ("limit".to_string(), Json::from(100)),
            ("customer".to_string(), Json::String(customer.to_string())),
        ]);
        if let Some(after) = &starting_after {
            params.insert("starting_after".to_string(), Json::String(after.clone()));
        }
        let page = exec.stripe.list_page(exec.schema(), &params).await?;
        starting_after = page.records.last().map(|invoice| invoice.id.clone());
        if let Some(found) = page.records.into_iter().find(|invoice| {
            invoice.object["metadata"][REISSUE_MARKER].as_str() == Some(old_id)
                && invoice.object["status"] != "void"
        }) {
            return Ok(Some(found.object));
        }
        if !page.has_more || starting_after.is_none() {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn row(number: u64, fields: &[(&str, FieldValue)]) -> PreparedRecord {
        PreparedRecord::new(
            number,
            "INV-1".into(),
            "INV-1".into(),
            Payload {
                fields: fields
                    .iter()
                    .map(|(path, value)| (path.to_string(), value.clone()))
                    .collect(),
            },
        )
    }

    fn text(s: &str) -> FieldValue {
        FieldValue::Text(s.into())
    }

    fn line(number: u64, line_key: &str, amount: i64, description: &str) -> PreparedRecord {
        row(
            number,
            &[
                ("customer", text("cus_1")),
                ("description", text(description)),
                ("lines.amount", FieldValue::Integer(amount)),
                (LINE_KEY_PATH, text(line_key)),
            ],
        )
    }

    fn reasons(result: Result<PreparedRecord, Vec<RejectedRow>>) -> String {
        match result {
            Ok(record) => format!("ok: {}", record.payload_json),
            Err(rows) => rows
                .iter()
                .map(|row| format!("row {}: {}", row.row_number, row.reason))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn the_lines_of_an_invoice_fold_into_one_record_in_line_key_order() {
        let folded = fold(
            vec![line(1, "b", 200, "Order 1"), line(2, "a", 100, "Order 1")],
            "invoice",
            250,
        )
        .unwrap();
        expect![[r#"{"customer":"cus_1","description":"Order 1","lines":"[{\"amount\":100,\"metadata.ferry_line\":\"a\"},{\"amount\":200,\"metadata.ferry_line\":\"b\"}]"}"#]]
            .assert_eq(&folded.payload_json);
        // The same lines in another model order are the same record.
        let again = fold(
            vec![line(7, "a", 100, "Order 1"), line(9, "b", 200, "Order 1")],
            "invoice",
            250,
        )
        .unwrap();
        assert_eq!(again.payload_hash, folded.payload_hash);
        assert_eq!(lines_of(&folded.payload).len(), 2);
        assert_eq!(line_key(&lines_of(&folded.payload)[0]), Some("a"));
        assert!(without_lines(&folded.payload).get(LINES).is_none());
    }

    #[test]
    fn an_invoice_that_cannot_be_whole_rejects_every_line() {
        expect![[r#"
            row 1: the lines of invoice `INV-1` disagree on description: row 1 has "Order 1", row 2 has "Order one"; every line of an invoice must give its invoice fields alike
            row 2: the lines of invoice `INV-1` disagree on description: row 1 has "Order 1", row 2 has "Order one"; every line of an invoice must give its invoice fields alike"#]]
        .assert_eq(&reasons(fold(
            vec![line(1, "a", 100, "Order 1"), line(2, "b", 100, "Order one")],
            "invoice",
            250,
        )));
        expect![[r#"
            row 1: rows 1 and 2 of invoice `INV-1` have the same line key `a`: each line of an invoice needs its own
            row 2: rows 1 and 2 of invoice `INV-1` have the same line key `a`: each line of an invoice needs its own"#]]
        .assert_eq(&reasons(fold(
            vec![line(1, "a", 100, "Order 1"), line(2, "a", 100, "Order 1")],
            "invoice",
            250,
        )));
        expect!["row 1: invoice `INV-1` has 2 lines; Stripe allows at most 1 on one invoice: split it (a second key) or group lines in the model\nrow 2: invoice `INV-1` has 2 lines; Stripe allows at most 1 on one invoice: split it (a second key) or group lines in the model"]
        .assert_eq(&reasons(fold(
            vec![line(1, "a", 100, "Order 1"), line(2, "b", 100, "Order 1")],
            "invoice",
            1,
        )));
        let held = rejected_line(
            &RejectedRow {
                row_number: 3,
                key: "INV-1".into(),
                reason: "amount: is `x`, which is not a whole number".into(),
            },
            "INV-1".into(),
        );
        expect!["row 1: invoice `INV-1` is held back: its line at row 3 was rejected; fix that row and the whole invoice is synced"]
            .assert_eq(&reasons(fold(vec![line(1, "a", 100, "Order 1"), held], "invoice", 250)));
        expect!["row 1: row 1 of invoice `INV-1` has no line key: every line needs one, unique within its invoice"]
            .assert_eq(&reasons(fold(
                vec![row(1, &[("lines.amount", FieldValue::Integer(5))])],
                "invoice",
                250,
            )));
    }
}
