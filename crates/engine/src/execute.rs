//! Carrying out a plan: writes run concurrently under the HTTP stack's limits, and outcomes are
//! committed to the workspace in batches, each only after Stripe confirmed it.

use crate::plan::{Action, PlannedRecord};
use crate::prepare::RejectedRow;
use crate::EngineError;
use ferry_core::{Outcome, Payload, RunCounts};
use ferry_destinations::stripe::encoder::{create_params, customer_to_fields, update_params};
use ferry_destinations::stripe::{Customer, StripeCallError, StripeService};
use ferry_state::{
    CommitBatch, PendingCreate, RunRecordRow, SnapshotEntry, StateError, StateStore,
};
use ferry_stripe_wire::form;
use futures::stream::{FuturesUnordered, StreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Outcomes are committed at least this often, and whenever this many are waiting.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
const COMMIT_BATCH_SIZE: usize = 500;
/// After a stop is requested, requests already sent get this long to finish.
const CANCEL_GRACE: Duration = Duration::from_secs(15);
/// How often, at the least, the sync's lock is checked while requests are out.
const LOCK_CHECK_EVERY: Duration = Duration::from_millis(50);
/// A write to the workspace that fails because the database is unreachable (PostgreSQL
/// restarting, say) is retried for this long, waiting twice as long each time up to the maximum.
const STATE_RETRY_FOR: Duration = Duration::from_secs(30);
const STATE_RETRY_FIRST_DELAY: Duration = Duration::from_millis(100);
const STATE_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Told about each record that reaches its outcome.
pub type ProgressFn = Arc<dyn Fn(Outcome) + Send + Sync>;

pub struct Execution<'a> {
    pub store: &'a StateStore,
    pub stripe: &'a StripeService,
    pub sync_name: &'a str,
    pub sync_uid: &'a str,
    pub run_id: &'a str,
    pub progress: Option<ProgressFn>,
    pub cancel: Arc<AtomicBool>,
    /// Whether the run still holds its sync's lock (a PostgreSQL advisory lock dies with its
    /// session, so a server restart frees it). Checked before each new write and before each
    /// commit: without the lock a second run could start and interleave with this one.
    pub lock_held: &'a (dyn Fn() -> bool + Sync),
}

/// What became of one record, ready to commit.
struct Settled {
    row: RunRecordRow,
    remember: Option<(String, SnapshotEntry)>,
    forget: Option<String>,
    pending_resolved: Option<String>,
}

/// How the execution ended when it did not fail.
pub enum Ending {
    Completed,
    Cancelled,
}

/// The error ([`EngineError::LockLost`]) of a run that lost its sync's lock (a PostgreSQL session-level advisory lock,
/// which dies with its session) and so stopped sending: another run could have taken the lock.
pub const LOCK_LOST: &str = "lost the sync's lock: the workspace database (PostgreSQL) \
     restarted or closed the lock's session during the run, so the run stopped sending to Stripe \
     (what Stripe had already confirmed is recorded); run the sync again to finish";

