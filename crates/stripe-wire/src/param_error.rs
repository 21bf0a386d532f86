//! A problem with one request parameter, said twice: as a sentence for a person (Display) and as
//! the 400 body Stripe would answer (`to_stripe_error`).

use std::fmt;

use crate::error::StripeError;

/// A parameter problem: `param` is the bracketed Stripe name (`address[line1]`, `metadata[plan]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param} {problem}")]
pub struct ParamError {
    pub param: String,
    pub problem: Problem,
}

/// What is wrong with a parameter. Variants carry numbers, never the offending value, so that
/// messages can be logged without leaking customer data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Stripe does not know this parameter here.
    Unknown,
    /// Longer than the maximum, counted in characters (Unicode scalar values).
    TooLong {
        max: usize,
        actual: usize,
    },
    NotInteger,
    NotInEnum {
        allowed: Vec<&'static str>,
    },
    InvalidEmail,
    /// Not 3–12 upper-case letters or digits.
    InvalidInvoicePrefix,
    TooManyMetadataKeys {
        count: usize,
    },
    MetadataKeyTooLong {
        actual: usize,
    },
    MetadataKeyHasBrackets,
    MetadataKeyEmpty,
    MetadataValueTooLong {
        actual: usize,
    },
    /// A required child is absent (`shipping[name]`).
    Missing,
    /// An object where a string was expected, a string where an array was expected, ….
    WrongShape {
        expected: &'static str,
    },
    TooManyItems {
        max: usize,
        actual: usize,
    },
    /// Not `true` or `false`.
    NotBoolean,
    /// Not a decimal number such as `12.5`.
    NotNumber,
    /// Not a non-negative decimal with at most this many digits after the point.
    NotDecimal {
        max_fraction_digits: usize,
    },
    /// Not a currency Stripe supports.
    InvalidCurrency,
    /// An integer below the minimum.
    TooSmall {
        min: i64,
    },
    /// An integer above the maximum.
    TooLarge {
        max: i64,
    },
    /// Neither an integer nor `inf`.
    NotIntegerOrInf,
    /// `""`, which asks to unset a parameter that cannot be unset.
    EmptyNotAllowed,
    /// A statement descriptor with `<`, `>`, `\`, `'` or `"`.
    StatementDescriptorForbiddenCharacter,
    /// A statement descriptor without any letter.
    StatementDescriptorWithoutLetter,
    /// A rule between parameters (`product` or `product_data`, tiers in order, …): what Stripe
    /// answers and what a person reads after the parameter's name.
    Rule {
        stripe_message: &'static str,
        sentence: &'static str,
    },
}

impl ParamError {
    pub fn new(param: impl Into<String>, problem: Problem) -> ParamError {
        ParamError {
            param: param.into(),
            problem,
        }
    }

    /// The `invalid_request_error` Stripe answers with, with its code where Stripe sends one.
    pub fn to_stripe_error(&self) -> StripeError {
        let param = &self.param;
        let (message, code) = match &self.problem {
            Problem::Unknown => (
                format!("Received unknown parameter: {param}"),
                Some("parameter_unknown"),
            ),
            Problem::TooLong { max, .. } => (
                format!("Invalid string: must be at most {max} characters"),
                None,
            ),
            Problem::NotInteger => ("Invalid integer".to_owned(), Some("parameter_invalid_integer")),
            Problem::NotInEnum { allowed } => (
                format!("Invalid {param}: must be one of {}", join_with_or(allowed)),
                None,
            ),
            Problem::InvalidEmail => ("Invalid email address".to_owned(), Some("email_invalid")),
            Problem::InvalidInvoicePrefix => (
                "Invalid invoice_prefix: must be 3-12 uppercase letters or numbers".to_owned(),
                None,
            ),
            Problem::TooManyMetadataKeys { count } => (
                format!(
                    "Invalid metadata: you can specify up to 50 keys, but you passed {count} keys"
                ),
                None,
            ),
            Problem::MetadataKeyTooLong { actual } => (
                format!(
                    "Invalid metadata: keys can be up to 40 characters long, but you passed a key of {actual} characters"
                ),
                None,
            ),
            Problem::MetadataKeyHasBrackets => (
                "Invalid metadata: keys cannot contain '[' or ']'".to_owned(),
                None,
            ),
            Problem::MetadataKeyEmpty => ("Invalid metadata: keys cannot be empty".to_owned(), None),
            Problem::MetadataValueTooLong { actual } => (
                format!(
                    "Invalid metadata: values can be up to 500 characters long, but you passed a value of {actual} characters"
                ),
                None,
            ),
            Problem::Missing => (
                format!("Missing required param: {param}."),
                Some("parameter_missing"),
            ),
            Problem::WrongShape { expected } => (format!("Invalid {expected}"), None),
            Problem::TooManyItems { max, .. } => (
                format!("Invalid array: must have at most {max} items"),
                None,
            ),
            Problem::NotBoolean => ("Invalid boolean".to_owned(), None),
            Problem::NotNumber => ("Invalid decimal number".to_owned(), None),
            Problem::NotDecimal {
                max_fraction_digits,
            } => (
                format!(
                    "Invalid decimal: must be a non-negative number with at most {max_fraction_digits} decimal places"
                ),
                None,
            ),
            Problem::InvalidCurrency => (
                format!(
                    "Invalid currency. Stripe currently supports these currencies: {}",
                    crate::params::SUPPORTED_CURRENCIES.join(", ")
                ),
                None,
            ),
            Problem::TooSmall { min } => (
                format!("This value must be greater than or equal to {min}."),
                None,
            ),
            Problem::TooLarge { max } => (
                format!("This value must be less than or equal to {max}."),
                None,
            ),
            Problem::NotIntegerOrInf => (
                "Invalid value: must be an integer or `inf`".to_owned(),
                None,
            ),
            Problem::EmptyNotAllowed => (
                format!(
                    "You passed an empty string for '{param}'. We assume empty values are an attempt to unset a parameter; however '{param}' cannot be unset. You should remove '{param}' from your request or supply a non-empty value."
                ),
                Some("parameter_invalid_empty"),
            ),
            Problem::StatementDescriptorForbiddenCharacter => (
                "Invalid statement descriptor: it may not include any of <, >, \\, ', or \"".to_owned(),
                None,
            ),
            Problem::StatementDescriptorWithoutLetter => (
                "Invalid statement descriptor: it must contain at least one letter".to_owned(),
                None,
            ),
            Problem::Rule { stripe_message, .. } => ((*stripe_message).to_owned(), None),
        };
        let error = StripeError::invalid_request(message).with_param(param.clone());
        match code {
            Some(code) => error.with_code(code),
            None => error,
        }
    }
}

