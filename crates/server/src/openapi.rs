//! The OpenAPI document, generated from the handlers' annotations and the types they use, so it
//! cannot drift from the code. Served at `/api/openapi.json`.
//!
//! What every operation shares is added here rather than on each handler: a unique operation
//! id, the error answers that the extractors and the authentication give (401 everywhere; 400,
//! 413, 415 and 422 for a JSON body; 400 for a malformed query or path; 500), and the name
//! pattern on every name a request gives.

use crate::api::{alerts, connections, models, runs, sequences, syncs};
use crate::AppState;
use axum::Json;
use ferry_engine::connections::SettingValue;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry",
        description = "Reverse ETL into Stripe: connections, models, syncs and their runs. Every route takes an API token as `Authorization: Bearer ferry_…` (create one with `ferry token create NAME`). Errors answer `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        connections::list, connections::show, connections::create, connections::replace,
        connections::remove, connections::test, connections::kinds,
        models::list, models::show, models::create, models::replace, models::remove,
        models::preview, models::preview_query,
        syncs::list, syncs::show, syncs::create, syncs::replace, syncs::remove,
        syncs::preview, syncs::start_run, syncs::pause, syncs::resume,
        sequences::list, sequences::show, sequences::create, sequences::replace,
        sequences::remove, sequences::start_run, sequences::runs, sequences::show_run,
        runs::list, runs::queue, runs::show, runs::cancel, runs::records, runs::record, runs::records_csv,
        alerts::show, alerts::put_defaults, alerts::deliveries,
        crate::metrics::serve_metrics,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "connections", description = "Stripe accounts and warehouses"),
        (name = "models", description = "SQL queries that select the rows to sync"),
        (name = "syncs", description = "Model → Stripe, previews and runs"),
        (name = "sequences", description = "Syncs run one after another, stopping when a step fails or rejects too many rows"),
        (name = "runs", description = "Run status and per-record outcomes"),
        (name = "alerts", description = "Alert defaults, raised alerts, and deliveries of events to alert channels"),
        (name = "monitoring", description = "Metrics for Prometheus"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The request bodies whose `name` creates an object.
const NAMED_INPUTS: &[&str] = &[
    "ConnectionInput",
    "ModelInput",
    "SyncInput",
    "SequenceInput",
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

pub fn openapi_document() -> Value {
    let mut document =
        serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document is JSON");
    complete(&mut document);
    document
}

/// The fields of `ConnectionInput` besides `name`, `kind` and `skip_test`: every kind's
/// settings and secret fields, from the registry of connection kinds, each saying which kinds
/// take it. `kind` lists the kinds.
fn connection_input(schema: &mut Value) {
    use ferry_engine::connections::REGISTRY;
    let Some(properties) = schema["properties"].as_object_mut() else {
        return;
    };
    let kinds: Vec<&str> = REGISTRY.iter().map(|spec| spec.kind.as_str()).collect();
    properties.insert(
        "kind".into(),
        serde_json::json!({"type": "string", "enum": kinds,
            "description": "The kind of connection: `stripe`, or a warehouse."}),
    );
    let mut fields: Vec<(String, Value, String, Vec<&str>)> = Vec::new();
    let mut add = |key: &str, schema: Value, help: String, kind: &'static str| match fields
        .iter_mut()
        .find(|(name, ..)| name == key)
    {
        Some((.., kinds)) => kinds.push(kind),
        None => fields.push((key.to_string(), schema, help, vec![kind])),
    };
    for spec in &REGISTRY {
        let kind = spec.kind.as_str();
        if let Some(secret) = &spec.secret {
            add(
                secret.value_field,
                serde_json::json!({"type": "string", "writeOnly": true}),
                format!(
                    "The {} itself, stored encrypted. {}.",
                    secret.what, secret.help
                ),
                kind,
            );
            add(
                secret.env_field,
                serde_json::json!({"type": "string"}),
                format!(
                    "The environment variable of the server that holds the {}.",
                    secret.what
                ),
                kind,
            );
        }
        for setting in spec.settings {
            let mut schema = serde_json::json!({"type": setting.value.json_type()});
            match setting.value {
                SettingValue::Paths => schema["items"] = serde_json::json!({"type": "string"}),
                SettingValue::Seconds => {
                    schema["minimum"] = 0.into();
                    schema["maximum"] = ferry_engine::declare::MAX_TIMEOUT_SECONDS.into();
                }
                SettingValue::Count => schema["minimum"] = 0.into(),
                SettingValue::Text | SettingValue::Path => {}
            }
            add(setting.key, schema, format!("{}.", setting.help), kind);
        }
    }
    for (key, mut schema, help, kinds) in fields {
        schema["description"] = format!("{} ({}.)", help, kinds.join(", ")).into();
        // OpenAPI 3.1: a field may be null, meaning "not set".
        schema["type"] = serde_json::json!([schema["type"].clone(), "null"]);
        properties.insert(key, schema);
    }
    schema["additionalProperties"] = false.into();
}

fn complete(document: &mut Value) {
    connection_input(&mut document["components"]["schemas"]["ConnectionInput"]);
    let pattern = Value::from(ferry_state::NAME_PATTERN);
    let name_rule = format!("{}.", capitalized(ferry_state::NAME_RULE));
    for schema in NAMED_INPUTS {
        let name = &mut document["components"]["schemas"][*schema]["properties"]["name"];
        if let Some(name) = name.as_object_mut() {
            name.insert("pattern".into(), pattern.clone());
            let description = name
                .get("description")
                .and_then(Value::as_str)
                .map_or(name_rule.clone(), |d| format!("{d} {name_rule}"));
            name.insert("description".into(), description.into());
        }
    }
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        for method in METHODS {
            if let Some(operation) = item.get_mut(*method).and_then(Value::as_object_mut) {
                complete_operation(operation, &pattern, &name_rule);
            }
        }
    }
}

fn complete_operation(operation: &mut Map<String, Value>, pattern: &Value, name_rule: &str) {
    // utoipa names an operation after its function (`list`, `show`, …), which repeats across
    // tags; ids must be unique, so the tag goes in front.
    let tag = operation["tags"][0].as_str().unwrap_or("api").to_string();
    if let Some(id) = operation.get("operationId").and_then(Value::as_str) {
        if !id.starts_with(&format!("{tag}_")) {
            let unique = format!("{tag}_{id}");
            operation.insert("operationId".into(), unique.into());
        }
    }
    let mut malformed = Vec::new();
    let mut invalid_name = false;
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters.iter_mut() {
            if parameter["in"] == "path" && parameter["name"] == "name" {
                parameter["schema"]["pattern"] = pattern.clone();
                parameter["description"] = name_rule.into();
                invalid_name = true;
            }
        }
        if parameters.iter().any(|p| p["in"] == "query") {
            malformed.push("a query parameter is malformed (for example `limit=ten`)");
        }
        if parameters.iter().any(|p| p["in"] == "path") {
            malformed.push("a path segment is not valid UTF-8 text");
        }
    }
    let body = operation.get("requestBody").cloned();
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses are an object");
    if let Some(body) = &body {
        let required = body["required"].as_bool().unwrap_or(false);
        malformed.insert(0, "the body is not valid JSON");
        add_error(responses, "413", "the body is larger than 1 MiB");
        if required {
            add_error(
                responses,
                "415",
                "the body is not sent as `Content-Type: application/json`",
            );
        }
        add_error(
            responses,
            "422",
            "the body has a field of the wrong type, an unknown field, or misses a required one",
        );
    }
    if !malformed.is_empty() {
        add_error(responses, "400", &malformed.join("; or "));
    }
    if invalid_name {
        add_error(responses, "422", "the name in the path is not a valid name");
    }
    add_error(
        responses,
        "401",
        "no API token, or one that is not valid (revoked, or never created)",
    );
    if let Some(unauthorized) = responses.get_mut("401").and_then(Value::as_object_mut) {
        unauthorized.insert(
            "headers".into(),
            json!({"WWW-Authenticate": {
                "description": "`Bearer realm=\"ferry\"`, with `error=\"invalid_token\"` when a token was sent",
                "schema": {"type": "string"}
            }}),
        );
    }
    add_error(
        responses,
        "500",
        "the workspace database failed; the server log has the details",
    );
    // Annotations that named only a status get a description for it; all read as sentences.
    for (status, response) in responses.iter_mut() {
        let description = match response["description"].as_str() {
            None | Some("") => default_description(status).to_string(),
            Some(text) => capitalized(text),
        };
        response["description"] = description.into();
    }
}

