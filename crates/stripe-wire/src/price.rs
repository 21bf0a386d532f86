//! The Price object: its create and update parameters as data ([`PRICE`]) and the rules between
//! them ([`price_rules`]), read by ferry's validation, field lists and encoding and by the
//! emulator's parameter checks.
//!
//! The table follows `POST /v1/prices` and `POST /v1/prices/{price}` of Stripe's 2022 OpenAPI spec
//! (API version 2020-08-27). A price is mostly immutable: after creation only `active`,
//! `lookup_key`, `metadata`, `nickname`, `tax_behavior` and `transfer_lookup_key` are accepted;
//! anything else is an unknown parameter on update, as Stripe answers. Newer parameters
//! (`currency_options`, `custom_unit_amount`, `recurring[meter]`, …) are rejected as unknown.

use serde_json::{Map, Value};

use crate::form::leaf_text;
use crate::param_error::{ParamError, Problem};
use crate::params::{
    create_only, integer_of, non_empty, not_mapped, references, required, string, unsettable,
    with_kind, Param, ParamKind,
};
use crate::product::STATEMENT_DESCRIPTOR_MAX_CHARS;
use crate::schema::{KeyField, ObjectSchema};

pub const BILLING_SCHEMES: &[&str] = &["per_unit", "tiered"];
pub const TAX_BEHAVIORS: &[&str] = &["exclusive", "inclusive", "unspecified"];
pub const TIERS_MODES: &[&str] = &["graduated", "volume"];
pub const RECURRING_INTERVALS: &[&str] = &["day", "month", "week", "year"];
pub const USAGE_TYPES: &[&str] = &["licensed", "metered"];
pub const AGGREGATE_USAGES: &[&str] = &["last_during_period", "last_ever", "max", "sum"];
pub const TRANSFORM_ROUNDINGS: &[&str] = &["down", "up"];
/// Decimal amounts (`unit_amount_decimal`, tiers' `*_decimal`) have at most 12 decimal places.
pub const AMOUNT_DECIMAL_PLACES: usize = 12;
/// `GET /v1/prices` takes at most 10 `lookup_keys`.
pub const LOOKUP_KEYS_FILTER_MAX: usize = 10;
/// A lookup key is at most 200 characters.
pub const LOOKUP_KEY_MAX_CHARS: usize = 200;

const AMOUNT: ParamKind = ParamKind::IntegerRange {
    min: 0,
    max: i64::MAX,
};
const AMOUNT_DECIMAL: ParamKind = ParamKind::Decimal {
    max_fraction_digits: AMOUNT_DECIMAL_PLACES,
};

/// `product_data`: a product created with the price.
pub static PRODUCT_DATA_PARAMS: &[Param] = &[
    with_kind("active", ParamKind::Boolean),
    non_empty(string("id", 5000)),
    with_kind("metadata", ParamKind::Metadata),
    required(non_empty(string("name", 5000))),
    with_kind(
        "statement_descriptor",
        ParamKind::StatementDescriptor {
            max_chars: STATEMENT_DESCRIPTOR_MAX_CHARS,
        },
    ),
    string("tax_code", 5000),
    string("unit_label", 12),
];

/// `recurring`: what makes a price `type: recurring`.
pub static RECURRING_PARAMS: &[Param] = &[
    with_kind(
        "aggregate_usage",
        ParamKind::Enum {
            allowed: AGGREGATE_USAGES,
        },
    ),
    required(with_kind(
        "interval",
        ParamKind::Enum {
            allowed: RECURRING_INTERVALS,
        },
    )),
    with_kind(
        "interval_count",
        ParamKind::IntegerRange {
            min: 1,
            max: i64::MAX,
        },
    ),
    with_kind(
        "usage_type",
        ParamKind::Enum {
            allowed: USAGE_TYPES,
        },
    ),
];

