//! The Subscription object: its create and update parameters as data ([`SUBSCRIPTION`]) and the
//! rules between them ([`subscription_rules`]), read by ferry's validation, field lists and
//! encoding and by the emulator's parameter checks.
//!
//! The table follows the common part of `POST /v1/subscriptions` and
//! `POST /v1/subscriptions/{id}` of Stripe's 2022 API (version 2020-08-27): a customer, up to 20
//! items each naming a recurring price, how it is collected, a trial, metadata. Payment settings,
//! coupons, taxes, billing thresholds, schedules and the like are not in the table and are
//! rejected as unknown. What needs stored state (does the customer exist, is the price recurring
//! and active, do the items share currency and interval, is the subscription canceled) is the
//! emulator's to check.

use serde_json::{Map, Value};

use crate::form::leaf_text;
use crate::param_error::{ParamError, Problem};
use crate::params::{
    boolean_of, create_only, non_empty, not_mapped, references, request_option, required, string,
    unsettable, update_only, with_kind, Param, ParamKind,
};
use crate::schema::ObjectSchema;

pub const COLLECTION_METHODS: &[&str] = &["charge_automatically", "send_invoice"];
pub const PRORATION_BEHAVIORS: &[&str] = &["always_invoice", "create_prorations", "none"];
pub const PAYMENT_BEHAVIORS: &[&str] = &[
    "allow_incomplete",
    "default_incomplete",
    "error_if_incomplete",
    "pending_if_incomplete",
];
/// A subscription has at most 20 items.
pub const SUBSCRIPTION_ITEMS_MAX: usize = 20;
/// A description is at most 500 characters.
pub const DESCRIPTION_MAX_CHARS: usize = 500;
/// `trial_end=now` ends a trial at once (on create: no trial).
pub const TRIAL_END_NOW: &str = "now";

const NON_NEGATIVE: ParamKind = ParamKind::IntegerRange {
    min: 0,
    max: i64::MAX,
};

/// One entry of `items`. `id` names an item of the subscription being updated and `deleted`
/// removes it: both are update-only (on create they are unknown, as on Stripe) and set by
/// ferry's engine, not from a column.
pub static ITEM_PARAMS: &[Param] = &[
    not_mapped(update_only(with_kind("deleted", ParamKind::Boolean))),
    not_mapped(update_only(non_empty(string("id", 5000)))),
    unsettable(with_kind("metadata", ParamKind::Metadata)),
    // Required for a new item: see `subscription_rules`.
    references(non_empty(string("price", 5000)), "price"),
    with_kind("quantity", NON_NEGATIVE),
];

/// The writable subscription params of create and update, in Stripe's (alphabetical) order.
pub static SUBSCRIPTION_PARAMS: &[Param] = &[
    with_kind("cancel_at_period_end", ParamKind::Boolean),
    with_kind(
        "collection_method",
        ParamKind::Enum {
            allowed: COLLECTION_METHODS,
        },
    ),
    references(
        required(create_only(non_empty(string("customer", 5000)))),
        "customer",
    ),
    // Only with `collection_method=send_invoice`: see `subscription_rules`.
    with_kind("days_until_due", NON_NEGATIVE),
    unsettable(string("description", DESCRIPTION_MAX_CHARS)),
    // Required with at least one item on create: see `subscription_rules`.
    with_kind(
        "items",
        ParamKind::ObjectArray {
            children: ITEM_PARAMS,
            max_items: SUBSCRIPTION_ITEMS_MAX,
        },
    ),
    unsettable(with_kind("metadata", ParamKind::Metadata)),
    not_mapped(with_kind(
        "payment_behavior",
        ParamKind::Enum {
            allowed: PAYMENT_BEHAVIORS,
        },
    )),
    // How a change of items is prorated: mapped from a constant (`'none'=proration_behavior`).
    request_option(with_kind(
        "proration_behavior",
        ParamKind::Enum {
            allowed: PRORATION_BEHAVIORS,
        },
    )),
    // A unix timestamp or `now`; no parameter kind says that, so it is text checked by
    // `subscription_rules`.
    non_empty(string("trial_end", 20)),
];

