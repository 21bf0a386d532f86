//! The Customer fields a model column can be mapped to, and how a column's value becomes one.

use ferry_core::{FieldValue, Value};
use ferry_stripe_wire::customer::{METADATA_KEY_MAX_CHARS, METADATA_VALUE_MAX_CHARS};

/// How a field's value is typed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text { max_chars: usize },
    Email,
    Integer,
    Locales,
    Enum(&'static [&'static str]),
    InvoicePrefix,
    MetadataValue,
}

/// A mappable Customer field, parsed from its dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerField {
    pub path: String,
    pub kind: FieldKind,
}

/// The standard fields, in the order the UI and error messages list them.
pub const STANDARD_FIELDS: &[(&str, FieldKind)] = &[
    ("email", FieldKind::Email),
    ("name", FieldKind::Text { max_chars: 256 }),
    ("phone", FieldKind::Text { max_chars: 20 }),
    ("description", FieldKind::Text { max_chars: 5000 }),
    ("address.line1", FieldKind::Text { max_chars: 5000 }),
    ("address.line2", FieldKind::Text { max_chars: 5000 }),
    ("address.city", FieldKind::Text { max_chars: 5000 }),
    ("address.state", FieldKind::Text { max_chars: 5000 }),
    ("address.postal_code", FieldKind::Text { max_chars: 5000 }),
    ("address.country", FieldKind::Text { max_chars: 5000 }),
    ("shipping.name", FieldKind::Text { max_chars: 5000 }),
    ("shipping.phone", FieldKind::Text { max_chars: 5000 }),
    (
        "shipping.address.line1",
        FieldKind::Text { max_chars: 5000 },
    ),
    (
        "shipping.address.line2",
        FieldKind::Text { max_chars: 5000 },
    ),
    ("shipping.address.city", FieldKind::Text { max_chars: 5000 }),
    (
        "shipping.address.state",
        FieldKind::Text { max_chars: 5000 },
    ),
    (
        "shipping.address.postal_code",
        FieldKind::Text { max_chars: 5000 },
    ),
    (
        "shipping.address.country",
        FieldKind::Text { max_chars: 5000 },
    ),
    ("preferred_locales", FieldKind::Locales),
    (
        "tax_exempt",
        FieldKind::Enum(&["none", "exempt", "reverse"]),
    ),
    ("balance", FieldKind::Integer),
    ("next_invoice_sequence", FieldKind::Integer),
    ("invoice_prefix", FieldKind::InvoicePrefix),
    (
        "invoice_settings.footer",
        FieldKind::Text { max_chars: 5000 },
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("`{field}` is not a Stripe Customer field{suggestion}. Valid fields: {valid}, or metadata.KEY for a custom field")]
    UnknownField {
        field: String,
        suggestion: String,
        valid: String,
    },
    #[error("`{field}`: a metadata key must be 1 to {METADATA_KEY_MAX_CHARS} characters without `[` or `]` (got {chars} characters)")]
    BadMetadataKey { field: String, chars: usize },
    #[error("the mapping key must be `email` or an external id kept in metadata (`metadata.KEY`), not `{field}`")]
    BadKeyField { field: String },
}

