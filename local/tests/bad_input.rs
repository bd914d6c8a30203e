//! Bad input over real HTTP: wrong content types (415), unrouted paths (404) and a storage
//! outage (503 with `Retry-After`), each in the envelope of the path's family, through
//! `local_server::serve` against the emulator started by `scripts/test.sh`.

mod support;

use support::{assert_error, exchange, new_org, serve, start, state, token};

#[tokio::test]
async fn wrong_content_types_answer_415_in_the_routes_envelope_and_store_nothing() {
    let server = start().await;
    let addr = server.addr;
    let tok = token(&new_org());
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
    let server = start().await;
    let addr = server.addr;
    let auth = format!("Bearer {}", token(&new_org()));
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
    let (dynamo, s3) = shared::aws::repointed(&down.dynamo, &down.s3, &format!("http://127.0.0.1:{port}"));
    (down.dynamo, down.s3) = (dynamo.into(), s3.into());
    let server = serve(down).await;
    let addr = server.addr;
    let auth = format!("Bearer {}", token(&new_org()));
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
