//! From model rows to records ready to sync: the sync spec checked against the model's
//! columns and the Stripe object's fields, and each row mapped and checked against Stripe's
//! rules. Pure: a row that cannot be synced becomes a rejection with a reason, never an error.
//! (Duplicate keys are found later, once the records are sorted by key: see `stage.rs`.)

use ferry_core::{
    Behavior, FieldValue, MappingSource, NullPolicy, Payload, SyncSpec, TemplatePart, Value,
};
use ferry_destinations::stripe::encoder::param_path;
use ferry_destinations::stripe::fields::{parse_field, MappedField, MappedKey};
use ferry_destinations::stripe::{stripe_object, FieldKind, Retirement, StripeObject};
use ferry_stripe_wire::params::{is_valid_email, METADATA_MAX_KEYS};
use std::collections::HashMap;

/// A sync spec whose columns exist in the model and whose fields exist in Stripe.
#[derive(Debug, Clone)]
pub struct ValidatedSync {
    pub object: &'static dyn StripeObject,
    pub key_column: String,
    pub key_column_index: usize,
    pub key: MappedKey,
    pub mappings: Vec<ValidatedMapping>,
    pub nulls: NullPolicy,
}

#[derive(Debug, Clone)]
pub struct ValidatedMapping {
    /// As the user wrote it: a column, a `'constant'` or a `{{template}}` (for messages).
    pub column: String,
    pub source: ValidatedSource,
    pub field: MappedField,
}

/// A mapping's source with its columns found in the model.
#[derive(Debug, Clone)]
pub enum ValidatedSource {
    Column(usize),
    Constant(Value),
    Template(Vec<ValidatedPart>),
}

#[derive(Debug, Clone)]
pub enum ValidatedPart {
    Text(String),
    Column(usize),
}

impl ValidatedMapping {
    /// The mapping's value for a row: a column's value, the constant, or the template filled
    /// in. A NULL fills a template's place with nothing; a template that gives no text at all
    /// is NULL, so the sync's NULL policy applies to it as to a column.
    fn value<'r>(&'r self, row: &'r [Value]) -> Result<std::borrow::Cow<'r, Value>, String> {
        use std::borrow::Cow;
        match &self.source {
            ValidatedSource::Column(index) => Ok(Cow::Borrowed(&row[*index])),
            ValidatedSource::Constant(value) => Ok(Cow::Borrowed(value)),
            ValidatedSource::Template(parts) => {
                let mut text = String::new();
                for part in parts {
                    match part {
                        ValidatedPart::Text(piece) => text.push_str(piece),
                        ValidatedPart::Column(index) => {
                            if let Some(value) =
                                row[*index].to_scalar_text().map_err(|e| e.to_string())?
                            {
                                text.push_str(&value);
                            }
                        }
                    }
                }
                Ok(Cow::Owned(if text.trim().is_empty() {
                    Value::Null
                } else {
                    Value::Text(text)
                }))
            }
        }
    }
}

impl ValidatedSync {
    /// The key's field path (`email`, `metadata.user_id`): also its name in the key index.
    pub fn key_path(&self) -> &str {
        &self.key.field.path
    }

    /// The key as used for matching: emails compare trimmed and case-insensitively, external
    /// ids trimmed.
    pub fn match_key(&self, key: &str) -> String {
        self.key.normalize(key)
    }

    /// The column that feeds a field path, for error messages.
    pub fn column_for_field(&self, path: &str) -> Option<&str> {
        if self.key.field.path == path {
            return Some(&self.key_column);
        }
        self.mappings
            .iter()
            .find(|m| m.field.path == path)
            .map(|m| m.column.as_str())
    }

    /// Paths compared ignoring case when diffing against Stripe (the email used as the key).
    pub fn case_insensitive_paths(&self) -> Vec<&str> {
        if self.key.ignore_case {
            vec![self.key.field.path.as_str()]
        } else {
            Vec::new()
        }
    }
}

