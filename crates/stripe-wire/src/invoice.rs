//! The Invoice and Invoice Item objects: their create and update parameters as data
//! ([`INVOICE`], [`INVOICE_ITEM`]) and the rules between them ([`invoice_rules`],
//! [`invoice_item_rules`]), read by ferry's validation, field lists and encoding and by the
//! emulator's parameter checks.
//!
//! The tables follow the common part of `POST /v1/invoices`, `POST /v1/invoices/{id}`,
//! `POST /v1/invoiceitems` and `POST /v1/invoiceitems/{id}` of Stripe's API: a customer, how
//! the invoice is collected and when it is due, its texts and metadata; an item's customer,
//! invoice, price or amount, quantity, period and metadata. Taxes, discounts, payment
//! settings, custom fields, `price_data`, subscriptions and the like are not in the tables and
//! are rejected as unknown. What needs stored state (does the customer exist, is the invoice a
//! draft of the same customer, is the price one-time, which parameters a finalized invoice
//! still takes) is the emulator's to check.

use serde_json::{Map, Value};

use crate::form::leaf_text;
use crate::param_error::{ParamError, Problem};
use crate::params::{
    create_only, integer_of, non_empty, not_mapped, not_returned, references, required, string,
    unsettable, with_kind, Param, ParamKind,
};
use crate::schema::ObjectSchema;

pub const COLLECTION_METHODS: &[&str] = &["charge_automatically", "send_invoice"];
pub const PENDING_INVOICE_ITEMS_BEHAVIORS: &[&str] = &["exclude", "include", "include_and_require"];
/// What `status` of an invoice can be, and what `GET /v1/invoices` filters by.
pub const INVOICE_STATUSES: &[&str] = &["draft", "open", "paid", "uncollectible", "void"];
/// An invoice holds at most 250 invoice items.
pub const INVOICE_ITEMS_MAX: usize = 250;
/// An invoice's description is at most 1500 characters.
pub const INVOICE_DESCRIPTION_MAX_CHARS: usize = 1500;
/// Decimal unit amounts have at most 12 decimal places.
pub const AMOUNT_DECIMAL_PLACES: usize = 12;
/// The parameters a finalized invoice still takes (`expand` aside); `days_until_due`,
/// `due_date` and `auto_advance` only while it is open.
pub const FINALIZED_UPDATABLE: &[&str] = &["description", "footer", "metadata"];
pub const OPEN_UPDATABLE: &[&str] = &[
    "auto_advance",
    "days_until_due",
    "description",
    "due_date",
    "footer",
    "metadata",
];
/// Stripe's answer to a change a finalized invoice cannot take.
pub const FINALIZED_CANNOT_CHANGE: &str = "Finalized invoices can't be updated in this way";

const NON_NEGATIVE: ParamKind = ParamKind::IntegerRange {
    min: 0,
    max: i64::MAX,
};

/// The writable invoice params of create and update, in Stripe's (alphabetical) order.
pub static INVOICE_PARAMS: &[Param] = &[
    with_kind("auto_advance", ParamKind::Boolean),
    with_kind(
        "collection_method",
        ParamKind::Enum {
            allowed: COLLECTION_METHODS,
        },
    ),
    create_only(with_kind("currency", ParamKind::Currency)),
    references(
        required(create_only(non_empty(string("customer", 5000)))),
        "customer",
    ),
    // Only with `collection_method=send_invoice`, which needs it or `due_date`: see
    // `invoice_rules`. Stripe sets `due_date` from it and does not return it.
    not_returned(with_kind("days_until_due", NON_NEGATIVE)),
    unsettable(string("description", INVOICE_DESCRIPTION_MAX_CHARS)),
    // A unix timestamp; only with `collection_method=send_invoice`.
    with_kind("due_date", NON_NEGATIVE),
    unsettable(string("footer", 5000)),
    unsettable(with_kind("metadata", ParamKind::Metadata)),
    // Whether the customer's pending invoice items join the new invoice: a choice made once,
    // never a field of the invoice.
    not_mapped(create_only(with_kind(
        "pending_invoice_items_behavior",
        ParamKind::Enum {
            allowed: PENDING_INVOICE_ITEMS_BEHAVIORS,
        },
    ))),
];

