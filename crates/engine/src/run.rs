//! One run or one preview, end to end, in bounded memory:
//!
//! 1. **Stage.** The model streams from the warehouse; each row is prepared (mapped, checked)
//!    and staged on disk sorted by match key (`stage.rs`). Bad rows are rejected as they come.
//! 2. **Merge.** The staged records are walked in key order alongside the sync's snapshot (also
//!    read in key order, a page at a time). Copies of one key are all rejected; a record whose
//!    payload hash equals the snapshot's is unchanged (counted, nothing stored, no request);
//!    the others are gathered into chunks.
//! 3. **Chunks.** For each chunk: payloads remembered for changed records are fetched; new keys
//!    are looked up in the account's key index (`index.rs`) and the records found are read; every
//!    record is planned (`plan.rs`); a run then executes the chunk (`execute.rs`) and commits
//!    its outcomes before the next chunk is planned. A preview only counts.
//!
//! Memory is bounded by the chunk size, the snapshot page and the sorter's segment, whatever
//! the model's size.

use crate::execute::{
    dispatch, new_pending_create, retry_state_write, Committer, Ending, Execution, Planned,
};
use crate::index::KeyIndex;
use crate::mirror::{mass_retire_refusal, AbsentLog};
use crate::plan::{plan, Action, Known, Rules};
use crate::prepare::{
    check_stripe_rules, duplicate_reason, map_row, PreparedRecord, RejectedRow, ValidatedSync,
    WarehouseAck,
};
use crate::reference::References;
use crate::stage::{KeyGroup, Sorted, Stage, StagedRecord};
use crate::{EngineError, SyncSetup};
use ferry_core::{Behavior, FieldMapping, Payload, Value};
use ferry_destinations::stripe::{Retirement, StripeCallError, StripeRecord, StripeService};
use ferry_source::warehouse_diff::{self, DiffSpec, DiffTable, ADDED_COLUMNS};
use ferry_state::{SnapshotKey, StateStore};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Records planned and executed together.
pub(crate) const CHUNK_RECORDS: usize = 2_000;
/// Snapshot entries read per page while merging.
const SNAPSHOT_PAGE: usize = 5_000;
/// Records found by key read at once while planning.
const READS_IN_FLIGHT: usize = 16;

/// What a pipeline reports to whoever drives it: a run commits and executes, a preview counts.
pub(crate) trait Sink {
    async fn rejected(&mut self, row: RejectedRow) -> Result<(), EngineError>;
    /// A record whose payload equals ferry's last write; `ack` is its warehouse key and hash
    /// when change detection runs in the warehouse.
    async fn unchanged(&mut self, ack: Option<WarehouseAck>) -> Result<(), EngineError>;
    /// Rows the warehouse found unchanged: they never left it.
    fn unchanged_in_warehouse(&mut self, rows: u64);
    /// Every row is read and staged: `rows` in all.
    fn staged(&mut self, rows: u64);
    /// Whether records were created (a run's, not a preview's).
    fn created_records(&self) -> bool {
        false
    }
    /// Mirror would retire records, but may not (`reason`): a run stops with it as its error;
    /// a preview says it and goes on to list what would be retired.
    fn retirement_refused(&mut self, reason: String) -> Result<(), EngineError>;
    /// A chunk's plan; `Ending::Cancelled` stops the pipeline.
    async fn chunk(
        &mut self,
        planned: Vec<Planned>,
        index: Option<&KeyIndex<'_>>,
        sync: &ValidatedSync,
        rules: &Rules<'_>,
    ) -> Result<Ending, EngineError>;
}

/// A sync's pipeline: its setup, its validated spec, and the run's settings.
pub(crate) struct Pipeline<'a> {
    pub(crate) store: &'a StateStore,
    pub(crate) setup: &'a SyncSetup,
    pub(crate) stripe: &'a StripeService,
    pub(crate) full_resync: bool,
    pub(crate) cancel: &'a AtomicBool,
    /// Rows read from the model so far, for a run that fails or stops while reading.
    pub(crate) rows_read: &'a std::sync::atomic::AtomicU64,
    /// Rows folded into another row's record (an invoice's further lines), which have no
    /// outcome of their own.
    pub(crate) rows_folded: &'a std::sync::atomic::AtomicU64,
    /// Change detection in the warehouse, when the connection turns it on.
    pub(crate) warehouse_diff: Option<&'a DiffSpec>,
    /// Whether this pipeline may create the sync's change detection table (a run may; a
    /// preview writes nothing).
    pub(crate) creates_tables: bool,
    /// Mirror: retire even more than the sync's limit (`--allow-mass-retire`).
    pub(crate) allow_mass_retire: bool,
}

