//! Carrying out a plan: writes run concurrently under the HTTP stack's limits, and outcomes are
//! committed to the workspace in batches, each only after Stripe confirmed it.
//!
//! A run executes its plan chunk by chunk (see `run.rs`). Within a chunk, updates go first;
//! creates go under the account's create lock, after the key index was brought up to date and
//! each create looked up once more, so that two syncs into one account never both create the
//! same record. A create's idempotency key and body are saved just before it is first sent.

use crate::index::KeyIndex;
use crate::plan::{Action, PENDING_CREATE_MAX_AGE};
use crate::prepare::{PreparedRecord, WarehouseAck};
use crate::EngineError;
use ferry_core::{Outcome, Payload, RunCounts};
use ferry_destinations::stripe::encoder::{
    held_by_record, needs_current_items, pair_lists, update_params,
};
use ferry_destinations::stripe::{
    record_to_fields, StripeCallError, StripeObject, StripeService, Written,
};
use ferry_state::{
    CommitBatch, PendingCreate, RunRecordRow, SnapshotEntry, StateError, StateStore,
};
use ferry_stripe_wire::form;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Outcomes are committed at least this often, and whenever this many are waiting.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
const COMMIT_BATCH_SIZE: usize = 500;
/// After a stop is requested, requests already sent get this long to finish; then they are
/// abandoned (a silent server must not keep a stopped run alive).
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// How often, at the least, the sync's lock is checked while requests are out.
const LOCK_CHECK_EVERY: Duration = Duration::from_millis(50);
/// A write to the workspace that fails because the database is unreachable (PostgreSQL
/// restarting, say) is retried for this long, waiting twice as long each time up to the maximum.
const STATE_RETRY_FOR: Duration = Duration::from_secs(30);
const STATE_RETRY_FIRST_DELAY: Duration = Duration::from_millis(100);
const STATE_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Told about each record that reaches its outcome.
pub type ProgressFn = Arc<dyn Fn(Outcome) + Send + Sync>;

/// The error ([`EngineError::LockLost`]) of a run that lost its sync's lock (a PostgreSQL session-level advisory lock,
/// which dies with its session) and so stopped sending: another run could have taken the lock.
pub const LOCK_LOST: &str = "lost the sync's lock: the workspace database (PostgreSQL) \
     restarted or closed the lock's session during the run, so the run stopped sending to Stripe \
     (what Stripe had already confirmed is recorded); run the sync again to finish";

/// A record and what it needs.
#[derive(Debug, Clone)]
pub struct Planned {
    pub record: PreparedRecord,
    pub action: Action,
    /// An interrupted run saved a create for this key, and the record was found: the saved
    /// create is dropped once this record settles.
    pub drops_pending: bool,
}

pub(crate) struct Execution<'a> {
    pub store: &'a StateStore,
    pub stripe: &'a StripeService,
    pub object: &'static dyn StripeObject,
    pub sync_name: &'a str,
    pub sync_uid: &'a str,
    pub run_id: &'a str,
    pub progress: Option<ProgressFn>,
    pub cancel: Arc<AtomicBool>,
    /// Whether the run still holds its sync's lock (a PostgreSQL advisory lock dies with its
    /// session, so a server restart frees it). Checked before each new write and before each
    /// commit: without the lock a second run could start and interleave with this one.
    pub lock_held: &'a (dyn Fn() -> bool + Sync),
    /// How Mirror retires (a subscription cancelled at once or at period end).
    pub mirror: ferry_core::MirrorSettings,
    /// When ferry finalizes the invoices it makes.
    pub finalize: ferry_core::Finalize,
    /// Whether a finalized invoice whose lines changed is voided and issued again.
    pub reissue_finalized: bool,
    /// The Stripe field holding the sync's key (`metadata.order_id`).
    pub key_field: &'a str,
    /// Where the records' Stripe requests wait for the next commit; None when none are kept.
    pub request_log: Option<&'a crate::request_log::RequestLog>,
}

impl Execution<'_> {
    pub(crate) fn schema(&self) -> &'static ferry_stripe_wire::ObjectSchema {
        self.object.schema()
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// What became of one record, ready to commit.
pub(crate) struct Settled {
    pub(crate) outcome: Outcome,
    /// The run record; `None` for an unchanged row, which is only counted.
    pub(crate) row: Option<RunRecordRow>,
    pub(crate) remember: Option<(String, SnapshotEntry)>,
    pub(crate) forget: Option<String>,
    pub(crate) pending_resolved: Option<String>,
    /// The records as Stripe returned them after a write, for the key index.
    pub(crate) written: Vec<serde_json::Value>,
    /// A record Stripe says no longer exists, to drop from the key index.
    pub(crate) gone: Option<String>,
    /// The row's warehouse key and hash (change detection in the warehouse), acknowledged
    /// there once the outcome is committed, if the record is in step with Stripe.
    pub(crate) warehouse_ack: Option<WarehouseAck>,
}

