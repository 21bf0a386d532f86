//! Pure translation between ferry payloads (dotted field paths) and Stripe's nested params and
//! objects, for any object: what is sent whole, what cannot be unset and which top-level fields
//! exist all come from the object's parameter table. No IO: the service sends what these
//! functions build.

use crate::stripe::fields::{canonical_object_list, FieldKind, ListSource};
use ferry_core::{FieldValue, Payload};
use ferry_stripe_wire::params::{item_name, Param, ParamKind};
use ferry_stripe_wire::ObjectSchema;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// The params that create a record: every mapped field with a value (nothing to clear yet).
pub fn create_params(schema: &'static ObjectSchema, payload: &Payload) -> Map<String, Json> {
    let mut params = Map::new();
    for (path, value) in &payload.fields {
        if *value != FieldValue::Clear {
            insert_path(&mut params, path, field_json(schema, path, value));
        }
    }
    params
}

/// The params that bring an existing record from its baseline to `payload`: the `changed`
/// fields, widened to the groups Stripe replaces whole (a partial `address` would blank the
/// parts not sent); metadata keys one by one, so keys ferry does not map stay.
pub fn update_params(
    schema: &'static ObjectSchema,
    payload: &Payload,
    changed: &[String],
) -> Map<String, Json> {
    let group_of = |path: &str| {
        if path.starts_with("metadata.") {
            return None;
        }
        schema.field(path).and_then(|field| field.whole_group)
    };
    let mut params = Map::new();
    let mut changed_groups: Vec<&str> = changed.iter().filter_map(|p| group_of(p)).collect();
    changed_groups.dedup();
    for group in &changed_groups {
        let parts: Vec<(&String, &FieldValue)> = payload
            .fields
            .iter()
            .filter(|(path, _)| group_of(path) == Some(group))
            .collect();
        if parts.iter().all(|(_, value)| **value == FieldValue::Clear) {
            params.insert((*group).to_string(), Json::String(String::new()));
        } else {
            for (path, value) in parts {
                insert_path(&mut params, path, field_json(schema, path, value));
            }
        }
    }
    for path in changed {
        if group_of(path).is_some() {
            continue;
        }
        let value = payload
            .get(path)
            .expect("changed fields come from the payload");
        // Stripe cannot unset an integer; a NULL there is left alone.
        let is_integer = schema.field(path).is_some_and(|field| {
            matches!(
                field.param.kind,
                ParamKind::Integer | ParamKind::IntegerRange { .. }
            )
        });
        if *value == FieldValue::Clear && is_integer {
            continue;
        }
        insert_path(&mut params, path, field_json(schema, path, value));
    }
    // How Stripe should carry the update out (`proration_behavior`) goes with every update.
    if !params.is_empty() {
        for (path, value) in &payload.fields {
            if is_request_option(schema, path) && *value != FieldValue::Clear {
                insert_path(&mut params, path, field_json(schema, path, value));
            }
        }
    }
    params
}

/// Whether `path` says how Stripe carries a write out rather than what the record holds
/// (`proration_behavior`): never compared with a record.
pub fn is_request_option(schema: &'static ObjectSchema, path: &str) -> bool {
    !path.starts_with("metadata.")
        && schema
            .field(path)
            .is_some_and(|field| field.param.request_option)
}

/// Whether the record as Stripe returns it holds `path`: not a request option, nor a field
/// Stripe takes without returning (an invoice's `days_until_due`). Comparisons with a record
/// read from Stripe skip the others, which would always look changed.
pub fn held_by_record(schema: &'static ObjectSchema, path: &str) -> bool {
    path.starts_with("metadata.")
        || schema
            .field(path)
            .is_none_or(|field| !field.param.request_option && !field.param.not_returned)
}

/// The lists of `schema` that Stripe changes item by item, each existing item named by its
/// `id` (a subscription's `items`), with the item field that refers to another record
/// (`price`): sent as they are, their items would be added to the list.
fn lists_updated_by_id(
    schema: &'static ObjectSchema,
) -> impl Iterator<Item = (&'static str, &'static str)> {
    schema.params.iter().filter_map(|param| match param.kind {
        ParamKind::ObjectArray { children, .. }
            if children
                .iter()
                .any(|child| child.name == "id" && child.update_only) =>
        {
            let refers = children.iter().find(|child| child.refers_to.is_some())?;
            Some((param.name, refers.name))
        }
        _ => None,
    })
}

