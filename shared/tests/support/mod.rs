//! Test support: real clients against the emulator started by `scripts/test.sh`, tokens, and
//! requests shaped exactly as API Gateway shapes them.
#![allow(dead_code)]

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use shared::auth::{mint_hs256, now_epoch, Claims};
use shared::{gateway, routes, table, AppState, Config};

/// A fresh state per test (each test has its own runtime, and so its own connections).
pub async fn state() -> AppState {
    static LOGS: std::sync::Once = std::sync::Once::new();
    // Handlers log infrastructure faults; show them with a failing test's output.
    LOGS.call_once(|| {
        if std::env::var("RUST_LOG").is_err() {
            // SAFETY: runs once, before any test reads the environment concurrently with it.
            unsafe { std::env::set_var("RUST_LOG", "warn") };
        }
        lambda_http::tracing::init_default_subscriber();
    });
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|v| v.starts_with("http://127.0.0.1")),
        "tests run against the local emulator: use ./scripts/test.sh"
    );
    let mut config = Config::from_env().expect("configuration from scripts/test.sh");
    // One table per test binary: the emulator copies a whole table on every transactional
    // write, so small tables keep the suite fast (real DynamoDB has no such cost).
    config.table_name = format!("{}-{}", config.table_name, env!("CARGO_CRATE_NAME"));
    // The layout a deployment turns on once every function reads it (`SNAPSHOT_LAYOUT`), so
    // every route meets both: small snapshots in their headers, larger ones in chunks.
    config.small_snapshots_in_header = true;
    let state = AppState::new(config).await.expect("state");
    table::ensure_table(&state.dynamo, &state.config.table_name).await.expect("table");
    table::ensure_bucket(&state.s3, &state.config.bucket_name).await.expect("bucket");
    state
}

/// A state whose configuration is changed by `f` (other JWT settings, limits).
pub async fn state_with(f: impl FnOnce(&mut Config)) -> AppState {
    let mut config = state().await.config;
    f(&mut config);
    AppState::new(config).await.expect("state")
}

/// A new organization id, so tests never see each other's data.
pub fn new_org() -> String {
    shared::ids::object_id()
}

/// The suite's standard claims for `org`, valid for an hour; change fields with
/// `Claims { ..claims(org) }`.
pub fn claims(org: &str) -> Claims {
    Claims {
        sub: "user-1".into(),
        organization_id: org.into(),
        exp: now_epoch() + 3600,
        nbf: None,
        iss: None,
        aud: None,
        email: Some("alice@example.com".into()),
        given_name: Some("Alice".into()),
        family_name: Some("Rivera".into()),
    }
}

/// A valid token for `org`: the standard [`claims`].
pub fn token(org: &str) -> String {
    token_claims(claims(org))
}

/// A token with these claims, signed with the suite's secret.
pub fn token_claims(claims: Claims) -> String {
    mint_hs256(&std::env::var("JWT_SECRET").expect("JWT_SECRET"), &claims).expect("sign")
}

/// An answer: status, headers and the body parsed as JSON (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub bytes: Vec<u8>,
}

/// Sends a request through the route table, as the local server and API Gateway would.
pub async fn send(state: &AppState, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let (route, params) = match routes::find(method, path) {
        Ok(found) => found,
        Err(_) => panic!("no route for {method} {path}"),
    };
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    let route_key = format!("{} {}", route.method, route.path);
    let call = gateway::Call {
        method,
        route_key: &route_key,
        raw_path: path,
        raw_query: query,
        headers: &map,
        path_params: &params,
        body,
    };
    let req = gateway::request(call).expect("event");
    answer((route.handler)(state, req).await)
}

/// The [`Answer`] of a handler's response (also of one built without a route, by the same
/// functions the handlers use).
pub fn answer(response: http::Response<lambda_http::Body>) -> Answer {
    let (parts, body) = response.into_parts();
    let bytes = body.to_vec();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        bytes,
    }
}

/// A JSON request with a bearer token.
pub async fn call(state: &AppState, method: &str, uri: &str, token: &str, body: Option<Value>) -> Answer {
    let auth = format!("Bearer {token}");
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
    let mut headers = vec![("authorization", auth.as_str())];
    if !bytes.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    send(state, method, uri, &headers, &bytes).await
}

