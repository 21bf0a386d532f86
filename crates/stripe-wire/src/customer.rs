//! The writable parameters of Stripe's customer create and update endpoints, as data, and the one
//! validator that checks a request against them (used by the emulator and by ferry's destination).
//!
//! The list covers what a reverse-ETL sync writes; payment-related parameters (`source`,
//! `payment_method`, `coupon`, `tax_id_data`, …) are deliberately absent and therefore rejected as
//! unknown.

use serde_json::{Map, Value};

use crate::form::leaf_text;
use crate::param_error::{ParamError, Problem};

pub const METADATA_MAX_KEYS: usize = 50;
pub const METADATA_KEY_MAX_CHARS: usize = 40;
pub const METADATA_VALUE_MAX_CHARS: usize = 500;
/// `tax_exempt` values; the empty string is also accepted and resets it to `none`.
pub const TAX_EXEMPT_VALUES: &[&str] = &["none", "exempt", "reverse"];
/// Stripe allows at most four invoice custom fields.
pub const INVOICE_CUSTOM_FIELDS_MAX_ITEMS: usize = 4;

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
    },
    ObjectArray {
        children: &'static [Param],
        max_items: usize,
    },
}

const fn string(name: &'static str, max_chars: usize) -> Param {
    Param {
        name,
        kind: ParamKind::String { max_chars },
        empty_unsets: false,
        required: false,
        create_only: false,
    }
}

const fn with_kind(name: &'static str, kind: ParamKind) -> Param {
    Param {
        name,
        kind,
        empty_unsets: false,
        required: false,
        create_only: false,
    }
}

const fn unsettable(param: Param) -> Param {
    Param {
        empty_unsets: true,
        ..param
    }
}

const fn required(param: Param) -> Param {
    Param {
        required: true,
        ..param
    }
}

const fn create_only(param: Param) -> Param {
    Param {
        create_only: true,
        ..param
    }
}

pub static ADDRESS_PARAMS: &[Param] = &[
    string("city", 5000),
    string("country", 5000),
    string("line1", 5000),
    string("line2", 5000),
    string("postal_code", 5000),
    string("state", 5000),
];

pub static SHIPPING_PARAMS: &[Param] = &[
    required(with_kind(
        "address",
        ParamKind::Object {
            children: ADDRESS_PARAMS,
        },
    )),
    required(string("name", 5000)),
    string("phone", 5000),
];

pub static INVOICE_CUSTOM_FIELD_PARAMS: &[Param] =
    &[required(string("name", 40)), required(string("value", 140))];

pub static INVOICE_SETTINGS_PARAMS: &[Param] = &[
    unsettable(with_kind(
        "custom_fields",
        ParamKind::ObjectArray {
            children: INVOICE_CUSTOM_FIELD_PARAMS,
            max_items: INVOICE_CUSTOM_FIELDS_MAX_ITEMS,
        },
    )),
    string("default_payment_method", 5000),
    string("footer", 5000),
];

pub static TAX_PARAMS: &[Param] = &[
    unsettable(string("ip_address", 5000)),
    with_kind(
        "validate_location",
        ParamKind::Enum {
            allowed: &["auto", "deferred", "immediately"],
        },
    ),
];

/// The writable customer params of create and update, in Stripe's (alphabetical) order.
pub static CUSTOMER_PARAMS: &[Param] = &[
    unsettable(with_kind(
        "address",
        ParamKind::Object {
            children: ADDRESS_PARAMS,
        },
    )),
    with_kind("balance", ParamKind::Integer),
    unsettable(string("business_name", 150)),
    string("description", 5000),
    with_kind("email", ParamKind::Email { max_chars: 512 }),
    unsettable(string("individual_name", 150)),
    with_kind("invoice_prefix", ParamKind::InvoicePrefix),
    with_kind(
        "invoice_settings",
        ParamKind::Object {
            children: INVOICE_SETTINGS_PARAMS,
        },
    ),
    unsettable(with_kind("metadata", ParamKind::Metadata)),
    string("name", 256),
    with_kind("next_invoice_sequence", ParamKind::Integer),
    string("phone", 20),
    unsettable(with_kind(
        "preferred_locales",
        ParamKind::StringArray {
            item_max_chars: 5000,
        },
    )),
    unsettable(with_kind(
        "shipping",
        ParamKind::Object {
            children: SHIPPING_PARAMS,
        },
    )),
    with_kind(
        "tax",
        ParamKind::Object {
            children: TAX_PARAMS,
        },
    ),
    unsettable(with_kind(
        "tax_exempt",
        ParamKind::Enum {
            allowed: TAX_EXEMPT_VALUES,
        },
    )),
    create_only(string("test_clock", 5000)),
];

