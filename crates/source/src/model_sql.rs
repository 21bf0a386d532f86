//! Checks that a model's SQL is one read-only query before any warehouse sees it.
//!
//! This is a guard for clear messages, not the security boundary: PostgreSQL runs the model in
//! a `READ ONLY` transaction and DuckDB opens the file read-only, so a write that slips past this
//! check is still refused by the database. The check only needs to understand enough SQL to find
//! the first keyword and a `;` that starts a second statement, so it skips comments, string
//! literals, quoted identifiers (`"…"`, and MySQL's and BigQuery's `` `…` ``) and dollar-quoted
//! bodies, and nothing more.

use crate::SourceError;

/// The keywords a model may start with: the forms of a query in PostgreSQL and DuckDB
/// (`FROM t SELECT …` and bare `FROM t` are DuckDB's FROM-first syntax).
const QUERY_KEYWORDS: [&str; 5] = ["SELECT", "WITH", "VALUES", "TABLE", "FROM"];

/// A model's SQL that passed [`validate_model_sql`]: exactly one statement that starts like a
/// query. Holds the text up to (not including) the first top-level `;`, so a warehouse never
/// receives a second statement, and error positions still count from the model's first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedModelSql {
    statement: String,
}

impl ValidatedModelSql {
    /// The statement to send to the warehouse.
    pub fn statement(&self) -> &str {
        &self.statement
    }

    /// SQL ferry wrote itself around a validated model (change detection's query).
    pub(crate) fn trusted(statement: String) -> ValidatedModelSql {
        ValidatedModelSql { statement }
    }
}

/// Refuses anything that is not a single SELECT / WITH / VALUES / TABLE / FROM query, with a
/// message that names the problem.
pub fn validate_model_sql(sql: &str) -> Result<ValidatedModelSql, SourceError> {
    let tokens = significant_tokens(sql).map_err(|problem| SourceError::NotAQuery { problem })?;
    let Some(first_token) = tokens.first() else {
        return Err(SourceError::NotAQuery {
            problem: "the model is empty; write a SELECT query".to_string(),
        });
    };

    // A statement ends at the first top-level `;`; only more `;` may follow it.
    let statement_end = tokens
        .iter()
        .position(|token| token.kind == TokenKind::Semicolon)
        .unwrap_or(tokens.len());
    if let Some(next_statement) = tokens[statement_end..]
        .iter()
        .find(|token| token.kind != TokenKind::Semicolon)
    {
        return Err(SourceError::NotAQuery {
            problem: format!(
                "it contains more than one statement (a `;` is followed by {}); \
                 a model must be one query, so remove everything after the first `;`",
                token_preview(sql, next_statement)
            ),
        });
    }
    if statement_end == 0 {
        return Err(SourceError::NotAQuery {
            problem: "the model is empty; write a SELECT query".to_string(),
        });
    }

    // `(SELECT …) UNION (SELECT …)` is a query too: look past opening parentheses.
    let first_word = tokens[..statement_end]
        .iter()
        .find(|token| token.kind != TokenKind::OpenParenthesis)
        .unwrap_or(first_token);
    let first_word_text = &sql[first_word.start..first_word.end];
    let starts_like_query = first_word.kind == TokenKind::Word
        && QUERY_KEYWORDS
            .iter()
            .any(|keyword| keyword.eq_ignore_ascii_case(first_word_text));
    if !starts_like_query {
        return Err(SourceError::NotAQuery {
            problem: format!(
                "it starts with {}, but a model must be a read-only query starting with \
                 SELECT, WITH, VALUES, TABLE or FROM",
                token_preview(sql, first_word)
            ),
        });
    }

    if let Some(writing_word) = writing_statement_after_ctes(sql, &tokens[..statement_end]) {
        return Err(SourceError::NotAQuery {
            problem: format!(
                "its WITH clause is followed by {}, which writes; a model must be a read-only \
                 query: end the WITH clause with a SELECT",
                token_preview(sql, writing_word)
            ),
        });
    }

    let statement = match tokens.get(statement_end) {
        Some(semicolon) => &sql[..semicolon.start],
        None => sql,
    };
    Ok(ValidatedModelSql {
        statement: statement.trim_end().to_string(),
    })
}

