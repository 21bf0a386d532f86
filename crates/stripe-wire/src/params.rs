//! Stripe's request parameters as data, and the one validator that checks a request against
//! them. Each object ferry syncs describes its create and update parameters with these types
//! (`customer.rs`, …); the emulator judges requests with [`crate::ObjectSchema::validate`]
//! (which runs [`validate_params`] and then the object's rules) and ferry's engine checks a row
//! with it before sending anything. The mappable fields of an object
//! are derived from the same table ([`mappable_fields`]), so a field exists in one place.

use serde_json::{Map, Value};

use crate::form::leaf_text;
use crate::param_error::{ParamError, Problem};

pub const METADATA_MAX_KEYS: usize = 50;
pub const METADATA_KEY_MAX_CHARS: usize = 40;
pub const METADATA_VALUE_MAX_CHARS: usize = 500;

/// One request parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub kind: ParamKind,
    /// Whether the empty string is accepted for an object, array, enum or integer parameter and
    /// clears it (`address=`, `metadata=`, `tax_exempt=`). String parameters always accept "";
    /// for them this flag says the field becomes `null` rather than `""`.
    pub empty_unsets: bool,
    /// Whether the parent object must contain this parameter (`shipping[name]`).
    pub required: bool,
    /// Accepted on create only; on update it is an unknown parameter (`test_clock`).
    pub create_only: bool,
    /// Accepted on update only; on create it is an unknown parameter (a product's
    /// `default_price`).
    pub update_only: bool,
    /// The empty string is refused (`parameter_invalid_empty`): the parameter cannot be unset
    /// (a product's `name`).
    pub rejects_empty: bool,
    /// Offered as a mapping target (leaves only; see [`not_mapped`]).
    pub mapped: bool,
    /// An object that Stripe replaces as a whole on update (see [`replaced_whole`]).
    pub replaced_whole: bool,
    /// What Stripe reads back once the field is unset (see [`unset_reads_as`]).
    pub unset_reads_as: Option<&'static str>,
    /// The id of another Stripe object that this parameter holds (`product` on a price): a
    /// mapping may name that record by its key instead (see [`references`]).
    pub refers_to: Option<&'static str>,
    /// Says how Stripe carries a write out (a subscription's `proration_behavior`), not a field
    /// of the record: Stripe never returns it (see [`request_option`]).
    pub request_option: bool,
    /// A field Stripe takes but does not return on the record (see [`not_returned`]).
    pub not_returned: bool,
}

/// The type of a parameter, with its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String {
        max_chars: usize,
    },
    /// A string of at most `max_chars` that, when not empty, must look like an email address.
    Email {
        max_chars: usize,
    },
    /// Decimal text of a signed 64-bit integer.
    Integer,
    Enum {
        allowed: &'static [&'static str],
    },
    /// 3–12 upper-case ASCII letters or digits.
    InvoicePrefix,
    Object {
        children: &'static [Param],
    },
    /// String keys to string values; limits in the `METADATA_*` constants.
    Metadata,
    StringArray {
        item_max_chars: usize,
        max_items: usize,
    },
    ObjectArray {
        children: &'static [Param],
        max_items: usize,
    },
    /// `true` or `false` (JSON booleans too).
    Boolean,
    /// A decimal number such as `12.5` or `-3` (package dimensions); no exponent, no `inf`.
    Number,
    /// A non-negative decimal amount as text, such as `1250` or `12.345`, with at most
    /// `max_fraction_digits` digits after the point (`unit_amount_decimal`: 12).
    Decimal {
        max_fraction_digits: usize,
    },
    /// A three-letter ISO currency code that Stripe supports ([`SUPPORTED_CURRENCIES`]);
    /// accepted in any case, stored and returned in lower case.
    Currency,
    /// Decimal text of a signed 64-bit integer between `min` and `max` inclusive.
    IntegerRange {
        min: i64,
        max: i64,
    },
    /// An integer of at least `min`, or the text `inf` (a price tier's `up_to`).
    IntegerOrInf {
        min: i64,
    },
    /// At most `max_chars` characters, none of `<`, `>`, `\`, `'`, `"`, and at least one
    /// letter (a product's `statement_descriptor`).
    StatementDescriptor {
        max_chars: usize,
    },
}

