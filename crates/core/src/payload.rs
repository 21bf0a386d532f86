//! A record's desired state in the destination: mapped field paths and their values, with a
//! stable hash, and the diff against what the destination is known to hold.

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// One field's desired value. Field paths are dotted (`address.city`, `metadata.plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    Text(String),
    Integer(i64),
    List(Vec<String>),
    /// Unset the field (a NULL with the `clear` null policy).
    Clear,
}

/// The same JSON as [`FieldValue::to_json`], written straight to the serializer.
impl serde::Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Text(text) => serializer.serialize_str(text),
            FieldValue::Integer(number) => serializer.serialize_i64(*number),
            FieldValue::List(items) => items.serialize(serializer),
            FieldValue::Clear => serializer.serialize_unit(),
        }
    }
}

impl FieldValue {
    pub fn to_json(&self) -> Json {
        match self {
            FieldValue::Text(s) => Json::String(s.clone()),
            FieldValue::Integer(i) => Json::from(*i),
            FieldValue::List(items) => {
                Json::Array(items.iter().cloned().map(Json::String).collect())
            }
            FieldValue::Clear => Json::Null,
        }
    }

    pub fn from_json(json: &Json) -> Option<FieldValue> {
        Some(match json {
            Json::Null => FieldValue::Clear,
            Json::String(s) => FieldValue::Text(s.clone()),
            Json::Number(n) => FieldValue::Integer(n.as_i64()?),
            Json::Array(items) => FieldValue::List(
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        })
    }
}

/// The mapped fields of one record, sorted by path so that equal payloads hash equally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub fields: BTreeMap<String, FieldValue>,
}

impl Payload {
    pub fn get(&self, path: &str) -> Option<&FieldValue> {
        self.fields.get(path)
    }

    /// `{"address.city": "Paris", "metadata.plan": "pro", "phone": null}`.
    pub fn to_json(&self) -> Json {
        Json::Object(
            self.fields
                .iter()
                .map(|(path, value)| (path.clone(), value.to_json()))
                .collect::<Map<String, Json>>(),
        )
    }

    pub fn from_json(json: &Json) -> Option<Payload> {
        let object = json.as_object()?;
        let mut fields = BTreeMap::new();
        for (path, value) in object {
            fields.insert(path.clone(), FieldValue::from_json(value)?);
        }
        Some(Payload { fields })
    }

    /// The canonical JSON text (keys sorted, compact): `payload.to_json().to_string()`, written
    /// without building the JSON tree first (once per model row, so it counts).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.fields).expect("a payload always serializes")
    }

    /// SHA-256 of the canonical JSON (keys sorted), hex. Equal payloads, equal hashes.
    pub fn hash(&self) -> String {
        hash_canonical_json(&self.canonical_json())
    }
}

/// [`Payload::hash`] of a payload already written as its canonical JSON
/// (`payload.to_json().to_string()`).
pub fn hash_canonical_json(canonical: &str) -> String {
    sha256_hex(canonical.as_bytes())
}

/// SHA-256 of `bytes` as 64 lower-case hex digits. Hashes run once per model row, and
/// `hex::encode` builds its text char by char: a third of the hash's cost.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut digits = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(bytes), &mut digits).expect("32 bytes are 64 hex digits");
    String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
}