/// Checks a spec against the model's column names. Every problem is listed, each saying
/// what is valid, so a user fixes them all at once.
pub fn validate_sync(spec: &SyncSpec, columns: &[String]) -> Result<ValidatedSync, Vec<String>> {
    let object = stripe_object(spec.object);
    let schema = object.schema();
    let mut problems = Vec::new();
    let column_index = |name: &str, problems: &mut Vec<String>, role: &str| -> Option<usize> {
        let index = columns.iter().position(|c| c == name);
        if index.is_none() {
            problems.push(format!(
                "{role} column `{name}` is not in the model; its columns are: {}",
                columns.join(", ")
            ));
        }
        index
    };
    if spec.behavior == Behavior::Mirror {
        if let Retirement::Delete = object.retirement() {
            if !spec.mirror.delete_customers {
                problems.push(format!(
                    "Mirror retires {} whose rows left the model by deleting them, which Stripe cannot undo (payment methods and subscriptions go too): opt in with `--delete-customers` (`mirror: {{delete_customers: true}}` in ferry.yaml), or choose update-or-create",
                    schema.plural
                ));
            }
        }
        if spec.mirror.max_retire_percent > 100 {
            problems.push(format!(
                "max_retire_percent is {}; give a percentage from 0 to 100",
                spec.mirror.max_retire_percent
            ));
        }
    }
    // An invoice from order lines needs the column telling its lines apart; it becomes the
    // line key every invoice item carries in its metadata.
    let mut line_key_mapping = None;
    match (object.lines(), &spec.invoice) {
        (Some(_), Some(invoice)) => {
            if let Some(index) = column_index(&invoice.line_key, &mut problems, "line key") {
                if let Ok(field) = parse_field(schema, crate::lines::LINE_KEY_PATH) {
                    line_key_mapping = Some(ValidatedMapping {
                        column: invoice.line_key.clone(),
                        source: ValidatedSource::Column(index),
                        field,
                    });
                }
            }
        }
        (Some(_), None) => problems.push(format!(
            "a {object} sync reads one model row per line: name the column that tells an {object}'s lines apart with `--line-key COLUMN` (`invoice: {{line_key: COLUMN}}` in ferry.yaml)",
            object = schema.object
        )),
        (None, Some(_)) => problems.push(format!(
            "`line_key` and `finalize` are settings of invoice syncs; a {} sync has no lines: leave them out",
            schema.object
        )),
        (None, None) => {}
    }
    let key_column_index = column_index(&spec.key.column, &mut problems, "key");
    let key = MappedKey::new(schema, &spec.key.field)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let mut mappings = Vec::new();
    let mut seen_fields: HashMap<String, String> = HashMap::new();
    if let Some(key) = &key {
        seen_fields.insert(key.field.path.clone(), spec.key.column.clone());
    }
    if let Some(line_key) = line_key_mapping {
        seen_fields.insert(line_key.field.path.clone(), line_key.column.clone());
        mappings.push(line_key);
    }
    for mapping in &spec.mappings {
        let source = match mapping.source() {
            Ok(MappingSource::Column(column)) => {
                column_index(&column, &mut problems, "mapped").map(ValidatedSource::Column)
            }
            Ok(MappingSource::Constant(text)) => Some(ValidatedSource::Constant(Value::Text(text))),
            Ok(MappingSource::Template(parts)) => {
                let mut validated = Vec::new();
                for part in parts {
                    validated.push(match part {
                        TemplatePart::Text(text) => Some(ValidatedPart::Text(text)),
                        TemplatePart::Column(column) => {
                            column_index(&column, &mut problems, "template")
                                .map(ValidatedPart::Column)
                        }
                    });
                }
                validated
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(ValidatedSource::Template)
            }
            Err(problem) => {
                problems.push(problem);
                None
            }
        };
        let field = match parse_field(schema, &mapping.field) {
            Ok(field) => field,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        if let Some(other) = seen_fields.get(&field.path) {
            if *other == mapping.column {
                continue; // `--key email=email --map email=email` says the same thing twice.
            }
            problems.push(format!(
                "field `{}` is mapped from both `{other}` and `{}`; map each field once",
                field.path, mapping.column
            ));
            continue;
        }
        seen_fields.insert(field.path.clone(), mapping.column.clone());
        if let Some(source) = source {
            mappings.push(ValidatedMapping {
                column: mapping.column.clone(),
                source,
                field,
            });
        }
    }
    // Mirror makes the model the truth: a record whose row is in the model is active, so a
    // product or price archived because its row left comes back to life when the row returns,
    // and a subscription set to cancel at period end goes on.
    let revived = match object.retirement() {
        Retirement::Delete => None,
        Retirement::Cancel => Some(("cancel_at_period_end", "false")),
        _ => Some(("active", "true")),
    };
    if let (Behavior::Mirror, Some((path, value))) = (spec.behavior, revived) {
        if !seen_fields.contains_key(path) {
            if let Ok(field) = parse_field(schema, path) {
                mappings.push(ValidatedMapping {
                    column: format!("'{value}'"),
                    source: ValidatedSource::Constant(Value::Text(value.into())),
                    field,
                });
            }
        }
    }
    let metadata_fields = seen_fields
        .keys()
        .filter(|p| p.starts_with("metadata."))
        .count();
    if metadata_fields > METADATA_MAX_KEYS {
        problems.push(format!(
            "{metadata_fields} metadata fields are mapped; Stripe allows at most {METADATA_MAX_KEYS} keys per {}",
            schema.object
        ));
    }
    let mapped: Vec<&str> = seen_fields.keys().map(String::as_str).collect();
    problems.extend(schema.missing_companions(&mapped));
    match (key_column_index, key) {
        (Some(key_column_index), Some(key)) if problems.is_empty() => Ok(ValidatedSync {
            object,
            key_column: spec.key.column.clone(),
            key_column_index,
            key,
            mappings,
            nulls: spec.nulls,
        }),
        _ => Err(problems),
    }
}

/// A row mapped to the record ferry wants in Stripe.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRecord {
    /// 1-based position in the model's result.
    pub row_number: u64,
    /// The key as written in the model, trimmed.
    pub key: String,
    /// The key as matched (lower-cased for emails).
    pub match_key: String,
    pub payload: Payload,
    /// The payload as canonical JSON text, and its hash (written once, used by the snapshot).
    pub payload_json: String,
    pub payload_hash: String,
    /// With change detection in the warehouse: the row's key and hash as the warehouse computed
    /// them, written back once Stripe's answer for the record is committed.
    pub warehouse_ack: Option<WarehouseAck>,
}

