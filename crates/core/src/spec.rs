//! What a user declares about a sync: where rows go, how they are matched, which fields map.

use serde::{Deserialize, Serialize};

/// The Stripe object a sync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    Customer,
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

/// One entry of the mapper: a model column written into a Stripe field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldMapping {
    pub column: String,
    pub field: String,
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
    /// When `ferry serve` runs the sync by itself; `None`: only when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "every 1h")]
    pub schedule: Option<crate::Schedule>,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 1] = [ObjectKind::Customer];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Customer => "customer",
        }
    }

    pub fn parse(text: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl Behavior {
    pub const ALL: [Behavior; 3] = [
        Behavior::UpdateOrCreate,
        Behavior::UpdateOnly,
        Behavior::CreateOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::UpdateOrCreate => "update-or-create",
            Behavior::UpdateOnly => "update-only",
            Behavior::CreateOnly => "create-only",
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