pub async fn execute_plan(
    exec: &Execution<'_>,
    invalid: Vec<RejectedRow>,
    planned: Vec<PlannedRecord>,
    counts: &mut RunCounts,
) -> Result<Ending, EngineError> {
    let mut committer = Committer::new(exec, counts);
    for rejected in invalid {
        committer
            .push(settled(
                rejected.row_number,
                &rejected.key,
                Outcome::Rejected,
                None,
                Some(rejected.reason),
                None,
                None,
            ))
            .await?;
    }

    // Every create's idempotency key and body are durable before the first attempt, so that a
    // crash at any later point replays the same request instead of creating a second customer.
    let mut new_pending = Vec::new();
    let mut work = Vec::with_capacity(planned.len());
    let now = chrono::Utc::now();
    for mut planned_record in planned {
        if let Action::Create { .. } = planned_record.action {
            let body = form::encode(&create_params(&planned_record.record.payload));
            let pending = PendingCreate {
                key: planned_record.record.match_key.clone(),
                idempotency_key: create_idempotency_key(
                    exec.sync_uid,
                    &planned_record.record.match_key,
                    &body,
                    now,
                ),
                request_body: body,
                created_at: now,
            };
            new_pending.push(pending.clone());
            planned_record.action = Action::ReplayCreate {
                pending,
                from_earlier_run: false,
            };
        }
        work.push(planned_record);
    }
    for chunk in new_pending.chunks(5_000) {
        retry_state_write("saving pending creates", || {
            exec.store.save_pending_creates(exec.sync_name, chunk)
        })
        .await?;
    }

    let max_in_flight = exec.stripe.http().policy().max_in_flight * 2;
    let mut queue = work.into_iter();
    let mut in_flight = FuturesUnordered::new();
    // Rows whose request is out, by row number, so that rows abandoned by a stop still get an
    // outcome: every row of a run ends in exactly one.
    let mut in_flight_rows: HashMap<u64, String> = HashMap::new();
    let mut cancelled_at: Option<Instant> = None;
    let mut lock_lost = false;
    let mut fatal: Option<EngineError> = None;
    loop {
        // Without its lock the run stops at once, even while stopping for a cancellation: a
        // second run may hold the lock by now. The futures in `in_flight` are dropped unpolled:
        // most of them are still waiting for the rate limiter or a connection, and polling them
        // again would send new writes. Their rows end failed; a create among them keeps its
        // saved idempotency key, so if its request did reach Stripe the next run's replay gets
        // the same customer back, and an update is simply sent again.
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
        if cancelled_at.is_none() && exec.cancel.load(Ordering::Relaxed) {
            cancelled_at = Some(Instant::now());
            tracing::info!(
                in_flight = in_flight.len(),
                "Stop requested: finishing the requests already sent."
            );
        }
        if cancelled_at.is_none() {
            while in_flight.len() < max_in_flight {
                // The lock is checked before every new write, not only once per round.
                if committer.lock_lost() {
                    break;
                }
                let Some(next) = queue.next() else { break };
                match immediate_outcome(&next) {
                    Some(mut done) => {
                        if next.drops_pending && done.row.outcome == Outcome::Unchanged {
                            done.pending_resolved = Some(next.record.match_key.clone());
                        }
                        committer.push(done).await?
                    }
                    None => {
                        in_flight_rows.insert(next.record.row_number, next.record.key.clone());
                        in_flight.push(execute_one(exec, next));
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
            _ = tokio::time::sleep(LOCK_CHECK_EVERY) => continue,
        };
        match next {
            Some(Ok(done)) => {
                in_flight_rows.remove(&done.row.row_number);
                committer.push(done).await?;
            }
            Some(Err(error)) => {
                fatal = Some(error);
                break;
            }
            None => break,
        }
    }
    // A stop or a fatal error leaves rows without an answer: they are recorded as failed, which
    // the next run retries. Creates among them keep their saved idempotency key and are replayed.
    let mut unfinished_rows = 0;
    if cancelled_at.is_some() || lock_lost || fatal.is_some() {
        let why = match &fatal {
            Some(error) => format!("the run stopped before this row finished: {error}"),
            None if lock_lost => {
                format!("the run stopped before this row finished: {LOCK_LOST}")
            }
            None => {
                "the run was stopped before this row finished; the next run picks it up".to_string()
            }
        };
        drop(in_flight);
        let mut unfinished: Vec<(u64, String)> = in_flight_rows.into_iter().collect();
        unfinished.extend(queue.map(|p| (p.record.row_number, p.record.key)));
        unfinished.sort();
        unfinished_rows = unfinished.len();
        for (row_number, key) in unfinished {
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
    }
    // Whatever Stripe acknowledged is committed even without the lock: a commit only records
    // writes Stripe confirmed, and forgetting them would make the next run repeat them.
    committer.flush().await?;
    if let Some(error) = fatal {
        return Err(error);
    }
    if lock_lost && unfinished_rows > 0 {
        // Every row has its outcome; the run fails and tells the user to run it again. (A lock
        // lost after the last answer stopped nothing: that run completed.)
        return Err(EngineError::LockLost);
    }
    Ok(if cancelled_at.is_some() {
        Ending::Cancelled
    } else {
        Ending::Completed
    })
}

/// The outcome of a record that needs no request; `None` for one that does.
fn immediate_outcome(planned: &PlannedRecord) -> Option<Settled> {
    let record = &planned.record;
    let settle = |outcome, stripe_id: Option<String>, reason: Option<String>| {
        settled(
            record.row_number,
            &record.key,
            outcome,
            stripe_id,
            reason,
            None,
            None,
        )
    };
    Some(match &planned.action {
        Action::Unchanged {
            stripe_id,
            remember,
        } => {
            let mut done = settle(Outcome::Unchanged, Some(stripe_id.clone()), None);
            if *remember {
                done.remember = Some(snapshot_entry(
                    &record.match_key,
                    stripe_id,
                    &record.payload,
                ));
            }
            done
        }
        Action::NotFound => settle(
            Outcome::NotFound,
            None,
            Some("no Stripe customer has this key (Update Only does not create)".into()),
        ),
        Action::Reject { reason } => settle(Outcome::Rejected, None, Some(reason.clone())),
        Action::Fail { reason } => settle(Outcome::Failed, None, Some(reason.clone())),
        Action::Update { .. } | Action::Create { .. } | Action::ReplayCreate { .. } => return None,
    })
}

async fn execute_one(exec: &Execution<'_>, planned: PlannedRecord) -> Result<Settled, EngineError> {
    let drops_pending = planned
        .drops_pending
        .then(|| planned.record.match_key.clone());
    let record = planned.record;
    match planned.action {
        Action::Update {
            stripe_id,
            changed,
            changes,
        } => {
            let body = form::encode(&update_params(&record.payload, &changed));
            let idempotency_key =
                update_idempotency_key(exec.sync_uid, exec.run_id, &record.match_key);
            match exec
                .stripe
                .update_customer(&stripe_id, &body, &idempotency_key)
                .await
            {
                Ok(customer) => {
                    let mut done = settled(
                        record.row_number,
                        &record.key,
                        Outcome::Updated,
                        Some(customer.id.clone()),
                        None,
                        None,
                        Some(changes),
                    );
                    done.remember = Some(snapshot_entry(
                        &record.match_key,
                        &customer.id,
                        &record.payload,
                    ));
                    done.pending_resolved = drops_pending;
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
                        Some(stripe_id.clone()),
                        Some(format!("Stripe customer {stripe_id} no longer exists (deleted in Stripe?); the next run looks this key up again")),
                        request_id,
                        None,
                    );
                    done.forget = Some(record.match_key.clone());
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
            // second customer. Such a row waits for the next run, which looks it up first.
            if chrono::Utc::now() - pending.created_at > crate::plan::PENDING_CREATE_MAX_AGE {
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
                .create_customer(&pending.request_body, &pending.idempotency_key)
                .await;
            match result {
                // The lookup before this replay found no customer with the key, yet Stripe
                // answers with the one an interrupted run made: either that customer was
                // deleted since, or its create was still finishing during the lookup. Stripe's
                // own answer says which.
                Ok((customer, true)) if from_earlier_run => {
                    match exec.stripe.retrieve_customer(&customer.id).await {
                        Ok(Some(live)) => finish_create(exec, &record, &pending, live).await,
                        Ok(None) => create_anew(exec, &record, &pending).await,
                        Err(error) => settle_error(&record.key, record.row_number, error, None),
                    }
                }
                Ok((customer, _)) => finish_create(exec, &record, &pending, customer).await,
                Err(error) => {
                    settle_error(&record.key, record.row_number, error, Some(&pending.key))
                }
            }
        }
        Action::Create { .. } => {
            unreachable!("creates become ReplayCreate once their pending entry is saved")
        }
        other => Ok(immediate_outcome(&PlannedRecord {
            record,
            action: other,
            drops_pending: false,
        })
        .expect("only writes need a request")),
    }
}

/// The customer an interrupted run created was deleted in Stripe since: create it again, under
/// a new idempotency key saved first (the old key would only replay the deleted customer).
async fn create_anew(
    exec: &Execution<'_>,
    record: &crate::prepare::PreparedRecord,
    old: &PendingCreate,
) -> Result<Settled, EngineError> {
    let now = chrono::Utc::now();
    let fresh = PendingCreate {
        key: old.key.clone(),
        idempotency_key: create_idempotency_key(exec.sync_uid, &old.key, &old.request_body, now),
        request_body: form::encode(&create_params(&record.payload)),
        created_at: now,
    };
    retry_state_write("saving a pending create", || {
        exec.store
            .save_pending_creates(exec.sync_name, std::slice::from_ref(&fresh))
    })
    .await?;
    match exec
        .stripe
        .create_customer(&fresh.request_body, &fresh.idempotency_key)
        .await
    {
        Ok((customer, _)) => finish_create(exec, record, &fresh, customer).await,
        Err(error) => settle_error(&record.key, record.row_number, error, Some(&fresh.key)),
    }
}

/// After a create (or its replay) returned a customer: if the row changed since the body was
/// saved, bring the customer up to date; then remember it.
async fn finish_create(
    exec: &Execution<'_>,
    record: &crate::prepare::PreparedRecord,
    pending: &PendingCreate,
    customer: Customer,
) -> Result<Settled, EngineError> {
    let live = customer_to_fields(&customer.object);
    let changed =
        ferry_core::changed_fields(&record.payload, &ferry_core::Baseline::Live(&live), &[]);
    let changes = serde_json::Value::Object(
        record
            .payload
            .fields
            .iter()
            .filter(|(_, v)| **v != ferry_core::FieldValue::Clear)
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::json!({"before": null, "after": v.to_json()}),
                )
            })
            .collect(),
    );
    if !changed.is_empty() && !(exec.lock_held)() {
        // The follow-up update is a new write, and the lock is gone: remember the customer with
        // an empty payload, so the next run sends every field to it (see below).
        let mut done = settled(
            record.row_number,
            &record.key,
            Outcome::Failed,
            Some(customer.id.clone()),
            Some(format!(
                "the customer exists but was not brought up to date: {LOCK_LOST}"
            )),
            None,
            None,
        );
        done.remember = Some(snapshot_entry(
            &record.match_key,
            &customer.id,
            &Payload::default(),
        ));
        done.pending_resolved = Some(pending.key.clone());
        return Ok(done);
    }
    if !changed.is_empty() {
        let body = form::encode(&update_params(&record.payload, &changed));
        let idempotency_key = update_idempotency_key(exec.sync_uid, exec.run_id, &record.match_key);
        if let Err(error) = exec
            .stripe
            .update_customer(&customer.id, &body, &idempotency_key)
            .await
        {
            // The customer exists: remember its id with an empty payload, so the next run sends
            // every field to it instead of looking it up or creating another.
            let mut done = settle_error(&record.key, record.row_number, error, Some(&pending.key))?;
            done.row.stripe_id = Some(customer.id.clone());
            done.remember = Some(snapshot_entry(
                &record.match_key,
                &customer.id,
                &Payload::default(),
            ));
            return Ok(done);
        }
    }
    let mut done = settled(
        record.row_number,
        &record.key,
        Outcome::Created,
        Some(customer.id.clone()),
        None,
        None,
        Some(changes),
    );
    done.remember = Some(snapshot_entry(
        &record.match_key,
        &customer.id,
        &record.payload,
    ));
    done.pending_resolved = Some(pending.key.clone());
    Ok(done)
}

fn settle_error(
    key: &str,
    row_number: u64,
    error: StripeCallError,
    pending_key: Option<&str>,
) -> Result<Settled, EngineError> {
    match error {
        StripeCallError::Unauthorized { message, .. } => Err(EngineError::StripeKey(message)),
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
        // The pending create stays: the next run replays it with the same key.
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

fn settled(
    row_number: u64,
    key: &str,
    outcome: Outcome,
    stripe_id: Option<String>,
    reason: Option<String>,
    request_id: Option<String>,
    changes: Option<serde_json::Value>,
) -> Settled {
    Settled {
        row: RunRecordRow {
            row_number,
            key: key.to_string(),
            outcome,
            stripe_id,
            reason,
            request_id,
            changes,
        },
        remember: None,
        forget: None,
        pending_resolved: None,
    }
}

fn snapshot_entry(match_key: &str, stripe_id: &str, payload: &Payload) -> (String, SnapshotEntry) {
    (
        match_key.to_string(),
        SnapshotEntry {
            stripe_id: stripe_id.to_string(),
            payload_hash: payload.hash(),
            payload: payload.to_json(),
            updated_at: chrono::Utc::now(),
        },
    )
}

/// Derived from the sync, the record key, the body and the moment the create was planned, and
/// saved with it: every attempt of that create, retries and replays after a crash, carries this
/// key. The moment keeps a later, separate create of the same body (after the customer was
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

fn short_hash(text: &str, hex_chars: usize) -> String {
    let mut digest = hex::encode(Sha256::digest(text.as_bytes()));
    digest.truncate(hex_chars);
    digest
}

/// Collects outcomes and commits them in batches: run records, snapshot and pending creates
/// in one transaction, so the workspace never says "synced" for a write Stripe did not confirm.
struct Committer<'a, 'b> {
    exec: &'a Execution<'b>,
    counts: &'a mut RunCounts,
    batch: CommitBatch,
    last_commit: Instant,
    /// Latched: once the lock is found lost it stays lost.
    lock_lost: bool,
}

impl<'a, 'b> Committer<'a, 'b> {
    fn new(exec: &'a Execution<'b>, counts: &'a mut RunCounts) -> Self {
        Committer {
            exec,
            counts,
            batch: CommitBatch::default(),
            last_commit: Instant::now(),
            lock_lost: false,
        }
    }

    /// Whether the sync's lock is gone (checked now, remembered once true).
    fn lock_lost(&mut self) -> bool {
        if !self.lock_lost && !(self.exec.lock_held)() {
            self.lock_lost = true;
        }
        self.lock_lost
    }

    async fn push(&mut self, done: Settled) -> Result<(), EngineError> {
        self.counts.add(done.row.outcome);
        if let Some(progress) = &self.exec.progress {
            progress(done.row.outcome);
        }
        self.batch.records.push(done.row);
        self.batch.snapshot_upserts.extend(done.remember);
        self.batch.snapshot_deletes.extend(done.forget);
        self.batch.pending_deletes.extend(done.pending_resolved);
        if self.batch.records.len() >= COMMIT_BATCH_SIZE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush_if_due(&mut self) -> Result<(), EngineError> {
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.flush().await?;
        }
        Ok(())
    }

    /// Commits the waiting outcomes. The lock is checked first so that the execution stops
    /// sending once it is lost, but the batch is committed either way: it only holds what
    /// Stripe already acknowledged (or rows that got no write), and forgetting it would make
    /// the next run repeat those writes.
    async fn flush(&mut self) -> Result<(), EngineError> {
        self.last_commit = Instant::now();
        if self.batch.records.is_empty() {
            return Ok(());
        }
        self.lock_lost();
        self.counts.requests = self.exec.stripe.http().requests_sent();
        self.batch.counts = *self.counts;
        let batch = std::mem::take(&mut self.batch);
        let exec = self.exec;
        retry_state_write("committing outcomes", || {
            exec.store.commit_batch(exec.sync_name, exec.run_id, &batch)
        })
        .await?;
        self.last_commit = Instant::now();
        Ok(())
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

/// Whether a state store error means "the database is not reachable right now" rather than
/// "this write is wrong": a failed connect, a closed session, a dropped socket, or PostgreSQL's
/// classes 08 (connection exception) and 57P (shutting down, starting up, terminated).
pub(crate) fn is_unreachable(error: &StateError) -> bool {
    match error {
        StateError::PostgresConnect { .. } => true,
        StateError::Postgres { source, .. } => {
            source.is_closed()
                || source.code().is_some_and(|state| {
                    let code = state.code();
                    code.starts_with("08") || code.starts_with("57P")
                })
                || std::error::Error::source(source)
                    .is_some_and(|cause| cause.downcast_ref::<std::io::Error>().is_some())
        }
        _ => false,
    }
}