/// Parses a dotted field path (`address.city`, `metadata.plan`).
pub fn parse_field(path: &str) -> Result<CustomerField, MappingError> {
    let path = path.trim();
    if let Some(key) = path.strip_prefix("metadata.") {
        let chars = key.chars().count();
        if chars == 0 || chars > METADATA_KEY_MAX_CHARS || key.contains(['[', ']']) {
            return Err(MappingError::BadMetadataKey {
                field: path.to_string(),
                chars,
            });
        }
        return Ok(CustomerField {
            path: path.to_string(),
            kind: FieldKind::MetadataValue,
        });
    }
    if let Some((_, kind)) = STANDARD_FIELDS.iter().find(|(name, _)| *name == path) {
        return Ok(CustomerField {
            path: path.to_string(),
            kind: *kind,
        });
    }
    let suggestion = closest_field(path)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    Err(MappingError::UnknownField {
        field: path.to_string(),
        suggestion,
        valid: STANDARD_FIELDS
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The field a mapping key may use: `email` or `metadata.KEY`.
pub fn parse_key_field(path: &str) -> Result<CustomerField, MappingError> {
    let field = parse_field(path)?;
    match field.kind {
        FieldKind::Email | FieldKind::MetadataValue => Ok(field),
        _ => Err(MappingError::BadKeyField { field: field.path }),
    }
}

impl CustomerField {
    /// Converts a column value to this field's value, or says why it cannot be one. `None` for
    /// NULL: the null policy decides what that means.
    pub fn convert(&self, value: &Value) -> Result<Option<FieldValue>, String> {
        if value.is_null() {
            return Ok(None);
        }
        let text = |v: &Value| v.to_scalar_text().map_err(|e| e.to_string());
        let converted = match self.kind {
            FieldKind::Integer => value
                .to_integer()
                .map_err(|e| e.to_string())?
                .map(FieldValue::Integer),
            FieldKind::Locales => Some(FieldValue::List(locales(value)?)),
            FieldKind::MetadataValue => {
                // Metadata values are strings; structured values travel as compact JSON.
                let text = value.to_text().map_err(|e| e.to_string())?;
                text.map(FieldValue::Text)
            }
            FieldKind::Email => text(value)?.map(|s| FieldValue::Text(s.trim().to_string())),
            FieldKind::Enum(allowed) => match text(value)? {
                Some(s) if allowed.contains(&s.as_str()) => Some(FieldValue::Text(s)),
                Some(s) => {
                    return Err(format!(
                        "is `{s}`, which is not one of {}",
                        allowed.join(", ")
                    ))
                }
                None => None,
            },
            FieldKind::Text { .. } | FieldKind::InvoicePrefix => text(value)?.map(FieldValue::Text),
        };
        if let Some(FieldValue::Text(s)) = &converted {
            check_text(self.kind, s)?;
        }
        Ok(converted)
    }
}

/// Local checks with messages in ferry's words; Stripe's own rules are checked again on the
/// whole request body by `ferry_stripe_wire` before anything is sent.
fn check_text(kind: FieldKind, text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    let max = match kind {
        FieldKind::Text { max_chars } => max_chars,
        FieldKind::Email => 512,
        FieldKind::MetadataValue => METADATA_VALUE_MAX_CHARS,
        _ => usize::MAX,
    };
    if chars > max {
        return Err(format!(
            "is {chars} characters long; Stripe allows at most {max}"
        ));
    }
    if text.contains('\0') {
        return Err("contains a NUL character, which Stripe does not accept".to_string());
    }
    Ok(())
}

fn locales(value: &Value) -> Result<Vec<String>, String> {
    let items: Vec<String> = match value {
        Value::Array(items) => items
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| {
                v.to_scalar_text()
                    .map(|s| s.unwrap_or_default())
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?,
        Value::Json(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("has a non-text locale {v}"))
            })
            .collect::<Result<_, _>>()?,
        other => {
            let text = other
                .to_scalar_text()
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            text.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        }
    };
    Ok(items)
}

fn closest_field(path: &str) -> Option<&'static str> {
    STANDARD_FIELDS
        .iter()
        .map(|(name, _)| (*name, edit_distance(path, name)))
        .filter(|(name, distance)| *distance <= 2.max(name.len() / 4))
        .min_by_key(|(_, distance)| *distance)
        .map(|(name, _)| name)
        .or_else(|| {
            // `city` → `address.city`: a bare sub-field name.
            STANDARD_FIELDS
                .iter()
                .map(|(name, _)| *name)
                .find(|name| name.ends_with(&format!(".{path}")))
        })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_get_a_suggestion_and_the_list() {
        let error = parse_field("emial").unwrap_err().to_string();
        assert!(error.starts_with("`emial` is not a Stripe Customer field (did you mean `email`?). Valid fields: email, name, phone"), "{error}");
        let error = parse_field("city").unwrap_err().to_string();
        assert!(error.contains("did you mean `address.city`?"), "{error}");
        assert!(parse_field("metadata.plan").is_ok());
        let error = parse_field("metadata.a[b]").unwrap_err().to_string();
        assert!(error.contains("without `[` or `]`"), "{error}");
        let long = format!("metadata.{}", "k".repeat(41));
        assert!(parse_field(&long).is_err());
        assert!(parse_key_field("name").is_err());
        assert!(parse_key_field("metadata.user_id").is_ok());
    }

    #[test]
    fn values_convert_or_explain_why_not() {
        let phone = parse_field("phone").unwrap();
        assert_eq!(
            phone.convert(&Value::Text("+33 1 23 45 67 89 00 11 22".into())),
            Err("is 26 characters long; Stripe allows at most 20".into())
        );
        let balance = parse_field("balance").unwrap();
        assert_eq!(
            balance.convert(&Value::Decimal("150.00".into())),
            Ok(Some(FieldValue::Integer(150)))
        );
        assert!(balance.convert(&Value::Float(f64::NAN)).is_err());
        let locales = parse_field("preferred_locales").unwrap();
        assert_eq!(
            locales.convert(&Value::Text("fr, en".into())),
            Ok(Some(FieldValue::List(vec!["fr".into(), "en".into()])))
        );
        let tax = parse_field("tax_exempt").unwrap();
        assert_eq!(
            tax.convert(&Value::Text("maybe".into())),
            Err("is `maybe`, which is not one of none, exempt, reverse".into())
        );
        let plan = parse_field("metadata.plan").unwrap();
        assert_eq!(
            plan.convert(&Value::Json(serde_json::json!({"tier": 2}))),
            Ok(Some(FieldValue::Text(r#"{"tier":2}"#.into())))
        );
        let name = parse_field("name").unwrap();
        assert!(name
            .convert(&Value::Json(serde_json::json!([1, 2])))
            .is_err());
        assert_eq!(name.convert(&Value::Null), Ok(None));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The mapping parser takes any text: it returns a field or an error that names the
        /// input, never panics.
        #[test]
        fn any_field_text_parses_or_explains(path in any::<String>()) {
            match parse_field(&path) {
                Ok(field) => prop_assert_eq!(field.path, path.trim()),
                Err(error) => prop_assert!(error.to_string().contains(path.trim())),
            }
        }

        /// Metadata keys are accepted exactly when Stripe would accept them.
        #[test]
        fn metadata_keys_follow_stripes_rules(key in any::<String>()) {
            let accepted = parse_field(&format!("metadata.{key}")).is_ok();
            let trimmed = format!("metadata.{key}");
            let key = trimmed.trim().strip_prefix("metadata.").unwrap_or("").to_string();
            let valid = !key.is_empty() && key.chars().count() <= 40 && !key.contains(['[', ']']);
            prop_assert_eq!(accepted, valid);
        }
    }
}
