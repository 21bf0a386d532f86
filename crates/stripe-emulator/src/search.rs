//! Stripe's search query language: `email:"a@b.co" AND metadata['k']:'v'`, for customers,
//! products, prices and invoices, each with the fields Stripe lets it search ([`Searchable`]).
//!
//! Supported: text fields (`:` exact, `~` substring of at least 3 characters), booleans
//! (`active:'true'`), `metadata['key']` (`:` exact), `created` and numbers such as an invoice's
//! `total` (`:`, `>`, `<`, `>=`, `<=` with an integer); `-` before a clause negates it; clauses
//! joined by `AND` or by `OR` (not both, as on Stripe). Values are quoted with `"` or `'`;
//! unquoted words are accepted too. `:` on `email` is case-insensitive; on `name` and
//! `description` it is case-insensitive and word-based (`name:"ann"` matches "Ann Lee"), which is
//! why Stripe says to re-check hits.

use serde_json::{Map, Value};

/// A parsed query: clauses that must all match (`AND`) or of which one must match (`OR`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SearchQuery {
    clauses: Vec<Clause>,
    any: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    negated: bool,
    field: Field,
    operator: Operator,
    value: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Text(&'static str, TextKind),
    /// An integer compared with `:`, `>`, `<`, `>=`, `<=` (`created`, an invoice's `total`).
    Number(&'static str),
    Metadata(String),
}

/// How a searchable field compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum TextKind {
    /// Exact ignoring case (`email`).
    Email,
    /// Every word of the query is a word of the field, ignoring case (`name`).
    Words,
    /// Exact (`phone`, `lookup_key`).
    Exact,
    /// `true` or `false` (`active`).
    Boolean,
    /// An integer, compared like `created` (an invoice's `total`).
    Number,
}

/// The fields one object's search accepts besides `created` and `metadata['key']`.
#[derive(Debug)]
pub(crate) struct Searchable {
    pub object: &'static str,
    pub fields: &'static [(&'static str, TextKind)],
}

pub(crate) static CUSTOMER_SEARCH: Searchable = Searchable {
    object: "customer",
    fields: &[
        ("email", TextKind::Email),
        ("name", TextKind::Words),
        ("phone", TextKind::Exact),
    ],
};

pub(crate) static PRODUCT_SEARCH: Searchable = Searchable {
    object: "product",
    fields: &[
        ("active", TextKind::Boolean),
        ("description", TextKind::Words),
        ("name", TextKind::Words),
        ("shippable", TextKind::Boolean),
        ("url", TextKind::Exact),
    ],
};

pub(crate) static PRICE_SEARCH: Searchable = Searchable {
    object: "price",
    fields: &[
        ("active", TextKind::Boolean),
        ("currency", TextKind::Email),
        ("lookup_key", TextKind::Exact),
        ("product", TextKind::Exact),
        ("type", TextKind::Exact),
    ],
};

