//! Mirror: retiring the records ferry synced whose rows left the model.
//!
//! While the run merges the model with the snapshot (both in key order), every snapshot entry
//! the walk passes without a row is absent from the model. Absent entries are written to a file
//! in the run's scratch directory (memory stays flat whatever the snapshot's size), then, once
//! the whole model was read, retired a chunk at a time: a customer deleted, a product deleted
//! (archived when it has prices), a price archived after its product stops naming it as its
//! default. A record is forgotten from the snapshot only once Stripe confirmed its retirement,
//! so a failed one is tried again by the next run.
//!
//! What is never retired: the record of a row that is in the model but was rejected (a bad
//! value, a duplicated key), and anything at all when the run would retire more than the
//! sync's limit (10% by default) of its records, unless the run is told `--allow-mass-retire`:
//! an empty or truncated model is far likelier than a real mass departure.

use crate::execute::{settled, short_hash, Execution, Settled};
use crate::prepare::PreparedRecord;
use crate::EngineError;
use ferry_core::{MirrorSettings, Outcome};
use ferry_destinations::stripe::{Retirement, StripeCallError};
use ferry_stripe_wire::form;
use serde_json::{Map, Value as Json};
use std::collections::HashSet;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

/// Keys of rows rejected before the merge that are remembered to protect their records; past
/// this many, the run retires nothing (it cannot tell what left the model).
const PROTECTED_KEYS_MAX: usize = 100_000;

/// What the merge learns about the model's departures.
pub(crate) struct AbsentLog {
    file: BufWriter<std::fs::File>,
    path: std::path::PathBuf,
    /// Entries written.
    pub(crate) absent: u64,
    /// Snapshot entries walked (present and absent): the sync's records.
    pub(crate) walked: u64,
    /// Keys in the model whose rows were rejected before the merge.
    protected: HashSet<String>,
    /// Why nothing may be retired this run, when something makes the model's keys uncertain.
    pub(crate) blocked: Option<String>,
}

impl AbsentLog {
    pub(crate) fn create(scratch: &Path) -> Result<AbsentLog, EngineError> {
        let path = scratch.join("absent.jsonl");
        let file = std::fs::File::create(&path).map_err(|error| {
            EngineError::Config(format!(
                "cannot write the list of records to retire in {}: {error}",
                scratch.display()
            ))
        })?;
        Ok(AbsentLog {
            file: BufWriter::new(file),
            path,
            absent: 0,
            walked: 0,
            protected: HashSet::new(),
            blocked: None,
        })
    }

    /// A row with this key is in the model but was rejected: its record stays.
    pub(crate) fn protect(&mut self, match_key: String) {
        if self.protected.len() >= PROTECTED_KEYS_MAX {
            self.blocked = Some(format!(
                "more than {PROTECTED_KEYS_MAX} rows were rejected, so what left the model cannot be told apart from what failed to read; fix the rejected rows"
            ));
            return;
        }
        self.protected.insert(match_key);
    }

    /// A snapshot entry the merge walked: `present` when the model has its key.
    pub(crate) fn walked(
        &mut self,
        key: &str,
        destination_id: &str,
        present: bool,
    ) -> Result<(), EngineError> {
        self.walked += 1;
        if present || self.protected.contains(key) {
            return Ok(());
        }
        self.absent += 1;
        serde_json::to_writer(&mut self.file, &(key, destination_id))
            .map_err(std::io::Error::from)
            .and_then(|()| self.file.write_all(b"\n"))
            .map_err(|error| {
                EngineError::Config(format!(
                    "cannot write the list of records to retire: {error}"
                ))
            })
    }

    /// The absent entries, `(key, destination id)`, in chunks of `size`.
    pub(crate) fn into_chunks(
        mut self,
        size: usize,
    ) -> Result<impl Iterator<Item = Result<Vec<(String, String)>, EngineError>>, EngineError> {
        let unreadable = |error: std::io::Error| {
            EngineError::Config(format!(
                "cannot read the list of records to retire: {error}"
            ))
        };
        self.file.flush().map_err(unreadable)?;
        let reader = std::io::BufReader::new(std::fs::File::open(&self.path).map_err(unreadable)?);
        let mut lines = reader.lines();
        Ok(std::iter::from_fn(move || {
            let mut chunk = Vec::new();
            for line in lines.by_ref() {
                let entry = line.map_err(unreadable).and_then(|line| {
                    serde_json::from_str::<(String, String)>(&line).map_err(|error| {
                        EngineError::Config(format!(
                            "the list of records to retire is damaged: {error}"
                        ))
                    })
                });
                match entry {
                    Ok(entry) => chunk.push(entry),
                    Err(error) => return Some(Err(error)),
                }
                if chunk.len() == size {
                    break;
                }
            }
            (!chunk.is_empty()).then_some(Ok(chunk))
        }))
    }
}

