//! Deciding what each record needs: nothing, an update of some fields, a create, or a report.
//! A pure function of the record, what is known of it (ferry's last confirmed write, or the
//! records Stripe holds under its key), a create saved by an interrupted run, and the sync's
//! behaviour. The preview stops here; a run goes on to execute the plan.

use crate::prepare::PreparedRecord;
use ferry_core::{changed_fields, Baseline, Behavior, FieldValue, Payload};
use ferry_destinations::stripe::encoder::{held_by_record, is_request_option};
use ferry_destinations::stripe::{record_to_fields, Replacement, StripeRecord};
use ferry_state::PendingCreate;
use ferry_stripe_wire::{form, ObjectSchema};
use serde_json::{json, Map, Value as Json};

/// Stripe keeps an idempotency key for at least 24 hours; past this age a saved create is not
/// replayed (its key may be forgotten) but made anew under a new key.
pub(crate) const PENDING_CREATE_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(23);

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The payload equals what Stripe holds. `remember` when the snapshot should be written
    /// (the record was found by key, or its payload changed form but not value).
    Unchanged {
        destination_id: String,
        remember: bool,
    },
    Update {
        destination_id: String,
        changed: Vec<String>,
        changes: Json,
    },
    /// Every field set is sent (its description for previews: [`describe_create`]).
    Create,
    /// A create whose idempotency key and body are saved: sent with them, so that Stripe
    /// returns the record it made if an earlier attempt made one. `from_earlier_run`: an
    /// interrupted run saved it, and the lookup just now found no record with the key.
    ReplayCreate {
        pending: PendingCreate,
        from_earlier_run: bool,
    },
    /// The record cannot change in place (a price's amount changed): a new one takes over its
    /// key, becomes its parent's default if the old one was, and the old one is retired.
    /// `pending`: the create an interrupted replacement saved (the new record may exist).
    Replace {
        old_id: String,
        changes: Json,
        reason: String,
        pending: Option<PendingCreate>,
    },
    /// Mirror: the record's row left the model; it is deleted or archived (`how`).
    Retire {
        destination_id: String,
        how: &'static str,
    },
    NotFound,
    Reject {
        reason: String,
    },
    /// Stripe could not be asked (a lookup failed for good); retried next run.
    Fail {
        reason: String,
    },
}

impl Action {
    pub fn is_create(&self) -> bool {
        matches!(self, Action::Create | Action::ReplayCreate { .. })
    }

    /// The name previews and run logs use for it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Unchanged { .. } => "unchanged",
            Action::Update { .. } => "update",
            Action::Create | Action::ReplayCreate { .. } => "create",
            Action::Replace { .. } => "replace",
            Action::Retire { .. } => "retire",
            Action::NotFound => "not_found",
            Action::Reject { .. } => "reject",
            Action::Fail { .. } => "fail",
        }
    }
}

/// What is known of a record before deciding.
#[derive(Debug, Clone, Copy)]
pub enum Known<'a> {
    /// ferry's last confirmed write to this key, and the record's id.
    Remembered {
        destination_id: &'a str,
        last_write: &'a Payload,
    },
    /// The records Stripe holds under the key (none, one, or several), as Stripe returned them.
    Found(&'a [StripeRecord]),
    /// Stripe could not be asked.
    LookupFailed(&'a str),
}

/// The sync's settings that planning reads.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub schema: &'static ObjectSchema,
    pub behavior: Behavior,
    /// The key's path, and whether it compares ignoring case (an email).
    pub key_path: &'a str,
    pub key_ignores_case: bool,
    /// How the object's records are replaced when a create-only field changes (prices);
    /// used only when the sync's key is the one a replacement takes over.
    pub replacement: Option<&'static Replacement>,
}

impl Rules<'_> {
    fn replacement(&self) -> Option<&'static Replacement> {
        self.replacement
            .filter(|replacement| replacement.key_field == self.key_path)
    }
}