pub(crate) static INVOICE_SEARCH: Searchable = Searchable {
    object: "invoice",
    fields: &[
        ("currency", TextKind::Email),
        ("customer", TextKind::Exact),
        ("status", TextKind::Exact),
        ("total", TextKind::Number),
    ],
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Operator {
    Equals,
    Contains,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// Why a query was rejected; the text becomes the 400 message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct QueryError(String);

impl SearchQuery {
    pub(crate) fn parse(text: &str, searchable: &Searchable) -> Result<SearchQuery, QueryError> {
        let mut parser = Parser {
            rest: text.trim(),
            searchable,
        };
        if parser.rest.is_empty() {
            return Err(QueryError("the query is empty".into()));
        }
        let mut clauses = vec![parser.clause()?];
        let mut connector: Option<&'static str> = None;
        loop {
            parser.skip_spaces();
            if parser.rest.is_empty() {
                break;
            }
            let word = if parser.eat_keyword("AND") {
                "AND"
            } else if parser.eat_keyword("OR") {
                "OR"
            } else {
                return Err(QueryError(format!(
                    "expected AND or OR before `{}`",
                    parser.rest
                )));
            };
            if connector.is_some_and(|previous| previous != word) {
                return Err(QueryError(
                    "a query cannot combine AND and OR; use one of them".into(),
                ));
            }
            connector = Some(word);
            clauses.push(parser.clause()?);
        }
        Ok(SearchQuery {
            clauses,
            any: connector == Some("OR"),
        })
    }

    pub(crate) fn matches(&self, record: &Map<String, Value>) -> bool {
        let mut results = self.clauses.iter().map(|clause| clause.matches(record));
        if self.any {
            results.any(|matched| matched)
        } else {
            results.all(|matched| matched)
        }
    }
}

impl Clause {
    fn matches(&self, record: &Map<String, Value>) -> bool {
        let matched = match &self.field {
            Field::Number(name) => {
                let actual = record[*name].as_i64().unwrap_or_default();
                let wanted: i64 = self.value.parse().unwrap_or_default();
                match self.operator {
                    Operator::Equals => actual == wanted,
                    Operator::Greater => actual > wanted,
                    Operator::GreaterOrEqual => actual >= wanted,
                    Operator::Less => actual < wanted,
                    Operator::LessOrEqual => actual <= wanted,
                    Operator::Contains => false,
                }
            }
            Field::Metadata(key) => record["metadata"][key.as_str()].as_str() == Some(&self.value),
            Field::Text(name, TextKind::Boolean) => {
                record[*name].as_bool() == Some(self.value.eq_ignore_ascii_case("true"))
            }
            Field::Text(name, kind) => {
                let Some(actual) = record[*name].as_str() else {
                    return self.negated;
                };
                match (self.operator, kind) {
                    (Operator::Contains, _) => {
                        actual.to_lowercase().contains(&self.value.to_lowercase())
                    }
                    (_, TextKind::Email) => actual.to_lowercase() == self.value.to_lowercase(),
                    (_, TextKind::Words) => name_matches(actual, &self.value),
                    _ => actual == self.value,
                }
            }
        };
        matched != self.negated
    }
}

/// Case-insensitive; every word of the query must be a word of the name.
fn name_matches(actual: &str, wanted: &str) -> bool {
    let actual = actual.to_lowercase();
    let wanted = wanted.to_lowercase();
    if actual == wanted {
        return true;
    }
    let words: Vec<&str> = actual.split_whitespace().collect();
    let mut wanted_words = wanted.split_whitespace().peekable();
    wanted_words.peek().is_some() && wanted_words.all(|word| words.contains(&word))
}

struct Parser<'a> {
    rest: &'a str,
    searchable: &'a Searchable,
}

impl<'a> Parser<'a> {
    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        match self.rest.strip_prefix(keyword) {
            Some(after) if after.starts_with(char::is_whitespace) => {
                self.rest = after;
                true
            }
            _ => false,
        }
    }

    fn clause(&mut self) -> Result<Clause, QueryError> {
        self.skip_spaces();
        let negated = match self.rest.strip_prefix('-') {
            Some(after) => {
                self.rest = after;
                true
            }
            None => false,
        };
        let field = self.field()?;
        let operator = self.operator()?;
        let value = self.value()?;
        check_clause(&field, operator, &value)?;
        Ok(Clause {
            negated,
            field,
            operator,
            value,
        })
    }

    fn field(&mut self) -> Result<Field, QueryError> {
        let end = self
            .rest
            .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
            .unwrap_or(self.rest.len());
        let name = &self.rest[..end];
        self.rest = &self.rest[end..];
        if let Some((field, kind)) = self
            .searchable
            .fields
            .iter()
            .find(|(field, _)| *field == name)
        {
            if *kind == TextKind::Number {
                return Ok(Field::Number(field));
            }
            return Ok(Field::Text(field, *kind));
        }
        match name {
            "created" => Ok(Field::Number("created")),
            "metadata" => {
                let inner = self.rest.strip_prefix('[').ok_or_else(|| {
                    QueryError("metadata is searched as metadata['key']:'value'".into())
                })?;
                self.rest = inner;
                let key = self.quoted()?;
                self.rest = self
                    .rest
                    .strip_prefix(']')
                    .ok_or_else(|| QueryError("expected `]` after the metadata key".into()))?;
                Ok(Field::Metadata(key))
            }
            "" => Err(QueryError(format!(
                "expected a field name at `{}`",
                self.rest
            ))),
            other => {
                let fields: Vec<&str> = self.searchable.fields.iter().map(|(f, _)| *f).collect();
                Err(QueryError(format!(
                    "`{other}` is not a searchable {} field ({}, created, metadata['key'])",
                    self.searchable.object,
                    fields.join(", ")
                )))
            }
        }
    }

    fn operator(&mut self) -> Result<Operator, QueryError> {
        let operators = [
            (">=", Operator::GreaterOrEqual),
            ("<=", Operator::LessOrEqual),
            (":", Operator::Equals),
            ("~", Operator::Contains),
            (">", Operator::Greater),
            ("<", Operator::Less),
        ];
        for (symbol, operator) in operators {
            if let Some(after) = self.rest.strip_prefix(symbol) {
                self.rest = after;
                return Ok(operator);
            }
        }
        Err(QueryError(format!(
            "expected an operator (:, ~, >, <, >=, <=) at `{}`",
            self.rest
        )))
    }

    fn value(&mut self) -> Result<String, QueryError> {
        if self.rest.starts_with(['"', '\'']) {
            return self.quoted();
        }
        let end = self
            .rest
            .find(char::is_whitespace)
            .unwrap_or(self.rest.len());
        if end == 0 {
            return Err(QueryError("expected a value after the operator".into()));
        }
        let value = &self.rest[..end];
        self.rest = &self.rest[end..];
        Ok(value.to_owned())
    }

    /// A `"…"` or `'…'` string; a backslash escapes the next character.
    fn quoted(&mut self) -> Result<String, QueryError> {
        let mut characters = self.rest.char_indices();
        let quote = match characters.next() {
            Some((_, quote @ ('"' | '\''))) => quote,
            _ => {
                return Err(QueryError(format!(
                    "expected a quoted string at `{}`",
                    self.rest
                )))
            }
        };
        let mut value = String::new();
        let mut escaped = false;
        for (index, character) in characters {
            if escaped {
                value.push(character);
                escaped = false;
            } else if character == '\\' {
                escaped = true;
            } else if character == quote {
                self.rest = &self.rest[index + character.len_utf8()..];
                return Ok(value);
            } else {
                value.push(character);
            }
        }
        Err(QueryError("a quoted string is not closed".into()))
    }
}

