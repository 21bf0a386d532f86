//! What ferry knows about one kind of Stripe object, as data: its endpoints, its parameter
//! table, and the fields a mapping key may use. One static [`ObjectSchema`] per object
//! (`customer::CUSTOMER`, …) drives validation, encoding, the CLI's and the UI's field lists and
//! the emulator's parameter checks.

use serde_json::{Map, Value};
use std::sync::OnceLock;

use crate::param_error::ParamError;
use crate::params::{mappable_fields, validate_params, FieldSpec, Param, ParamKind};

/// Rules between parameters that a table cannot say (a price needs `product` or `product_data`,
/// not both), checked after every parameter passed on its own: `(params, for_update)`.
pub type ParamRules = fn(&Map<String, Value>, bool) -> Result<(), ParamError>;

#[derive(Debug)]
pub struct ObjectSchema {
    /// Stripe's `object` value: `customer`.
    pub object: &'static str,
    /// For people: `Customer`.
    pub label: &'static str,
    /// For people, and in Stripe's dashboard URLs: `customers`.
    pub plural: &'static str,
    /// `/v1/customers`: create with POST, list with GET, one record under `/{id}`.
    pub collection_path: &'static str,
    /// The writable parameters of create and update.
    pub params: &'static [Param],
    /// The fields besides `metadata.KEY` that can identify a record (a customer's `email`).
    pub key_fields: &'static [KeyField],
    /// Listed first wherever fields are listed, in this order; the rest follow in table order.
    pub featured_fields: &'static [&'static str],
    /// The path of these records in Stripe's dashboard: `dashboard.stripe.com/{path}/{id}`.
    pub dashboard_path: &'static str,
    /// Rules between parameters, if the object has any (see [`ObjectSchema::validate`]).
    pub rules: Option<ParamRules>,
    /// Fields Stripe returns only when asked with `expand[]` (a price's `tiers`): asked for
    /// whenever a record is read to be compared with its row.
    pub expanded: &'static [&'static str],
    /// [`ObjectSchema::fields`], worked out once: `field` is asked per changed field of every
    /// record compared, and building the list each time cost more than the comparison.
    /// Initialize with `OnceLock::new()`.
    pub fields_once: OnceLock<Vec<FieldSpec>>,
}

/// A standard field that may serve as a mapping key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyField {
    pub path: &'static str,
    /// Keys compare trimmed and ignoring case (emails), else trimmed and exact.
    pub ignore_case: bool,
}

impl ObjectSchema {
    /// Checks create (`for_update = false`) or update params as Stripe does before executing:
    /// each parameter against the table (`params::validate_params`), then the object's rules between
    /// parameters. What needs stored state (does the product exist, is the lookup key taken) is
    /// left to the caller.
    pub fn validate(
        &self,
        params: &Map<String, Value>,
        for_update: bool,
    ) -> Result<(), ParamError> {
        validate_params(self.params, params, for_update)?;
        match self.rules {
            Some(rules) => rules(params, for_update),
            None => Ok(()),
        }
    }

    /// Every mappable field, featured ones first. `metadata` stands for `metadata.KEY`.
    pub fn fields(&self) -> Vec<FieldSpec> {
        self.field_list().to_vec()
    }

    fn field_list(&self) -> &[FieldSpec] {
        self.fields_once.get_or_init(|| {
            let mut fields = mappable_fields(self.params);
            fields.sort_by_key(|field| {
                self.featured_fields
                    .iter()
                    .position(|featured| *featured == field.path)
                    .unwrap_or(usize::MAX)
            });
            fields
        })
    }

    /// The mappable field at `path` (`address.city`); `None` for metadata keys and unknowns.
    pub fn field(&self, path: &str) -> Option<FieldSpec> {
        self.field_list()
            .iter()
            .find(|field| field.path == path && field.path != "metadata")
            .copied()
    }

    pub fn key_field(&self, path: &str) -> Option<&KeyField> {
        self.key_fields.iter().find(|key| key.path == path)
    }

    /// What Stripe needs alongside the `mapped` field paths: for each object parameter that a
    /// mapped field is part of, its required parts that are not mapped (`shipping` needs
    /// `shipping.name` and an address), one problem per such object.
    pub fn missing_companions(&self, mapped: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        missing_companions(self.params, "", mapped, &mut problems);
        problems
    }
}

fn missing_companions(table: &[Param], prefix: &str, mapped: &[&str], problems: &mut Vec<String>) {
    let has_part_under = |path: &str| {
        mapped.iter().any(|m| {
            m.strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    };
    for param in table {
        let ParamKind::Object { children } = param.kind else {
            continue;
        };
        let path = format!("{prefix}{}", param.name);
        if !param.mapped || !has_part_under(&path) {
            continue;
        }
        let (mut parts, mut groups) = (Vec::new(), Vec::new());
        let mut missing = false;
        for child in children.iter().filter(|child| child.required) {
            let child_path = format!("{path}.{}", child.name);
            if matches!(child.kind, ParamKind::Object { .. }) {
                missing |= !has_part_under(&child_path);
                groups.push(format!("at least one {child_path}.* field"));
            } else {
                missing |= !mapped.contains(&child_path.as_str());
                parts.push(child_path);
            }
        }
        parts.extend(groups);
        if missing {
            let listed = match parts.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            };
            problems.push(format!(
                "Stripe needs {listed} whenever {path} is set; map them too"
            ));
        }
        missing_companions(children, &format!("{path}."), mapped, problems);
    }
}

#[cfg(test)]
mod tests {
    use crate::customer::CUSTOMER;
    use crate::product::PRODUCT;

    #[test]
    fn groups_name_the_parts_stripe_needs_with_them() {
        let check = |schema: &super::ObjectSchema, mapped: &[&str]| {
            schema.missing_companions(mapped).join("\n")
        };
        assert_eq!(check(&CUSTOMER, &["email", "address.city"]), "");
        assert_eq!(
            check(&CUSTOMER, &["shipping.address.city"]),
            "Stripe needs shipping.name and at least one shipping.address.* field whenever shipping is set; map them too"
        );
        assert_eq!(
            check(&CUSTOMER, &["shipping.name", "shipping.address.line1"]),
            ""
        );
        assert_eq!(
            check(&PRODUCT, &["name", "package_dimensions.height"]),
            "Stripe needs package_dimensions.height, package_dimensions.length, package_dimensions.weight and package_dimensions.width whenever package_dimensions is set; map them too"
        );
    }

    #[test]
    fn customer_fields_come_from_the_parameter_table() {
        let paths: Vec<&str> = CUSTOMER.fields().iter().map(|f| f.path).collect();
        expect_test::expect![[r#"
            email name phone description address.city address.country address.line1 address.line2 address.postal_code address.state balance business_name individual_name invoice_prefix invoice_settings.footer metadata next_invoice_sequence preferred_locales shipping.address.city shipping.address.country shipping.address.line1 shipping.address.line2 shipping.address.postal_code shipping.address.state shipping.name shipping.phone tax_exempt"#]]
        .assert_eq(&paths.join(" "));
        let city = CUSTOMER.field("shipping.address.city").unwrap();
        assert_eq!(city.whole_group, Some("shipping"));
        assert_eq!(
            CUSTOMER.field("address.city").unwrap().whole_group,
            Some("address")
        );
        assert_eq!(CUSTOMER.field("name").unwrap().whole_group, None);
        assert_eq!(
            CUSTOMER.field("tax_exempt").unwrap().param.unset_reads_as,
            Some("none")
        );
        assert!(CUSTOMER.field("test_clock").is_none());
        assert!(CUSTOMER.field("tax.ip_address").is_none());
    }
}