/// One entry of `tiers`.
pub static TIER_PARAMS: &[Param] = &[
    with_kind("flat_amount", AMOUNT),
    with_kind("flat_amount_decimal", AMOUNT_DECIMAL),
    with_kind("unit_amount", AMOUNT),
    with_kind("unit_amount_decimal", AMOUNT_DECIMAL),
    required(with_kind("up_to", ParamKind::IntegerOrInf { min: 1 })),
];

pub static TRANSFORM_QUANTITY_PARAMS: &[Param] = &[
    required(with_kind(
        "divide_by",
        ParamKind::IntegerRange {
            min: 1,
            max: i64::MAX,
        },
    )),
    required(with_kind(
        "round",
        ParamKind::Enum {
            allowed: TRANSFORM_ROUNDINGS,
        },
    )),
];

/// The writable price params of create and update, in Stripe's (alphabetical) order.
pub static PRICE_PARAMS: &[Param] = &[
    with_kind("active", ParamKind::Boolean),
    create_only(with_kind(
        "billing_scheme",
        ParamKind::Enum {
            allowed: BILLING_SCHEMES,
        },
    )),
    required(create_only(with_kind("currency", ParamKind::Currency))),
    unsettable(string("lookup_key", LOOKUP_KEY_MAX_CHARS)),
    unsettable(with_kind("metadata", ParamKind::Metadata)),
    unsettable(string("nickname", 5000)),
    // Required unless `product_data` is sent: see `price_rules`.
    references(non_empty(create_only(string("product", 5000))), "product"),
    not_mapped(create_only(with_kind(
        "product_data",
        ParamKind::Object {
            children: PRODUCT_DATA_PARAMS,
        },
    ))),
    create_only(with_kind(
        "recurring",
        ParamKind::Object {
            children: RECURRING_PARAMS,
        },
    )),
    with_kind(
        "tax_behavior",
        ParamKind::Enum {
            allowed: TAX_BEHAVIORS,
        },
    ),
    create_only(with_kind(
        "tiers",
        ParamKind::ObjectArray {
            children: TIER_PARAMS,
            max_items: usize::MAX,
        },
    )),
    create_only(with_kind(
        "tiers_mode",
        ParamKind::Enum {
            allowed: TIERS_MODES,
        },
    )),
    not_mapped(with_kind("transfer_lookup_key", ParamKind::Boolean)),
    not_mapped(create_only(with_kind(
        "transform_quantity",
        ParamKind::Object {
            children: TRANSFORM_QUANTITY_PARAMS,
        },
    ))),
    create_only(with_kind("unit_amount", AMOUNT)),
    create_only(with_kind("unit_amount_decimal", AMOUNT_DECIMAL)),
];

/// The Price object as ferry syncs it. Its natural key is `lookup_key`, unique per account.
pub static PRICE: ObjectSchema = ObjectSchema {
    object: "price",
    label: "Price",
    plural: "prices",
    collection_path: "/v1/prices",
    params: PRICE_PARAMS,
    key_fields: &[KeyField {
        path: "lookup_key",
        ignore_case: false,
    }],
    featured_fields: &[
        "lookup_key",
        "product",
        "currency",
        "unit_amount",
        "nickname",
        "active",
    ],
    dashboard_path: "prices",
    rules: Some(price_rules),
    expanded: &["tiers"],
    fields_once: std::sync::OnceLock::new(),
};

/// Checks price create (`for_update = false`) or update params (see [`ObjectSchema::validate`]).
pub fn validate_price_params(
    params: &Map<String, Value>,
    for_update: bool,
) -> Result<(), ParamError> {
    PRICE.validate(params, for_update)
}

/// The longest billing interval Stripe allows, three years, in units of `interval`.
pub fn max_interval_count(interval: &str) -> i64 {
    match interval {
        "day" => 3 * 365,
        "week" => 3 * 52,
        "month" => 3 * 12,
        _ => 3,
    }
}

fn rule(
    param: impl Into<String>,
    stripe_message: &'static str,
    sentence: &'static str,
) -> ParamError {
    ParamError::new(
        param,
        Problem::Rule {
            stripe_message,
            sentence,
        },
    )
}

