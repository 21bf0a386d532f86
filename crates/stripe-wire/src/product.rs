//! The Product object: its create and update parameters as data ([`PRODUCT`]), read by ferry's
//! validation, field lists and encoding and by the emulator's parameter checks.
//!
//! The table follows `POST /v1/products` and `POST /v1/products/{id}` of Stripe's 2022 OpenAPI
//! spec (API version 2020-08-27), plus `default_price` (update only) and `marketing_features`,
//! which newer versions added. `type` (`good`/`service`) is absent from the 2022 params and is
//! therefore rejected as unknown; so is `default_price_data`.

use serde_json::{Map, Value};

use crate::param_error::ParamError;
use crate::params::{
    create_only, non_empty, not_mapped, replaced_whole, required, string, unsettable, update_only,
    with_kind, Param, ParamKind,
};
use crate::schema::{KeyField, ObjectSchema};

/// A product shows at most eight images.
pub const PRODUCT_IMAGES_MAX_ITEMS: usize = 8;
/// A product lists at most fifteen marketing features.
pub const MARKETING_FEATURES_MAX_ITEMS: usize = 15;
/// Statement descriptors are at most 22 characters.
pub const STATEMENT_DESCRIPTOR_MAX_CHARS: usize = 22;

/// `package_dimensions`: all four numbers, in inches and ounces.
pub static PACKAGE_DIMENSIONS_PARAMS: &[Param] = &[
    required(with_kind("height", ParamKind::Number)),
    required(with_kind("length", ParamKind::Number)),
    required(with_kind("weight", ParamKind::Number)),
    required(with_kind("width", ParamKind::Number)),
];

/// One entry of `marketing_features`.
pub static MARKETING_FEATURE_PARAMS: &[Param] = &[required(string("name", 80))];

/// The writable product params of create and update, in Stripe's (alphabetical) order.
pub static PRODUCT_PARAMS: &[Param] = &[
    with_kind("active", ParamKind::Boolean),
    // Set by ferry's engine when it replaces or retires a price, not from a column; `""`
    // unsets it (before its price is archived: Stripe keeps a default price active).
    not_mapped(update_only(unsettable(string("default_price", 5000)))),
    unsettable(string("description", 40000)),
    non_empty(create_only(string("id", 5000))),
    unsettable(with_kind(
        "images",
        ParamKind::StringArray {
            item_max_chars: 5000,
            max_items: PRODUCT_IMAGES_MAX_ITEMS,
        },
    )),
    // Mapped from a list of feature names.
    unsettable(with_kind(
        "marketing_features",
        ParamKind::ObjectArray {
            children: MARKETING_FEATURE_PARAMS,
            max_items: MARKETING_FEATURES_MAX_ITEMS,
        },
    )),
    unsettable(with_kind("metadata", ParamKind::Metadata)),
    required(non_empty(string("name", 5000))),
    replaced_whole(unsettable(with_kind(
        "package_dimensions",
        ParamKind::Object {
            children: PACKAGE_DIMENSIONS_PARAMS,
        },
    ))),
    with_kind("shippable", ParamKind::Boolean),
    unsettable(with_kind(
        "statement_descriptor",
        ParamKind::StatementDescriptor {
            max_chars: STATEMENT_DESCRIPTOR_MAX_CHARS,
        },
    )),
    unsettable(string("tax_code", 5000)),
    unsettable(string("unit_label", 12)),
    unsettable(string("url", 5000)),
];

/// The Product object as ferry syncs it. Its natural key is the id the caller chooses on create.
pub static PRODUCT: ObjectSchema = ObjectSchema {
    object: "product",
    label: "Product",
    plural: "products",
    collection_path: "/v1/products",
    params: PRODUCT_PARAMS,
    key_fields: &[KeyField {
        path: "id",
        ignore_case: false,
    }],
    featured_fields: &["id", "name", "description", "active"],
    dashboard_path: "products",
    rules: None,
    expanded: &[],
    fields_once: std::sync::OnceLock::new(),
};

