//! The local server over real HTTP/1.1: `local_server::serve` on an ephemeral loopback port,
//! spoken to through a plain `TcpStream` (hand-written requests, `Connection: close`, read to
//! EOF), against the emulator started by `scripts/test.sh`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{
    assert_convocore_error, assert_success, assert_tether_error, call, exchange, new_org, raw_exchange, start, token,
    Reply, DEADLINE,
};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// Helpers

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
