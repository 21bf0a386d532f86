//! What a user declares about a sync: where rows go, how they are matched, which fields map.

use serde::{Deserialize, Serialize};

/// The Stripe object a sync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    Customer,
    Product,
    Price,
    Subscription,
    Invoice,
}

/// What happens to a model row that has no match in Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Behavior {
    /// Update the matched records, create the others.
    UpdateOrCreate,
    /// Update the matched records; report the others as "not found in Stripe".
    UpdateOnly,
    /// Create the records that have no match; leave the matched ones as Stripe holds them.
    CreateOnly,
    /// Update or Create, and retire the records ferry synced whose rows left the model (see
    /// [`MirrorSettings`]).
    Mirror,
}

/// How Mirror retires what left the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorSettings {
    /// A run that would retire more than this share of the sync's records (in percent)
    /// retires none of them unless told `--allow-mass-retire`: an empty or truncated model
    /// (an upstream job that failed) must not wipe Stripe.
    pub max_retire_percent: u32,
    /// Customers are retired by deleting them, which Stripe cannot undo (their payment
    /// methods and subscriptions go too): a customer sync mirrors only with this set.
    pub delete_customers: bool,
    /// Subscriptions are retired by cancelling them at the end of the period already paid for;
    /// with this set, at once (Stripe cannot undo either once it happened).
    pub cancel_subscriptions_now: bool,
    /// Invoices are retired by deleting them while drafts; a finalized one is voided only with
    /// this set (Stripe cannot undo a void), and left, reported, without.
    pub void_open_invoices: bool,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        MirrorSettings {
            max_retire_percent: 10,
            delete_customers: false,
            cancel_subscriptions_now: false,
            void_open_invoices: false,
        }
    }
}

impl MirrorSettings {
    pub fn is_default(&self) -> bool {
        *self == MirrorSettings::default()
    }
}

/// How an invoice sync reads its lines and when its invoices are finalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceSettings {
    /// The column that tells an invoice's lines apart (unique within an invoice): kept in
    /// each invoice item's metadata, so that a line is found again, changed in place, never
    /// added twice.
    pub line_key: String,
    #[serde(default)]
    pub finalize: Finalize,
    /// A finalized invoice whose lines changed in the model is voided and issued again as a
    /// new invoice (Stripe never changes a finalized invoice's lines). Off: such a row is
    /// reported, and the invoice left as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reissue_finalized: bool,
}

/// When ferry finalizes the invoices it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Finalize {
    /// They stay drafts: someone finalizes them in Stripe, and until then a changed row
    /// changes them.
    #[default]
    Never,
    /// Finalized once every line is on them (and sent, when they are collected by
    /// `send_invoice`); a finalized invoice no longer changes.
    WhenCreated,
}

impl Finalize {
    pub const ALL: [Finalize; 2] = [Finalize::Never, Finalize::WhenCreated];

    pub fn as_str(self) -> &'static str {
        match self {
            Finalize::Never => "never",
            Finalize::WhenCreated => "when-created",
        }
    }

    pub fn parse(text: &str) -> Option<Finalize> {
        Finalize::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

/// What a NULL in a mapped column does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NullPolicy {
    /// Leave the Stripe field as it is.
    #[default]
    Skip,
    /// Unset the Stripe field.
    Clear,
}

/// The column whose value identifies a record, and the Stripe field it matches:
/// `email`, or an external id kept in metadata (`metadata.user_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyMapping {
    pub column: String,
    pub field: String,
}

/// One entry of the mapper: a value written into a Stripe field. `column` is a model column
/// (`plan`), a constant in single quotes (`'gold'`, a quote inside doubled: `'O''Brien'`), or a
/// template of columns (`{{first_name}} {{last_name}}`); see [`FieldMapping::source`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldMapping {
    pub column: String,
    pub field: String,
}

/// Where a mapped field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingSource {
    Column(String),
    Constant(String),
    Template(Vec<TemplatePart>),
}

/// A piece of a template: text as written, or a column's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    Column(String),
}

impl FieldMapping {
    /// What `column` says: a constant when it is quoted, a template when it holds `{{`, else a
    /// column name. Errors say what is wrong with the text and how to write it.
    pub fn source(&self) -> Result<MappingSource, String> {
        MappingSource::parse(&self.column)
    }

    /// The model columns the mapping reads (none for a constant).
    pub fn columns_read(&self) -> Vec<String> {
        match self.source() {
            Ok(MappingSource::Column(column)) => vec![column],
            Ok(MappingSource::Constant(_)) => Vec::new(),
            Ok(MappingSource::Template(parts)) => parts
                .into_iter()
                .filter_map(|part| match part {
                    TemplatePart::Column(column) => Some(column),
                    TemplatePart::Text(_) => None,
                })
                .collect(),
            Err(_) => vec![self.column.clone()],
        }
    }
}

