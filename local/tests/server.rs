//! The local server over real HTTP/1.1: `local_server::serve` on an ephemeral loopback port,
//! spoken to through a plain `TcpStream` (hand-written requests, `Connection: close`, read to
//! EOF), against the emulator started by `scripts/test.sh`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shared::auth::{mint_hs256, now_epoch, Claims};
use shared::{table, AppState, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any single exchange (or the shutdown) may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Server and state

async fn state() -> AppState {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|v| v.starts_with("http://127.0.0.1")),
        "tests run against the local emulator: use ./scripts/test.sh"
    );
    let mut config = Config::from_env().expect("configuration from scripts/test.sh");
    config.table_name = format!("{}-local", config.table_name);
    let state = AppState::new(config).await.expect("state");
    table::ensure_table(&state.dynamo, &state.config.table_name).await.expect("table");
    table::ensure_bucket(&state.s3, &state.config.bucket_name).await.expect("bucket");
    state
}

/// A running `serve` task on `127.0.0.1:<ephemeral>`.
struct Server {
    addr: SocketAddr,
    max_body_bytes: usize,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start() -> Server {
    let mut state = state().await;
    // As in `main`: jobs go to the worker code in a task of this process.
    let (jobs, events) = tokio::sync::mpsc::unbounded_channel();
    state.jobs = shared::jobs::Dispatcher::Channel(jobs);
    let max_body_bytes = state.config.max_body_bytes;
    // Bound before `serve` starts: connections queue in the backlog, no waiting needed.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let state = Arc::new(state);
    tokio::spawn(shared::jobs::worker::serve_channel(state.clone(), events));
    let task = tokio::spawn(local_server::serve(state, listener, shutdown));
    Server { addr, max_body_bytes, stop: Some(stop), task }
}

/// A token for `org`, signed with the suite's secret.
fn token(org: &str) -> String {
    let claims = Claims {
        sub: "user-1".into(),
        organization_id: org.into(),
        exp: now_epoch() + 3600,
        nbf: None,
        iss: None,
        aud: None,
        email: Some("alice@example.com".into()),
        given_name: Some("Alice".into()),
        family_name: Some("Rivera".into()),
    };
    mint_hs256(&std::env::var("JWT_SECRET").expect("JWT_SECRET"), &claims).expect("sign")
}

/// A fresh organization, so tests never see each other's (or earlier runs') data.
fn new_org() -> String {
    shared::ids::object_id()
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).chars().take(2000).collect()
    }
}

/// Sends one request (`Connection: close`) and reads the answer to EOF.
///
/// The body is written by its own task while the answer is read, so an answer given before the
/// body is fully sent (the gateway's 413) is still received; write errors are then ignored.
async fn exchange(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    tokio::time::timeout(DEADLINE, exchange_inner(addr, method, target, headers, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no answer within {DEADLINE:?}"))
}

async fn exchange_inner(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() || matches!(method, "PUT" | "POST") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let write = tokio::spawn(async move {
        writer.write_all(&bytes).await?;
        writer.flush().await?;
        // Keep the write half open: dropping it would half-close, which the server may treat
        // as the client going away. It is dropped once the answer has been read.
        Ok::<_, std::io::Error>(writer)
    });

    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // The server may reset the connection after answering if it did not read the whole
            // body; what it sent before the reset is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => panic!("{method} {target}: read failed after {} bytes: {e}", raw.len()),
        }
    }
    write.abort();
    parse(&raw).unwrap_or_else(|e| panic!("{method} {target}: {e}; raw answer: {:?}", String::from_utf8_lossy(&raw)))
}