/// The Invoice object as ferry syncs it. It has no natural key among its fields: an invoice is
/// matched by an external id kept in its metadata.
pub static INVOICE: ObjectSchema = ObjectSchema {
    object: "invoice",
    label: "Invoice",
    plural: "invoices",
    collection_path: "/v1/invoices",
    params: INVOICE_PARAMS,
    key_fields: &[],
    featured_fields: &[
        "customer",
        "collection_method",
        "days_until_due",
        "due_date",
        "currency",
        "description",
    ],
    dashboard_path: "invoices",
    rules: Some(invoice_rules),
    expanded: &[],
    fields_once: std::sync::OnceLock::new(),
};

/// An invoice item's service period: both ends, unix timestamps.
pub static PERIOD_PARAMS: &[Param] = &[
    required(with_kind("end", NON_NEGATIVE)),
    required(with_kind("start", NON_NEGATIVE)),
];

/// The writable invoice item params of create and update, in Stripe's (alphabetical) order.
pub static INVOICE_ITEM_PARAMS: &[Param] = &[
    // The whole item's amount; negative for a credit. One of `amount`, `price` and
    // `unit_amount_decimal`: see `invoice_item_rules`.
    with_kind("amount", ParamKind::Integer),
    // Required with `amount` or `unit_amount_decimal` unless the invoice gives it.
    create_only(with_kind("currency", ParamKind::Currency)),
    references(
        required(create_only(non_empty(string("customer", 5000)))),
        "customer",
    ),
    unsettable(string("description", 5000)),
    with_kind("discountable", ParamKind::Boolean),
    // Without it the item waits on the customer for the next invoice.
    references(create_only(non_empty(string("invoice", 5000))), "invoice"),
    unsettable(with_kind("metadata", ParamKind::Metadata)),
    with_kind(
        "period",
        ParamKind::Object {
            children: PERIOD_PARAMS,
        },
    ),
    // A one-time price: the emulator checks it exists and is not recurring.
    references(non_empty(string("price", 5000)), "price"),
    with_kind("quantity", NON_NEGATIVE),
    with_kind(
        "unit_amount_decimal",
        ParamKind::Decimal {
            max_fraction_digits: AMOUNT_DECIMAL_PLACES,
        },
    ),
];

/// The Invoice Item object as ferry syncs it, matched by an external id in its metadata.
pub static INVOICE_ITEM: ObjectSchema = ObjectSchema {
    object: "invoiceitem",
    label: "Invoice item",
    plural: "invoice items",
    collection_path: "/v1/invoiceitems",
    params: INVOICE_ITEM_PARAMS,
    key_fields: &[],
    featured_fields: &[
        "customer",
        "invoice",
        "price",
        "quantity",
        "amount",
        "unit_amount_decimal",
        "currency",
        "description",
    ],
    dashboard_path: "invoices",
    rules: Some(invoice_item_rules),
    expanded: &[],
    fields_once: std::sync::OnceLock::new(),
};

/// Checks invoice create (`for_update = false`) or update params (see
/// [`ObjectSchema::validate`]).
pub fn validate_invoice_params(
    params: &Map<String, Value>,
    for_update: bool,
) -> Result<(), ParamError> {
    INVOICE.validate(params, for_update)
}

