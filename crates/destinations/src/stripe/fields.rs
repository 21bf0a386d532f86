//! The fields of a Stripe object that a model column can be mapped to, derived from the
//! object's parameter table (`ferry_stripe_wire`), and how a column's value becomes one.

use ferry_core::{FieldValue, Value};
use ferry_stripe_wire::params::{
    integer_of, is_decimal_text, is_number_text, is_supported_currency, item_name, FieldSpec,
    Param, ParamKind, METADATA_KEY_MAX_CHARS, METADATA_VALUE_MAX_CHARS,
};
use ferry_stripe_wire::ObjectSchema;
use serde_json::Value as Json;

/// How a field's value is typed and checked, read off its parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text {
        max_chars: usize,
    },
    Email {
        max_chars: usize,
    },
    Integer,
    /// `true` or `false` (a product's `active`): a warehouse boolean, `1`/`0`, or text such as
    /// `true`, `f`, `yes`; sent as `true`/`false`.
    Boolean,
    /// A decimal number (`package_dimensions.height`), which Stripe keeps as a float: sent as
    /// the shortest text of that float (`12.50` → `12.5`), the form it comes back in.
    Number,
    /// A non-negative decimal amount (`unit_amount_decimal`) with at most `max_fraction_digits`
    /// digits after the point; sent as Stripe writes it back (`12.50` → `12.5`).
    Decimal {
        max_fraction_digits: usize,
    },
    /// A three-letter currency code Stripe supports; sent in lower case, as Stripe returns it.
    Currency,
    /// A list of strings (`preferred_locales`): a warehouse array, JSON array or `a, b` text.
    List,
    Enum(&'static [&'static str]),
    InvoicePrefix,
    MetadataValue,
    /// A list of objects (a price's `tiers`), from a JSON array of objects whose keys are the
    /// `children` parameters; kept as canonical JSON text (see [`canonical_object_list`]).
    ObjectList {
        children: &'static [Param],
    },
}

impl FieldKind {
    pub(crate) fn of(param: &Param) -> FieldKind {
        match param.kind {
            ParamKind::String { max_chars } => FieldKind::Text { max_chars },
            ParamKind::Email { max_chars } => FieldKind::Email { max_chars },
            // The range (`unit_amount` ≥ 0) is Stripe's rule, checked on the whole request.
            ParamKind::Integer | ParamKind::IntegerRange { .. } => FieldKind::Integer,
            ParamKind::Boolean => FieldKind::Boolean,
            ParamKind::Number => FieldKind::Number,
            ParamKind::Decimal {
                max_fraction_digits,
            } => FieldKind::Decimal {
                max_fraction_digits,
            },
            ParamKind::Currency => FieldKind::Currency,
            // The forbidden characters are Stripe's rule, checked on the whole request.
            ParamKind::StatementDescriptor { max_chars } => FieldKind::Text { max_chars },
            ParamKind::Enum { allowed } => FieldKind::Enum(allowed),
            ParamKind::InvoicePrefix => FieldKind::InvoicePrefix,
            ParamKind::Metadata => FieldKind::MetadataValue,
            ParamKind::StringArray { .. } => FieldKind::List,
            // Only inside object arrays (a price tier's `up_to`), which are never mappable.
            ParamKind::IntegerOrInf { .. } => FieldKind::Text { max_chars: 20 },
            ParamKind::ObjectArray { children, .. } if item_name(param).is_none() => {
                FieldKind::ObjectList { children }
            }
            // A list of named items (`marketing_features`); objects are never mappable (see
            // `mappable_fields`).
            ParamKind::Object { .. } | ParamKind::ObjectArray { .. } => FieldKind::List,
        }
    }
}

/// A mappable field of one object, parsed from its dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedField {
    pub path: String,
    pub kind: FieldKind,
    /// The object Stripe replaces as a whole when this field is part of one (`address`).
    pub whole_group: Option<&'static str>,
    /// What a NULL means under the `clear` policy (see [`MappedField::cleared_value`]).
    clear: Clear,
    /// Set when the mapping names another record by its key (`product(metadata.sku)`): the
    /// column holds that key, and the field gets the id of the record that carries it.
    pub reference: Option<Box<Reference>>,
}

/// A field filled with the id of another Stripe record, found by its key: the product whose
/// `metadata.sku` is the column's value. The engine resolves it from the account's key index
/// of that object (ferry's own writes and consistent listings, never search).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub object: ferry_core::ObjectKind,
    pub key: MappedKey,
    /// For a list of objects (a subscription's `items`), the item field that holds the id
    /// (`price`): the column holds the list with keys in that place.
    pub within: Option<&'static str>,
}

