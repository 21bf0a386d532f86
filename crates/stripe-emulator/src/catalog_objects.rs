//! The product and price objects as Stripe returns them, and how validated params make and
//! change them.

use serde_json::{json, Map, Value};

use ferry_stripe_wire::form::leaf_text;
use ferry_stripe_wire::params::{boolean_of, integer_of};
use ferry_stripe_wire::ParamError;

use crate::customer_object::{merge_metadata, text_of};

/// A new product with Stripe's defaults, keys in the order of Stripe's documentation.
pub(crate) fn new_product(id: &str, created: i64, livemode: bool) -> Map<String, Value> {
    object(json!({
        "id": id,
        "object": "product",
        "active": true,
        "created": created,
        "default_price": null,
        "description": null,
        "images": [],
        "marketing_features": [],
        "livemode": livemode,
        "metadata": {},
        "name": "",
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "unit_label": null,
        "updated": created,
        "url": null
    }))
}

/// Applies validated product params (create, update, or a price's `product_data`): fields not
/// sent stay, metadata merges, `""` unsets the unsettable ones (`description=` reads `null`,
/// `images=` and `marketing_features=` read `[]`), `package_dimensions` is replaced whole. `id`
/// and `expand` change nothing here. Fails only when merged metadata would exceed 50 keys.
pub(crate) fn apply_product_params(
    product: &mut Map<String, Value>,
    params: &Map<String, Value>,
) -> Result<(), ParamError> {
    for (name, value) in params {
        let is_empty = leaf_text(value).as_deref() == Some("");
        let stored = match name.as_str() {
            "active" | "shippable" => Value::Bool(boolean_of(value).unwrap_or_default()),
            "default_price" if is_empty => Value::Null,
            "default_price" | "name" => Value::String(text_of(value)),
            "description" | "statement_descriptor" | "tax_code" | "unit_label" | "url" => {
                nullable_text(value)
            }
            "images" => Value::Array(match value {
                Value::Array(items) => items
                    .iter()
                    .map(|item| Value::String(text_of(item)))
                    .collect(),
                _ => Vec::new(),
            }),
            "marketing_features" => Value::Array(match value {
                Value::Array(items) => items
                    .iter()
                    .map(|item| json!({"name": item.get("name").map(text_of)}))
                    .collect(),
                _ => Vec::new(),
            }),
            "package_dimensions" if is_empty => Value::Null,
            "package_dimensions" => {
                let number = |part: &str| value.get(part).map(number_of).unwrap_or(Value::Null);
                json!({
                    "height": number("height"),
                    "length": number("length"),
                    "weight": number("weight"),
                    "width": number("width"),
                })
            }
            "metadata" => {
                merge_metadata(product, value, is_empty)?;
                continue;
            }
            _ => continue,
        };
        product.insert(name.clone(), stored);
    }
    Ok(())
}

/// A new price from validated create params, keys in the order of Stripe's documentation.
/// `tiers` is stored (after `tax_behavior`, where an expanded response shows it) but is not part
/// of a response unless expanded: see [`price_for_response`].
pub(crate) fn new_price(
    id: &str,
    created: i64,
    livemode: bool,
    product_id: &str,
    params: &Map<String, Value>,
) -> Result<Map<String, Value>, ParamError> {
    let text = |name: &str| params.get(name).map(text_of);
    let tiered = text("billing_scheme").as_deref() == Some("tiered");
    let (unit_amount, unit_amount_decimal) =
        amount_pair(params.get("unit_amount"), params.get("unit_amount_decimal"));
    let recurring = match params.get("recurring") {
        Some(recurring) => json!({
            "aggregate_usage": recurring.get("aggregate_usage").map(text_of),
            "interval": recurring.get("interval").map(text_of),
            "interval_count": recurring.get("interval_count").and_then(integer_of).unwrap_or(1),
            "trial_period_days": null,
            "usage_type": recurring
                .get("usage_type")
                .map(text_of)
                .unwrap_or_else(|| "licensed".to_owned()),
        }),
        None => Value::Null,
    };
    let transform_quantity = match params.get("transform_quantity") {
        Some(transform) => json!({
            "divide_by": transform.get("divide_by").and_then(integer_of),
            "round": transform.get("round").map(text_of),
        }),
        None => Value::Null,
    };
    let mut price = object(json!({
        "id": id,
        "object": "price",
        "active": params.get("active").and_then(boolean_of).unwrap_or(true),
        "billing_scheme": if tiered { "tiered" } else { "per_unit" },
        "created": created,
        "currency": text("currency").unwrap_or_default().to_ascii_lowercase(),
        "custom_unit_amount": null,
        "livemode": livemode,
        "lookup_key": params.get("lookup_key").map(nullable_text).unwrap_or(Value::Null),
        "metadata": {},
        "nickname": params.get("nickname").map(nullable_text).unwrap_or(Value::Null),
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": text("tax_behavior").unwrap_or_else(|| "unspecified".to_owned()),
        "tiers_mode": if tiered { text("tiers_mode").map(Value::String).unwrap_or(Value::Null) } else { Value::Null },
        "transform_quantity": transform_quantity,
        "type": if params.contains_key("recurring") { "recurring" } else { "one_time" },
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }));
    if tiered {
        let tiers = match params.get("tiers") {
            Some(Value::Array(tiers)) => tiers.iter().map(tier_object).collect(),
            _ => Vec::new(),
        };
        price = insert_after(price, "tax_behavior", "tiers", Value::Array(tiers));
    }
    if let Some(metadata) = params.get("metadata") {
        merge_metadata(&mut price, metadata, false)?;
    }
    Ok(price)
}

