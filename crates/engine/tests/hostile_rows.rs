//! Hostile rows: each kind of value a real warehouse can produce either syncs with a stated
//! text, or is rejected with a reason a person understands. Never a panic.

use ferry_core::{Behavior, FieldMapping, KeyMapping, NullPolicy, ObjectKind, SyncSpec, Value};
use ferry_engine::prepare::{prepare_row, reject_duplicate_keys, validate_sync, ValidatedSync};

const COLUMNS: &[(&str, &str)] = &[
    ("name", "name"),
    ("phone", "phone"),
    ("description", "description"),
    ("note", "metadata.note"),
    ("balance", "balance"),
    ("locales", "preferred_locales"),
    ("tax", "tax_exempt"),
    ("prefix", "invoice_prefix"),
];

fn sync(key_field: &str) -> ValidatedSync {
    let spec = SyncSpec {
        invoice: None,
        model: "m".into(),
        destination: "d".into(),
        object: ObjectKind::Customer,
        behavior: Behavior::UpdateOrCreate,
        key: KeyMapping {
            column: "key".into(),
            field: key_field.into(),
        },
        mappings: COLUMNS
            .iter()
            .map(|(c, f)| FieldMapping {
                column: c.to_string(),
                field: f.to_string(),
            })
            .collect(),
        nulls: NullPolicy::Skip,
        schedule: None,
        alerts: None,
        mirror: Default::default(),
    };
    let mut columns = vec!["key".to_string()];
    columns.extend(COLUMNS.iter().map(|(c, _)| c.to_string()));
    validate_sync(&spec, &columns).expect("the spec is valid")
}

/// Prepares one row whose key is `key` and whose `column` holds `value` (others NULL), and
/// describes the result: `ok FIELD=JSON` or `rejected: REASON`.
fn check(key_field: &str, key: Value, column: &str, value: Value) -> String {
    let sync = sync(key_field);
    let mut row = vec![key];
    for (c, _) in COLUMNS {
        row.push(if *c == column {
            value.clone()
        } else {
            Value::Null
        });
    }
    match prepare_row(&sync, 1, &row) {
        Ok(record) => {
            let field = COLUMNS
                .iter()
                .find(|(c, _)| *c == column)
                .map(|(_, f)| *f)
                .unwrap_or(key_field);
            match record.payload.get(field) {
                Some(v) => format!("ok {field}={}", v.to_json()),
                None => format!("ok {field} absent"),
            }
        }
        Err(rejected) => format!("rejected: {}", rejected.reason),
    }
}