/// `expand[]`, accepted by every Stripe endpoint; it changes only the response shape.
pub static EXPAND_PARAM: Param = with_kind(
    "expand",
    ParamKind::StringArray {
        item_max_chars: 5000,
    },
);

/// Checks customer create (`for_update = false`) or update params against [`CUSTOMER_PARAMS`].
///
/// `params` is what [`crate::form::decode`] produces (string leaves); numbers, booleans and
/// `null` leaves are also accepted so that a row can be checked before it is encoded. Parameters
/// are checked in the order given and the first problem is returned, as Stripe does. The metadata
/// key count is checked for the keys sent; on update the emulator checks it again after merging.
pub fn validate_customer_params(
    params: &Map<String, Value>,
    for_update: bool,
) -> Result<(), ParamError> {
    for (key, value) in params {
        if key == EXPAND_PARAM.name {
            validate_value(&EXPAND_PARAM, value, key, for_update)?;
            continue;
        }
        let spec = find_param(CUSTOMER_PARAMS, key, for_update)
            .ok_or_else(|| ParamError::new(key.clone(), Problem::Unknown))?;
        validate_value(spec, value, key, for_update)?;
    }
    Ok(())
}

/// Whether `text` looks like an email address Stripe accepts: one `@`, a local part without
/// spaces or quotes, and a domain of at least two dot-separated labels of letters, digits and
/// hyphens whose last label is not all digits. Deliberately simple; Stripe's own check is not
/// published.
pub fn is_valid_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    if local.is_empty() || local.chars().count() > 64 || domain.contains('@') {
        return false;
    }
    let local_ok = local.chars().all(|character| {
        !character.is_whitespace()
            && !character.is_control()
            && !matches!(
                character,
                '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | ']' | '\\'
            )
    });
    if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let labels_ok = labels.iter().all(|label| {
        !label.is_empty()
            && label.chars().count() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|character| character.is_alphanumeric() || character == '-')
    });
    let top_level = labels.last().expect("split gives at least one label");
    labels_ok
        && !top_level
            .chars()
            .all(|character| character.is_ascii_digit())
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