pub const fn string(name: &'static str, max_chars: usize) -> Param {
    Param {
        name,
        kind: ParamKind::String { max_chars },
        empty_unsets: false,
        required: false,
        create_only: false,
        update_only: false,
        rejects_empty: false,
        mapped: true,
        replaced_whole: false,
        unset_reads_as: None,
        refers_to: None,
        request_option: false,
        not_returned: false,
    }
}

pub const fn with_kind(name: &'static str, kind: ParamKind) -> Param {
    Param {
        name,
        kind,
        empty_unsets: false,
        required: false,
        create_only: false,
        update_only: false,
        rejects_empty: false,
        mapped: true,
        replaced_whole: false,
        unset_reads_as: None,
        refers_to: None,
        request_option: false,
        not_returned: false,
    }
}

pub const fn unsettable(param: Param) -> Param {
    Param {
        empty_unsets: true,
        ..param
    }
}

pub const fn required(param: Param) -> Param {
    Param {
        required: true,
        ..param
    }
}

pub const fn create_only(param: Param) -> Param {
    Param {
        create_only: true,
        ..param
    }
}

/// Accepted on update only; on create it is an unknown parameter (`default_price`).
pub const fn update_only(param: Param) -> Param {
    Param {
        update_only: true,
        ..param
    }
}

/// The empty string is refused with `parameter_invalid_empty`: Stripe reads `""` as "unset",
/// and this parameter cannot be unset (a product's `name`).
pub const fn non_empty(param: Param) -> Param {
    Param {
        rejects_empty: true,
        ..param
    }
}

/// Not offered as a mapping target (payment settings, tax automation, test clocks…): still a
/// valid parameter for the emulator to accept.
pub const fn not_mapped(param: Param) -> Param {
    Param {
        mapped: false,
        ..param
    }
}

/// An object Stripe replaces as a whole on update (`address`): sending one part blanks the
/// others, so ferry sends every mapped part whenever any part changes.
pub const fn replaced_whole(param: Param) -> Param {
    Param {
        replaced_whole: true,
        ..param
    }
}

/// What Stripe reads back after the field is unset with `""` (`tax_exempt` reads `none`).
pub const fn unset_reads_as(param: Param, value: &'static str) -> Param {
    Param {
        unset_reads_as: Some(value),
        ..param
    }
}

/// Holds the id of a record of the `object` (Stripe's `object` value, `product`): a mapping
/// may fill it with the id of the record whose key is the column's value
/// (`product(metadata.sku)`).
pub const fn references(param: Param, object: &'static str) -> Param {
    Param {
        refers_to: Some(object),
        ..param
    }
}

/// A parameter that says how Stripe carries the write out (`proration_behavior`): mapped
/// (usually from a constant), it goes with every create and with every update that changes
/// something, and is never compared with the record, which does not hold it.
pub const fn request_option(param: Param) -> Param {
    Param {
        request_option: true,
        ..param
    }
}

/// A field Stripe takes but does not return on the record (an invoice's `days_until_due`,
/// read back only as the `due_date` it set): compared with ferry's last write, never with the
/// record as Stripe holds it, which would always find it changed.
pub const fn not_returned(param: Param) -> Param {
    Param {
        not_returned: true,
        ..param
    }
}

/// `expand[]`, accepted by every Stripe endpoint; it changes only the response shape.
pub static EXPAND_PARAM: Param = with_kind(
    "expand",
    ParamKind::StringArray {
        item_max_chars: 5000,
        max_items: usize::MAX,
    },
);

/// The currencies Stripe accepts, as its "Invalid currency" error lists them.
pub const SUPPORTED_CURRENCIES: &[&str] = &[
    "usd", "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd",
    "bdt", "bgn", "bhd", "bif", "bmd", "bnd", "bob", "brl", "bsd", "bwp", "byn", "bzd", "cad",
    "cdf", "chf", "clp", "cny", "cop", "crc", "cve", "czk", "djf", "dkk", "dop", "dzd", "egp",
    "etb", "eur", "fjd", "fkp", "gbp", "gel", "gip", "gmd", "gnf", "gtq", "gyd", "hkd", "hnl",
    "hrk", "htg", "huf", "idr", "ils", "inr", "isk", "jmd", "jod", "jpy", "kes", "kgs", "khr",
    "kmf", "krw", "kwd", "kyd", "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "mad", "mdl", "mga",
    "mkd", "mmk", "mnt", "mop", "mro", "mur", "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn",
    "nio", "nok", "npr", "nzd", "omr", "pab", "pen", "pgk", "php", "pkr", "pln", "pyg", "qar",
    "ron", "rsd", "rub", "rwf", "sar", "sbd", "scr", "sek", "sgd", "shp", "sll", "sos", "srd",
    "std", "szl", "thb", "tjs", "tnd", "top", "try", "ttd", "twd", "tzs", "uah", "ugx", "uyu",
    "uzs", "vnd", "vuv", "wst", "xaf", "xcd", "xof", "xpf", "yer", "zar", "zmw", "usdc", "ghs",
    "eek", "lvl", "svc", "vef", "ltl",
];

