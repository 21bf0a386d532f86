//! HTML form bodies (`application/x-www-form-urlencoded`), read strictly.
//!
//! `form_urlencoded::parse`, and so axum's `Form`, decode a value that is not UTF-8 into U+FFFD
//! without a word, so a byte the browser never sent would be saved. Every form the UI receives
//! is checked here first and refused with 400 when a name or value is not UTF-8, as the API
//! refuses a JSON body that is not.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Why a form body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedForm(pub String);

/// The fields of a form body, in order (repeated names kept), each name and value
/// percent-decoded with `+` as a space, as browsers encode them.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, MalformedForm> {
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let name = decode(name).ok_or_else(|| {
                MalformedForm(
                    "a form field's name is not valid UTF-8 text; send the form from the page again"
                        .to_string(),
                )
            })?;
            let value = decode(value).ok_or_else(|| {
                MalformedForm(format!(
                    "the form field {name:?} is not valid UTF-8 text; send the form from the page again"
                ))
            })?;
            Ok((name, value))
        })
        .collect()
}

fn decode(part: &[u8]) -> Option<String> {
    let mut bytes = Vec::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        match part[i] {
            b'+' => bytes.push(b' '),
            b'%' => match (hex(part.get(i + 1)), hex(part.get(i + 2))) {
                (Some(high), Some(low)) => {
                    bytes.push(high * 16 + low);
                    i += 2;
                }
                // Like browsers and form_urlencoded: a '%' not followed by two hex digits is
                // itself.
                _ => bytes.push(b'%'),
            },
            other => bytes.push(other),
        }
        i += 1;
    }
    String::from_utf8(bytes).ok()
}

fn hex(byte: Option<&u8>) -> Option<u8> {
    let byte = *byte?;
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// UI requests that send a body (POST): the body must be a form whose names and values are
/// UTF-8, or the answer is 400 and no handler sees it.
pub async fn reject_malformed_forms(request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, crate::MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return crate::ui::Page::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "This form is larger than ferry accepts (1 MiB).",
            )
            .into_response()
        }
    };
    if let Err(MalformedForm(problem)) = parse_form(&bytes) {
        return crate::ui::Page::bad_request(problem).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(body: &[u8]) -> Vec<(String, String)> {
        parse_form(body).expect("a valid form")
    }

    #[test]
    fn fields_decode_as_browsers_encode_them() {
        assert_eq!(
            pairs(b"name=a+b&x=%C3%A9t%C3%A9&x=2&empty=&flag&pct=100%&odd=%zz"),
            [
                ("name", "a b"),
                ("x", "été"),
                ("x", "2"),
                ("empty", ""),
                ("flag", ""),
                ("pct", "100%"),
                ("odd", "%zz"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert!(pairs(b"").is_empty());
        assert_eq!(pairs(b"a=%3D%26"), [("a".to_string(), "=&".to_string())]);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_not_replaced() {
        let error = parse_form(b"name=ok&behavior=%FF%FE").unwrap_err();
        assert!(
            error.0.contains("\"behavior\" is not valid UTF-8"),
            "{error:?}"
        );
        assert!(parse_form(b"name=\xff").is_err());
        assert!(parse_form(b"%C3=1").is_err());
        // U+FFFD sent on purpose is text like any other.
        assert_eq!(
            pairs(b"a=%EF%BF%BD"),
            [("a".to_string(), "\u{fffd}".to_string())]
        );
    }
}