fn parse(raw: &[u8]) -> Result<Reply, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| format!("head is not UTF-8: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" {
        return Err(format!("unexpected version in {status_line:?}"));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or(format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body = raw[end + 4..].to_vec();
    let reply = Reply { status, headers, body, json: Value::Null };
    if reply.header("transfer-encoding").is_some() {
        return Err("chunked answers are not expected (every answer has a full body)".into());
    }
    if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad Content-Length {len:?}"))?;
        if len != reply.body.len() {
            return Err(format!("Content-Length {len} but {} body bytes", reply.body.len()));
        }
    }
    let json = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    Ok(Reply { json, ..reply })
}

/// A request with a bearer token and, when given, a JSON body.
async fn call(server: &Server, method: &str, target: &str, token: &str, body: Option<Value>) -> Reply {
    let auth = format!("Bearer {token}");
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth.as_str())];
    if !bytes.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    exchange(server.addr, method, target, &headers, &bytes).await
}

// ---------------------------------------------------------------------------------------------
// Envelope assertions

fn assert_json_content_type(r: &Reply) {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "Content-Type {ct:?}; body: {}", r.text());
}

/// Convocore's error envelope `{message, code, issues}` (and nothing of Tether's).
fn assert_convocore_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_json_content_type(r);
    assert_eq!(r.json["code"], code, "body: {}", r.text());
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", r.text());
    assert!(r.json["issues"].is_array(), "body: {}", r.text());
    assert!(r.json.get("success").is_none() && r.json.get("error").is_none(), "body: {}", r.text());
}

/// Tether's error envelope `{success: false, message, error}`.
fn assert_tether_error(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_json_content_type(r);
    assert_eq!(r.json["success"], false, "body: {}", r.text());
    assert_eq!(r.json["error"], error, "body: {}", r.text());
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", r.text());
    assert!(r.json.get("code").is_none(), "body: {}", r.text());
}

/// The success envelope `{success: true, message, data}`.
fn assert_success(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_json_content_type(r);
    assert_eq!(r.json["success"], true, "body: {}", r.text());
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", r.text());
    assert!(!r.json["data"].is_null(), "body: {}", r.text());
}