/// Characters Stripe refuses in a statement descriptor.
pub const STATEMENT_DESCRIPTOR_FORBIDDEN: &[char] = &['<', '>', '\\', '\'', '"'];

/// Checks create (`for_update = false`) or update params against an object's parameter table.
///
/// `params` is what [`crate::form::decode`] produces (string leaves); numbers, booleans and
/// `null` leaves are also accepted so that a row can be checked before it is encoded. Parameters
/// are checked in the order given and the first problem is returned, as Stripe does; then, on
/// create, the table's required parameters must all be present. The metadata key count is
/// checked for the keys sent; on update the emulator checks it again after merging. Rules
/// between parameters are the object's own: callers use [`crate::ObjectSchema::validate`],
/// which runs this and then those rules.
pub(crate) fn validate_params(
    table: &'static [Param],
    params: &Map<String, Value>,
    for_update: bool,
) -> Result<(), ParamError> {
    for (key, value) in params {
        if key == EXPAND_PARAM.name {
            validate_value(&EXPAND_PARAM, value, key, for_update)?;
            continue;
        }
        let spec = find_param(table, key, for_update)
            .ok_or_else(|| ParamError::new(key.clone(), Problem::Unknown))?;
        validate_value(spec, value, key, for_update)?;
    }
    if !for_update {
        if let Some(missing) = table
            .iter()
            .find(|spec| spec.required && !spec.update_only && !params.contains_key(spec.name))
        {
            return Err(ParamError::new(missing.name, Problem::Missing));
        }
    }
    Ok(())
}

/// A parameter a model column can be mapped to, by its dotted path (`address.city`), with
/// what the table says about it. `metadata` appears once, as the path `metadata`: every
/// `metadata.KEY` is a field of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    pub path: &'static str,
    pub param: &'static Param,
    /// The top-level object Stripe replaces as a whole, when the field is part of one.
    pub whole_group: Option<&'static str>,
    /// Settable on create only, because the field or an object it is part of is
    /// [`create_only`] (a price's `unit_amount`, `recurring.interval`): Stripe cannot change it
    /// afterwards.
    pub create_only: bool,
}

/// The mappable fields of a parameter table, depth first in table order: every leaf parameter
/// (strings, numbers, booleans, enums, string arrays, metadata, …) that is neither marked
/// [`not_mapped`] nor inside an object array, and the object arrays that are lists of names
/// ([`item_name`]).
pub fn mappable_fields(table: &'static [Param]) -> Vec<FieldSpec> {
    let mut fields = Vec::new();
    collect_fields(table, "", None, false, &mut fields);
    fields
}

fn collect_fields(
    table: &'static [Param],
    prefix: &str,
    whole_group: Option<&'static str>,
    inside_create_only: bool,
    fields: &mut Vec<FieldSpec>,
) {
    for param in table {
        if !param.mapped {
            continue;
        }
        let create_only = inside_create_only || param.create_only;
        match param.kind {
            ParamKind::Object { children } => {
                let group = whole_group.or(param.replaced_whole.then_some(param.name));
                let prefix = format!("{prefix}{}.", param.name);
                collect_fields(children, &prefix, group, create_only, fields);
            }
            // A list of named items (a product's `marketing_features`) maps from a list of
            // names; other object arrays (a price's tiers) from a JSON array of objects.
            _ => fields.push(FieldSpec {
                // Paths live as long as the tables (statics); leaking the few dozen joined
                // names once per process is what makes `FieldSpec` `Copy`.
                path: if prefix.is_empty() {
                    param.name
                } else {
                    intern(format!("{prefix}{}", param.name))
                },
                param,
                whole_group,
                create_only,
            }),
        }
    }
}