impl MappingSource {
    /// Reads a mapping's source as [`FieldMapping::source`] does.
    pub fn parse(text: &str) -> Result<MappingSource, String> {
        if let Some(quoted) = text.strip_prefix('\'') {
            let Some(inner) = quoted.strip_suffix('\'') else {
                return Err(format!(
                    "`{text}` opens a constant with `'` but does not close it; write it as `'value'`"
                ));
            };
            if inner.replace("''", "").contains('\'') {
                return Err(format!(
                    "the constant `{text}` holds a single quote; double it inside a constant (`'O''Brien'`)"
                ));
            }
            return Ok(MappingSource::Constant(inner.replace("''", "'")));
        }
        if !text.contains("{{") {
            return Ok(MappingSource::Column(text.to_string()));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(TemplatePart::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!(
                    "the template `{text}` opens `{{{{` without closing `}}}}`; write columns as `{{{{column}}}}`"
                ));
            };
            let column = after[..end].trim();
            if column.is_empty() {
                return Err(format!(
                    "the template `{text}` has an empty `{{{{}}}}`; name a column inside, as in `{{{{first_name}}}}`"
                ));
            }
            parts.push(TemplatePart::Column(column.to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Ok(MappingSource::Template(parts))
    }
}

/// A sync as the user declared it; validated against the model and Stripe's fields elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncSpec {
    pub model: String,
    pub destination: String,
    pub object: ObjectKind,
    pub behavior: Behavior,
    pub key: KeyMapping,
    #[serde(default)]
    pub mappings: Vec<FieldMapping>,
    #[serde(default)]
    pub nulls: NullPolicy,
    /// Mirror's settings; read only with [`Behavior::Mirror`].
    #[serde(default, skip_serializing_if = "MirrorSettings::is_default")]
    pub mirror: MirrorSettings,
    /// An invoice sync's lines (one model row per line): required with `object: invoice`,
    /// refused with any other object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<InvoiceSettings>,
    /// When `ferry serve` runs the sync by itself; `None`: only when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "every 1h")]
    pub schedule: Option<crate::Schedule>,
    /// When the sync raises alerts and who hears of them; `None`: the workspace's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::AlertSettings>,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 5] = [
        ObjectKind::Customer,
        ObjectKind::Product,
        ObjectKind::Price,
        ObjectKind::Subscription,
        ObjectKind::Invoice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Customer => "customer",
            ObjectKind::Product => "product",
            ObjectKind::Price => "price",
            ObjectKind::Subscription => "subscription",
            ObjectKind::Invoice => "invoice",
        }
    }

    pub fn parse(text: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl Behavior {
    pub const ALL: [Behavior; 4] = [
        Behavior::UpdateOrCreate,
        Behavior::UpdateOnly,
        Behavior::CreateOnly,
        Behavior::Mirror,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::UpdateOrCreate => "update-or-create",
            Behavior::UpdateOnly => "update-only",
            Behavior::CreateOnly => "create-only",
            Behavior::Mirror => "mirror",
        }
    }

    pub fn parse(text: &str) -> Option<Behavior> {
        Behavior::ALL.into_iter().find(|b| b.as_str() == text)
    }
}

impl NullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            NullPolicy::Skip => "skip",
            NullPolicy::Clear => "clear",
        }
    }

    pub fn parse(text: &str) -> Option<NullPolicy> {
        [NullPolicy::Skip, NullPolicy::Clear]
            .into_iter()
            .find(|n| n.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Result<MappingSource, String> {
        FieldMapping {
            column: text.to_string(),
            field: "name".to_string(),
        }
        .source()
    }

    #[test]
    fn a_mapping_reads_a_column_a_constant_or_a_template() {
        use MappingSource::*;
        use TemplatePart as P;
        assert_eq!(source("plan"), Ok(Column("plan".into())));
        assert_eq!(source("'gold'"), Ok(Constant("gold".into())));
        assert_eq!(source("''"), Ok(Constant(String::new())));
        assert_eq!(source("'O''Brien'"), Ok(Constant("O'Brien".into())));
        assert_eq!(
            source("{{first_name}} {{ last_name }}!"),
            Ok(Template(vec![
                P::Column("first_name".into()),
                P::Text(" ".into()),
                P::Column("last_name".into()),
                P::Text("!".into()),
            ]))
        );
        assert_eq!(
            source("'gold"),
            Err(
                "`'gold` opens a constant with `'` but does not close it; write it as `'value'`"
                    .into()
            )
        );
        assert_eq!(
            source("'it's'"),
            Err("the constant `'it's'` holds a single quote; double it inside a constant (`'O''Brien'`)".into())
        );
        assert_eq!(
            source("Hi {{name"),
            Err("the template `Hi {{name` opens `{{` without closing `}}`; write columns as `{{column}}`".into())
        );
        assert_eq!(
            source("{{ }}"),
            Err("the template `{{ }}` has an empty `{{}}`; name a column inside, as in `{{first_name}}`".into())
        );
    }

    #[test]
    fn columns_read_by_a_mapping() {
        let read = |text: &str| {
            FieldMapping {
                column: text.to_string(),
                field: "name".to_string(),
            }
            .columns_read()
        };
        assert_eq!(read("plan"), ["plan"]);
        assert!(read("'gold'").is_empty());
        assert_eq!(read("{{a}} and {{b}}"), ["a", "b"]);
    }
}