/// How a chunk's execution ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Cancelled,
}

/// Runs `work` to completion under the run's limits: concurrently, stopping sends on a stop
/// request or a lost lock.
pub(crate) async fn dispatch(
    exec: &Execution<'_>,
    committer: &mut Committer<'_, '_>,
    work: Vec<Planned>,
) -> Result<Ending, EngineError> {
    let max_in_flight = exec.stripe.http().policy().max_in_flight * 2;
    let mut queue = work.into_iter();
    let mut in_flight = FuturesUnordered::new();
    // Rows whose request is out, so that rows abandoned by a stop are accounted for.
    let mut in_flight_rows: HashMap<u64, String> = HashMap::new();
    let mut cancelled_at: Option<Instant> = None;
    let mut lock_lost = false;
    let mut fatal: Option<EngineError> = None;
    // One timer for the whole dispatch, not one per answer.
    let lock_check = tokio::time::sleep(LOCK_CHECK_EVERY);
    tokio::pin!(lock_check);
    loop {
        // Without its lock the run stops at once, even while stopping for a cancellation: a
        // second run may hold the lock by now. The futures in `in_flight` are dropped unpolled:
        // most of them are still waiting for the rate limiter or a connection, and polling them
        // again would send new writes. A create among them keeps its saved idempotency key, so
        // the next run looks the key up and replays it if nothing is found.
        if committer.lock_lost() {
            lock_lost = true;
            tracing::warn!(
                abandoned = in_flight.len(),
                "Lost the sync's lock (the workspace database closed its session): stopped \
                 sending to Stripe; committing what Stripe acknowledged."
            );
            break;
        }
        committer.flush_if_due().await?;
        if cancelled_at.is_none() && exec.cancelled() {
            cancelled_at = Some(Instant::now());
            tracing::info!(
                in_flight = in_flight.len(),
                "Stop requested: giving the requests already sent {}s to finish.",
                CANCEL_GRACE.as_secs()
            );
        }
        if cancelled_at.is_none() {
            while in_flight.len() < max_in_flight {
                // The lock is checked before every new write, not only once per round.
                if committer.lock_lost() {
                    break;
                }
                let Some(next) = queue.next() else { break };
                match immediate_outcome(exec, &next) {
                    Some(mut done) => {
                        done.warehouse_ack = next.record.warehouse_ack;
                        committer.push(done).await?
                    }
                    None => {
                        let row_number = next.record.row_number;
                        let ack = next.record.warehouse_ack.clone();
                        in_flight_rows.insert(row_number, next.record.key.clone());
                        in_flight.push(crate::request_log::for_row(row_number, async move {
                            let done = execute_one(exec, next).await.map(|mut done| {
                                done.warehouse_ack = ack;
                                done
                            });
                            (row_number, done)
                        }));
                    }
                }
            }
            if committer.lock_lost() {
                continue;
            }
        }
        if in_flight.is_empty() {
            break;
        }
        if cancelled_at.is_some_and(|at| at.elapsed() >= CANCEL_GRACE) {
            break;
        }
        // Woken at least every LOCK_CHECK_EVERY, so a lost lock stops the writes within that.
        let next = tokio::select! {
            next = in_flight.next() => next,
            _ = &mut lock_check => {
                lock_check.as_mut().reset(tokio::time::Instant::now() + LOCK_CHECK_EVERY);
                continue;
            }
        };
        match next {
            Some((row_number, Ok(done))) => {
                in_flight_rows.remove(&row_number);
                committer.push(done).await?;
            }
            Some((_, Err(error))) => {
                fatal = Some(error);
                break;
            }
            None => break,
        }
    }
    let stopped = cancelled_at.is_some() || lock_lost || fatal.is_some();
    if stopped {
        // Requests already out may or may not have reached Stripe: their rows fail, and the
        // next run finds out (creates look their key up first). Rows never sent are only
        // counted as not attempted.
        drop(in_flight);
        let why = match &fatal {
            Some(error) => format!("no answer before the run stopped: {error}"),
            None if lock_lost => format!("no answer before the run stopped: {LOCK_LOST}"),
            None => "no answer before the run was stopped; the next run picks it up".to_string(),
        };
        let mut abandoned: Vec<(u64, String)> = in_flight_rows.into_iter().collect();
        abandoned.sort();
        for (row_number, key) in abandoned {
            committer
                .push(settled(
                    row_number,
                    &key,
                    Outcome::Failed,
                    None,
                    Some(why.clone()),
                    None,
                    None,
                ))
                .await?;
        }
        committer.not_attempted(queue.len());
    }
    // Whatever Stripe acknowledged is committed even without the lock: a commit only records
    // writes Stripe confirmed, and forgetting them would make the next run repeat them.
    committer.flush().await?;
    if let Some(error) = fatal {
        return Err(error);
    }
    if lock_lost {
        return Err(EngineError::LockLost);
    }
    Ok(if cancelled_at.is_some() {
        Ending::Cancelled
    } else {
        Ending::Completed
    })
}