/// Checks product create (`for_update = false`) or update params (see [`ObjectSchema::validate`]).
pub fn validate_product_params(
    params: &Map<String, Value>,
    for_update: bool,
) -> Result<(), ParamError> {
    PRODUCT.validate(params, for_update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::decode;
    use expect_test::{expect, Expect};

    fn check(body: &str, for_update: bool, expected: Expect) {
        let params = decode(body).expect("test bodies are well-formed");
        let rendered = match validate_product_params(&params, for_update) {
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
            "id=gold-plan&name=Gold&active=true&description=d&images[0]=https%3A%2F%2Fx.co%2Fa.png&marketing_features[0][name]=Fast&metadata[k]=v&package_dimensions[height]=1.5&package_dimensions[length]=2&package_dimensions[weight]=0.25&package_dimensions[width]=-3&shippable=false&statement_descriptor=GOLD+PLAN&tax_code=txcd_10000000&unit_label=seat&url=https%3A%2F%2Fx.co&expand[0]=default_price",
            false,
            expect![["ok"]],
        );
    }

    #[test]
    fn name_is_required_on_create_and_cannot_be_emptied() {
        check(
            "description=d",
            false,
            expect![[r#"
                name is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: name.","param":"name","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check("description=d", true, expect![["ok"]]);
        check(
            "name=",
            true,
            expect![[r#"
                name cannot be empty: Stripe cannot unset it
                {"type":"invalid_request_error","code":"parameter_invalid_empty","message":"You passed an empty string for 'name'. We assume empty values are an attempt to unset a parameter; however 'name' cannot be unset. You should remove 'name' from your request or supply a non-empty value.","param":"name","doc_url":"https://stripe.com/docs/error-codes/parameter-invalid-empty"}"#]],
        );
    }

    #[test]
    fn id_is_create_only_and_default_price_update_only() {
        check("name=a&id=prod_custom", false, expect![["ok"]]);
        check(
            "id=prod_custom",
            true,
            expect![[r#"
                id is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: id","param":"id","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
        check("default_price=price_1", true, expect![["ok"]]);
        check(
            "name=a&default_price=price_1",
            false,
            expect![[r#"
                default_price is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: default_price","param":"default_price","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
        check(
            "name=a&type=service",
            false,
            expect![[r#"
                type is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: type","param":"type","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
    }

    #[test]
    fn booleans_are_true_or_false() {
        check("active=false&shippable=true", true, expect![["ok"]]);
        check(
            "active=yes",
            true,
            expect![[r#"
                active must be true or false
                {"type":"invalid_request_error","message":"Invalid boolean","param":"active"}"#]],
        );
        check(
            "shippable=",
            true,
            expect![[r#"
                shippable cannot be empty: Stripe cannot unset it
                {"type":"invalid_request_error","code":"parameter_invalid_empty","message":"You passed an empty string for 'shippable'. We assume empty values are an attempt to unset a parameter; however 'shippable' cannot be unset. You should remove 'shippable' from your request or supply a non-empty value.","param":"shippable","doc_url":"https://stripe.com/docs/error-codes/parameter-invalid-empty"}"#]],
        );
        let typed: Map<String, Value> =
            serde_json::from_str(r#"{"active": false, "shippable": true}"#).unwrap();
        assert_eq!(validate_product_params(&typed, true), Ok(()));
    }

    #[test]
    fn package_dimensions_are_four_numbers() {
        check(
            "package_dimensions[height]=1&package_dimensions[length]=2&package_dimensions[weight]=3",
            true,
            expect![[r#"
                package_dimensions[width] is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: package_dimensions[width].","param":"package_dimensions[width]","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            "package_dimensions[height]=tall&package_dimensions[length]=2&package_dimensions[weight]=3&package_dimensions[width]=4",
            true,
            expect![[r#"
                package_dimensions[height] must be a number such as 12.5
                {"type":"invalid_request_error","message":"Invalid decimal number","param":"package_dimensions[height]"}"#]],
        );
        for bad in ["1e3", "inf", "1.", ".5", "--1", "1,5"] {
            let body = format!(
                "package_dimensions[height]={}&package_dimensions[length]=2&package_dimensions[weight]=3&package_dimensions[width]=4",
                bad.replace('+', "%2B")
            );
            let params = decode(&body).unwrap();
            assert!(validate_product_params(&params, true).is_err(), "{bad}");
        }
        check("package_dimensions=", true, expect![["ok"]]);
    }

    #[test]
    fn images_and_marketing_features_are_limited() {
        let nine: Vec<String> = (0..9)
            .map(|index| format!("images[{index}]=u{index}"))
            .collect();
        check(
            &nine.join("&"),
            true,
            expect![[r#"
                images can have at most 8 items (got 9)
                {"type":"invalid_request_error","message":"Invalid array: must have at most 8 items","param":"images"}"#]],
        );
        check(&nine[..8].join("&"), true, expect![["ok"]]);
        let sixteen: Vec<String> = (0..16)
            .map(|index| format!("marketing_features[{index}][name]=f{index}"))
            .collect();
        check(
            &sixteen.join("&"),
            true,
            expect![[r#"
                marketing_features can have at most 15 items (got 16)
                {"type":"invalid_request_error","message":"Invalid array: must have at most 15 items","param":"marketing_features"}"#]],
        );
        check(
            &format!("marketing_features[0][name]={}", "n".repeat(81)),
            true,
            expect![[r#"
                marketing_features[0][name] must be at most 80 characters (got 81)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 80 characters","param":"marketing_features[0][name]"}"#]],
        );
        check("images=&marketing_features=", true, expect![["ok"]]);
    }

    #[test]
    fn statement_descriptor_length_characters_and_letters() {
        check("statement_descriptor=ACME*GOLD+2024", true, expect![["ok"]]);
        check(
            &format!("statement_descriptor={}", "A".repeat(23)),
            true,
            expect![[r#"
                statement_descriptor must be at most 22 characters (got 23)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 22 characters","param":"statement_descriptor"}"#]],
        );
        check(
            "statement_descriptor=ACME%3CGOLD%3E",
            true,
            expect![[r#"
                statement_descriptor may not contain <, >, \, ' or "
                {"type":"invalid_request_error","message":"Invalid statement descriptor: it may not include any of <, >, \\, ', or \"","param":"statement_descriptor"}"#]],
        );
        check(
            "statement_descriptor=2024+%231",
            true,
            expect![[r#"
                statement_descriptor must contain at least one letter
                {"type":"invalid_request_error","message":"Invalid statement descriptor: it must contain at least one letter","param":"statement_descriptor"}"#]],
        );
        check("statement_descriptor=", true, expect![["ok"]]);
    }

    #[test]
    fn lengths_of_the_short_strings() {
        check(
            &format!("unit_label={}", "u".repeat(13)),
            true,
            expect![[r#"
                unit_label must be at most 12 characters (got 13)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 12 characters","param":"unit_label"}"#]],
        );
        check(
            &format!("description={}", "d".repeat(40000)),
            true,
            expect![["ok"]],
        );
        check(
            &format!("description={}", "d".repeat(40001)),
            true,
            expect![[r#"
                description must be at most 40000 characters (got 40001)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 40000 characters","param":"description"}"#]],
        );
    }

    #[test]
    fn product_fields_come_from_the_parameter_table() {
        let paths: Vec<&str> = PRODUCT.fields().iter().map(|f| f.path).collect();
        expect_test::expect![[r#"
            id name description active images marketing_features metadata package_dimensions.height package_dimensions.length package_dimensions.weight package_dimensions.width shippable statement_descriptor tax_code unit_label url"#]]
        .assert_eq(&paths.join(" "));
        assert_eq!(
            PRODUCT
                .field("package_dimensions.width")
                .unwrap()
                .whole_group,
            Some("package_dimensions")
        );
        assert!(PRODUCT.field("id").unwrap().create_only);
        assert!(!PRODUCT.field("name").unwrap().create_only);
        assert!(PRODUCT.field("default_price").is_none());
        // A list of feature names, and a price's tiers, objects of several fields: both mapped.
        assert!(PRODUCT.field("marketing_features").is_some());
        assert!(crate::price::PRICE.field("tiers").is_some());
        assert!(crate::customer::CUSTOMER
            .field("invoice_settings.custom_fields")
            .is_none());
        assert_eq!(
            PRODUCT.key_field("id").map(|key| key.ignore_case),
            Some(false)
        );
    }
}