/// The one field of an object array whose items are nothing but a required string (`name` for
/// `marketing_features[0][name]`): such an array maps from a list of those strings.
pub fn item_name(param: &Param) -> Option<&'static str> {
    match param.kind {
        ParamKind::ObjectArray {
            children: [only], ..
        } if only.required && matches!(only.kind, ParamKind::String { .. }) => Some(only.name),
        _ => None,
    }
}

fn intern(path: String) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static PATHS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut paths = PATHS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = paths.get(path.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(path.into_boxed_str());
    paths.insert(leaked);
    leaked
}

/// published.
pub fn is_valid_email(text: &str) -> bool {
    // This runs on every row's key: ASCII addresses, nearly all of them, are checked byte by
    // byte; others char by char, with the same rules.
    let ascii = text.is_ascii();
    let length = |part: &str| {
        if ascii {
            part.len()
        } else {
            part.chars().count()
        }
    };
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    if local.is_empty() || length(local) > 64 || domain.contains('@') {
        return false;
    }
    let forbidden_in_local = |character: char| {
        matches!(
            character,
            '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | ']' | '\\'
        )
    };
    let local_ok = if ascii {
        local
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && !forbidden_in_local(char::from(byte)))
    } else {
        local.chars().all(|character| {
            !character.is_whitespace() && !character.is_control() && !forbidden_in_local(character)
        })
    };
    if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    let label_character_ok = |character: char| character.is_alphanumeric() || character == '-';
    // Checked label by label as they come.
    let mut labels = 0;
    let mut top_level = "";
    for label in domain.split('.') {
        let characters_ok = if ascii {
            label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        } else {
            label.chars().all(label_character_ok)
        };
        let label_ok = !label.is_empty()
            && length(label) <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && characters_ok;
        if !label_ok {
            return false;
        }
        labels += 1;
        top_level = label;
    }
    labels >= 2 && !top_level.bytes().all(|byte| byte.is_ascii_digit())
}

/// Whether `text` is a currency Stripe supports, in any case (`usd`, `EUR`).
pub fn is_supported_currency(text: &str) -> bool {
    text.len() == 3 && SUPPORTED_CURRENCIES.contains(&text.to_ascii_lowercase().as_str())
}

/// Whether `text` is a non-negative decimal such as `12`, `12.5` or `0.000000000001`, with at
/// most `max_fraction_digits` digits after the point (and at least one on each side of it).
pub fn is_decimal_text(text: &str, max_fraction_digits: usize) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    digits(whole)
        && fraction.is_none_or(|fraction| digits(fraction) && fraction.len() <= max_fraction_digits)
}

/// Whether `text` is a decimal number such as `-3`, `12` or `12.5` (no exponent, no `inf`).
pub fn is_number_text(text: &str) -> bool {
    let unsigned = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    is_decimal_text(unsigned, usize::MAX)
}

/// The boolean a wire value stands for: `true`/`false` as text or JSON.
pub fn boolean_of(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) if text == "true" => Some(true),
        Value::String(text) if text == "false" => Some(false),
        _ => None,
    }
}

/// The integer a wire value stands for: decimal text or a JSON integer.
pub fn integer_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// Whether `text` is 3–12 upper-case ASCII letters or digits.
pub fn is_valid_invoice_prefix(text: &str) -> bool {
    (3..=12).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
}

/// Metadata as an object. `form::decode` turns `metadata[0]=a&metadata[1]=b` into an array
/// (keys `0..n` look like indexes); this turns such an array back into keys `"0"`, `"1"`, ….
/// `None` when the value is neither an object nor an array.
pub fn metadata_as_object(value: &Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(entries) => Some(entries.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| (index.to_string(), item.clone()))
                .collect(),
        ),
        _ => None,
    }
}

pub(crate) fn find_param<'a>(
    specs: &'a [Param],
    name: &str,
    for_update: bool,
) -> Option<&'a Param> {
    specs.iter().find(|spec| {
        let accepted_now = if for_update {
            !spec.create_only
        } else {
            !spec.update_only
        };
        spec.name == name && accepted_now
    })
}

fn child_name(parent: &str, child: &str) -> String {
    format!("{parent}[{child}]")
}