/// The outcome of a record that needs no request; `None` for one that does.
fn immediate_outcome(exec: &Execution<'_>, planned: &Planned) -> Option<Settled> {
    let record = &planned.record;
    let settle = |outcome, destination_id: Option<String>, reason: Option<String>| {
        settled(
            record.row_number,
            &record.key,
            outcome,
            destination_id,
            reason,
            None,
            None,
        )
    };
    let mut done = match &planned.action {
        Action::Unchanged {
            destination_id,
            remember,
        } => {
            let mut done = unchanged();
            if *remember {
                done.remember = Some(snapshot_entry(record, destination_id));
            }
            done
        }
        Action::NotFound => settle(
            Outcome::NotFound,
            None,
            Some(format!(
                "no Stripe {} has this key (Update Only does not create)",
                exec.schema().object
            )),
        ),
        Action::Reject { reason } => settle(Outcome::Rejected, None, Some(reason.clone())),
        Action::Fail { reason } => settle(Outcome::Failed, None, Some(reason.clone())),
        Action::Update { .. }
        | Action::Create
        | Action::ReplayCreate { .. }
        | Action::Replace { .. }
        | Action::Retire { .. } => return None,
    };
    if planned.drops_pending && done.outcome == Outcome::Unchanged {
        done.pending_resolved = Some(record.match_key.clone());
    }
    Some(done)
}

/// An unchanged row: counted, not recorded.
pub(crate) fn unchanged() -> Settled {
    Settled {
        outcome: Outcome::Unchanged,
        row: None,
        remember: None,
        forget: None,
        pending_resolved: None,
        written: Vec::new(),
        gone: None,
        warehouse_ack: None,
    }
}

async fn execute_one(exec: &Execution<'_>, planned: Planned) -> Result<Settled, EngineError> {
    let drops_pending = planned
        .drops_pending
        .then(|| planned.record.match_key.clone());
    let record = planned.record;
    match planned.action {
        Action::Update {
            destination_id,
            changed,
            changes,
        } if exec.object.lines().is_some() => {
            crate::lines::update(
                exec,
                &record,
                destination_id,
                &changed,
                changes,
                drops_pending,
            )
            .await
        }
        Action::Update {
            destination_id,
            changed,
            changes,
        } => {
            let sent =
                match update_body(exec, &destination_id, &record.payload, &changed, None).await {
                    Ok(Some(body)) => {
                        let idempotency_key =
                            update_idempotency_key(exec.sync_uid, exec.run_id, &record.match_key);
                        exec.stripe
                            .update(exec.schema(), &destination_id, &body, &idempotency_key)
                            .await
                    }
                    Ok(None) => Err(StripeCallError::Refused {
                        status: 404,
                        code: Some("resource_missing".to_string()),
                        message: format!("No such {}: '{destination_id}'", exec.schema().object),
                        param: None,
                        request_id: None,
                    }),
                    Err(error) => Err(error),
                };
            match sent {
                Ok(written) => {
                    let mut done = settled(
                        record.row_number,
                        &record.key,
                        Outcome::Updated,
                        Some(written.record.id.clone()),
                        None,
                        written.request_id.clone(),
                        Some(changes.to_string()),
                    );
                    done.remember = Some(snapshot_entry(&record, &written.record.id));
                    done.pending_resolved = drops_pending;
                    done.written = vec![written.record.object];
                    Ok(done)
                }
                Err(StripeCallError::Refused {
                    status: 404,
                    request_id,
                    ..
                }) => {
                    let mut done = settled(
                        record.row_number,
                        &record.key,
                        Outcome::Failed,
                        Some(destination_id.clone()),
                        Some(format!(
                            "Stripe {} {destination_id} no longer exists (deleted in Stripe?); the next run looks this key up again",
                            exec.schema().object
                        )),
                        request_id,
                        None,
                    );
                    done.forget = Some(record.match_key.clone());
                    done.gone = Some(destination_id);
                    Ok(done)
                }
                Err(error) => settle_error(&record.key, record.row_number, error, None),
            }
        }
        Action::ReplayCreate {
            pending,
            from_earlier_run,
        } => {
            // Stripe keeps an idempotency key for 24 hours; past that a replay could create a
            // second record. Such a row waits for the next run, which looks it up first.
            if chrono::Utc::now() - pending.created_at > PENDING_CREATE_MAX_AGE {
                return Ok(settled(
                    record.row_number,
                    &record.key,
                    Outcome::Failed,
                    None,
                    Some("a create saved by an interrupted run is too old to replay safely; the next run looks this key up before creating".into()),
                    None,
                    None,
                ));
            }
            let result = exec
                .stripe
                .create(
                    exec.schema(),
                    &pending.request_body,
                    &pending.idempotency_key,
                )
                .await;
            match result {
                // A create an interrupted run saved: its body may be older than the row, and
                // when Stripe replays it, the lookup before found no record with the key, so
                // the record was either deleted since or still being created during the lookup.
                // The record as Stripe holds it now says which, and what to bring up to date.
                Ok(written) if from_earlier_run => {
                    match exec
                        .stripe
                        .retrieve(exec.schema(), &written.record.id)
                        .await
                    {
                        Ok(Some(live)) => {
                            let written = Written {
                                record: live,
                                ..written
                            };
                            finish_create(exec, &record, &pending, written, true).await
                        }
                        Ok(None) => create_anew(exec, &record).await,
                        Err(error) => settle_error(&record.key, record.row_number, error, None),
                    }
                }
                // The body was made from this very row in this run: nothing to compare.
                Ok(written) => finish_create(exec, &record, &pending, written, false).await,
                Err(error) => {
                    settle_error(&record.key, record.row_number, error, Some(&pending.key))
                }
            }
        }
        Action::Replace {
            old_id,
            changes,
            reason,
            pending,
        } => {
            let job = crate::replace::Replacing {
                old_id,
                changes,
                reason,
                earlier: pending,
            };
            crate::replace::replace(exec, &record, job).await
        }
        Action::Retire { destination_id, .. } => {
            crate::mirror::retire(exec, &record, &destination_id).await
        }
        Action::Create => {
            unreachable!("creates become ReplayCreate once their pending entry is saved")
        }
        other => Ok(immediate_outcome(
            exec,
            &Planned {
                record,
                action: other,
                drops_pending: false,
            },
        )
        .expect("only writes need a request")),
    }
}