/// The change detection columns of one row, split off the model's own.
struct ChangeColumns {
    /// The one row that only carries the count, when no row needs ferry.
    only_the_count: bool,
    /// The row's position in the model, where the warehouse numbers rows cheaply.
    row_number: Option<u64>,
    ack: Option<WarehouseAck>,
    total: u64,
}

impl ChangeColumns {
    fn split_off(row: &mut Vec<Value>) -> Result<ChangeColumns, String> {
        if row.len() < ADDED_COLUMNS.len() {
            return Err("the change query returned too few columns".to_string());
        }
        let added = row.split_off(row.len() - ADDED_COLUMNS.len());
        let number = |value: &Value| match value {
            Value::Int(n) => u64::try_from(*n).ok(),
            Value::Decimal(text) => text.parse().ok(),
            _ => None,
        };
        let text = |value: &Value| match value {
            Value::Text(text) => Some(text.clone()),
            _ => None,
        };
        let total = number(&added[4])
            .ok_or_else(|| format!("the change query's row count is {:?}", added[4]))?;
        // Every row of the model has a hash; only the row that carries nothing but the count
        // has none.
        let Some(hash) = text(&added[2]) else {
            return Ok(ChangeColumns {
                only_the_count: true,
                row_number: None,
                ack: None,
                total,
            });
        };
        Ok(ChangeColumns {
            only_the_count: false,
            row_number: number(&added[0]),
            ack: text(&added[1]).map(|key| WarehouseAck { key, hash }),
            total,
        })
    }
}

impl<'a> Pipeline<'a> {
    /// Reads, stages, merges and plans the model chunk by chunk into `sink`. Returns how it
    /// ended and the number of rows read.
    pub(crate) async fn drive(&self, sink: &mut impl Sink) -> Result<(Ending, u64), EngineError> {
        let in_warehouse = self.open_warehouse_diff().await?;
        let (sync, mut stream) = self.open_model(in_warehouse).await?;
        let scratch = scratch_dir(self.store)?;
        let mut stage = Stage::start(scratch.path()).map_err(EngineError::Config)?;
        let mut absent = match self.setup.sync.spec.behavior {
            Behavior::Mirror => Some(AbsentLog::create(scratch.path())?),
            _ => None,
        };
        let mut rows = 0u64;
        // With change detection in the warehouse: the model's row count, and the rows that
        // travelled (the others are unchanged).
        let mut model_rows: Option<u64> = None;
        let mut travelled = 0u64;
        while let Some(row) = stream.next_row().await {
            let mut row = row.map_err(|e| self.source_error(e))?;
            let mut row_number = rows + 1;
            let mut ack = None;
            if in_warehouse.is_some() {
                let added = ChangeColumns::split_off(&mut row).map_err(|problem| {
                    self.source_error(ferry_source::SourceError::ChangeDetection { problem })
                })?;
                model_rows = Some(added.total);
                if added.only_the_count {
                    continue;
                }
                travelled += 1;
                row_number = added.row_number.unwrap_or(travelled);
                ack = added.ack;
            }
            rows += 1;
            self.rows_read.store(rows, Ordering::Relaxed);
            if rows.is_multiple_of(1024) && self.cancel.load(Ordering::Relaxed) {
                return Ok((Ending::Cancelled, rows));
            }
            match map_row(&sync, row_number, &row) {
                Ok(mut record) => {
                    record.warehouse_ack = ack;
                    stage
                        .push(StagedRecord::from_prepared(record))
                        .await
                        .map_err(EngineError::Config)?
                }
                Err(rejected) => {
                    // In the model, so never retired, even though it cannot be synced.
                    if let (Some(log), false) = (absent.as_mut(), rejected.key.is_empty()) {
                        log.protect(sync.match_key(&rejected.key));
                    }
                    // A rejected line holds its whole record (invoice) back: it goes to the
                    // stage as a stand-in that the fold sees.
                    if sync.object.lines().is_some() && !rejected.key.is_empty() {
                        let stand_in =
                            crate::lines::rejected_line(&rejected, sync.match_key(&rejected.key));
                        stage
                            .push(StagedRecord::from_prepared(stand_in))
                            .await
                            .map_err(EngineError::Config)?
                    }
                    sink.rejected(rejected).await?
                }
            }
        }
        drop(stream);
        if let Some(total) = model_rows {
            let unchanged = total.saturating_sub(travelled);
            tracing::info!(
                rows = total,
                travelled,
                unchanged,
                "The warehouse compared the model with the rows Stripe acknowledged."
            );
            sink.unchanged_in_warehouse(unchanged);
            rows = total;
            self.rows_read.store(rows, Ordering::Relaxed);
        }
        sink.staged(rows);
        let mut sorted = stage.finish().await.map_err(EngineError::Config)?;
        let mut ending = self
            .merge(&sync, &mut sorted, sink, absent.as_mut())
            .await?;
        if let (Ending::Completed, Some(log)) = (ending, absent) {
            ending = self.retire_absent(&sync, log, rows, sink).await?;
        }
        Ok((ending, rows))
    }