fn email_row(column: &str, value: Value) -> String {
    check("email", text("ada@example.com"), column, value)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

#[test]
fn hostile_values_sync_or_are_rejected_with_a_reason() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("NaN", email_row("note", Value::Float(f64::NAN)), "rejected: column `note` (→ metadata.note) is not a finite number (NaN)"),
        ("+infinity", email_row("note", Value::Float(f64::INFINITY)), "rejected: column `note` (→ metadata.note) is not a finite number (inf)"),
        ("-infinity", email_row("balance", Value::Float(f64::NEG_INFINITY)), "rejected: column `balance` (→ balance) is not a finite number (-inf)"),
        ("integer past i64 into an integer field", email_row("balance", Value::Decimal("9223372036854775808".into())), "rejected: column `balance` (→ balance) is outside the range of a 64-bit integer: 9223372036854775808"),
        ("integer past i64 into metadata", email_row("note", Value::Decimal("9223372036854775808".into())), r#"ok metadata.note="9223372036854775808""#),
        ("30-digit numeric", email_row("note", Value::Decimal("123456789012345678901234567890".into())), r#"ok metadata.note="123456789012345678901234567890""#),
        ("fractional balance", email_row("balance", Value::Decimal("12.50".into())), "rejected: column `balance` (→ balance) is not a whole number: 12.50"),
        ("whole decimal balance", email_row("balance", Value::Decimal("-500.00".into())), "ok balance=-500"),
        ("boolean balance", email_row("balance", Value::Bool(true)), "rejected: column `balance` (→ balance) is not a whole number: boolean"),
        ("10 MB text", email_row("description", text(&"x".repeat(10 * 1024 * 1024))), "rejected: column `description` (→ description) is 10485760 characters long; Stripe allows at most 5000"),
        ("control characters", email_row("name", text("Ada\u{7}\u{1b}[31m")), "ok name=\"Ada\\u0007\\u001b[31m\""),
        ("NUL", email_row("name", text("Ada\0Lovelace")), "rejected: column `name` (→ name) contains a NUL character, which Stripe does not accept"),
        ("invalid UTF-8 from bytea", email_row("name", Value::Bytes(vec![0x41, 0xff, 0xfe])), "rejected: column `name` (→ name) is binary data that is not UTF-8 text"),
        ("UTF-8 bytes", email_row("name", Value::Bytes("Ada".as_bytes().to_vec())), r#"ok name="Ada""#),
        ("decomposed Unicode kept as written", email_row("name", text("Ame\u{301}lie")), "ok name=\"Ame\u{301}lie\""),
        ("emoji", email_row("name", text("Ada 🚀👩‍💻")), r#"ok name="Ada 🚀👩‍💻""#),
        ("256 emoji fit in name", email_row("name", text(&"🚀".repeat(256))).split('=').next().unwrap().to_string(), "ok name"),
        ("257 emoji do not", email_row("name", text(&"🚀".repeat(257))), "rejected: column `name` (→ name) is 257 characters long; Stripe allows at most 256"),
        ("right-to-left text", email_row("name", text("עדה לאבלייס")), r#"ok name="עדה לאבלייס""#),
        ("JSON object into a string field", email_row("name", Value::Json(serde_json::json!({"first": "Ada"}))), "rejected: column `name` (→ name) is a JSON object, which cannot be used as text here"),
        ("JSON array into a string field", email_row("name", Value::Json(serde_json::json!(["Ada"]))), "rejected: column `name` (→ name) is a list, which cannot be used as text here"),
        ("array into a string field", email_row("phone", Value::Array(vec![text("1")])), "rejected: column `phone` (→ phone) is a list, which cannot be used as text here"),
        ("JSON into metadata", email_row("note", Value::Json(serde_json::json!({"a": [1, true]}))), r#"ok metadata.note="{\"a\":[1,true]}""#),
        ("array into metadata", email_row("note", Value::Array(vec![Value::Int(1), Value::Null])), r#"ok metadata.note="[1,null]""#),
        ("date before 1970", email_row("note", Value::Date(chrono::NaiveDate::from_ymd_opt(1969, 7, 20).unwrap())), r#"ok metadata.note="1969-07-20""#),
        ("date after 9999", email_row("note", Value::Date(chrono::NaiveDate::from_ymd_opt(10000, 1, 1).unwrap())), r#"ok metadata.note="+10000-01-01""#),
        ("timestamp with zone", email_row("note", Value::TimestampTz(chrono::DateTime::from_timestamp(0, 0).unwrap())), r#"ok metadata.note="1970-01-01T00:00:00Z""#),
        ("metadata value of 500 characters", email_row("note", text(&"v".repeat(500))).split('=').next().unwrap().to_string(), "ok metadata.note"),
        ("metadata value of 501 characters", email_row("note", text(&"v".repeat(501))), "rejected: column `note` (→ metadata.note) is 501 characters long; Stripe allows at most 500"),
        ("phone over 20 characters", email_row("phone", text("+33 1 23 45 67 89 01 23")), "rejected: column `phone` (→ phone) is 23 characters long; Stripe allows at most 20"),
        ("empty string is a value", email_row("name", text("")), r#"ok name="""#),
        ("NULL is skipped", email_row("name", Value::Null), "ok name absent"),
        ("tax_exempt outside the enum", email_row("tax", text("maybe")), "rejected: column `tax` (→ tax_exempt) is `maybe`, which is not one of none, exempt, reverse"),
        ("tax_exempt in the enum", email_row("tax", text("reverse")), r#"ok tax_exempt="reverse""#),
        ("locales from an array, NULLs dropped", email_row("locales", Value::Array(vec![text("fr"), Value::Null, text("en")])), r#"ok preferred_locales=["fr","en"]"#),
        ("lower-case invoice prefix", email_row("prefix", text("abc")), "rejected: column `prefix` (→ invoice_prefix): invoice_prefix must be 3 to 12 upper-case letters or digits"),
        ("boolean into a string field", email_row("name", Value::Bool(false)), r#"ok name="false""#),
        ("email with a space inside", check("email", text("ada lovelace@example.com"), "key", Value::Null), "rejected: `ada lovelace@example.com` in column `key` is not a valid email address"),
        ("email with spaces around", check("email", text("  ada@example.com\t"), "key", Value::Null), r#"ok email="ada@example.com""#),
        ("email of 513 characters", check("email", text(&format!("{}@example.com", "a".repeat(501))), "key", Value::Null), "rejected: key column `key` is 513 characters long; Stripe allows at most 512"),
        ("IDN domain", check("email", text("ada@bücher.example"), "key", Value::Null), r#"ok email="ada@bücher.example""#),
        ("quoted local part", check("email", text("\"ada lovelace\"@example.com"), "key", Value::Null), "rejected: `\"ada lovelace\"@example.com` in column `key` is not a valid email address"),
        ("empty key", check("email", text(""), "key", Value::Null), "rejected: missing key: column `key` is empty"),
        ("blank key", check("email", text(" \t "), "key", Value::Null), "rejected: missing key: column `key` is empty"),
        ("NULL key", check("email", Value::Null, "key", Value::Null), "rejected: missing key: column `key` is empty"),
        ("integer external id", check("metadata.user_id", Value::Int(42), "key", Value::Null), r#"ok metadata.user_id="42""#),
        ("float external id", check("metadata.user_id", Value::Float(42.0), "key", Value::Null), r#"ok metadata.user_id="42""#),
        ("JSON object as key", check("metadata.user_id", Value::Json(serde_json::json!({"id": 1})), "key", Value::Null), "rejected: key column `key` is a JSON object, which cannot be used as text here"),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(name, got, want)| format!("{name}:\n   got  {got}\n   want {want}"))
        .collect();
    assert!(cases.len() >= 40);
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_mappings_are_refused_with_what_is_valid() {
    let spec = |mappings: Vec<(&str, &str)>| SyncSpec {
        invoice: None,
        model: "m".into(),
        destination: "d".into(),
        object: ObjectKind::Customer,
        behavior: Behavior::UpdateOrCreate,
        key: KeyMapping {
            column: "email".into(),
            field: "email".into(),
        },
        mappings: mappings
            .into_iter()
            .map(|(c, f)| FieldMapping {
                column: c.into(),
                field: f.into(),
            })
            .collect(),
        nulls: NullPolicy::Skip,
        schedule: None,
        alerts: None,
        mirror: Default::default(),
    };
    let columns: Vec<String> = (0..60)
        .map(|i| format!("c{i}"))
        .chain(["email".to_string()])
        .collect();
    let problems = validate_sync(&spec(vec![("c1", "metadata.a[b]")]), &columns).unwrap_err();
    assert_eq!(problems, ["`metadata.a[b]`: a metadata key must be 1 to 40 characters without `[` or `]` (got 4 characters)"]);
    let long = format!("metadata.{}", "k".repeat(41));
    let problems = validate_sync(&spec(vec![("c1", long.as_str())]), &columns).unwrap_err();
    assert!(problems[0].contains("(got 41 characters)"), "{problems:?}");
    let many: Vec<(String, String)> = (0..51)
        .map(|i| (format!("c{i}"), format!("metadata.k{i}")))
        .collect();
    let problems = validate_sync(
        &spec(many.iter().map(|(c, f)| (c.as_str(), f.as_str())).collect()),
        &columns,
    )
    .unwrap_err();
    assert_eq!(
        problems,
        ["51 metadata fields are mapped; Stripe allows at most 50 keys per customer"]
    );
    let problems =
        validate_sync(&spec(vec![("c1", "shipping.address.city")]), &columns).unwrap_err();
    assert!(
        problems[0].starts_with("Stripe needs shipping.name"),
        "{problems:?}"
    );
}

#[test]
fn duplicate_keys_differing_by_case_or_whitespace_reject_every_copy() {
    let sync = sync("email");
    let row = |email: &str| {
        let mut row = vec![text(email)];
        row.extend(COLUMNS.iter().map(|_| Value::Null));
        row
    };
    let records: Vec<_> = [
        "ada@example.com",
        " ADA@example.com",
        "Ada@Example.com\t",
        "grace@example.com",
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| prepare_row(&sync, i as u64 + 1, &row(e)).unwrap())
    .collect();
    let (kept, rejected) = reject_duplicate_keys(records);
    assert_eq!(kept.len(), 1);
    assert_eq!(
        rejected.iter().map(|r| r.row_number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        rejected[1].reason.contains("also appears in rows 1, 3"),
        "{}",
        rejected[1].reason
    );
}