impl Reference {
    /// The schema of the referenced object.
    pub fn schema(&self) -> &'static ObjectSchema {
        crate::stripe::stripe_object(self.object).schema()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clear {
    /// Sent as `""`, which unsets it.
    Unset,
    /// Unset with `""`, after which Stripe reads back this value (`tax_exempt` → `none`).
    ReadsAs(&'static str),
    /// Stripe cannot unset it (integers, booleans, amounts, an assigned invoice prefix): a NULL
    /// leaves it alone.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("`{field}` is not a Stripe {object} field{suggestion}. Valid fields: {valid}, or metadata.KEY for a custom field")]
    UnknownField {
        object: &'static str,
        field: String,
        suggestion: String,
        valid: String,
    },
    #[error("`{field}`: a metadata key must be 1 to {METADATA_KEY_MAX_CHARS} characters without `[` or `]` (got {chars} characters)")]
    BadMetadataKey { field: String, chars: usize },
    #[error("the mapping key must be {allowed}an external id kept in metadata (`metadata.KEY`), not `{field}`")]
    BadKeyField { field: String, allowed: String },
    #[error("`{written}`: {field} does not name another Stripe record, so it cannot be looked up by key. {can}")]
    NotAReference {
        written: String,
        field: String,
        can: String,
    },
    #[error("`{written}`: a {object} is found by {allowed} or an external id kept in its metadata (`metadata.KEY`), not `{key}`")]
    BadReferenceKey {
        written: String,
        object: &'static str,
        key: String,
        allowed: String,
    },
}

/// `product(metadata.sku)` as the field `product` and the key `metadata.sku`. A metadata key
/// may hold parentheses (`metadata.price(usd)`): it is never a reference.
fn split_reference(path: &str) -> Option<(&str, &str)> {
    if path.starts_with("metadata.") {
        return None;
    }
    let (field, rest) = path.split_once('(')?;
    let key = rest.strip_suffix(')')?;
    (!field.trim().is_empty()).then(|| (field.trim(), key.trim()))
}

/// The fields of `schema` that hold another record's id, as people write them to look that
/// record up (`product(id)`), for messages and the UI.
pub fn reference_fields(schema: &'static ObjectSchema) -> Vec<(&'static str, &'static str)> {
    schema
        .fields()
        .into_iter()
        .filter_map(|field| {
            let object = match field.param.refers_to {
                Some(object) => object,
                None => list_reference(field.param)?.1,
            };
            Some((field.path, object))
        })
        .collect()
}

/// The one item field of a list of objects that holds another record's id (a subscription
/// item's `price`), and that record's object.
fn list_reference(param: &Param) -> Option<(&'static str, &'static str)> {
    let FieldKind::ObjectList { children } = FieldKind::of(param) else {
        return None;
    };
    let mut referring = children
        .iter()
        .filter(|child| child.mapped)
        .filter_map(|child| Some((child.name, child.refers_to?)));
    let first = referring.next()?;
    referring.next().is_none().then_some(first)
}

fn parse_reference(
    schema: &'static ObjectSchema,
    written: &str,
    field_path: &str,
    key_path: &str,
) -> Result<MappedField, MappingError> {
    // Errors name the text as written (`prodcut(id)`), not only the field part.
    let mut field = parse_field(schema, field_path).map_err(|error| match error {
        MappingError::UnknownField {
            object,
            suggestion,
            valid,
            ..
        } => MappingError::UnknownField {
            object,
            field: written.to_string(),
            suggestion,
            valid,
        },
        other => other,
    })?;
    let spec = schema.field(&field.path);
    let within = spec.as_ref().and_then(|spec| list_reference(spec.param));
    let target = spec
        .as_ref()
        .and_then(|spec| spec.param.refers_to.or(within.map(|(_, object)| object)))
        .and_then(crate::stripe::objects::object_kind_named);
    let Some(object) = target else {
        let can = match reference_fields(schema).as_slice() {
            [] => format!("No {} field does.", schema.label),
            fields => format!(
                "Fields that do: {}.",
                fields
                    .iter()
                    .map(|(path, object)| format!("`{path}(KEY)` (a {object})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(MappingError::NotAReference {
            written: written.to_string(),
            field: field.path,
            can,
        });
    };
    let target_schema = crate::stripe::stripe_object(object).schema();
    let key =
        MappedKey::new(target_schema, key_path).map_err(|_| MappingError::BadReferenceKey {
            written: written.to_string(),
            object: target_schema.object,
            key: key_path.to_string(),
            allowed: target_schema
                .key_fields
                .iter()
                .map(|key| format!("`{}`", key.path))
                .collect::<Vec<_>>()
                .join(" or "),
        })?;
    // The column holds a key: text, checked when the reference is resolved. A list keeps its
    // kind: its items hold keys where ids go.
    if within.is_none() {
        field.kind = FieldKind::Text { max_chars: 5000 };
    }
    field.reference = Some(Box::new(Reference {
        object,
        key,
        within: within.map(|(name, _)| name),
    }));
    Ok(field)
}

/// Parses a dotted field path (`address.city`, `metadata.plan`) of `schema`'s object.
///
/// `FIELD(KEY)` maps a field that holds another record's id (`product` on a price) by that
/// record's key instead (`product(metadata.sku)`, `product(id)`): see [`Reference`].
pub fn parse_field(schema: &'static ObjectSchema, path: &str) -> Result<MappedField, MappingError> {
    let path = path.trim();
    if let Some((lines, line_path)) = lines_of(schema).zip(path.strip_prefix("lines.")) {
        return parse_line_field(lines, line_path);
    }
    if let Some((field, key)) = split_reference(path) {
        return parse_reference(schema, path, field, key);
    }
    if let Some(key) = path.strip_prefix("metadata.") {
        let chars = key.chars().count();
        if chars == 0 || chars > METADATA_KEY_MAX_CHARS || key.contains(['[', ']']) {
            return Err(MappingError::BadMetadataKey {
                field: path.to_string(),
                chars,
            });
        }
        return Ok(MappedField {
            path: path.to_string(),
            kind: FieldKind::MetadataValue,
            whole_group: None,
            clear: Clear::Unset,
            reference: None,
        });
    }
    if let Some(spec) = schema.field(path) {
        return Ok(MappedField::from_spec(&spec));
    }
    let fields = standard_paths(schema);
    let suggestion = closest_field(&fields, path)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    Err(MappingError::UnknownField {
        object: schema.label,
        field: path.to_string(),
        suggestion,
        valid: fields.join(", "),
    })
}

/// How the records of `schema`'s object that are made of lines keep them (an invoice's items).
fn lines_of(schema: &'static ObjectSchema) -> Option<&'static crate::stripe::Lines> {
    crate::stripe::objects::object_kind_named(schema.object)
        .and_then(|kind| crate::stripe::stripe_object(kind).lines())
}

/// `lines.FIELD`: a field of each line (`lines.amount`, `lines.price(lookup_key)`,
/// `lines.metadata.sku`), parsed against the lines' own table. What a line takes from its
/// parent (`customer`) or is given by ferry (`invoice`) is not the model's to give.
fn parse_line_field(
    lines: &'static crate::stripe::Lines,
    line_path: &str,
) -> Result<MappedField, MappingError> {
    let written = format!("lines.{line_path}");
    let base = split_reference(line_path).map_or(line_path, |(field, _)| field);
    let inherited = |path: &str| lines.inherited.iter().any(|(name, _)| *name == path);
    if inherited(base) || base == lines.parent_param {
        let valid = standard_paths(lines.schema)
            .into_iter()
            .filter(|path| !inherited(path) && *path != lines.parent_param)
            .map(|path| format!("lines.{path}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(MappingError::UnknownField {
            object: lines.schema.label,
            field: written,
            suggestion: format!(" (a line takes `{base}` from its {})", lines.parent_param),
            valid,
        });
    }
    let mut field = parse_field(lines.schema, line_path).map_err(|error| match error {
        MappingError::UnknownField {
            object,
            suggestion,
            valid,
            ..
        } => MappingError::UnknownField {
            object,
            field: written.clone(),
            suggestion,
            valid,
        },
        other => other,
    })?;
    // The line's own group (`period`) stays named as the line's table names it: lines are
    // encoded against that table.
    field.path = format!("lines.{}", field.path);
    Ok(field)
}

/// The field a mapping key may use: one of the object's key fields (a customer's `email`) or
/// `metadata.KEY`.
pub fn parse_key_field(
    schema: &'static ObjectSchema,
    path: &str,
) -> Result<MappedField, MappingError> {
    let field = parse_field(schema, path)?;
    let standard_key = field.reference.is_none() && schema.key_field(&field.path).is_some();
    if field.kind == FieldKind::MetadataValue || standard_key {
        return Ok(field);
    }
    let allowed = schema
        .key_fields
        .iter()
        .map(|key| format!("`{}`", key.path))
        .map(|key| format!("{key} or "))
        .collect::<String>();
    Err(MappingError::BadKeyField {
        field: field.path,
        allowed,
    })
}

/// The standard (non-metadata) field paths, in the order people see them.
pub fn standard_paths(schema: &'static ObjectSchema) -> Vec<&'static str> {
    schema
        .fields()
        .into_iter()
        .map(|f| f.path)
        .filter(|p| *p != "metadata")
        .collect()
}

impl MappedField {
    fn from_spec(spec: &FieldSpec) -> MappedField {
        let kind = FieldKind::of(spec.param);
        let clear = match (spec.param.unset_reads_as, kind) {
            (Some(value), _) => Clear::ReadsAs(value),
            (None, FieldKind::Integer | FieldKind::InvoicePrefix) => Clear::Never,
            // Stripe refuses `""` for these unless the parameter, or the group it is part of
            // (`package_dimensions`, unset as a whole), can be unset.
            (
                None,
                FieldKind::Boolean
                | FieldKind::Number
                | FieldKind::Decimal { .. }
                | FieldKind::Currency,
            ) if !spec.param.empty_unsets && spec.whole_group.is_none() => Clear::Never,
            _ => Clear::Unset,
        };
        MappedField {
            path: spec.path.to_string(),
            kind,
            whole_group: spec.whole_group,
            clear,
            reference: None,
        }
    }

    /// The metadata key of a `metadata.KEY` field.
    pub fn metadata_key(&self) -> Option<&str> {
        self.path.strip_prefix("metadata.")
    }

    /// What to send for a NULL under the `clear` policy: unset the field, or (for what Stripe
    /// cannot unset) nothing at all.
    pub fn cleared_value(&self) -> Option<FieldValue> {
        match self.clear {
            Clear::Unset => Some(FieldValue::Clear),
            Clear::ReadsAs(value) => Some(FieldValue::Text(value.to_string())),
            Clear::Never => None,
        }
    }

    /// Whether an update may unset the field with `""` (integers cannot be unset).
    pub fn can_be_unset(&self) -> bool {
        self.clear != Clear::Never
    }

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
            FieldKind::List => Some(FieldValue::List(list_items(value)?)),
            FieldKind::MetadataValue => {
                // Metadata values are strings; structured values travel as compact JSON.
                let text = value.to_text().map_err(|e| e.to_string())?;
                text.map(FieldValue::Text)
            }
            FieldKind::Email { .. } => text(value)?.map(|s| FieldValue::Text(s.trim().to_string())),
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
            FieldKind::Boolean => boolean_text(value)?.map(FieldValue::Text),
            FieldKind::Number => match trimmed(text(value)?) {
                // Stripe keeps a float: `2.50` comes back as `2.5`, so it is sent that way.
                Some(s) if is_number_text(&s) => match s.parse::<f64>() {
                    Ok(number) if number.is_finite() => {
                        Some(FieldValue::Text(crate::stripe::encoder::number_text(number)))
                    }
                    _ => return Err(format!("is `{s}`, which is too large a number")),
                },
                Some(s) => return Err(format!("is `{s}`, which is not a number")),
                None => None,
            },
            FieldKind::Decimal {
                max_fraction_digits,
            } => match trimmed(text(value)?) {
                Some(s) if is_decimal_text(&s, max_fraction_digits) => {
                    Some(FieldValue::Text(normalize_decimal(&s)))
                }
                Some(s) => {
                    return Err(format!(
                        "is `{s}`, which is not a non-negative decimal with at most {max_fraction_digits} digits after the point"
                    ))
                }
                None => None,
            },
            FieldKind::Currency => match trimmed(text(value)?) {
                Some(s) if is_supported_currency(&s) => {
                    Some(FieldValue::Text(s.to_ascii_lowercase()))
                }
                Some(s) => {
                    return Err(format!(
                        "is `{s}`, which is not a currency Stripe supports (a three-letter ISO code such as `usd`)"
                    ))
                }
                None => None,
            },
            FieldKind::Text { .. } | FieldKind::InvoicePrefix => text(value)?.map(FieldValue::Text),
            FieldKind::ObjectList { children } => {
                let Some(text) = value.to_text().map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                let json: Json = serde_json::from_str(&text).map_err(|_| {
                    format!("is `{text}`, which is not a JSON array of objects")
                })?;
                Some(FieldValue::Text(canonical_object_list(
                    children,
                    &json,
                    ListSource::Model,
                )?))
            }
        };
        if let Some(FieldValue::Text(s)) = &converted {
            check_text(self.kind, s)?;
        }
        Ok(converted)
    }
}

/// A mapping key: the field, and how its values compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedKey {
    pub field: MappedField,
    /// Emails compare ignoring case; ids and external ids exactly (both trimmed).
    pub ignore_case: bool,
}

impl MappedKey {
    pub fn new(schema: &'static ObjectSchema, path: &str) -> Result<MappedKey, MappingError> {
        let field = parse_key_field(schema, path)?;
        let ignore_case = schema
            .key_field(&field.path)
            .is_some_and(|key| key.ignore_case);
        Ok(MappedKey { field, ignore_case })
    }

    /// The key as matched: trimmed, and lower-cased where case does not count.
    pub fn normalize(&self, key: &str) -> String {
        if self.ignore_case {
            key.trim().to_lowercase()
        } else {
            key.trim().to_string()
        }
    }

    /// The normalized key a record as Stripe returned it carries, if any.
    pub fn of_record(&self, record: &Json) -> Option<String> {
        let value = match self.field.metadata_key() {
            Some(name) => record.get("metadata")?.get(name)?.as_str()?,
            None => self
                .field
                .path
                .split('.')
                .try_fold(record, |json, part| json.get(part))?
                .as_str()?,
        };
        let key = self.normalize(value);
        (!key.is_empty()).then_some(key)
    }
}

/// Local checks with messages in ferry's words; Stripe's own rules are checked again on the
/// whole request by `ferry_stripe_wire` before anything is sent.
fn check_text(kind: FieldKind, text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    let max = match kind {
        FieldKind::Text { max_chars } | FieldKind::Email { max_chars } => max_chars,
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

/// Where a list of objects comes from: a model's column, or a record Stripe returned (which
/// writes every amount twice, as `unit_amount` and `unit_amount_decimal`, and the last tier's
/// `up_to=inf` as `null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSource {
    Model,
    Stripe,
}

/// A list of objects in one canonical form, so that what a model says and what Stripe holds
/// compare equal as text: each object's keys in table order, NULLs left out, an amount given
/// as an integer written as its `_decimal` twin (`unit_amount: 500` → `unit_amount_decimal:
/// "500"`) with decimals normalized, and an unbounded `up_to` (`inf`, or NULL) as `"inf"`.
/// From a model, an unknown key or a value of the wrong type is refused with its place.
pub fn canonical_object_list(
    children: &'static [Param],
    json: &Json,
    source: ListSource,
) -> Result<String, String> {
    let Json::Array(items) = json else {
        return Err(format!("is `{json}`, which is not a JSON array of objects"));
    };
    // What ferry sets itself (an item's `id`) is never read from a model nor compared.
    let children: Vec<&Param> = children.iter().filter(|child| child.mapped).collect();
    let names = || {
        children
            .iter()
            .map(|child| child.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut canonical = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let place = format!("item {}", index + 1);
        let Json::Object(object) = item else {
            return Err(format!(
                "{place} is `{item}`, not an object with {}",
                names()
            ));
        };
        // Stripe returns more than it takes (an item's `created`, its whole `price`).
        let unknown = object
            .keys()
            .find(|key| children.iter().all(|child| child.name != key.as_str()));
        if let (Some(unknown), ListSource::Model) = (unknown, source) {
            return Err(format!(
                "{place} has `{unknown}`, which is not one of {}",
                names()
            ));
        }
        let mut out = serde_json::Map::new();
        for child in children.iter().copied() {
            let given = object.get(child.name).filter(|value| !value.is_null());
            let twin = format!("{}_decimal", child.name);
            let has_twin = children.iter().any(|other| other.name == twin);
            match child.kind {
                ParamKind::IntegerOrInf { .. } => {
                    let unbounded = match given {
                        None => true,
                        Some(Json::String(text)) => text.trim().eq_ignore_ascii_case("inf"),
                        Some(_) => false,
                    };
                    let value = if unbounded {
                        Json::from("inf")
                    } else {
                        let number = given.and_then(integer_of).ok_or_else(|| {
                            format!(
                                "{place}: {} is `{}`, which is not a whole number or inf",
                                child.name,
                                given.unwrap_or(&Json::Null)
                            )
                        })?;
                        Json::from(number)
                    };
                    out.insert(child.name.to_string(), value);
                }
                ParamKind::Integer | ParamKind::IntegerRange { .. } => {
                    let Some(given) = given else { continue };
                    let number = integer_of(given).ok_or_else(|| {
                        format!(
                            "{place}: {} is `{given}`, which is not a whole number",
                            child.name
                        )
                    })?;
                    if !has_twin {
                        out.insert(child.name.to_string(), Json::from(number));
                        continue;
                    }
                    let twin_given = object.get(&twin).is_some_and(|value| !value.is_null());
                    match (twin_given, source) {
                        // Stripe writes both; the decimal says the same, with more precision.
                        (true, ListSource::Stripe) => {}
                        (true, ListSource::Model) => {
                            return Err(format!(
                                "{place} has both {} and {twin}; give one of them",
                                child.name
                            ))
                        }
                        (false, _) => {
                            out.insert(twin, Json::from(number.to_string()));
                        }
                    }
                }
                ParamKind::Decimal {
                    max_fraction_digits,
                } => {
                    let Some(given) = given else { continue };
                    let text = match given {
                        Json::String(text) => text.trim().to_string(),
                        Json::Number(number) => number.to_string(),
                        other => other.to_string(),
                    };
                    if !is_decimal_text(&text, max_fraction_digits) {
                        return Err(format!(
                            "{place}: {} is `{text}`, which is not a non-negative decimal with at most {max_fraction_digits} digits after the point",
                            child.name
                        ));
                    }
                    out.insert(child.name.to_string(), Json::from(normalize_decimal(&text)));
                }
                ParamKind::Metadata => {
                    // Stripe returns `{}` for no metadata; values are text either way.
                    let Some(given) = given else { continue };
                    let Json::Object(entries) = given else {
                        return Err(format!(
                            "{place}: {} is `{given}`, which is not an object of keys and values",
                            child.name
                        ));
                    };
                    if entries.is_empty() {
                        continue;
                    }
                    let entries: serde_json::Map<String, Json> = entries
                        .iter()
                        .map(|(key, value)| {
                            let text = match value {
                                Json::String(text) => text.clone(),
                                other => other.to_string(),
                            };
                            (key.clone(), Json::from(text))
                        })
                        .collect();
                    out.insert(child.name.to_string(), Json::Object(entries));
                }
                _ => {
                    let Some(given) = given else { continue };
                    let text = match given {
                        Json::String(text) => text.clone(),
                        // Stripe expands what an item refers to (its `price`): its id is
                        // what the item holds.
                        Json::Object(record) if child.refers_to.is_some() => record
                            .get("id")
                            .and_then(Json::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        other => other.to_string(),
                    };
                    out.insert(child.name.to_string(), Json::from(text));
                }
            }
        }
        canonical.push(Json::Object(out));
    }
    Ok(Json::Array(canonical).to_string())
}

/// Text with surrounding spaces removed; blank text is a value that is not a number, not NULL.
fn trimmed(text: Option<String>) -> Option<String> {
    text.map(|s| s.trim().to_string())
}

/// `true`/`false` from a warehouse boolean, the integers 1 and 0, or the usual spellings of
/// either in text (`t`/`f` is how PostgreSQL writes booleans as text), in any case.
fn boolean_text(value: &Value) -> Result<Option<String>, String> {
    let flag = match value {
        Value::Bool(flag) | Value::Json(serde_json::Value::Bool(flag)) => Some(*flag),
        other => {
            let Some(text) = other.to_scalar_text().map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            match text.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Some(true),
                "false" | "f" | "no" | "n" | "0" => Some(false),
                _ => return Err(format!("is `{text}`, which is not true or false")),
            }
        }
    };
    Ok(flag.map(|flag| flag.to_string()))
}

/// A decimal as Stripe writes it back: no leading zeros before the point, no trailing zeros
/// after it, and no point when the fraction is zero (`0012.50` → `12.5`, `12.000` → `12`).
fn normalize_decimal(text: &str) -> String {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{fraction}")
    }
}

fn list_items(value: &Value) -> Result<Vec<String>, String> {
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
                    .ok_or_else(|| format!("has a non-text item {v}"))
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

fn closest_field(fields: &[&'static str], path: &str) -> Option<&'static str> {
    fields
        .iter()
        .map(|name| (*name, edit_distance(path, name)))
        .filter(|(name, distance)| *distance <= 2.max(name.len() / 4))
        .min_by_key(|(_, distance)| *distance)
        .map(|(name, _)| name)
        .or_else(|| {
            // `city` → `address.city`: a bare sub-field name.
            fields
                .iter()
                .copied()
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
    use ferry_stripe_wire::customer::CUSTOMER;
    use ferry_stripe_wire::price::PRICE;
    use ferry_stripe_wire::product::PRODUCT;

    fn field(path: &str) -> Result<MappedField, MappingError> {
        parse_field(&CUSTOMER, path)
    }

    /// A subscription names its customer and its items' prices by their keys; it has no key
    /// of its own, and the items ferry pairs by id are not the model's to give.
    #[test]
    fn a_subscription_refers_to_its_customer_and_to_its_items_prices() {
        use ferry_stripe_wire::subscription::SUBSCRIPTION;
        let customer = parse_field(&SUBSCRIPTION, "customer(email)").unwrap();
        let reference = customer.reference.unwrap();
        assert_eq!(
            (
                reference.object,
                reference.within,
                reference.key.ignore_case
            ),
            (ferry_core::ObjectKind::Customer, None, true)
        );
        let items = parse_field(&SUBSCRIPTION, "items(lookup_key)").unwrap();
        assert!(matches!(items.kind, FieldKind::ObjectList { .. }));
        let reference = items.reference.clone().unwrap();
        assert_eq!(
            (reference.object, reference.within),
            (ferry_core::ObjectKind::Price, Some("price"))
        );
        assert_eq!(
            reference_fields(&SUBSCRIPTION),
            vec![("customer", "customer"), ("items", "price")]
        );
        assert_eq!(
            parse_key_field(&SUBSCRIPTION, "description").unwrap_err().to_string(),
            "the mapping key must be an external id kept in metadata (`metadata.KEY`), not `description`"
        );
        let list = |text: &str| items.convert(&Value::Text(text.into()));
        assert_eq!(
            list(r#"[{"price": "pro_monthly", "quantity": "2", "metadata": {}}]"#),
            Ok(Some(FieldValue::Text(
                r#"[{"price":"pro_monthly","quantity":2}]"#.into()
            )))
        );
        assert_eq!(
            list(r#"[{"id": "si_1", "price": "pro_monthly"}]"#),
            Err("item 1 has `id`, which is not one of metadata, price, quantity".into())
        );
    }

    #[test]
    fn unknown_fields_get_a_suggestion_and_the_list() {
        let error = field("emial").unwrap_err().to_string();
        assert!(error.starts_with("`emial` is not a Stripe Customer field (did you mean `email`?). Valid fields: email, name, phone"), "{error}");
        let error = field("city").unwrap_err().to_string();
        assert!(error.contains("did you mean `address.city`?"), "{error}");
        assert!(field("metadata.plan").is_ok());
        let error = field("metadata.a[b]").unwrap_err().to_string();
        assert!(error.contains("without `[` or `]`"), "{error}");
        let long = format!("metadata.{}", "k".repeat(41));
        assert!(field(&long).is_err());
        assert_eq!(
            parse_key_field(&CUSTOMER, "name").unwrap_err().to_string(),
            "the mapping key must be `email` or an external id kept in metadata (`metadata.KEY`), not `name`"
        );
        assert!(parse_key_field(&CUSTOMER, "metadata.user_id").is_ok());
        assert!(field("test_clock").is_err(), "not offered for mapping");
        assert!(field("metadata").is_err(), "metadata needs a key");
    }

    #[test]
    fn clear_rules_come_from_the_table() {
        let cleared = |path: &str| field(path).unwrap().cleared_value();
        assert_eq!(cleared("name"), Some(FieldValue::Clear));
        assert_eq!(cleared("metadata.plan"), Some(FieldValue::Clear));
        assert_eq!(cleared("balance"), None);
        assert_eq!(cleared("invoice_prefix"), None);
        assert_eq!(cleared("tax_exempt"), Some(FieldValue::Text("none".into())));
        assert_eq!(field("address.city").unwrap().whole_group, Some("address"));
    }

    #[test]
    fn values_convert_or_explain_why_not() {
        let phone = field("phone").unwrap();
        assert_eq!(
            phone.convert(&Value::Text("+33 1 23 45 67 89 00 11 22".into())),
            Err("is 26 characters long; Stripe allows at most 20".into())
        );
        let balance = field("balance").unwrap();
        assert_eq!(
            balance.convert(&Value::Decimal("150.00".into())),
            Ok(Some(FieldValue::Integer(150)))
        );
        assert!(balance.convert(&Value::Float(f64::NAN)).is_err());
        let locales = field("preferred_locales").unwrap();
        assert_eq!(
            locales.convert(&Value::Text("fr, en".into())),
            Ok(Some(FieldValue::List(vec!["fr".into(), "en".into()])))
        );
        let tax = field("tax_exempt").unwrap();
        assert_eq!(
            tax.convert(&Value::Text("maybe".into())),
            Err("is `maybe`, which is not one of none, exempt, reverse".into())
        );
        let plan = field("metadata.plan").unwrap();
        assert_eq!(
            plan.convert(&Value::Json(serde_json::json!({"tier": 2}))),
            Ok(Some(FieldValue::Text(r#"{"tier":2}"#.into())))
        );
        let name = field("name").unwrap();
        assert!(name
            .convert(&Value::Json(serde_json::json!([1, 2])))
            .is_err());
        assert_eq!(name.convert(&Value::Null), Ok(None));
    }

    fn product_field(path: &str) -> MappedField {
        parse_field(&PRODUCT, path).unwrap()
    }

    fn price_field(path: &str) -> MappedField {
        parse_field(&PRICE, path).unwrap()
    }

    #[test]
    fn catalog_kinds_come_from_the_tables() {
        assert_eq!(product_field("active").kind, FieldKind::Boolean);
        assert_eq!(
            product_field("package_dimensions.height").kind,
            FieldKind::Number
        );
        assert_eq!(
            product_field("statement_descriptor").kind,
            FieldKind::Text { max_chars: 22 }
        );
        assert_eq!(price_field("currency").kind, FieldKind::Currency);
        assert_eq!(price_field("unit_amount").kind, FieldKind::Integer);
        assert_eq!(
            price_field("unit_amount_decimal").kind,
            FieldKind::Decimal {
                max_fraction_digits: 12
            }
        );
        assert_eq!(
            price_field("recurring.interval_count").kind,
            FieldKind::Integer
        );
        // What Stripe cannot unset is left alone on NULL; a group unset whole can be.
        assert_eq!(product_field("active").cleared_value(), None);
        assert_eq!(price_field("currency").cleared_value(), None);
        assert_eq!(price_field("unit_amount").cleared_value(), None);
        assert_eq!(
            product_field("package_dimensions.height").cleared_value(),
            Some(FieldValue::Clear)
        );
    }

    #[test]
    fn booleans_convert_from_warehouse_spellings() {
        let active = product_field("active");
        let converted = |value: Value| active.convert(&value);
        let yes = Ok(Some(FieldValue::Text("true".into())));
        let no = Ok(Some(FieldValue::Text("false".into())));
        assert_eq!(converted(Value::Bool(true)), yes);
        assert_eq!(converted(Value::Bool(false)), no);
        assert_eq!(converted(Value::Int(1)), yes);
        assert_eq!(converted(Value::Int(0)), no);
        assert_eq!(converted(Value::Text(" T ".into())), yes);
        assert_eq!(converted(Value::Text("no".into())), no);
        assert_eq!(converted(Value::Json(serde_json::json!(true))), yes);
        assert_eq!(converted(Value::Null), Ok(None));
        assert_eq!(
            converted(Value::Text("maybe".into())),
            Err("is `maybe`, which is not true or false".into())
        );
        assert!(converted(Value::Int(2)).is_err());
    }

    #[test]
    fn numbers_and_decimals_convert_to_the_text_stripe_returns() {
        let height = product_field("package_dimensions.height");
        assert_eq!(
            height.convert(&Value::Float(12.5)),
            Ok(Some(FieldValue::Text("12.5".into())))
        );
        assert_eq!(
            height.convert(&Value::Int(-3)),
            Ok(Some(FieldValue::Text("-3".into())))
        );
        assert_eq!(
            height.convert(&Value::Decimal("4.250".into())),
            Ok(Some(FieldValue::Text("4.25".into())))
        );
        assert_eq!(
            height.convert(&Value::Text("2.0".into())),
            Ok(Some(FieldValue::Text("2".into())))
        );
        assert_eq!(
            height.convert(&Value::Text("tall".into())),
            Err("is `tall`, which is not a number".into())
        );
        assert!(height.convert(&Value::Float(f64::INFINITY)).is_err());

        let amount = price_field("unit_amount_decimal");
        assert_eq!(
            amount.convert(&Value::Decimal("0012.50".into())),
            Ok(Some(FieldValue::Text("12.5".into())))
        );
        assert_eq!(
            amount.convert(&Value::Decimal("1250.00".into())),
            Ok(Some(FieldValue::Text("1250".into())))
        );
        assert_eq!(
            amount.convert(&Value::Float(0.125)),
            Ok(Some(FieldValue::Text("0.125".into())))
        );
        assert_eq!(
            amount.convert(&Value::Int(1250)),
            Ok(Some(FieldValue::Text("1250".into())))
        );
        assert_eq!(
            amount.convert(&Value::Int(-5)),
            Err("is `-5`, which is not a non-negative decimal with at most 12 digits after the point".into())
        );
        assert!(amount
            .convert(&Value::Text("0.0000000000001".into()))
            .is_err());
    }

    #[test]
    fn currencies_convert_to_lower_case() {
        let currency = price_field("currency");
        assert_eq!(
            currency.convert(&Value::Text(" EUR ".into())),
            Ok(Some(FieldValue::Text("eur".into())))
        );
        assert_eq!(
            currency.convert(&Value::Text("usd".into())),
            Ok(Some(FieldValue::Text("usd".into())))
        );
        assert_eq!(
            currency.convert(&Value::Text("XYZ".into())),
            Err("is `XYZ`, which is not a currency Stripe supports (a three-letter ISO code such as `usd`)".into())
        );
        assert!(currency.convert(&Value::Int(840)).is_err());
    }

    #[test]
    fn keys_normalize_and_are_read_off_records() {
        let email = MappedKey::new(&CUSTOMER, "email").unwrap();
        assert_eq!(email.normalize(" Ada@X.com "), "ada@x.com");
        let record = serde_json::json!({"email": "ADA@x.com", "metadata": {"user_id": " 42 "}});
        assert_eq!(email.of_record(&record).as_deref(), Some("ada@x.com"));
        let external = MappedKey::new(&CUSTOMER, "metadata.user_id").unwrap();
        assert_eq!(external.of_record(&record).as_deref(), Some("42"));
        assert_eq!(external.normalize("Ab"), "Ab");
        assert_eq!(
            external.of_record(&serde_json::json!({"metadata": {}})),
            None
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use ferry_stripe_wire::customer::CUSTOMER;
    use proptest::prelude::*;

    proptest! {
        /// The mapping parser takes any text: it returns a field or an error that names the
        /// input, never panics.
        #[test]
        fn any_field_text_parses_or_explains(path in any::<String>()) {
            match parse_field(&CUSTOMER, &path) {
                Ok(field) => prop_assert_eq!(field.path, path.trim()),
                Err(error) => prop_assert!(error.to_string().contains(path.trim())),
            }
        }

        /// References parse or explain themselves naming the text as written.
        #[test]
        fn any_reference_text_parses_or_explains(field in "[a-z_]{0,8}", key in any::<String>()) {
            let written = format!("{field}({key})");
            match parse_field(&ferry_stripe_wire::price::PRICE, &written) {
                Ok(parsed) => prop_assert!(parsed.reference.is_some()),
                Err(error) => prop_assert!(error.to_string().contains(written.trim())),
            }
        }

        /// Metadata keys are accepted exactly when Stripe would accept them.
        #[test]
        fn metadata_keys_follow_stripes_rules(key in any::<String>()) {
            let accepted = parse_field(&CUSTOMER, &format!("metadata.{key}")).is_ok();
            let trimmed = format!("metadata.{key}");
            let key = trimmed.trim().strip_prefix("metadata.").unwrap_or("").to_string();
            let valid = !key.is_empty() && key.chars().count() <= 40 && !key.contains(['[', ']']);
            prop_assert_eq!(accepted, valid);
        }
    }

    /// Parentheses in a metadata key are part of the key, not a reference.
    #[test]
    fn a_metadata_key_may_hold_parentheses() {
        let field = parse_field(&CUSTOMER, "metadata.price(usd)").unwrap();
        assert_eq!(
            (field.path.as_str(), field.reference.is_none()),
            ("metadata.price(usd)", true)
        );
    }
}