    /// With change detection in the warehouse: checks (and for a run, creates) the sync's
    /// table. `Some` when the warehouse can compare the model with it.
    async fn open_warehouse_diff(&self) -> Result<Option<&'a DiffSpec>, EngineError> {
        let Some(spec) = self.warehouse_diff else {
            return Ok(None);
        };
        let table = warehouse_diff::open_table(&self.setup.source, spec, self.creates_tables)
            .await
            .map_err(|e| self.source_error(e))?;
        Ok((table == DiffTable::Ready).then_some(spec))
    }

    async fn open_model(
        &self,
        in_warehouse: Option<&DiffSpec>,
    ) -> Result<(ValidatedSync, ferry_source::RowStream), EngineError> {
        let setup = self.setup;
        let stream = match in_warehouse {
            Some(spec) => {
                // A full resync reads every row, but through the same query, so that each one
                // still gets its warehouse key and hash acknowledged.
                warehouse_diff::query_changes(
                    &setup.source,
                    &setup.model.sql,
                    spec,
                    self.full_resync,
                    &setup.query,
                )
                .await
            }
            None => ferry_source::query(&setup.source, &setup.model.sql, &setup.query).await,
        }
        .map_err(|e| self.source_error(e))?;
        let mut columns: Vec<String> = stream.columns().iter().map(|c| c.name.clone()).collect();
        if in_warehouse.is_some() {
            columns.truncate(columns.len().saturating_sub(ADDED_COLUMNS.len()));
        }
        let sync = crate::prepare::validate_sync(&setup.sync.spec, &columns)
            .map_err(EngineError::InvalidSync)?;
        Ok((sync, stream))
    }

    fn source_error(&self, error: ferry_source::SourceError) -> EngineError {
        // Say what that means for Stripe: no write goes out before the whole model is read.
        let mut problem = error.to_string();
        if matches!(error, ferry_source::SourceError::ConnectionLost { .. }) {
            problem.push_str(
                "; nothing was sent to Stripe (a run reads the whole model before its first \
                 write), so run the sync again once the warehouse answers",
            );
        } else {
            problem.push_str(
                "; nothing was sent to Stripe (a run reads the whole model before its first write)",
            );
        }
        EngineError::Source {
            model: self.setup.model.name.clone(),
            problem,
        }
    }

    async fn merge(
        &self,
        sync: &ValidatedSync,
        sorted: &mut Sorted,
        sink: &mut impl Sink,
        mut absent: Option<&mut AbsentLog>,
    ) -> Result<Ending, EngineError> {
        let object = sync.object.schema().object;
        let rules = Rules {
            schema: sync.object.schema(),
            behavior: self.setup.sync.spec.behavior,
            key_path: sync.key_path(),
            key_ignores_case: sync.key.ignore_case,
            replacement: sync.object.replacement(),
        };
        let mut snapshot = SnapshotCursor::new(self.store, &self.setup.sync.name, object);
        let mut index: Option<KeyIndex<'_>> = None;
        let mut references = References::new(self.store, self.stripe, sync);
        let mut changed: Vec<(PreparedRecord, String)> = Vec::new();
        let mut new: Vec<PreparedRecord> = Vec::new();
        loop {
            let group = match sync.object.lines() {
                None => sorted.next_group().await.map_err(EngineError::Config)?,
                // The rows of one key are one record's lines: folded into it, or all rejected.
                Some(lines) => match sorted
                    .next_rows(lines.max + 1)
                    .await
                    .map_err(EngineError::Config)?
                {
                    None => None,
                    Some(group) => {
                        let match_key = group.rows[0].match_key.clone();
                        let further = (group.rows.len() as u64 - 1) + group.more;
                        let rows = group.rows.into_iter().map(StagedRecord::into_prepared);
                        match crate::lines::fold(rows.collect(), object, lines.max) {
                            Ok(folded) => {
                                self.rows_folded.fetch_add(further, Ordering::Relaxed);
                                Some(KeyGroup::One(StagedRecord::from_prepared(folded)))
                            }
                            Err(rejected) => {
                                // In the model, so never retired, even though it cannot be
                                // synced.
                                if let Some(log) = absent.as_deref_mut() {
                                    snapshot.find(Some(&match_key), Some(log)).await?;
                                }
                                for row in rejected {
                                    sink.rejected(row).await?;
                                }
                                continue;
                            }
                        }
                    }
                },
            };
            let done = group.is_none();
            match group {
                None => {}
                Some(KeyGroup::Duplicates {
                    match_key,
                    copies,
                    more,
                }) => {
                    if let Some(log) = absent.as_deref_mut() {
                        snapshot.find(Some(&match_key), Some(log)).await?;
                    }
                    for (row_number, key) in &copies {
                        let others: Vec<u64> = copies
                            .iter()
                            .map(|(row, _)| *row)
                            .filter(|row| row != row_number)
                            .take(10)
                            .collect();
                        let hidden = (copies.len() as u64 - 1 - others.len() as u64) + more;
                        sink.rejected(RejectedRow {
                            row_number: *row_number,
                            key: key.clone(),
                            reason: duplicate_reason(key, &others, hidden),
                        })
                        .await?;
                    }
                }
                Some(KeyGroup::One(record)) => {
                    // Mirror walks the snapshot even on a full resync: what it passes without a
                    // row left the model.
                    let remembered = if self.full_resync && absent.is_none() {
                        None
                    } else {
                        snapshot
                            .find(Some(&record.match_key), absent.as_deref_mut())
                            .await?
                    }
                    .filter(|_| !self.full_resync);
                    match remembered {
                        Some(entry) if entry.payload_hash == record.payload_hash => {
                            sink.unchanged(record.into_warehouse_ack()).await?;
                        }
                        remembered => {
                            // Only a record that will be sent is checked against Stripe's rules
                            // (see `map_row`).
                            let record = record.into_prepared();
                            match (check_stripe_rules(sync, &record), remembered) {
                                (Err(rejected), _) => sink.rejected(rejected).await?,
                                (Ok(()), Some(entry)) => {
                                    changed.push((record, entry.destination_id.clone()))
                                }
                                (Ok(()), None) => new.push(record),
                            }
                        }
                    }
                }
            }
            if done || changed.len() + new.len() >= CHUNK_RECORDS {
                if done {
                    if let Some(log) = absent.as_deref_mut() {
                        snapshot.find(None, Some(log)).await?;
                    }
                }
                if !references.is_empty() {
                    let (resolved, rejected) = references
                        .resolve(std::mem::take(&mut changed), |item| &mut item.0)
                        .await?;
                    changed = resolved;
                    for row in rejected {
                        sink.rejected(row).await?;
                    }
                    let (resolved, rejected) = references
                        .resolve(std::mem::take(&mut new), |record| record)
                        .await?;
                    new = resolved;
                    for row in rejected {
                        sink.rejected(row).await?;
                    }
                }
                if changed.is_empty() && new.is_empty() {
                    if done {
                        self.refresh_after_creates(index.as_ref(), sink).await;
                        return Ok(Ending::Completed);
                    }
                    continue;
                }
                if !new.is_empty() && index.is_none() {
                    let opened =
                        KeyIndex::open(self.store, self.stripe, sync.object, &sync.key).await?;
                    let refresh = opened.refresh(self.full_resync).await?;
                    tracing::debug!(?refresh, "The key index is up to date.");
                    index = Some(opened);
                }
                if self.cancel.load(Ordering::Relaxed) {
                    return Ok(Ending::Cancelled);
                }
                let planned = self
                    .plan_chunk(
                        sync,
                        &rules,
                        std::mem::take(&mut changed),
                        std::mem::take(&mut new),
                        index.as_ref(),
                    )
                    .await?;
                if sink.chunk(planned, index.as_ref(), sync, &rules).await? == Ending::Cancelled {
                    return Ok(Ending::Cancelled);
                }
                if done {
                    self.refresh_after_creates(index.as_ref(), sink).await;
                    return Ok(Ending::Completed);
                }
            }
        }
    }

    /// A run that created records lists them once more at its end, while they are the newest:
    /// the next run's refresh then starts after them instead of listing them again (and sees
    /// what someone else created meanwhile).
    async fn refresh_after_creates(&self, index: Option<&KeyIndex<'_>>, sink: &impl Sink) {
        if let Some(index) = index.filter(|_| sink.created_records()) {
            if let Err(error) = index.refresh(false).await {
                tracing::info!(%error, "Could not refresh the key index after the run; the next run does.");
            }
        }
    }

    /// Plans a chunk: changed records against ferry's last write, new ones against what Stripe
    /// holds under their key.
    async fn plan_chunk(
        &self,
        sync: &ValidatedSync,
        rules: &Rules<'_>,
        changed: Vec<(PreparedRecord, String)>,
        new: Vec<PreparedRecord>,
        index: Option<&KeyIndex<'_>>,
    ) -> Result<Vec<Planned>, EngineError> {
        let object = sync.object.schema().object;
        let sync_name = &self.setup.sync.name;
        let now = chrono::Utc::now();
        let mut planned = Vec::with_capacity(changed.len() + new.len());
        if !changed.is_empty() {
            let keys: Vec<String> = changed.iter().map(|(r, _)| r.match_key.clone()).collect();
            let entries = self
                .store
                .snapshot_entries(sync_name, object, &keys)
                .await?;
            for (record, destination_id) in changed {
                let last_write = entries
                    .get(&record.match_key)
                    .and_then(|entry| serde_json::from_str(&entry.payload).ok())
                    .and_then(|json| Payload::from_json(&json))
                    .unwrap_or_default();
                let action = plan(
                    &record,
                    Known::Remembered {
                        destination_id: &destination_id,
                        last_write: &last_write,
                    },
                    None,
                    rules,
                    now,
                );
                planned.push(Planned {
                    record,
                    action,
                    drops_pending: false,
                });
            }
            self.resume_replacements(rules, &mut planned).await?;
        }
        if !new.is_empty() {
            let index = index.expect("the index is opened before new records are planned");
            planned.extend(
                plan_new(
                    self.store,
                    self.stripe,
                    sync,
                    index,
                    rules,
                    sync_name,
                    new,
                    now,
                )
                .await?,
            );
        }
        Ok(planned)
    }
}