/// Statements that may follow a WITH clause in some warehouse and write (PostgreSQL, DuckDB,
/// Snowflake and BigQuery accept `WITH … INSERT` or `WITH … DELETE`): a read-only transaction
/// stops them where there is one, but Snowflake and BigQuery have none, so the model is refused
/// before it runs. (Not REPLACE: BigQuery's `SELECT * EXCEPT (a) REPLACE (…)` reads.)
const WRITING_KEYWORDS: [&str; 4] = ["INSERT", "UPDATE", "DELETE", "MERGE"];

/// The word after the WITH clause's last `)` (the statement the CTEs feed), if it writes.
fn writing_statement_after_ctes<'t>(sql: &str, statement: &'t [Token]) -> Option<&'t Token> {
    let mut depth = 0usize;
    for (index, token) in statement.iter().enumerate() {
        match token.kind {
            TokenKind::OpenParenthesis => depth += 1,
            TokenKind::Other if &sql[token.start..token.end] == ")" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let next = statement.get(index + 1)?;
                    let writes = next.kind == TokenKind::Word
                        && WRITING_KEYWORDS.iter().any(|keyword| {
                            keyword.eq_ignore_ascii_case(&sql[next.start..next.end])
                        });
                    if writes {
                        return Some(next);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Word,
    Semicolon,
    OpenParenthesis,
    /// Anything else that is not a comment or whitespace: literals, operators, quoted names.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: TokenKind,
    start: usize,
    end: usize,
}

/// The text of a token for a message, in backticks (doubled around a backticked name, as
/// Markdown would write it), shortened so a huge literal does not flood it.
fn token_preview(sql: &str, token: &Token) -> String {
    let text = &sql[token.start..token.end];
    let shortened = match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    };
    if shortened.contains('`') {
        format!("`` {shortened} ``")
    } else {
        format!("`{shortened}`")
    }
}

/// Splits SQL into the tokens that matter for validation, skipping whitespace and comments.
/// Fails on an unterminated comment, string or quoted identifier.
fn significant_tokens(sql: &str) -> Result<Vec<Token>, String> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let byte = bytes[position];
        let start = position;
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => position += 1,
            b'-' if bytes.get(position + 1) == Some(&b'-') => {
                position = sql[position..]
                    .find('\n')
                    .map_or(bytes.len(), |offset| position + offset + 1);
            }
            b'/' if bytes.get(position + 1) == Some(&b'*') => {
                position = end_of_block_comment(bytes, position)?;
            }
            b';' => {
                position += 1;
                tokens.push(Token {
                    kind: TokenKind::Semicolon,
                    start,
                    end: position,
                });
            }
            b'(' => {
                position += 1;
                tokens.push(Token {
                    kind: TokenKind::OpenParenthesis,
                    start,
                    end: position,
                });
            }
            b'\'' => {
                // E'…' strings allow backslash escapes; the E was already read as a word, so
                // look back at it.
                let backslash_escapes = tokens.last().is_some_and(|token: &Token| {
                    token.kind == TokenKind::Word
                        && token.end == start
                        && sql[token.start..token.end].eq_ignore_ascii_case("e")
                });
                position = end_of_quoted(bytes, position, b'\'', backslash_escapes)
                    .ok_or("it has a string literal that is never closed (a `'` is missing)")?;
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start,
                    end: position,
                });
            }
            b'"' => {
                position = end_of_quoted(bytes, position, b'"', false)
                    .ok_or("it has a quoted name that is never closed (a `\"` is missing)")?;
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start,
                    end: position,
                });
            }
            // MySQL's and BigQuery's quoted names: `delete`, `a;b` and `it's` are names there,
            // not a keyword, a second statement or the start of a string.
            b'`' => {
                position = end_of_quoted(bytes, position, b'`', false)
                    .ok_or("it has a quoted name that is never closed (a `` ` `` is missing)")?;
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start,
                    end: position,
                });
            }
            b'$' => {
                position = match dollar_quote_tag(sql, position) {
                    Some(tag) => {
                        let body_start = position + tag.len();
                        sql[body_start..]
                            .find(tag)
                            .map(|offset| body_start + offset + tag.len())
                            .ok_or_else(|| {
                                format!("it has a `{tag}` quoted string that is never closed")
                            })?
                    }
                    // `$1`, a parameter: not a quote.
                    None => position + 1,
                };
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start,
                    end: position,
                });
            }
            _ if byte.is_ascii_alphabetic() || byte == b'_' || byte >= 0x80 => {
                while position < bytes.len() && is_word_byte(bytes[position]) {
                    position += 1;
                }
                tokens.push(Token {
                    kind: TokenKind::Word,
                    start,
                    end: position,
                });
            }
            _ => {
                // One character at a time keeps the token on a UTF-8 boundary.
                position += sql[position..].chars().next().map_or(1, char::len_utf8);
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start,
                    end: position,
                });
            }
        }
    }
    Ok(tokens)
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Block comments nest in PostgreSQL and DuckDB (`/* a /* b */ c */`).
fn end_of_block_comment(bytes: &[u8], start: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    let mut position = start;
    while position + 1 < bytes.len() {
        match (bytes[position], bytes[position + 1]) {
            (b'/', b'*') => {
                depth += 1;
                position += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                position += 2;
                if depth == 0 {
                    return Ok(position);
                }
            }
            _ => position += 1,
        }
    }
    Err("it has a `/*` comment that is never closed".to_string())
}

