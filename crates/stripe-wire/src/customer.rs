//! The Customer object: its create and update parameters as data ([`CUSTOMER`]), the one table
//! that ferry's validation, field lists, encoding and the emulator's parameter checks all read.
//!
//! The list covers what a reverse-ETL sync writes; payment-related parameters (`source`,
//! `payment_method`, `coupon`, `tax_id_data`, …) are deliberately absent and therefore rejected as
//! unknown.

use serde_json::{Map, Value};

use crate::param_error::ParamError;
pub use crate::params::{
    create_only, is_valid_email, is_valid_invoice_prefix, metadata_as_object, not_mapped,
    replaced_whole, required, string, unset_reads_as, unsettable, with_kind, Param, ParamKind,
    EXPAND_PARAM, METADATA_KEY_MAX_CHARS, METADATA_MAX_KEYS, METADATA_VALUE_MAX_CHARS,
};
use crate::schema::{KeyField, ObjectSchema};

/// `tax_exempt` values; the empty string is also accepted and resets it to `none`.
pub const TAX_EXEMPT_VALUES: &[&str] = &["none", "exempt", "reverse"];
/// Stripe allows at most four invoice custom fields.
pub const INVOICE_CUSTOM_FIELDS_MAX_ITEMS: usize = 4;

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
    // Not mapped yet: a list of objects, which ferry maps for a price's tiers only.
    not_mapped(unsettable(with_kind(
        "custom_fields",
        ParamKind::ObjectArray {
            children: INVOICE_CUSTOM_FIELD_PARAMS,
            max_items: INVOICE_CUSTOM_FIELDS_MAX_ITEMS,
        },
    ))),
    not_mapped(string("default_payment_method", 5000)),
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
    replaced_whole(unsettable(with_kind(
        "address",
        ParamKind::Object {
            children: ADDRESS_PARAMS,
        },
    ))),
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
            max_items: usize::MAX,
        },
    )),
    replaced_whole(unsettable(with_kind(
        "shipping",
        ParamKind::Object {
            children: SHIPPING_PARAMS,
        },
    ))),
    not_mapped(with_kind(
        "tax",
        ParamKind::Object {
            children: TAX_PARAMS,
        },
    )),
    unset_reads_as(
        unsettable(with_kind(
            "tax_exempt",
            ParamKind::Enum {
                allowed: TAX_EXEMPT_VALUES,
            },
        )),
        "none",
    ),
    not_mapped(create_only(string("test_clock", 5000))),
];

/// The Customer object as ferry syncs it.
pub static CUSTOMER: ObjectSchema = ObjectSchema {
    object: "customer",
    label: "Customer",
    plural: "customers",
    collection_path: "/v1/customers",
    params: CUSTOMER_PARAMS,
    key_fields: &[KeyField {
        path: "email",
        ignore_case: true,
    }],
    featured_fields: &["email", "name", "phone", "description"],
    dashboard_path: "customers",
    rules: None,
    expanded: &[],
    fields_once: std::sync::OnceLock::new(),
};

/// Checks customer create (`for_update = false`) or update params against [`CUSTOMER_PARAMS`]
/// (see [`ObjectSchema::validate`]).
pub fn validate_customer_params(
    params: &Map<String, Value>,
    for_update: bool,
) -> Result<(), ParamError> {
    CUSTOMER.validate(params, for_update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::decode;
    use crate::Problem;
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
        // Lengths count characters, not bytes: 64 characters before the `@`, 63 in a label.
        let long_local = format!("{}@example.com", "ö".repeat(64));
        let long_label = format!("ann@{}.de", "ü".repeat(63));
        assert!(is_valid_email(&long_local) && is_valid_email(&long_label));
        for bad in [
            format!("{}@example.com", "a".repeat(65)),
            format!("{}@example.com", "ö".repeat(65)),
            format!("ann@{}.de", "ü".repeat(64)),
        ] {
            assert!(!is_valid_email(&bad), "{bad} should be invalid");
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
            "ann\t@example.com",
            "ann\u{7f}@example.com",
            "(ann)@example.com",
            "ann@exa_mple.com",
            "jörg lee@bücher.de",
            "jörg\u{85}@bücher.de",
            "jörg@bü cher.de",
            "jörg@bücher.123",
            "jörg@-bücher.de",
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