impl Pipeline<'_> {
    /// Mirror, once the whole model was merged: retires the records whose rows left it, a
    /// chunk at a time, unless the run may not (see `mirror.rs`). Their run records are
    /// numbered after the model's `rows`.
    async fn retire_absent(
        &self,
        sync: &ValidatedSync,
        log: AbsentLog,
        rows: u64,
        sink: &mut impl Sink,
    ) -> Result<Ending, EngineError> {
        let schema = sync.object.schema();
        let refusal = log.blocked.clone().or_else(|| {
            mass_retire_refusal(
                log.absent,
                log.walked,
                &self.setup.sync.spec.mirror,
                self.allow_mass_retire,
                schema.plural,
            )
        });
        if let Some(reason) = refusal {
            sink.retirement_refused(reason)?;
        }
        if log.absent == 0 {
            return Ok(Ending::Completed);
        }
        tracing::info!(
            records = log.absent,
            "Retiring the records whose rows left the model."
        );
        let rules = Rules {
            schema,
            behavior: self.setup.sync.spec.behavior,
            key_path: sync.key_path(),
            key_ignores_case: sync.key.ignore_case,
            replacement: sync.object.replacement(),
        };
        let how = match sync.object.retirement() {
            Retirement::Cancel if self.setup.sync.spec.mirror.cancel_subscriptions_now => {
                "cancelled at once"
            }
            Retirement::Cancel => "cancelled at the end of the period already paid for",
            other => other.describe(),
        };
        let mut row_number = rows;
        for chunk in log.into_chunks(CHUNK_RECORDS)? {
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(Ending::Cancelled);
            }
            let planned = chunk?
                .into_iter()
                .map(|(key, destination_id)| {
                    row_number += 1;
                    Planned {
                        record: PreparedRecord::new(
                            row_number,
                            key.clone(),
                            key,
                            Payload::default(),
                        ),
                        action: Action::Retire {
                            destination_id,
                            how,
                        },
                        drops_pending: false,
                    }
                })
                .collect();
            if sink.chunk(planned, None, sync, &rules).await? == Ending::Cancelled {
                return Ok(Ending::Cancelled);
            }
        }
        Ok(Ending::Completed)
    }

    /// A replacement planned for a remembered record may have been started by an interrupted
    /// run: its saved create (read for these rows only, which are rare) makes the replacement
    /// find the new record instead of making another.
    async fn resume_replacements(
        &self,
        rules: &Rules<'_>,
        planned: &mut [Planned],
    ) -> Result<(), EngineError> {
        let keys: Vec<String> = planned
            .iter()
            .filter(|p| matches!(p.action, Action::Replace { .. }))
            .map(|p| p.record.match_key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let pending = self
            .store
            .pending_creates(&self.setup.sync.name, rules.schema.object, &keys)
            .await?;
        for planned in planned.iter_mut() {
            if let Action::Replace { pending: slot, .. } = &mut planned.action {
                *slot = pending.get(&planned.record.match_key).cloned();
            }
        }
        Ok(())
    }
}

