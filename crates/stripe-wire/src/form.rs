//! Stripe's request encoding: `application/x-www-form-urlencoded` with bracket nesting, both ways.
//!
//! Stripe never takes JSON request bodies. Nested objects are written `a[b][c]=v` and arrays
//! `a[0]=x&a[1]=y`. [`encode`] turns a JSON object into such a body and [`decode`] turns a body
//! (or a query string) back into a JSON object whose leaves are all strings, because the wire
//! carries no types: `balance=12` is the text `"12"` until a parameter spec says it is an integer.
//!
//! # Round trip and its exceptions
//! For every object whose leaves are strings, `decode(&encode(x)) == x`, except:
//! - a key that contains `[` or `]` cannot be told apart from nesting, so it does not survive
//!   (Stripe forbids brackets in metadata keys for this reason);
//! - an empty key, and an object whose keys are exactly `"0"`, `"1"`, … `"n-1"` (such an object is
//!   written like an array and decodes as one);
//! - empty objects and empty arrays write nothing, so they vanish;
//! - `null` is written as the empty string (Stripe's "unset"), and numbers and booleans as text.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// Encode a JSON object as a Stripe form body: nested objects as `a[b][c]=v`, arrays as
/// `a[0]=x&a[1]=y`, strings raw, numbers as decimal text, bools `true`/`false`, null and "" as
/// the empty string (Stripe's "unset"). Keys in object order.
///
/// Each key segment and each value is percent-encoded with `form_urlencoded` (spaces become `+`);
/// the brackets between segments are written as they are, which keeps bodies readable in logs and
/// snapshots (Stripe accepts both raw and `%5B`/`%5D` brackets).
pub fn encode(params: &Map<String, Value>) -> String {
    let mut body = String::new();
    for (key, value) in params {
        let encoded_key: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
        encode_value(&mut body, &encoded_key, value);
    }
    body
}

/// One percent-encoded URL component (a path segment such as a record id): every byte but
/// ASCII letters, digits and `*-._` is escaped, a space as `%20`.
pub fn encode_component(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Decode a form body or query string into a JSON object whose leaves are all strings.
///
/// `a[b]=` nests, `a[0]=`/`a[]=` build arrays. A container whose keys are exactly the indexes
/// `0..n` (in any order) becomes an array sorted by index; any other container stays an object in
/// the order its keys first appeared. Sending the same leaf twice keeps the last value, as Rack
/// and Stripe do. Malformed brackets, or a key used both as a leaf and as an object, are a
/// [`FormError`] naming the key.
pub fn decode(body: &str) -> Result<Map<String, Value>, FormError> {
    let mut root = Container::default();
    for (raw_key, value) in form_urlencoded::parse(body.as_bytes()) {
        if raw_key.is_empty() && value.is_empty() {
            continue;
        }
        let segments = split_key(&raw_key)?;
        insert(&mut root, &segments, value.into_owned(), &raw_key)?;
    }
    Ok(root.into_object())
}

/// The text a leaf is written as on the wire: strings as they are, numbers as decimal text,
/// booleans as `true`/`false`, `null` as "" (Stripe's unset). `None` for objects and arrays.
pub fn leaf_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) => Some(Cow::Borrowed(text)),
        Value::Number(number) => Some(Cow::Owned(number.to_string())),
        Value::Bool(flag) => Some(Cow::Borrowed(if *flag { "true" } else { "false" })),
        Value::Null => Some(Cow::Borrowed("")),
        Value::Object(_) | Value::Array(_) => None,
    }
}

/// A form body that cannot be read as Stripe parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("malformed parameter name `{key}`: nesting must look like `a[b][c]`, with balanced brackets")]
    MalformedKey { key: String },
    #[error("parameter `{key}` is given both as a single value and as an object or array")]
    Conflict { key: String },
}

impl FormError {
    /// The parameter name as the client sent it.
    pub fn key(&self) -> &str {
        match self {
            FormError::MalformedKey { key } | FormError::Conflict { key } => key,
        }
    }

    /// The 400 Stripe answers for a body it cannot parse.
    pub fn to_stripe_error(&self) -> crate::error::StripeError {
        let message = match self {
            FormError::MalformedKey { key } => format!("Invalid parameter name: {key}"),
            FormError::Conflict { key } => {
                format!("Invalid hash: {key} is given both as a value and as a hash or array")
            }
        };
        crate::error::StripeError::invalid_request(message).with_param(self.key())
    }
}

fn encode_value(body: &mut String, encoded_key: &str, value: &Value) {
    match value {
        Value::Object(children) => {
            for (child_key, child_value) in children {
                let child: String = form_urlencoded::byte_serialize(child_key.as_bytes()).collect();
                encode_value(body, &format!("{encoded_key}[{child}]"), child_value);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                encode_value(body, &format!("{encoded_key}[{index}]"), item);
            }
        }
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {
            let text = leaf_text(value).expect("scalars have a text form");
            push_pair(body, encoded_key, &text);
        }
    }
}

fn push_pair(body: &mut String, encoded_key: &str, text: &str) {
    if !body.is_empty() {
        body.push('&');
    }
    body.push_str(encoded_key);
    body.push('=');
    body.extend(form_urlencoded::byte_serialize(text.as_bytes()));
}