/// The ids of a conversation list answer, in order.
fn listed_ids(r: &Reply) -> Vec<String> {
    r.json["data"]
        .as_array()
        .unwrap_or_else(|| panic!("data is not a list: {}", r.text()))
        .iter()
        .map(|c| c["id"].as_str().unwrap_or_else(|| panic!("convo without id: {c}")).to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Create and list

#[tokio::test]
async fn a_job_created_over_http_finishes_in_the_local_worker() {
    let server = start().await;
    let tok = token(&new_org());
    assert_success(&call(&server, "PUT", "/agents/a1/convos/c1", &tok, Some(json!({}))).await, 201);
    let messages = json!({"messages": [
        {"id": "m1", "from": "user", "content": "hi", "ts": "2026-01-01T00:00:00Z"},
        {"id": "m2", "from": "bot", "content": "hello", "ts": "2026-01-01T00:00:01Z"}]});
    assert_success(&call(&server, "POST", "/agents/a1/convos/c1/messages", &tok, Some(messages)).await, 201);
    assert_success(
        &call(&server, "POST", "/api/training/snapshots", &tok, Some(json!({"contactId": "c1"}))).await,
        201,
    );

    let created = call(&server, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl"}))).await;
    assert_success(&created, 202);
    let location = created.header("location").expect("Location").to_string();
    let mut job = Value::Null;
    for _ in 0..300 {
        job = call(&server, "GET", &location, &tok, None).await.json["data"].clone();
        if job["status"] == "succeeded" || job["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["processed"], 1);
    assert!(job["url"].is_string());

    // Background functions run with their event posted to the local-only invoke path.
    let auth: [(&str, &str); 0] = [];
    let summary = exchange(server.addr, "POST", "/_local/invoke/scheduled-export", &auth, br#"{}"#).await;
    assert_eq!(summary.status, 200, "{}", summary.text());
    assert!(summary.json["organizations"].as_u64().is_some_and(|n| n >= 1), "{}", summary.text());
    let worker =
        exchange(server.addr, "POST", "/_local/invoke/export-worker", &auth, br#"{"organizationId":"o","jobId":"j"}"#)
            .await;
    assert_eq!(worker.json["outcome"], "Skipped", "{}", worker.text());
    assert_eq!(exchange(server.addr, "POST", "/_local/invoke/nothing", &auth, b"{}").await.status, 404);
    assert_eq!(exchange(server.addr, "POST", "/_local/invoke/scheduled-export", &auth, b"[").await.status, 400);
}

#[tokio::test]
async fn put_then_list_over_http() {
    let server = start().await;
    let tok = token(&new_org());

    let created =
        call(&server, "PUT", "/agents/a1/convos/c1", &tok, Some(json!({"userName": "Jane Doe", "origin": "sms"})))
            .await;
    assert_success(&created, 201);
    assert_eq!(created.json["data"]["id"], "c1", "body: {}", created.text());
    assert_eq!(created.json["data"]["agentId"], "a1", "body: {}", created.text());
    assert_eq!(created.json["data"]["userName"], "Jane Doe", "body: {}", created.text());

    // The same PUT again updates: the first one really was stored.
    let updated = call(&server, "PUT", "/agents/a1/convos/c1", &tok, Some(json!({"notes": "called back"}))).await;
    assert_success(&updated, 200);
    assert_eq!(updated.json["data"]["userName"], "Jane Doe", "body: {}", updated.text());
    assert_eq!(updated.json["data"]["notes"], "called back", "body: {}", updated.text());

    let list = call(&server, "GET", "/agents/a1/convos", &tok, None).await;
    assert_success(&list, 200);
    assert_eq!(listed_ids(&list), ["c1"], "body: {}", list.text());
    let item = &list.json["data"][0];
    assert_eq!(item["agentId"], "a1");
    assert_eq!(item["notes"], "called back");
    let ts = item["ts"].as_str().unwrap_or_else(|| panic!("no ts: {item}"));
    chrono::DateTime::parse_from_rfc3339(ts).unwrap_or_else(|e| panic!("ts {ts:?} is not RFC 3339: {e}"));
    // Without messages, last activity is the creation time.
    assert_eq!(item["ts"], item["createdAt"], "item: {item}");
    assert!(list.json.get("nextCursor").is_some(), "body: {}", list.text());

    // Another agent of the same organization has nothing.
    let other = call(&server, "GET", "/agents/a2/convos", &tok, None).await;
    assert_success(&other, 200);
    assert_eq!(listed_ids(&other), Vec::<String>::new());
}

#[tokio::test]
async fn odd_query_strings_never_crash_the_list() {
    let server = start().await;
    let tok = token(&new_org());
    for id in ["c1", "c2"] {
        assert_success(&call(&server, "PUT", &format!("/agents/a1/convos/{id}"), &tok, Some(json!({}))).await, 201);
    }

    // Repeated and odd parameters that still mean "a page of one" or "the default page".
    for query in ["limit=1&limit=1", "limit=1&limit=2", "limit=%31", "&&limit=1&&", "limit=1&=&=x&x"] {
        let r = call(&server, "GET", &format!("/agents/a1/convos?{query}"), &tok, None).await;
        assert_success(&r, 200);
        assert_eq!(listed_ids(&r).len(), 1, "?{query}: {}", r.text());
    }
    for query in ["", "limit", "limit=", "a=%zz&b=%&c=%%", "x=%FF%FE", "cursor=", "limit=&cursor="] {
        let r = call(&server, "GET", &format!("/agents/a1/convos?{query}"), &tok, None).await;
        assert_success(&r, 200);
        assert_eq!(listed_ids(&r).len(), 2, "?{query}: {}", r.text());
    }
    // Values that are not a page size or a cursor of ours are the caller's fault.
    for query in [
        "limit=0",
        "limit=abc",
        "limit=%",
        "limit=1%2C2",
        "limit=-1",
        "limit=99999999999999999999999",
        "cursor=garbage",
        "cursor=%FF%FE",
        "cursor=a%00b",
    ] {
        let r = call(&server, "GET", &format!("/agents/a1/convos?{query}"), &tok, None).await;
        assert_convocore_error(&r, 400, "BAD_REQUEST");
    }

    // A real cursor round-trips through the query string.
    let first = call(&server, "GET", "/agents/a1/convos?limit=1", &tok, None).await;
    assert_success(&first, 200);
    let cursor = first.json["nextCursor"].as_str().unwrap_or_else(|| panic!("no cursor: {}", first.text())).to_string();
    let encoded: String = cursor
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let second = call(&server, "GET", &format!("/agents/a1/convos?limit=1&cursor={encoded}"), &tok, None).await;
    assert_success(&second, 200);
    let mut ids = listed_ids(&first);
    ids.extend(listed_ids(&second));
    ids.sort();
    assert_eq!(ids, ["c1", "c2"], "pages: {} / {}", first.text(), second.text());
}

// ---------------------------------------------------------------------------------------------
// 2. Authentication

#[tokio::test]
async fn missing_or_bad_token_is_401_with_bearer_challenge() {
    let server = start().await;
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        ("GET", "/agents/a1/convos", &[]),
        ("PUT", "/agents/a1/convos/c1", &[("Content-Type", "application/json")]),
        ("GET", "/agents/a1/convos", &[("Authorization", "Bearer not-a-jwt")]),
        ("GET", "/agents/a1/convos", &[("Authorization", "Basic dXNlcjpwYXNz")]),
    ];
    for (method, path, headers) in cases {
        let body: &[u8] = if method == "PUT" { b"{}" } else { b"" };
        let r = exchange(server.addr, method, path, headers, body).await;
        assert_convocore_error(&r, 401, "UNAUTHORIZED");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{method} {path} {headers:?}: {:?}", r.headers);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Unrouted requests

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_family_envelope() {
    let server = start().await;

    let r = exchange(server.addr, "GET", "/nope", &[], b"").await;
    assert_convocore_error(&r, 404, "NOT_FOUND");
    let r = exchange(server.addr, "GET", "/agents/a1", &[], b"").await;
    assert_convocore_error(&r, 404, "NOT_FOUND");
    let r = exchange(server.addr, "GET", "/agents//convos", &[], b"").await;
    assert_convocore_error(&r, 404, "NOT_FOUND");

    let r = exchange(server.addr, "GET", "/api/nope", &[], b"").await;
    assert_tether_error(&r, 404, "NOT_FOUND");
    let r = exchange(server.addr, "POST", "/api/nope", &[("Content-Type", "application/json")], b"{}").await;
    assert_tether_error(&r, 404, "NOT_FOUND");

    let r = exchange(server.addr, "DELETE", "/agents/a1/convos", &[], b"").await;
    assert_convocore_error(&r, 405, "METHOD_NOT_SUPPORTED");
    let r = exchange(server.addr, "POST", "/agents/a1/convos/c1", &[("Content-Type", "application/json")], b"{}").await;
    assert_convocore_error(&r, 405, "METHOD_NOT_SUPPORTED");
    let r = exchange(server.addr, "GET", "/agents/a1/convos/c1/messages", &[], b"").await;
    assert_convocore_error(&r, 405, "METHOD_NOT_SUPPORTED");
}

// ---------------------------------------------------------------------------------------------
// 4. Body limits

/// `{"userName":"x"}` padded with whitespace to exactly `len` bytes: valid JSON of any size.
fn padded_json(len: usize) -> Vec<u8> {
    let mut body = br#"{"userName":"x"}"#.to_vec();
    assert!(len >= body.len());
    body.resize(len, b' ');
    body
}

#[tokio::test]
async fn bodies_over_the_gateway_limit_are_413_before_the_handler() {
    let server = start().await;
    let tok = token(&new_org());
    let auth = format!("Bearer {tok}");
    let json = ("Content-Type", "application/json");

    // Exactly at the gateway limit the request reaches the handler (which authenticates first).
    let at =
        exchange(server.addr, "PUT", "/agents/a1/convos/c1", &[json], &padded_json(local_server::GATEWAY_MAX_BODY))
            .await;
    assert_convocore_error(&at, 401, "UNAUTHORIZED");

    // One byte over, the gateway answers before any handler: no 401 although there is no token.
    let over = padded_json(local_server::GATEWAY_MAX_BODY + 1);
    let r = exchange(server.addr, "PUT", "/agents/a1/convos/c1", &[json], &over).await;
    assert_convocore_error(&r, 413, "PAYLOAD_TOO_LARGE");
    let r = exchange(server.addr, "PUT", "/agents/a1/convos/c1", &[json, ("Authorization", &auth)], &over).await;
    assert_convocore_error(&r, 413, "PAYLOAD_TOO_LARGE");

    // Nothing was stored by any of these.
    let list = call(&server, "GET", "/agents/a1/convos", &tok, None).await;
    assert_success(&list, 200);
    assert_eq!(listed_ids(&list), Vec::<String>::new());
}

#[tokio::test]
async fn bodies_over_the_api_limit_are_413_from_the_handler() {
    let server = start().await;
    let tok = token(&new_org());
    let auth = format!("Bearer {tok}");
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let max = server.max_body_bytes;
    assert!(max < local_server::GATEWAY_MAX_BODY, "the API limit {max} is below the gateway's");

    // At the API limit the whole body arrives and is accepted.
    let r = exchange(server.addr, "PUT", "/agents/a1/convos/c1", &headers, &padded_json(max)).await;
    assert_success(&r, 201);
    assert_eq!(r.json["data"]["userName"], "x", "body: {}", r.text());

    // Over it (and under the gateway's), the handler itself refuses, having received every byte.
    for len in [max + 1, 2 * max, local_server::GATEWAY_MAX_BODY] {
        let r = exchange(server.addr, "PUT", "/agents/a1/convos/c2", &headers, &padded_json(len)).await;
        assert_convocore_error(&r, 413, "PAYLOAD_TOO_LARGE");
        let message = r.json["message"].as_str().unwrap_or_default();
        assert!(message.contains(&len.to_string()), "the handler saw {len} bytes? {message:?}");
    }
    // Without a token the same body reaches the handler, which authenticates first: 401, not 413.
    let r = exchange(server.addr, "PUT", "/agents/a1/convos/c2", &headers[..1], &padded_json(2 * max)).await;
    assert_convocore_error(&r, 401, "UNAUTHORIZED");

    let list = call(&server, "GET", "/agents/a1/convos", &tok, None).await;
    assert_eq!(listed_ids(&list), ["c1"], "body: {}", list.text());
}

// ---------------------------------------------------------------------------------------------
// 5. Path parameters

#[tokio::test]
async fn percent_encoded_path_parameters_reach_the_handler_decoded() {
    let server = start().await;
    let tok = token(&new_org());

    assert_success(&call(&server, "PUT", "/agents/a-b/convos/x", &tok, Some(json!({"userName": "Jane"}))).await, 201);

    let list = call(&server, "GET", "/agents/a%2Db/convos", &tok, None).await;
    assert_success(&list, 200);
    assert_eq!(listed_ids(&list), ["x"], "body: {}", list.text());
    assert_eq!(list.json["data"][0]["agentId"], "a-b", "body: {}", list.text());
    let list = call(&server, "GET", "/agents/%61%2d%62/convos", &tok, None).await;
    assert_eq!(listed_ids(&list), ["x"], "lower-case escapes: {}", list.text());

    // Encoded on the way in too: the same conversation, so an update (200), not a creation.
    let r = call(&server, "PUT", "/agents/a%2Db/convos/%78", &tok, Some(json!({"notes": "n"}))).await;
    assert_success(&r, 200);
    assert_eq!(r.json["data"]["id"], "x", "body: {}", r.text());
    assert_eq!(r.json["data"]["agentId"], "a-b", "body: {}", r.text());
    assert_eq!(r.json["data"]["userName"], "Jane", "body: {}", r.text());

    // Decoded exactly once: `%252D` is the id `a%2Db`, which is not a valid id.
    let literal = call(&server, "GET", "/agents/a%252Db/convos", &tok, None).await;
    assert_convocore_error(&literal, 400, "BAD_REQUEST");
}

#[tokio::test]
async fn encoded_separators_and_controls_in_ids_are_400_not_500() {
    let server = start().await;
    let tok = token(&new_org());

    for (method, path) in [
        ("PUT", "/agents/ag/convos/a%23b"),
        ("PUT", "/agents/a%23b/convos/c"),
        ("GET", "/agents/a%23b/convos"),
        ("GET", "/agents/%23/convos"),
        ("PUT", "/agents/ag/convos/a%2Fb"),
        ("PUT", "/agents/ag/convos/a%20b"),
        ("PUT", "/agents/ag/convos/a%00b"),
        ("PUT", "/agents/ag/convos/%FF%FE"),
        ("PUT", "/agents/ag/convos/%C3%A9"),
        ("POST", "/agents/ag/convos/a%23b/messages"),
    ] {
        let body = if method == "GET" { None } else { Some(json!({})) };
        let r = call(&server, method, path, &tok, body).await;
        assert_convocore_error(&r, 400, "BAD_REQUEST");
        assert!(!r.json["issues"].as_array().unwrap().is_empty(), "{method} {path}: {}", r.text());
    }

    // None of them created anything under a truncated or mangled key.
    let list = call(&server, "GET", "/agents/ag/convos", &tok, None).await;
    assert_success(&list, 200);
    assert_eq!(listed_ids(&list), Vec::<String>::new(), "body: {}", list.text());
}

// ---------------------------------------------------------------------------------------------
// 6. Shutdown

#[tokio::test]
async fn serve_returns_when_the_shutdown_future_resolves() {
    let mut server = start().await;

    let r = exchange(server.addr, "GET", "/nope", &[], b"").await;
    assert_convocore_error(&r, 404, "NOT_FOUND");
    // An idle client connection must not keep the server from stopping.
    let idle = TcpStream::connect(server.addr).await.expect("connect");
    tokio::task::yield_now().await;
    assert!(!server.task.is_finished(), "serve returned before shutdown");

    server.stop.take().unwrap().send(()).expect("serve is still waiting for shutdown");
    tokio::time::timeout(DEADLINE, &mut server.task)
        .await
        .expect("serve did not return after shutdown")
        .expect("serve panicked");

    // The listener went with it: nothing accepts on the port any more.
    let refused = TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "still accepting connections after shutdown");
    drop(idle);
}

// ---------------------------------------------------------------------------------------------
// Regressions: a malformed Host and a malformed body are answered, not dropped or misreported.

/// Sends `request` byte for byte and parses what comes back before EOF.
async fn raw_exchange(addr: SocketAddr, request: &str) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw)).await.expect("answer in time").expect("read");
    parse(&raw).map_err(|e| format!("{e}; raw answer: {:?}", String::from_utf8_lossy(&raw)))
}

#[tokio::test]
async fn an_unparsable_host_header_is_answered_not_dropped() {
    let server = start().await;
    for (host, extra) in [("a b", ""), ("127.0.0.1", "X-Forwarded-Proto: a b\r\n")] {
        let request = format!("GET /agents/a1/convos HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
        let reply =
            raw_exchange(server.addr, &request).await.unwrap_or_else(|e| panic!("Host {host:?} {extra:?}: {e}"));
        assert!((400..500).contains(&reply.status), "Host {host:?} {extra:?}: {reply:?}");
    }
}

#[tokio::test]
async fn a_malformed_body_is_400_not_413() {
    let server = start().await;
    let tok = token(&new_org());
    let request = format!(
        "PUT /agents/a1/convos/c HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n",
        server.addr
    );
    let reply = raw_exchange(server.addr, &request).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 400, "{}", reply.text());
}