/// Plans records with no snapshot entry: looked up in the key index, the records found read
/// from Stripe, a create saved by an interrupted run considered.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan_new(
    store: &StateStore,
    stripe: &StripeService,
    sync: &ValidatedSync,
    index: &KeyIndex<'_>,
    rules: &Rules<'_>,
    sync_name: &str,
    records: Vec<PreparedRecord>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Planned>, EngineError> {
    let object = sync.object.schema().object;
    let keys: Vec<String> = records.iter().map(|r| r.match_key.clone()).collect();
    let pending = store.pending_creates(sync_name, object, &keys).await?;
    let found = find_records(stripe, sync, index, &keys).await?;
    Ok(records
        .into_iter()
        .map(|record| {
            let known = match found.get(&record.match_key) {
                Some(Ok(records)) => Known::Found(records),
                Some(Err(reason)) => Known::LookupFailed(reason),
                None => Known::Found(&[]),
            };
            let saved = pending.get(&record.match_key);
            let action = plan(&record, known, saved, rules, now);
            let drops_pending = saved.is_some()
                && matches!(action, Action::Update { .. } | Action::Unchanged { .. });
            Planned {
                record,
                action,
                drops_pending,
            }
        })
        .collect())
}

/// For each key, the records Stripe holds under it: ids from the index, each read from Stripe
/// (its current state, and proof it still exists and still carries the key).
async fn find_records(
    stripe: &StripeService,
    sync: &ValidatedSync,
    index: &KeyIndex<'_>,
    keys: &[String],
) -> Result<HashMap<String, Result<Vec<StripeRecord>, String>>, EngineError> {
    let ids = index.lookup(&sync.key, keys).await?;
    let schema = sync.object.schema();
    let mut reads = Vec::new();
    for (key, ids) in &ids {
        for id in ids {
            reads.push((key.clone(), id.clone()));
        }
    }
    let mut found: HashMap<String, Result<Vec<StripeRecord>, String>> = HashMap::new();
    let mut waiting = reads.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut stale = Vec::new();
    loop {
        while in_flight.len() < READS_IN_FLIGHT {
            let Some((key, id)) = waiting.next() else {
                break;
            };
            in_flight.push(async move {
                let read = stripe.retrieve(schema, &id).await;
                (key, id, read)
            });
        }
        let Some((key, id, read)) = in_flight.next().await else {
            break;
        };
        match read {
            Err(StripeCallError::Unauthorized { message, .. }) => {
                return Err(EngineError::StripeKey(message))
            }
            Err(other) => {
                found.insert(key, Err(other.to_string()));
            }
            Ok(None) => stale.push(id),
            Ok(Some(record)) => {
                // The index may lag behind a key changed in Stripe: only a record that still
                // carries the key matches it.
                if sync.key.of_record(&record.object).as_deref() == Some(key.as_str()) {
                    if let Ok(records) = found.entry(key).or_insert_with(|| Ok(Vec::new())) {
                        records.push(record);
                    }
                } else {
                    index.remember(&[&record.object], false).await?;
                }
            }
        }
    }
    for id in stale {
        index.forget(&id).await?;
    }
    for records in found.values_mut().flatten() {
        records.sort_by(|a, b| a.id.cmp(&b.id));
    }
    Ok(found)
}

