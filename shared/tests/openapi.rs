//! `openapi.yaml` describes what the handlers really do.
//!
//! Requests go through the same path API Gateway uses (`support::send`); every answer must use
//! a status the spec documents for that route and method, carry the headers the spec marks as
//! required, and have a body that validates against the documented schema (OpenAPI 3.1 schemas
//! are JSON Schema 2020-12, checked with `format` assertions on). The requests themselves are
//! checked against the spec too: those the handlers accept must be valid per the spec, and
//! the invalid ones the handlers refuse with 400 must be invalid per the spec.
//!
//! Adding a route: document it in `openapi.yaml`, then add a test that drives it through a
//! [`SpecCase`] and ends with [`SpecCase::assert_exercised_all_but`].

mod support;

use shared::keys::Org;
use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use shared::error::{ApiError, ErrorKind};
use shared::routes::{self, ROUTES};
use shared::AppState;
use support::{
    call, create_snapshot, download, jobs_state, jobs_state_with, new_org, send, state, state_with, token,
    worker_options, Answer,
};

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml");
const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

// ---------------------------------------------------------------------------------------------
// The spec, loaded once, with every `$ref` replaced by what it points to.
// ---------------------------------------------------------------------------------------------

/// `openapi.yaml` as written.
fn raw_spec() -> &'static Value {
    static RAW: OnceLock<Value> = OnceLock::new();
    RAW.get_or_init(|| {
        let text = std::fs::read_to_string(SPEC_PATH).unwrap_or_else(|e| panic!("read {SPEC_PATH}: {e}"));
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {SPEC_PATH}: {e}"))
    })
}

/// `openapi.yaml` with every local `$ref` inlined, so any schema in it is a standalone
/// JSON Schema.
fn spec() -> &'static Value {
    static RESOLVED: OnceLock<Value> = OnceLock::new();
    RESOLVED.get_or_init(|| resolve(raw_spec(), raw_spec(), 0))
}

/// Replaces `{"$ref": "#/..."}` with its (resolved) target. Siblings of a `$ref` are kept:
/// `description` / `summary` override the target's (Reference Object semantics), any other
/// sibling keyword is applied next to the target with `allOf` (Schema Object semantics).
fn resolve(root: &Value, node: &Value, depth: usize) -> Value {
    assert!(depth < 32, "$ref nesting deeper than 32: is a schema recursive?");
    match node {
        Value::Object(map) => {
            let siblings: Map<String, Value> =
                map.iter().filter(|(k, _)| *k != "$ref").map(|(k, v)| (k.clone(), resolve(root, v, depth))).collect();
            let Some(reference) = map.get("$ref") else { return Value::Object(siblings) };
            let reference = reference.as_str().unwrap_or_else(|| panic!("$ref must be a string: {reference}"));
            let pointer =
                reference.strip_prefix('#').unwrap_or_else(|| panic!("only local $refs are used: {reference}"));
            let target = root.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"));
            let mut resolved = resolve(root, target, depth + 1);
            let (annotations, keywords): (Map<String, Value>, Map<String, Value>) =
                siblings.into_iter().partition(|(k, _)| k == "description" || k == "summary");
            if !keywords.is_empty() {
                let mut wrapper = keywords;
                wrapper.insert("allOf".into(), json!([resolved]));
                resolved = Value::Object(wrapper);
            }
            if let Value::Object(obj) = &mut resolved {
                obj.extend(annotations);
            }
            resolved
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(root, v, depth)).collect()),
        other => other.clone(),
    }
}

/// The operation for `method` on `path_template`, resolved; panics when undocumented.
fn operation(method: &str, path_template: &str) -> &'static Value {
    let op = &spec()["paths"][path_template][method.to_ascii_lowercase()];
    assert!(op.is_object(), "openapi.yaml documents no {method} {path_template}");
    op
}

/// The parameters of an operation: the path item's, overridden by the operation's.
fn parameters(method: &str, path_template: &str) -> Vec<&'static Value> {
    let path_level = spec()["paths"][path_template]["parameters"].as_array().into_iter().flatten();
    let op_level: Vec<&Value> =
        operation(method, path_template)["parameters"].as_array().into_iter().flatten().collect();
    let key = |p: &Value| (p["name"].clone(), p["in"].clone());
    let mut out: Vec<&Value> = path_level.filter(|p| !op_level.iter().any(|o| key(o) == key(p))).collect();
    out.extend(op_level);
    out
}

/// The problems of `instance` against `schema` (empty when it validates).
fn schema_errors(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("openapi.yaml has an invalid schema ({e}): {schema}"));
    validator.iter_errors(instance).map(|e| format!("at `{}`: {e}", e.instance_path())).collect()
}

/// The documented response of `op` for `status`: exact, then `4XX`-style, then `default`.
fn documented_response(op: &Value, status: u16) -> Option<&Value> {
    let responses = &op["responses"];
    [status.to_string(), format!("{}XX", status / 100), "default".to_string()]
        .into_iter()
        .map(|key| &responses[key])
        .find(|r| r.is_object())
}

/// A header value as the JSON value its schema expects (numbers for numeric schemas).
fn header_instance(schema: &Value, raw: &str) -> Value {
    match schema["type"].as_str() {
        Some("integer" | "number") => serde_json::from_str::<serde_json::Number>(raw.trim())
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(raw.to_string())),
        Some("boolean") => {
            raw.trim().parse::<bool>().map(Value::Bool).unwrap_or_else(|_| Value::String(raw.to_string()))
        }
        _ => Value::String(raw.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// The checkers.
// ---------------------------------------------------------------------------------------------

/// Asserts that `answer`, given by `method` on the route `path_template`, is what the spec
/// documents: a documented status, every required header (valid against its schema), a
/// documented content type, and a body that validates against the documented schema.
fn assert_matches_spec(method: &str, path_template: &str, answer: &Answer) {
    let status = answer.status.as_u16();
    let op = operation(method, path_template);
    let context = || format!("{method} {path_template} answered {status} {}", String::from_utf8_lossy(&answer.bytes));
    let response = documented_response(op, status)
        .unwrap_or_else(|| panic!("status {status} is not documented for {method} {path_template}; {}", context()));

    if let Some(headers) = response["headers"].as_object() {
        for (name, header) in headers {
            let value =
                answer.headers.get(name.as_str()).map(|v| v.to_str().unwrap_or_else(|_| panic!("{name} not ASCII")));
            match value {
                None if header["required"] == true => panic!("required header {name} is missing; {}", context()),
                None => {}
                Some(raw) => {
                    let errors = schema_errors(&header["schema"], &header_instance(&header["schema"], raw));
                    assert!(
                        errors.is_empty(),
                        "header {name}: {raw:?} does not match the spec: {errors:?}; {}",
                        context()
                    );
                }
            }
        }
    }

    match response["content"].as_object() {
        None => assert!(answer.bytes.is_empty(), "the spec documents no body; {}", context()),
        Some(content) => {
            let content_type = answer
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("no Content-Type; {}", context()));
            let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            let media = content.get(&mime).unwrap_or_else(|| {
                let documented: Vec<&String> = content.keys().collect();
                panic!("content type {mime} is not documented for this status (only {documented:?}); {}", context())
            });
            let schema = &media["schema"];
            let body: Value = if is_json_media(&mime) {
                serde_json::from_slice(&answer.bytes)
                    .unwrap_or_else(|e| panic!("body is not JSON ({e}); {}", context()))
            } else {
                // A file that is not one JSON document (CSV, NDJSON): the spec describes it as
                // text (`type: string`, maybe with a `pattern`), and it is validated as that text.
                assert_eq!(schema["type"], "string", "{mime} must be documented as `type: string`; {}", context());
                let text = std::str::from_utf8(&answer.bytes)
                    .unwrap_or_else(|e| panic!("a {mime} body must be UTF-8 ({e}); {}", context()));
                if mime == "application/x-ndjson" {
                    for (i, line) in text.lines().enumerate() {
                        serde_json::from_str::<Value>(line)
                            .unwrap_or_else(|e| panic!("NDJSON line {} is not JSON ({e}); {}", i + 1, context()));
                    }
                    assert!(
                        text.is_empty() || text.ends_with('\n'),
                        "NDJSON must end with a line break; {}",
                        context()
                    );
                }
                Value::String(text.to_string())
            };
            let errors = schema_errors(schema, &body);
            assert!(errors.is_empty(), "body does not match the spec:\n  {}\n{}", errors.join("\n  "), context());
        }
    }
}

/// JSON media types (`application/json`, `application/*+json`): one JSON document.
fn is_json_media(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Every problem of a request against the spec: path, query and header parameters, request
/// body. `headers` are the request's headers other than `Authorization` and `Content-Type`;
/// `body` is the JSON sent (`None`: no body).
fn request_problems(
    method: &str,
    path_template: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Vec<String> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let path_params = routes::match_path(path_template, path).unwrap_or_else(|| panic!("{uri} is not {path_template}"));
    let query_params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (shared::gateway::percent_decode(k), shared::gateway::percent_decode(v)))
        // The handlers treat an empty query value as absent, and so does the spec.
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let mut problems = Vec::new();
    for param in parameters(method, path_template) {
        let name = param["name"].as_str().unwrap_or_default();
        let schema = &param["schema"];
        // A repeatable query parameter (`type: array`, form style, exploded): every value.
        if param["in"] == "query" && schema["type"] == "array" {
            assert!(param["explode"] != false, "{name}: only exploded arrays are used");
            let values: Vec<Value> = query_params
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| header_instance(&schema["items"], v))
                .collect();
            if values.is_empty() {
                if param["required"] == true {
                    problems.push(format!("parameter {name} is required"));
                }
            } else {
                let instance = Value::Array(values);
                for e in schema_errors(schema, &instance) {
                    problems.push(format!("parameter {name}={instance}: {e}"));
                }
            }
            continue;
        }
        let value = match param["in"].as_str() {
            Some("path") => {
                path_params.iter().find(|(k, _)| k == name).map(|(_, v)| shared::gateway::percent_decode(v))
            }
            Some("query") => query_params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            Some("header") => headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_string()),
            other => panic!("parameter {name} in {other:?}: extend request_problems"),
        };
        match value {
            None if param["required"] == true => problems.push(format!("parameter {name} is required")),
            None => {}
            Some(raw) => {
                for e in schema_errors(schema, &header_instance(schema, &raw)) {
                    problems.push(format!("parameter {name}={raw:?}: {e}"));
                }
            }
        }
    }
    for (header, _) in headers {
        let documented = parameters(method, path_template)
            .iter()
            .any(|p| p["in"] == "header" && p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(header)));
        if !documented {
            problems.push(format!("header {header} is not a documented parameter"));
        }
    }
    let request_body = &operation(method, path_template)["requestBody"];
    match (body, request_body.is_object()) {
        (None, true) if request_body["required"] == true => problems.push("a request body is required".into()),
        (None, _) => {}
        (Some(_), false) => problems.push("the spec documents no request body".into()),
        (Some(body), true) => {
            let schema = &request_body["content"]["application/json"]["schema"];
            assert!(
                schema.is_object(),
                "{method} {path_template}: request body must be documented as application/json"
            );
            problems.extend(schema_errors(schema, body).into_iter().map(|e| format!("body {e}")));
        }
    }
    problems
}

/// One route under test: checks every answer against the spec and remembers the statuses seen.
struct SpecCase {
    method: &'static str,
    path: &'static str,
    seen: BTreeSet<u16>,
}

impl SpecCase {
    fn new(method: &'static str, path: &'static str) -> Self {
        let route = ROUTES.iter().find(|r| r.method == method && r.path == path);
        assert!(route.is_some(), "{method} {path} is not in ROUTES");
        Self { method, path, seen: BTreeSet::new() }
    }

    /// Checks `answer` against the spec, asserts it has `status`, and returns it.
    fn check(&mut self, status: u16, answer: Answer) -> Answer {
        assert_eq!(answer.status.as_u16(), status, "{} {}: {}", self.method, self.path, answer.body);
        assert_matches_spec(self.method, self.path, &answer);
        self.seen.insert(status);
        answer
    }

    /// Asserts the spec accepts this request (one the handler accepted).
    fn request_valid(&self, uri: &str, body: Option<&Value>) {
        self.request_valid_with(uri, &[], body);
    }

    /// Asserts the spec rejects this request (one the handler refused with 400).
    fn request_invalid(&self, uri: &str, body: Option<&Value>) {
        self.request_invalid_with(uri, &[], body);
    }

    /// [`Self::request_valid`] for a request with these header parameters.
    fn request_valid_with(&self, uri: &str, headers: &[(&str, &str)], body: Option<&Value>) {
        let problems = request_problems(self.method, self.path, uri, headers, body);
        assert!(
            problems.is_empty(),
            "{} {uri} {headers:?}: the handler accepts it but the spec does not: {problems:?}",
            self.method
        );
    }

    /// [`Self::request_invalid`] for a request with these header parameters.
    fn request_invalid_with(&self, uri: &str, headers: &[(&str, &str)], body: Option<&Value>) {
        let problems = request_problems(self.method, self.path, uri, headers, body);
        assert!(
            !problems.is_empty(),
            "{} {uri} {headers:?} {body:?}: the handler refuses it but the spec allows it",
            self.method
        );
    }

