//! Test support for the local server's tests: the state and a running `local_server::serve` on
//! an ephemeral loopback port (against the emulator started by `scripts/test.sh`), tokens, and a
//! minimal HTTP/1.1 client (hand-written requests, `Connection: close`, read to EOF) with the
//! envelope assertions.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shared::auth::{mint_hs256, now_epoch, Claims};
use shared::{table, AppState, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any single exchange (or the shutdown) may take before the test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Server and state

/// A fresh state on the emulator, with its own table per test binary: the emulator copies a
/// whole table on every transactional write, so small tables keep the suite fast.
pub async fn state() -> AppState {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|v| v.starts_with("http://127.0.0.1")),
        "tests run against the local emulator: use ./scripts/test.sh"
    );
    let mut config = Config::from_env().expect("configuration from scripts/test.sh");
    config.table_name = format!("{}-local-{}", config.table_name, env!("CARGO_CRATE_NAME"));
    let state = AppState::new(config).await.expect("state");
    table::ensure_table(&state.dynamo, &state.config.table_name).await.expect("table");
    table::ensure_bucket(&state.s3, &state.config.bucket_name).await.expect("bucket");
    state
}

/// A running `serve` task on `127.0.0.1:<ephemeral>`. Dropping it (or sending on `stop`)
/// shuts the server down.
pub struct Server {
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

/// Serves `state` as `main` does: jobs go to the worker code in a task of this process.
pub async fn serve(mut state: AppState) -> Server {
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

/// [`serve`] with a fresh [`state`].
pub async fn start() -> Server {
    serve(state().await).await
}

/// A fresh organization, so tests never see each other's (or earlier runs') data.
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

/// A token with these claims, signed with the suite's secret.
pub fn token_claims(claims: Claims) -> String {
    mint_hs256(&std::env::var("JWT_SECRET").expect("JWT_SECRET"), &claims).expect("sign")
}

/// A token of the standard [`claims`] for `org`.
pub fn token(org: &str) -> String {
    token_claims(claims(org))
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client

/// An answer: status, headers, the body, and the body parsed as JSON (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub json: Value,
}

impl Reply {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The body as text, at most 2,000 characters (for assertion messages).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).chars().take(2000).collect()
    }
}

/// Sends one request (`Connection: close`) and reads the answer to EOF.
///
/// The body is written by its own task while the answer is read, so an answer given before the
/// body is fully sent (the gateway's 413) is still received; write errors are then ignored.
pub async fn exchange(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
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

/// Sends `request` byte for byte and parses what comes back before EOF.
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw)).await.expect("answer in time").expect("read");
    parse(&raw).map_err(|e| format!("{e}; raw answer: {:?}", String::from_utf8_lossy(&raw)))
}

/// Parses a whole HTTP/1.1 answer (no chunked bodies; `Content-Length`, when given, must match).
pub fn parse(raw: &[u8]) -> Result<Reply, String> {
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
pub async fn call(server: &Server, method: &str, target: &str, token: &str, body: Option<Value>) -> Reply {
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

/// Convocore's error envelope `{message, code, issues}` (and nothing of Tether's).
pub fn assert_convocore_error(r: &Reply, status: u16, code: &str) {
    convocore_error("", r, status, code);
}

/// Tether's error envelope `{success: false, message, error}`.
pub fn assert_tether_error(r: &Reply, status: u16, error: &str) {
    tether_error("", r, status, error);
}

/// The error envelope of `path`'s family, with `code`: Tether's under `/api/`, else Convocore's.
pub fn assert_error(r: &Reply, path: &str, status: u16, code: &str) {
    let at = format!("{path}: ");
    if path.starts_with("/api/") {
        tether_error(&at, r, status, code);
    } else {
        convocore_error(&at, r, status, code);
    }
}

/// The success envelope `{success: true, message, data}`.
pub fn assert_success(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_json_content_type("", r);
    assert_eq!(r.json["success"], true, "body: {}", r.text());
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", r.text());
    assert!(!r.json["data"].is_null(), "body: {}", r.text());
}

/// `at` prefixes every failure message (`""`, or the request's path and a colon).
fn convocore_error(at: &str, r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{at}body: {}", r.text());
    assert_json_content_type(at, r);
    assert_eq!(r.json["code"], code, "{at}body: {}", r.text());
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()), "{at}body: {}", r.text());
    assert!(r.json["issues"].is_array(), "{at}body: {}", r.text());
    assert!(r.json.get("success").is_none() && r.json.get("error").is_none(), "{at}body: {}", r.text());
}

fn tether_error(at: &str, r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "{at}body: {}", r.text());
    assert_json_content_type(at, r);
    assert_eq!(r.json["success"], false, "{at}body: {}", r.text());
    assert_eq!(r.json["error"], error, "{at}body: {}", r.text());
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()), "{at}body: {}", r.text());
    assert!(r.json.get("code").is_none(), "{at}body: {}", r.text());
}

fn assert_json_content_type(at: &str, r: &Reply) {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{at}Content-Type {ct:?}; body: {}", r.text());
}