fn validate_children(
    object: &Map<String, Value>,
    specs: &'static [Param],
    parent: &str,
    for_update: bool,
) -> Result<(), ParamError> {
    for (key, value) in object {
        let name = child_name(parent, key);
        let spec = find_param(specs, key, for_update)
            .ok_or_else(|| ParamError::new(name.clone(), Problem::Unknown))?;
        validate_value(spec, value, &name, for_update)?;
    }
    if let Some(missing) = specs
        .iter()
        .find(|spec| spec.required && !object.contains_key(spec.name))
    {
        return Err(ParamError::new(
            child_name(parent, missing.name),
            Problem::Missing,
        ));
    }
    Ok(())
}

fn validate_value(
    spec: &Param,
    value: &Value,
    name: &str,
    for_update: bool,
) -> Result<(), ParamError> {
    let error = |problem| Err(ParamError::new(name, problem));
    let text = leaf_text(value);
    let is_empty = text.as_deref() == Some("");
    if spec.empty_unsets && is_empty {
        return Ok(());
    }
    if is_empty && (spec.rejects_empty || refuses_empty_text(&spec.kind)) {
        return error(Problem::EmptyNotAllowed);
    }
    match spec.kind {
        ParamKind::String { max_chars } => {
            let Some(text) = text else {
                return error(Problem::WrongShape { expected: "string" });
            };
            check_length(&text, max_chars, name)
        }
        ParamKind::Email { max_chars } => {
            let Some(text) = text else {
                return error(Problem::WrongShape { expected: "string" });
            };
            check_length(&text, max_chars, name)?;
            if !text.is_empty() && !is_valid_email(&text) {
                return error(Problem::InvalidEmail);
            }
            Ok(())
        }
        ParamKind::Integer => {
            let is_integer = match value {
                Value::Number(number) => number.is_i64(),
                Value::String(text) => text.parse::<i64>().is_ok(),
                _ => false,
            };
            if is_integer {
                Ok(())
            } else {
                error(Problem::NotInteger)
            }
        }
        ParamKind::Enum { allowed } => match text {
            Some(text) if allowed.contains(&text.as_ref()) => Ok(()),
            _ => error(Problem::NotInEnum {
                allowed: allowed.to_vec(),
            }),
        },
        ParamKind::InvoicePrefix => match text {
            Some(text) if is_valid_invoice_prefix(&text) => Ok(()),
            Some(_) => error(Problem::InvalidInvoicePrefix),
            None => error(Problem::WrongShape { expected: "string" }),
        },
        ParamKind::Object { children } => match value {
            Value::Object(object) => validate_children(object, children, name, for_update),
            _ => error(Problem::WrongShape { expected: "object" }),
        },
        ParamKind::Metadata => {
            let Some(entries) = metadata_as_object(value) else {
                return error(Problem::WrongShape { expected: "object" });
            };
            validate_metadata(&entries, name)
        }
        ParamKind::StringArray {
            item_max_chars,
            max_items,
        } => {
            let Value::Array(items) = value else {
                return error(Problem::WrongShape { expected: "array" });
            };
            if items.len() > max_items {
                return error(Problem::TooManyItems {
                    max: max_items,
                    actual: items.len(),
                });
            }
            for (index, item) in items.iter().enumerate() {
                let item_name = child_name(name, &index.to_string());
                let Some(text) = leaf_text(item) else {
                    return Err(ParamError::new(
                        item_name,
                        Problem::WrongShape { expected: "string" },
                    ));
                };
                check_length(&text, item_max_chars, &item_name)?;
            }
            Ok(())
        }
        ParamKind::ObjectArray {
            children,
            max_items,
        } => {
            let Value::Array(items) = value else {
                return error(Problem::WrongShape { expected: "array" });
            };
            if items.len() > max_items {
                return error(Problem::TooManyItems {
                    max: max_items,
                    actual: items.len(),
                });
            }
            for (index, item) in items.iter().enumerate() {
                let item_name = child_name(name, &index.to_string());
                let Value::Object(object) = item else {
                    return Err(ParamError::new(
                        item_name,
                        Problem::WrongShape { expected: "object" },
                    ));
                };
                validate_children(object, children, &item_name, for_update)?;
            }
            Ok(())
        }
        ParamKind::Boolean => match boolean_of(value) {
            Some(_) => Ok(()),
            None => error(Problem::NotBoolean),
        },
        ParamKind::Number => {
            let is_number = match value {
                Value::Number(number) => number.as_f64().is_some_and(f64::is_finite),
                Value::String(text) => is_number_text(text),
                _ => false,
            };
            if is_number {
                Ok(())
            } else {
                error(Problem::NotNumber)
            }
        }
        ParamKind::Decimal {
            max_fraction_digits,
        } => {
            let is_decimal = match value {
                Value::Number(number) => is_decimal_text(&number.to_string(), max_fraction_digits),
                Value::String(text) => is_decimal_text(text, max_fraction_digits),
                _ => false,
            };
            if is_decimal {
                Ok(())
            } else {
                error(Problem::NotDecimal {
                    max_fraction_digits,
                })
            }
        }
        ParamKind::Currency => match text {
            Some(text) if is_supported_currency(&text) => Ok(()),
            Some(_) => error(Problem::InvalidCurrency),
            None => error(Problem::WrongShape { expected: "string" }),
        },
        ParamKind::IntegerRange { min, max } => {
            let Some(integer) = integer_of(value) else {
                return error(Problem::NotInteger);
            };
            check_range(integer, min, max, name)
        }
        ParamKind::IntegerOrInf { min } => {
            if text.as_deref() == Some("inf") {
                return Ok(());
            }
            match integer_of(value) {
                Some(integer) => check_range(integer, min, i64::MAX, name),
                None => error(Problem::NotIntegerOrInf),
            }
        }
        ParamKind::StatementDescriptor { max_chars } => {
            let Some(text) = text else {
                return error(Problem::WrongShape { expected: "string" });
            };
            check_length(&text, max_chars, name)?;
            if text.contains(STATEMENT_DESCRIPTOR_FORBIDDEN) {
                return error(Problem::StatementDescriptorForbiddenCharacter);
            }
            if !text.chars().any(char::is_alphabetic) {
                return error(Problem::StatementDescriptorWithoutLetter);
            }
            Ok(())
        }
    }
}

