//! The rules for the names users give connections, models and syncs (and environment variables
//! that hold secrets), checked before anything reaches a database.

use crate::error::{ObjectType, StateError};

/// The longest accepted name, in characters.
pub const MAX_NAME_LENGTH: usize = 64;

/// A name is 1 to 64 characters of `[A-Za-z0-9_-]`: safe in file names, URLs, shell commands
/// and log lines without quoting.
pub fn validate_name(what: ObjectType, name: &str) -> Result<(), StateError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(StateError::InvalidName {
            what,
            name: name.to_string(),
        })
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
        match validate_name(ObjectType::Sync, name) {
            Ok(()) => "ok".to_string(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn names_are_short_and_plain() {
        assert_eq!(check("customers"), "ok");
        assert_eq!(check("Stripe-prod_2"), "ok");
        assert_eq!(check(&"a".repeat(64)), "ok");
        let rule = "a name is 1 to 64 characters of letters, digits, '_' and '-'";
        assert_eq!(check(""), format!("invalid sync name \"\": {rule}"));
        assert_eq!(
            check(&"a".repeat(65)),
            format!("invalid sync name \"{}\": {rule}", "a".repeat(65))
        );
        assert_eq!(
            check("has space"),
            format!("invalid sync name \"has space\": {rule}")
        );
        assert_eq!(check("café"), format!("invalid sync name \"café\": {rule}"));
        assert_eq!(
            check("../etc"),
            format!("invalid sync name \"../etc\": {rule}")
        );
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
