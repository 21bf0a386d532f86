//! A secret string (an API key, a database password) that never prints itself.

use std::fmt;

/// Holds a secret. `Debug`, `Display` and `Serialize` all redact it; the only way to read the
/// value is [`Secret::expose`], so every place that needs the clear text is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear text. Call it only where the secret leaves ferry (an HTTP header, a driver).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A hint a person can recognise without learning the secret: `sk_test_…4242`.
    pub fn hint(&self) -> String {
        redacted_hint(&self.0)
    }
}

/// `sk_test_…4242` for Stripe keys; `…4242` for anything else; `…` for short values.
pub fn redacted_hint(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 12 {
        return "…".to_string();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    let prefix = ["sk_test_", "sk_live_", "rk_test_", "rk_live_"]
        .into_iter()
        .find(|p| value.starts_with(p))
        .unwrap_or("");
    format!("{prefix}…{tail}")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.hint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hint())
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_itself() {
        let key = Secret::new("sk_test_51Habcdefghijklmnop4242");
        assert_eq!(format!("{key}"), "sk_test_…4242");
        assert_eq!(format!("{key:?}"), "Secret(sk_test_…4242)");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"sk_test_…4242\"");
        assert_eq!(Secret::new("short").hint(), "…");
        assert_eq!(Secret::new("postgres-password-1234").hint(), "…1234");
    }
}