/// Applies validated price update params: `active`, `lookup_key` (`""` removes it),
/// `metadata` (merged), `nickname` (`""` reads `null`), `tax_behavior`. `transfer_lookup_key`
/// and `expand` change nothing here. Fails only when merged metadata would exceed 50 keys.
pub(crate) fn apply_price_update(
    price: &mut Map<String, Value>,
    params: &Map<String, Value>,
) -> Result<(), ParamError> {
    for (name, value) in params {
        let stored = match name.as_str() {
            "active" => Value::Bool(boolean_of(value).unwrap_or_default()),
            "lookup_key" | "nickname" => nullable_text(value),
            "tax_behavior" => Value::String(text_of(value)),
            "metadata" => {
                let clear_all = leaf_text(value).as_deref() == Some("");
                merge_metadata(price, value, clear_all)?;
                continue;
            }
            _ => continue,
        };
        price.insert(name.clone(), stored);
    }
    Ok(())
}

/// A price as a response shows it: `tiers` only when expanded, as on Stripe.
pub(crate) fn price_for_response(
    price: &Map<String, Value>,
    with_tiers: bool,
) -> Map<String, Value> {
    if with_tiers {
        return price.clone();
    }
    price
        .iter()
        .filter(|(key, _)| key.as_str() != "tiers")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// `{"id", "object", "deleted": true}`, what a delete answers.
/// A list filter on a text field: kept when no value is wanted, or the field holds it.
pub(crate) fn text_is(record: &Map<String, Value>, field: &str, wanted: &Option<String>) -> bool {
    wanted
        .as_ref()
        .is_none_or(|wanted| record[field].as_str() == Some(wanted.as_str()))
}

pub(crate) fn deleted_stub(object: &str, id: &str) -> Value {
    json!({"id": id, "object": object, "deleted": true})
}

/// Decimal amount text as Stripe shows it: no leading zeros, no trailing fractional zeros
/// (`"007.50"` → `"7.5"`, `"12.0"` → `"12"`).
pub(crate) fn normalize_decimal(text: &str) -> String {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction}")
    }
}

/// An integer amount and its decimal text, from whichever of the two was sent: the integer
/// gives both; a decimal gives its (normalized) text and, when it is whole, the integer too.
fn amount_pair(integer: Option<&Value>, decimal: Option<&Value>) -> (Value, Value) {
    if let Some(amount) = integer.and_then(integer_of) {
        return (json!(amount), Value::String(amount.to_string()));
    }
    match decimal.and_then(leaf_text) {
        Some(text) => {
            let normalized = normalize_decimal(&text);
            let whole = if normalized.contains('.') {
                Value::Null
            } else {
                normalized
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            };
            (whole, Value::String(normalized))
        }
        None => (Value::Null, Value::Null),
    }
}

fn tier_object(tier: &Value) -> Value {
    let (flat_amount, flat_amount_decimal) =
        amount_pair(tier.get("flat_amount"), tier.get("flat_amount_decimal"));
    let (unit_amount, unit_amount_decimal) =
        amount_pair(tier.get("unit_amount"), tier.get("unit_amount_decimal"));
    // The last tier's `up_to=inf` reads back as `null`.
    let up_to = tier.get("up_to").and_then(integer_of).map(Value::from);
    json!({
        "flat_amount": flat_amount,
        "flat_amount_decimal": flat_amount_decimal,
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
        "up_to": up_to,
    })
}

/// A text field's value as Stripe returns it: `null` for the empty string.
pub(crate) fn nullable_text(value: &Value) -> Value {
    match text_of(value) {
        text if text.is_empty() => Value::Null,
        text => Value::String(text),
    }
}

fn number_of(value: &Value) -> Value {
    let number = match value {
        Value::Number(number) => number.as_f64(),
        _ => text_of(value).parse::<f64>().ok(),
    };
    number.map(Value::from).unwrap_or(Value::Null)
}

fn insert_after(
    object: Map<String, Value>,
    after: &str,
    key: &str,
    value: Value,
) -> Map<String, Value> {
    let mut result = Map::new();
    let mut value = Some(value);
    for (existing, existing_value) in object {
        let is_anchor = existing == after;
        result.insert(existing, existing_value);
        if is_anchor {
            if let Some(value) = value.take() {
                result.insert(key.to_owned(), value);
            }
        }
    }
    result
}