/// The end (exclusive) of a quoted string or identifier starting at `start`, where a doubled
/// quote character stands for itself.
fn end_of_quoted(bytes: &[u8], start: usize, quote: u8, backslash_escapes: bool) -> Option<usize> {
    let mut position = start + 1;
    while position < bytes.len() {
        let byte = bytes[position];
        if backslash_escapes && byte == b'\\' {
            position += 2;
            continue;
        }
        if byte == quote {
            if bytes.get(position + 1) == Some(&quote) {
                position += 2;
                continue;
            }
            return Some(position + 1);
        }
        position += 1;
    }
    None
}

/// `$$` or `$tag$` at `start`, if that is what starts there.
fn dollar_quote_tag(sql: &str, start: usize) -> Option<&str> {
    let rest = &sql[start + 1..];
    let tag_length = rest.find('$')?;
    let tag = &rest[..tag_length];
    let valid_tag = tag.bytes().enumerate().all(|(index, byte)| {
        byte.is_ascii_alphabetic() || byte == b'_' || (index > 0 && byte.is_ascii_digit())
    });
    valid_tag.then(|| &sql[start..start + tag_length + 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement sent to the warehouse, or the refusal message.
    fn check(sql: &str, expected: &str) {
        let actual = match validate_model_sql(sql) {
            Ok(validated) => format!("ok: {}", validated.statement()),
            Err(error) => format!("refused: {error}"),
        };
        assert_eq!(actual, expected, "for model {sql:?}");
    }

    #[test]
    fn queries_are_accepted() {
        check("SELECT 1", "ok: SELECT 1");
        check("  select 1;  ", "ok:   select 1");
        check("SELECT 1;;\n-- done\n", "ok: SELECT 1");
        check(
            "-- customers\n/* all of them */ WITH c AS (SELECT 1) SELECT * FROM c",
            "ok: -- customers\n/* all of them */ WITH c AS (SELECT 1) SELECT * FROM c",
        );
        check("VALUES (1), (2)", "ok: VALUES (1), (2)");
        check("TABLE customers", "ok: TABLE customers");
        check("FROM customers SELECT id", "ok: FROM customers SELECT id");
        check(
            "(SELECT 1) UNION (SELECT 2)",
            "ok: (SELECT 1) UNION (SELECT 2)",
        );
        check(
            "SELECT ';' AS a, \"x;y\" FROM t",
            "ok: SELECT ';' AS a, \"x;y\" FROM t",
        );
        check("SELECT 'it''s; fine'", "ok: SELECT 'it''s; fine'");
        check("SELECT E'a\\'; b'", "ok: SELECT E'a\\'; b'");
        check("SELECT $$; DROP TABLE t$$", "ok: SELECT $$; DROP TABLE t$$");
        check("SELECT $body$;$body$, $1", "ok: SELECT $body$;$body$, $1");
        check(
            "SELECT 1 /* a /* nested; */ comment */",
            "ok: SELECT 1 /* a /* nested; */ comment */",
        );
    }

    /// MySQL and BigQuery quote names with backticks; what is inside is a name, whatever it
    /// spells.
    #[test]
    fn backticked_names_are_names() {
        check(
            "SELECT `delete`, `a;b`, `it's` FROM `shop`.`orders`",
            "ok: SELECT `delete`, `a;b`, `it's` FROM `shop`.`orders`",
        );
        check("SELECT `x``;y` FROM t; ", "ok: SELECT `x``;y` FROM t");
        check(
            "SELECT * FROM `my-project.shop.orders`",
            "ok: SELECT * FROM `my-project.shop.orders`",
        );
        check(
            "`delete` FROM t",
            "refused: the model is not a single read-only query: it starts with `` `delete` ``, but a model must be a read-only query starting with SELECT, WITH, VALUES, TABLE or FROM",
        );
        check(
            "SELECT `x; DELETE FROM t",
            "refused: the model is not a single read-only query: it has a quoted name that is never closed (a `` ` `` is missing)",
        );
        check(
            "SELECT `a` FROM t; DELETE FROM t",
            "refused: the model is not a single read-only query: it contains more than one statement (a `;` is followed by `DELETE`); a model must be one query, so remove everything after the first `;`",
        );
    }

    /// Snowflake and BigQuery run a model outside any read-only transaction, so a WITH
    /// clause feeding a write is refused here rather than left to the role's grants.
    #[test]
    fn a_with_clause_feeding_a_write_is_refused() {
        check(
            "WITH gone AS (SELECT id FROM t WHERE (a) > 1) DELETE FROM t WHERE id IN (SELECT id FROM gone)",
            "refused: the model is not a single read-only query: its WITH clause is followed by `DELETE`, which writes; a model must be a read-only query: end the WITH clause with a SELECT",
        );
        check(
            "with a as (select 1), b as materialized (select 2) insert into t select * from a",
            "refused: the model is not a single read-only query: its WITH clause is followed by `insert`, which writes; a model must be a read-only query: end the WITH clause with a SELECT",
        );
        check(
            "WITH a AS (SELECT 1 AS x) SELECT x, (x) AS y FROM a",
            "ok: WITH a AS (SELECT 1 AS x) SELECT x, (x) AS y FROM a",
        );
        check(
            "SELECT * EXCEPT (a) REPLACE (b + 1 AS b) FROM t",
            "ok: SELECT * EXCEPT (a) REPLACE (b + 1 AS b) FROM t",
        );
    }

    #[test]
    fn other_statements_are_refused_with_the_reason() {
        check(
            "DELETE FROM customers",
            "refused: the model is not a single read-only query: it starts with `DELETE`, but a model must be a read-only query starting with SELECT, WITH, VALUES, TABLE or FROM",
        );
        check(
            "SELECT 1; DROP TABLE t",
            "refused: the model is not a single read-only query: it contains more than one statement (a `;` is followed by `DROP`); a model must be one query, so remove everything after the first `;`",
        );
        check(
            "/* hidden */ insert into t values (1)",
            "refused: the model is not a single read-only query: it starts with `insert`, but a model must be a read-only query starting with SELECT, WITH, VALUES, TABLE or FROM",
        );
        check(
            "  -- nothing\n ; ",
            "refused: the model is not a single read-only query: the model is empty; write a SELECT query",
        );
        check(
            "",
            "refused: the model is not a single read-only query: the model is empty; write a SELECT query",
        );
        check(
            "SELECT 'oops",
            "refused: the model is not a single read-only query: it has a string literal that is never closed (a `'` is missing)",
        );
        check(
            "SELECT 1 /* open",
            "refused: the model is not a single read-only query: it has a `/*` comment that is never closed",
        );
    }
}