    /// Asserts every documented status was produced, but `except` (those no request can produce).
    fn assert_exercised_all_but(&self, except: &[u16]) {
        let documented: BTreeSet<u16> = operation(self.method, self.path)["responses"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.parse().ok())
            .filter(|s| !except.contains(s))
            .collect();
        let missing: Vec<_> = documented.difference(&self.seen).collect();
        assert!(missing.is_empty(), "{} {}: documented statuses never exercised: {missing:?}", self.method, self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for requests.
// ---------------------------------------------------------------------------------------------

/// A state whose DynamoDB endpoint refuses connections, with retries off: every storage call
/// fails at once the way an unreachable or throttling DynamoDB does.
async fn unreachable_storage() -> AppState {
    let mut s = state().await;
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
    let config = s
        .dynamo
        .config()
        .to_builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    s.dynamo = aws_sdk_dynamodb::Client::from_conf(config).into();
    s
}

/// Sends raw bytes with these headers and, when `bearer` is given, a bearer token.
async fn raw(
    state: &AppState,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    if let Some(ct) = content_type {
        headers.push(("content-type", ct));
    }
    send(state, method, uri, &headers, body).await
}

/// A JSON body of `size` bytes (over the body limit when `size` is).
fn oversized_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"notes":""#.to_vec();
    body.resize(size - 2, b'a');
    body.extend_from_slice(br#""}"#);
    body
}

fn message(id: &str, from: &str, content: &str, ts: &str) -> Value {
    json!({ "id": id, "from": from, "content": content, "ts": ts })
}

/// A JSON request with a bearer token and extra headers (`Idempotency-Key`, `If-Match`).
async fn call_with(
    state: &AppState,
    method: &str,
    uri: &str,
    bearer: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let auth = format!("Bearer {bearer}");
    let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    send(state, method, uri, &headers, body.to_string().as_bytes()).await
}

/// A contact with one conversation (under agent `ag`) of these messages: `(id, from, ts)`.
/// `lead` is the conversation header (its `contactId` is set to `contact`).
async fn seed_contact(state: &AppState, tok: &str, contact: &str, mut lead: Value, messages: &[(&str, &str, &str)]) {
    lead["contactId"] = json!(contact);
    let convo = format!("/agents/ag/convos/convo-{contact}");
    let a = call(state, "PUT", &convo, tok, Some(lead)).await;
    assert!(a.status.is_success(), "{}", a.body);
    if messages.is_empty() {
        return;
    }
    let batch: Vec<Value> =
        messages.iter().map(|(id, from, ts)| message(id, from, &format!("text of {id}"), ts)).collect();
    let a = call(state, "POST", &format!("{convo}/messages"), tok, Some(json!({ "messages": batch }))).await;
    assert_eq!(a.status.as_u16(), 201, "{}", a.body);
}

/// A lead with every field, as Tether's examples have it.
fn full_lead() -> Value {
    json!({ "userName": "Jane Doe", "userPhone": "+14155550123", "userEmail": "jane@example.com", "origin": "sms" })
}

const FOUR_MESSAGES: &[(&str, &str, &str)] = &[
    ("m1", "user", "2026-05-18T13:30:00Z"),
    ("m2", "bot", "2026-05-18T13:31:00Z"),
    ("m3", "human", "2026-05-18T13:32:00Z"),
    ("m4", "user", "2026-05-18T13:33:00Z"),
];

const SNAPSHOTS: &str = "/api/training/snapshots";
const SNAPSHOT: &str = "/api/training/snapshots/{id}";

/// The exact 404 of every snapshot route.
fn snapshot_not_found() -> Value {
    json!({ "success": false, "message": "Training snapshot not found", "error": "NOT_FOUND" })
}

/// Asserts the `ETag` is the document's `updatedAt`, quoted.
fn assert_etag(a: &Answer) {
    let etag = a.headers.get("etag").and_then(|v| v.to_str().ok()).expect("an ETag");
    assert_eq!(etag, format!("\"{}\"", a.body["data"]["updatedAt"].as_str().expect("updatedAt")));
}

// ---------------------------------------------------------------------------------------------
// The spec itself.
// ---------------------------------------------------------------------------------------------

#[test]
fn spec_is_openapi_3_1_with_global_bearer_auth_and_valid_schemas() {
    let raw = raw_spec();
    assert_eq!(raw["openapi"], "3.1.0");
    assert_eq!(raw["info"]["title"], "Conversation Training Data API");
    assert_eq!(raw["security"], json!([{ "bearerAuth": [] }]));
    let scheme = &raw["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"], &scheme["bearerFormat"]),
        (&json!("http"), &json!("bearer"), &json!("JWT"))
    );
    for name in [
        "ConvocoreError",
        "TetherError",
        "Convo",
        "ConvoInput",
        "IngestInput",
        "IngestResult",
        "CreateSnapshotInput",
        "PatchSnapshotInput",
        "SnapshotMessage",
        "SnapshotCreated",
        "SnapshotPopulated",
        "SnapshotSummary",
        "TrainingExportPayload",
        "TrainingExportItem",
        "TrainingExportConversationTurn",
        "FineTuneExample",
        "BedrockExample",
        "VertexExample",
        "ShareGptExample",
        "SkippedReasons",
        "ConvoExportItem",
        "ExportDownloadResponse",
        "CreateExportInput",
        "ExportSplit",
        "ExportJob",
        "ExportJobResponse",
        "ExportJobListResponse",
    ] {
        assert!(raw["components"]["schemas"][name].is_object(), "components.schemas.{name}");
    }

    // Every schema (resolved) is valid JSON Schema 2020-12 and compiles.
    let mut schemas = Vec::new();
    collect_schemas(spec(), &mut schemas);
    assert!(schemas.len() > 20, "found only {} schemas", schemas.len());
    for schema in schemas {
        if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
            panic!("not a valid JSON Schema 2020-12 ({e}): {schema}");
        }
        schema_errors(schema, &Value::Null);
    }
    // OpenAPI 3.0 keywords that 3.1 (JSON Schema) silently ignores.
    let text = std::fs::read_to_string(SPEC_PATH).expect("spec");
    for keyword in ["nullable:", "exclusiveMinimum: true", "exclusiveMaximum: true"] {
        assert!(!text.contains(keyword), "`{keyword}` is OpenAPI 3.0; use JSON Schema 2020-12");
    }

    // The error envelopes render as documented: Tether without issues, Tether with issues.
    let tether = &spec()["components"]["schemas"]["TetherError"];
    let plain = ApiError::not_found("Snapshot not found").into_response(shared::Envelope::Tether);
    let with_issues =
        ApiError::validation_issues("Invalid", vec!["notes: too long".into()]).into_response(shared::Envelope::Tether);
    for response in [plain, with_issues] {
        let body: Value = serde_json::from_slice(response.body().as_ref()).expect("json");
        let errors = schema_errors(tether, &body);
        assert!(errors.is_empty(), "TetherError does not describe {body}: {errors:?}");
    }
}

/// Every `schema` value under `node` (already resolved).
fn collect_schemas<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    match node {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "schema" && v.is_object() {
                    out.push(v);
                } else if k == "schemas" {
                    out.extend(v.as_object().into_iter().flat_map(|m| m.values()));
                } else {
                    collect_schemas(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_schemas(v, out)),
        _ => {}
    }
}

#[test]
fn every_route_is_documented_and_nothing_else_is() {
    let mut documented = BTreeSet::new();
    for (path, item) in spec()["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys().filter(|k| HTTP_METHODS.contains(&k.as_str())) {
            documented.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    assert_eq!(routed.len(), ROUTES.len(), "ROUTES has a duplicate");
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(missing.is_empty(), "routes missing from openapi.yaml: {missing:?}");
    assert!(extra.is_empty(), "openapi.yaml documents routes that ROUTES does not serve: {extra:?}");

    for route in ROUTES {
        let op = operation(route.method, route.path);
        let name = format!("{} {}", route.method, route.path);
        assert_eq!(op["x-function"], route.function, "{name}: x-function");
        let envelope = format!("{:?}", route.envelope).to_ascii_lowercase();
        assert_eq!(op["x-error-envelope"], envelope.as_str(), "{name}: x-error-envelope");
        assert!(op["operationId"].is_string(), "{name}: operationId");

        // Every `{param}` of the template is documented as a required path parameter.
        let params = parameters(route.method, route.path);
        for segment in route.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
            let p = params.iter().find(|p| p["name"] == segment && p["in"] == "path");
            assert!(p.is_some_and(|p| p["required"] == true), "{name}: path parameter {segment}");
        }
        for p in params.iter().filter(|p| p["in"] == "path") {
            let param = format!("{{{}}}", p["name"].as_str().unwrap_or_default());
            assert!(route.path.contains(&param), "{name}: documents path parameter {param} it does not have");
        }

        // Security is global, so every route documents 401, and storage can always fail.
        for status in [401, 500, 503] {
            assert!(documented_response(op, status).is_some(), "{name}: {status} is not documented");
        }
    }
}