/// The rules of a price create that the table cannot say, in the order the emulator checks
/// them: `product` or `product_data` (one of them); per-unit prices need `unit_amount` or
/// `unit_amount_decimal` (one of them) and no tiers; tiered prices need `recurring`, `tiers_mode`
/// and `tiers` and no unit amount, with tiers in increasing `up_to` order ending with `inf`;
/// `aggregate_usage` only for metered prices; a billing interval of at most three years;
/// `transform_quantity` only for per-unit prices. Updates have no such rules.
pub fn price_rules(params: &Map<String, Value>, for_update: bool) -> Result<(), ParamError> {
    if for_update {
        return Ok(());
    }
    let has = |name: &str| params.contains_key(name);
    let text = |name: &str| params.get(name).and_then(leaf_text);
    match (has("product"), has("product_data")) {
        (true, true) => {
            return Err(rule(
                "product",
                "You may only specify one of these parameters: product, product_data.",
                "cannot be combined with product_data: a price names an existing product or creates one",
            ))
        }
        (false, false) => {
            return Err(rule(
                "product",
                "You must specify either `product` or `product_data` when creating a price.",
                "is required (or product_data, to create the product with the price)",
            ))
        }
        _ => {}
    }
    let tiered = text("billing_scheme").as_deref() == Some("tiered");
    if tiered {
        check_tiered(params)?;
    } else {
        check_per_unit(params)?;
    }
    if let Some(Value::Object(recurring)) = params.get("recurring") {
        check_recurring(recurring)?;
    }
    if tiered && has("transform_quantity") {
        return Err(rule(
            "transform_quantity",
            "`transform_quantity` cannot be combined with `billing_scheme=tiered`.",
            "cannot be used with a tiered price",
        ));
    }
    Ok(())
}

fn check_per_unit(params: &Map<String, Value>) -> Result<(), ParamError> {
    for name in ["tiers", "tiers_mode"] {
        if params.contains_key(name) {
            return Err(rule(
                name,
                "`tiers` and `tiers_mode` can only be set when `billing_scheme=tiered`.",
                "can only be set on a tiered price (billing_scheme=tiered)",
            ));
        }
    }
    match (
        params.contains_key("unit_amount"),
        params.contains_key("unit_amount_decimal"),
    ) {
        (true, true) => Err(rule(
            "unit_amount",
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
            "cannot be combined with unit_amount_decimal",
        )),
        (false, false) => Err(rule(
            "unit_amount",
            "Prices require an `unit_amount` or `unit_amount_decimal` parameter to be set.",
            "is required (or unit_amount_decimal) for a per-unit price",
        )),
        _ => Ok(()),
    }
}