/// Adds an error answer with the error body, or extends the description of the one there.
fn add_error(responses: &mut Map<String, Value>, status: &str, description: &str) {
    match responses.get_mut(status) {
        Some(existing) => {
            let before = existing["description"].as_str().unwrap_or_default();
            if before.is_empty() {
                existing["description"] = capitalized(description).into();
            } else if !before.contains(description) {
                existing["description"] = format!("{before}; or {description}").into();
            }
        }
        None => {
            responses.insert(
                status.to_string(),
                json!({
                    "description": capitalized(description),
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                }),
            );
        }
    }
}

fn default_description(status: &str) -> &'static str {
    match status {
        "200" | "201" | "202" => "Done",
        "204" => "Removed",
        "404" => "Not found: the error says which object does not exist",
        "409" => "Conflict with the workspace's state",
        "422" => "Invalid input",
        "502" => "The warehouse or Stripe failed",
        _ => "See the error body",
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub async fn serve_document(_: axum::extract::State<AppState>) -> Json<Value> {
    Json(openapi_document())
}

#[cfg(test)]
mod tests {
    use super::openapi_document;
    use serde_json::Value;

    fn operation<'a>(document: &'a Value, method: &str, path: &str) -> &'a Value {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        operation
    }

    /// Where each parameter is declared: `name` → `in`.
    fn parameters(operation: &Value) -> Vec<(String, String)> {
        operation["parameters"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap().to_string(),
                            p["in"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn query_parameters_are_declared_in_the_query() {
        let document = openapi_document();
        type Expected<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
        let expected: &[Expected] = &[
            (
                "get",
                "/api/v1/runs",
                &[("sync", "query"), ("limit", "query")],
            ),
            (
                "get",
                "/api/v1/runs/{id}/records",
                &[
                    ("id", "path"),
                    ("outcome", "query"),
                    ("after", "query"),
                    ("limit", "query"),
                ],
            ),
            (
                "get",
                "/api/v1/runs/{id}/records.csv",
                &[("id", "path"), ("outcome", "query")],
            ),
            (
                "post",
                "/api/v1/models/{name}/preview",
                &[("name", "path"), ("limit", "query")],
            ),
        ];
        for (method, path, wanted) in expected {
            let found = parameters(operation(&document, method, path));
            let wanted: Vec<(String, String)> = wanted
                .iter()
                .map(|(n, i)| (n.to_string(), i.to_string()))
                .collect();
            assert_eq!(found, wanted, "{method} {path}");
        }
        // And no path parameter anywhere that the path does not name.
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (name, place) in parameters(operation) {
                    if place == "path" {
                        assert!(
                            path.contains(&format!("{{{name}}}")),
                            "{method} {path}: {name}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn preview_cells_are_scalars() {
        let document = openapi_document();
        let rows = &document["components"]["schemas"]["RowsPreview"]["properties"]["rows"];
        assert_eq!(rows["type"], "array");
        assert_eq!(rows["items"]["type"], "array");
        let mut types: Vec<&str> = rows["items"]["items"]["type"]
            .as_array()
            .expect("a list of types")
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        types.sort_unstable();
        assert_eq!(types, ["boolean", "null", "number", "string"]);
    }

    #[test]
    fn every_operation_documents_its_errors_with_the_error_body() {
        let document = openapi_document();
        let error_body = "#/components/schemas/ErrorBody";
        assert!(document["components"]["schemas"]["ErrorBody"].is_object());
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "operationId {id} repeats");
                let responses = operation["responses"].as_object().unwrap();
                let mut expected = vec!["401", "500"];
                if operation.get("requestBody").is_some() {
                    expected.extend(["400", "413", "422"]);
                }
                if parameters(operation).iter().any(|(_, i)| i == "query") {
                    expected.push("400");
                }
                if path.contains("{name}") {
                    expected.extend(["404", "422"]);
                }
                if path.contains("{id}") {
                    expected.push("404");
                }
                for status in expected {
                    let response = &responses
                        .get(status)
                        .unwrap_or_else(|| panic!("{method} {path} documents no {status}"));
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"], error_body,
                        "{method} {path} {status}"
                    );
                    assert!(
                        !response["description"].as_str().unwrap().is_empty(),
                        "{method} {path} {status}"
                    );
                }
                for (status, response) in responses {
                    assert!(
                        !response["description"]
                            .as_str()
                            .unwrap_or_default()
                            .is_empty(),
                        "{method} {path} {status} has no description"
                    );
                }
            }
        }
        let create_sync = operation(&document, "post", "/api/v1/syncs");
        for status in ["409", "415"] {
            assert!(create_sync["responses"].get(status).is_some(), "{status}");
        }
        let start_run = operation(&document, "post", "/api/v1/syncs/{name}/runs");
        assert!(start_run["responses"].get("409").is_some());
    }

    #[test]
    fn names_carry_their_pattern() {
        let document = openapi_document();
        let pattern = ferry_state::NAME_PATTERN;
        assert_eq!(pattern, "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$");
        for schema in super::NAMED_INPUTS {
            assert_eq!(
                document["components"]["schemas"][*schema]["properties"]["name"]["pattern"],
                pattern,
                "{schema}"
            );
        }
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["name"] == "name" {
                        assert_eq!(parameter["schema"]["pattern"], pattern, "{method} {path}");
                    }
                }
            }
        }
    }
}
