//! The customer object as Stripe returns it, and how validated create/update params change it.

use serde_json::{json, Map, Value};

use ferry_stripe_wire::customer::{metadata_as_object, METADATA_MAX_KEYS};
use ferry_stripe_wire::form::leaf_text;
use ferry_stripe_wire::{ParamError, Problem};

/// A new customer with Stripe's defaults, keys in Stripe's order.
pub(crate) fn new_customer(
    id: &str,
    created: i64,
    livemode: bool,
    invoice_prefix: &str,
) -> Map<String, Value> {
    let customer = json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "business_name": null,
        "created": created,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "discount": null,
        "email": null,
        "individual_name": null,
        "invoice_prefix": invoice_prefix,
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null
        },
        "livemode": livemode,
        "metadata": {},
        "name": null,
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null
    });
    match customer {
        Value::Object(object) => object,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// Applies params that passed `validate_customer_params` to a customer: fields not sent stay,
/// metadata merges (`metadata[k]=` deletes a key, `metadata=` all), `address=`, `shipping=`
/// and `tax_exempt=` clear. `address` and `shipping` are replaced as a whole (sub-fields not sent
/// become null); `invoice_settings` merges per sub-field. `tax` and `expand` change nothing
/// stored. Fails only when the merged metadata would exceed 50 keys.
pub(crate) fn apply_params(
    customer: &mut Map<String, Value>,
    params: &Map<String, Value>,
) -> Result<(), ParamError> {
    for (name, value) in params {
        let text = leaf_text(value);
        let is_empty = text.as_deref() == Some("");
        match name.as_str() {
            "email" | "name" | "phone" | "description" | "test_clock" => {
                customer.insert(name.clone(), Value::String(text_of(value)));
            }
            "business_name" | "individual_name" => {
                let stored = if is_empty {
                    Value::Null
                } else {
                    Value::String(text_of(value))
                };
                customer.insert(name.clone(), stored);
            }
            "balance" | "next_invoice_sequence" => {
                customer.insert(name.clone(), json!(integer_of(value)));
            }
            "invoice_prefix" => {
                customer.insert(name.clone(), Value::String(text_of(value)));
            }
            "tax_exempt" => {
                let stored = if is_empty {
                    "none".to_owned()
                } else {
                    text_of(value)
                };
                customer.insert(name.clone(), Value::String(stored));
            }
            "address" => {
                let stored = if is_empty {
                    Value::Null
                } else {
                    address_object(value)
                };
                customer.insert(name.clone(), stored);
            }
            "shipping" => {
                let stored = if is_empty {
                    Value::Null
                } else {
                    json!({
                        "address": address_object(&value["address"]),
                        "name": value.get("name").map(text_of),
                        "phone": value.get("phone").map(text_of),
                    })
                };
                customer.insert(name.clone(), stored);
            }
            "preferred_locales" => {
                let locales: Vec<Value> = match value {
                    Value::Array(items) => items
                        .iter()
                        .map(|item| Value::String(text_of(item)))
                        .collect(),
                    _ => Vec::new(),
                };
                customer.insert(name.clone(), Value::Array(locales));
            }
            "metadata" => merge_metadata(customer, value, is_empty)?,
            "invoice_settings" => merge_invoice_settings(customer, value),
            // `tax` only feeds Stripe Tax and `expand` only shapes responses.
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn text_of(value: &Value) -> String {
    leaf_text(value)
        .map(|text| text.into_owned())
        .unwrap_or_default()
}

fn integer_of(value: &Value) -> i64 {
    match value {
        Value::Number(number) => number.as_i64().unwrap_or_default(),
        _ => text_of(value).parse().unwrap_or_default(),
    }
}

fn address_object(value: &Value) -> Value {
    let field = |name: &str| value.get(name).map(text_of);
    json!({
        "city": field("city"),
        "country": field("country"),
        "line1": field("line1"),
        "line2": field("line2"),
        "postal_code": field("postal_code"),
        "state": field("state"),
    })
}

/// Merges sent metadata into an object's (`metadata[k]=` deletes a key, `metadata=` all of
/// them); fails when the merged metadata would exceed 50 keys.
pub(crate) fn merge_metadata(
    customer: &mut Map<String, Value>,
    value: &Value,
    clear_all: bool,
) -> Result<(), ParamError> {
    let mut merged = match customer.get("metadata") {
        Some(Value::Object(existing)) if !clear_all => existing.clone(),
        _ => Map::new(),
    };
    for (key, entry) in metadata_as_object(value).unwrap_or_default() {
        let text = text_of(&entry);
        if text.is_empty() {
            merged.remove(&key);
        } else {
            merged.insert(key, Value::String(text));
        }
    }
    if merged.len() > METADATA_MAX_KEYS {
        return Err(ParamError::new(
            "metadata",
            Problem::TooManyMetadataKeys {
                count: merged.len(),
            },
        ));
    }
    customer.insert("metadata".to_owned(), Value::Object(merged));
    Ok(())
}

fn merge_invoice_settings(customer: &mut Map<String, Value>, value: &Value) {
    let Value::Object(sent) = value else {
        return;
    };
    let settings = customer
        .entry("invoice_settings")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(settings) = settings else {
        return;
    };
    for (name, setting) in sent {
        let stored = match (name.as_str(), setting) {
            ("custom_fields", Value::Array(fields)) => Value::Array(
                fields
                    .iter()
                    .map(|field| {
                        json!({
                            "name": field.get("name").map(text_of),
                            "value": field.get("value").map(text_of),
                        })
                    })
                    .collect(),
            ),
            ("custom_fields", _) => Value::Null,
            _ => Value::String(text_of(setting)),
        };
        settings.insert(name.clone(), stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_stripe_wire::form::decode;

    fn applied(customer: &mut Map<String, Value>, body: &str) -> Result<(), ParamError> {
        apply_params(customer, &decode(body).unwrap())
    }

    #[test]
    fn update_semantics() {
        let mut customer = new_customer("cus_1", 1, false, "ABCD1234");
        applied(
            &mut customer,
            "email=a%40b.co&metadata[a]=1&metadata[b]=2&address[city]=Paris&tax_exempt=exempt",
        )
        .unwrap();
        applied(&mut customer, "metadata[a]=&metadata[c]=3&name=Ann").unwrap();
        assert_eq!(customer["email"], "a@b.co");
        assert_eq!(customer["metadata"], json!({"b": "2", "c": "3"}));
        assert_eq!(customer["address"]["city"], "Paris");
        assert_eq!(customer["address"]["line1"], Value::Null);
        applied(&mut customer, "metadata=&address=&tax_exempt=").unwrap();
        assert_eq!(customer["metadata"], json!({}));
        assert_eq!(customer["address"], Value::Null);
        assert_eq!(customer["tax_exempt"], "none");
        assert_eq!(customer["name"], "Ann");
    }

    #[test]
    fn merged_metadata_over_fifty_keys_is_rejected() {
        let mut customer = new_customer("cus_1", 1, false, "ABCD1234");
        let fifty: Vec<String> = (0..50)
            .map(|index| format!("metadata[k{index}]=v"))
            .collect();
        applied(&mut customer, &fifty.join("&")).unwrap();
        let error = applied(&mut customer, "metadata[one_more]=v").unwrap_err();
        assert_eq!(
            error,
            ParamError::new("metadata", Problem::TooManyMetadataKeys { count: 51 })
        );
    }
}