fn check_tiered(params: &Map<String, Value>) -> Result<(), ParamError> {
    if !params.contains_key("recurring") {
        // Stripe names `interval` here, as recorded from Stripe in public emulator tests.
        return Err(rule(
            "interval",
            "Prices with `type=one_time` are not supported with tiered billing.",
            "is required: a tiered price must be recurring",
        ));
    }
    for name in ["unit_amount", "unit_amount_decimal"] {
        if params.contains_key(name) {
            return Err(rule(
                name,
                "Prices with `billing_scheme=tiered` take their amounts from `tiers`, not from `unit_amount` or `unit_amount_decimal`.",
                "cannot be set on a tiered price: amounts go in tiers",
            ));
        }
    }
    for name in ["tiers_mode", "tiers"] {
        if !params.contains_key(name) {
            return Err(ParamError::new(name, Problem::Missing));
        }
    }
    let Some(Value::Array(tiers)) = params.get("tiers") else {
        return Ok(());
    };
    let mut previous_up_to: Option<i64> = None;
    for (index, tier) in tiers.iter().enumerate() {
        let Value::Object(tier) = tier else {
            continue;
        };
        let name = |field: &str| format!("tiers[{index}][{field}]");
        if tier.contains_key("unit_amount") && tier.contains_key("unit_amount_decimal") {
            return Err(rule(
                name("unit_amount"),
                "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
                "cannot be combined with unit_amount_decimal",
            ));
        }
        if tier.contains_key("flat_amount") && tier.contains_key("flat_amount_decimal") {
            return Err(rule(
                name("flat_amount"),
                "You may only specify one of these parameters: flat_amount, flat_amount_decimal.",
                "cannot be combined with flat_amount_decimal",
            ));
        }
        let priced = [
            "unit_amount",
            "unit_amount_decimal",
            "flat_amount",
            "flat_amount_decimal",
        ]
        .iter()
        .any(|field| tier.contains_key(*field));
        if !priced {
            return Err(rule(
                format!("tiers[{index}]"),
                "Each tier requires one of `unit_amount`, `unit_amount_decimal`, `flat_amount` or `flat_amount_decimal`.",
                "needs an amount: unit_amount, unit_amount_decimal, flat_amount or flat_amount_decimal",
            ));
        }
        let is_last = index + 1 == tiers.len();
        let up_to = tier.get("up_to");
        let is_inf = up_to.and_then(leaf_text).as_deref() == Some("inf");
        match (is_inf, is_last) {
            (true, false) => {
                return Err(rule(
                    name("up_to"),
                    "Only the last tier may have `up_to=inf`.",
                    "can be inf only in the last tier",
                ))
            }
            (false, true) => {
                return Err(rule(
                    name("up_to"),
                    "The last tier must have `up_to=inf`.",
                    "must be inf in the last tier",
                ))
            }
            _ => {}
        }
        if let Some(up_to) = up_to.and_then(integer_of) {
            if previous_up_to.is_some_and(|previous| up_to <= previous) {
                return Err(rule(
                    name("up_to"),
                    "Each tier's `up_to` must be greater than the previous tier's.",
                    "must be greater than the previous tier's up_to",
                ));
            }
            previous_up_to = Some(up_to);
        }
    }
    Ok(())
}