/// The object a `json!` object literal makes.
pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(object) => object,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_stripe_wire::form::decode;

    #[test]
    fn product_update_semantics() {
        let mut product = new_product("prod_1", 10, false);
        let create = decode("name=Gold&description=d&images[0]=a&metadata[a]=1&package_dimensions[height]=1&package_dimensions[length]=2.5&package_dimensions[weight]=3&package_dimensions[width]=4&shippable=true").unwrap();
        apply_product_params(&mut product, &create).unwrap();
        assert_eq!(product["name"], "Gold");
        assert_eq!(product["shippable"], true);
        assert_eq!(
            product["package_dimensions"],
            json!({"height": 1.0, "length": 2.5, "weight": 3.0, "width": 4.0})
        );
        let update = decode("description=&images=&metadata[a]=&metadata[b]=2&package_dimensions=&url=https%3A%2F%2Fx.co").unwrap();
        apply_product_params(&mut product, &update).unwrap();
        assert_eq!(product["description"], Value::Null);
        assert_eq!(product["images"], json!([]));
        assert_eq!(product["metadata"], json!({"b": "2"}));
        assert_eq!(product["package_dimensions"], Value::Null);
        assert_eq!(product["url"], "https://x.co");
        assert_eq!(product["name"], "Gold", "unsent fields stay");
    }

    #[test]
    fn price_amounts_and_tiers() {
        let params = decode("currency=USD&unit_amount=1000&lookup_key=k&metadata[a]=1").unwrap();
        let price = new_price("price_1", 5, true, "prod_1", &params).unwrap();
        assert_eq!(price["currency"], "usd");
        assert_eq!(price["unit_amount"], 1000);
        assert_eq!(price["unit_amount_decimal"], "1000");
        assert_eq!(price["type"], "one_time");
        assert_eq!(price["recurring"], Value::Null);
        assert_eq!(price["metadata"], json!({"a": "1"}));
        assert!(!price.contains_key("tiers"));
        let decimal = decode("currency=usd&unit_amount_decimal=0012.50").unwrap();
        let price = new_price("price_2", 5, false, "prod_1", &decimal).unwrap();
        assert_eq!(price["unit_amount"], Value::Null);
        assert_eq!(price["unit_amount_decimal"], "12.5");
        let whole = decode("currency=usd&unit_amount_decimal=12.000").unwrap();
        let price = new_price("price_3", 5, false, "prod_1", &whole).unwrap();
        assert_eq!(price["unit_amount"], 12);
        assert_eq!(price["unit_amount_decimal"], "12");
        let tiered = decode("currency=usd&billing_scheme=tiered&tiers_mode=volume&recurring[interval]=month&tiers[0][up_to]=10&tiers[0][unit_amount]=5&tiers[1][up_to]=inf&tiers[1][flat_amount_decimal]=2.5").unwrap();
        let price = new_price("price_4", 5, false, "prod_1", &tiered).unwrap();
        assert_eq!(price["type"], "recurring");
        assert_eq!(
            price["recurring"],
            json!({"aggregate_usage": null, "interval": "month", "interval_count": 1, "trial_period_days": null, "usage_type": "licensed"})
        );
        assert_eq!(price["unit_amount"], Value::Null);
        assert_eq!(price["tiers_mode"], "volume");
        assert_eq!(
            price["tiers"],
            json!([
                {"flat_amount": null, "flat_amount_decimal": null, "unit_amount": 5, "unit_amount_decimal": "5", "up_to": 10},
                {"flat_amount": null, "flat_amount_decimal": "2.5", "unit_amount": null, "unit_amount_decimal": null, "up_to": null}
            ])
        );
        let keys: Vec<&String> = price.keys().collect();
        let position = |key: &str| keys.iter().position(|k| *k == key).unwrap();
        assert_eq!(position("tiers"), position("tax_behavior") + 1);
        assert!(!price_for_response(&price, false).contains_key("tiers"));
        assert!(price_for_response(&price, true).contains_key("tiers"));
    }

    #[test]
    fn price_update_semantics() {
        let params = decode("currency=usd&unit_amount=1&lookup_key=k&nickname=n").unwrap();
        let mut price = new_price("price_1", 5, false, "prod_1", &params).unwrap();
        apply_price_update(
            &mut price,
            &decode("lookup_key=&nickname=&active=false&tax_behavior=inclusive&metadata[x]=1")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(price["lookup_key"], Value::Null);
        assert_eq!(price["nickname"], Value::Null);
        assert_eq!(price["active"], false);
        assert_eq!(price["tax_behavior"], "inclusive");
        assert_eq!(price["metadata"], json!({"x": "1"}));
        assert_eq!(price["unit_amount"], 1, "immutable fields stay");
    }

    #[test]
    fn decimals_are_normalized() {
        for (text, normalized) in [
            ("0", "0"),
            ("000", "0"),
            ("0.50", "0.5"),
            ("10.000", "10"),
            ("007.25", "7.25"),
            ("0.000000000001", "0.000000000001"),
        ] {
            assert_eq!(normalize_decimal(text), normalized, "{text}");
        }
    }
}