/// A row's key and hash as the warehouse computed them (`ferry_source::warehouse_diff`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WarehouseAck {
    pub key: String,
    pub hash: String,
}

impl PreparedRecord {
    pub fn new(
        row_number: u64,
        key: String,
        match_key: String,
        payload: Payload,
    ) -> PreparedRecord {
        let payload_json = payload.canonical_json();
        PreparedRecord {
            payload_hash: ferry_core::payload::hash_canonical_json(&payload_json),
            payload_json,
            row_number,
            key,
            match_key,
            payload,
            warehouse_ack: None,
        }
    }
}

/// A row that cannot be synced, with the reason in words.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    pub row_number: u64,
    pub key: String,
    pub reason: String,
}

/// A row mapped to its record and checked against Stripe's rules: [`map_row`], then
/// [`check_stripe_rules`].
pub fn prepare_row(
    sync: &ValidatedSync,
    row_number: u64,
    row: &[Value],
) -> Result<PreparedRecord, RejectedRow> {
    let record = map_row(sync, row_number, row)?;
    check_stripe_rules(sync, &record)?;
    Ok(record)
}

/// A row mapped to its record: the key checked, each mapped column converted to its field.
/// Stripe's rules between parameters are left to [`check_stripe_rules`], which the engine runs
/// only on records it will send: a row whose payload equals ferry's last write was accepted by
/// Stripe then, and checking it again cost a fifth of a preview's time.
pub fn map_row(
    sync: &ValidatedSync,
    row_number: u64,
    row: &[Value],
) -> Result<PreparedRecord, RejectedRow> {
    let raw_key = &row[sync.key_column_index];
    let reject = |key: &str, reason: String| RejectedRow {
        row_number,
        key: key.to_string(),
        reason,
    };
    let key = match raw_key.to_scalar_text() {
        Ok(Some(text)) if !text.trim().is_empty() => text.trim().to_string(),
        Ok(_) => {
            return Err(reject(
                "",
                format!("missing key: column `{}` is empty", sync.key_column),
            ));
        }
        Err(e) => return Err(reject("", format!("key column `{}` {e}", sync.key_column))),
    };
    if let Some(problem) = key_text_problem(sync, &key) {
        return Err(reject(&key, problem));
    }
    if matches!(sync.key.field.kind, FieldKind::Email { .. }) && !is_valid_email(&key) {
        return Err(reject(
            &key,
            format!(
                "`{key}` in column `{}` is not a valid email address",
                sync.key_column
            ),
        ));
    }
    let mut payload = Payload::default();
    payload
        .fields
        .insert(sync.key.field.path.clone(), FieldValue::Text(key.clone()));
    for mapping in &sync.mappings {
        let converted = mapping
            .value(row)
            .and_then(|value| mapping.field.convert(&value));
        match converted {
            Ok(Some(value)) => {
                payload.fields.insert(mapping.field.path.clone(), value);
            }
            Ok(None) => {
                if sync.nulls == NullPolicy::Clear {
                    if let Some(cleared) = mapping.field.cleared_value() {
                        payload.fields.insert(mapping.field.path.clone(), cleared);
                    }
                }
            }
            Err(problem) => {
                return Err(reject(
                    &key,
                    format!(
                        "column `{}` (→ {}) {problem}",
                        mapping.column, mapping.field.path
                    ),
                ));
            }
        }
    }
    Ok(PreparedRecord::new(
        row_number,
        key.clone(),
        sync.match_key(&key),
        payload,
    ))
}