/// Kinds whose values are never text a person could leave blank: for them `""` can only mean
/// "unset", which Stripe refuses unless the parameter is [`unsettable`]. (`Integer` keeps its
/// older "Invalid integer" answer for customers.)
fn refuses_empty_text(kind: &ParamKind) -> bool {
    matches!(
        kind,
        ParamKind::Boolean
            | ParamKind::Number
            | ParamKind::Decimal { .. }
            | ParamKind::Currency
            | ParamKind::IntegerRange { .. }
            | ParamKind::IntegerOrInf { .. }
    )
}

fn check_range(integer: i64, min: i64, max: i64, name: &str) -> Result<(), ParamError> {
    if integer < min {
        return Err(ParamError::new(name, Problem::TooSmall { min }));
    }
    if integer > max {
        return Err(ParamError::new(name, Problem::TooLarge { max }));
    }
    Ok(())
}

fn check_length(text: &str, max_chars: usize, name: &str) -> Result<(), ParamError> {
    let actual = text.chars().count();
    if actual > max_chars {
        return Err(ParamError::new(
            name,
            Problem::TooLong {
                max: max_chars,
                actual,
            },
        ));
    }
    Ok(())
}

/// Keys and values of one metadata object; `""` values (deletions) do not count toward the limit.
fn validate_metadata(entries: &Map<String, Value>, name: &str) -> Result<(), ParamError> {
    for (key, value) in entries {
        let entry_name = child_name(name, key);
        let key_chars = key.chars().count();
        if key.is_empty() {
            return Err(ParamError::new(entry_name, Problem::MetadataKeyEmpty));
        }
        if key.contains(['[', ']']) {
            return Err(ParamError::new(entry_name, Problem::MetadataKeyHasBrackets));
        }
        if key_chars > METADATA_KEY_MAX_CHARS {
            return Err(ParamError::new(
                entry_name,
                Problem::MetadataKeyTooLong { actual: key_chars },
            ));
        }
        let Some(text) = leaf_text(value) else {
            return Err(ParamError::new(
                entry_name,
                Problem::WrongShape { expected: "string" },
            ));
        };
        let value_chars = text.chars().count();
        if value_chars > METADATA_VALUE_MAX_CHARS {
            return Err(ParamError::new(
                entry_name,
                Problem::MetadataValueTooLong {
                    actual: value_chars,
                },
            ));
        }
    }
    let count = entries
        .values()
        .filter(|value| leaf_text(value).as_deref() != Some(""))
        .count();
    if count > METADATA_MAX_KEYS {
        return Err(ParamError::new(
            name,
            Problem::TooManyMetadataKeys { count },
        ));
    }
    Ok(())
}
