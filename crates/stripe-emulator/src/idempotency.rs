//! Stripe's idempotency layer: the first request with a key runs and its response is stored; a
//! retry with the same key and parameters gets that response again, a retry with other
//! parameters gets 400, and a retry while the first still runs gets 409.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use serde_json::{Map, Value};

/// What a request is, for comparing a retry with the first use of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// `POST /v1/customers/cus_123`.
    pub method_and_path: String,
    /// The decoded params with keys sorted, so that parameter order does not matter.
    pub canonical_params: String,
}

impl Fingerprint {
    pub(crate) fn new(method_and_path: String, params: &Map<String, Value>) -> Fingerprint {
        Fingerprint {
            method_and_path,
            canonical_params: canonical_json(&Value::Object(params.clone())),
        }
    }
}

/// A response as first sent, replayed byte for byte.
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    pub status: u16,
    pub body: Bytes,
    pub request_id: String,
}

/// The outcome of presenting a key.
#[derive(Debug)]
pub(crate) enum Claim {
    /// First use: run the request, then `complete`.
    Execute,
    Replay(StoredResponse),
    InUse,
    /// Same key, other endpoint or path: (first use, this use).
    OtherEndpoint {
        first: String,
    },
    OtherParams,
}

enum Entry {
    Running(Fingerprint),
    Done(Fingerprint, StoredResponse),
}

/// Keys are scoped per API key, as on Stripe. Entries never expire (Stripe keeps them at least
/// 24 hours); `reset` forgets them.
#[derive(Default)]
pub(crate) struct IdempotencyStore {
    entries: HashMap<(String, String), Entry>,
}

impl IdempotencyStore {
    pub(crate) fn claim(&mut self, api_key: &str, key: &str, fingerprint: &Fingerprint) -> Claim {
        let scoped = (api_key.to_owned(), key.to_owned());
        let (first, stored) = match self.entries.get(&scoped) {
            None => {
                self.entries
                    .insert(scoped, Entry::Running(fingerprint.clone()));
                return Claim::Execute;
            }
            Some(Entry::Running(first)) => (first, None),
            Some(Entry::Done(first, stored)) => (first, Some(stored)),
        };
        if first.method_and_path != fingerprint.method_and_path {
            return Claim::OtherEndpoint {
                first: first.method_and_path.clone(),
            };
        }
        if first.canonical_params != fingerprint.canonical_params {
            return Claim::OtherParams;
        }
        match stored {
            Some(stored) => Claim::Replay(stored.clone()),
            None => Claim::InUse,
        }
    }

    pub(crate) fn complete(&mut self, api_key: &str, key: &str, response: StoredResponse) {
        let scoped = (api_key.to_owned(), key.to_owned());
        if let Some(Entry::Running(fingerprint)) = self.entries.remove(&scoped) {
            self.entries
                .insert(scoped, Entry::Done(fingerprint, response));
        }
    }

    /// Releases a key whose request stopped before producing a response.
    pub(crate) fn abandon(&mut self, api_key: &str, key: &str) {
        let scoped = (api_key.to_owned(), key.to_owned());
        if matches!(self.entries.get(&scoped), Some(Entry::Running(_))) {
            self.entries.remove(&scoped);
        }
    }
}

/// JSON text with object keys sorted at every level.
fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(object) => {
                let ordered: BTreeMap<&String, Value> = object
                    .iter()
                    .map(|(key, child)| (key, sorted(child)))
                    .collect();
                Value::Object(
                    ordered
                        .into_iter()
                        .map(|(key, child)| (key.clone(), child))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fingerprint(path: &str, params: Value) -> Fingerprint {
        Fingerprint::new(path.to_owned(), params.as_object().unwrap())
    }

    #[test]
    fn lifecycle_of_a_key() {
        let mut store = IdempotencyStore::default();
        let create = fingerprint("POST /v1/customers", json!({"email": "a", "name": "b"}));
        let same_reordered = fingerprint("POST /v1/customers", json!({"name": "b", "email": "a"}));
        assert!(matches!(store.claim("sk", "k", &create), Claim::Execute));
        assert!(matches!(
            store.claim("sk", "k", &same_reordered),
            Claim::InUse
        ));
        assert!(matches!(
            store.claim("other_sk", "k", &create),
            Claim::Execute
        ));
        store.complete(
            "sk",
            "k",
            StoredResponse {
                status: 200,
                body: Bytes::from_static(b"{}"),
                request_id: "req_1".into(),
            },
        );
        assert!(
            matches!(store.claim("sk", "k", &same_reordered), Claim::Replay(stored) if stored.status == 200)
        );
        let changed = fingerprint("POST /v1/customers", json!({"email": "z"}));
        assert!(matches!(
            store.claim("sk", "k", &changed),
            Claim::OtherParams
        ));
        let elsewhere = fingerprint(
            "POST /v1/customers/cus_1",
            json!({"email": "a", "name": "b"}),
        );
        assert!(matches!(
            store.claim("sk", "k", &elsewhere),
            Claim::OtherEndpoint { .. }
        ));
        store.abandon("other_sk", "k");
        assert!(matches!(
            store.claim("other_sk", "k", &create),
            Claim::Execute
        ));
    }
}