fn check_recurring(recurring: &Map<String, Value>) -> Result<(), ParamError> {
    let text = |name: &str| recurring.get(name).and_then(leaf_text);
    if recurring.contains_key("aggregate_usage") && text("usage_type").as_deref() != Some("metered")
    {
        return Err(rule(
            "recurring[aggregate_usage]",
            "`aggregate_usage` can only be set when `usage_type=metered`.",
            "can only be set for a metered price (recurring.usage_type=metered)",
        ));
    }
    let interval = text("interval").unwrap_or_default();
    let count = recurring
        .get("interval_count")
        .and_then(integer_of)
        .unwrap_or(1);
    if count > max_interval_count(&interval) {
        return Err(rule(
            "recurring[interval_count]",
            "The maximum billing interval is three years (3 years, 36 months, 156 weeks or 1095 days).",
            "makes the billing interval longer than three years (3 years, 36 months, 156 weeks or 1095 days)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::decode;
    use expect_test::{expect, Expect};

    fn check(body: &str, for_update: bool, expected: Expect) {
        let params = decode(body).expect("test bodies are well-formed");
        let rendered = match validate_price_params(&params, for_update) {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!(
                "{error}\n{}",
                serde_json::to_string(&error.to_stripe_error()).unwrap()
            ),
        };
        expected.assert_eq(&rendered);
    }

    #[test]
    fn valid_creates_pass() {
        check(
            "currency=usd&product=prod_1&unit_amount=1000&lookup_key=gold_monthly&nickname=Gold&metadata[k]=v&recurring[interval]=month&recurring[interval_count]=3&recurring[usage_type]=licensed&tax_behavior=exclusive&active=false&transfer_lookup_key=true&expand[0]=product",
            false,
            expect![["ok"]],
        );
        check(
            "currency=EUR&product_data[name]=Gold&product_data[id]=gold&product_data[statement_descriptor]=GOLD&unit_amount_decimal=12.345678901234&transform_quantity[divide_by]=10&transform_quantity[round]=up",
            false,
            expect![["ok"]],
        );
        check(
            "currency=usd&product=prod_1&billing_scheme=tiered&tiers_mode=graduated&recurring[interval]=month&recurring[usage_type]=metered&recurring[aggregate_usage]=sum&tiers[0][up_to]=10&tiers[0][unit_amount]=500&tiers[1][up_to]=100&tiers[1][unit_amount_decimal]=4.5&tiers[1][flat_amount]=100&tiers[2][up_to]=inf&tiers[2][flat_amount_decimal]=0",
            false,
            expect![["ok"]],
        );
    }

    #[test]
    fn currency_is_required_and_supported() {
        check(
            "product=prod_1&unit_amount=1",
            false,
            expect![[r#"
                currency is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: currency.","param":"currency","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        let params = decode("currency=xyz&product=prod_1&unit_amount=1").unwrap();
        let error = validate_price_params(&params, false).unwrap_err();
        expect![["currency must be a three-letter ISO currency code that Stripe supports, such as usd or eur"]]
            .assert_eq(&error.to_string());
        let stripe = error.to_stripe_error();
        assert_eq!(stripe.param.as_deref(), Some("currency"));
        assert!(stripe.message.starts_with(
            "Invalid currency. Stripe currently supports these currencies: usd, aed, afn,"
        ));
        for bad in ["us", "usdd", "", "u$d"] {
            let params = decode(&format!("currency={bad}&product=p&unit_amount=1")).unwrap();
            assert!(validate_price_params(&params, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn product_or_product_data_but_not_both() {
        check(
            "currency=usd&unit_amount=1",
            false,
            expect![[r#"
                product is required (or product_data, to create the product with the price)
                {"type":"invalid_request_error","message":"You must specify either `product` or `product_data` when creating a price.","param":"product"}"#]],
        );
        check(
            "currency=usd&unit_amount=1&product=prod_1&product_data[name]=x",
            false,
            expect![[r#"
                product cannot be combined with product_data: a price names an existing product or creates one
                {"type":"invalid_request_error","message":"You may only specify one of these parameters: product, product_data.","param":"product"}"#]],
        );
        check(
            "currency=usd&unit_amount=1&product_data[id]=x",
            false,
            expect![[r#"
                product_data[name] is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: product_data[name].","param":"product_data[name]","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
    }

    #[test]
    fn per_unit_prices_need_exactly_one_amount() {
        check(
            "currency=usd&product=p",
            false,
            expect![[r#"
                unit_amount is required (or unit_amount_decimal) for a per-unit price
                {"type":"invalid_request_error","message":"Prices require an `unit_amount` or `unit_amount_decimal` parameter to be set.","param":"unit_amount"}"#]],
        );
        check(
            "currency=usd&product=p&unit_amount=1&unit_amount_decimal=1.5",
            false,
            expect![[r#"
                unit_amount cannot be combined with unit_amount_decimal
                {"type":"invalid_request_error","message":"You may only specify one of these parameters: unit_amount, unit_amount_decimal.","param":"unit_amount"}"#]],
        );
        check(
            "currency=usd&product=p&unit_amount=1&tiers_mode=volume",
            false,
            expect![[r#"
                tiers_mode can only be set on a tiered price (billing_scheme=tiered)
                {"type":"invalid_request_error","message":"`tiers` and `tiers_mode` can only be set when `billing_scheme=tiered`.","param":"tiers_mode"}"#]],
        );
    }

    #[test]
    fn amounts_are_non_negative_integers_or_decimal_text() {
        check(
            "currency=usd&product=p&unit_amount=-1",
            false,
            expect![[r#"
                unit_amount must be at least 0
                {"type":"invalid_request_error","message":"This value must be greater than or equal to 0.","param":"unit_amount"}"#]],
        );
        check(
            "currency=usd&product=p&unit_amount=12.5",
            false,
            expect![[r#"
                unit_amount must be a whole number such as 42 or -7
                {"type":"invalid_request_error","code":"parameter_invalid_integer","message":"Invalid integer","param":"unit_amount","doc_url":"https://stripe.com/docs/error-codes/parameter-invalid-integer"}"#]],
        );
        check(
            "currency=usd&product=p&unit_amount_decimal=0.1234567890123",
            false,
            expect![[r#"
                unit_amount_decimal must be a non-negative decimal number such as 12.5, with at most 12 decimal places
                {"type":"invalid_request_error","message":"Invalid decimal: must be a non-negative number with at most 12 decimal places","param":"unit_amount_decimal"}"#]],
        );
        for bad in ["-1.5", "1.", ".5", "1e3", "abc", "1.2.3"] {
            let params = decode(&format!(
                "currency=usd&product=p&unit_amount_decimal={}",
                bad
            ))
            .unwrap();
            assert!(validate_price_params(&params, false).is_err(), "{bad}");
        }
        check(
            "currency=usd&product=p&unit_amount=",
            false,
            expect![[r#"
                unit_amount cannot be empty: Stripe cannot unset it
                {"type":"invalid_request_error","code":"parameter_invalid_empty","message":"You passed an empty string for 'unit_amount'. We assume empty values are an attempt to unset a parameter; however 'unit_amount' cannot be unset. You should remove 'unit_amount' from your request or supply a non-empty value.","param":"unit_amount","doc_url":"https://stripe.com/docs/error-codes/parameter-invalid-empty"}"#]],
        );
    }

    #[test]
    fn tiered_prices_are_recurring_with_ordered_tiers_ending_in_inf() {
        let base = "currency=usd&product=p&billing_scheme=tiered&tiers_mode=volume";
        check(
            &format!("{base}&tiers[0][up_to]=inf&tiers[0][unit_amount]=5"),
            false,
            expect![[r#"
                interval is required: a tiered price must be recurring
                {"type":"invalid_request_error","message":"Prices with `type=one_time` are not supported with tiered billing.","param":"interval"}"#]],
        );
        let recurring = format!("{base}&recurring[interval]=month");
        check(
            &recurring,
            false,
            expect![[r#"
                tiers is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: tiers.","param":"tiers","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            &format!("{recurring}&unit_amount=5&tiers[0][up_to]=inf&tiers[0][unit_amount]=5"),
            false,
            expect![[r#"
                unit_amount cannot be set on a tiered price: amounts go in tiers
                {"type":"invalid_request_error","message":"Prices with `billing_scheme=tiered` take their amounts from `tiers`, not from `unit_amount` or `unit_amount_decimal`.","param":"unit_amount"}"#]],
        );
        check(
            &format!("{recurring}&tiers[0][up_to]=10&tiers[0][unit_amount]=5"),
            false,
            expect![[r#"
                tiers[0][up_to] must be inf in the last tier
                {"type":"invalid_request_error","message":"The last tier must have `up_to=inf`.","param":"tiers[0][up_to]"}"#]],
        );
        check(
            &format!("{recurring}&tiers[0][up_to]=inf&tiers[0][unit_amount]=5&tiers[1][up_to]=inf&tiers[1][unit_amount]=4"),
            false,
            expect![[r#"
                tiers[0][up_to] can be inf only in the last tier
                {"type":"invalid_request_error","message":"Only the last tier may have `up_to=inf`.","param":"tiers[0][up_to]"}"#]],
        );
        check(
            &format!("{recurring}&tiers[0][up_to]=10&tiers[0][unit_amount]=5&tiers[1][up_to]=10&tiers[1][unit_amount]=4&tiers[2][up_to]=inf&tiers[2][unit_amount]=3"),
            false,
            expect![[r#"
                tiers[1][up_to] must be greater than the previous tier's up_to
                {"type":"invalid_request_error","message":"Each tier's `up_to` must be greater than the previous tier's.","param":"tiers[1][up_to]"}"#]],
        );
        check(
            &format!("{recurring}&tiers[0][up_to]=inf"),
            false,
            expect![[r#"
                tiers[0] needs an amount: unit_amount, unit_amount_decimal, flat_amount or flat_amount_decimal
                {"type":"invalid_request_error","message":"Each tier requires one of `unit_amount`, `unit_amount_decimal`, `flat_amount` or `flat_amount_decimal`.","param":"tiers[0]"}"#]],
        );
        check(
            &format!("{recurring}&tiers[0][up_to]=inf&tiers[0][flat_amount]=1&tiers[0][flat_amount_decimal]=1"),
            false,
            expect![[r#"
                tiers[0][flat_amount] cannot be combined with flat_amount_decimal
                {"type":"invalid_request_error","message":"You may only specify one of these parameters: flat_amount, flat_amount_decimal.","param":"tiers[0][flat_amount]"}"#]],
        );
        check(
            &format!("{recurring}&tiers[0][up_to]=0&tiers[0][unit_amount]=5"),
            false,
            expect![[r#"
                tiers[0][up_to] must be at least 1
                {"type":"invalid_request_error","message":"This value must be greater than or equal to 1.","param":"tiers[0][up_to]"}"#]],
        );
        check(
            &format!("{recurring}&tiers[0][up_to]=lots&tiers[0][unit_amount]=5"),
            false,
            expect![[r#"
                tiers[0][up_to] must be a whole number such as 10, or inf
                {"type":"invalid_request_error","message":"Invalid value: must be an integer or `inf`","param":"tiers[0][up_to]"}"#]],
        );
        check(
            &format!("{recurring}&tiers[0][up_to]=inf&tiers[0][unit_amount]=5&transform_quantity[divide_by]=2&transform_quantity[round]=up"),
            false,
            expect![[r#"
                transform_quantity cannot be used with a tiered price
                {"type":"invalid_request_error","message":"`transform_quantity` cannot be combined with `billing_scheme=tiered`.","param":"transform_quantity"}"#]],
        );
    }

    #[test]
    fn recurring_rules() {
        let base = "currency=usd&product=p&unit_amount=5";
        check(
            &format!("{base}&recurring[interval_count]=2"),
            false,
            expect![[r#"
                recurring[interval] is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: recurring[interval].","param":"recurring[interval]","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            &format!("{base}&recurring[interval]=fortnight"),
            false,
            expect![[r#"
                recurring[interval] must be one of day, month, week, or year
                {"type":"invalid_request_error","message":"Invalid recurring[interval]: must be one of day, month, week, or year","param":"recurring[interval]"}"#]],
        );
        check(
            &format!("{base}&recurring[interval]=month&recurring[aggregate_usage]=sum"),
            false,
            expect![[r#"
                recurring[aggregate_usage] can only be set for a metered price (recurring.usage_type=metered)
                {"type":"invalid_request_error","message":"`aggregate_usage` can only be set when `usage_type=metered`.","param":"recurring[aggregate_usage]"}"#]],
        );
        check(
            &format!("{base}&recurring[interval]=month&recurring[interval_count]=36"),
            false,
            expect![["ok"]],
        );
        check(
            &format!("{base}&recurring[interval]=month&recurring[interval_count]=37"),
            false,
            expect![[r#"
                recurring[interval_count] makes the billing interval longer than three years (3 years, 36 months, 156 weeks or 1095 days)
                {"type":"invalid_request_error","message":"The maximum billing interval is three years (3 years, 36 months, 156 weeks or 1095 days).","param":"recurring[interval_count]"}"#]],
        );
        check(
            &format!("{base}&recurring[interval]=week&recurring[interval_count]=0"),
            false,
            expect![[r#"
                recurring[interval_count] must be at least 1
                {"type":"invalid_request_error","message":"This value must be greater than or equal to 1.","param":"recurring[interval_count]"}"#]],
        );
        for (interval, max) in [("day", 1095), ("week", 156), ("month", 36), ("year", 3)] {
            let at_max = decode(&format!(
                "{base}&recurring[interval]={interval}&recurring[interval_count]={max}"
            ))
            .unwrap();
            assert_eq!(validate_price_params(&at_max, false), Ok(()), "{interval}");
            let over = decode(&format!(
                "{base}&recurring[interval]={interval}&recurring[interval_count]={}",
                max + 1
            ))
            .unwrap();
            assert!(validate_price_params(&over, false).is_err(), "{interval}");
        }
    }

    #[test]
    fn only_mutable_fields_are_accepted_on_update() {
        check(
            "active=false&lookup_key=k&metadata[a]=&nickname=&tax_behavior=inclusive&transfer_lookup_key=true&expand[0]=tiers",
            true,
            expect![["ok"]],
        );
        for immutable in [
            "unit_amount=5",
            "currency=usd",
            "product=prod_1",
            "recurring[interval]=month",
            "billing_scheme=tiered",
            "tiers_mode=volume",
            "unit_amount_decimal=1",
            "product_data[name]=x",
            "transform_quantity[divide_by]=2",
        ] {
            let params = decode(immutable).unwrap();
            let error = validate_price_params(&params, true).unwrap_err();
            assert_eq!(error.problem, Problem::Unknown, "{immutable}");
            assert_eq!(
                error.param,
                immutable.split(['=', '[']).next().unwrap(),
                "{immutable}"
            );
        }
        check(
            "unit_amount=5",
            true,
            expect![[r#"
                unit_amount is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: unit_amount","param":"unit_amount","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
        check(
            &format!("lookup_key={}", "k".repeat(201)),
            true,
            expect![[r#"
                lookup_key must be at most 200 characters (got 201)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 200 characters","param":"lookup_key"}"#]],
        );
    }

    #[test]
    fn rows_with_typed_leaves_validate_before_encoding() {
        let row: Map<String, Value> = serde_json::from_str(
            r#"{"currency": "usd", "product": "prod_1", "unit_amount": 1200, "active": true,
                "recurring": {"interval": "year", "interval_count": 1}}"#,
        )
        .unwrap();
        assert_eq!(validate_price_params(&row, false), Ok(()));
        let decimal: Map<String, Value> = serde_json::from_str(
            r#"{"currency": "usd", "product": "prod_1", "unit_amount_decimal": 12.5}"#,
        )
        .unwrap();
        assert_eq!(validate_price_params(&decimal, false), Ok(()));
        let fractional: Map<String, Value> = serde_json::from_str(
            r#"{"currency": "usd", "product": "prod_1", "unit_amount": 12.5}"#,
        )
        .unwrap();
        assert_eq!(
            validate_price_params(&fractional, false),
            Err(ParamError::new("unit_amount", Problem::NotInteger))
        );
    }

    #[test]
    fn price_fields_come_from_the_parameter_table() {
        let fields = PRICE.fields();
        let paths: Vec<&str> = fields.iter().map(|f| f.path).collect();
        expect_test::expect!["lookup_key product currency unit_amount nickname active billing_scheme metadata recurring.aggregate_usage recurring.interval recurring.interval_count recurring.usage_type tax_behavior tiers tiers_mode unit_amount_decimal"]
        .assert_eq(&paths.join(" "));
        let create_only: Vec<&str> = fields
            .iter()
            .filter(|field| field.create_only)
            .map(|field| field.path)
            .collect();
        expect_test::expect!["product currency unit_amount billing_scheme recurring.aggregate_usage recurring.interval recurring.interval_count recurring.usage_type tiers tiers_mode unit_amount_decimal"]
        .assert_eq(&create_only.join(" "));
        assert_eq!(
            PRICE.key_field("lookup_key").map(|key| key.ignore_case),
            Some(false)
        );
        assert!(PRICE.field("transfer_lookup_key").is_none());
        assert!(PRICE.field("product_data.name").is_none());
    }
}