/// Checks invoice item create (`for_update = false`) or update params.
pub fn validate_invoice_item_params(
    params: &Map<String, Value>,
    for_update: bool,
) -> Result<(), ParamError> {
    INVOICE_ITEM.validate(params, for_update)
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

/// The rules of an invoice write that the table cannot say: `days_until_due` and `due_date`
/// go only with `collection_method=send_invoice` (on create, the default is
/// `charge_automatically`), not both; on create `send_invoice` needs one of them. (On update
/// the emulator checks them against the stored collection method.)
pub fn invoice_rules(params: &Map<String, Value>, for_update: bool) -> Result<(), ParamError> {
    let collection_method = params.get("collection_method").and_then(leaf_text);
    let charged = match collection_method.as_deref() {
        Some(method) => method != "send_invoice",
        None => !for_update,
    };
    let has = |name: &str| params.contains_key(name);
    if charged {
        if has("days_until_due") {
            return Err(due_without_send_invoice("days_until_due"));
        }
        if has("due_date") {
            return Err(due_without_send_invoice("due_date"));
        }
    }
    if has("days_until_due") && has("due_date") {
        return Err(rule(
            "days_until_due",
            "You may only specify one of these parameters: days_until_due, due_date.",
            "cannot be combined with due_date",
        ));
    }
    if !for_update
        && collection_method.as_deref() == Some("send_invoice")
        && !has("days_until_due")
        && !has("due_date")
    {
        return Err(ParamError::new("days_until_due", Problem::Missing));
    }
    Ok(())
}

/// `days_until_due` or `due_date` with `collection_method=charge_automatically` (sent, stored
/// or the default).
pub fn due_without_send_invoice(param: &str) -> ParamError {
    if param == "due_date" {
        rule(
            "due_date",
            "`due_date` can only be set when `collection_method=send_invoice`.",
            "can only be set when collection_method is send_invoice",
        )
    } else {
        rule(
            "days_until_due",
            "`days_until_due` can only be set when `collection_method=send_invoice`.",
            "can only be set when collection_method is send_invoice",
        )
    }
}

/// The rules of an invoice item write that the table cannot say, in the order the emulator
/// checks them: at most one of `amount`, `price` and `unit_amount_decimal` (on create exactly
/// one); no `quantity` with `amount` (an amount is the whole item's); on create `currency` with
/// `amount` or `unit_amount_decimal` unless `invoice` gives it; a period does not end before it
/// starts.
pub fn invoice_item_rules(params: &Map<String, Value>, for_update: bool) -> Result<(), ParamError> {
    let has = |name: &str| params.contains_key(name);
    let exclusive = match (has("amount"), has("price"), has("unit_amount_decimal")) {
        (true, true, true) => Some((
            "amount",
            "You may only specify one of these parameters: amount, price, unit_amount_decimal.",
        )),
        (true, true, false) => Some((
            "amount",
            "You may only specify one of these parameters: amount, price.",
        )),
        (true, false, true) => Some((
            "amount",
            "You may only specify one of these parameters: amount, unit_amount_decimal.",
        )),
        (false, true, true) => Some((
            "price",
            "You may only specify one of these parameters: price, unit_amount_decimal.",
        )),
        (false, false, false) if !for_update => {
            return Err(rule(
                "amount",
                "You must specify one of `amount`, `price` or `unit_amount_decimal` to create an invoice item.",
                "is required (or price, or unit_amount_decimal) to create an invoice item",
            ))
        }
        _ => None,
    };
    if let Some((param, message)) = exclusive {
        return Err(rule(
            param,
            message,
            "cannot be combined with the other ways to price an item: send one of amount, price or unit_amount_decimal",
        ));
    }
    if has("amount") && has("quantity") {
        return Err(rule(
            "amount",
            "You may only specify one of these parameters: amount, quantity.",
            "cannot be combined with quantity: amount is the whole item's",
        ));
    }
    if !for_update
        && (has("amount") || has("unit_amount_decimal"))
        && !has("currency")
        && !has("invoice")
    {
        return Err(ParamError::new("currency", Problem::Missing));
    }
    if let Some(Value::Object(period)) = params.get("period") {
        let end = period.get("end").and_then(integer_of);
        let start = period.get("start").and_then(integer_of);
        if let (Some(end), Some(start)) = (end, start) {
            if end < start {
                return Err(rule(
                    "period[end]",
                    "The period's `end` must be greater than or equal to its `start`.",
                    "must not be before period.start",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::decode;
    use expect_test::{expect, Expect};

    fn check_with(schema: &ObjectSchema, body: &str, for_update: bool, expected: Expect) {
        let params = decode(body).expect("test bodies are well-formed");
        let rendered = match schema.validate(&params, for_update) {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!(
                "{error}\n{}",
                serde_json::to_string(&error.to_stripe_error()).unwrap()
            ),
        };
        expected.assert_eq(&rendered);
    }

    fn check(body: &str, for_update: bool, expected: Expect) {
        check_with(&INVOICE, body, for_update, expected);
    }

    fn check_item(body: &str, for_update: bool, expected: Expect) {
        check_with(&INVOICE_ITEM, body, for_update, expected);
    }

    #[test]
    fn valid_invoice_creates_and_updates_pass() {
        check(
            "customer=cus_1&collection_method=send_invoice&days_until_due=30&currency=EUR&description=March&footer=Thanks&metadata[external_id]=42&auto_advance=false&pending_invoice_items_behavior=include&expand[0]=customer",
            false,
            expect![["ok"]],
        );
        check(
            "customer=cus_1&collection_method=send_invoice&due_date=1900000000",
            false,
            expect![["ok"]],
        );
        check("customer=cus_1", false, expect![["ok"]]);
        check(
            "description=&footer=&metadata[k]=&auto_advance=true",
            true,
            expect![["ok"]],
        );
        check("days_until_due=10", true, expect![["ok"]]);
    }

    #[test]
    fn invoice_create_needs_a_customer_and_create_only_params_stay_there() {
        check(
            "currency=usd",
            false,
            expect![[r#"
                customer is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: customer.","param":"customer","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            "customer=",
            false,
            expect![[r#"
                customer cannot be empty: Stripe cannot unset it
                {"type":"invalid_request_error","code":"parameter_invalid_empty","message":"You passed an empty string for 'customer'. We assume empty values are an attempt to unset a parameter; however 'customer' cannot be unset. You should remove 'customer' from your request or supply a non-empty value.","param":"customer","doc_url":"https://stripe.com/docs/error-codes/parameter-invalid-empty"}"#]],
        );
        for create_only in [
            "customer=cus_2",
            "currency=usd",
            "pending_invoice_items_behavior=include",
        ] {
            let params = decode(create_only).unwrap();
            let error = validate_invoice_params(&params, true).unwrap_err();
            assert_eq!(error.problem, Problem::Unknown, "{create_only}");
        }
        check(
            "customer=cus_1&pending_invoice_items_behavior=all",
            false,
            expect![[r#"
                pending_invoice_items_behavior must be one of exclude, include, or include_and_require
                {"type":"invalid_request_error","message":"Invalid pending_invoice_items_behavior: must be one of exclude, include, or include_and_require","param":"pending_invoice_items_behavior"}"#]],
        );
        check("customer=cus_1&description=", false, expect![["ok"]]);
        let long = "x".repeat(1501);
        check(
            &format!("customer=cus_1&description={long}"),
            false,
            expect![[r#"
                description must be at most 1500 characters (got 1501)
                {"type":"invalid_request_error","message":"Invalid string: must be at most 1500 characters","param":"description"}"#]],
        );
        check(
            "customer=cus_1&currency=xyz",
            false,
            expect![[r#"
                currency must be a three-letter ISO currency code that Stripe supports, such as usd or eur
                {"type":"invalid_request_error","message":"Invalid currency. Stripe currently supports these currencies: usd, aed, afn, all, amd, ang, aoa, ars, aud, awg, azn, bam, bbd, bdt, bgn, bhd, bif, bmd, bnd, bob, brl, bsd, bwp, byn, bzd, cad, cdf, chf, clp, cny, cop, crc, cve, czk, djf, dkk, dop, dzd, egp, etb, eur, fjd, fkp, gbp, gel, gip, gmd, gnf, gtq, gyd, hkd, hnl, hrk, htg, huf, idr, ils, inr, isk, jmd, jod, jpy, kes, kgs, khr, kmf, krw, kwd, kyd, kzt, lak, lbp, lkr, lrd, lsl, mad, mdl, mga, mkd, mmk, mnt, mop, mro, mur, mvr, mwk, mxn, myr, mzn, nad, ngn, nio, nok, npr, nzd, omr, pab, pen, pgk, php, pkr, pln, pyg, qar, ron, rsd, rub, rwf, sar, sbd, scr, sek, sgd, shp, sll, sos, srd, std, szl, thb, tjs, tnd, top, try, ttd, twd, tzs, uah, ugx, uyu, uzs, vnd, vuv, wst, xaf, xcd, xof, xpf, yer, zar, zmw, usdc, ghs, eek, lvl, svc, vef, ltl","param":"currency"}"#]],
        );
    }

    #[test]
    fn days_until_due_and_due_date_go_with_send_invoice() {
        check(
            "customer=cus_1&days_until_due=30",
            false,
            expect![[r#"
                days_until_due can only be set when collection_method is send_invoice
                {"type":"invalid_request_error","message":"`days_until_due` can only be set when `collection_method=send_invoice`.","param":"days_until_due"}"#]],
        );
        check(
            "customer=cus_1&collection_method=charge_automatically&due_date=1900000000",
            false,
            expect![[r#"
                due_date can only be set when collection_method is send_invoice
                {"type":"invalid_request_error","message":"`due_date` can only be set when `collection_method=send_invoice`.","param":"due_date"}"#]],
        );
        check(
            "customer=cus_1&collection_method=send_invoice",
            false,
            expect![[r#"
                days_until_due is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: days_until_due.","param":"days_until_due","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check(
            "customer=cus_1&collection_method=send_invoice&days_until_due=3&due_date=1900000000",
            false,
            expect![[r#"
                days_until_due cannot be combined with due_date
                {"type":"invalid_request_error","message":"You may only specify one of these parameters: days_until_due, due_date.","param":"days_until_due"}"#]],
        );
        check(
            "customer=cus_1&collection_method=send_invoice&days_until_due=-1",
            false,
            expect![[r#"
                days_until_due must be at least 0
                {"type":"invalid_request_error","message":"This value must be greater than or equal to 0.","param":"days_until_due"}"#]],
        );
        check(
            "collection_method=charge_automatically&due_date=1900000000",
            true,
            expect![[r#"
                due_date can only be set when collection_method is send_invoice
                {"type":"invalid_request_error","message":"`due_date` can only be set when `collection_method=send_invoice`.","param":"due_date"}"#]],
        );
        check("collection_method=send_invoice", true, expect![["ok"]]);
        check(
            "customer=cus_1&collection_method=by_post",
            false,
            expect![[r#"
                collection_method must be one of charge_automatically or send_invoice
                {"type":"invalid_request_error","message":"Invalid collection_method: must be one of charge_automatically or send_invoice","param":"collection_method"}"#]],
        );
    }

    #[test]
    fn valid_invoice_item_creates_and_updates_pass() {
        check_item(
            "customer=cus_1&price=price_1&quantity=3&invoice=in_1&description=Seats&metadata[external_id]=7&period[start]=1700000000&period[end]=1700086400&discountable=false",
            false,
            expect![["ok"]],
        );
        check_item(
            "customer=cus_1&amount=-500&currency=usd",
            false,
            expect![["ok"]],
        );
        check_item(
            "customer=cus_1&unit_amount_decimal=12.345678901234&quantity=2&invoice=in_1",
            false,
            expect![["ok"]],
        );
        check_item(
            "quantity=4&description=&metadata=&period[start]=5&period[end]=5",
            true,
            expect![["ok"]],
        );
        check_item("amount=100", true, expect![["ok"]]);
    }

    #[test]
    fn an_invoice_item_is_priced_one_way() {
        check_item(
            "customer=cus_1&currency=usd",
            false,
            expect![[r#"
                amount is required (or price, or unit_amount_decimal) to create an invoice item
                {"type":"invalid_request_error","message":"You must specify one of `amount`, `price` or `unit_amount_decimal` to create an invoice item.","param":"amount"}"#]],
        );
        check_item(
            "customer=cus_1&currency=usd&amount=5&price=price_1",
            false,
            expect![[r#"
                amount cannot be combined with the other ways to price an item: send one of amount, price or unit_amount_decimal
                {"type":"invalid_request_error","message":"You may only specify one of these parameters: amount, price.","param":"amount"}"#]],
        );
        check_item(
            "price=price_1&unit_amount_decimal=1.5",
            true,
            expect![[r#"
                price cannot be combined with the other ways to price an item: send one of amount, price or unit_amount_decimal
                {"type":"invalid_request_error","message":"You may only specify one of these parameters: price, unit_amount_decimal.","param":"price"}"#]],
        );
        check_item(
            "customer=cus_1&currency=usd&amount=5&quantity=2",
            false,
            expect![[r#"
                amount cannot be combined with quantity: amount is the whole item's
                {"type":"invalid_request_error","message":"You may only specify one of these parameters: amount, quantity.","param":"amount"}"#]],
        );
        check_item(
            "customer=cus_1&amount=5",
            false,
            expect![[r#"
                currency is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: currency.","param":"currency","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check_item(
            "customer=cus_1&amount=5&invoice=in_1",
            false,
            expect![["ok"]],
        );
        check_item("customer=cus_1&price=price_1", false, expect![["ok"]]);
        check_item(
            "customer=cus_1&unit_amount_decimal=-1&currency=usd",
            false,
            expect![[r#"
                unit_amount_decimal must be a non-negative decimal number such as 12.5, with at most 12 decimal places
                {"type":"invalid_request_error","message":"Invalid decimal: must be a non-negative number with at most 12 decimal places","param":"unit_amount_decimal"}"#]],
        );
        check_item(
            "customer=cus_1&price=price_1&quantity=-1",
            false,
            expect![[r#"
                quantity must be at least 0
                {"type":"invalid_request_error","message":"This value must be greater than or equal to 0.","param":"quantity"}"#]],
        );
        check_item(
            "customer=cus_1&amount=1.5&currency=usd",
            false,
            expect![[r#"
                amount must be a whole number such as 42 or -7
                {"type":"invalid_request_error","code":"parameter_invalid_integer","message":"Invalid integer","param":"amount","doc_url":"https://stripe.com/docs/error-codes/parameter-invalid-integer"}"#]],
        );
    }

    #[test]
    fn an_invoice_item_period_has_both_ends_in_order() {
        let base = "customer=cus_1&price=price_1";
        check_item(
            &format!("{base}&period[start]=10"),
            false,
            expect![[r#"
                period[end] is required
                {"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: period[end].","param":"period[end]","doc_url":"https://stripe.com/docs/error-codes/parameter-missing"}"#]],
        );
        check_item(
            &format!("{base}&period[start]=10&period[end]=9"),
            false,
            expect![[r#"
                period[end] must not be before period.start
                {"type":"invalid_request_error","message":"The period's `end` must be greater than or equal to its `start`.","param":"period[end]"}"#]],
        );
        check_item(
            &format!("{base}&invoice=in_1&subscription=sub_1"),
            false,
            expect![[r#"
                subscription is not a parameter Stripe accepts here
                {"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: subscription","param":"subscription","doc_url":"https://stripe.com/docs/error-codes/parameter-unknown"}"#]],
        );
        for create_only in ["customer=cus_2", "invoice=in_2", "currency=usd"] {
            let params = decode(create_only).unwrap();
            let error = validate_invoice_item_params(&params, true).unwrap_err();
            assert_eq!(error.problem, Problem::Unknown, "{create_only}");
        }
    }

    #[test]
    fn invoice_fields_come_from_the_parameter_tables() {
        let paths = |schema: &ObjectSchema| {
            schema
                .fields()
                .iter()
                .map(|field| field.path)
                .collect::<Vec<_>>()
                .join(" ")
        };
        expect!["customer collection_method days_until_due due_date currency description auto_advance footer metadata"]
            .assert_eq(&paths(&INVOICE));
        expect!["customer invoice price quantity amount unit_amount_decimal currency description discountable metadata period.end period.start"]
            .assert_eq(&paths(&INVOICE_ITEM));
        let create_only = |schema: &ObjectSchema| {
            schema
                .fields()
                .iter()
                .filter(|field| field.create_only)
                .map(|field| field.path)
                .collect::<Vec<_>>()
                .join(" ")
        };
        expect!["customer currency"].assert_eq(&create_only(&INVOICE));
        expect!["customer invoice currency"].assert_eq(&create_only(&INVOICE_ITEM));
        assert_eq!(
            INVOICE.field("customer").unwrap().param.refers_to,
            Some("customer")
        );
        assert_eq!(
            INVOICE_ITEM.field("invoice").unwrap().param.refers_to,
            Some("invoice")
        );
        assert_eq!(
            INVOICE_ITEM.field("price").unwrap().param.refers_to,
            Some("price")
        );
        assert!(INVOICE.key_fields.is_empty() && INVOICE_ITEM.key_fields.is_empty());
        assert!(INVOICE.field("pending_invoice_items_behavior").is_none());
        assert_eq!(
            INVOICE_ITEM.missing_companions(&["period.start"]),
            vec!["Stripe needs period.end and period.start whenever period is set; map them too"]
        );
    }
}