/// One step of a bracketed key: `name`, `[child]`, or `[]` (append to an array).
#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Name(&'a str),
    Append,
}

/// Split `a[b][]` into `[Name(a), Name(b), Append]`.
fn split_key(key: &str) -> Result<Vec<Segment<'_>>, FormError> {
    let malformed = || FormError::MalformedKey {
        key: key.to_owned(),
    };
    let base_end = key.find('[').unwrap_or(key.len());
    let base = &key[..base_end];
    if base.is_empty() {
        return Err(malformed());
    }
    let mut segments = vec![Segment::Name(base)];
    let mut rest = &key[base_end..];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(malformed)?;
        let close = inner.find(']').ok_or_else(malformed)?;
        let segment = &inner[..close];
        if segment.contains('[') {
            return Err(malformed());
        }
        segments.push(if segment.is_empty() {
            Segment::Append
        } else {
            Segment::Name(segment)
        });
        rest = &inner[close + 1..];
    }
    Ok(segments)
}

/// The tree being decoded. Containers keep insertion order and decide at the end whether they
/// are arrays (keys exactly `0..n`) or objects.
enum Node {
    Leaf(String),
    Container(Container),
}

#[derive(Default)]
struct Container {
    entries: Vec<(String, Node)>,
}

impl Container {
    fn position(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(existing, _)| existing == key)
    }

    fn into_object(self) -> Map<String, Value> {
        self.entries
            .into_iter()
            .map(|(key, node)| (key, node.into_value()))
            .collect()
    }

    fn into_value(self) -> Value {
        match self.array_order() {
            Some(order) => {
                let mut slots: Vec<Option<Node>> = self
                    .entries
                    .into_iter()
                    .map(|(_, node)| Some(node))
                    .collect();
                Value::Array(
                    order
                        .into_iter()
                        .filter_map(|entry| slots[entry].take().map(Node::into_value))
                        .collect(),
                )
            }
            None => Value::Object(self.into_object()),
        }
    }

    /// If the keys are exactly the canonical indexes `0..n`, the entry positions sorted by index.
    fn array_order(&self) -> Option<Vec<usize>> {
        let count = self.entries.len();
        if count == 0 {
            return None;
        }
        let mut order = vec![usize::MAX; count];
        for (position, (key, _)) in self.entries.iter().enumerate() {
            let index = parse_canonical_index(key)?;
            if index >= count || order[index] != usize::MAX {
                return None;
            }
            order[index] = position;
        }
        Some(order)
    }
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Leaf(text) => Value::String(text),
            Node::Container(container) => container.into_value(),
        }
    }
}

/// `"0"`, `"1"`, `"42"` but not `"01"`, `"+1"` or `""`.
fn parse_canonical_index(key: &str) -> Option<usize> {
    if key.is_empty() || !key.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    if key.len() > 1 && key.starts_with('0') {
        return None;
    }
    key.parse().ok()
}