/// Executes a chunk's plan: records that need no request settle at once and updates go out
/// concurrently; then the creates, under the account's create lock, after the index was
/// brought up to date and each create was looked up once more — another sync into the same
/// account may have created the same records since they were planned.
pub(crate) async fn execute_chunk(
    exec: &Execution<'_>,
    committer: &mut Committer<'_, '_>,
    planned: Vec<Planned>,
    index: Option<&KeyIndex<'_>>,
    sync: &ValidatedSync,
    rules: &Rules<'_>,
) -> Result<Ending, EngineError> {
    let (creates, others): (Vec<Planned>, Vec<Planned>) =
        planned.into_iter().partition(|p| p.action.is_create());
    if creates.is_empty() {
        let ending = dispatch(exec, committer, others).await?;
        // Updates may change a record's keys: the index hears of them now (or, when this run
        // never opened it, at its next refresh, from Stripe's events).
        match index {
            Some(index) => committer.remember_in_index(index).await?,
            None => committer.forget_written(),
        }
        return Ok(ending);
    }
    let index = index.expect("creates come from records looked up in the index");
    let give_up = || exec.cancelled() || !(exec.lock_held)();
    let Some(lock) = exec.store.lock_create_scope(&index.scope, &give_up).await? else {
        committer.not_attempted(creates.len() + others.len());
        if !(exec.lock_held)() {
            return Err(EngineError::LockLost);
        }
        return Ok(Ending::Cancelled);
    };
    let result = async {
        index.refresh_if_stale().await?;
        let creates = recheck_creates(exec, index, sync, rules, creates).await?;
        // Each create's idempotency key and body are durable before its first attempt, so
        // that a crash at any later point replays the same request instead of creating a
        // second record. (A key saved but never sent is harmless: the next run looks the
        // record up before replaying it.)
        let now = chrono::Utc::now();
        let mut new_pending = Vec::new();
        let creates: Vec<Planned> = creates
            .into_iter()
            .map(|mut planned| {
                if let Action::Create = planned.action {
                    let pending = new_pending_create(exec, &planned.record, now);
                    new_pending.push(pending.clone());
                    planned.action = Action::ReplayCreate {
                        pending,
                        from_earlier_run: false,
                    };
                }
                planned
            })
            .collect();
        if !new_pending.is_empty() {
            retry_state_write("saving pending creates", || {
                exec.store.save_pending_creates(
                    exec.sync_name,
                    exec.object.schema().object,
                    &new_pending,
                )
            })
            .await?;
        }
        // Creates and updates are separate endpoints with a rate limit each: interleaved, both
        // limits are used at once instead of one after the other.
        dispatch(exec, committer, interleave(others, creates)).await
    }
    .await;
    // What was created is in the index before the lock goes, so the next holder sees it.
    let remembered = committer.remember_in_index(index).await;
    lock.release().await;
    remembered?;
    result
}

