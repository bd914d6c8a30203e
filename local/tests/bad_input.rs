//! Bad input over real HTTP: wrong content types (415), unrouted paths (404) and a storage
//! outage (503 with `Retry-After`), each in the envelope of the path's family, through
//! `local_server::serve` against the emulator started by `scripts/test.sh`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shared::auth::{mint_hs256, now_epoch, Claims};
use shared::{table, AppState, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any exchange may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

async fn state() -> AppState {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|v| v.starts_with("http://127.0.0.1")),
        "tests run against the local emulator: use ./scripts/test.sh"
    );
    let mut config = Config::from_env().expect("configuration from scripts/test.sh");
    config.table_name = format!("{}-local-bad-input", config.table_name);
    let state = AppState::new(config).await.expect("state");
    table::ensure_table(&state.dynamo, &state.config.table_name).await.expect("table");
    table::ensure_bucket(&state.s3, &state.config.bucket_name).await.expect("bucket");
    state
}

/// Serves `state` on an ephemeral loopback port until the test's runtime ends.
async fn serve(state: AppState) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(local_server::serve(Arc::new(state), listener, std::future::pending()));
    addr
}

fn token(org: &str) -> String {
    let claims = Claims {
        sub: "user-1".into(),
        organization_id: org.into(),
        exp: now_epoch() + 3600,
        nbf: None,
        iss: None,
        aud: None,
        email: None,
        given_name: None,
        family_name: None,
    };
    mint_hs256(&std::env::var("JWT_SECRET").expect("JWT_SECRET"), &claims).expect("sign")
}

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

/// One request (`Connection: close`), its answer read to EOF.
async fn exchange(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        stream.write_all(&bytes).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(DEADLINE, run).await.unwrap_or_else(|_| panic!("{method} {target}: no answer"));
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("{method} {target}: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let body = raw[end + 4..].to_vec();
    Reply { status, headers, json: serde_json::from_slice(&body).unwrap_or(Value::Null), body }
}

/// The error envelope of `path`'s family, with `code`: Tether's under `/api/`, else Convocore's.
fn assert_error(r: &Reply, path: &str, status: u16, code: &str) {
    assert_eq!(r.status, status, "{path}: {}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{path}: {:?}", r.headers);
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {}", r.text());
    if path.starts_with("/api/") {
        assert_eq!(
            (&r.json["success"], &r.json["error"]),
            (&Value::Bool(false), &Value::from(code)),
            "{path}: {}",
            r.text()
        );
        assert!(r.json.get("code").is_none(), "{path}: {}", r.text());
    } else {
        assert_eq!(r.json["code"], code, "{path}: {}", r.text());
        assert!(r.json["issues"].is_array(), "{path}: {}", r.text());
        assert!(r.json.get("success").is_none(), "{path}: {}", r.text());
    }
}

#[tokio::test]
async fn wrong_content_types_answer_415_in_the_routes_envelope_and_store_nothing() {
    let addr = serve(state().await).await;
    let tok = token(&shared::ids::object_id());
    let auth = format!("Bearer {tok}");
    let body = br#"{"contactId":"k1","userName":"Jane","messages":[],"notes":"n","format":"jsonl"}"#;
    let targets = [
        ("PUT", "/agents/a1/convos/c1"),
        ("POST", "/agents/a1/convos/c1/messages"),
        ("POST", "/api/training/snapshots"),
        ("PATCH", "/api/training/snapshots/6a0000000000000000000000"),
        ("POST", "/api/training/exports"),
    ];
    let content_types: [Option<&str>; 6] = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        Some("text/json"),
    ];
    for (method, path) in targets {
        for ct in content_types {
            let mut headers = vec![("Authorization", auth.as_str())];
            if let Some(ct) = ct {
                headers.push(("Content-Type", ct));
            }
            let r = exchange(addr, method, path, &headers, body).await;
            assert_error(&r, path, 415, "UNSUPPORTED_MEDIA_TYPE");
        }
    }
    // Nothing was stored by any of them.
    let r = exchange(addr, "GET", "/agents/a1/convos", &[("Authorization", &auth)], b"").await;
    assert_eq!((r.status, r.json["data"].as_array().map(Vec::len)), (200, Some(0)), "{}", r.text());
    let r = exchange(addr, "GET", "/api/training/exports", &[("Authorization", &auth)], b"").await;
    assert_eq!((r.status, r.json["data"].as_array().map(Vec::len)), (200, Some(0)), "{}", r.text());
    // JSON with parameters or a +json suffix is JSON.
    let r = exchange(
        addr,
        "PUT",
        "/agents/a1/convos/c1",
        &[("Authorization", &auth), ("Content-Type", "application/json; charset=UTF-8")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn unrouted_paths_answer_404_in_the_family_envelope_with_or_without_a_token() {
    let addr = serve(state().await).await;
    let auth = format!("Bearer {}", token(&shared::ids::object_id()));
    let long = format!("/api/{}", "x".repeat(4000));
    // (A trailing slash is tolerated by the route table, so such paths are not in this list.)
    let paths = [
        "/api/training//snapshots",
        "/api/training/snapshots/a/b",
        "/api/training%2Fsnapshots",
        "/api/trainings",
        "/api/%E2%9C%93",
        long.as_str(),
        "/agents/a1/convos/c1/messages/m1",
        "/agents",
        "/",
        "/API/training/snapshots",
        "/favicon.ico",
    ];
    for path in paths {
        for method in ["GET", "POST"] {
            for headers in [vec![], vec![("Authorization", auth.as_str()), ("Content-Type", "application/json")]] {
                let r = exchange(addr, method, path, &headers, b"{}").await;
                assert_error(&r, path, 404, "NOT_FOUND");
            }
        }
    }
}

#[tokio::test]
async fn a_storage_outage_answers_503_with_retry_after_in_both_envelopes() {
    let mut down = state().await;
    // A port nobody listens on: every storage call fails to connect (after the SDK's retries).
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    (down.dynamo, down.s3) = shared::aws::repointed(&down.dynamo, &down.s3, &format!("http://127.0.0.1:{port}"));
    let addr = serve(down).await;
    let auth = format!("Bearer {}", token(&shared::ids::object_id()));
    let json = ("Content-Type", "application/json");
    let cases = [
        ("GET", "/agents/a1/convos", &b""[..]),
        ("PUT", "/agents/a1/convos/c1", &b"{}"[..]),
        ("GET", "/api/training/snapshots", &b""[..]),
        ("POST", "/api/training/snapshots", &br#"{"contactId":"k1"}"#[..]),
    ];
    for (method, path, body) in cases {
        let r = exchange(addr, method, path, &[("Authorization", &auth), json], body).await;
        assert_error(&r, path, 503, "SERVICE_UNAVAILABLE");
        let retry = r.header("retry-after").and_then(|v| v.parse::<u64>().ok());
        assert!(retry.is_some_and(|s| s >= 1), "{method} {path}: Retry-After in seconds: {:?}", r.headers);
        assert!(!r.text().contains("127.0.0.1"), "{method} {path}: internal details leak: {}", r.text());
    }
}