/// Why a run may not retire `absent` of the sync's `total` records; `None` when it may.
pub(crate) fn mass_retire_refusal(
    absent: u64,
    total: u64,
    settings: &MirrorSettings,
    allowed: bool,
    plural: &str,
) -> Option<String> {
    if allowed || absent == 0 || absent * 100 <= u64::from(settings.max_retire_percent) * total {
        return None;
    }
    Some(format!(
        "retired nothing: {absent} of the sync's {total} {plural} left the model ({}%), more than its limit of {}%. An empty or truncated model (a failed upstream job?) looks just like this: check the model, then run with --allow-mass-retire to retire them, or raise the sync's max_retire_percent",
        absent * 100 / total.max(1),
        settings.max_retire_percent,
    ))
}

/// Retires one record, as its object retires records.
pub(crate) async fn retire(
    exec: &Execution<'_>,
    record: &PreparedRecord,
    id: &str,
) -> Result<Settled, EngineError> {
    let (key, row_number) = (record.match_key.as_str(), record.row_number);
    let schema = exec.schema();
    let done = |how: &str, request_id: Option<String>, gone: bool| {
        let mut done = settled(
            row_number,
            key,
            Outcome::Retired,
            Some(id.to_string()),
            Some(format!("its row left the model: {how}")),
            request_id,
            None,
        );
        done.forget = Some(key.to_string());
        if gone {
            done.gone = Some(id.to_string());
        }
        Ok(done)
    };
    let failed = |doing: &str, error: StripeCallError| {
        if let StripeCallError::Unauthorized { message, .. } = error {
            return Err(EngineError::StripeKey(message));
        }
        Ok(settled(
            row_number,
            key,
            Outcome::Failed,
            Some(id.to_string()),
            Some(format!(
                "its row left the model, but ferry could not {doing}: {error}; the next run tries again"
            )),
            error.request_id().map(str::to_string),
            None,
        ))
    };
    let archive = |step: &str| {
        let body = form::encode(&Map::from_iter([(
            "active".to_string(),
            Json::String("false".into()),
        )]));
        (body, step_key(exec, key, step))
    };
    match exec.object.retirement() {
        retirement @ (Retirement::Delete | Retirement::DeleteElseArchive) => {
            match exec.stripe.delete(schema, id).await {
                Ok(deleted) => done("deleted", deleted.request_id, true),
                Err(StripeCallError::Refused { status: 404, .. }) => {
                    done("deleted (already gone from Stripe)", None, true)
                }
                // Stripe keeps a product that has prices: it is archived instead.
                Err(StripeCallError::Refused { status: 400, .. })
                    if matches!(retirement, Retirement::DeleteElseArchive) =>
                {
                    let (body, idempotency_key) = archive("archive");
                    match exec
                        .stripe
                        .update(schema, id, &body, &idempotency_key)
                        .await
                    {
                        Ok(archived) => done(
                            &format!(
                                "archived (Stripe keeps a {} that has prices)",
                                schema.object
                            ),
                            archived.request_id,
                            false,
                        ),
                        Err(error) => failed(&format!("archive {} `{id}`", schema.object), error),
                    }
                }
                Err(error) => failed(&format!("delete {} `{id}`", schema.object), error),
            }
        }
        Retirement::DeleteDraft => match exec.stripe.delete(schema, id).await {
            Ok(deleted) => done("deleted (a draft)", deleted.request_id, true),
            Err(StripeCallError::Refused { status: 404, .. }) => {
                done("deleted (already gone from Stripe)", None, true)
            }
            // Stripe deletes drafts only: a finalized invoice is voided, when the sync says so.
            Err(StripeCallError::Refused { status: 400, .. }) if exec.mirror.void_open_invoices => {
                match exec
                    .stripe
                    .act(schema, id, "void", "", &step_key(exec, key, "void"))
                    .await
                {
                    Ok(voided) => done("voided (it was finalized)", voided.request_id, false),
                    Err(error) => failed(&format!("void {} `{id}`", schema.object), error),
                }
            }
            Err(StripeCallError::Refused { status: 400, .. }) => Ok(settled(
                row_number,
                key,
                Outcome::Failed,
                Some(id.to_string()),
                Some(format!(
                    "its row left the model, but {} `{id}` is finalized, so Stripe does not delete it: void it in Stripe, or let the sync void finalized {} (`--void-open`, `mirror: {{void_open_invoices: true}}`)",
                    schema.object, schema.plural
                )),
                None,
                None,
            )),
            Err(error) => failed(&format!("delete {} `{id}`", schema.object), error),
        },
        Retirement::Cancel if exec.mirror.cancel_subscriptions_now => {
            match exec.stripe.delete(schema, id).await {
                Ok(cancelled) => done("cancelled at once", cancelled.request_id, false),
                // Stripe refuses to cancel a canceled subscription again (or it is gone).
                Err(StripeCallError::Refused {
                    status: 400 | 404, ..
                }) => done("cancelled (it already was)", None, false),
                Err(error) => failed(&format!("cancel {} `{id}`", schema.object), error),
            }
        }
        Retirement::Cancel => {
            let body = form::encode(&Map::from_iter([(
                "cancel_at_period_end".to_string(),
                Json::String("true".into()),
            )]));
            let idempotency_key = step_key(exec, key, "cancel");
            match exec
                .stripe
                .update(schema, id, &body, &idempotency_key)
                .await
            {
                Ok(cancelling) => done(
                    "cancelled at the end of the period already paid for",
                    cancelling.request_id,
                    false,
                ),
                Err(error) => failed(&format!("cancel {} `{id}`", schema.object), error),
            }
        }
        Retirement::Archive {
            parent_field,
            parent,
            parent_default,
        } => {
            let record = match exec.stripe.retrieve(schema, id).await {
                Ok(Some(record)) => record,
                Ok(None) => return done("already gone from Stripe", None, true),
                Err(error) => return failed(&format!("read {} `{id}`", schema.object), error),
            };
            if record.object["active"] == Json::Bool(false) {
                return done("archived (it already was)", None, false);
            }
            if let Some(parent_id) = record.object[parent_field].as_str() {
                match exec.stripe.retrieve(parent, parent_id).await {
                    Ok(Some(owner)) if owner.object[parent_default].as_str() == Some(id) => {
                        let body = form::encode(&Map::from_iter([(
                            parent_default.to_string(),
                            Json::String(String::new()),
                        )]));
                        let idempotency_key = step_key(exec, key, "default");
                        if let Err(error) = exec
                            .stripe
                            .update(parent, parent_id, &body, &idempotency_key)
                            .await
                        {
                            let doing = format!(
                                "unset it as the {parent_default} of {} `{parent_id}`",
                                parent.object
                            );
                            return failed(&doing, error);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        return failed(&format!("read {} `{parent_id}`", parent.object), error)
                    }
                }
            }
            let (body, idempotency_key) = archive("archive");
            match exec
                .stripe
                .update(schema, id, &body, &idempotency_key)
                .await
            {
                Ok(archived) => done("archived", archived.request_id, false),
                Err(error) => failed(&format!("archive {} `{id}`", schema.object), error),
            }
        }
    }
}

fn step_key(exec: &Execution<'_>, key: &str, step: &str) -> String {
    format!(
        "ferry-{}-x-{}-{}-{step}",
        exec.sync_uid,
        exec.run_id,
        short_hash(key, 20)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_retires_at_most_its_limit_unless_told_otherwise() {
        let limit = MirrorSettings::default();
        let refusal = |absent, total, allowed| {
            mass_retire_refusal(absent, total, &limit, allowed, "customers").is_some()
        };
        assert!(!refusal(0, 0, false));
        assert!(!refusal(10, 100, false), "10% is within a 10% limit");
        assert!(refusal(11, 100, false));
        assert!(!refusal(11, 100, true), "--allow-mass-retire");
        assert!(refusal(3, 3, false), "an emptied model");
        expect_test::expect![[r#"retired nothing: 50 of the sync's 200 customers left the model (25%), more than its limit of 10%. An empty or truncated model (a failed upstream job?) looks just like this: check the model, then run with --allow-mass-retire to retire them, or raise the sync's max_retire_percent"#]]
        .assert_eq(&mass_retire_refusal(50, 200, &limit, false, "customers").unwrap());
        let loose = MirrorSettings {
            max_retire_percent: 50,
            ..limit
        };
        assert!(mass_retire_refusal(50, 200, &loose, false, "customers").is_none());
    }

    /// Entries walked without a row are written, except those whose rows were rejected; they
    /// come back in chunks.
    #[test]
    fn absent_entries_are_listed_on_disk_and_read_back_in_chunks() {
        let scratch = tempfile::tempdir().unwrap();
        let mut log = AbsentLog::create(scratch.path()).unwrap();
        log.protect("b@x.co".into());
        for (key, present) in [
            ("a@x.co", true),
            ("b@x.co", false),
            ("c@x.co", false),
            ("d@x.co", false),
            ("e@x.co", false),
        ] {
            log.walked(key, &format!("cus_{}", &key[..1]), present)
                .unwrap();
        }
        assert_eq!((log.walked, log.absent), (5, 3));
        let chunks: Vec<Vec<(String, String)>> =
            log.into_chunks(2).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            chunks,
            vec![
                vec![
                    ("c@x.co".into(), "cus_c".into()),
                    ("d@x.co".into(), "cus_d".into())
                ],
                vec![("e@x.co".into(), "cus_e".into())],
            ]
        );
    }
}