pub(crate) fn new_pending_create(
    exec: &Execution<'_>,
    record: &PreparedRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> PendingCreate {
    let body = form::encode(&exec.object.create_params(&record.payload));
    pending_create_of(exec, record, body, now)
}

/// The create of `record` with this body, under its idempotency key.
pub(crate) fn pending_create_of(
    exec: &Execution<'_>,
    record: &PreparedRecord,
    body: String,
    now: chrono::DateTime<chrono::Utc>,
) -> PendingCreate {
    PendingCreate {
        key: record.match_key.clone(),
        idempotency_key: create_idempotency_key(exec.sync_uid, &record.match_key, &body, now),
        request_body: body,
        created_at: now,
    }
}

/// Saves one create before it is first sent.
///
/// Called from an in-flight request, which the run leaves unpolled while it commits outcomes
/// through the same workspace session: the save runs in a task of its own, so that it never
/// holds the session while unpolled (the commit would wait for it forever).
pub(crate) async fn save_pending_create(
    exec: &Execution<'_>,
    pending: &PendingCreate,
) -> Result<(), EngineError> {
    let store = exec.store.clone();
    let sync_name = exec.sync_name.to_string();
    let object = exec.schema().object;
    let pending = pending.clone();
    in_own_task(async move {
        retry_state_write("saving a pending create", || {
            store.save_pending_creates(&sync_name, object, std::slice::from_ref(&pending))
        })
        .await
    })
    .await?;
    Ok(())
}

/// Runs `work` in a task of its own and waits for it: the work goes on while its caller is
/// left unpolled. A panic in it is the caller's.
pub(crate) async fn in_own_task<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// The record an interrupted run created was deleted in Stripe since: create it again, under a
/// new idempotency key saved first (the old key would only replay the deleted record).
async fn create_anew(
    exec: &Execution<'_>,
    record: &PreparedRecord,
) -> Result<Settled, EngineError> {
    let fresh = new_pending_create(exec, record, chrono::Utc::now());
    save_pending_create(exec, &fresh).await?;
    match exec
        .stripe
        .create(exec.schema(), &fresh.request_body, &fresh.idempotency_key)
        .await
    {
        Ok(written) => finish_create(exec, record, &fresh, written, false).await,
        Err(error) => settle_error(&record.key, record.row_number, error, Some(&fresh.key)),
    }
}

/// After a create (or its replay) returned a record: with `compare` (the body came from an
/// earlier run, and `written.record` is the whole record), bring it up to date if the row
/// changed since; then remember it.
async fn finish_create(
    exec: &Execution<'_>,
    record: &PreparedRecord,
    pending: &PendingCreate,
    written: Written,
    compare: bool,
) -> Result<Settled, EngineError> {
    let created = written.record;
    let changed = if compare {
        let live = record_to_fields(exec.schema(), &created.object);
        let mut changed =
            ferry_core::changed_fields(&record.payload, &ferry_core::Baseline::Live(&live), &[]);
        changed.retain(|path| held_by_record(exec.schema(), path));
        // Lines are compared and brought up to date by `lines::sync_lines`, below.
        if let Some(lines) = exec.object.lines() {
            changed.retain(|path| path != lines.field);
        }
        changed
    } else {
        Vec::new()
    };
    let changes = created_changes(&record.payload);
    if !changed.is_empty() && !(exec.lock_held)() {
        // The follow-up update is a new write, and the lock is gone: remember the record with
        // an empty payload, so the next run sends every field to it (see below).
        let mut done = settled(
            record.row_number,
            &record.key,
            Outcome::Failed,
            Some(created.id.clone()),
            Some(format!(
                "the {} exists but was not brought up to date: {LOCK_LOST}",
                exec.schema().object
            )),
            written.request_id,
            None,
        );
        done.remember = Some(id_only_snapshot_entry(&record.match_key, &created.id));
        done.pending_resolved = Some(pending.key.clone());
        done.written = vec![created.object];
        return Ok(done);
    }
    let mut request_id = written.request_id;
    let mut latest = created.object.clone();
    if !changed.is_empty() {
        let body = update_body(
            exec,
            &created.id,
            &record.payload,
            &changed,
            Some(&created.object),
        )
        .await
        .map(|body| body.unwrap_or_default());
        let idempotency_key = update_idempotency_key(exec.sync_uid, exec.run_id, &record.match_key);
        let sent = match body {
            Ok(body) => {
                exec.stripe
                    .update(exec.schema(), &created.id, &body, &idempotency_key)
                    .await
            }
            Err(error) => Err(error),
        };
        match sent {
            Ok(updated) => {
                request_id = updated.request_id;
                latest = updated.record.object;
            }
            Err(error) => {
                // The record exists: remember its id with an empty payload, so the next run
                // sends every field to it instead of looking it up or creating another.
                let mut done =
                    settle_error(&record.key, record.row_number, error, Some(&pending.key))?;
                if let Some(row) = &mut done.row {
                    row.destination_id = Some(created.id.clone());
                }
                done.remember = Some(id_only_snapshot_entry(&record.match_key, &created.id));
                done.written = vec![created.object];
                return Ok(done);
            }
        }
    }
    if let Some(lines) = exec.object.lines() {
        // A record replayed from an interrupted run may hold some of its lines already.
        match crate::lines::sync_lines(exec, lines, record, latest, compare, exec.finalize, compare)
            .await
        {
            Ok(parent) => latest = parent,
            Err(problem) => {
                // The record exists: remembered with an empty payload, the next run brings it
                // and its lines up to date instead of creating another.
                let mut done = crate::lines::settle_problem(exec, record, &created.id, problem)?;
                done.pending_resolved = Some(pending.key.clone());
                done.remember = Some(id_only_snapshot_entry(&record.match_key, &created.id));
                done.written = vec![created.object];
                return Ok(done);
            }
        }
    }
    let mut done = settled(
        record.row_number,
        &record.key,
        Outcome::Created,
        Some(created.id.clone()),
        None,
        request_id,
        Some(changes),
    );
    done.remember = Some(snapshot_entry(record, &created.id));
    done.pending_resolved = Some(pending.key.clone());
    done.written = vec![latest];
    Ok(done)
}

/// The body of an update of the `changed` fields. A list Stripe changes item by item (a
/// subscription's `items`) is paired with the items the record holds: from `current` when the
/// caller has the record, else read from Stripe first (one more request, only when such a list
/// changed). `None` when the record no longer exists.
async fn update_body(
    exec: &Execution<'_>,
    destination_id: &str,
    payload: &Payload,
    changed: &[String],
    current: Option<&serde_json::Value>,
) -> Result<Option<String>, StripeCallError> {
    let schema = exec.schema();
    let mut params = update_params(schema, payload, changed);
    // Lines (an invoice's items) are records of their own: see `lines::sync_lines`.
    if let Some(lines) = exec.object.lines() {
        params.remove(lines.field);
    }
    if needs_current_items(schema, &params) {
        let read;
        let record = match current {
            Some(record) => record,
            None => match exec.stripe.retrieve(schema, destination_id).await? {
                Some(found) => {
                    read = found.object;
                    &read
                }
                None => return Ok(None),
            },
        };
        pair_lists(schema, &mut params, record);
    }
    Ok(Some(form::encode(&params)))
}

pub(crate) fn settle_error(
    key: &str,
    row_number: u64,
    error: StripeCallError,
    pending_key: Option<&str>,
) -> Result<Settled, EngineError> {
    match error {
        StripeCallError::Unauthorized { message, .. } => Err(EngineError::StripeKey(message)),
        // A key that is Stripe's own id (a product's) was taken after the index was last
        // refreshed: the record exists, so the next run's refresh finds it and updates it.
        StripeCallError::Refused {
            ref code,
            ref request_id,
            ..
        } if code.as_deref() == Some("resource_already_exists") => {
            let mut done = settled(
                row_number,
                key,
                Outcome::Failed,
                None,
                Some(format!(
                    "{error}; it was made in Stripe during this run, so the next run matches and updates it"
                )),
                request_id.clone(),
                None,
            );
            done.pending_resolved = pending_key.map(str::to_string);
            Ok(done)
        }
        StripeCallError::Refused { ref request_id, .. } => {
            let mut done = settled(
                row_number,
                key,
                Outcome::Rejected,
                None,
                Some(error.to_string()),
                request_id.clone(),
                None,
            );
            // Stripe stored this refusal under the key; a fixed row needs a new key.
            done.pending_resolved = pending_key.map(str::to_string);
            Ok(done)
        }
        // The pending create stays: the next run looks the key up, then replays it.
        StripeCallError::Unavailable { .. } => Ok(settled(
            row_number,
            key,
            Outcome::Failed,
            None,
            Some(error.to_string()),
            None,
            None,
        )),
    }
}

/// A created record's changes, `{"name": {"before": null, "after": "Ada"}, …}`, written as
/// text directly: one string per record instead of a JSON tree built, copied and printed.
fn created_changes(payload: &Payload) -> String {
    let mut text = Vec::with_capacity(64 * payload.fields.len());
    text.push(b'{');
    for (path, value) in &payload.fields {
        if *value == ferry_core::FieldValue::Clear {
            continue;
        }
        if text.len() > 1 {
            text.push(b',');
        }
        serde_json::to_writer(&mut text, path).expect("a field path serializes");
        text.extend_from_slice(br#":{"before":null,"after":"#);
        serde_json::to_writer(&mut text, value).expect("a field value serializes");
        text.push(b'}');
    }
    text.push(b'}');
    String::from_utf8(text).expect("JSON is UTF-8")
}

pub(crate) fn settled(
    row_number: u64,
    key: &str,
    outcome: Outcome,
    destination_id: Option<String>,
    reason: Option<String>,
    request_id: Option<String>,
    changes: Option<String>,
) -> Settled {
    Settled {
        outcome,
        row: Some(RunRecordRow {
            row_number,
            key: key.to_string(),
            outcome,
            destination_id,
            reason,
            request_id,
            changes,
        }),
        remember: None,
        forget: None,
        pending_resolved: None,
        written: Vec::new(),
        gone: None,
        warehouse_ack: None,
    }
}

/// The snapshot entry of a record Stripe confirmed: what was written, to compare the next
/// run's row with.
pub(crate) fn snapshot_entry(
    record: &PreparedRecord,
    destination_id: &str,
) -> (String, SnapshotEntry) {
    (
        record.match_key.clone(),
        SnapshotEntry {
            destination_id: destination_id.to_string(),
            payload_hash: record.payload_hash.clone(),
            payload: record.payload_json.clone(),
            updated_at: chrono::Utc::now(),
        },
    )
}

/// A snapshot entry that remembers the record's id with an empty payload: the next run sends
/// every field to it instead of looking it up or creating another.
pub(crate) fn id_only_snapshot_entry(
    match_key: &str,
    destination_id: &str,
) -> (String, SnapshotEntry) {
    let empty = Payload::default();
    (
        match_key.to_string(),
        SnapshotEntry {
            destination_id: destination_id.to_string(),
            payload_hash: empty.hash(),
            payload: empty.to_json().to_string(),
            updated_at: chrono::Utc::now(),
        },
    )
}

/// Derived from the sync, the record key, the body and the moment the create was planned, and
/// saved with it: every attempt of that create, retries and replays after a crash, carries this
/// key. The moment keeps a later, separate create of the same body (after the record was
/// deleted in Stripe, say) from getting the old answer replayed.
pub fn create_idempotency_key(
    sync_uid: &str,
    match_key: &str,
    body: &str,
    planned_at: chrono::DateTime<chrono::Utc>,
) -> String {
    format!(
        "ferry-{sync_uid}-c-{}-{}-{}",
        short_hash(match_key, 20),
        short_hash(body, 12),
        planned_at.timestamp_micros()
    )
}

fn update_idempotency_key(sync_uid: &str, run_id: &str, match_key: &str) -> String {
    format!("ferry-{sync_uid}-u-{run_id}-{}", short_hash(match_key, 20))
}

pub(crate) fn short_hash(text: &str, hex_chars: usize) -> String {
    let mut digest = ferry_core::payload::sha256_hex(text.as_bytes());
    digest.truncate(hex_chars);
    digest
}

/// Collects outcomes and commits them in batches: run records, snapshot and pending creates
/// in one transaction, so the workspace never says "synced" for a write Stripe did not confirm.
pub(crate) struct Committer<'a, 'b> {
    exec: &'a Execution<'b>,
    counts: &'a mut RunCounts,
    batch: CommitBatch,
    last_commit: Instant,
    /// Records created, and updated, since the key index last heard of them.
    created: Vec<serde_json::Value>,
    written: Vec<serde_json::Value>,
    gone: Vec<String>,
    /// Latched: once the lock is found lost it stays lost.
    lock_lost: bool,
    /// Change detection in the warehouse: where acknowledged rows are written, and those
    /// waiting for the next commit.
    acknowledger: Option<ferry_source::warehouse_diff::Acknowledger>,
    acks: Vec<(String, String)>,
}

impl<'a, 'b> Committer<'a, 'b> {
    pub(crate) fn new(exec: &'a Execution<'b>, counts: &'a mut RunCounts) -> Self {
        Committer {
            exec,
            counts,
            batch: CommitBatch::default(),
            last_commit: Instant::now(),
            created: Vec::new(),
            written: Vec::new(),
            gone: Vec::new(),
            lock_lost: false,
            acknowledger: None,
            acks: Vec::new(),
        }
    }

    /// Acknowledges rows in the warehouse after each commit (change detection there).
    pub(crate) fn acknowledge_in(
        &mut self,
        acknowledger: ferry_source::warehouse_diff::Acknowledger,
    ) {
        self.acknowledger = Some(acknowledger);
    }

    /// Rows the warehouse found unchanged: counted only.
    pub(crate) fn unchanged_in_warehouse(&mut self, rows: u64) {
        self.counts.unchanged += rows;
    }

    pub(crate) fn counts(&self) -> &RunCounts {
        self.counts
    }

    /// Whether the sync's lock is gone (checked now, remembered once true).
    pub(crate) fn lock_lost(&mut self) -> bool {
        if !self.lock_lost && !(self.exec.lock_held)() {
            self.lock_lost = true;
        }
        self.lock_lost
    }

    pub(crate) fn not_attempted(&mut self, rows: usize) {
        self.counts.not_attempted += rows as u64;
    }

    pub(crate) async fn push(&mut self, done: Settled) -> Result<(), EngineError> {
        self.counts.add(done.outcome);
        // Only a record in step with Stripe is acknowledged; the others travel again.
        if let Some(ack) = done.warehouse_ack {
            if matches!(
                done.outcome,
                Outcome::Created | Outcome::Updated | Outcome::Unchanged
            ) && self.acknowledger.is_some()
            {
                self.acks.push((ack.key, ack.hash));
            }
        }
        if let Some(progress) = &self.exec.progress {
            progress(done.outcome);
        }
        let has_state = done.row.is_some()
            || done.remember.is_some()
            || done.forget.is_some()
            || done.pending_resolved.is_some();
        self.batch.records.extend(done.row);
        self.batch.snapshot_upserts.extend(done.remember);
        self.batch.snapshot_deletes.extend(done.forget);
        self.batch.pending_deletes.extend(done.pending_resolved);
        if done.outcome == Outcome::Created {
            self.created.extend(done.written);
        } else {
            self.written.extend(done.written);
        }
        self.gone.extend(done.gone);
        let waiting =
            self.batch.records.len() + self.batch.snapshot_upserts.len() + self.acks.len();
        if has_state && waiting >= COMMIT_BATCH_SIZE {
            self.flush().await?;
        }
        Ok(())
    }

    pub(crate) async fn flush_if_due(&mut self) -> Result<(), EngineError> {
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.flush().await?;
        }
        Ok(())
    }

    /// Drops the records written without telling the index (it was never opened this run).
    pub(crate) fn forget_written(&mut self) {
        self.created.clear();
        self.written.clear();
        self.gone.clear();
    }

    /// Tells the key index what was written and what is gone since it last heard.
    pub(crate) async fn remember_in_index(
        &mut self,
        index: &KeyIndex<'_>,
    ) -> Result<(), EngineError> {
        let created = std::mem::take(&mut self.created);
        index
            .remember(&created.iter().collect::<Vec<_>>(), true)
            .await?;
        let written = std::mem::take(&mut self.written);
        index
            .remember(&written.iter().collect::<Vec<_>>(), false)
            .await?;
        for id in std::mem::take(&mut self.gone) {
            index.forget(&id).await?;
        }
        Ok(())
    }

    /// Commits the waiting outcomes. The lock is checked first so that the execution stops
    /// sending once it is lost, but the batch is committed either way: it only holds what
    /// Stripe already acknowledged (or rows that got no write), and forgetting it would make
    /// the next run repeat those writes.
    pub(crate) async fn flush(&mut self) -> Result<(), EngineError> {
        self.last_commit = Instant::now();
        if let Some(log) = self.exec.request_log {
            self.batch.exchanges.extend(log.drain());
        }
        let empty = self.batch.records.is_empty()
            && self.batch.exchanges.is_empty()
            && self.batch.snapshot_upserts.is_empty()
            && self.batch.snapshot_deletes.is_empty()
            && self.batch.pending_deletes.is_empty();
        self.lock_lost();
        self.counts.requests = self.exec.stripe.http().requests_sent();
        self.batch.counts = *self.counts;
        let exec = self.exec;
        if empty {
            // Only counts moved (unchanged rows): keep the run's counts and heartbeat current.
            let counts = *self.counts;
            retry_state_write("saving the run's progress", || {
                exec.store.update_run_counts(exec.run_id, &counts)
            })
            .await?;
        } else {
            let batch = std::mem::take(&mut self.batch);
            retry_state_write("committing outcomes", || {
                exec.store
                    .commit_batch(exec.sync_name, exec.schema().object, exec.run_id, &batch)
            })
            .await?;
        }
        self.acknowledge_in_warehouse().await?;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Writes the acknowledgements of what was just committed to the warehouse. Only after the
    /// workspace commit: a crash in between loses acknowledgements (those rows travel again
    /// and are found unchanged), never claims one for a write ferry did not record.
    async fn acknowledge_in_warehouse(&mut self) -> Result<(), EngineError> {
        let Some(acknowledger) = self.acknowledger.as_mut() else {
            return Ok(());
        };
        if self.acks.is_empty() {
            return Ok(());
        }
        let acks = std::mem::take(&mut self.acks);
        acknowledger.acknowledge(&acks).await.map_err(|error| {
            EngineError::ChangeDetection(format!(
                "{error}. What Stripe answered is saved in ferry's workspace; the rows not \
                 acknowledged in the warehouse travel again next run and are found unchanged"
            ))
        })
    }
}

/// Runs a write to the workspace, and runs it again, with growing pauses for up to
/// [`STATE_RETRY_FOR`], while it fails because the database cannot be reached (PostgreSQL
/// restarting or still starting up). Every write the engine retries is one statement or one
/// transaction, so a failed attempt landed whole or not at all; one that landed although its
/// answer was lost makes the retry fail (on the run records' primary key) rather than write
/// twice. Other errors are returned at once.
pub(crate) async fn retry_state_write<T, F, Fut>(doing: &str, mut write: F) -> Result<T, StateError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StateError>>,
{
    let started = Instant::now();
    let mut delay = STATE_RETRY_FIRST_DELAY;
    loop {
        match write().await {
            Err(error) if is_unreachable(&error) && started.elapsed() < STATE_RETRY_FOR => {
                let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                if delay == STATE_RETRY_FIRST_DELAY {
                    tracing::warn!(
                        %error,
                        "The workspace database is unreachable while {doing}; trying again for \
                         up to {}s.",
                        STATE_RETRY_FOR.as_secs()
                    );
                } else {
                    tracing::info!(%error, retry_in_ms, "Still unreachable while {doing}.");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(STATE_RETRY_MAX_DELAY);
            }
            other => return other,
        }
    }
}

/// Whether a state store error means "the database is not reachable right now".
pub(crate) fn is_unreachable(error: &StateError) -> bool {
    error.is_unreachable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::FieldValue;

    /// A created record's changes read as the plan describes a create: every field set, from
    /// nothing (the run log and the preview must agree).
    #[test]
    fn created_changes_match_the_plans_description_of_a_create() {
        let payload = Payload {
            fields: [
                ("email", FieldValue::Text("ada@example.com".into())),
                (
                    "name",
                    FieldValue::Text("Ada \"Countess\" Lovelace\n\u{1F600}".into()),
                ),
                ("phone", FieldValue::Clear),
                ("metadata.plan", FieldValue::Text("pro".into())),
            ]
            .into_iter()
            .map(|(path, value)| (path.to_string(), value))
            .collect(),
        };
        let described = crate::plan::describe_create(&payload);
        assert_eq!(created_changes(&payload), described.to_string());
    }

    /// Stripe refuses a create whose own id is taken: the row fails (the next run matches the
    /// record), and the idempotency key that stored the refusal is dropped.
    #[test]
    fn a_taken_id_fails_the_row_for_the_next_run_to_match() {
        let refused = |code: &str| StripeCallError::Refused {
            status: 400,
            code: Some(code.to_string()),
            message: "Product already exists.".into(),
            param: Some("id".into()),
            request_id: Some("req_1".into()),
        };
        let taken =
            settle_error("gold", 3, refused("resource_already_exists"), Some("pk")).unwrap();
        assert_eq!(taken.outcome, Outcome::Failed);
        assert_eq!(taken.pending_resolved.as_deref(), Some("pk"));
        expect_test::expect![[r#"Stripe refused the request: Product already exists. (param id) [req_1]; it was made in Stripe during this run, so the next run matches and updates it"#]]
            .assert_eq(taken.row.unwrap().reason.as_deref().unwrap());
        let invalid =
            settle_error("gold", 3, refused("parameter_invalid_empty"), Some("pk")).unwrap();
        assert_eq!(invalid.outcome, Outcome::Rejected);
    }
}