/// Asserts the Convocore error envelope with `code`.
pub fn assert_convocore_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status.as_u16(), status, "body: {}", a.body);
    assert_eq!(a.body["code"], code, "body: {}", a.body);
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", a.body);
    assert!(a.body["issues"].is_array(), "body: {}", a.body);
}

/// Asserts Tether's error envelope with `error`.
pub fn assert_tether_error(a: &Answer, status: u16, error: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(a.body["success"], false, "{}", a.body);
    assert_eq!(a.body["error"], error, "{}", a.body);
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", a.body);
}

/// Creates a snapshot with `body` (answered 201) and returns its id.
pub async fn create_snapshot(state: &AppState, tok: &str, body: Value) -> String {
    let a = call(state, "POST", "/api/training/snapshots", tok, Some(body)).await;
    assert_eq!(a.status.as_u16(), 201, "{}", a.body);
    a.body["data"]["_id"].as_str().expect("_id").to_string()
}

/// Downloads a presigned URL over plain HTTP (the emulator), as a browser or curl would.
pub async fn download(url: &str) -> (u16, HeaderMap, Vec<u8>) {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<hyper::body::Bytes>>();
    let response = client.get(url.parse().expect("url")).await.expect("download");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    (parts.status.as_u16(), parts.headers, bytes)
}

/// Every table item whose partition key starts with `prefix`, in scan order.
pub async fn items_with_prefix(state: &AppState, prefix: &str) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = state
            .dynamo
            .scan()
            .table_name(&state.config.table_name)
            .filter_expression("begins_with(PK, :p)")
            .expression_attribute_values(":p", AttributeValue::S(prefix.to_string()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}

/// The string attribute `name` of `item` (`""` when missing or not a string).
pub fn item_str(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

/// The keys of every export object of `org`, sorted.
pub async fn export_objects(state: &AppState, org: &str) -> Vec<String> {
    let out = state
        .s3
        .list_objects_v2()
        .bucket(&state.config.bucket_name)
        .prefix(format!("exports/{org}/"))
        .send()
        .await
        .expect("ListObjectsV2");
    let mut keys: Vec<String> = out.contents.unwrap_or_default().into_iter().filter_map(|o| o.key).collect();
    keys.sort();
    keys
}

/// How many multipart uploads of `org`'s exports are in progress (begun, neither completed nor
/// aborted).
pub async fn uploads_in_progress(state: &AppState, org: &str) -> usize {
    let out = state
        .s3
        .list_multipart_uploads()
        .bucket(&state.config.bucket_name)
        .prefix(format!("exports/{org}/"))
        .send()
        .await
        .expect("ListMultipartUploads");
    out.uploads().len()
}

/// Seeds a contact with one conversation of `n` messages alternating customer / AI.
pub async fn seed_contact(
    state: &AppState,
    tok: &str,
    agent: &str,
    contact: &str,
    n: usize,
    content: impl Fn(usize) -> String,
) -> Vec<Value> {
    let convo = format!("convo-{contact}");
    let header = serde_json::json!({"contactId": contact, "userName": "Jane Doe", "userPhone": "+14155550123", "userEmail": "jane@example.com", "origin": "sms"});
    let a = call(state, "PUT", &format!("/agents/{agent}/convos/{convo}"), tok, Some(header)).await;
    assert!(a.status.is_success(), "{}", a.body);
    let messages: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({"id": format!("m{i:05}"), "from": if i % 2 == 0 { "user" } else { "bot" }, "content": content(i),
                   "ts": format!("2026-05-18T13:{:02}:{:02}.{:03}Z", i * 500 / 60_000, (i * 500 / 1000) % 60, (i * 500) % 1000)})
        })
        .collect();
    for batch in messages.chunks(500) {
        let a = call(
            state,
            "POST",
            &format!("/agents/{agent}/convos/{convo}/messages"),
            tok,
            Some(serde_json::json!({"messages": batch})),
        )
        .await;
        assert!(a.status.is_success(), "{}", a.body);
    }
    messages
}

/// A state whose export jobs go to a channel that the test drains with [`Worker`], exactly
/// as the local server hands them to the worker code.
pub async fn jobs_state_with(f: impl FnOnce(&mut Config)) -> (AppState, Worker) {
    let mut state = state_with(f).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    state.jobs = shared::jobs::Dispatcher::Channel(tx);
    (state, Worker::new(rx))
}