impl std::error::Error for Problem {}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unknown => write!(formatter, "is not a parameter Stripe accepts here"),
            Problem::TooLong { max, actual } => {
                write!(formatter, "must be at most {max} characters (got {actual})")
            }
            Problem::NotInteger => write!(formatter, "must be a whole number such as 42 or -7"),
            Problem::NotInEnum { allowed } => {
                write!(formatter, "must be one of {}", join_with_or(allowed))
            }
            Problem::InvalidEmail => write!(formatter, "is not a valid email address"),
            Problem::InvalidInvoicePrefix => {
                write!(formatter, "must be 3 to 12 upper-case letters or digits")
            }
            Problem::TooManyMetadataKeys { count } => {
                write!(formatter, "can have at most 50 keys (got {count})")
            }
            Problem::MetadataKeyTooLong { actual } => write!(
                formatter,
                "has a key longer than 40 characters (got {actual})"
            ),
            Problem::MetadataKeyHasBrackets => {
                write!(
                    formatter,
                    "has a key containing `[` or `]`, which Stripe forbids"
                )
            }
            Problem::MetadataKeyEmpty => write!(formatter, "has an empty key"),
            Problem::MetadataValueTooLong { actual } => {
                write!(formatter, "must be at most 500 characters (got {actual})")
            }
            Problem::Missing => write!(formatter, "is required"),
            Problem::WrongShape { expected } => {
                let article = if expected.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                write!(formatter, "must be {article} {expected}")
            }
            Problem::TooManyItems { max, actual } => {
                write!(formatter, "can have at most {max} items (got {actual})")
            }
            Problem::NotBoolean => write!(formatter, "must be true or false"),
            Problem::NotNumber => write!(formatter, "must be a number such as 12.5"),
            Problem::NotDecimal {
                max_fraction_digits,
            } => write!(
                formatter,
                "must be a non-negative decimal number such as 12.5, with at most {max_fraction_digits} decimal places"
            ),
            Problem::InvalidCurrency => write!(
                formatter,
                "must be a three-letter ISO currency code that Stripe supports, such as usd or eur"
            ),
            Problem::TooSmall { min } => write!(formatter, "must be at least {min}"),
            Problem::TooLarge { max } => write!(formatter, "must be at most {max}"),
            Problem::NotIntegerOrInf => {
                write!(formatter, "must be a whole number such as 10, or inf")
            }
            Problem::EmptyNotAllowed => write!(formatter, "cannot be empty: Stripe cannot unset it"),
            Problem::StatementDescriptorForbiddenCharacter => write!(
                formatter,
                "may not contain <, >, \\, ' or \""
            ),
            Problem::StatementDescriptorWithoutLetter => {
                write!(formatter, "must contain at least one letter")
            }
            Problem::Rule { sentence, .. } => write!(formatter, "{sentence}"),
        }
    }
}

/// `none, exempt, or reverse`, as Stripe lists enum values.
fn join_with_or(allowed: &[&str]) -> String {
    match allowed {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [first, second] => format!("{first} or {second}"),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_a_sentence_naming_the_param() {
        let error = ParamError::new(
            "phone",
            Problem::TooLong {
                max: 20,
                actual: 25,
            },
        );
        assert_eq!(
            error.to_string(),
            "phone must be at most 20 characters (got 25)"
        );
        let error = ParamError::new(
            "shipping[address]",
            Problem::WrongShape { expected: "object" },
        );
        assert_eq!(error.to_string(), "shipping[address] must be an object");
    }

    #[test]
    fn enum_values_are_listed_as_stripe_does() {
        let error = ParamError::new(
            "tax_exempt",
            Problem::NotInEnum {
                allowed: vec!["none", "exempt", "reverse"],
            },
        );
        assert_eq!(
            error.to_stripe_error().message,
            "Invalid tax_exempt: must be one of none, exempt, or reverse"
        );
    }
}