/// `a` and `b` taken in turns (the rest of the longer at the end).
fn interleave(a: Vec<Planned>, b: Vec<Planned>) -> Vec<Planned> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return merged,
            (x, y) => merged.extend(x.into_iter().chain(y)),
        }
    }
}

/// Looks the creates up again in the freshly refreshed index; a record someone created since
/// the chunk was planned turns its create into an update (or nothing).
async fn recheck_creates(
    exec: &Execution<'_>,
    index: &KeyIndex<'_>,
    sync: &ValidatedSync,
    rules: &Rules<'_>,
    creates: Vec<Planned>,
) -> Result<Vec<Planned>, EngineError> {
    let keys: Vec<String> = creates.iter().map(|p| p.record.match_key.clone()).collect();
    let known = index.lookup(&sync.key, &keys).await?;
    if known.is_empty() {
        return Ok(creates);
    }
    let (taken, still_new): (Vec<Planned>, Vec<Planned>) = creates
        .into_iter()
        .partition(|p| known.contains_key(&p.record.match_key));
    tracing::info!(
        records = taken.len(),
        "Records to create were created meanwhile (another sync into this account?); updating them instead."
    );
    let records = taken.into_iter().map(|p| p.record).collect();
    let mut replanned = plan_new(
        exec.store,
        exec.stripe,
        sync,
        index,
        rules,
        exec.sync_name,
        records,
        chrono::Utc::now(),
    )
    .await?;
    replanned.extend(still_new);
    Ok(replanned)
}

/// The snapshot of one sync and object, read a page at a time in key order; `find` must be
/// called with keys in ascending byte order.
struct SnapshotCursor<'a> {
    store: &'a StateStore,
    sync: &'a str,
    object: &'a str,
    page: Vec<SnapshotKey>,
    position: usize,
    exhausted: bool,
    /// The page after `page`, already being read: the workspace reads it while the engine
    /// walks this one (on two cores, the difference between waiting and not).
    next_page: Option<tokio::task::JoinHandle<Result<Vec<SnapshotKey>, ferry_state::StateError>>>,
}