/// [`jobs_state_with`] with the suite's configuration.
pub async fn jobs_state() -> (AppState, Worker) {
    jobs_state_with(|_| {}).await
}

/// The receiving end of the job dispatcher: the test plays the worker function.
pub struct Worker {
    pub events: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Job events received and not yet taken.
    pub jobs: Vec<shared::jobs::JobRef>,
    /// Scheduled batches received and not yet run.
    pub batches: Vec<shared::jobs::Batch>,
}

impl Worker {
    /// A worker for the receiving end of a dispatcher's channel.
    pub fn new(events: tokio::sync::mpsc::UnboundedReceiver<String>) -> Self {
        Self { events, jobs: Vec::new(), batches: Vec::new() }
    }

    fn receive(&mut self) {
        while let Ok(payload) = self.events.try_recv() {
            match serde_json::from_str(&payload).expect("worker event") {
                shared::jobs::WorkerEvent::Job(job) => self.jobs.push(job),
                shared::jobs::WorkerEvent::Batch { scheduled_batch } => self.batches.push(scheduled_batch),
            }
        }
    }

    /// Job events dispatched so far and not yet taken (batches wait for [`Worker::run_batches`]).
    pub fn pending(&mut self) -> Vec<shared::jobs::JobRef> {
        self.receive();
        std::mem::take(&mut self.jobs)
    }

    /// Runs the scheduled batches dispatched so far, as the worker function would (the jobs
    /// they dispatch wait in [`Worker::pending`]).
    pub async fn run_batches(&mut self, state: &AppState) -> Vec<shared::jobs::schedule::BatchOutcome> {
        self.receive();
        let mut outcomes = Vec::new();
        for batch in std::mem::take(&mut self.batches) {
            outcomes.push(shared::jobs::schedule::run_batch(state, &batch, None).await.expect("batch invocation"));
        }
        outcomes
    }

    /// Runs every dispatched invocation (including the ones they dispatch) until none is left.
    pub async fn drain(
        &mut self,
        state: &AppState,
        options: shared::jobs::worker::Options,
    ) -> Vec<shared::jobs::worker::Outcome> {
        let mut outcomes = Vec::new();
        loop {
            self.run_batches(state).await;
            let events = self.pending();
            if events.is_empty() {
                return outcomes;
            }
            for event in events {
                outcomes
                    .push(shared::jobs::worker::run(state, &event, options.clone()).await.expect("worker invocation"));
            }
        }
    }
}

/// Worker options with a generous budget.
pub fn worker_options() -> shared::jobs::worker::Options {
    shared::jobs::worker::Options {
        budget: std::time::Duration::from_secs(600),
        lifetime: None,
        fault_after_parts: None,
    }
}

/// A small snapshot (one exchange) for bulk seeding with `SnapshotStore::import`; `i` makes
/// its content unique. Ids are fresh, so later seeds sort first (newest first).
pub fn tiny_snapshot(org: &str, i: usize) -> (shared::snapshots::Snapshot, Vec<shared::snapshots::SnapshotMessage>) {
    use shared::snapshots::SnapshotMessage;
    let messages = vec![
        SnapshotMessage {
            id: format!("q{i}"),
            content: format!("Question {i}: how much is the premium plan?"),
            sender: "contact".into(),
            sender_type: "HUMAN".into(),
            timestamp: "2026-05-18T13:00:00.000Z".into(),
        },
        SnapshotMessage {
            id: format!("a{i}"),
            content: format!("Answer {i}: 49 dollars a month, billed yearly."),
            sender: "user".into(),
            sender_type: "AI".into(),
            timestamp: "2026-05-18T13:00:05.000Z".into(),
        },
    ];
    let (id, at) = shared::ids::new_id();
    let now = shared::time::to_rfc3339(at);
    let snap: shared::snapshots::Snapshot = serde_json::from_value(serde_json::json!({
        "_id": id, "organizationId": org, "user": {"_id": "u"}, "contact": {"_id": format!("k{}", i % 50)},
        "customerName": "Jane Doe", "customerPhone": "+14155550123", "customerEmail": null,
        "messageCount": messages.len(), "snapshotDate": now, "conversationStartDate": messages[0].timestamp,
        "conversationEndDate": messages[1].timestamp, "tags": ["sales"], "quality": "good", "isArchived": false,
        "createdAt": now, "updatedAt": now, "version": 1
    }))
    .expect("snapshot");
    (snap, messages)
}