/// Stripe's own rules, checked on the params a create would send (structure, required parts,
/// metadata limits, the object's rules between parameters).
pub fn check_stripe_rules(
    sync: &ValidatedSync,
    record: &PreparedRecord,
) -> Result<(), RejectedRow> {
    let params = sync.object.create_params(&record.payload);
    let (error, prefix) = match sync.object.schema().validate(&params, false) {
        Err(error) => (error, ""),
        Ok(()) => match sync
            .object
            .lines()
            .and_then(|lines| crate::lines::check_lines(lines, &params, &record.payload).err())
        {
            Some(error) => (error, "lines."),
            None => return Ok(()),
        },
    };
    let path = format!("{prefix}{}", param_path(&error.param));
    let column = sync
        .column_for_field(&path)
        .map(|c| format!("column `{c}` (→ {path}): "))
        .unwrap_or_default();
    Err(RejectedRow {
        row_number: record.row_number,
        key: record.key.clone(),
        reason: format!("{column}{error}"),
    })
}

fn key_text_problem(sync: &ValidatedSync, key: &str) -> Option<String> {
    sync.key
        .field
        .convert(&Value::Text(key.to_string()))
        .err()
        .map(|problem| format!("key column `{}` {problem}", sync.key_column))
}

/// The reason every copy of a duplicated key is rejected: ferry cannot know which copy is
/// right, and syncing one of them at random would flap between runs. `others` are the row
/// numbers of the other copies (the first few, when there are many).
pub fn duplicate_reason(key: &str, others: &[u64], more: u64) -> String {
    let mut rows: Vec<String> = others.iter().map(u64::to_string).collect();
    if more > 0 {
        rows.push(format!("and {more} more"));
    }
    let plural = if others.len() as u64 + more == 1 {
        ""
    } else {
        "s"
    };
    format!(
        "duplicate key: `{key}` also appears in row{plural} {} of the model (keys compare trimmed and, for emails, ignoring case); keep one row per key",
        rows.join(", ")
    )
}