impl<'a> SnapshotCursor<'a> {
    fn new(store: &'a StateStore, sync: &'a str, object: &'a str) -> SnapshotCursor<'a> {
        SnapshotCursor {
            store,
            sync,
            object,
            page: Vec::new(),
            position: 0,
            exhausted: false,
            next_page: None,
        }
    }

    /// The entry of `key`, passing the smaller ones; `None` walks to the end. With `log`
    /// (Mirror), every entry passed is logged, as absent from the model or (the one found)
    /// present; a found entry is consumed.
    async fn find(
        &mut self,
        key: Option<&str>,
        mut log: Option<&mut AbsentLog>,
    ) -> Result<Option<&SnapshotKey>, EngineError> {
        loop {
            while self.position < self.page.len()
                && key.is_none_or(|key| self.page[self.position].key.as_str() < key)
            {
                if let Some(log) = log.as_deref_mut() {
                    let entry = &self.page[self.position];
                    log.walked(&entry.key, &entry.destination_id, false)?;
                }
                self.position += 1;
            }
            if let (Some(key), true) = (key, self.position < self.page.len()) {
                if self.page[self.position].key != key {
                    return Ok(None);
                }
                self.position += 1;
                let entry = &self.page[self.position - 1];
                if let Some(log) = log {
                    log.walked(&entry.key, &entry.destination_id, true)?;
                }
                return Ok(Some(entry));
            }
            if self.exhausted {
                return Ok(None);
            }
            let page = match self.next_page.take() {
                Some(reading) => reading.await.map_err(|error| {
                    EngineError::State(ferry_state::StateError::Internal(format!(
                        "reading the snapshot stopped unexpectedly: {error}"
                    )))
                })??,
                // The first page.
                None => {
                    self.store
                        .snapshot_keys(self.sync, self.object, None, SNAPSHOT_PAGE)
                        .await?
                }
            };
            self.page = page;
            self.position = 0;
            self.exhausted = self.page.len() < SNAPSHOT_PAGE;
            if let (false, Some(last)) = (self.exhausted, self.page.last()) {
                // This run writes snapshot entries only for keys it has walked past, so the
                // page read ahead cannot go stale.
                let (store, sync, object) = (
                    self.store.clone(),
                    self.sync.to_string(),
                    self.object.to_string(),
                );
                let after = last.key.clone();
                self.next_page = Some(tokio::spawn(async move {
                    store
                        .snapshot_keys(&sync, &object, Some(&after), SNAPSHOT_PAGE)
                        .await
                }));
            }
        }
    }
}

/// What change detection in the warehouse needs to know of a sync, when its model's
/// connection turns it on: the key column, the columns the sync reads, and a fingerprint of
/// everything else that decides what a row becomes in Stripe (a change to any makes every row
/// travel once).
pub(crate) fn warehouse_diff_spec(setup: &SyncSetup) -> Result<Option<DiffSpec>, EngineError> {
    let Some(schema) = &setup.change_detection_schema else {
        return Ok(None);
    };
    // Mirror must see every row to tell what left the model; the warehouse would send only
    // the changed ones.
    if setup.sync.spec.behavior == Behavior::Mirror {
        return Ok(None);
    }
    // A record made of several rows (an invoice's lines) needs all of them to be folded, the
    // unchanged ones too.
    if ferry_destinations::stripe::stripe_object(setup.sync.spec.object)
        .lines()
        .is_some()
    {
        return Ok(None);
    }
    let spec = &setup.sync.spec;
    let mut columns = vec![spec.key.column.clone()];
    for column in spec.mappings.iter().flat_map(FieldMapping::columns_read) {
        if !columns.contains(&column) {
            columns.push(column);
        }
    }
    let validated =
        crate::prepare::validate_sync(spec, &columns).map_err(EngineError::InvalidSync)?;
    let mut decisive = spec.clone();
    decisive.schedule = None;
    let described = serde_json::to_string(&decisive).unwrap_or_default();
    let fingerprint =
        ferry_core::payload::hash_canonical_json(&format!("ferry change detection 1\n{described}"));
    Ok(Some(DiffSpec {
        schema: schema.clone(),
        sync_uid: setup.sync.uid.clone(),
        sync_name: setup.sync.name.clone(),
        key_column: spec.key.column.clone(),
        key_ignores_case: validated.key.ignore_case,
        columns,
        fingerprint,
    }))
}

/// A directory for the run's spilled records, removed when dropped: inside the workspace
/// directory (the same disk as the state, and private to the user).
fn scratch_dir(store: &StateStore) -> Result<tempfile::TempDir, EngineError> {
    let parent = store.workspace_dir().join("scratch");
    std::fs::create_dir_all(&parent).map_err(|e| {
        EngineError::Config(format!(
            "cannot create the scratch directory {}: {e}",
            parent.display()
        ))
    })?;
    tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&parent)
        .map_err(|e| {
            EngineError::Config(format!(
                "cannot create a scratch directory in {}: {e}",
                parent.display()
            ))
        })
}
