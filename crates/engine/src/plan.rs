//! Deciding what each record needs: nothing, an update of some fields, a create, or a report.
//! A pure function of the record, what is known of it (ferry's last confirmed write, or the
//! records Stripe holds under its key), a create saved by an interrupted run, and the sync's
//! behaviour. The preview stops here; a run goes on to execute the plan.

use crate::prepare::PreparedRecord;
use ferry_core::{changed_fields, Baseline, Behavior, FieldValue, Payload};
use ferry_destinations::stripe::{record_to_fields, StripeRecord};
use ferry_state::PendingCreate;
use ferry_stripe_wire::ObjectSchema;
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
            Behavior::UpdateOrCreate | Behavior::CreateOnly => match pending {
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
    let changed = changed_fields(&record.payload, &Baseline::LastWrite(last_write), &[]);
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
/// product's own `id`): Stripe would refuse the update, so the row is rejected, saying why.
/// (Create Only sends no update at all, so there it stays an update, which it leaves alone.)
fn update(
    record: &PreparedRecord,
    destination_id: &str,
    changed: Vec<String>,
    before: impl Fn(&str) -> Json,
    rules: &Rules<'_>,
) -> Action {
    let fixed = changed.iter().find(|path| {
        rules
            .schema
            .field(path)
            .is_some_and(|field| field.create_only)
    });
    if let Some(path) = fixed.filter(|_| rules.behavior != Behavior::CreateOnly) {
        let after = record
            .payload
            .get(path)
            .map(FieldValue::to_json)
            .unwrap_or(Json::Null);
        return Action::Reject {
            reason: format!(
                "`{path}` cannot change once the {object} exists: Stripe's {object} `{destination_id}` has {}, the row has {after}; keep the value, or give the row a new key to make a new {object}",
                before(path),
                object = rules.schema.object,
            ),
        };
    }
    Action::Update {
        destination_id: destination_id.to_string(),
        changes: describe_changes(&record.payload, &changed, before),
        changed,
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
            json!({"before": before(path), "after": after}),
        );
    }
    Json::Object(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};
    use ferry_stripe_wire::customer::CUSTOMER;
    use ferry_stripe_wire::product::PRODUCT;

    /// `email=a@b.co name=Ada` → a payload; `-` as a value means "clear".
    fn payload(text: &str) -> Payload {
        Payload {
            fields: text
                .split_whitespace()
                .map(|pair| {
                    let (path, value) = pair.split_once('=').unwrap();
                    let value = match value {
                        "-" => FieldValue::Clear,
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
            Action::NotFound => "not found".into(),
            Action::Reject { reason } => format!("reject: {reason}"),
            Action::Fail { reason } => format!("fail: {reason}"),
        };
        expected.assert_eq(&text);
    }

    const CREATE: Behavior = Behavior::UpdateOrCreate;

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
}