fn check_clause(field: &Field, operator: Operator, value: &str) -> Result<(), QueryError> {
    match (field, operator) {
        (Field::Number(name), Operator::Contains) => {
            Err(QueryError(format!("{name} supports :, >, <, >= and <=")))
        }
        (Field::Number("created"), _) if value.parse::<i64>().is_err() => Err(QueryError(format!(
            "created must be compared with a unix timestamp (got `{value}`)"
        ))),
        (Field::Number(name), _) if value.parse::<i64>().is_err() => Err(QueryError(format!(
            "{name} must be compared with an integer (got `{value}`)"
        ))),
        (Field::Metadata(_), Operator::Equals) | (Field::Number(_), _) => Ok(()),
        (Field::Metadata(_), _) => Err(QueryError("metadata supports only :".into())),
        (Field::Text(name, TextKind::Boolean), Operator::Equals) => {
            if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") {
                Ok(())
            } else {
                Err(QueryError(format!(
                    "{name} is true or false (got `{value}`)"
                )))
            }
        }
        (Field::Text(name, TextKind::Boolean), _) => {
            Err(QueryError(format!("{name} supports only :")))
        }
        (_, Operator::Equals) => Ok(()),
        (_, Operator::Contains) if value.chars().count() < 3 => Err(QueryError(
            "a substring search (~) needs at least 3 characters".into(),
        )),
        (_, Operator::Contains) => Ok(()),
        (Field::Text(name, _), _) => Err(QueryError(format!("{name} supports only : and ~"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn customer() -> Map<String, Value> {
        match json!({
            "email": "Ann.Lee@Example.com", "name": "Ann Lee", "phone": "+331234",
            "created": 1000, "metadata": {"external_id": "42"}
        }) {
            Value::Object(object) => object,
            _ => unreachable!(),
        }
    }

    fn check(query: &str, expected: bool) {
        let parsed = SearchQuery::parse(query, &CUSTOMER_SEARCH)
            .unwrap_or_else(|error| panic!("{query}: {error}"));
        assert_eq!(parsed.matches(&customer()), expected, "{query}");
    }

    #[test]
    fn fields_and_operators() {
        check(r#"email:"ann.lee@example.com""#, true);
        check(r#"email:"ann@example.com""#, false);
        check(r#"email~"example""#, true);
        check(r#"name:"ann""#, true);
        check(r#"name:"LEE ann""#, true);
        check(r#"name:"an""#, false);
        check(r#"phone:"+331234""#, true);
        check("metadata['external_id']:'42'", true);
        check(r#"metadata["external_id"]:"4""#, false);
        check("created>999 AND created<=1000", true);
        check("created>1000", false);
        check("-created>1000", true);
        check(r#"email:"x@y.co" OR metadata['external_id']:'42'"#, true);
        check(r#"email:"x@y.co" AND metadata['external_id']:'42'"#, false);
        check(r#"-name:"bob""#, true);
    }

    #[test]
    fn rejections() {
        for bad in [
            "",
            "email",
            "mail:'x'",
            "email:'x' AND name:'y' OR phone:'z'",
            "created:yesterday",
            "metadata['k']~'abc'",
            "email~'ab'",
            "email:'unclosed",
            "email:'x' name:'y'",
        ] {
            assert!(
                SearchQuery::parse(bad, &CUSTOMER_SEARCH).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn products_and_prices_search_their_own_fields() {
        let product = match json!({"name": "Gold Plan", "active": true, "url": "https://x.co", "created": 5, "metadata": {"sku": "g1"}})
        {
            Value::Object(object) => object,
            _ => unreachable!(),
        };
        let price = match json!({"lookup_key": "gold_monthly", "currency": "usd", "product": "prod_1", "active": false, "type": "recurring", "metadata": {}})
        {
            Value::Object(object) => object,
            _ => unreachable!(),
        };
        let matches = |query: &str, searchable: &Searchable, record: &Map<String, Value>| {
            SearchQuery::parse(query, searchable)
                .unwrap_or_else(|error| panic!("{query}: {error}"))
                .matches(record)
        };
        assert!(matches(
            "name:'gold' AND active:'true'",
            &PRODUCT_SEARCH,
            &product
        ));
        assert!(matches("metadata['sku']:'g1'", &PRODUCT_SEARCH, &product));
        assert!(!matches("active:'false'", &PRODUCT_SEARCH, &product));
        assert!(matches(
            "lookup_key:'gold_monthly' AND currency:'USD'",
            &PRICE_SEARCH,
            &price
        ));
        assert!(matches(
            "product:'prod_1' AND active:'false' AND type:'recurring'",
            &PRICE_SEARCH,
            &price
        ));
        assert!(!matches("lookup_key:'gold'", &PRICE_SEARCH, &price));
        for (bad, searchable, expected) in [
            ("email:'a@b.co'", &PRODUCT_SEARCH, "`email` is not a searchable product field (active, description, name, shippable, url, created, metadata['key'])"),
            ("active:'yes'", &PRICE_SEARCH, "active is true or false (got `yes`)"),
            ("active~'true'", &PRICE_SEARCH, "active supports only :"),
            ("lookup_key>'a'", &PRICE_SEARCH, "lookup_key supports only : and ~"),
        ] {
            assert_eq!(
                SearchQuery::parse(bad, searchable).unwrap_err().to_string(),
                expected
            );
        }
    }
}
