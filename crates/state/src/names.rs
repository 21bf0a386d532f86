//! The rules for the names users give connections, models, syncs, sequences and API tokens (and
//! environment variables that hold secrets), checked before anything reaches a database.
//!
//! Two rules, because workspaces outlive them:
//! - a **new** name is 1 to 64 characters of `[A-Za-z0-9_-]` that does not start with `-` (so it
//!   is never mistaken for a command-line option: `ferry model remove -rf`), and differs by more
//!   than case from every other name of its kind (`m1` and `M1` would be one name on a
//!   case-insensitive file system, in a URL typed by hand, or to a person reading a list);
//! - an **existing** name only has to be 1 to 64 characters of `[A-Za-z0-9_-]`, the rule of
//!   earlier releases, so a workspace that already holds `-rf`, or both `m1` and `M1`, opens and
//!   every one of its objects can still be read, run, replaced and removed.

use crate::error::{ObjectType, StateError};

/// The longest accepted name, in characters.
pub const MAX_NAME_LENGTH: usize = 64;

/// The rule for new names as a regular expression (for the OpenAPI document and HTML forms).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$";

/// The rule for new names in words, as error messages say it.
pub const NAME_RULE: &str =
    "a name is 1 to 64 characters of letters, digits, '_' and '-', and does not start with '-'";

fn plain_characters(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `name` may name a new object: [`NAME_PATTERN`].
pub fn is_valid_new_name(name: &str) -> bool {
    plain_characters(name) && !name.starts_with('-')
}

/// Checks a name that refers to an object that may already exist (to read, run, replace or
/// remove it): 1 to 64 characters of `[A-Za-z0-9_-]`, safe in file names, URLs, shell commands
/// and log lines without quoting. Names that earlier releases accepted pass, a leading `-`
/// included; new objects must also pass [`validate_new_name`].
pub fn validate_name(what: ObjectType, name: &str) -> Result<(), StateError> {
    if plain_characters(name) {
        Ok(())
    } else {
        Err(StateError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// Checks the name of an object about to be created: [`NAME_PATTERN`].
pub fn validate_new_name(what: ObjectType, name: &str) -> Result<(), StateError> {
    if is_valid_new_name(name) {
        Ok(())
    } else {
        Err(StateError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// Whether two names are the same name for people: equal ignoring ASCII case (names are ASCII).
pub fn same_name_ignoring_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Refuses `name` for a new object of kind `what` when `existing` (the names of that kind)
/// holds another name that differs from it only in case; the error names that one. A name that
/// exists exactly is not new, so it passes (replacing it is the caller's business).
pub fn check_case_conflict<'a>(
    what: ObjectType,
    name: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> Result<(), StateError> {
    let mut conflict = None;
    for other in existing {
        if other == name {
            return Ok(());
        }
        if conflict.is_none() && same_name_ignoring_case(other, name) {
            conflict = Some(other.to_string());
        }
    }
    match conflict {
        None => Ok(()),
        Some(existing) => Err(StateError::NameTakenIgnoringCase {
            what,
            name: name.to_string(),
            existing,
        }),
    }
}

/// The table that holds the named objects of kind `what`, for the backends' case check: a fixed
/// string, never user input.
pub(crate) fn name_table(what: ObjectType) -> &'static str {
    match what {
        ObjectType::Connection => "connections",
        ObjectType::Model => "models",
        ObjectType::Sync => "syncs",
        ObjectType::ApiToken => "api_tokens",
        ObjectType::Run => "runs",
        ObjectType::Delivery => "deliveries",
        ObjectType::Sequence => "sequences",
    }
}

/// An environment variable name as a shell accepts it: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn validate_env_var_name(variable: &str) -> Result<(), StateError> {
    let mut bytes = variable.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(StateError::InvalidInput(format!(
            "{variable:?} is not an environment variable name: use letters, digits and '_', \
             not starting with a digit (for example STRIPE_API_KEY)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str) -> String {
        match validate_new_name(ObjectType::Sync, name) {
            Ok(()) => "ok".to_string(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn names_are_short_and_plain() {
        assert_eq!(check("customers"), "ok");
        assert_eq!(check("Stripe-prod_2"), "ok");
        assert_eq!(check("_private"), "ok");
        assert_eq!(check("2024-q1"), "ok");
        assert_eq!(check("a-"), "ok");
        assert_eq!(check(&"a".repeat(64)), "ok");
        assert_eq!(check(""), format!("invalid sync name \"\": {NAME_RULE}"));
        for bad in [
            "a".repeat(65),
            "has space".to_string(),
            "café".to_string(),
            "../etc".to_string(),
            "-rf".to_string(),
            "--".to_string(),
            "-".to_string(),
        ] {
            assert_eq!(
                check(&bad),
                format!("invalid sync name {bad:?}: {NAME_RULE}")
            );
        }
    }

    #[test]
    fn existing_names_keep_the_rule_they_were_made_with() {
        // A leading '-' was accepted before: such a name can still be looked up.
        assert!(validate_name(ObjectType::Model, "-rf").is_ok());
        assert!(validate_name(ObjectType::Model, "has space").is_err());
        assert!(validate_name(ObjectType::Model, "").is_err());
        assert!(validate_name(ObjectType::Model, &"a".repeat(65)).is_err());
    }

    /// The regular expression says what the code checks, character class by character class.
    #[test]
    fn the_pattern_is_the_rule() {
        assert_eq!(NAME_PATTERN, "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$");
        for name in ["a", "A9", "_", "0-", "x_y-z"] {
            assert!(is_valid_new_name(name), "{name}");
        }
        for name in ["-", "-a", "a b", "a.b", "a/b", "é"] {
            assert!(!is_valid_new_name(name), "{name}");
        }
    }

    #[test]
    fn a_name_differing_only_in_case_is_taken() {
        let existing = ["m1", "orders"];
        assert!(check_case_conflict(ObjectType::Model, "m2", existing).is_ok());
        assert!(check_case_conflict(ObjectType::Model, "m1", existing).is_ok());
        assert_eq!(
            check_case_conflict(ObjectType::Model, "M1", existing)
                .unwrap_err()
                .to_string(),
            "model 'M1' cannot be created: model 'm1' already exists, and names must differ by \
             more than case; use 'm1' or choose another name"
        );
        // A workspace that already holds both keeps using both.
        assert!(check_case_conflict(ObjectType::Model, "M1", ["m1", "M1"]).is_ok());
    }

    #[test]
    fn env_var_names_follow_the_shell() {
        assert!(validate_env_var_name("STRIPE_API_KEY").is_ok());
        assert!(validate_env_var_name("_x1").is_ok());
        assert!(validate_env_var_name("").is_err());
        assert!(validate_env_var_name("1ABC").is_err());
        assert_eq!(
            validate_env_var_name("MY-KEY").unwrap_err().to_string(),
            "\"MY-KEY\" is not an environment variable name: use letters, digits and '_', not \
             starting with a digit (for example STRIPE_API_KEY)"
        );
    }
}