/// Plans one record. `pending`: a create an interrupted run saved for this key (consulted only
/// when no record was found).
pub fn plan(
    record: &PreparedRecord,
    known: Known<'_>,
    pending: Option<&PendingCreate>,
    rules: &Rules<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Action {
    let action = plan_known(record, known, pending, rules, now);
    match (rules.replacement(), pending) {
        (Some(replacement), Some(pending)) => resume_replacement(action, pending, replacement),
        _ => action,
    }
}

/// A replacement an interrupted run started (its create is saved) is finished, whatever the
/// row needs now: the new record may exist while the old one is still active.
fn resume_replacement(
    action: Action,
    pending: &PendingCreate,
    replacement: &Replacement,
) -> Action {
    let Some(replaced) = replaced_by(pending, replacement) else {
        return action;
    };
    match action {
        Action::Replace {
            old_id,
            changes,
            reason,
            pending: None,
        } => Action::Replace {
            old_id,
            changes,
            reason,
            pending: Some(pending.clone()),
        },
        // The new record holds the key already: it is brought up to date, and the old one
        // retired if it was not yet.
        Action::Unchanged { destination_id, .. } if destination_id != replaced => Action::Replace {
            old_id: replaced,
            changes: json!({}),
            reason: RESUMED.into(),
            pending: Some(pending.clone()),
        },
        Action::Update {
            destination_id,
            changes,
            ..
        } if destination_id != replaced => Action::Replace {
            old_id: replaced,
            changes,
            reason: RESUMED.into(),
            pending: Some(pending.clone()),
        },
        other => other,
    }
}

const RESUMED: &str = "finishes a replacement that an interrupted run started";

/// The record a saved create replaces, when it is a replacement's create (its body carries
/// the replacement's marker).
pub(crate) fn replaced_by(pending: &PendingCreate, replacement: &Replacement) -> Option<String> {
    let params = form::decode(&pending.request_body).ok()?;
    params
        .get("metadata")?
        .get(replacement.marker)?
        .as_str()
        .map(str::to_string)
}

fn plan_known(
    record: &PreparedRecord,
    known: Known<'_>,
    pending: Option<&PendingCreate>,
    rules: &Rules<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Action {
    match known {
        Known::Remembered {
            destination_id,
            last_write,
        } => leave_alone_under_create_only(
            rules,
            against_last_write(record, destination_id, last_write, rules),
        ),
        Known::LookupFailed(reason) => Action::Fail {
            reason: format!("could not look the key up in Stripe: {reason}"),
        },
        Known::Found([]) => match rules.behavior {
            Behavior::UpdateOnly => Action::NotFound,
            Behavior::UpdateOrCreate | Behavior::CreateOnly | Behavior::Mirror => match pending {
                Some(pending) if now - pending.created_at < PENDING_CREATE_MAX_AGE => {
                    Action::ReplayCreate {
                        pending: pending.clone(),
                        from_earlier_run: true,
                    }
                }
                // Described only when a preview shows it: a run describes what it created
                // once Stripe answered.
                _ => Action::Create,
            },
        },
        Known::Found([live]) => {
            leave_alone_under_create_only(rules, against_live(record, live, rules))
        }
        Known::Found(several) => {
            let ids: Vec<&str> = several.iter().map(|c| c.id.as_str()).collect();
            Action::Reject {
                reason: format!(
                    "ambiguous: {} Stripe {} match `{}` ({}); merge or delete the extra ones in Stripe, then run again",
                    several.len(),
                    rules.schema.plural,
                    record.key,
                    ids.join(", ")
                ),
            }
        }
    }
}

/// Create Only sends no update: a matched record whose fields differ is left as Stripe holds
/// it. Its payload is not remembered as written (ferry did not write it), so that a later
/// change of behaviour compares with what Stripe holds.
fn leave_alone_under_create_only(rules: &Rules<'_>, action: Action) -> Action {
    match action {
        Action::Update { destination_id, .. } if rules.behavior == Behavior::CreateOnly => {
            Action::Unchanged {
                destination_id,
                remember: false,
            }
        }
        other => other,
    }
}

fn against_last_write(
    record: &PreparedRecord,
    destination_id: &str,
    last_write: &Payload,
    rules: &Rules<'_>,
) -> Action {
    let mut changed = changed_fields(&record.payload, &Baseline::LastWrite(last_write), &[]);
    changed.retain(|path| !is_request_option(rules.schema, path));
    if changed.is_empty() {
        // Same values, other hash (a field left the mapping): nothing to send, but remember
        // the new payload so the next run compares against it.
        return Action::Unchanged {
            destination_id: destination_id.to_string(),
            remember: true,
        };
    }
    let before = |path: &str| {
        last_write
            .get(path)
            .map(FieldValue::to_json)
            .unwrap_or(Json::Null)
    };
    update(record, destination_id, changed, before, rules)
}

fn against_live(record: &PreparedRecord, live: &StripeRecord, rules: &Rules<'_>) -> Action {
    let fields = record_to_fields(rules.schema, &live.object);
    let ignoring_case: &[&str] = if rules.key_ignores_case {
        &[rules.key_path]
    } else {
        &[]
    };
    let mut changed = changed_fields(&record.payload, &Baseline::Live(&fields), ignoring_case);
    // The key itself matched already (trimmed, and ignoring case for emails).
    if rules.key_ignores_case {
        changed.retain(|path| path != rules.key_path);
    }
    // Stripe does not hold how a write was carried out (`proration_behavior`), nor what it
    // takes without returning (an invoice's `days_until_due`).
    changed.retain(|path| held_by_record(rules.schema, path));
    if changed.is_empty() {
        return Action::Unchanged {
            destination_id: live.id.clone(),
            remember: true,
        };
    }
    let before = |path: &str| {
        fields
            .get(path)
            .map(FieldValue::to_json)
            .unwrap_or(Json::Null)
    };
    update(record, &live.id, changed, before, rules)
}

/// An update of the `changed` fields, unless one of them is settable on create only (a
/// product's own `id`, a price's amount): Stripe would refuse the update, so the record is
/// replaced where the object allows it (a price keyed by its lookup key), and the row rejected,
/// saying why, where it does not. (Create Only sends no update at all, so there it stays an
/// update, which it leaves alone.)
fn update(
    record: &PreparedRecord,
    destination_id: &str,
    changed: Vec<String>,
    before: impl Fn(&str) -> Json,
    rules: &Rules<'_>,
) -> Action {
    let fixed: Vec<&String> = changed
        .iter()
        .filter(|path| {
            rules
                .schema
                .field(path)
                .is_some_and(|field| field.create_only)
        })
        .collect();
    if fixed.is_empty() || rules.behavior == Behavior::CreateOnly {
        return Action::Update {
            destination_id: destination_id.to_string(),
            changes: describe_changes(&record.payload, &changed, before),
            changed,
        };
    }
    let object = rules.schema.object;
    let moves_parent = rules
        .replacement
        .is_some_and(|replacement| fixed.iter().any(|path| **path == replacement.parent_field));
    match rules.replacement() {
        Some(replacement) if !moves_parent => {
            let fixed: Vec<&str> = fixed.iter().map(|path| path.as_str()).collect();
            Action::Replace {
                old_id: destination_id.to_string(),
                reason: format!(
                    "Stripe cannot change {} once a {object} exists: a new {object} takes over {} `{}`, becomes the {}'s {} if `{destination_id}` was, and `{destination_id}` is {}; {}",
                    fixed.join(", "),
                    replacement.key_field,
                    record.key,
                    replacement.parent.object,
                    replacement.parent_default,
                    replacement.retired,
                    replacement.consequence,
                ),
                changes: describe_changes(&record.payload, &changed, before),
                pending: None,
            }
        }
        _ => {
            let path = fixed[0];
            let after = record
                .payload
                .get(path)
                .map(FieldValue::to_json)
                .unwrap_or(Json::Null);
            let fix = match rules.replacement {
                Some(replacement) if moves_parent => format!(
                    "a {object} cannot move to another {}: give the row a new {} to make a new {object}",
                    replacement.parent.object, replacement.key_field
                ),
                Some(replacement) => format!(
                    "keep the value, give the row a new key to make a new {object}, or key the sync by `{}` to let ferry replace the {object}",
                    replacement.key_field
                ),
                None => format!("keep the value, or give the row a new key to make a new {object}"),
            };
            Action::Reject {
                reason: format!(
                    "`{path}` cannot change once the {object} exists: Stripe's {object} `{destination_id}` has {}, the row has {after}; {fix}",
                    before(path),
                ),
            }
        }
    }
}

/// A create's changes: every field set, from nothing.
pub(crate) fn describe_create(payload: &Payload) -> Json {
    let set: Vec<String> = payload
        .fields
        .iter()
        .filter(|(_, v)| **v != FieldValue::Clear)
        .map(|(k, _)| k.clone())
        .collect();
    describe_changes(payload, &set, |_| Json::Null)
}

/// `{"name": {"before": "Ada", "after": "Ada L."}}`, for previews and run logs.
pub(crate) fn describe_changes(
    payload: &Payload,
    changed: &[String],
    before: impl Fn(&str) -> Json,
) -> Json {
    let mut changes = Map::new();
    for path in changed {
        let after = payload
            .get(path)
            .map(FieldValue::to_json)
            .unwrap_or(Json::Null);
        changes.insert(
            path.clone(),
            json!({"before": shown(before(path)), "after": shown(after)}),
        );
    }
    Json::Object(changes)
}

/// A list of objects kept as JSON text (tiers, items, an invoice's lines) is shown as the list.
fn shown(value: Json) -> Json {
    match &value {
        Json::String(text) if text.starts_with("[{") => serde_json::from_str(text).unwrap_or(value),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};
    use ferry_stripe_wire::customer::CUSTOMER;
    use ferry_stripe_wire::invoice::INVOICE;
    use ferry_stripe_wire::product::PRODUCT;

    /// `email=a@b.co name=Ada` → a payload; `-` as a value means "clear", digits an integer.
    fn payload(text: &str) -> Payload {
        Payload {
            fields: text
                .split_whitespace()
                .map(|pair| {
                    let (path, value) = pair.split_once('=').unwrap();
                    let value = match value {
                        "-" => FieldValue::Clear,
                        v if v.bytes().all(|b| b.is_ascii_digit()) => {
                            FieldValue::Integer(v.parse().unwrap())
                        }
                        v => FieldValue::Text(v.replace('_', " ")),
                    };
                    (path.to_string(), value)
                })
                .collect(),
        }
    }

    fn record(text: &str) -> PreparedRecord {
        let payload = payload(text);
        let key = match payload.get("email") {
            Some(FieldValue::Text(email)) => email.clone(),
            _ => String::new(),
        };
        PreparedRecord::new(1, key.clone(), key.trim().to_lowercase(), payload)
    }

    fn live(id: &str, object: Json) -> StripeRecord {
        StripeRecord {
            id: id.to_string(),
            object,
        }
    }

    fn pending(hours_old: i64) -> PendingCreate {
        PendingCreate {
            key: "a@b.co".into(),
            idempotency_key: "ferry-1-c-abc".into(),
            request_body: "email=a%40b.co".into(),
            created_at: now() - chrono::TimeDelta::hours(hours_old),
        }
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn check(
        row: &str,
        known: Known<'_>,
        pending: Option<&PendingCreate>,
        behavior: Behavior,
        expected: Expect,
    ) {
        let rules = Rules {
            schema: &CUSTOMER,
            behavior,
            key_path: "email",
            key_ignores_case: true,
            replacement: None,
        };
        let record = record(row);
        let action = plan(&record, known, pending, &rules, now());
        let text = match action {
            Action::Unchanged {
                destination_id,
                remember,
            } => format!(
                "unchanged {destination_id}{}",
                if remember { " (remember)" } else { "" }
            ),
            Action::Update {
                destination_id,
                changes,
                ..
            } => format!("update {destination_id} {changes}"),
            Action::Create => format!("create {}", describe_create(&record.payload)),
            Action::ReplayCreate {
                pending,
                from_earlier_run,
            } => format!(
                "replay {} (earlier run: {from_earlier_run})",
                pending.idempotency_key
            ),
            Action::Replace { old_id, .. } => format!("replace {old_id}"),
            Action::Retire { destination_id, .. } => format!("retire {destination_id}"),
            Action::NotFound => "not found".into(),
            Action::Reject { reason } => format!("reject: {reason}"),
            Action::Fail { reason } => format!("fail: {reason}"),
        };
        expected.assert_eq(&text);
    }

    const CREATE: Behavior = Behavior::UpdateOrCreate;

    /// Stripe takes an invoice's `days_until_due` but returns only the `due_date` it set: a
    /// record found by its key is not sent it again for that alone.
    #[test]
    fn a_field_stripe_does_not_return_is_not_compared_with_the_record() {
        let rules = Rules {
            schema: &INVOICE,
            behavior: CREATE,
            key_path: "metadata.order_id",
            key_ignores_case: false,
            replacement: None,
        };
        let found = live(
            "in_1",
            serde_json::json!({"id": "in_1", "collection_method": "send_invoice",
                "due_date": 1_800_000_000, "description": "March", "metadata": {"order_id": "O1"}}),
        );
        let planned = |row: &str| {
            let record = PreparedRecord::new(1, "O1".into(), "O1".into(), payload(row));
            match against_live(&record, &found, &rules) {
                Action::Unchanged { .. } => "unchanged".to_string(),
                Action::Update { changed, .. } => format!("update {}", changed.join(",")),
                other => other.kind().to_string(),
            }
        };
        let row = "metadata.order_id=O1 days_until_due=30";
        assert_eq!(planned(&format!("{row} description=March")), "unchanged");
        assert_eq!(
            planned(&format!("{row} description=April")),
            "update description"
        );
    }

    #[test]
    fn against_the_last_write() {
        let last = payload("email=a@b.co name=Ada");
        let remembered = Known::Remembered {
            destination_id: "cus_1",
            last_write: &last,
        };
        check(
            "email=a@b.co name=Ada",
            remembered,
            None,
            CREATE,
            expect![["unchanged cus_1 (remember)"]],
        );
        check(
            "email=a@b.co name=Ada_L.",
            remembered,
            None,
            CREATE,
            expect![[r#"update cus_1 {"name":{"before":"Ada","after":"Ada L."}}"#]],
        );
        // A field the last write did not hold is sent, a clear included.
        check(
            "email=a@b.co name=Ada phone=-",
            remembered,
            None,
            CREATE,
            expect![[r#"update cus_1 {"phone":{"before":null,"after":null}}"#]],
        );
    }

    #[test]
    fn against_what_stripe_holds() {
        let one = [live(
            "cus_9",
            serde_json::json!({"id": "cus_9", "email": "A@B.co", "name": "Ada", "metadata": {}}),
        )];
        check(
            "email=a@b.co name=Ada",
            Known::Found(&one),
            None,
            CREATE,
            expect![["unchanged cus_9 (remember)"]],
        );
        check(
            "email=a@b.co name=Ada metadata.plan=pro phone=-",
            Known::Found(&one),
            None,
            CREATE,
            expect![[r#"update cus_9 {"metadata.plan":{"before":null,"after":"pro"}}"#]],
        );
        let two = [live("cus_1", Json::Null), live("cus_2", Json::Null)];
        check(
            "email=a@b.co",
            Known::Found(&two),
            None,
            CREATE,
            expect![["reject: ambiguous: 2 Stripe customers match `a@b.co` (cus_1, cus_2); merge or delete the extra ones in Stripe, then run again"]],
        );
    }

    #[test]
    fn nothing_found() {
        check(
            "email=a@b.co name=Ada phone=-",
            Known::Found(&[]),
            None,
            CREATE,
            expect![[
                r#"create {"email":{"before":null,"after":"a@b.co"},"name":{"before":null,"after":"Ada"}}"#
            ]],
        );
        check(
            "email=a@b.co",
            Known::Found(&[]),
            None,
            Behavior::UpdateOnly,
            expect![["not found"]],
        );
        // A create an interrupted run saved is replayed with its key while Stripe remembers it…
        check(
            "email=a@b.co",
            Known::Found(&[]),
            Some(&pending(2)),
            CREATE,
            expect![["replay ferry-1-c-abc (earlier run: true)"]],
        );
        // …and made anew once the key may be forgotten.
        check(
            "email=a@b.co",
            Known::Found(&[]),
            Some(&pending(30)),
            CREATE,
            expect![[r#"create {"email":{"before":null,"after":"a@b.co"}}"#]],
        );
        check(
            "email=a@b.co",
            Known::LookupFailed("Stripe did not answer"),
            None,
            CREATE,
            expect![["fail: could not look the key up in Stripe: Stripe did not answer"]],
        );
    }

    /// A saved create is never replayed blindly: when the lookup finds the record (made by the
    /// interrupted run, or by someone since), it is updated like any other.
    #[test]
    fn a_saved_create_loses_to_a_record_found() {
        let found = [live(
            "cus_hand",
            serde_json::json!({"id": "cus_hand", "email": "a@b.co", "name": "By hand"}),
        )];
        check(
            "email=a@b.co name=Ada",
            Known::Found(&found),
            Some(&pending(1)),
            CREATE,
            expect![[r#"update cus_hand {"name":{"before":"By hand","after":"Ada"}}"#]],
        );
    }

    /// Create Only creates what has no match, replays a saved create like Update or Create,
    /// and sends nothing to a matched record: one whose values ferry wrote is remembered as
    /// before, one whose fields differ is left alone and not remembered as written.
    #[test]
    fn create_only() {
        const ONLY: Behavior = Behavior::CreateOnly;
        check(
            "email=a@b.co name=Ada",
            Known::Found(&[]),
            None,
            ONLY,
            expect![[
                r#"create {"email":{"before":null,"after":"a@b.co"},"name":{"before":null,"after":"Ada"}}"#
            ]],
        );
        check(
            "email=a@b.co",
            Known::Found(&[]),
            Some(&pending(2)),
            ONLY,
            expect![["replay ferry-1-c-abc (earlier run: true)"]],
        );
        let last = payload("email=a@b.co name=Ada");
        let remembered = Known::Remembered {
            destination_id: "cus_1",
            last_write: &last,
        };
        check(
            "email=a@b.co name=Ada",
            remembered,
            None,
            ONLY,
            expect![["unchanged cus_1 (remember)"]],
        );
        check(
            "email=a@b.co name=Ada_L.",
            remembered,
            None,
            ONLY,
            expect![["unchanged cus_1"]],
        );
        let found = [live(
            "cus_hand",
            serde_json::json!({"id": "cus_hand", "email": "A@B.co", "name": "By hand"}),
        )];
        check(
            "email=a@b.co name=Ada",
            Known::Found(&found),
            None,
            ONLY,
            expect![["unchanged cus_hand"]],
        );
        check(
            "email=a@b.co name=By_hand",
            Known::Found(&found),
            None,
            ONLY,
            expect![["unchanged cus_hand (remember)"]],
        );
        let two = [live("cus_1", Json::Null), live("cus_2", Json::Null)];
        check(
            "email=a@b.co",
            Known::Found(&two),
            None,
            ONLY,
            expect![["reject: ambiguous: 2 Stripe customers match `a@b.co` (cus_1, cus_2); merge or delete the extra ones in Stripe, then run again"]],
        );
    }

    /// A product matched by an external id whose row maps a different `id`: Stripe cannot
    /// change a product's id, so the row is rejected rather than sent a doomed update.
    #[test]
    fn a_create_only_field_that_differs_rejects_the_row() {
        let rules = Rules {
            schema: &PRODUCT,
            behavior: Behavior::UpdateOrCreate,
            key_path: "metadata.sku",
            key_ignores_case: false,
            replacement: None,
        };
        let record = PreparedRecord::new(
            1,
            "gold".into(),
            "gold".into(),
            payload("id=gold-2 metadata.sku=gold name=Gold"),
        );
        let found = [live(
            "gold-1",
            serde_json::json!({"id": "gold-1", "name": "Gold", "metadata": {"sku": "gold"}}),
        )];
        let action = plan(&record, Known::Found(&found), None, &rules, now());
        expect![[r#"
            Reject {
                reason: "`id` cannot change once the product exists: Stripe's product `gold-1` has \"gold-1\", the row has \"gold-2\"; keep the value, or give the row a new key to make a new product",
            }
        "#]]
        .assert_debug_eq(&action);
        let same = PreparedRecord::new(
            1,
            "gold".into(),
            "gold".into(),
            payload("id=gold-1 metadata.sku=gold name=Gold_2"),
        );
        assert!(matches!(
            plan(&same, Known::Found(&found), None, &rules, now()),
            Action::Update { ref changed, .. } if changed == &["name"]
        ));
        // Create Only leaves a matched product alone, whatever differs.
        let create_only = Rules {
            behavior: Behavior::CreateOnly,
            ..rules
        };
        assert_eq!(
            plan(&record, Known::Found(&found), None, &create_only, now()),
            Action::Unchanged {
                destination_id: "gold-1".into(),
                remember: false
            }
        );
    }

    /// A price keyed by its lookup key whose amount changed is replaced; one keyed otherwise,
    /// or moved to another product, is rejected, saying what to do; Create Only leaves it.
    #[test]
    fn a_price_whose_amount_changed_is_replaced() {
        use ferry_stripe_wire::price::PRICE;
        let replacement =
            ferry_destinations::stripe::stripe_object(ferry_core::ObjectKind::Price).replacement();
        let rules = |key_path, behavior| Rules {
            schema: &PRICE,
            behavior,
            key_path,
            key_ignores_case: false,
            replacement,
        };
        let last = payload("lookup_key=pro product=pro currency=usd unit_amount=1000");
        let remembered = Known::Remembered {
            destination_id: "price_1",
            last_write: &last,
        };
        let row = |text: &str| PreparedRecord::new(1, "pro".into(), "pro".into(), payload(text));
        let describe = |action: Action| match action {
            Action::Replace {
                old_id,
                changes,
                reason,
                pending,
            } => format!(
                "replace {old_id} {changes} (saved create: {})\n{reason}",
                pending.is_some()
            ),
            Action::Reject { reason } => format!("reject: {reason}"),
            other => format!("{other:?}"),
        };
        let by_lookup_key = rules("lookup_key", CREATE);
        let cheaper = row("lookup_key=pro product=pro currency=usd unit_amount=1200");
        expect![[r#"
            replace price_1 {"unit_amount":{"before":1000,"after":1200}} (saved create: false)
            Stripe cannot change unit_amount once a price exists: a new price takes over lookup_key `pro`, becomes the product's default_price if `price_1` was, and `price_1` is archived; subscriptions and invoices already on the old price keep it"#]]
        .assert_eq(&describe(plan(&cheaper, remembered, None, &by_lookup_key, now())));
        // Update Only replaces too: the price exists.
        assert!(matches!(
            plan(
                &cheaper,
                remembered,
                None,
                &rules("lookup_key", Behavior::UpdateOnly),
                now()
            ),
            Action::Replace { .. }
        ));
        expect![[r#"reject: `unit_amount` cannot change once the price exists: Stripe's price `price_1` has 1000, the row has 1200; keep the value, give the row a new key to make a new price, or key the sync by `lookup_key` to let ferry replace the price"#]]
        .assert_eq(&describe(plan(&cheaper, remembered, None, &rules("metadata.code", CREATE), now())));
        let moved = row("lookup_key=pro product=team currency=usd unit_amount=1200");
        expect![[r#"reject: `product` cannot change once the price exists: Stripe's price `price_1` has "pro", the row has "team"; a price cannot move to another product: give the row a new lookup_key to make a new price"#]]
        .assert_eq(&describe(plan(&moved, remembered, None, &by_lookup_key, now())));
        assert_eq!(
            plan(
                &cheaper,
                remembered,
                None,
                &rules("lookup_key", Behavior::CreateOnly),
                now()
            ),
            Action::Unchanged {
                destination_id: "price_1".into(),
                remember: false
            }
        );

        // An interrupted replacement saved its create: the replacement takes it along, and
        // once the new price holds the key (found by it), the replacement is finished with it.
        let saved = PendingCreate {
            key: "pro".into(),
            idempotency_key: "ferry-1-c-abc".into(),
            request_body:
                "lookup_key=pro&metadata[ferry_replaces]=price_1&transfer_lookup_key=true".into(),
            created_at: now(),
        };
        assert!(matches!(
            plan(&cheaper, remembered, Some(&saved), &by_lookup_key, now()),
            Action::Replace { ref old_id, pending: Some(_), .. } if old_id == "price_1"
        ));
        let new = [live(
            "price_2",
            json!({"id": "price_2", "lookup_key": "pro", "product": "pro", "currency": "usd",
                   "unit_amount": 1200, "metadata": {"ferry_replaces": "price_1"}}),
        )];
        expect![[r#"
            replace price_1 {} (saved create: true)
            finishes a replacement that an interrupted run started"#]]
        .assert_eq(&describe(plan(
            &cheaper,
            Known::Found(&new),
            Some(&saved),
            &by_lookup_key,
            now(),
        )));
        // A saved create that is no replacement changes nothing.
        let plain = PendingCreate {
            request_body: "lookup_key=pro".into(),
            ..saved
        };
        assert!(matches!(
            plan(
                &cheaper,
                Known::Found(&new),
                Some(&plain),
                &by_lookup_key,
                now()
            ),
            Action::Unchanged { .. }
        ));
    }
}