fn find_param<'a>(specs: &'a [Param], name: &str, for_update: bool) -> Option<&'a Param> {
    specs
        .iter()
        .find(|spec| spec.name == name && !(for_update && spec.create_only))
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
    if spec.empty_unsets && text.as_deref() == Some("") {
        return Ok(());
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
        ParamKind::StringArray { item_max_chars } => {
            let Value::Array(items) = value else {
                return error(Problem::WrongShape { expected: "array" });
            };
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
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::decode;
    use expect_test::{expect, Expect};

    /// Decodes a form body, validates it, and renders the outcome: `ok`, or the person-facing
    /// sentence and the Stripe error body.
    fn check(body: &str, for_update: bool, expected: Expect) {
        let params = decode(body).expect("test bodies are well-formed");
        let rendered = match validate_customer_params(&params, for_update) {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!(
                "{error}\n{}",
                serde_json::to_string(&error.to_stripe_error()).unwrap()
            ),
        };
        expected.assert_eq(&rendered);
    }

    #[test]
    fn a_full_valid_create_passes() {
        check(
            "email=ann%40example.com&name=Ann&phone=%2B33+1+23&description=d&address[line1]=1+Main&address[country]=FR&shipping[name]=Ann&shipping[address][city]=Paris&metadata[plan]=pro&preferred_locales[0]=fr&tax_exempt=none&invoice_prefix=ABC123&balance=-500&next_invoice_sequence=7&invoice_settings[footer]=f&invoice_settings[custom_fields][0][name]=PO&invoice_settings[custom_fields][0][value]=42&tax[ip_address]=1.2.3.4&expand[0]=tax&test_clock=clock_1",
            false,
            expect![["ok"]],
        );
    }

    #[test]
    fn empty_strings_unset_or_blank_fields() {
        check(
            "address=&shipping=&metadata=&tax_exempt=&preferred_locales=&email=&name=&phone=&description=&invoice_settings[custom_fields]=",
            true,
            expect![["ok"]],
        );
    }

    #[test]
    fn unknown_params_are_named_with_brackets() {
        check(
            "emial=a%40b.co",
            false,
            expect![[r#"
                emial is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: emial","param":"emial","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
        check(
            "address[street]=x",
            false,
            expect![[r#"
                address[street] is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: address[street]","param":"address[street]","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
    }

    #[test]
    fn test_clock_is_create_only() {
        check("test_clock=clock_1", false, expect![["ok"]]);
        check(
            "test_clock=clock_1",
            true,
            expect![[r#"
                test_clock is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: test_clock","param":"test_clock","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
    }

    #[test]
    fn maximum_lengths_count_characters_not_bytes() {
        let twenty_accented = "é".repeat(20);
        check(&format!("phone={twenty_accented}"), false, expect![["ok"]]);
        check(
            &format!("phone={twenty_accented}12345"),
            false,
            expect![[r#"
                phone must be at most 20 characters (got 25)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 20 characters","param":"phone"}"#]],
        );
        check(
            &format!("name={}", "n".repeat(257)),
            false,
            expect![[r#"
                name must be at most 256 characters (got 257)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 256 characters","param":"name"}"#]],
        );
        check(
            &format!("description={}", "d".repeat(5001)),
            false,
            expect![[r#"
                description must be at most 5000 characters (got 5001)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 5000 characters","param":"description"}"#]],
        );
        check(
            &format!(
                "shipping[name]=a&shipping[address][line1]={}",
                "l".repeat(5001)
            ),
            false,
            expect![[r#"
                shipping[address][line1] must be at most 5000 characters (got 5001)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 5000 characters","param":"shipping[address][line1]"}"#]],
        );
    }

    #[test]
    fn email_length_and_format() {
        let local = "a".repeat(60);
        let long_domain = format!("{}.com", vec!["d".repeat(60); 8].join("."));
        check(
            &format!("email={local}@{long_domain}"),
            false,
            expect![[r#"
                email must be at most 512 characters (got 552)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 512 characters","param":"email"}"#]],
        );
        check(
            "email=not-an-email",
            false,
            expect![[r#"
                email is not a valid email address
                {"type":"invalid_request_error","code":"email_invalid","message":"Invalid email address","param":"email","doc_url":"https://stripe.com/docs/error-codes/email-invalid"}"#]],
        );
    }

    #[test]
    fn email_shapes() {
        for good in [
            "ann@example.com",
            "ann.lee+tag@mail.example.co.uk",
            "o'brien@example.ie",
            "jörg@bücher.de",
        ] {
            assert!(is_valid_email(good), "{good} should be valid");
        }
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@@example.com",
            "ann lee@example.com",
            "ann@exa mple.com",
            "ann@-example.com",
            "ann@example..com",
            ".ann@example.com",
            "ann@1.2.3.4",
        ] {
            assert!(!is_valid_email(bad), "{bad} should be invalid");
        }
    }

    #[test]
    fn integers_enums_and_invoice_prefix() {
        check(
            "balance=12.5",
            false,
            expect![[r#"
                balance must be a whole number such as 42 or -7
                {"type":"invalid_request_error","code":"parameter_invalid_integer","message":"Invalid integer","param":"balance","doc_url":"https://stripe.com/docs/error-codes/parameter-invalid-integer"}"#]],
        );
        check(
            "next_invoice_sequence=",
            true,
            expect![[r#"
                next_invoice_sequence must be a whole number such as 42 or -7
                {"type":"invalid_request_error","code":"parameter_invalid_integer","message":"Invalid integer","param":"next_invoice_sequence","doc_url":"https://stripe.com/docs/error-codes/parameter-invalid-integer"}"#]],
        );
        check(
            "tax_exempt=partial",
            false,
            expect![[r#"
                tax_exempt must be one of none, exempt, or reverse
                {"type":"invalid_request_error","message":"Invalid tax_exempt: must be one of none, exempt, or reverse","param":"tax_exempt"}"#]],
        );
        for bad_prefix in ["AB", "ABCDEFGHIJKLM", "abc", "AB-C"] {
            let params = decode(&format!("invoice_prefix={bad_prefix}")).unwrap();
            assert_eq!(
                validate_customer_params(&params, false),
                Err(ParamError::new(
                    "invoice_prefix",
                    Problem::InvalidInvoicePrefix
                )),
                "{bad_prefix}"
            );
        }
        check("invoice_prefix=ABCDEFGHIJ12", false, expect![["ok"]]);
    }

    #[test]
    fn metadata_limits() {
        let fifty: Vec<String> = (0..50)
            .map(|index| format!("metadata[k{index}]=v"))
            .collect();
        check(&fifty.join("&"), false, expect![["ok"]]);
        let fifty_one = format!("{}&metadata[extra]=v", fifty.join("&"));
        check(
            &fifty_one,
            false,
            expect![[r#"
                metadata can have at most 50 keys (got 51)
                {"type":"invalid_request_error","message":"Invalid metadata: you can specify up to 50 keys, but you passed 51 keys","param":"metadata"}"#]],
        );
        let deletions_do_not_count = format!("{}&metadata[gone]=", fifty.join("&"));
        check(&deletions_do_not_count, true, expect![["ok"]]);
        check(
            &format!("metadata[{}]=v", "k".repeat(41)),
            false,
            expect![[r#"
                metadata[kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk] has a key longer than 40 characters (got 41)
                {"type":"invalid_request_error","message":"Invalid metadata: keys can be up to 40 characters long, but you passed a key of 41 characters","param":"metadata[kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk]"}"#]],
        );
        check(
            &format!("metadata[plan]={}", "v".repeat(501)),
            false,
            expect![[r#"
                metadata[plan] must be at most 500 characters (got 501)
                {"type":"invalid_request_error","message":"Invalid metadata: values can be up to 500 characters long, but you passed a value of 501 characters","param":"metadata[plan]"}"#]],
        );
        check(
            "metadata[plan][tier]=gold",
            false,
            expect![[r#"
                metadata[plan] must be a string
                {"type":"invalid_request_error","message":"Invalid string","param":"metadata[plan]"}"#]],
        );
        check("metadata[0]=a&metadata[1]=b", false, expect![["ok"]]);
    }

    #[test]
    fn metadata_keys_with_brackets_are_rejected_when_built_directly() {
        let params: Map<String, Value> =
            serde_json::from_str(r#"{"metadata": {"a[b]": "x"}}"#).unwrap();
        assert_eq!(
            validate_customer_params(&params, false),
            Err(ParamError::new(
                "metadata[a[b]]",
                Problem::MetadataKeyHasBrackets
            ))
        );
    }

    #[test]
    fn shipping_requires_name_and_address() {
        check(
            "shipping[address][city]=Paris",
            false,
            expect![[r#"
                shipping[name] is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: shipping[name].","param":"shipping[name]","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            "shipping[name]=Ann",
            false,
            expect![[r#"
                shipping[address] is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: shipping[address].","param":"shipping[address]","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
    }

    #[test]
    fn wrong_shapes() {
        check(
            "address=1+Main+St",
            false,
            expect![[r#"
                address must be an object
                {"type":"invalid_request_error","message":"Invalid object","param":"address"}"#]],
        );
        check(
            "email[x]=y",
            false,
            expect![[r#"
                email must be a string
                {"type":"invalid_request_error","message":"Invalid string","param":"email"}"#]],
        );
        check(
            "preferred_locales=fr",
            false,
            expect![[r#"
                preferred_locales must be an array
                {"type":"invalid_request_error","message":"Invalid array","param":"preferred_locales"}"#]],
        );
    }

    #[test]
    fn at_most_four_invoice_custom_fields() {
        let five: Vec<String> = (0..5)
            .map(|index| {
                format!("invoice_settings[custom_fields][{index}][name]=n&invoice_settings[custom_fields][{index}][value]=v")
            })
            .collect();
        check(
            &five.join("&"),
            false,
            expect![[r#"
                invoice_settings[custom_fields] can have at most 4 items (got 5)
                {"type":"invalid_request_error","message":"Invalid array: must have at most 4 items","param":"invoice_settings[custom_fields]"}"#]],
        );
    }

    #[test]
    fn rows_with_typed_leaves_validate_before_encoding() {
        let row: Map<String, Value> = serde_json::from_str(
            r#"{"email": "ann@example.com", "balance": 1200, "name": null, "metadata": {"seats": 3}}"#,
        )
        .unwrap();
        assert_eq!(validate_customer_params(&row, false), Ok(()));
        let fractional: Map<String, Value> = serde_json::from_str(r#"{"balance": 1.5}"#).unwrap();
        assert_eq!(
            validate_customer_params(&fractional, false),
            Err(ParamError::new("balance", Problem::NotInteger))
        );
    }
}