/// The Subscription object as ferry syncs it. It has no natural key among its fields: a
/// subscription is matched by an external id kept in its metadata.
pub static SUBSCRIPTION: ObjectSchema = ObjectSchema {
    object: "subscription",
    label: "Subscription",
    plural: "subscriptions",
    collection_path: "/v1/subscriptions",
    params: SUBSCRIPTION_PARAMS,
    key_fields: &[],
    featured_fields: &[
        "customer",
        "items",
        "collection_method",
        "days_until_due",
        "trial_end",
        "cancel_at_period_end",
    ],
    dashboard_path: "subscriptions",
    rules: Some(subscription_rules),
    expanded: &[],
    fields_once: std::sync::OnceLock::new(),
};

/// Checks subscription create (`for_update = false`) or update params (see
/// [`ObjectSchema::validate`]).
pub fn validate_subscription_params(
    params: &Map<String, Value>,
    for_update: bool,
) -> Result<(), ParamError> {
    SUBSCRIPTION.validate(params, for_update)
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

/// Whether `text` is what `trial_end` takes: `now` or a unix timestamp (decimal digits).
pub fn is_trial_end(text: &str) -> bool {
    text == TRIAL_END_NOW
        || (!text.is_empty() && text.len() <= 19 && text.bytes().all(|byte| byte.is_ascii_digit()))
}

/// The rules of a subscription write that the table cannot say, in the order the emulator checks
/// them: `trial_end` is `now` or a unix timestamp; on create `items` is required with at least
/// one item, and every item names its `price`; on update an item without `id` is a new item and
/// needs `price`, and `deleted` needs `id`; `days_until_due` goes only with
/// `collection_method=send_invoice`, which on create needs it. (On update the emulator checks
/// `days_until_due` against the stored collection method.)
pub fn subscription_rules(params: &Map<String, Value>, for_update: bool) -> Result<(), ParamError> {
    if let Some(trial_end) = params.get("trial_end").and_then(leaf_text) {
        if !is_trial_end(&trial_end) {
            return Err(rule(
                "trial_end",
                "Invalid trial_end: must be an integer Unix timestamp or `now`.",
                "must be a unix timestamp (seconds) or now",
            ));
        }
    }
    match params.get("items") {
        None if !for_update => return Err(ParamError::new("items", Problem::Missing)),
        Some(Value::Array(items)) => {
            if items.is_empty() && !for_update {
                return Err(rule(
                    "items",
                    "A subscription needs at least one item: send `items[0][price]`.",
                    "needs at least one item",
                ));
            }
            for (index, item) in items.iter().enumerate() {
                let Value::Object(item) = item else {
                    continue;
                };
                let has_id = item.contains_key("id");
                if !has_id && !item.contains_key("price") {
                    return Err(ParamError::new(
                        format!("items[{index}][price]"),
                        Problem::Missing,
                    ));
                }
                if !has_id && item.contains_key("deleted") {
                    return Err(rule(
                        format!("items[{index}][deleted]"),
                        "You must specify the `id` of the subscription item to delete.",
                        "needs the item's id: only an existing item can be deleted",
                    ));
                }
            }
        }
        _ => {}
    }
    let collection_method = params.get("collection_method").and_then(leaf_text);
    if params.contains_key("days_until_due") {
        let charged = match collection_method.as_deref() {
            Some(method) => method != "send_invoice",
            None => !for_update,
        };
        if charged {
            return Err(days_until_due_without_send_invoice());
        }
    }
    if !for_update
        && collection_method.as_deref() == Some("send_invoice")
        && !params.contains_key("days_until_due")
    {
        return Err(ParamError::new("days_until_due", Problem::Missing));
    }
    Ok(())
}

/// `days_until_due` with `collection_method=charge_automatically` (sent, stored or the default).
pub fn days_until_due_without_send_invoice() -> ParamError {
    rule(
        "days_until_due",
        "`days_until_due` can only be set when `collection_method=send_invoice`.",
        "can only be set when collection_method is send_invoice",
    )
}

/// Whether an item of update params asks to remove the item (`items[n][deleted]=true`).
pub fn item_is_deleted(item: &Map<String, Value>) -> bool {
    item.get("deleted").and_then(boolean_of) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::decode;
    use expect_test::{expect, Expect};

    fn check(body: &str, for_update: bool, expected: Expect) {
        let params = decode(body).expect("test bodies are well-formed");
        let rendered = match validate_subscription_params(&params, for_update) {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!(
                "{error}\n{}",
                serde_json::to_string(&error.to_stripe_error()).unwrap()
            ),
        };
        expected.assert_eq(&rendered);
    }

    #[test]
    fn valid_creates_and_updates_pass() {
        check(
            "customer=cus_1&items[0][price]=price_1&items[0][quantity]=2&items[0][metadata][k]=v&items[1][price]=price_2&collection_method=send_invoice&days_until_due=30&trial_end=1900000000&cancel_at_period_end=false&description=Gold&metadata[external_id]=42&proration_behavior=none&payment_behavior=allow_incomplete&expand[0]=customer",
            false,
            expect![["ok"]],
        );
        check(
            "customer=cus_1&items[0][price]=price_1&trial_end=now",
            false,
            expect![["ok"]],
        );
        check(
            "items[0][id]=si_1&items[0][quantity]=3&items[1][id]=si_2&items[1][deleted]=true&items[2][price]=price_3&cancel_at_period_end=true&metadata[k]=&description=&trial_end=now&proration_behavior=create_prorations",
            true,
            expect![["ok"]],
        );
        check("days_until_due=10", true, expect![["ok"]]);
    }

    #[test]
    fn create_needs_a_customer_and_items_with_prices() {
        check(
            "items[0][price]=price_1",
            false,
            expect![[r#"
                customer is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: customer.","param":"customer","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            "customer=cus_1",
            false,
            expect![[r#"
                items is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: items.","param":"items","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            "customer=cus_1&items[0][price]=price_1&items[1][quantity]=2",
            false,
            expect![[r#"
                items[1][price] is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: items[1][price].","param":"items[1][price]","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        let empty: Map<String, Value> =
            serde_json::from_str(r#"{"customer": "cus_1", "items": []}"#).unwrap();
        expect![["items needs at least one item"]].assert_eq(
            &validate_subscription_params(&empty, false)
                .unwrap_err()
                .to_string(),
        );
        check(
            "customer=cus_1&items[0][id]=si_1",
            false,
            expect![[r#"
                items[0][id] is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: items[0][id]","param":"items[0][id]","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
        check(
            "customer=cus_2",
            true,
            expect![[r#"
                customer is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: customer","param":"customer","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
    }

    #[test]
    fn items_are_limited_and_typed() {
        let many: String = (0..21)
            .map(|index| format!("items[{index}][price]=price_{index}"))
            .collect::<Vec<_>>()
            .join("&");
        check(
            &format!("customer=cus_1&{many}"),
            false,
            expect![[r#"
                items can have at most 20 items (got 21)
                {"type":"invalid_request_error","message":"Invalid array: must have at most 20 items","param":"items"}"#]],
        );
        check(
            "customer=cus_1&items[0][price]=price_1&items[0][quantity]=-1",
            false,
            expect![[r#"
                items[0][quantity] must be at least 0
                {"type":"invalid_request_error","message":"This value must be greater than or equal to 0.","param":"items[0][quantity]"}"#]],
        );
        check(
            "items[0][quantity]=2",
            true,
            expect![[r#"
                items[0][price] is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: items[0][price].","param":"items[0][price]","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            "items[0][price]=price_1&items[0][deleted]=true",
            true,
            expect![[r#"
                items[0][deleted] needs the item's id: only an existing item can be deleted
                {"type":"invalid_request_error","message":"You must specify the `id` of the subscription item to delete.","param":"items[0][deleted]"}"#]],
        );
        check(
            "items[0][id]=si_1&items[0][deleted]=maybe",
            true,
            expect![[r#"
                items[0][deleted] must be true or false
                {"type":"invalid_request_error","message":"Invalid boolean","param":"items[0][deleted]"}"#]],
        );
    }

    #[test]
    fn days_until_due_goes_with_send_invoice() {
        let base = "customer=cus_1&items[0][price]=price_1";
        check(
            &format!("{base}&days_until_due=30"),
            false,
            expect![[r#"
                days_until_due can only be set when collection_method is send_invoice
                {"type":"invalid_request_error","message":"`days_until_due` can only be set when `collection_method=send_invoice`.","param":"days_until_due"}"#]],
        );
        check(
            &format!("{base}&collection_method=charge_automatically&days_until_due=30"),
            false,
            expect![[r#"
                days_until_due can only be set when collection_method is send_invoice
                {"type":"invalid_request_error","message":"`days_until_due` can only be set when `collection_method=send_invoice`.","param":"days_until_due"}"#]],
        );
        check(
            &format!("{base}&collection_method=send_invoice"),
            false,
            expect![[r#"
                days_until_due is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: days_until_due.","param":"days_until_due","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            &format!("{base}&collection_method=send_invoice&days_until_due=-1"),
            false,
            expect![[r#"
                days_until_due must be at least 0
                {"type":"invalid_request_error","message":"This value must be greater than or equal to 0.","param":"days_until_due"}"#]],
        );
        check(
            "collection_method=charge_automatically&days_until_due=3",
            true,
            expect![[r#"
                days_until_due can only be set when collection_method is send_invoice
                {"type":"invalid_request_error","message":"`days_until_due` can only be set when `collection_method=send_invoice`.","param":"days_until_due"}"#]],
        );
        check("collection_method=send_invoice", true, expect![["ok"]]);
        check(
            &format!("{base}&collection_method=by_carrier_pigeon"),
            false,
            expect![[r#"
                collection_method must be one of charge_automatically or send_invoice
                {"type":"invalid_request_error","message":"Invalid collection_method: must be one of charge_automatically or send_invoice","param":"collection_method"}"#]],
        );
    }

    #[test]
    fn trial_end_is_a_timestamp_or_now() {
        let base = "customer=cus_1&items[0][price]=price_1";
        for good in ["now", "0", "1900000000"] {
            let params = decode(&format!("{base}&trial_end={good}")).unwrap();
            assert_eq!(
                validate_subscription_params(&params, false),
                Ok(()),
                "{good}"
            );
        }
        check(
            &format!("{base}&trial_end=tomorrow"),
            false,
            expect![[r#"
                trial_end must be a unix timestamp (seconds) or now
                {"type":"invalid_request_error","message":"Invalid trial_end: must be an integer Unix timestamp or `now`.","param":"trial_end"}"#]],
        );
        for bad in ["-5", "1.5", "NOW"] {
            let params = decode(&format!("{base}&trial_end={bad}")).unwrap();
            assert!(
                validate_subscription_params(&params, false).is_err(),
                "{bad}"
            );
        }
        let row: Map<String, Value> = serde_json::from_str(
            r#"{"customer": "cus_1", "items": [{"price": "price_1", "quantity": 2}], "trial_end": 1900000000, "cancel_at_period_end": true}"#,
        )
        .unwrap();
        assert_eq!(validate_subscription_params(&row, false), Ok(()));
    }

    #[test]
    fn subscription_fields_come_from_the_parameter_table() {
        let fields = SUBSCRIPTION.fields();
        let paths: Vec<&str> = fields.iter().map(|f| f.path).collect();
        expect!["customer items collection_method days_until_due trial_end cancel_at_period_end description metadata proration_behavior"]
            .assert_eq(&paths.join(" "));
        let create_only: Vec<&str> = fields
            .iter()
            .filter(|field| field.create_only)
            .map(|field| field.path)
            .collect();
        expect!["customer"].assert_eq(&create_only.join(" "));
        assert_eq!(
            SUBSCRIPTION.field("customer").unwrap().param.refers_to,
            Some("customer")
        );
        let price = ITEM_PARAMS.iter().find(|p| p.name == "price").unwrap();
        assert_eq!(price.refers_to, Some("price"));
        assert!(SUBSCRIPTION.key_fields.is_empty());
        assert!(
            SUBSCRIPTION
                .field("proration_behavior")
                .unwrap()
                .param
                .request_option
        );
        assert!(SUBSCRIPTION.field("payment_behavior").is_none());
        assert!(item_is_deleted(&decode("deleted=true").unwrap()));
        assert!(!item_is_deleted(&decode("deleted=false").unwrap()));
    }
}
