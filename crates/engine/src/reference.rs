//! References: a field that holds another record's id (a price's `product`), mapped from that
//! record's key (`--map sku=product(metadata.sku)`). Each chunk's keys are resolved before it
//! is planned, from the account's key index of the referenced object: what ferry itself wrote
//! and what consistent listings found, never search. A key no record carries, or more than one
//! record carries, rejects the row with a reason that names the key and the fix.
//!
//! A record's hash stays the hash of its row (the key, not the id it resolved to), so an
//! unchanged row costs no lookup; its payload, which the snapshot keeps to compare the next
//! change with, holds the resolved id, as Stripe does.

use crate::index::KeyIndex;
use crate::prepare::{PreparedRecord, RejectedRow, ValidatedSync};
use crate::EngineError;
use ferry_core::FieldValue;
use ferry_destinations::stripe::fields::Reference;
use ferry_destinations::stripe::{stripe_object, StripeService};
use ferry_state::StateStore;
use std::collections::{BTreeSet, HashMap};

/// The reference fields of one sync, with the key index of each referenced object once a
/// chunk needed it.
pub(crate) struct References<'a> {
    store: &'a StateStore,
    stripe: &'a StripeService,
    targets: Vec<Target<'a>>,
}

struct Target<'a> {
    /// The payload path the id goes to (`product`).
    path: String,
    /// The column, constant or template that gives the key, for messages.
    column: String,
    reference: Reference,
    /// For a list (a subscription's `items`, an invoice's `lines`), the item field holding
    /// the key (`price`).
    within: Option<String>,
    index: Option<KeyIndex<'a>>,
}