/// Rejects every copy of a key that appears more than once, for records already in memory
/// (tests and small callers; a run finds duplicates in its sorted stream instead).
pub fn reject_duplicate_keys(
    records: Vec<PreparedRecord>,
) -> (Vec<PreparedRecord>, Vec<RejectedRow>) {
    let mut rows_by_key: HashMap<&str, Vec<u64>> = HashMap::new();
    for record in &records {
        rows_by_key
            .entry(&record.match_key)
            .or_default()
            .push(record.row_number);
    }
    let duplicated: HashMap<String, Vec<u64>> = rows_by_key
        .into_iter()
        .filter(|(_, rows)| rows.len() > 1)
        .map(|(key, rows)| (key.to_string(), rows))
        .collect();
    if duplicated.is_empty() {
        return (records, Vec::new());
    }
    let mut kept = Vec::with_capacity(records.len());
    let mut rejected = Vec::new();
    for record in records {
        match duplicated.get(&record.match_key) {
            Some(rows) => {
                let others: Vec<u64> = rows
                    .iter()
                    .copied()
                    .filter(|r| *r != record.row_number)
                    .collect();
                rejected.push(RejectedRow {
                    row_number: record.row_number,
                    reason: duplicate_reason(&record.key, &others, 0),
                    key: record.key,
                });
            }
            None => kept.push(record),
        }
    }
    (kept, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{Behavior, FieldMapping, KeyMapping, ObjectKind};

    fn spec(key: (&str, &str), maps: &[(&str, &str)], nulls: NullPolicy) -> SyncSpec {
        SyncSpec {
            invoice: None,
            model: "m".into(),
            destination: "d".into(),
            object: ObjectKind::Customer,
            behavior: Behavior::UpdateOrCreate,
            key: KeyMapping {
                column: key.0.into(),
                field: key.1.into(),
            },
            mappings: maps
                .iter()
                .map(|(c, f)| FieldMapping {
                    column: c.to_string(),
                    field: f.to_string(),
                })
                .collect(),
            nulls,
            schedule: None,
            alerts: None,
            mirror: Default::default(),
        }
    }

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn validation_lists_every_problem_with_what_is_valid() {
        let problems = validate_sync(
            &spec(
                ("mail", "email"),
                &[
                    ("full_name", "nmae"),
                    ("plan", "metadata.plan"),
                    ("tier", "metadata.plan"),
                ],
                NullPolicy::Skip,
            ),
            &columns(&["email", "plan", "tier"]),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert_eq!(
            problems[0],
            "key column `mail` is not in the model; its columns are: email, plan, tier"
        );
        assert!(problems[1].contains("mapped column `full_name` is not in the model"));
        assert!(
            problems[2].contains("`nmae` is not a Stripe Customer field (did you mean `name`?)")
        );
        assert_eq!(
            problems[3],
            "field `metadata.plan` is mapped from both `plan` and `tier`; map each field once"
        );
    }

    #[test]
    fn rows_map_or_are_rejected_with_a_reason() {
        let sync = validate_sync(
            &spec(
                ("email", "email"),
                &[
                    ("name", "name"),
                    ("phone", "phone"),
                    ("plan", "metadata.plan"),
                ],
                NullPolicy::Skip,
            ),
            &columns(&["email", "name", "phone", "plan"]),
        )
        .unwrap();
        let ok = prepare_row(
            &sync,
            1,
            &[
                text(" Ada@Example.com "),
                text("Ada"),
                Value::Null,
                Value::Int(3),
            ],
        )
        .unwrap();
        assert_eq!(ok.key, "Ada@Example.com");
        assert_eq!(ok.match_key, "ada@example.com");
        assert_eq!(
            ok.payload.to_json().to_string(),
            r#"{"email":"Ada@Example.com","metadata.plan":"3","name":"Ada"}"#
        );

        let reason = |row: &[Value]| prepare_row(&sync, 2, row).unwrap_err().reason;
        assert_eq!(
            reason(&[Value::Null, text("x"), Value::Null, Value::Null]),
            "missing key: column `email` is empty"
        );
        assert_eq!(
            reason(&[text("  "), text("x"), Value::Null, Value::Null]),
            "missing key: column `email` is empty"
        );
        assert_eq!(
            reason(&[text("not-an-email"), text("x"), Value::Null, Value::Null]),
            "`not-an-email` in column `email` is not a valid email address"
        );
        assert_eq!(
            reason(&[
                text("a@b.co"),
                text("x"),
                text("+1 555 0100 0100 0100 99"),
                Value::Null
            ]),
            "column `phone` (→ phone) is 24 characters long; Stripe allows at most 20"
        );
        assert_eq!(
            reason(&[
                text("a@b.co"),
                text("x"),
                Value::Null,
                Value::Float(f64::NAN)
            ]),
            "column `plan` (→ metadata.plan) is not a finite number (NaN)"
        );
    }

    #[test]
    fn clear_policy_turns_nulls_into_unsets() {
        let sync = validate_sync(
            &spec(("email", "email"), &[("name", "name")], NullPolicy::Clear),
            &columns(&["email", "name"]),
        )
        .unwrap();
        let record = prepare_row(&sync, 1, &[text("a@b.co"), Value::Null]).unwrap();
        assert_eq!(record.payload.get("name"), Some(&FieldValue::Clear));
    }

    #[test]
    fn clear_leaves_alone_what_stripe_cannot_unset() {
        let sync = validate_sync(
            &spec(
                ("email", "email"),
                &[
                    ("b", "balance"),
                    ("p", "invoice_prefix"),
                    ("t", "tax_exempt"),
                ],
                NullPolicy::Clear,
            ),
            &columns(&["email", "b", "p", "t"]),
        )
        .unwrap();
        let record = prepare_row(
            &sync,
            1,
            &[text("a@b.co"), Value::Null, Value::Null, Value::Null],
        )
        .unwrap();
        assert_eq!(
            record.payload.to_json().to_string(),
            r#"{"email":"a@b.co","tax_exempt":"none"}"#
        );
    }

    #[test]
    fn duplicate_keys_reject_every_copy_and_name_the_others() {
        let sync = validate_sync(
            &spec(("email", "email"), &[], NullPolicy::Skip),
            &columns(&["email"]),
        )
        .unwrap();
        let records: Vec<PreparedRecord> = ["a@b.co", "x@y.co", " A@B.CO", "a@b.co"]
            .iter()
            .enumerate()
            .map(|(i, e)| prepare_row(&sync, i as u64 + 1, &[text(e)]).unwrap())
            .collect();
        let (kept, rejected) = reject_duplicate_keys(records);
        assert_eq!(
            kept.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["x@y.co"]
        );
        assert_eq!(rejected.len(), 3);
        assert!(
            rejected[0]
                .reason
                .starts_with("duplicate key: `a@b.co` also appears in rows 3, 4 of the model"),
            "{}",
            rejected[0].reason
        );
        assert!(
            rejected[1]
                .reason
                .starts_with("duplicate key: `A@B.CO` also appears in rows 1, 4"),
            "{}",
            rejected[1].reason
        );
    }
}