#[test]
fn every_documented_error_status_renders_as_documented() {
    // Each documented 4xx/5xx, rendered by the real error renderer in the route's envelope,
    // matches the spec (covers statuses a request cannot trigger on purpose, such as 500).
    const KINDS: &[ErrorKind] = &[
        ErrorKind::Validation,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Conflict,
        ErrorKind::PreconditionFailed,
        ErrorKind::PayloadTooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];
    // Routes missing from the spec are reported by `every_route_is_documented_and_nothing_else_is`.
    let documented = ROUTES.iter().filter(|r| spec()["paths"][r.path][r.method.to_ascii_lowercase()].is_object());
    for route in documented {
        let op = operation(route.method, route.path);
        for status in op["responses"].as_object().expect("responses").keys().filter_map(|k| k.parse::<u16>().ok()) {
            if status < 400 {
                continue;
            }
            let kind = KINDS
                .iter()
                .find(|k| k.status().as_u16() == status)
                .unwrap_or_else(|| panic!("{} {}: no ErrorKind answers {status}", route.method, route.path));
            for issues in [vec![], vec!["field: problem".to_string()]] {
                let error = ApiError { kind: *kind, message: "Something went wrong".into(), issues, cause: None };
                assert_matches_spec(route.method, route.path, &support::answer(error.into_response(route.envelope)));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The routes, driven for real.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn put_convo_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("PUT", "/agents/{agentId}/convos/{convoId}");
    let uri = "/agents/agent-1/convos/convo-1";

    // 201 on creation, with every field.
    let full = json!({
        "contactId": "contact-1",
        "userName": "Jane Doe",
        "userEmail": "jane@example.com",
        "userPhone": "+1234567890",
        "userCompany": "Acme Corp",
        "userAddress": "1 Main St",
        "userWebsite": "https://acme.example",
        "notes": "Interested in premium",
        "tags": [" new-lead ", "new-lead", "", "vip"],
        "origin": "web-chat",
        "feedback": "Positive",
    });
    case.request_valid(uri, Some(&full));
    let a = case.check(201, call(&s, "PUT", uri, &tok, Some(full)).await);
    assert_eq!(a.body["data"]["tags"], json!(["new-lead", "vip"]));
    assert_eq!(a.body["data"]["ts"], a.body["data"]["createdAt"]);

    // 200 on update; null and absent fields keep their value.
    let partial =
        json!({ "userName": "Jane B. Doe", "notes": null, "feedback": null, "tags": null, "contactId": null });
    case.request_valid(uri, Some(&partial));
    let a = case.check(200, call(&s, "PUT", uri, &tok, Some(partial)).await);
    assert_eq!(a.body["data"]["userName"], "Jane B. Doe");
    assert_eq!(a.body["data"]["notes"], "Interested in premium");
    assert_eq!(a.body["data"]["feedback"], "Positive");
    assert_eq!(a.body["data"]["contactId"], "contact-1");

    // 200 with every field null: nothing changes.
    let nulls: Value = [
        "contactId",
        "userName",
        "userEmail",
        "userPhone",
        "userCompany",
        "userAddress",
        "userWebsite",
        "notes",
        "tags",
        "origin",
        "feedback",
    ]
    .iter()
    .map(|k| (k.to_string(), Value::Null))
    .collect::<Map<String, Value>>()
    .into();
    case.request_valid(uri, Some(&nulls));
    let b = case.check(200, call(&s, "PUT", uri, &tok, Some(nulls)).await);
    let unchanged = |v: &Value| {
        let mut v = v["data"].clone();
        v.as_object_mut().map(|o| o.remove("updatedAt"));
        v
    };
    assert_eq!(unchanged(&b.body), unchanged(&a.body));

    // 201 with an empty object: the defaults, nulls included.
    let uri2 = "/agents/agent-1/convos/convo-2";
    case.request_valid(uri2, Some(&json!({})));
    let a = case.check(201, call(&s, "PUT", uri2, &tok, Some(json!({}))).await);
    assert_eq!(a.body["data"]["contactId"], "convo-2");
    assert_eq!(a.body["data"]["lastMessageTS"], Value::Null);

    // 400: malformed JSON, empty body, and bodies the spec rejects too.
    case.check(400, raw(&s, "PUT", uri, Some(&tok), Some("application/json"), br#"{"userName": "#).await);
    case.check(400, raw(&s, "PUT", uri, Some(&tok), Some("application/json"), b"  ").await);
    case.request_invalid(uri, None);
    for bad in [
        json!({ "nickname": "Jay" }),
        json!({ "feedback": "Meh" }),
        json!({ "tags": "vip" }),
        json!({ "userName": 42 }),
        json!({ "userName": "x".repeat(1001) }),
        json!({ "notes": "x".repeat(10_001) }),
        json!({ "origin": "x".repeat(65) }),
        json!({ "contactId": "has space" }),
        json!([]),
    ] {
        case.request_invalid(uri, Some(&bad));
        case.check(400, call(&s, "PUT", uri, &tok, Some(bad)).await);
    }
    // 400: a path parameter outside the id pattern.
    let bad_path = "/agents/agent%201/convos/convo-1";
    case.request_invalid(bad_path, Some(&json!({})));
    case.check(400, call(&s, "PUT", bad_path, &tok, Some(json!({}))).await);

    // 401: no token, a malformed one, a wrong scheme.
    case.check(401, raw(&s, "PUT", uri, None, Some("application/json"), b"{}").await);
    case.check(401, raw(&s, "PUT", uri, Some("not-a-jwt"), Some("application/json"), b"{}").await);
    case.check(
        401,
        send(&s, "PUT", uri, &[("authorization", "Basic dTpw"), ("content-type", "application/json")], b"{}").await,
    );

    // 413: one byte over the limit.
    let body = oversized_body(s.config.max_body_bytes + 1);
    case.check(413, raw(&s, "PUT", uri, Some(&tok), Some("application/json"), &body).await);

    // 415: not JSON, or no Content-Type at all.
    case.check(415, raw(&s, "PUT", uri, Some(&tok), Some("text/plain"), b"{}").await);
    case.check(415, raw(&s, "PUT", uri, Some(&tok), None, b"{}").await);

    // 503: storage unreachable.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "PUT", uri, &tok, Some(json!({}))).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn ingest_messages_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("POST", "/agents/{agentId}/convos/{convoId}/messages");
    let uri = "/agents/agent-1/convos/convo-1/messages";
    let created = call(&s, "PUT", "/agents/agent-1/convos/convo-1", &tok, Some(json!({}))).await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);

    // 201: new messages (with and without ids, any offset, every optional field).
    let batch = json!({ "messages": [
        message("m1", "user", "Hello! Do you have a premium plan?", "2024-12-01T10:30:00Z"),
        { "id": "m2", "from": "bot", "content": "Yes, $49/month.", "ts": "2024-12-01T11:30:02+01:00",
          "feedback": "Positive", "aiGenerated": true },
        { "from": "human", "content": "", "ts": "2024-12-01T10:31:00.123Z", "feedback": null, "aiGenerated": null, "id": null },
    ]});
    case.request_valid(uri, Some(&batch));
    let a = case.check(201, call(&s, "POST", uri, &tok, Some(batch)).await);
    assert_eq!(a.body["data"]["inserted"], 3);
    assert_eq!(a.body["data"]["firstMessageTS"], "2024-12-01T10:30:00.000Z");

    // 200: the same ids again change nothing (a repeat within the batch is a duplicate too).
    let again = json!({ "messages": [
        message("m1", "user", "edited", "2024-12-01T10:30:00Z"),
        message("m2", "bot", "edited", "2024-12-01T10:30:02Z"),
        message("m2", "bot", "edited", "2024-12-01T10:30:02Z"),
    ]});
    case.request_valid(uri, Some(&again));
    let a = case.check(200, call(&s, "POST", uri, &tok, Some(again)).await);
    assert_eq!((a.body["data"]["inserted"].as_u64(), a.body["data"]["duplicates"].as_u64()), (Some(0), Some(3)));
    assert_eq!(a.body["data"]["messagesNum"], 3);

    // 400: malformed JSON, and bodies the spec rejects too.
    case.check(400, raw(&s, "POST", uri, Some(&tok), Some("application/json"), b"{\"messages\": [").await);
    let ok = message("m9", "user", "hi", "2024-12-01T10:30:00Z");
    let too_many: Vec<Value> =
        (0..501).map(|i| message(&format!("b{i}"), "user", "hi", "2024-12-01T10:30:00Z")).collect();
    for bad in [
        json!({}),
        json!({ "messages": [] }),
        json!({ "messages": too_many }),
        json!({ "messages": [message("m9", "robot", "hi", "2024-12-01T10:30:00Z")] }),
        json!({ "messages": [message("m9", "user", "hi", "yesterday")] }),
        json!({ "messages": [message("bad id", "user", "hi", "2024-12-01T10:30:00Z")] }),
        json!({ "messages": [message("m9", "user", &"x".repeat(100_001), "2024-12-01T10:30:00Z")] }),
        json!({ "messages": [{ "from": "user", "content": "hi" }] }),
        json!({ "messages": [{ "from": "user", "content": "hi", "ts": "2024-12-01T10:30:00Z", "type": "text" }] }),
        json!({ "messages": [{ "from": "user", "content": "hi", "ts": "2024-12-01T10:30:00Z", "feedback": "Meh" }] }),
        json!({ "messages": [ok.clone()], "agentId": "x" }),
    ] {
        case.request_invalid(uri, Some(&bad));
        case.check(400, call(&s, "POST", uri, &tok, Some(bad)).await);
    }
    let bad_path = "/agents/agent-1/convos/convo%231/messages";
    let one = json!({ "messages": [ok] });
    case.request_invalid(bad_path, Some(&one));
    case.check(400, call(&s, "POST", bad_path, &tok, Some(one.clone())).await);

    // 401.
    case.check(401, raw(&s, "POST", uri, None, Some("application/json"), one.to_string().as_bytes()).await);

    // 404: an unknown conversation, and another organization's (the same answer).
    let unknown = "/agents/agent-1/convos/nobody/messages";
    case.request_valid(unknown, Some(&one));
    let a = case.check(404, call(&s, "POST", unknown, &tok, Some(one.clone())).await);
    let b = case.check(404, call(&s, "POST", uri, &token(&new_org()), Some(one.clone())).await);
    assert_eq!(a.body, b.body, "another organization's conversation must look unknown");

    // 413 and 415.
    let body = oversized_body(s.config.max_body_bytes + 1);
    case.check(413, raw(&s, "POST", uri, Some(&tok), Some("application/json"), &body).await);
    case.check(415, raw(&s, "POST", uri, Some(&tok), Some("application/x-www-form-urlencoded"), b"a=b").await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "POST", uri, &tok, Some(one)).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn list_convos_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("GET", "/agents/{agentId}/convos");

    // 200: an agent without conversations is an empty list.
    let empty = "/agents/agent-empty/convos";
    case.request_valid(empty, None);
    let a = case.check(200, call(&s, "GET", empty, &tok, None).await);
    assert_eq!((&a.body["data"], &a.body["nextCursor"]), (&json!([]), &Value::Null));

    // 200: pages, following nextCursor, with a conversation that has messages.
    for id in ["c1", "c2", "c3"] {
        let put =
            call(&s, "PUT", &format!("/agents/agent-1/convos/{id}"), &tok, Some(json!({ "origin": "sms" }))).await;
        assert_eq!(put.status.as_u16(), 201, "{}", put.body);
    }
    let msgs = json!({ "messages": [message("m1", "user", "hi", "2030-01-01T00:00:00Z")] });
    let ingest = call(&s, "POST", "/agents/agent-1/convos/c2/messages", &tok, Some(msgs)).await;
    assert_eq!(ingest.status.as_u16(), 201, "{}", ingest.body);

    let first = "/agents/agent-1/convos?limit=2";
    case.request_valid(first, None);
    let a = case.check(200, call(&s, "GET", first, &tok, None).await);
    assert_eq!(a.body["data"][0]["id"], "c2", "newest activity first");
    assert_eq!(a.body["data"][0]["ts"], "2030-01-01T00:00:00.000Z");
    let cursor = a.body["nextCursor"].as_str().expect("a next page").to_string();
    let next = format!("/agents/agent-1/convos?limit=2&cursor={cursor}");
    case.request_valid(&next, None);
    let a = case.check(200, call(&s, "GET", &next, &tok, None).await);
    assert_eq!(a.body["data"].as_array().map(Vec::len), Some(1));
    for uri in ["/agents/agent-1/convos?limit=", "/agents/agent-1/convos?limit=100&cursor="] {
        case.request_valid(uri, None);
        case.check(200, call(&s, "GET", uri, &tok, None).await);
    }

    // 400: limit out of range or not a number, a bad agent id (the spec rejects these too).
    for uri in [
        "/agents/agent-1/convos?limit=0",
        "/agents/agent-1/convos?limit=101",
        "/agents/agent-1/convos?limit=ten",
        "/agents/agent-1/convos?limit=2.5",
        "/agents/agent%2F1/convos",
    ] {
        case.request_invalid(uri, None);
        case.check(400, call(&s, "GET", uri, &tok, None).await);
    }
    // 400: cursors that are opaque strings to the spec but not ours to accept.
    for uri in ["/agents/agent-1/convos?cursor=garbage".to_string(), format!("/agents/agent-2/convos?cursor={cursor}")]
    {
        case.request_valid(&uri, None);
        case.check(400, call(&s, "GET", &uri, &tok, None).await);
    }
    case.check(400, call(&s, "GET", &next, &token(&new_org()), None).await);

    // 401.
    case.check(401, raw(&s, "GET", first, None, None, b"").await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "GET", first, &tok, None).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn create_snapshot_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("POST", SNAPSHOTS);
    seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;

    // 201 with every field: ids as strings, messages in time order, an ETag.
    let full = json!({
        "contactId": "k1",
        "messageIds": ["m3", "m2", "m3"],
        "notes": "Great handling of objection on pricing.",
        "tags": [" sales ", "sales", "", "pricing"],
        "quality": "good",
        "category": "objection-handling",
    });
    case.request_valid(SNAPSHOTS, Some(&full));
    let a = case.check(201, call(&s, "POST", SNAPSHOTS, &tok, Some(full)).await);
    assert_etag(&a);
    let d = &a.body["data"];
    assert_eq!((&d["userId"], &d["contactId"]), (&json!("user-1"), &json!("k1")));
    let ids: Vec<&Value> = d["messages"].as_array().into_iter().flatten().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&json!("m2"), &json!("m3")], "time order, repeats ignored");
    assert_eq!(d["tags"], json!(["sales", "pricing"]));

    // 201 with nulls (the same as absent): every message, no metadata.
    let nulls = json!({ "contactId": "k1", "messageIds": null, "notes": null, "tags": null, "quality": null, "category": null });
    case.request_valid(SNAPSHOTS, Some(&nulls));
    let a = case.check(201, call(&s, "POST", SNAPSHOTS, &tok, Some(nulls)).await);
    assert_eq!(a.body["data"]["messageCount"], 4);
    assert_eq!((&a.body["data"]["quality"], &a.body["data"]["tags"]), (&Value::Null, &json!([])));

    // 201 for a contact whose conversation has no lead fields: nullable fields are null.
    seed_contact(&s, &tok, "bare", json!({}), &[("b1", "bot", "2026-05-18T10:00:00Z")]).await;
    let bare = json!({ "contactId": "bare", "quality": "  " });
    case.request_valid(SNAPSHOTS, Some(&bare));
    let a = case.check(201, call(&s, "POST", SNAPSHOTS, &tok, Some(bare)).await);
    assert_eq!((&a.body["data"]["customerName"], &a.body["data"]["quality"]), (&Value::Null, &Value::Null));

    // Idempotency-Key: the same key and body replay 201, another body is 409.
    let body = json!({ "contactId": "k1", "quality": "good" });
    let key = [("Idempotency-Key", "5f0c6e1e-2b7a-4d3e-9a51-0c8f3b1d2e4a")];
    case.request_valid_with(SNAPSHOTS, &key, Some(&body));
    let first = case.check(201, call_with(&s, "POST", SNAPSHOTS, &tok, &key, &body).await);
    let again = case.check(201, call_with(&s, "POST", SNAPSHOTS, &tok, &key, &body).await);
    assert_eq!(again.body["data"]["_id"], first.body["data"]["_id"]);
    let other = json!({ "contactId": "k1", "quality": "bad" });
    case.request_valid_with(SNAPSHOTS, &key, Some(&other));
    case.check(409, call_with(&s, "POST", SNAPSHOTS, &tok, &key, &other).await);

    // 404: an unknown contact, another organization's contact (the same answer).
    let unknown = json!({ "contactId": "nobody" });
    case.request_valid(SNAPSHOTS, Some(&unknown));
    let a = case.check(404, call(&s, "POST", SNAPSHOTS, &tok, Some(unknown)).await);
    let b = case.check(404, call(&s, "POST", SNAPSHOTS, &token(&new_org()), Some(json!({ "contactId": "k1" }))).await);
    assert_eq!(a.body, b.body, "another organization's contact must look unknown");
    // 404: a key replayed after its snapshot was deleted.
    let key = [("Idempotency-Key", "deleted-since")];
    let made = case.check(201, call_with(&s, "POST", SNAPSHOTS, &tok, &key, &body).await);
    let id = made.body["data"]["_id"].as_str().expect("_id");
    let deleted = call(&s, "DELETE", &format!("{SNAPSHOTS}/{id}"), &tok, None).await;
    assert_eq!(deleted.status.as_u16(), 200, "{}", deleted.body);
    let a = case.check(404, call_with(&s, "POST", SNAPSHOTS, &tok, &key, &body).await);
    assert_eq!(a.body, snapshot_not_found());

    // 400: malformed JSON, empty body, and bodies the spec rejects too.
    case.check(400, raw(&s, "POST", SNAPSHOTS, Some(&tok), Some("application/json"), br#"{"contactId": "#).await);
    case.check(400, raw(&s, "POST", SNAPSHOTS, Some(&tok), Some("application/json"), b"").await);
    case.request_invalid(SNAPSHOTS, None);
    let many: Vec<String> = (0..10_001).map(|i| format!("m{i}")).collect();
    for bad in [
        json!({}),
        json!({ "contactId": 5 }),
        json!({ "contactId": null }),
        json!({ "contactId": "has space" }),
        json!({ "contactId": "k1", "isArchived": true }),
        json!({ "contactId": "k1", "messageIds": [] }),
        json!({ "contactId": "k1", "messageIds": "m1" }),
        json!({ "contactId": "k1", "messageIds": many }),
        json!({ "contactId": "k1", "notes": "n".repeat(10_001) }),
        json!({ "contactId": "k1", "tags": "vip" }),
        json!({ "contactId": "k1", "tags": ["x".repeat(65)] }),
        json!({ "contactId": "k1", "quality": "q".repeat(101) }),
        json!({ "contactId": "k1", "category": "c".repeat(101) }),
        json!({ "contactId": "k1", "quality": 5 }),
        json!([]),
    ] {
        case.request_invalid(SNAPSHOTS, Some(&bad));
        case.check(400, call(&s, "POST", SNAPSHOTS, &tok, Some(bad)).await);
    }
    // 400 the spec cannot see: messageIds that are not the contact's (named), a contact
    // without messages, more than 50 distinct tags.
    let strangers = json!({ "contactId": "k1", "messageIds": ["m1", "zzz", "b1"] });
    case.request_valid(SNAPSHOTS, Some(&strangers));
    let a = case.check(400, call(&s, "POST", SNAPSHOTS, &tok, Some(strangers)).await);
    let message = a.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("zzz") && message.contains("b1") && !message.contains("m1,"), "{message}");
    assert_eq!(a.body["issues"].as_array().map(Vec::len), Some(2));
    seed_contact(&s, &tok, "silent", full_lead(), &[]).await;
    let silent = json!({ "contactId": "silent" });
    case.request_valid(SNAPSHOTS, Some(&silent));
    case.check(400, call(&s, "POST", SNAPSHOTS, &tok, Some(silent)).await);
    let tags = json!({ "contactId": "k1", "tags": (0..51).map(|i| format!("t{i}")).collect::<Vec<_>>() });
    case.request_valid(SNAPSHOTS, Some(&tags));
    case.check(400, call(&s, "POST", SNAPSHOTS, &tok, Some(tags)).await);
    // 400: an Idempotency-Key that is empty, has a space, or is too long.
    let long = "k".repeat(256);
    for bad in ["", "two words", long.as_str()] {
        let key = [("Idempotency-Key", bad)];
        case.request_invalid_with(SNAPSHOTS, &key, Some(&body));
        case.check(400, call_with(&s, "POST", SNAPSHOTS, &tok, &key, &body).await);
    }

    // 401: no token, a malformed one.
    case.check(401, raw(&s, "POST", SNAPSHOTS, None, Some("application/json"), br#"{"contactId":"k1"}"#).await);
    case.check(
        401,
        raw(&s, "POST", SNAPSHOTS, Some("not-a-jwt"), Some("application/json"), br#"{"contactId":"k1"}"#).await,
    );

    // 413 and 415.
    let big = oversized_body(s.config.max_body_bytes + 1);
    case.check(413, raw(&s, "POST", SNAPSHOTS, Some(&tok), Some("application/json"), &big).await);
    case.check(415, raw(&s, "POST", SNAPSHOTS, Some(&tok), Some("text/plain"), br#"{"contactId":"k1"}"#).await);
    case.check(415, raw(&s, "POST", SNAPSHOTS, Some(&tok), None, br#"{"contactId":"k1"}"#).await);

    // 503: storage unreachable, with and without an Idempotency-Key.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "POST", SNAPSHOTS, &tok, Some(body.clone())).await);
    case.check(503, call_with(&down, "POST", SNAPSHOTS, &tok, &[("Idempotency-Key", "down")], &body).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn get_snapshot_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("GET", SNAPSHOT);
    seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;
    let id = create_snapshot(&s, &tok, json!({ "contactId": "k1", "quality": "good", "tags": ["sales"] })).await;

    // 200: populated refs, messages, no `message`, an ETag; the id in either case.
    let uri = format!("{SNAPSHOTS}/{id}");
    case.request_valid(&uri, None);
    let a = case.check(200, call(&s, "GET", &uri, &tok, None).await);
    assert_etag(&a);
    assert!(a.body.get("message").is_none(), "{}", a.body);
    let d = &a.body["data"];
    assert_eq!(
        d["userId"],
        json!({ "_id": "user-1", "firstName": "Alice", "lastName": "Rivera", "email": "alice@example.com" })
    );
    assert_eq!(
        d["contactId"],
        json!({ "_id": "k1", "firstName": "Jane", "lastName": "Doe", "phoneNumber": "+14155550123",
                "email": "jane@example.com", "channelType": "sms" })
    );
    let senders: Vec<(Value, Value)> = d["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["sender"].clone(), m["senderType"].clone()))
        .collect();
    assert_eq!(
        senders,
        [("contact", "HUMAN"), ("user", "AI"), ("user", "HUMAN"), ("contact", "HUMAN")]
            .map(|(a, b)| (json!(a), json!(b)))
    );
    let upper = format!("{SNAPSHOTS}/{}", id.to_ascii_uppercase());
    case.request_valid(&upper, None);
    case.check(200, call(&s, "GET", &upper, &tok, None).await);

    // 200 for a contact without lead fields and a token without name claims: nulls.
    let bare_tok = support::token_claims(shared::auth::Claims {
        sub: "user-2".into(),
        email: None,
        given_name: None,
        family_name: None,
        ..support::claims(&org)
    });
    seed_contact(&s, &bare_tok, "bare", json!({ "userName": "Cher" }), &[("b1", "user", "2026-05-18T10:00:00Z")]).await;
    let bare = create_snapshot(&s, &bare_tok, json!({ "contactId": "bare" })).await;
    let a = case.check(200, call(&s, "GET", &format!("{SNAPSHOTS}/{bare}"), &tok, None).await);
    assert_eq!(
        a.body["data"]["userId"],
        json!({ "_id": "user-2", "firstName": null, "lastName": null, "email": null })
    );
    assert_eq!(
        (&a.body["data"]["contactId"]["firstName"], &a.body["data"]["contactId"]["lastName"]),
        (&json!("Cher"), &Value::Null)
    );

    // 400: not 24 hex digits.
    for bad in ["123", "zzzzzzzzzzzzzzzzzzzzzzzz", "67f1a0b0c0d0e0f0a0b0c0d0aa"] {
        let uri = format!("{SNAPSHOTS}/{bad}");
        case.request_invalid(&uri, None);
        case.check(400, call(&s, "GET", &uri, &tok, None).await);
    }

    // 401.
    case.check(401, raw(&s, "GET", &uri, None, None, b"").await);

    // 404: an unknown id and another organization's, exactly alike.
    let unknown = format!("{SNAPSHOTS}/{}", shared::ids::object_id());
    case.request_valid(&unknown, None);
    let a = case.check(404, call(&s, "GET", &unknown, &tok, None).await);
    let b = case.check(404, call(&s, "GET", &uri, &token(&new_org()), None).await);
    assert_eq!((&a.body, &b.body), (&snapshot_not_found(), &snapshot_not_found()));

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "GET", &uri, &tok, None).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn list_snapshots_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("GET", SNAPSHOTS);

    // 200: nothing yet is an empty list.
    case.request_valid(SNAPSHOTS, None);
    let a = case.check(200, call(&s, "GET", SNAPSHOTS, &tok, None).await);
    assert_eq!((&a.body["data"], &a.body["nextCursor"]), (&json!([]), &Value::Null));

    seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;
    seed_contact(&s, &tok, "k2", json!({}), &[("n1", "user", "2026-05-18T09:00:00Z")]).await;
    let a = create_snapshot(
        &s,
        &tok,
        json!({ "contactId": "k1", "quality": "good", "category": "pricing", "tags": ["x", "y"] }),
    )
    .await;
    let b = create_snapshot(&s, &tok, json!({ "contactId": "k2", "quality": "bad", "tags": ["x"] })).await;
    let c = create_snapshot(&s, &tok, json!({ "contactId": "k1", "notes": "archived one" })).await;
    let archived = call(&s, "PATCH", &format!("{SNAPSHOTS}/{c}"), &tok, Some(json!({ "isArchived": true }))).await;
    assert_eq!(archived.status.as_u16(), 200, "{}", archived.body);
    let ids = |a: &Answer| -> Vec<String> {
        a.body["data"].as_array().into_iter().flatten().filter_map(|d| d["_id"].as_str().map(str::to_string)).collect()
    };

    // 200: pages, following nextCursor (limit may change between pages).
    let first = format!("{SNAPSHOTS}?limit=1");
    case.request_valid(&first, None);
    let page = case.check(200, call(&s, "GET", &first, &tok, None).await);
    assert_eq!(ids(&page), std::slice::from_ref(&b));
    assert!(page.body["data"][0].get("messages").is_none(), "no messages by default");
    let cursor = page.body["nextCursor"].as_str().expect("a next page").to_string();
    let next = format!("{SNAPSHOTS}?limit=5&cursor={cursor}");
    case.request_valid(&next, None);
    let page = case.check(200, call(&s, "GET", &next, &tok, None).await);
    assert_eq!((ids(&page), &page.body["nextCursor"]), (vec![a.clone()], &Value::Null));

    // 200: every filter, and messages on request.
    for (query, expected) in [
        ("?includeMessages=true", vec![b.clone(), a.clone()]),
        ("?includeMessages=false&archived=false", vec![b.clone(), a.clone()]),
        ("?archived=true&includeMessages=true", vec![c.clone()]),
        ("?archived=all", vec![c.clone(), b.clone(), a.clone()]),
        ("?quality=good", vec![a.clone()]),
        ("?category=pricing&contactId=k1", vec![a.clone()]),
        ("?tag=x&tag=y", vec![a.clone()]),
        ("?tag=x&quality=bad", vec![b.clone()]),
        ("?contactId=k2&archived=all", vec![b.clone()]),
        ("?from=2000-01-01T00:00:00Z&to=2100-01-01T01:00:00%2B01:00", vec![b.clone(), a.clone()]),
        ("?to=2000-01-01T00:00:00Z", vec![]),
        (
            "?quality=&category=&tag=&archived=&from=&to=&contactId=&limit=&cursor=&includeMessages=",
            vec![b.clone(), a.clone()],
        ),
    ] {
        let uri = format!("{SNAPSHOTS}{query}");
        case.request_valid(&uri, None);
        let page = case.check(200, call(&s, "GET", &uri, &tok, None).await);
        assert_eq!(ids(&page), expected, "{query}");
        let with_messages = query.contains("includeMessages=true");
        for item in page.body["data"].as_array().into_iter().flatten() {
            assert_eq!(item.get("messages").is_some(), with_messages, "{query}: {item}");
        }
    }

    // 400: parameters the spec rejects too.
    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=ten",
        "?archived=maybe",
        "?includeMessages=yes",
        "?from=yesterday",
        "?to=2026-05-18",
        "?contactId=has%20space",
    ] {
        let uri = format!("{SNAPSHOTS}{query}");
        case.request_invalid(&uri, None);
        case.check(400, call(&s, "GET", &uri, &tok, None).await);
    }
    // 400: what the spec cannot see: `from` after `to`, cursors that are not ours to accept
    // (forged, for other filters, from another organization).
    for uri in [
        format!("{SNAPSHOTS}?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
        format!("{SNAPSHOTS}?cursor=garbage"),
        format!("{SNAPSHOTS}?limit=1&quality=bad&cursor={cursor}"),
    ] {
        case.request_valid(&uri, None);
        case.check(400, call(&s, "GET", &uri, &tok, None).await);
    }
    case.check(400, call(&s, "GET", &next, &token(&new_org()), None).await);

    // 401.
    case.check(401, raw(&s, "GET", SNAPSHOTS, None, None, b"").await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "GET", SNAPSHOTS, &tok, None).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn update_snapshot_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("PATCH", SNAPSHOT);
    seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;
    let id = create_snapshot(&s, &tok, json!({ "contactId": "k1", "quality": "good", "notes": "keep", "tags": ["a"] }))
        .await;
    let uri = format!("{SNAPSHOTS}/{id}");

    // 200: the document without messages, populated, with a new ETag.
    let change = json!({ "quality": "bad", "category": "pricing", "isArchived": true });
    case.request_valid(&uri, Some(&change));
    let a = case.check(200, call(&s, "PATCH", &uri, &tok, Some(change)).await);
    assert_etag(&a);
    assert!(a.body["data"].get("messages").is_none(), "{}", a.body);
    assert_eq!(a.body["data"]["contactId"]["_id"], "k1");
    assert_eq!((&a.body["data"]["notes"], &a.body["data"]["isArchived"]), (&json!("keep"), &json!(true)));

    // 200: null clears; `isArchived: null` beside another field changes nothing.
    let clear = json!({ "notes": null, "tags": null, "quality": null, "category": null, "isArchived": null });
    case.request_valid(&uri, Some(&clear));
    let a = case.check(200, call(&s, "PATCH", &uri, &tok, Some(clear)).await);
    let d = &a.body["data"];
    assert_eq!(
        (&d["notes"], &d["tags"], &d["quality"], &d["category"], &d["isArchived"]),
        (&Value::Null, &json!([]), &Value::Null, &Value::Null, &json!(true))
    );

    // 200 with If-Match: the current updatedAt, quoted (the ETag) or not.
    let etag = a.headers.get("etag").and_then(|v| v.to_str().ok()).expect("ETag").to_string();
    let body = json!({ "isArchived": false });
    let if_match = [("If-Match", etag.as_str())];
    case.request_valid_with(&uri, &if_match, Some(&body));
    let a = case.check(200, call_with(&s, "PATCH", &uri, &tok, &if_match, &body).await);
    let current = a.body["data"]["updatedAt"].as_str().expect("updatedAt").to_string();
    let unquoted = [("If-Match", current.as_str())];
    let b = case.check(200, call_with(&s, "PATCH", &uri, &tok, &unquoted, &json!({ "notes": "again" })).await);
    assert!(b.body["data"]["updatedAt"].as_str() > Some(current.as_str()), "updatedAt moves forward");

    // 412: a stale If-Match; nothing changes.
    let lost = json!({ "notes": "lost" });
    let if_match = [("If-Match", etag.as_str())];
    case.request_valid_with(&uri, &if_match, Some(&lost));
    case.check(412, call_with(&s, "PATCH", &uri, &tok, &if_match, &lost).await);
    let g = call(&s, "GET", &uri, &tok, None).await;
    assert_eq!(g.body["data"]["notes"], "again");

    // 200 with `If-Match: *`: any current version (RFC 9110).
    let star = [("If-Match", "*")];
    let anyway = json!({ "notes": "anyway" });
    case.request_valid_with(&uri, &star, Some(&anyway));
    let a = case.check(200, call_with(&s, "PATCH", &uri, &tok, &star, &anyway).await);
    assert_eq!(a.body["data"]["notes"], "anyway");

    // 400: malformed or empty bodies, fields that are not editable, wrong types, limits.
    case.check(400, raw(&s, "PATCH", &uri, Some(&tok), Some("application/json"), b"{\"notes\": ").await);
    case.check(400, raw(&s, "PATCH", &uri, Some(&tok), Some("application/json"), b"").await);
    case.request_invalid(&uri, None);
    for bad in [
        json!({}),
        json!({ "isArchived": null }),
        json!({ "messages": [] }),
        json!({ "_id": "x" }),
        json!({ "createdAt": "2020-01-01T00:00:00Z" }),
        json!({ "messageCount": 1, "notes": "n" }),
        json!({ "isArchived": "yes" }),
        json!({ "tags": "vip" }),
        json!({ "tags": ["x".repeat(65)] }),
        json!({ "notes": "n".repeat(10_001) }),
        json!({ "quality": "q".repeat(101) }),
        json!({ "category": 7 }),
        json!([]),
    ] {
        case.request_invalid(&uri, Some(&bad));
        case.check(400, call(&s, "PATCH", &uri, &tok, Some(bad)).await);
    }
    let bad_path = format!("{SNAPSHOTS}/not-an-id");
    case.request_invalid(&bad_path, Some(&body));
    case.check(400, call(&s, "PATCH", &bad_path, &tok, Some(body.clone())).await);

    // 401.
    case.check(401, raw(&s, "PATCH", &uri, None, Some("application/json"), br#"{"notes":"n"}"#).await);

    // 404: an unknown id and another organization's, exactly alike.
    let unknown = format!("{SNAPSHOTS}/{}", shared::ids::object_id());
    case.request_valid(&unknown, Some(&body));
    let a = case.check(404, call(&s, "PATCH", &unknown, &tok, Some(body.clone())).await);
    let b = case.check(404, call(&s, "PATCH", &uri, &token(&new_org()), Some(body.clone())).await);
    assert_eq!((&a.body, &b.body), (&snapshot_not_found(), &snapshot_not_found()));

    // 413 and 415.
    let big = oversized_body(s.config.max_body_bytes + 1);
    case.check(413, raw(&s, "PATCH", &uri, Some(&tok), Some("application/json"), &big).await);
    case.check(415, raw(&s, "PATCH", &uri, Some(&tok), Some("text/plain"), br#"{"notes":"n"}"#).await);
    case.check(415, raw(&s, "PATCH", &uri, Some(&tok), None, br#"{"notes":"n"}"#).await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "PATCH", &uri, &tok, Some(body)).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn delete_snapshot_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("DELETE", SNAPSHOT);
    seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;
    let id = create_snapshot(&s, &tok, json!({ "contactId": "k1" })).await;
    let uri = format!("{SNAPSHOTS}/{id}");

    // 404 for another organization (the snapshot stays), then 200, then 404.
    case.request_valid(&uri, None);
    let other = case.check(404, call(&s, "DELETE", &uri, &token(&new_org()), None).await);
    assert_eq!(other.body, snapshot_not_found());
    let a = case.check(200, call(&s, "DELETE", &uri, &tok, None).await);
    assert_eq!(a.body["data"], json!({ "_id": id }));
    let again = case.check(404, call(&s, "DELETE", &uri, &tok, None).await);
    assert_eq!(again.body, snapshot_not_found());
    let unknown = format!("{SNAPSHOTS}/{}", shared::ids::object_id());
    case.request_valid(&unknown, None);
    case.check(404, call(&s, "DELETE", &unknown, &tok, None).await);

    // 400: not 24 hex digits.
    for bad in ["123", "g7f1a0b0c0d0e0f0a0b0c0d0"] {
        let uri = format!("{SNAPSHOTS}/{bad}");
        case.request_invalid(&uri, None);
        case.check(400, call(&s, "DELETE", &uri, &tok, None).await);
    }

    // 401.
    case.check(401, raw(&s, "DELETE", &uri, None, None, b"").await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "DELETE", &uri, &tok, None).await);

    case.assert_exercised_all_but(&[500]);
}

// ---------------------------------------------------------------------------------------------
// The exports.
// ---------------------------------------------------------------------------------------------

const TRAINING_EXPORT: &str = "/api/training/export";
const CONVOS_EXPORT: &str = "/agents/{agentId}/convos/export";
const CONVO_EXPORT: &str = "/agents/{agentId}/convos/{convoId}/export";

/// An inline limit small enough for the test data to exceed it.
const SMALL_INLINE_LIMIT: usize = 256;

/// A response header as text (panics when absent).
fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header: {:?}", a.headers))
}

/// `X-Export-Items` and `X-Export-Skipped`.
fn export_counts(a: &Answer) -> (u64, u64) {
    let n = |name: &str| header(a, name).parse::<u64>().unwrap_or_else(|e| panic!("{name}: {e}"));
    (n("x-export-items"), n("x-export-skipped"))
}

/// A component schema of the spec, resolved.
fn component(name: &str) -> &'static Value {
    let schema = &spec()["components"]["schemas"][name];
    assert!(schema.is_object(), "openapi.yaml has no components.schemas.{name}");
    schema
}

/// Asserts `instance` validates against the component schema `name`.
fn assert_valid(name: &str, instance: &Value) {
    let errors = schema_errors(component(name), instance);
    assert!(errors.is_empty(), "{name} does not describe {instance}:\n  {}", errors.join("\n  "));
}

/// The lines of an NDJSON file, parsed.
fn ndjson(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The records of a CSV export, header first, after checking the byte order mark and that
/// every record (but no line break inside a quoted cell) ends with CRLF.
fn csv_records(bytes: &[u8]) -> Vec<Vec<String>> {
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    let body = text.strip_prefix('\u{feff}').expect("a CSV export starts with a UTF-8 BOM");
    let mut quoted = false;
    let mut previous = '\0';
    for c in body.chars() {
        match c {
            '"' => quoted = !quoted,
            '\n' if !quoted => assert_eq!(previous, '\r', "a record does not end with CRLF: {body:?}"),
            _ => {}
        }
        previous = c;
    }
    assert!(body.ends_with("\r\n"), "the last record ends with CRLF");
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(body.as_bytes());
    reader.records().map(|r| r.expect("an RFC 4180 record").iter().map(str::to_string).collect()).collect()
}

/// The cells of column `name` (of `columns`) in `rows`.
fn column<'a>(columns: &[&str], rows: &'a [Vec<String>], name: &str) -> Vec<&'a str> {
    let i = columns.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no column {name}"));
    rows.iter().map(|r| r[i].as_str()).collect()
}

/// Checks a `303 See Other` export answer and returns the stored file: `Location` is the
/// body's URL, the key is the organization's, and the object has the documented type.
async fn stored_export(state: &AppState, a: &Answer, org: &str, kind: &str, content_type: &str) -> Vec<u8> {
    let data = &a.body["data"];
    assert_eq!(header(a, "location"), data["url"].as_str().expect("data.url"));
    assert_eq!((data["items"].as_u64(), data["skipped"].as_u64()), {
        let (items, skipped) = export_counts(a);
        (Some(items), Some(skipped))
    });
    let key = data["key"].as_str().expect("data.key");
    assert!(key.starts_with(&format!("exports/{org}/{kind}/")), "{key}");
    let object =
        state.s3.get_object().bucket(&state.config.bucket_name).key(key).send().await.expect("the stored export");
    assert_eq!(object.content_type(), Some(content_type));
    let disposition = object.content_disposition().expect("Content-Disposition").to_string();
    assert!(disposition.starts_with("attachment; filename=\""), "{disposition}");
    let bytes = object.body.collect().await.expect("object body").into_bytes().to_vec();
    assert_eq!(Some(bytes.len() as u64), data["bytes"].as_u64());
    bytes
}

/// A conversation of `agent` with this header and these messages.
async fn seed_convo(state: &AppState, tok: &str, agent: &str, convo: &str, lead: Value, messages: Vec<Value>) {
    let uri = format!("/agents/{agent}/convos/{convo}");
    let a = call(state, "PUT", &uri, tok, Some(lead)).await;
    assert!(a.status.is_success(), "{}", a.body);
    if !messages.is_empty() {
        let a = call(state, "POST", &format!("{uri}/messages"), tok, Some(json!({ "messages": messages }))).await;
        assert_eq!(a.status.as_u16(), 201, "{}", a.body);
    }
}

/// The conversations of the export tests: `c1` (every lead field, four messages in three
/// turns, cells a spreadsheet would run), `c3` (one message), `c2` (no message, the most
/// recently active), all of agent `ag`; and `x1` of agent `ag2`.
async fn seed_export_convos(state: &AppState, tok: &str) {
    let lead = json!({
        "userName": "John Doe", "userEmail": "john@example.com", "userPhone": "+1234567890",
        "userCompany": "Acme Corp", "userAddress": "1 Main St", "userWebsite": "https://acme.example",
        "notes": "=SUM(A1:A2)", "tags": ["new-lead", "vip"], "origin": "web-chat", "feedback": "Positive",
    });
    let messages = vec![
        message("m1", "user", "Hello!", "2024-12-01T10:30:00Z"),
        json!({ "id": "m2", "from": "bot", "content": "Hi! How can I help you today?", "ts": "2024-12-01T10:30:02Z",
                "feedback": "Positive", "aiGenerated": true }),
        message("m3", "bot", "Premium is $49.\nWant it?", "2024-12-01T10:30:03Z"),
        message("m4", "human", "-10% today, \"really\"", "2024-12-01T22:05:09Z"),
    ];
    seed_convo(state, tok, "ag", "c1", lead, messages).await;
    seed_convo(
        state,
        tok,
        "ag",
        "c3",
        json!({ "userName": "Ann" }),
        vec![message("n1", "user", "hi", "2025-01-02T00:00:00Z")],
    )
    .await;
    seed_convo(state, tok, "ag", "c2", json!({}), vec![]).await;
    seed_convo(state, tok, "ag2", "x1", json!({}), vec![message("o1", "user", "elsewhere", "2025-01-01T00:00:00Z")])
        .await;
}

/// `c1` as Convocore exports it.
fn c1_exported() -> Value {
    let msg = |ts: &str, text: &str, feedback: &str, ai: bool| json!({ "type": "text", "ts": ts, "payload": { "message": text, "feedback": feedback, "aiGenerated": ai } });
    json!({
        "metadata": {
            "feedback": "Positive",
            "convo": {
                "id": "c1", "userName": "John Doe", "userEmail": "john@example.com", "userPhone": "+1234567890",
                "userCompany": "Acme Corp", "userAddress": "1 Main St", "userWebsite": "https://acme.example",
                "notes": "=SUM(A1:A2)", "tags": ["new-lead", "vip"], "origin": "web-chat",
            },
            "sessions": [],
        },
        "turns": [
            { "from": "user", "messages": [msg("December 1st 2024, 10:30:00 am", "Hello!", "Unset", false)] },
            { "from": "bot", "messages": [
                msg("December 1st 2024, 10:30:02 am", "Hi! How can I help you today?", "Positive", true),
                msg("December 1st 2024, 10:30:03 am", "Premium is $49.\nWant it?", "Unset", true),
            ] },
            { "from": "human", "messages": [msg("December 1st 2024, 10:05:09 pm", "-10% today, \"really\"", "Unset", false)] },
        ],
    })
}

/// Asserts the CSV rows of `c1` (four messages, formula cells neutralised).
fn assert_c1_rows(rows: &[Vec<String>]) {
    let cols = shared::exports::convos::CSV_COLUMNS;
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.iter().all(|r| r.len() == cols.len()), "{rows:?}");
    assert!(column(cols, rows, "convoId").iter().all(|c| *c == "c1"));
    assert_eq!(column(cols, rows, "userPhone")[0], "'+1234567890");
    assert_eq!(column(cols, rows, "notes")[0], "'=SUM(A1:A2)");
    assert_eq!(column(cols, rows, "tags")[0], "new-lead|vip");
    assert_eq!(column(cols, rows, "convoFeedback")[0], "Positive");
    assert_eq!(column(cols, rows, "turn"), ["0", "1", "1", "2"]);
    assert_eq!(column(cols, rows, "from"), ["user", "bot", "bot", "human"]);
    assert_eq!(column(cols, rows, "messageId"), ["m1", "m2", "m3", "m4"]);
    assert_eq!(column(cols, rows, "ts")[3], "December 1st 2024, 10:05:09 pm");
    assert_eq!(column(cols, rows, "timestamp")[0], "2024-12-01T10:30:00.000Z");
    assert_eq!(
        column(cols, rows, "message"),
        ["Hello!", "Hi! How can I help you today?", "Premium is $49.\nWant it?", "'-10% today, \"really\""]
    );
    assert_eq!(column(cols, rows, "feedback"), ["Unset", "Positive", "Unset", "Unset"]);
    assert_eq!(column(cols, rows, "aiGenerated"), ["false", "true", "true", "false"]);
}

#[tokio::test]
async fn export_training_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("GET", TRAINING_EXPORT);
    let get = |uri: String| {
        let (s, tok) = (&s, &tok);
        async move { call(s, "GET", &uri, tok, None).await }
    };

    // 200: nothing to export is the payload without items.
    case.request_valid(TRAINING_EXPORT, None);
    let a = case.check(200, get(TRAINING_EXPORT.into()).await);
    assert_eq!(
        (&a.body["data"], &a.body["totalSnapshots"], &a.body["organizationId"]),
        (&json!([]), &json!(0), &json!(org))
    );
    assert_eq!(export_counts(&a), (0, 0));

    // Every snapshot has a lead, a quality and notes: Tether's TrainingExportItem types
    // `customer.name` / `customer.phone` and `metadata.quality` / `metadata.notes` as strings
    // that cannot be null (the handler writes null when they are absent).
    seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;
    let k2 = json!({ "contactId": "k2", "userName": "=cmd|' /C calc'!A0", "userPhone": "+1 555 0100", "userEmail": "k2@example.com" });
    let k2_messages = vec![
        message("q1", "user", "Hello, \"there\"\nsecond line", "2026-05-18T10:00:00Z"),
        message("q2", "bot", "@you: yes", "2026-05-18T10:01:00Z"),
        message("q3", "human", "   ", "2026-05-18T10:02:00Z"),
    ];
    seed_convo(&s, &tok, "ag", "convo-k2", k2, k2_messages).await;
    seed_contact(
        &s,
        &tok,
        "k3",
        full_lead(),
        &[("u1", "user", "2026-05-18T11:00:00Z"), ("u2", "user", "2026-05-18T11:01:00Z")],
    )
    .await;
    let a = create_snapshot(
        &s,
        &tok,
        json!({ "contactId": "k1", "quality": "good", "category": "pricing",
        "tags": ["sales", "pricing"], "notes": "Great handling of objection on pricing." }),
    )
    .await;
    let b =
        create_snapshot(&s, &tok, json!({ "contactId": "k2", "quality": "bad", "tags": ["x"], "notes": "-5 stars" }))
            .await;
    let c = create_snapshot(&s, &tok, json!({ "contactId": "k1", "quality": "good", "notes": "archived" })).await;
    let archived = call(&s, "PATCH", &format!("{SNAPSHOTS}/{c}"), &tok, Some(json!({ "isArchived": true }))).await;
    assert_eq!(archived.status.as_u16(), 200, "{}", archived.body);
    let d =
        create_snapshot(&s, &tok, json!({ "contactId": "k3", "quality": "neutral", "notes": "customer only" })).await;
    let ids = |data: &Value| -> Vec<String> {
        data.as_array().into_iter().flatten().filter_map(|i| i["id"].as_str().map(str::to_string)).collect()
    };

    // 200, format=json: Tether's payload, newest first, `totalSnapshots` written last.
    let a200 = case.check(200, get(TRAINING_EXPORT.into()).await);
    assert_eq!(header(&a200, "content-type"), "application/json");
    assert!(header(&a200, "content-disposition").ends_with(".json\""));
    assert_eq!(ids(&a200.body["data"]), [d.clone(), b.clone(), a.clone()]);
    assert_eq!((&a200.body["totalSnapshots"], export_counts(&a200)), (&json!(3), (3, 0)));
    assert!(String::from_utf8_lossy(&a200.bytes).ends_with(r#"],"totalSnapshots":3}"#));
    let item = &a200.body["data"][2];
    assert_eq!(item["customer"], json!({ "name": "Jane Doe", "phone": "+14155550123", "email": "jane@example.com" }));
    let turns: Vec<(Value, Value)> = item["conversation"]
        .as_array()
        .expect("conversation")
        .iter()
        .map(|t| (t["role"].clone(), t["senderType"].clone()))
        .collect();
    assert_eq!(
        turns,
        [("user", "HUMAN"), ("assistant", "AI"), ("assistant", "HUMAN"), ("user", "HUMAN")]
            .map(|(r, t)| (json!(r), json!(t)))
    );
    assert_eq!(
        item["metadata"],
        json!({ "quality": "good", "category": "pricing", "tags": ["sales", "pricing"],
                "notes": "Great handling of objection on pricing.", "messageCount": 4,
                "dateRange": { "start": "2026-05-18T13:30:00.000Z", "end": "2026-05-18T13:33:00.000Z" } })
    );

    // 200: every filter.
    for (query, expected) in [
        ("?includeArchived=true", vec![d.clone(), c.clone(), b.clone(), a.clone()]),
        ("?includeArchived=false&quality=good", vec![a.clone()]),
        ("?includeArchived=true&quality=%20good%20", vec![c.clone(), a.clone()]),
        ("?tag=sales&tag=pricing&category=pricing", vec![a.clone()]),
        ("?contactId=k2&format=json&delivery=auto&system=ignored", vec![b.clone()]),
        ("?from=2000-01-01T00:00:00Z&to=2100-01-01T01:00:00%2B01:00", vec![d.clone(), b.clone(), a.clone()]),
        ("?to=2000-01-01T00:00:00Z&delivery=inline", vec![]),
        (
            "?quality=&category=&tag=&from=&to=&contactId=&includeArchived=&format=&system=&delivery=",
            vec![d.clone(), b.clone(), a.clone()],
        ),
    ] {
        let uri = format!("{TRAINING_EXPORT}{query}");
        case.request_valid(&uri, None);
        let page = case.check(200, get(uri).await);
        assert_eq!(ids(&page.body["data"]), expected, "{query}");
        assert_eq!(page.body["totalSnapshots"], expected.len(), "{query}");
        assert_eq!(export_counts(&page), (expected.len() as u64, 0), "{query}");
    }

    // 200, format=jsonl: the same items, one per line.
    let uri = format!("{TRAINING_EXPORT}?format=jsonl");
    case.request_valid(&uri, None);
    let lines = case.check(200, get(uri).await);
    assert_eq!(header(&lines, "content-type"), "application/x-ndjson");
    assert!(header(&lines, "content-disposition").ends_with(".jsonl\""));
    let items = ndjson(&lines.bytes);
    items.iter().for_each(|i| assert_valid("TrainingExportItem", i));
    assert_eq!(Value::Array(items), a200.body["data"]);
    assert_eq!(export_counts(&lines), (3, 0));

    // 200, format=openai: chat examples; roles merged, blank messages dropped, the snapshot
    // without an assistant message skipped and counted.
    let uri = format!("{TRAINING_EXPORT}?format=openai&system=You%20are%20a%20helpful%20sales%20assistant.");
    case.request_valid(&uri, None);
    let chat = case.check(200, get(uri).await);
    assert_eq!(header(&chat, "content-type"), "application/x-ndjson");
    assert!(header(&chat, "content-disposition").ends_with(".jsonl\""));
    assert_eq!(export_counts(&chat), (2, 1));
    let examples = ndjson(&chat.bytes);
    examples.iter().for_each(|e| assert_valid("FineTuneExample", e));
    let system = json!({ "role": "system", "content": "You are a helpful sales assistant." });
    assert_eq!(
        examples,
        [
            json!({ "messages": [system, { "role": "user", "content": "Hello, \"there\"\nsecond line" },
                                 { "role": "assistant", "content": "@you: yes" }] }),
            json!({ "messages": [system, { "role": "user", "content": "text of m1" },
                                 { "role": "assistant", "content": "text of m2\ntext of m3" },
                                 { "role": "user", "content": "text of m4" }] }),
        ]
    );
    let uri = format!("{TRAINING_EXPORT}?format=openai&includeArchived=true");
    case.request_valid(&uri, None);
    let chat = case.check(200, get(uri).await);
    assert_eq!(export_counts(&chat), (3, 1));
    assert!(ndjson(&chat.bytes).iter().all(|e| e["messages"][0]["role"] == "user"), "no system message unless asked");

    // 200, the other chat formats: every line valid against its format's schema, the snapshot
    // without an assistant message skipped and counted by reason.
    for (format, schema) in
        [("bedrock", "BedrockExample"), ("vertex", "VertexExample"), ("sharegpt", "ShareGptExample")]
    {
        let uri = format!("{TRAINING_EXPORT}?format={format}&system=You%20are%20a%20helpful%20sales%20assistant.");
        case.request_valid(&uri, None);
        let chat = case.check(200, get(uri).await);
        assert_eq!(header(&chat, "content-type"), "application/x-ndjson", "{format}");
        assert!(header(&chat, "content-disposition").ends_with(".jsonl\""), "{format}");
        assert_eq!(export_counts(&chat), (2, 1), "{format}");
        assert_eq!(header(&chat, "x-export-skipped-reasons"), "no_assistant_turn=1", "{format}");
        ndjson(&chat.bytes).iter().for_each(|e| assert_valid(schema, e));
    }

    // 200, format=csv: one row per message, formula cells neutralised.
    let uri = format!("{TRAINING_EXPORT}?format=csv");
    case.request_valid(&uri, None);
    let sheet = case.check(200, get(uri).await);
    assert_eq!(header(&sheet, "content-type"), "text/csv; charset=utf-8");
    assert!(header(&sheet, "content-disposition").ends_with(".csv\""));
    assert_eq!(export_counts(&sheet), (3, 0));
    let records = csv_records(&sheet.bytes);
    let cols = shared::exports::training::CSV_COLUMNS;
    assert_eq!(records[0], cols);
    let rows = &records[1..];
    assert_eq!(rows.len(), 2 + 3 + 4, "{rows:?}");
    assert!(rows.iter().all(|r| r.len() == cols.len()));
    assert_eq!(column(cols, rows, "snapshotId"), [&d, &d, &b, &b, &b, &a, &a, &a, &a].map(String::as_str));
    assert_eq!(column(cols, rows, "messageIndex"), ["0", "1", "0", "1", "2", "0", "1", "2", "3"]);
    let b_rows = &rows[2..5];
    assert_eq!(column(cols, b_rows, "customerName"), ["'=cmd|' /C calc'!A0"; 3]);
    assert_eq!(column(cols, b_rows, "customerPhone"), ["'+1 555 0100"; 3]);
    assert_eq!(column(cols, b_rows, "notes"), ["'-5 stars"; 3]);
    assert_eq!(column(cols, b_rows, "content"), ["Hello, \"there\"\nsecond line", "'@you: yes", "   "]);
    assert_eq!(column(cols, b_rows, "role"), ["user", "assistant", "assistant"]);
    let a_rows = &rows[5..];
    assert_eq!(column(cols, a_rows, "tags"), ["sales|pricing"; 4]);
    assert_eq!(column(cols, a_rows, "isArchived"), ["false"; 4]);
    assert_eq!(column(cols, a_rows, "senderType"), ["HUMAN", "AI", "HUMAN", "HUMAN"]);
    assert_eq!(column(cols, a_rows, "timestamp")[0], "2026-05-18T13:30:00.000Z");

    // 303 with delivery=url: the download, stored with its type; the same file as inline.
    let uri = format!("{TRAINING_EXPORT}?delivery=url");
    case.request_valid(&uri, None);
    let moved = case.check(303, get(uri).await);
    let stored = stored_export(&s, &moved, &org, "training", "application/json").await;
    let payload: Value = serde_json::from_slice(&stored).expect("JSON");
    assert_valid("TrainingExportPayload", &payload);
    assert_eq!((ids(&payload["data"]), &payload["totalSnapshots"]), (vec![d.clone(), b.clone(), a.clone()], &json!(3)));
    let uri = format!("{TRAINING_EXPORT}?format=csv&delivery=url");
    let moved = case.check(303, get(uri).await);
    assert_eq!(stored_export(&s, &moved, &org, "training", "text/csv; charset=utf-8").await, sheet.bytes);
    let uri = format!("{TRAINING_EXPORT}?format=openai&delivery=url");
    let moved = case.check(303, get(uri).await);
    assert_eq!((&moved.body["data"]["items"], &moved.body["data"]["skipped"]), (&json!(2), &json!(1)));
    assert_eq!(moved.body["data"]["skippedReasons"], json!({ "no_assistant_turn": 1 }));
    let stored = stored_export(&s, &moved, &org, "training", "application/x-ndjson").await;
    ndjson(&stored).iter().for_each(|e| assert_valid("FineTuneExample", e));

    // Past the inline limit: 303 (auto), 413 (inline); under it, inline is 200.
    let small = state_with(|c| c.inline_export_max_bytes = SMALL_INLINE_LIMIT).await;
    case.check(303, call(&small, "GET", TRAINING_EXPORT, &tok, None).await);
    let uri = format!("{TRAINING_EXPORT}?delivery=inline");
    case.request_valid(&uri, None);
    case.check(413, call(&small, "GET", &uri, &tok, None).await);
    let tiny = format!("{TRAINING_EXPORT}?delivery=inline&to=2000-01-01T00:00:00Z");
    case.check(200, call(&small, "GET", &tiny, &tok, None).await);

    // 400: parameters the spec rejects too.
    let long_system = format!("{TRAINING_EXPORT}?format=openai&system={}", "s".repeat(10_001));
    for uri in [
        format!("{TRAINING_EXPORT}?format=xml"),
        format!("{TRAINING_EXPORT}?format=JSON"),
        format!("{TRAINING_EXPORT}?delivery=email"),
        format!("{TRAINING_EXPORT}?includeArchived=yes"),
        format!("{TRAINING_EXPORT}?includeArchived=all"),
        format!("{TRAINING_EXPORT}?from=yesterday"),
        format!("{TRAINING_EXPORT}?to=2026-05-18"),
        format!("{TRAINING_EXPORT}?contactId=has%20space"),
        long_system,
    ] {
        case.request_invalid(&uri, None);
        case.check(400, get(uri).await);
    }
    // 400 the spec cannot see: `from` after `to`.
    let uri = format!("{TRAINING_EXPORT}?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z");
    case.request_valid(&uri, None);
    case.check(400, get(uri).await);

    // 401.
    case.check(401, raw(&s, "GET", TRAINING_EXPORT, None, None, b"").await);
    case.check(401, raw(&s, "GET", TRAINING_EXPORT, Some("not-a-jwt"), None, b"").await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "GET", TRAINING_EXPORT, &tok, None).await);

    // 202: past its time budget the export continues as a job. The budget is checked after
    // each page of 500 snapshots, more than this test can seed quickly, so the answer is made
    // by the function `run_sync` answers with, for a job stored and dispatched as it does
    // (`export_convos_answers_match_the_spec` triggers the real fallback).
    let (jobs, _worker) = jobs_state().await;
    let spec = shared::exports::training::training_spec(
        shared::exports::training::Format::Json,
        shared::snapshots::store::Filters::default(),
        None,
        None,
    )
    .expect("spec");
    let job = shared::jobs::start(&jobs, &Org::stored(org.as_str()), spec, shared::jobs::Trigger::Fallback)
        .await
        .expect("a job");
    let a = case.check(202, support::answer(shared::handlers::export_jobs::accepted(&job, FALLBACK_MESSAGE)));
    assert_eq!(accepted_job(&a), job.id);
    assert_eq!((&a.body["data"]["trigger"], &a.body["data"]["source"]), (&json!("fallback"), &json!("training")));

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn export_convos_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("GET", CONVOS_EXPORT);
    let uri = "/agents/ag/convos/export";
    let get = |uri: String| {
        let (s, tok) = (&s, &tok);
        async move { call(s, "GET", &uri, tok, None).await }
    };
    let ids = |a: &Answer| -> Vec<String> {
        let data = a.body["data"].as_array().unwrap_or_else(|| panic!("data is not a list: {}", a.body));
        data.iter().filter_map(|i| i["metadata"]["convo"]["id"].as_str().map(str::to_string)).collect()
    };

    // 200: an agent without conversations exports an empty list (or a header-only CSV).
    case.request_valid(uri, None);
    let a = case.check(200, get(uri.into()).await);
    assert_eq!((&a.body["data"], export_counts(&a)), (&json!([]), (0, 0)));
    let a = case.check(200, get(format!("{uri}?format=csv")).await);
    assert_eq!(csv_records(&a.bytes), [shared::exports::convos::CSV_COLUMNS]);

    seed_export_convos(&s, &tok).await;

    // 200, format=json: Convocore's envelope, newest activity first, every message in turns.
    let a = case.check(200, get(uri.into()).await);
    assert_eq!(header(&a, "content-type"), "application/json");
    assert!(header(&a, "content-disposition").starts_with("attachment; filename=\"conversations-ag-"));
    assert_eq!(a.body["message"], "Conversations exported successfully");
    assert_eq!(ids(&a), ["c2", "c3", "c1"]);
    assert_eq!(export_counts(&a), (3, 0));
    assert_eq!(a.body["data"][2], c1_exported());
    let c2 = &a.body["data"][0];
    assert_eq!(
        (&c2["metadata"]["feedback"], &c2["metadata"]["convo"]["userName"], &c2["turns"]),
        (&json!("Unset"), &Value::Null, &json!([]))
    );

    // 200: limit, and from / to on the last activity (inclusive, any offset).
    for (query, expected) in [
        ("?limit=1", vec!["c2"]),
        ("?limit=2&format=json", vec!["c2", "c3"]),
        ("?limit=1000000", vec!["c2", "c3", "c1"]),
        ("?from=2024-12-01T00:00:00Z&to=2024-12-01T22:05:09Z", vec!["c1"]),
        ("?to=2024-12-01T22:05:08Z", vec![]),
        ("?from=2024-12-02T00:00:00%2B01:00&to=2025-01-02T00:00:00Z", vec!["c3"]),
        ("?format=&limit=&from=&to=&delivery=", vec!["c2", "c3", "c1"]),
    ] {
        let uri = format!("{uri}{query}");
        case.request_valid(&uri, None);
        let a = case.check(200, get(uri).await);
        assert_eq!(ids(&a), expected, "{query}");
        assert_eq!(export_counts(&a), (expected.len() as u64, 0), "{query}");
    }

    // 200, format=csv: one row per message (c2 has none), formula cells neutralised.
    let csv_uri = format!("{uri}?format=csv");
    case.request_valid(&csv_uri, None);
    let sheet = case.check(200, get(csv_uri).await);
    assert_eq!(header(&sheet, "content-type"), "text/csv; charset=utf-8");
    assert!(header(&sheet, "content-disposition").ends_with(".csv\""));
    assert_eq!(export_counts(&sheet), (3, 0));
    let records = csv_records(&sheet.bytes);
    let cols = shared::exports::convos::CSV_COLUMNS;
    assert_eq!(records[0], cols);
    assert_eq!(column(cols, &records[1..], "convoId"), ["c3", "c1", "c1", "c1", "c1"]);
    assert_eq!(column(cols, &records[1..2], "ts"), ["January 2nd 2025, 12:00:00 am"]);
    assert_c1_rows(&records[2..]);

    // 303 with delivery=url, in either format.
    let url_uri = format!("{uri}?delivery=url");
    case.request_valid(&url_uri, None);
    let moved = case.check(303, get(url_uri).await);
    let stored = stored_export(&s, &moved, &org, "convos", "application/json").await;
    let body: Value = serde_json::from_slice(&stored).expect("JSON");
    assert_valid("ConvoExportListResponse", &body);
    assert_eq!(body["data"][2], c1_exported());
    let moved = case.check(303, get(format!("{uri}?format=csv&delivery=url")).await);
    assert_eq!(stored_export(&s, &moved, &org, "convos", "text/csv; charset=utf-8").await, sheet.bytes);

    // Past the inline limit: 303 (auto), 413 (inline); under it, inline is 200.
    let small = state_with(|c| c.inline_export_max_bytes = SMALL_INLINE_LIMIT).await;
    case.check(303, call(&small, "GET", uri, &tok, None).await);
    let inline = format!("{uri}?delivery=inline");
    case.request_valid(&inline, None);
    case.check(413, call(&small, "GET", &inline, &tok, None).await);
    case.check(200, call(&small, "GET", "/agents/nobody/convos/export?delivery=inline", &tok, None).await);

    // 400: parameters the spec rejects too.
    for query in [
        "?format=xml",
        "?format=jsonl",
        "?limit=0",
        "?limit=1000001",
        "?limit=ten",
        "?limit=1.5",
        "?from=yesterday",
        "?to=2026-05-18",
        "?delivery=email",
    ] {
        let uri = format!("{uri}{query}");
        case.request_invalid(&uri, None);
        case.check(400, get(uri).await);
    }
    let bad_agent = "/agents/agent%201/convos/export".to_string();
    case.request_invalid(&bad_agent, None);
    case.check(400, get(bad_agent).await);
    // 400 the spec cannot see: `from` after `to`.
    let uri2 = format!("{uri}?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z");
    case.request_valid(&uri2, None);
    case.check(400, get(uri2).await);

    // 401.
    case.check(401, raw(&s, "GET", uri, None, None, b"").await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "GET", uri, &tok, None).await);

    // 202: past its time budget (checked after each page of 100 conversations) the export
    // continues as a job with the same parameters, whatever `delivery` asked; the job then
    // exports every conversation.
    let (slow, mut worker) = jobs_state_with(|c| c.export_sync_budget = std::time::Duration::ZERO).await;
    seed_many_convos(&slow, &tok, "many", 101).await;
    let many = "/agents/many/convos/export?delivery=inline";
    case.request_valid(many, None);
    let a = case.check(202, call(&slow, "GET", many, &tok, None).await);
    let id = accepted_job(&a);
    let job = &a.body["data"];
    assert_eq!(a.body["message"], FALLBACK_MESSAGE);
    assert_eq!(
        (&job["status"], &job["trigger"], &job["source"], &job["params"]),
        (
            &json!("queued"),
            &json!("fallback"),
            &json!("conversations"),
            &json!({ "agentId": "many", "format": "json" })
        )
    );
    let outcomes = worker.drain(&slow, worker_options()).await;
    assert_eq!(outcomes, [shared::jobs::worker::Outcome::Succeeded]);
    let done = call(&slow, "GET", &format!("{EXPORT_JOBS}/{id}"), &tok, None).await;
    assert_matches_spec("GET", EXPORT_JOB, &done);
    assert_eq!((&done.body["data"]["status"], &done.body["data"]["processed"]), (&json!("succeeded"), &json!(101)));
    let (status, _, file) = download(done.body["data"]["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&file).expect("JSON");
    assert_valid("ConvoExportListResponse", &body);
    assert_eq!(body["data"].as_array().map(Vec::len), Some(101));
    // Without a worker the fallback cannot start a job: 503.
    let no_worker = state_with(|c| c.export_sync_budget = std::time::Duration::ZERO).await;
    case.check(503, call(&no_worker, "GET", many, &tok, None).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn export_convo_answers_match_the_spec() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("GET", CONVO_EXPORT);
    let get = |uri: String| {
        let (s, tok) = (&s, &tok);
        async move { call(s, "GET", &uri, tok, None).await }
    };
    seed_export_convos(&s, &tok).await;
    let uri = "/agents/ag/convos/c1/export";

    // 200, format=json: Convocore's envelope around the one conversation.
    case.request_valid(uri, None);
    let a = case.check(200, get(uri.into()).await);
    assert_eq!(header(&a, "content-type"), "application/json");
    assert!(header(&a, "content-disposition").starts_with("attachment; filename=\"conversation-c1-"));
    assert_eq!((&a.body["message"], &a.body["data"]), (&json!("Conversation exported successfully"), &c1_exported()));
    assert_eq!(export_counts(&a), (1, 0));
    for query in ["?format=json&delivery=auto", "?format=&delivery="] {
        let uri = format!("{uri}{query}");
        case.request_valid(&uri, None);
        case.check(200, get(uri).await);
    }
    // 200 for a conversation without messages: no turns.
    let empty = "/agents/ag/convos/c2/export";
    let a = case.check(200, get(empty.into()).await);
    assert_eq!(a.body["data"]["turns"], json!([]));

    // 200, format=csv.
    let csv_uri = format!("{uri}?format=csv");
    case.request_valid(&csv_uri, None);
    let sheet = case.check(200, get(csv_uri).await);
    assert_eq!(header(&sheet, "content-type"), "text/csv; charset=utf-8");
    assert!(header(&sheet, "content-disposition").ends_with(".csv\""));
    let records = csv_records(&sheet.bytes);
    assert_eq!(records[0], shared::exports::convos::CSV_COLUMNS);
    assert_c1_rows(&records[1..]);
    let a = case.check(200, get(format!("{empty}?format=csv")).await);
    assert_eq!(csv_records(&a.bytes).len(), 1, "only the header");

    // 303 with delivery=url.
    let url_uri = format!("{uri}?delivery=url");
    case.request_valid(&url_uri, None);
    let moved = case.check(303, get(url_uri).await);
    assert_eq!(export_counts(&moved), (1, 0));
    let stored = stored_export(&s, &moved, &org, "convos", "application/json").await;
    let body: Value = serde_json::from_slice(&stored).expect("JSON");
    assert_valid("ConvoExportResponse", &body);
    let moved = case.check(303, get(format!("{uri}?format=csv&delivery=url")).await);
    assert_eq!(stored_export(&s, &moved, &org, "convos", "text/csv; charset=utf-8").await, sheet.bytes);

    // 404: an unknown conversation, another agent's, another organization's (the same answer).
    let unknown = "/agents/ag/convos/nope/export";
    case.request_valid(unknown, None);
    let a = case.check(404, get(unknown.into()).await);
    let b = case.check(404, get("/agents/ag2/convos/c1/export".into()).await);
    let c = case.check(404, call(&s, "GET", uri, &token(&new_org()), None).await);
    assert_eq!(
        (&a.body, &a.body),
        (&b.body, &c.body),
        "another agent's or organization's conversation must look unknown"
    );

    // Past the inline limit: 303 (auto), 413 (inline).
    let small = state_with(|c| c.inline_export_max_bytes = SMALL_INLINE_LIMIT).await;
    case.check(303, call(&small, "GET", uri, &tok, None).await);
    let inline = format!("{uri}?delivery=inline");
    case.request_valid(&inline, None);
    case.check(413, call(&small, "GET", &inline, &tok, None).await);

    // 400: parameters the spec rejects too.
    for uri in [
        format!("{uri}?format=pdf"),
        format!("{uri}?delivery=never"),
        "/agents/ag/convos/bad%20id/export".to_string(),
        "/agents/bad%20agent/convos/c1/export".to_string(),
    ] {
        case.request_invalid(&uri, None);
        case.check(400, get(uri).await);
    }

    // 401.
    case.check(401, raw(&s, "GET", uri, None, None, b"").await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "GET", uri, &tok, None).await);

    case.assert_exercised_all_but(&[500]);
}

// ---------------------------------------------------------------------------------------------
// Export jobs.
// ---------------------------------------------------------------------------------------------

const EXPORT_JOBS: &str = "/api/training/exports";
const EXPORT_JOB: &str = "/api/training/exports/{id}";

/// The message of the `202` a synchronous export answers when it continues as a job.
const FALLBACK_MESSAGE: &str = "The export is larger than a request allows; it continues as an export job";

/// The exact 404 of the job route.
fn job_not_found() -> Value {
    json!({ "success": false, "message": "Export job not found", "error": "NOT_FOUND" })
}

/// Asserts a `202` names its job in `Location` and returns the job's id.
fn accepted_job(a: &Answer) -> String {
    let id = a.body["data"]["id"].as_str().unwrap_or_else(|| panic!("no job id: {}", a.body)).to_string();
    assert_eq!(header(a, "location"), format!("{EXPORT_JOBS}/{id}"));
    id
}

/// `n` conversations of `agent` without messages, written a few at a time.
async fn seed_many_convos(state: &AppState, tok: &str, agent: &str, n: usize) {
    use futures::StreamExt;
    let puts = futures::stream::iter((0..n).map(|i| async move {
        call(state, "PUT", &format!("/agents/{agent}/convos/m{i:04}"), tok, Some(json!({}))).await
    }))
    .buffer_unordered(8)
    .collect::<Vec<Answer>>()
    .await;
    for a in puts {
        assert_eq!(a.status.as_u16(), 201, "{}", a.body);
    }
}

#[test]
fn export_job_schema_ties_the_fields_to_the_status_source_and_trigger() {
    use shared::exports::producer::{ExportSpec, Window};
    use shared::handlers::job_view::document;
    use shared::jobs::{new_job, Status, Trigger};
    let schema = component("ExportJob");
    let training = || {
        shared::exports::training::training_spec(
            shared::exports::training::Format::Jsonl,
            shared::snapshots::store::Filters::default(),
            None,
            None,
        )
        .expect("spec")
    };
    let job =
        |spec: ExportSpec, trigger: Trigger| new_job(&Org::stored("org-1"), spec, trigger, shared::ids::object_id());
    let link =
        || Some(("https://bucket.example/key?X-Amz-Signature=abc".to_string(), "2026-05-18T14:45:00.000Z".to_string()));
    let at = |t: &str| Some(t.to_string());

    // Documents the handlers make, in every status and from every trigger, are valid.
    let queued = job(training(), Trigger::Request);
    let mut running = job(
        ExportSpec::Conversations {
            agent_id: "ag".into(),
            format: shared::exports::convos::ConvoFormat::Csv,
            from: None,
            to: None,
            limit: Some(5),
            redact: Some(shared::exports::redact::Redaction {
                types: vec![shared::exports::redact::PiiType::Email, shared::exports::redact::PiiType::Phone],
            }),
        },
        Trigger::Fallback,
    );
    running.status = Status::Running;
    running.started_at = at("2026-05-18T14:30:01.000Z");
    let mut succeeded = job(
        ExportSpec::Conversation {
            agent_id: "ag".into(),
            convo_id: "c1".into(),
            format: shared::exports::convos::ConvoFormat::Json,
            redact: None,
        },
        Trigger::Request,
    );
    succeeded.status = Status::Succeeded;
    succeeded.started_at = at("2026-05-18T14:30:01.000Z");
    succeeded.finished_at = at("2026-05-18T14:30:02.000Z");
    succeeded.file_expires_at = at("2026-05-25T14:30:02.000Z");
    succeeded.redacted.email = 2;
    let mut failed = job(training(), Trigger::Request);
    failed.status = Status::Failed;
    failed.finished_at = at("2026-05-18T14:30:02.000Z");
    failed.reason = at("Conversation not found");
    let window = Window { after: "1970-01-01T00:00:00.000Z".into(), up_to: "2026-05-18T14:29:00.000Z".into() };
    let scheduled = job(
        ExportSpec::Training {
            format: shared::exports::training::Format::Jsonl,
            filters: Default::default(),
            system: None,
            changed: Some(window),
            split: None,
            redact: None,
            dedup: Default::default(),
        },
        Trigger::Schedule,
    );
    // A succeeded split job: one file per split, no single link, no total.
    let split = shared::exports::split::SplitSpec {
        validation: 0.1,
        test: 0.1,
        seed: "s".into(),
        group_by: shared::exports::split::GroupBy::ContactId,
        stratify_by: Some(shared::exports::split::StratifyBy::Quality),
    };
    let split_spec = shared::exports::training::training_spec(
        shared::exports::training::Format::Jsonl,
        shared::snapshots::store::Filters::default(),
        None,
        Some(split),
    )
    .expect("spec");
    let mut split_job = job(split_spec, Trigger::Request);
    split_job.status = Status::Succeeded;
    split_job.started_at = at("2026-05-18T14:30:01.000Z");
    split_job.finished_at = at("2026-05-18T14:30:02.000Z");
    split_job.file_expires_at = at("2026-05-25T14:30:02.000Z");
    split_job.files = ["train", "validation", "test"]
        .iter()
        .map(|s| shared::jobs::JobFile {
            name: format!("training-data-1-{s}.jsonl"),
            split: Some(s.to_string()),
            rows: 3,
            bytes: 30,
            sha256: "0".repeat(64),
            key: Some(format!("exports/o/training/2026-05-18/r/training-data-1-{s}.jsonl")),
            created_at: at("2026-05-18T14:30:01.500Z"),
        })
        .collect();
    for doc in [
        document(&queued, None),
        document(&running, None),
        document(&succeeded, link()),
        document(&succeeded, None),
        document(&failed, None),
        document(&scheduled, None),
        document(&split_job, None),
    ] {
        assert_valid("ExportJob", &serde_json::to_value(&doc).unwrap());
    }

    // And the schema refuses what no job can be.
    let with = |doc: shared::handlers::job_view::JobView<'_>, field: &str, value: Value| {
        let mut doc = serde_json::to_value(&doc).unwrap();
        doc[field] = value;
        doc
    };
    let impossible = [
        ("a queued job with a link", serde_json::to_value(document(&queued, link())).unwrap()),
        ("a queued job that started", with(document(&queued, None), "startedAt", json!("2026-05-18T14:30:01.000Z"))),
        (
            "a running job that finished",
            with(document(&running, None), "finishedAt", json!("2026-05-18T14:30:01.000Z")),
        ),
        ("a succeeded job without fileExpiresAt", with(document(&succeeded, None), "fileExpiresAt", Value::Null)),
        ("a link without its expiry", with(document(&succeeded, link()), "expiresAt", Value::Null)),
        ("a failed job without a reason", with(document(&failed, None), "reason", Value::Null)),
        ("a reason on a job that did not fail", with(document(&succeeded, None), "reason", json!("why"))),
        ("a training job with conversation parameters", with(document(&succeeded, None), "source", json!("training"))),
        (
            "a conversations job with training parameters",
            with(document(&queued, None), "source", json!("conversations")),
        ),
        ("a requested job with a change window", with(document(&scheduled, None), "trigger", json!("request"))),
        ("a scheduled job without a change window", with(document(&queued, None), "trigger", json!("schedule"))),
        ("an unknown field", with(document(&queued, None), "key", json!("exports/x"))),
        ("a split job with a single link", serde_json::to_value(document(&split_job, link())).unwrap()),
        ("a split job with a total", with(document(&split_job, None), "total", json!(9))),
        (
            "a file that names a split in a job that does not split",
            with(
                document(&succeeded, None),
                "files",
                json!([serde_json::to_value(document(&split_job, None)).unwrap()["files"][0]]),
            ),
        ),
    ];
    for (what, doc) in impossible {
        assert!(!schema_errors(schema, &doc).is_empty(), "ExportJob allows {what}: {doc}");
    }
}

#[tokio::test]
async fn create_export_answers_match_the_spec() {
    let (s, _worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("POST", EXPORT_JOBS);
    seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;
    create_snapshot(&s, &tok, json!({ "contactId": "k1", "quality": "good", "tags": ["sales"] })).await;
    create_snapshot(&s, &tok, json!({ "contactId": "k1", "quality": "bad" })).await;
    let post = |body: Value| {
        let (s, tok) = (&s, &tok);
        async move { call(s, "POST", EXPORT_JOBS, tok, Some(body)).await }
    };

    // 202: a queued job, its parameters normalised, and `Location`.
    let full = json!({
        "source": "training", "format": "csv", "quality": " good ", "category": "", "tags": [" sales ", ""],
        "includeArchived": true, "from": "2000-01-01T00:00:00+01:00", "to": "2100-01-01T00:00:00Z", "contactId": " k1 ",
        "system": "ignored unless openai",
    });
    case.request_valid(EXPORT_JOBS, Some(&full));
    let a = case.check(202, post(full).await);
    // A conversation that does not exist answers 404 at once, and no job is created.
    let a404 = case.check(404, post(json!({ "agentId": "ag", "convoId": "nope" })).await);
    assert_eq!(a404.body["message"], "Conversation not found");
    let id = accepted_job(&a);
    assert_eq!(a.body["message"], "Export job created");
    let job = &a.body["data"];
    assert_eq!(
        (&job["status"], &job["source"], &job["trigger"], &job["processed"], &job["total"]),
        (&json!("queued"), &json!("training"), &json!("request"), &json!(0), &Value::Null)
    );
    assert_eq!(
        job["params"],
        json!({ "format": "csv", "system": "ignored unless openai", "filters": {
            "quality": "good", "category": null, "tags": ["sales"], "archived": "all",
            "from": "1999-12-31T23:00:00Z", "to": "2100-01-01T00:00:00Z", "contactId": "k1" } })
    );
    assert!(job["fileName"].as_str().is_some_and(|n| n.starts_with("training-data-") && n.ends_with(".csv")), "{job}");

    // 202: every field null is the default, a training export in JSON.
    let nulls: Value = [
        "source",
        "format",
        "quality",
        "category",
        "tags",
        "includeArchived",
        "from",
        "to",
        "contactId",
        "system",
        "agentId",
        "convoId",
        "limit",
    ]
    .iter()
    .map(|k| (k.to_string(), Value::Null))
    .collect::<Map<String, Value>>()
    .into();
    for body in [json!({}), nulls] {
        case.request_valid(EXPORT_JOBS, Some(&body));
        let a = case.check(202, post(body).await);
        assert_ne!(accepted_job(&a), id);
        assert_eq!(a.body["data"]["params"]["format"], "json");
        assert_eq!(a.body["data"]["params"]["filters"]["archived"], "no");
    }
    let openai = json!({ "format": "openai", "system": "You are a helpful sales assistant." });
    case.request_valid(EXPORT_JOBS, Some(&openai));
    let a = case.check(202, post(openai).await);
    assert_eq!(a.body["data"]["params"]["system"], "You are a helpful sales assistant.");

    // 202: conversations; `agentId` makes it the default source.
    let agent = json!({ "agentId": " ag ", "format": "csv", "from": "2024-12-01T01:00:00+01:00", "to": "2025-01-01T00:00:00Z", "limit": 10 });
    case.request_valid(EXPORT_JOBS, Some(&agent));
    let a = case.check(202, post(agent).await);
    assert_eq!((&a.body["data"]["source"], &a.body["data"]["total"]), (&json!("conversations"), &Value::Null));
    assert_eq!(
        a.body["data"]["params"],
        json!({ "agentId": "ag", "format": "csv", "from": "2024-12-01T00:00:00.000Z", "to": "2025-01-01T00:00:00.000Z", "limit": 10 })
    );
    let one =
        json!({ "source": "conversations", "agentId": "ag", "convoId": "convo-k1", "format": null, "limit": null });
    case.request_valid(EXPORT_JOBS, Some(&one));
    let a = case.check(202, post(one).await);
    assert_eq!(a.body["data"]["params"], json!({ "agentId": "ag", "convoId": "convo-k1", "format": "json" }));
    assert!(a.body["data"]["fileName"].as_str().is_some_and(|n| n.starts_with("conversation-convo-k1-")));

    // 400: malformed JSON, an empty body, and bodies the spec rejects too.
    case.check(400, raw(&s, "POST", EXPORT_JOBS, Some(&tok), Some("application/json"), br#"{"format": "#).await);
    case.check(400, raw(&s, "POST", EXPORT_JOBS, Some(&tok), Some("application/json"), b"").await);
    case.request_invalid(EXPORT_JOBS, None);
    for (bad, says) in [
        (json!({ "format": "xml" }), "`format`"),
        (json!({ "format": "JSON" }), "`format`"),
        (json!({ "agentId": "ag", "format": "jsonl" }), "`format`"),
        (json!({ "source": "everything" }), "`source`"),
        (json!({ "nope": 1 }), "unknown field `nope`"),
        (json!({ "includeArchived": "yes" }), "includeArchived: invalid type"),
        (json!({ "tags": "vip" }), "tags: invalid type"),
        (json!({ "from": "yesterday" }), "`from`"),
        (json!({ "to": "2026-05-18" }), "`to`"),
        (json!({ "contactId": "has space" }), "contactId: is not a valid id"),
        (json!({ "system": "s".repeat(10_001) }), "`system`"),
        (json!({ "source": "conversations" }), "`agentId` is required"),
        (json!({ "source": "conversations", "agentId": "  " }), "`agentId` is required"),
        (json!({ "agentId": "bad id" }), "`agentId`"),
        (json!({ "agentId": "ag", "convoId": "bad#id" }), "`convoId`"),
        (json!({ "agentId": "ag", "limit": 0 }), "`limit`"),
        (json!({ "agentId": "ag", "limit": 1_000_001 }), "`limit`"),
        (json!({ "agentId": "ag", "limit": 1.5 }), "limit: invalid value"),
        (json!({ "source": "training", "agentId": "ag" }), "`agentId`"),
        (json!({ "limit": 5 }), "`limit`"),
        (json!({ "convoId": "c1" }), "`convoId`"),
        (json!({ "agentId": "ag", "quality": "good", "tags": [] }), "`quality`, `tags`"),
        (json!({ "agentId": "ag", "includeArchived": false }), "`includeArchived`"),
        (json!({ "agentId": "ag", "system": "x" }), "`system`"),
        (json!({ "agentId": "ag", "contactId": "k1" }), "`contactId`"),
        (json!({ "agentId": "ag", "convoId": "c1", "limit": 5 }), "`limit`"),
        (json!({ "agentId": "ag", "convoId": "c1", "from": "2024-12-01T00:00:00Z" }), "`from`"),
        (json!([]), "object"),
    ] {
        case.request_invalid(EXPORT_JOBS, Some(&bad));
        let a = case.check(400, post(bad.clone()).await);
        let message = a.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{bad}: {message}");
    }
    // 400 the spec cannot see: `from` after `to`, for either source.
    for bad in [
        json!({ "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z" }),
        json!({ "agentId": "ag", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z" }),
    ] {
        case.request_valid(EXPORT_JOBS, Some(&bad));
        case.check(400, post(bad).await);
    }

    // 401.
    case.check(401, raw(&s, "POST", EXPORT_JOBS, None, Some("application/json"), b"{}").await);
    case.check(401, raw(&s, "POST", EXPORT_JOBS, Some("not-a-jwt"), Some("application/json"), b"{}").await);

    // 413 and 415.
    let big = oversized_body(s.config.max_body_bytes + 1);
    case.check(413, raw(&s, "POST", EXPORT_JOBS, Some(&tok), Some("application/json"), &big).await);
    case.check(415, raw(&s, "POST", EXPORT_JOBS, Some(&tok), Some("text/plain"), b"{}").await);
    case.check(415, raw(&s, "POST", EXPORT_JOBS, Some(&tok), None, b"{}").await);

    // 503: a deployment without a worker, and storage unreachable.
    let no_worker = state().await;
    assert!(!no_worker.jobs.is_enabled());
    case.check(503, call(&no_worker, "POST", EXPORT_JOBS, &tok, Some(json!({}))).await);
    let mut down = unreachable_storage().await;
    down.jobs = s.jobs.clone();
    case.check(503, call(&down, "POST", EXPORT_JOBS, &tok, Some(json!({}))).await);

    case.assert_exercised_all_but(&[500]);
}

#[tokio::test]
async fn get_export_answers_match_the_spec() {
    let (s, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("GET", EXPORT_JOB);
    seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;
    create_snapshot(&s, &tok, json!({ "contactId": "k1", "quality": "good" })).await;
    create_snapshot(&s, &tok, json!({ "contactId": "k1", "quality": "bad" })).await;
    let create = |body: Value| {
        let (s, tok) = (&s, &tok);
        async move {
            let a = call(s, "POST", EXPORT_JOBS, tok, Some(body)).await;
            assert_eq!(a.status.as_u16(), 202, "{}", a.body);
            accepted_job(&a)
        }
    };
    let get = |id: &str| {
        let (s, tok, uri) = (&s, &tok, format!("{EXPORT_JOBS}/{id}"));
        async move { call(s, "GET", &uri, tok, None).await }
    };
    let training = create(json!({})).await;
    let openai = create(json!({ "format": "openai", "system": "Be brief." })).await;
    let convos = create(json!({ "agentId": "ag", "format": "csv" })).await;
    // A conversation removed after its job was created: the job fails with a reason.
    let put = call(&s, "PUT", "/agents/ag/convos/gone", &tok, Some(json!({}))).await;
    assert!(put.status.is_success(), "{}", put.body);
    let missing = create(json!({ "agentId": "ag", "convoId": "gone" })).await;
    s.dynamo
        .delete_item()
        .table_name(&s.config.table_name)
        .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(shared::keys::agent(&Org::stored(org.as_str()), "ag")))
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S(shared::convos::store::convo_sk("gone")))
        .send()
        .await
        .expect("delete the conversation");

    // 200 while queued: no link.
    let uri = format!("{EXPORT_JOBS}/{training}");
    case.request_valid(&uri, None);
    let a = case.check(200, get(&training).await);
    assert_eq!(a.body["message"], "Export job retrieved successfully");
    assert_eq!((&a.body["data"]["status"], &a.body["data"]["url"]), (&json!("queued"), &Value::Null));

    // 200 while running (a worker holds it).
    let claimed = shared::jobs::JobStore::new(&s)
        .claim(&Org::stored(org.as_str()), &convos, "test-worker", shared::jobs::now_ms() + 60_000)
        .await
        .expect("claim")
        .expect("the job was free");
    assert_eq!(claimed.status, shared::jobs::Status::Running);
    let a = case.check(200, get(&convos).await);
    assert_eq!(a.body["data"]["status"], "running");
    assert!(a.body["data"]["startedAt"].is_string());

    // 200 once the worker ran them: succeeded with a fresh link, or failed with a reason.
    let outcomes = worker.drain(&s, worker_options()).await;
    use shared::jobs::worker::Outcome;
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Succeeded).count(), 2, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Failed).count(), 1, "{outcomes:?}");
    let a = case.check(200, get(&training).await);
    let done = &a.body["data"];
    assert_eq!((&done["status"], &done["processed"], &done["total"]), (&json!("succeeded"), &json!(2), &json!(2)));
    let (status, _, file) = download(done["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    assert_eq!(done["bytes"], file.len());
    assert_valid("TrainingExportPayload", &serde_json::from_slice(&file).expect("JSON"));
    let a = case.check(200, get(&openai).await);
    let done = &a.body["data"];
    assert_eq!(
        (&done["status"], &done["processed"], &done["skipped"], &done["total"]),
        (&json!("succeeded"), &json!(2), &json!(0), &Value::Null)
    );
    let (_, _, file) = download(done["url"].as_str().expect("url")).await;
    ndjson(&file).iter().for_each(|e| assert_valid("FineTuneExample", e));
    let a = case.check(200, get(&missing).await);
    let failed = &a.body["data"];
    assert_eq!(
        (&failed["status"], &failed["reason"], &failed["url"]),
        (&json!("failed"), &json!("Conversation not found"), &Value::Null)
    );
    // The running job stays with its worker until the lease ends.
    let a = case.check(200, get(&convos).await);
    assert_eq!(a.body["data"]["status"], "running");

    // 400: a character outside the id alphabet.
    let bad = format!("{EXPORT_JOBS}/bad%20id");
    case.request_invalid(&bad, None);
    case.check(400, call(&s, "GET", &bad, &tok, None).await);

    // 401.
    case.check(401, raw(&s, "GET", &uri, None, None, b"").await);

    // 404: an unknown id, an id that is not a job id, another organization's job: alike.
    let unknown = format!("{EXPORT_JOBS}/{}", shared::ids::object_id());
    let mut uris = vec![unknown, format!("{EXPORT_JOBS}/123")];
    if training.to_ascii_uppercase() != training {
        uris.push(format!("{EXPORT_JOBS}/{}", training.to_ascii_uppercase()));
    }
    for uri in uris {
        case.request_valid(&uri, None);
        let a = case.check(404, call(&s, "GET", &uri, &tok, None).await);
        assert_eq!(a.body, job_not_found());
    }
    let a = case.check(404, call(&s, "GET", &uri, &token(&new_org()), None).await);
    assert_eq!(a.body, job_not_found());

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "GET", &uri, &tok, None).await);

    case.assert_exercised_all_but(&[500]);
}

/// A split job as it runs: the request is valid per the spec, its answer (a file per split, no
/// single link, no total) and its manifest validate, and the synchronous route refuses `split`.
#[tokio::test]
async fn split_job_answers_and_manifest_match_the_spec() {
    let (s, mut worker) = jobs_state().await;
    let tok = token(&new_org());
    for c in 0..8 {
        let contact = format!("k{c}");
        seed_contact(&s, &tok, &contact, full_lead(), FOUR_MESSAGES).await;
        create_snapshot(&s, &tok, json!({ "contactId": contact, "quality": (["good", "bad"][c % 2]) })).await;
    }
    let split = json!({ "validation": 0.25, "test": 0.25, "seed": "spec", "stratifyBy": null });
    let body = json!({ "format": "jsonl", "split": split });
    SpecCase::new("POST", EXPORT_JOBS).request_valid(EXPORT_JOBS, Some(&body));
    let created = call(&s, "POST", EXPORT_JOBS, &tok, Some(body)).await;
    assert_eq!(created.status.as_u16(), 202, "{}", created.body);
    assert_matches_spec("POST", EXPORT_JOBS, &created);
    let id = accepted_job(&created);
    worker.drain(&s, worker_options()).await;
    let a =
        SpecCase::new("GET", EXPORT_JOB).check(200, call(&s, "GET", &format!("{EXPORT_JOBS}/{id}"), &tok, None).await);
    let job = &a.body["data"];
    let splits: Vec<&Value> = job["files"].as_array().expect("files").iter().map(|f| &f["split"]).collect();
    assert_eq!(splits, [&json!("train"), &json!("validation"), &json!("test")], "{job}");
    assert_eq!((&job["url"], &job["total"], &job["processed"]), (&Value::Null, &Value::Null, &json!(8)), "{job}");
    let (status, _, manifest) = download(job["manifest"]["url"].as_str().expect("a manifest link")).await;
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_slice(&manifest).expect("JSON");
    assert_valid("ExportManifest", &manifest);
    assert_eq!(manifest["params"]["split"]["groupBy"], "contactId");

    let a = call(&s, "GET", "/api/training/export?format=jsonl&split=0.1", &tok, None).await;
    assert_eq!(a.status.as_u16(), 400, "{}", a.body);
    assert_matches_spec("GET", "/api/training/export", &a);
}

#[tokio::test]
async fn list_exports_answers_match_the_spec() {
    let (s, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    let mut case = SpecCase::new("GET", EXPORT_JOBS);
    let list = |uri: String| {
        let (s, tok) = (&s, &tok);
        async move { call(s, "GET", &uri, tok, None).await }
    };
    let ids = |a: &Answer| -> Vec<String> {
        a.body["data"].as_array().into_iter().flatten().filter_map(|j| j["id"].as_str().map(str::to_string)).collect()
    };

    // 200: no job is an empty list.
    case.request_valid(EXPORT_JOBS, None);
    let a = case.check(200, list(EXPORT_JOBS.into()).await);
    assert_eq!((&a.body["data"], &a.body["nextCursor"]), (&json!([]), &Value::Null));

    // Three jobs: the first succeeded (it has a link), the others queued.
    let mut created = Vec::new();
    for body in [json!({}), json!({ "format": "csv" }), json!({ "agentId": "ag" })] {
        let a = call(&s, "POST", EXPORT_JOBS, &tok, Some(body)).await;
        assert_eq!(a.status.as_u16(), 202, "{}", a.body);
        created.push(accepted_job(&a));
        if created.len() == 1 {
            worker.drain(&s, worker_options()).await;
        }
    }
    created.reverse();

    // 200: newest first, each job as GET answers it.
    let a = case.check(200, list(EXPORT_JOBS.into()).await);
    assert_eq!(a.body["message"], "Export jobs retrieved successfully");
    assert_eq!((ids(&a), &a.body["nextCursor"]), (created.clone(), &Value::Null));
    assert_eq!(a.body["data"][2]["status"], "succeeded");
    assert!(a.body["data"][2]["url"].is_string());

    // 200: pages, following nextCursor.
    let first = format!("{EXPORT_JOBS}?limit=2");
    case.request_valid(&first, None);
    let page = case.check(200, list(first).await);
    assert_eq!(ids(&page), created[..2]);
    let cursor = page.body["nextCursor"].as_str().expect("a next page").to_string();
    let next = format!("{EXPORT_JOBS}?limit=2&cursor={cursor}");
    case.request_valid(&next, None);
    let page = case.check(200, list(next.clone()).await);
    assert_eq!((ids(&page), &page.body["nextCursor"]), (created[2..].to_vec(), &Value::Null));
    for uri in [format!("{EXPORT_JOBS}?limit=&cursor="), format!("{EXPORT_JOBS}?limit=100")] {
        case.request_valid(&uri, None);
        let a = case.check(200, list(uri).await);
        assert_eq!(ids(&a), created);
    }

    // 200: another organization sees none of them.
    let a = case.check(200, call(&s, "GET", EXPORT_JOBS, &token(&new_org()), None).await);
    assert_eq!(a.body["data"], json!([]));

    // 400: limit out of range or not a number (the spec rejects these too).
    for query in ["?limit=0", "?limit=101", "?limit=ten"] {
        let uri = format!("{EXPORT_JOBS}{query}");
        case.request_invalid(&uri, None);
        case.check(400, list(uri).await);
    }
    // 400: cursors that are opaque strings to the spec but not ours to accept (forged, from
    // another list, from another organization).
    let snapshots_cursor = {
        seed_contact(&s, &tok, "k1", full_lead(), FOUR_MESSAGES).await;
        create_snapshot(&s, &tok, json!({ "contactId": "k1" })).await;
        create_snapshot(&s, &tok, json!({ "contactId": "k1" })).await;
        let a = call(&s, "GET", &format!("{SNAPSHOTS}?limit=1"), &tok, None).await;
        a.body["nextCursor"].as_str().expect("a next page").to_string()
    };
    for uri in [format!("{EXPORT_JOBS}?cursor=garbage"), format!("{EXPORT_JOBS}?cursor={snapshots_cursor}")] {
        case.request_valid(&uri, None);
        case.check(400, list(uri).await);
    }
    case.check(400, call(&s, "GET", &next, &token(&new_org()), None).await);

    // 401.
    case.check(401, raw(&s, "GET", EXPORT_JOBS, None, None, b"").await);

    // 503.
    let down = unreachable_storage().await;
    case.check(503, call(&down, "GET", EXPORT_JOBS, &tok, None).await);

    case.assert_exercised_all_but(&[500]);
}