fn insert(
    container: &mut Container,
    segments: &[Segment<'_>],
    value: String,
    raw_key: &str,
) -> Result<(), FormError> {
    let conflict = || FormError::Conflict {
        key: raw_key.to_owned(),
    };
    let (first, rest) = segments
        .split_first()
        .expect("split_key never returns no segments");
    let key = match first {
        Segment::Name(name) => (*name).to_owned(),
        Segment::Append => {
            // `a[][name]=x&a[][value]=y` fills one element until a key repeats, as in Rack.
            let reuse_last = match (rest.first(), container.entries.last()) {
                (Some(Segment::Name(next)), Some((_, Node::Container(last)))) => {
                    last.position(next).is_none()
                }
                _ => false,
            };
            if reuse_last {
                container.entries.last().expect("checked above").0.clone()
            } else {
                let mut next_index = container.entries.len();
                while container.position(&next_index.to_string()).is_some() {
                    next_index += 1;
                }
                next_index.to_string()
            }
        }
    };
    let position = container.position(&key);
    if rest.is_empty() {
        match position {
            Some(index) => match &mut container.entries[index].1 {
                Node::Leaf(existing) => *existing = value,
                Node::Container(_) => return Err(conflict()),
            },
            None => container.entries.push((key, Node::Leaf(value))),
        }
        return Ok(());
    }
    let index = match position {
        Some(index) => index,
        None => {
            container
                .entries
                .push((key, Node::Container(Container::default())));
            container.entries.len() - 1
        }
    };
    match &mut container.entries[index].1 {
        Node::Container(child) => insert(child, rest, value, raw_key),
        Node::Leaf(_) => Err(conflict()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};
    use proptest::prelude::*;
    use serde_json::json;

    fn check_encode(params: Value, expected: Expect) {
        let body = encode(params.as_object().expect("test params are an object"));
        expected.assert_eq(&body);
    }

    fn check_decode(body: &str, expected: Expect) {
        let rendered = match decode(body) {
            Ok(object) => serde_json::to_string(&object).expect("serializable"),
            Err(error) => format!("error: {error}"),
        };
        expected.assert_eq(&rendered);
    }

    #[test]
    fn encodes_nested_objects_arrays_and_scalars() {
        check_encode(
            json!({
                "email": "a+b@example.com",
                "metadata": {"plan": "pro & more", "seats": 3},
                "shipping": {"name": "Ann", "address": {"city": "Paris"}},
                "preferred_locales": ["fr", "en"],
                "tax_exempt": null,
                "description": "",
                "flag": true,
            }),
            expect![[
                r#"email=a%2Bb%40example.com&metadata[plan]=pro+%26+more&metadata[seats]=3&shipping[name]=Ann&shipping[address][city]=Paris&preferred_locales[0]=fr&preferred_locales[1]=en&tax_exempt=&description=&flag=true"#
            ]],
        );
    }

    #[test]
    fn encodes_keys_percent_encoded_per_segment() {
        check_encode(
            json!({"metadata": {"a b": "x", "é=": "y"}}),
            expect![[r#"metadata[a+b]=x&metadata[%C3%A9%3D]=y"#]],
        );
    }

    #[test]
    fn empty_containers_write_nothing() {
        check_encode(
            json!({"metadata": {}, "preferred_locales": []}),
            expect![[""]],
        );
    }

    #[test]
    fn decodes_brackets_arrays_and_escapes() {
        check_decode(
            "email=a%2Bb%40example.com&metadata%5Bplan%5D=pro+%26+more&shipping[address][city]=Paris&preferred_locales[1]=en&preferred_locales[0]=fr&tags[]=x&tags[]=y",
            expect![[r#"{"email":"a+b@example.com","metadata":{"plan":"pro & more"},"shipping":{"address":{"city":"Paris"}},"preferred_locales":["fr","en"],"tags":["x","y"]}"#]],
        );
    }

    #[test]
    fn decodes_appended_objects_like_rack() {
        check_decode(
            "fields[][name]=a&fields[][value]=1&fields[][name]=b&fields[][value]=2",
            expect![[r#"{"fields":[{"name":"a","value":"1"},{"name":"b","value":"2"}]}"#]],
        );
    }

    #[test]
    fn sparse_or_non_canonical_indexes_stay_objects() {
        check_decode(
            "metadata[5]=x&other[01]=y&mixed[0]=a&mixed[k]=b",
            expect![[r#"{"metadata":{"5":"x"},"other":{"01":"y"},"mixed":{"0":"a","k":"b"}}"#]],
        );
    }

    #[test]
    fn last_duplicate_leaf_wins_and_empty_pairs_are_skipped() {
        check_decode("name=a&&name=b&", expect![[r#"{"name":"b"}"#]]);
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        check_decode("", expect![[r#"{}"#]]);
    }

    #[test]
    fn malformed_brackets_are_errors_naming_the_key() {
        check_decode(
            "address[line1=x",
            expect![[
                r#"error: malformed parameter name `address[line1`: nesting must look like `a[b][c]`, with balanced brackets"#
            ]],
        );
        check_decode(
            "a[b]c=x",
            expect![[
                r#"error: malformed parameter name `a[b]c`: nesting must look like `a[b][c]`, with balanced brackets"#
            ]],
        );
        check_decode(
            "[a]=x",
            expect![[
                r#"error: malformed parameter name `[a]`: nesting must look like `a[b][c]`, with balanced brackets"#
            ]],
        );
        check_decode(
            "metadata[a[b]]=x",
            expect![[
                r#"error: malformed parameter name `metadata[a[b]]`: nesting must look like `a[b][c]`, with balanced brackets"#
            ]],
        );
    }

    #[test]
    fn a_key_used_as_leaf_and_object_is_a_conflict() {
        check_decode(
            "address=&address[city]=Paris",
            expect![[
                r#"error: parameter `address[city]` is given both as a single value and as an object or array"#
            ]],
        );
        check_decode(
            "address[city]=Paris&address=",
            expect![[
                r#"error: parameter `address` is given both as a single value and as an object or array"#
            ]],
        );
    }

    #[test]
    fn form_error_becomes_a_stripe_400_body() {
        let error = decode("a[b=1").unwrap_err();
        let stripe = error.to_stripe_error();
        assert_eq!(stripe.kind, "invalid_request_error");
        assert_eq!(stripe.param.as_deref(), Some("a[b"));
    }

    /// Keys without brackets, not empty, and not all digits (those decode as array indexes).
    fn key_strategy() -> impl Strategy<Value = String> {
        any::<String>().prop_filter("keys outside the documented exceptions", |key| {
            !key.is_empty()
                && !key.contains('[')
                && !key.contains(']')
                && !key.bytes().all(|byte| byte.is_ascii_digit())
        })
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(Value::String),
            "[ &=%+\\[\\]a-z]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(Value::Array),
                prop::collection::vec((key_strategy(), inner), 1..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decode_gives_back_what_encode_wrote(
            pairs in prop::collection::vec((key_strategy(), value_strategy()), 0..5)
        ) {
            let params: Map<String, Value> = pairs.into_iter().collect();
            let body = encode(&params);
            prop_assert_eq!(decode(&body), Ok(params), "body: {}", body);
        }
    }
}