impl<'a> References<'a> {
    pub(crate) fn new(
        store: &'a StateStore,
        stripe: &'a StripeService,
        sync: &ValidatedSync,
    ) -> References<'a> {
        let targets = sync
            .mappings
            .iter()
            .filter_map(|mapping| {
                let reference = (**mapping.field.reference.as_ref()?).clone();
                // A line's field (`lines.price`) is resolved in the record's folded lines.
                let (path, within) = match mapping.field.path.split_once('.') {
                    Some((list, field)) if list == crate::lines::LINES => {
                        (list.to_string(), Some(field.to_string()))
                    }
                    _ => (
                        mapping.field.path.clone(),
                        reference.within.map(str::to_string),
                    ),
                };
                Some(Target {
                    path,
                    column: mapping.column.clone(),
                    reference,
                    within,
                    index: None,
                })
            })
            .collect();
        References {
            store,
            stripe,
            targets,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Puts the referenced ids into the records' payloads; the records whose reference does not
    /// resolve come back as rejections instead.
    pub(crate) async fn resolve<T>(
        &mut self,
        items: Vec<T>,
        record_of: impl Fn(&mut T) -> &mut PreparedRecord,
    ) -> Result<(Vec<T>, Vec<RejectedRow>), EngineError> {
        let mut items: Vec<Option<T>> = items.into_iter().map(Some).collect();
        let mut rejected = Vec::new();
        for target in &mut self.targets {
            let keys: BTreeSet<String> = items
                .iter_mut()
                .flatten()
                .flat_map(|item| keys_of(record_of(item), target))
                .collect();
            if keys.is_empty() {
                continue;
            }
            let keys: Vec<String> = keys.into_iter().collect();
            let found = target.lookup(self.store, self.stripe, &keys).await?;
            for slot in &mut items {
                let Some(item) = slot else { continue };
                let record = record_of(item);
                let resolved = match &target.within {
                    None => match key_of(record, target) {
                        Some(key) => resolution(target, &key, found.get(&key)),
                        None => continue,
                    },
                    Some(within) => match record.payload.get(&target.path) {
                        Some(FieldValue::Text(list)) => {
                            resolve_list(target, within, list, |key| found.get(key))
                        }
                        _ => continue,
                    },
                };
                match resolved {
                    Ok(value) => {
                        record
                            .payload
                            .fields
                            .insert(target.path.clone(), FieldValue::Text(value));
                    }
                    Err(reason) => {
                        rejected.push(RejectedRow {
                            row_number: record.row_number,
                            key: record.key.clone(),
                            reason,
                        });
                        *slot = None;
                    }
                }
            }
        }
        let resolved = items
            .into_iter()
            .flatten()
            .map(|mut item| {
                let record = record_of(&mut item);
                // The hash stays the row's (see the module's comment).
                record.payload_json = record.payload.canonical_json();
                item
            })
            .collect();
        Ok((resolved, rejected))
    }
}

impl<'a> Target<'a> {
    /// The ids of the records carrying each key, from the index, kept fresh once per run.
    async fn lookup(
        &mut self,
        store: &'a StateStore,
        stripe: &'a StripeService,
        keys: &[String],
    ) -> Result<HashMap<String, Vec<String>>, EngineError> {
        if self.index.is_none() {
            let object = stripe_object(self.reference.object);
            let index = KeyIndex::open(store, stripe, object, &self.reference.key).await?;
            let refresh = index.refresh_if_stale().await?;
            tracing::debug!(
                ?refresh,
                object = object.schema().object,
                "The index of referenced records is up to date."
            );
            self.index = Some(index);
        }
        let index = self.index.as_ref().expect("opened above");
        index.lookup(&self.reference.key, keys).await
    }
}

/// The key a record's reference field holds, as matched; `None` when the field is not set or
/// is being unset.
fn key_of(record: &PreparedRecord, target: &Target<'_>) -> Option<String> {
    match record.payload.get(&target.path) {
        Some(FieldValue::Text(key)) => {
            let key = target.reference.key.normalize(key);
            (!key.is_empty()).then_some(key)
        }
        _ => None,
    }
}

/// The keys a record's reference field holds: one, or one per item of a list.
fn keys_of(record: &PreparedRecord, target: &Target<'_>) -> Vec<String> {
    let Some(within) = &target.within else {
        return key_of(record, target).into_iter().collect();
    };
    let Some(FieldValue::Text(list)) = record.payload.get(&target.path) else {
        return Vec::new();
    };
    list_items(list)
        .iter()
        .filter_map(|item| item.get(within.as_str())?.as_str())
        .map(|key| target.reference.key.normalize(key))
        .filter(|key| !key.is_empty())
        .collect()
}

/// The items of a list field's canonical JSON text.
fn list_items(list: &str) -> Vec<serde_json::Value> {
    match serde_json::from_str(list) {
        Ok(serde_json::Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// A list (a subscription's `items`) with each item's key in `within` (`price`) replaced by
/// the id of the one record that carries it, or why the row cannot be synced (naming the item).
fn resolve_list<'k>(
    target: &Target<'_>,
    within: &str,
    list: &str,
    found: impl Fn(&str) -> Option<&'k Vec<String>>,
) -> Result<String, String> {
    let mut items = list_items(list);
    for (index, item) in items.iter_mut().enumerate() {
        let Some(key) = item.get(within).and_then(|key| key.as_str()) else {
            continue;
        };
        let key = target.reference.key.normalize(key);
        let id = resolution(target, &key, found(&key)).map_err(|reason| {
            let path = &target.path;
            let reason = reason
                .strip_prefix(&format!("{path}: "))
                .unwrap_or(&reason)
                .to_string();
            format!("{path}, item {} ({within}): {reason}", index + 1)
        })?;
        item[within] = serde_json::Value::String(id);
    }
    Ok(serde_json::Value::Array(items).to_string())
}

/// The one id that carries `key`, or why the row cannot be synced.
fn resolution(target: &Target<'_>, key: &str, ids: Option<&Vec<String>>) -> Result<String, String> {
    let schema = target.reference.schema();
    let key_path = &target.reference.key.field.path;
    match ids.map(Vec::as_slice).unwrap_or_default() {
        [id] => Ok(id.clone()),
        [] => Err(format!(
            "{path}: no Stripe {object} has {key_path} `{key}` (from {column}): sync {plural} first, or correct the value",
            path = target.path,
            object = schema.object,
            column = target.column,
            plural = schema.plural,
        )),
        several => Err(format!(
            "{path}: {count} Stripe {plural} have {key_path} `{key}` ({ids}): a reference must name one; give each {object} its own key in Stripe",
            path = target.path,
            count = several.len(),
            plural = schema.plural,
            ids = several.join(", "),
            object = schema.object,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_destinations::stripe::fields::parse_field;
    use ferry_stripe_wire::price::PRICE;

    fn target(field: &str) -> Target<'static> {
        let mapped = parse_field(&PRICE, field).unwrap();
        Target {
            path: mapped.path.clone(),
            column: "sku".into(),
            reference: *mapped.reference.unwrap(),
            within: None,
            index: None,
        }
    }

    #[test]
    fn a_key_resolves_to_the_one_record_that_carries_it() {
        let by_sku = target("product(metadata.sku)");
        let one = vec!["prod_1".to_string()];
        let two = vec!["prod_1".to_string(), "prod_2".to_string()];
        assert_eq!(
            resolution(&by_sku, "gold", Some(&one)),
            Ok("prod_1".to_string())
        );
        assert_eq!(
            resolution(&by_sku, "gold", None),
            Err("product: no Stripe product has metadata.sku `gold` (from sku): sync products first, or correct the value".to_string())
        );
        assert_eq!(
            resolution(&by_sku, "gold", Some(&two)),
            Err("product: 2 Stripe products have metadata.sku `gold` (prod_1, prod_2): a reference must name one; give each product its own key in Stripe".to_string())
        );
    }

    #[test]
    fn keys_are_matched_as_the_referenced_object_matches_them() {
        let by_id = target("product(id)");
        let mut record = PreparedRecord::new(
            1,
            "k".into(),
            "k".into(),
            ferry_core::Payload {
                fields: [(
                    "product".to_string(),
                    FieldValue::Text(" gold-plan ".into()),
                )]
                .into_iter()
                .collect(),
            },
        );
        assert_eq!(key_of(&record, &by_id).as_deref(), Some("gold-plan"));
        record
            .payload
            .fields
            .insert("product".into(), FieldValue::Clear);
        assert_eq!(key_of(&record, &by_id), None);
    }
}