/// What is known to be in the destination, per field path, to diff a payload against.
pub enum Baseline<'a> {
    /// The payload last confirmed written by ferry: a field it did not contain is unknown, so
    /// a desired `Clear` for it is sent.
    LastWrite(&'a Payload),
    /// The record as the destination returned it, flattened to field paths: an absent field is
    /// empty, so a desired `Clear` for it costs nothing.
    Live(&'a BTreeMap<String, FieldValue>),
}

/// The paths whose desired value differs from the baseline, in path order.
///
/// `equal_ignoring_case` lists paths compared case-insensitively and trimmed (the email used as
/// mapping key: `Alice@X.com` in Stripe matches `alice@x.com` in the model and is not rewritten).
pub fn changed_fields(
    desired: &Payload,
    baseline: &Baseline<'_>,
    equal_ignoring_case: &[&str],
) -> Vec<String> {
    desired
        .fields
        .iter()
        .filter(|(path, want)| {
            let have = match baseline {
                Baseline::LastWrite(previous) => match previous.get(path) {
                    Some(have) => have,
                    None => return true,
                },
                Baseline::Live(live) => match live.get(path.as_str()) {
                    Some(have) => have,
                    None => &FieldValue::Clear,
                },
            };
            !field_values_equal(want, have, equal_ignoring_case.contains(&path.as_str()))
        })
        .map(|(path, _)| path.clone())
        .collect()
}

fn field_values_equal(want: &FieldValue, have: &FieldValue, ignore_case: bool) -> bool {
    match (want, have) {
        (FieldValue::Text(a), FieldValue::Text(b)) if ignore_case => {
            a.trim().to_lowercase() == b.trim().to_lowercase()
        }
        // An empty list and no list are the same thing to Stripe.
        (FieldValue::List(a), FieldValue::Clear) | (FieldValue::Clear, FieldValue::List(a)) => {
            a.is_empty()
        }
        _ => want == have,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical text is what snapshots hash: it must stay byte for byte the JSON tree's
    /// text, or every record would look changed after an upgrade.
    #[test]
    fn canonical_json_is_the_json_trees_text() {
        let payload = payload(&[
            (
                "name",
                FieldValue::Text("Zoë \"Q\" \\ \u{1} \n é 😀".into()),
            ),
            ("address.city", FieldValue::Text(String::new())),
            ("metadata.a", FieldValue::Integer(-42)),
            ("metadata.b", FieldValue::Integer(i64::MAX)),
            (
                "preferred_locales",
                FieldValue::List(vec!["fr".into(), "en\t".into()]),
            ),
            ("phone", FieldValue::Clear),
            ("Ä", FieldValue::List(Vec::new())),
        ]);
        assert_eq!(payload.canonical_json(), payload.to_json().to_string());
        assert_eq!(
            payload.hash(),
            hash_canonical_json(&payload.to_json().to_string())
        );
    }

    #[test]
    fn sha256_hex_is_the_hex_of_the_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_hex(b"abc"), hex::encode(Sha256::digest(b"abc")));
    }

    fn payload(fields: &[(&str, FieldValue)]) -> Payload {
        Payload {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn text(s: &str) -> FieldValue {
        FieldValue::Text(s.to_string())
    }

    #[test]
    fn hash_is_stable_and_order_independent() {
        let a = payload(&[("name", text("Ada")), ("email", text("ada@example.com"))]);
        let b = payload(&[("email", text("ada@example.com")), ("name", text("Ada"))]);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), payload(&[("name", text("Ada"))]).hash());
        let round_trip = Payload::from_json(&a.to_json()).unwrap();
        assert_eq!(round_trip, a);
    }

    #[test]
    fn diff_against_last_write_sends_new_and_changed_fields() {
        let before = payload(&[("name", text("Ada")), ("phone", text("1"))]);
        let after = payload(&[
            ("name", text("Ada")),
            ("phone", text("2")),
            ("metadata.plan", text("pro")),
            ("description", FieldValue::Clear),
        ]);
        assert_eq!(
            changed_fields(&after, &Baseline::LastWrite(&before), &[]),
            ["description", "metadata.plan", "phone"]
        );
    }

    #[test]
    fn diff_against_live_record_treats_absent_as_empty_and_key_case_insensitively() {
        let live: BTreeMap<String, FieldValue> = [
            ("email".to_string(), text("Ada@Example.com")),
            ("name".to_string(), text("Ada")),
        ]
        .into_iter()
        .collect();
        let desired = payload(&[
            ("email", text(" ada@example.com ")),
            ("name", text("Ada")),
            ("phone", FieldValue::Clear),
            ("preferred_locales", FieldValue::List(vec![])),
        ]);
        assert!(changed_fields(&desired, &Baseline::Live(&live), &["email"]).is_empty());
        assert_eq!(
            changed_fields(&desired, &Baseline::Live(&live), &[]),
            ["email"]
        );
    }
}