/// Whether update `params` change a list item by item (see [`pair_lists`]): the record as
/// Stripe holds it must be read first.
pub fn needs_current_items(schema: &'static ObjectSchema, params: &Map<String, Json>) -> bool {
    lists_updated_by_id(schema).any(|(name, _)| params.contains_key(name))
}

/// Rewrites each list of update `params` that Stripe changes item by item against `record`,
/// the record as Stripe holds it (see [`pair_list_items`]).
pub fn pair_lists(schema: &'static ObjectSchema, params: &mut Map<String, Json>, record: &Json) {
    for (name, refers) in lists_updated_by_id(schema) {
        let Some(Json::Array(wanted)) = params.get(name) else {
            continue;
        };
        let current = record
            .get(name)
            .and_then(|list| list.get("data").or(Some(list)))
            .and_then(Json::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let paired = pair_list_items(wanted, current, refers);
        params.insert(name.to_string(), Json::Array(paired));
    }
}

/// The update of a list Stripe changes item by item: `wanted` is the list the row asks for
/// (ids in place of keys), `current` the list's items as Stripe holds them. An item whose
/// `refers` field (`price`) one current item has keeps that item (its quantity and metadata
/// updated); the other wanted items take over the remaining current items in order (Stripe
/// moves such an item to the new price, prorating it as asked), then are added; current items
/// left over are deleted.
fn pair_list_items(wanted: &[Json], current: &[Json], refers: &str) -> Vec<Json> {
    let id_of = |value: &Json| -> Option<String> {
        match value {
            Json::String(text) => Some(text.clone()),
            Json::Object(record) => record.get("id")?.as_str().map(str::to_string),
            _ => None,
        }
    };
    let current_refers: Vec<Option<String>> = current
        .iter()
        .map(|item| item.get(refers).and_then(id_of))
        .collect();
    let mut taken = vec![false; current.len()];
    let mut kept: Vec<Option<usize>> = wanted
        .iter()
        .map(|item| {
            let target = item.get(refers).and_then(id_of)?;
            let index = (0..current.len())
                .find(|&index| !taken[index] && current_refers[index].as_ref() == Some(&target))?;
            taken[index] = true;
            Some(index)
        })
        .collect();
    for slot in kept.iter_mut().filter(|slot| slot.is_none()) {
        if let Some(index) = (0..current.len()).find(|&index| !taken[index]) {
            taken[index] = true;
            *slot = Some(index);
        }
    }
    let mut items: Vec<Json> = wanted
        .iter()
        .zip(&kept)
        .map(|(item, slot)| {
            let mut item = item.as_object().cloned().unwrap_or_default();
            if let Some(id) = slot.and_then(|index| current[index].get("id").cloned()) {
                item.insert("id".to_string(), id);
            }
            Json::Object(item)
        })
        .collect();
    for (index, item) in current.iter().enumerate() {
        if let (false, Some(id)) = (taken[index], item.get("id")) {
            items.push(serde_json::json!({ "id": id, "deleted": true }));
        }
    }
    items
}

/// A record as Stripe returns it, flattened to the paths ferry maps, for diffing: the object's
/// top-level parameters only (no `id`, `created`, …).
pub fn record_to_fields(
    schema: &'static ObjectSchema,
    record: &Json,
) -> BTreeMap<String, FieldValue> {
    let mut fields = BTreeMap::new();
    let Some(object) = record.as_object() else {
        return fields;
    };
    for (name, value) in object {
        if schema.params.iter().any(|param| param.name == name) {
            flatten(schema, value, name, &mut fields);
        }
    }
    fields
}

/// A decimal number as ferry sends it and reads it back: the shortest text that parses to the
/// same `f64` (`2.50` → `2.5`, `2.0` → `2`), which is also what Stripe's JSON holds.
pub fn number_text(number: f64) -> String {
    number.to_string()
}

/// `address.line1` → `address[line1]`, the name Stripe uses in `param` of its errors.
pub fn param_name(path: &str) -> String {
    let mut parts = path.split('.');
    let mut name = parts.next().unwrap_or_default().to_string();
    for part in parts {
        name.push('[');
        name.push_str(part);
        name.push(']');
    }
    name
}

/// `metadata[plan]` → `metadata.plan`; the inverse of [`param_name`].
pub fn param_path(param: &str) -> String {
    param.replace("][", ".").replace('[', ".").replace(']', "")
}

fn field_json(schema: &'static ObjectSchema, path: &str, value: &FieldValue) -> Json {
    match value {
        // A list of objects (`tiers`) is kept as its canonical JSON text, which opens with `[`:
        // checked first, so that other text fields (every field of every record sent) skip
        // the lookup in the table.
        FieldValue::Text(text)
            if text.starts_with('[') && object_list_children(schema, path).is_some() =>
        {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
        }
        // Stripe unsets a field sent as the empty string.
        FieldValue::Clear => Json::String(String::new()),
        // A list of named items: `["Fast"]` is sent as `[{"name": "Fast"}]`.
        FieldValue::List(items) => match list_item_name(schema, path) {
            Some(name) => Json::Array(
                items
                    .iter()
                    .map(|item| serde_json::json!({ name: item }))
                    .collect(),
            ),
            None => value.to_json(),
        },
        other => other.to_json(),
    }
}

/// The item field of a top-level parameter that is a list of named items (see
/// `ferry_stripe_wire::params::item_name`).
fn list_item_name(schema: &'static ObjectSchema, path: &str) -> Option<&'static str> {
    schema
        .params
        .iter()
        .find(|param| param.name == path)
        .and_then(item_name)
}

/// The item parameters of a field that is a list of objects (a price's `tiers`).
fn object_list_children(schema: &'static ObjectSchema, path: &str) -> Option<&'static [Param]> {
    match FieldKind::of(schema.field(path)?.param) {
        FieldKind::ObjectList { children } => Some(children),
        _ => None,
    }
}

fn insert_path(params: &mut Map<String, Json>, path: &str, value: Json) {
    // Metadata keys may contain dots; only the first dot after `metadata` nests.
    let parts: Vec<&str> = match path.strip_prefix("metadata.") {
        Some(key) => vec!["metadata", key],
        None => path.split('.').collect(),
    };
    let mut object = params;
    for part in &parts[..parts.len() - 1] {
        let entry = object
            .entry(part.to_string())
            .or_insert_with(|| Json::Object(Map::new()));
        if !entry.is_object() {
            *entry = Json::Object(Map::new());
        }
        object = entry.as_object_mut().expect("just made an object");
    }
    object.insert(parts[parts.len() - 1].to_string(), value);
}

/// Reads a record's values in the form ferry maps them to (see `fields::MappedField::convert`),
/// so that an unchanged field compares equal: booleans and decimal numbers are text.
fn flatten(
    schema: &'static ObjectSchema,
    json: &Json,
    path: &str,
    fields: &mut BTreeMap<String, FieldValue>,
) {
    match json {
        // A list Stripe returns as a list object (a subscription's `items`).
        Json::Object(object)
            if object.get("object").and_then(Json::as_str) == Some("list")
                && object_list_children(schema, path).is_some() =>
        {
            if let Some(data) = object.get("data") {
                flatten(schema, data, path, fields);
            }
        }
        // Another record Stripe returns expanded (an invoice item's `price`): its id is
        // what the field holds.
        Json::Object(object)
            if schema
                .field(path)
                .is_some_and(|field| field.param.refers_to.is_some()) =>
        {
            if let Some(id) = object.get("id").and_then(Json::as_str) {
                fields.insert(path.to_string(), FieldValue::Text(id.to_string()));
            }
        }
        Json::Object(object) => {
            for (name, value) in object {
                flatten(schema, value, &format!("{path}.{name}"), fields);
            }
        }
        Json::Null => {}
        Json::Array(_) if object_list_children(schema, path).is_some() => {
            let children = object_list_children(schema, path).expect("checked by the guard");
            if let Ok(text) = canonical_object_list(children, json, ListSource::Stripe) {
                fields.insert(path.to_string(), FieldValue::Text(text));
            }
        }
        Json::Array(items) if list_item_name(schema, path).is_some() => {
            let name = list_item_name(schema, path).expect("checked by the guard");
            let names = items
                .iter()
                .filter_map(|item| item.get(name)?.as_str().map(str::to_string))
                .collect();
            fields.insert(path.to_string(), FieldValue::List(names));
        }
        Json::Bool(flag) => {
            fields.insert(path.to_string(), FieldValue::Text(flag.to_string()));
        }
        Json::Number(number)
            if number.as_i64().is_none()
                || schema
                    .field(path)
                    .is_some_and(|field| matches!(field.param.kind, ParamKind::Number)) =>
        {
            if let Some(number) = number.as_f64() {
                fields.insert(path.to_string(), FieldValue::Text(number_text(number)));
            }
        }
        other => {
            if let Some(field) = FieldValue::from_json(other) {
                fields.insert(path.to_string(), field);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use ferry_stripe_wire::customer::CUSTOMER;
    use ferry_stripe_wire::form;
    use ferry_stripe_wire::product::PRODUCT;
    use serde_json::json;

    fn payload(fields: &[(&str, FieldValue)]) -> Payload {
        Payload {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn text(s: &str) -> FieldValue {
        FieldValue::Text(s.into())
    }

    #[test]
    fn create_sends_every_value_and_no_clears() {
        let p = payload(&[
            ("email", text("ada@example.com")),
            ("name", text("Ada Lovelace")),
            ("phone", FieldValue::Clear),
            ("address.city", text("London")),
            ("shipping.address.city", text("Paris")),
            ("metadata.plan", text("pro & co")),
            ("metadata.ltv.usd", text("12.5")),
            (
                "preferred_locales",
                FieldValue::List(vec!["en".into(), "fr".into()]),
            ),
            ("balance", FieldValue::Integer(-500)),
        ]);
        expect![[r#"address[city]=London&balance=-500&email=ada%40example.com&metadata[ltv.usd]=12.5&metadata[plan]=pro+%26+co&name=Ada+Lovelace&preferred_locales[0]=en&preferred_locales[1]=fr&shipping[address][city]=Paris"#]]
        .assert_eq(&form::encode(&create_params(&CUSTOMER, &p)).replace("%5B", "[").replace("%5D", "]"));
    }

    #[test]
    fn update_sends_changed_fields_whole_groups_and_single_metadata_keys() {
        let p = payload(&[
            ("name", text("Ada")),
            ("address.line1", text("1 Main St")),
            ("address.city", text("Paris")),
            ("metadata.plan", FieldValue::Clear),
            ("metadata.seats", text("3")),
            ("balance", FieldValue::Clear),
        ]);
        let changed = vec![
            "address.city".to_string(),
            "metadata.plan".to_string(),
            "balance".to_string(),
        ];
        expect![[r#"address[city]=Paris&address[line1]=1+Main+St&metadata[plan]="#]].assert_eq(
            &form::encode(&update_params(&CUSTOMER, &p, &changed))
                .replace("%5B", "[")
                .replace("%5D", "]"),
        );

        let cleared = payload(&[
            ("address.line1", FieldValue::Clear),
            ("address.city", FieldValue::Clear),
        ]);
        expect![[r#"address="#]].assert_eq(&form::encode(&update_params(
            &CUSTOMER,
            &cleared,
            &["address.city".into()],
        )));
    }

    /// Tiers from a model column and tiers as Stripe returns them (every amount twice, the
    /// last `up_to` null) read as the same text, so unchanged tiers send nothing; they are
    /// sent as an array of objects.
    #[test]
    fn tiers_read_from_a_model_and_from_stripe_compare_equal() {
        use crate::stripe::fields::parse_field;
        use ferry_stripe_wire::price::PRICE;
        let tiers = parse_field(&PRICE, "tiers").unwrap();
        let from_model = tiers
            .convert(&ferry_core::Value::Text(
                r#"[{"up_to": 10, "unit_amount": 500}, {"up_to": null, "unit_amount_decimal": "4.50", "flat_amount": "100"}]"#.into(),
            ))
            .unwrap()
            .unwrap();
        let stripe_price = serde_json::json!({
            "id": "price_1", "currency": "usd", "billing_scheme": "tiered", "tiers_mode": "graduated",
            "tiers": [
                {"flat_amount": null, "flat_amount_decimal": null, "unit_amount": 500, "unit_amount_decimal": "500", "up_to": 10},
                {"flat_amount": 100, "flat_amount_decimal": "100", "unit_amount": null, "unit_amount_decimal": "4.5", "up_to": null}
            ]
        });
        assert_eq!(
            record_to_fields(&PRICE, &stripe_price).get("tiers"),
            Some(&from_model)
        );
        let params = create_params(&PRICE, &payload(&[("tiers", from_model)]));
        expect![["tiers[0][unit_amount_decimal]=500&tiers[0][up_to]=10&tiers[1][flat_amount_decimal]=100&tiers[1][unit_amount_decimal]=4.5&tiers[1][up_to]=inf"]]
            .assert_eq(&form::encode(&params));

        let refused = |text: &str| {
            tiers
                .convert(&ferry_core::Value::Text(text.into()))
                .unwrap_err()
        };
        expect![["item 1 has `price`, which is not one of flat_amount, flat_amount_decimal, unit_amount, unit_amount_decimal, up_to"]]
            .assert_eq(&refused(r#"[{"up_to": 1, "price": 5}]"#));
        expect![["item 1 has both unit_amount and unit_amount_decimal; give one of them"]]
            .assert_eq(&refused(
                r#"[{"up_to": 1, "unit_amount": 5, "unit_amount_decimal": "5"}]"#,
            ));
        expect![["item 2: up_to is `\"ten\"`, which is not a whole number or inf"]].assert_eq(
            &refused(r#"[{"up_to": 1, "unit_amount": 5}, {"up_to": "ten"}]"#),
        );
        expect![["is `5 per seat`, which is not a JSON array of objects"]]
            .assert_eq(&refused("5 per seat"));
    }

    /// A subscription's items are changed in place: an item keeps its id when its price
    /// stays, takes over a leftover item when its price is new, is added past those, and the
    /// items left over are deleted.
    #[test]
    fn list_items_are_paired_with_the_items_stripe_holds() {
        use ferry_stripe_wire::subscription::SUBSCRIPTION;
        let current = json!({"items": {"object": "list", "data": [
            {"id": "si_a", "price": {"id": "price_pro", "object": "price"}, "quantity": 1},
            {"id": "si_b", "price": {"id": "price_seat", "object": "price"}, "quantity": 5},
            {"id": "si_c", "price": {"id": "price_old", "object": "price"}, "quantity": 1},
        ]}});
        let paired = |wanted: Json| {
            let mut params = Map::from_iter([("items".to_string(), wanted)]);
            assert!(needs_current_items(&SUBSCRIPTION, &params));
            pair_lists(&SUBSCRIPTION, &mut params, &current);
            form::encode(&params)
        };
        // The seats change; the pro item stays; the old item moves to the new price.
        expect![["items[0][price]=price_seat&items[0][quantity]=7&items[0][id]=si_b&items[1][price]=price_pro&items[1][quantity]=1&items[1][id]=si_a&items[2][price]=price_new&items[2][quantity]=1&items[2][id]=si_c"]]
            .assert_eq(&paired(json!([
                {"price": "price_seat", "quantity": 7},
                {"price": "price_pro", "quantity": 1},
                {"price": "price_new", "quantity": 1},
            ])));
        // Fewer items: the rest are deleted.
        expect![["items[0][price]=price_pro&items[0][quantity]=2&items[0][id]=si_a&items[1][id]=si_b&items[1][deleted]=true&items[2][id]=si_c&items[2][deleted]=true"]]
            .assert_eq(&paired(json!([{"price": "price_pro", "quantity": 2}])));
        // More items: the extra one is added.
        expect![["items[0][price]=price_x&items[0][id]=si_a&items[1][price]=price_y&items[1][id]=si_b&items[2][price]=price_z&items[2][id]=si_c&items[3][price]=price_w"]]
            .assert_eq(&paired(json!([
                {"price": "price_x"}, {"price": "price_y"}, {"price": "price_z"}, {"price": "price_w"}
            ])));
        // A list that did not change is not sent, and nothing needs reading.
        assert!(!needs_current_items(&SUBSCRIPTION, &Map::new()));
        // Items as Stripe returns them read as the model writes them.
        let fields = record_to_fields(&SUBSCRIPTION, &current);
        expect![[r#"Some(Text("[{\"price\":\"price_pro\",\"quantity\":1},{\"price\":\"price_seat\",\"quantity\":5},{\"price\":\"price_old\",\"quantity\":1}]"))"#]]
            .assert_eq(&format!("{:?}", fields.get("items")));
    }

    /// How a write is carried out (`proration_behavior`) goes with every update that changes
    /// something, and never alone.
    #[test]
    fn request_options_go_with_updates_that_change_something() {
        use ferry_stripe_wire::subscription::SUBSCRIPTION;
        let fields = payload(&[
            ("description", text("Gold")),
            ("proration_behavior", text("none")),
        ]);
        assert!(is_request_option(&SUBSCRIPTION, "proration_behavior"));
        assert!(!is_request_option(
            &SUBSCRIPTION,
            "metadata.proration_behavior"
        ));
        expect!["description=Gold&proration_behavior=none"].assert_eq(&form::encode(
            &update_params(&SUBSCRIPTION, &fields, &["description".to_string()]),
        ));
        assert!(update_params(&SUBSCRIPTION, &fields, &[]).is_empty());
    }

    #[test]
    fn records_flatten_to_field_paths() {
        let customer = serde_json::json!({
            "id": "cus_1", "object": "customer", "email": "a@b.co", "name": null,
            "address": {"city": "Paris", "line1": null},
            "metadata": {"plan": "pro"}, "preferred_locales": ["fr"], "balance": 0,
            "invoice_settings": {"footer": null}, "created": 1700000000
        });
        let fields = record_to_fields(&CUSTOMER, &customer);
        let listed: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_json()))
            .collect();
        assert_eq!(
            listed,
            [
                "address.city=\"Paris\"",
                "balance=0",
                "email=\"a@b.co\"",
                "metadata.plan=\"pro\"",
                "preferred_locales=[\"fr\"]"
            ]
        );
        // Booleans and decimal numbers read as the text ferry maps them to.
        let product = serde_json::json!({
            "id": "gold", "object": "product", "name": "Gold", "active": false,
            "package_dimensions": {"height": 2.0, "length": 1.5, "weight": 3, "width": 0.25},
            "created": 1700000000
        });
        let listed: Vec<String> = record_to_fields(&PRODUCT, &product)
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_json()))
            .collect();
        expect![[r#"active="false" id="gold" name="Gold" package_dimensions.height="2" package_dimensions.length="1.5" package_dimensions.weight="3" package_dimensions.width="0.25""#]]
            .assert_eq(&listed.join(" "));

        // A list of named items goes out as objects and comes back as the list of names.
        let features = payload(&[(
            "marketing_features",
            FieldValue::List(vec!["Fast".into(), "Safe & sound".into()]),
        )]);
        expect![[r#"marketing_features[0][name]=Fast&marketing_features[1][name]=Safe+%26+sound"#]]
            .assert_eq(
                &form::encode(&create_params(&PRODUCT, &features))
                    .replace("%5B", "[")
                    .replace("%5D", "]"),
            );
        let record = serde_json::json!({
            "id": "gold", "marketing_features": [{"name": "Fast"}, {"name": "Safe & sound"}]
        });
        assert_eq!(
            record_to_fields(&PRODUCT, &record).get("marketing_features"),
            features.get("marketing_features")
        );
        assert_eq!(
            param_name("shipping.address.city"),
            "shipping[address][city]"
        );
        assert_eq!(
            param_path("shipping[address][city]"),
            "shipping.address.city"
        );
    }
}
