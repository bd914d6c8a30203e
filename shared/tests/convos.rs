//! Conversation routes against the emulator: ingest, idempotency, listing, tenancy, bad input.

mod support;

use serde_json::{json, Value};
use shared::convos::store::ConvoStore;
use shared::keys::Org;
use support::{assert_convocore_error, call, new_org, send, state, token};

fn msg(i: usize, from: &str) -> Value {
    // Minutes after a fixed start, so first/last are known.
    let ts = format!("2024-12-01T{:02}:{:02}:00Z", 8 + i / 60, i % 60);
    json!({ "id": format!("m{i:04}"), "from": from, "content": format!("message {i} ✓"), "ts": ts })
}

async fn create_convo(state: &shared::AppState, tok: &str, agent: &str, convo: &str) {
    let a =
        call(state, "PUT", &format!("/agents/{agent}/convos/{convo}"), tok, Some(json!({"userName": "Jane"}))).await;
    assert_eq!(a.status, 201, "{}", a.body);
}

#[tokio::test]
async fn ingesting_200_then_resending_50_counts_each_message_once() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    create_convo(&state, &tok, "agent-1", "c1").await;

    // Sent out of time order: the stored order and first/last must not depend on it.
    let mut batch: Vec<Value> = (0..200).map(|i| msg(i, if i % 2 == 0 { "user" } else { "bot" })).collect();
    batch.reverse();
    let a = call(&state, "POST", "/agents/agent-1/convos/c1/messages", &tok, Some(json!({ "messages": batch }))).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["data"]["inserted"], 200);
    assert_eq!(a.body["data"]["duplicates"], 0);

    let resend: Vec<Value> = (100..150).map(|i| msg(i, "user")).collect();
    let a = call(&state, "POST", "/agents/agent-1/convos/c1/messages", &tok, Some(json!({ "messages": resend }))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["data"]["inserted"], 0);
    assert_eq!(a.body["data"]["duplicates"], 50);
    assert_eq!(a.body["data"]["messagesNum"], 200);

    let list = call(&state, "GET", "/agents/agent-1/convos", &tok, None).await;
    assert_eq!(list.status, 200);
    let convos = list.body["data"].as_array().unwrap();
    assert_eq!(convos.len(), 1);
    assert_eq!(convos[0]["messagesNum"], 200);
    assert_eq!(convos[0]["firstMessageTS"], "2024-12-01T08:00:00.000Z");
    assert_eq!(convos[0]["lastMessageTS"], "2024-12-01T11:19:00.000Z");
    assert_eq!(convos[0]["ts"], "2024-12-01T11:19:00.000Z");

    // What is stored: exactly 200 messages, in time order, the re-send changed nothing.
    let stored = ConvoStore::new(&state.dynamo, &state.config.table_name)
        .messages(&Org::stored(org.as_str()), "agent-1", "c1")
        .await
        .unwrap();
    assert_eq!(stored.len(), 200);
    assert!(stored.windows(2).all(|w| w[0].ts < w[1].ts));
    assert_eq!(stored[101].id, "m0101");
    assert_eq!(stored[101].from, shared::convos::Sender::Bot);
    assert!(stored[101].ai_generated);
    assert_eq!(stored[0].content, "message 0 ✓");
}

#[tokio::test]
async fn a_retried_batch_without_ids_stores_each_message_once() {
    let state = state().await;
    let tok = token(&new_org());
    create_convo(&state, &tok, "a", "c").await;
    let batch = json!({"messages": [
        {"from": "user", "content": "hi", "ts": "2024-12-01T10:00:00Z"},
        {"from": "bot", "content": "hello", "ts": "2024-12-01T10:00:01Z"}
    ]});
    let first = call(&state, "POST", "/agents/a/convos/c/messages", &tok, Some(batch.clone())).await;
    assert_eq!(first.body["data"]["inserted"], 2, "{}", first.body);
    let retry = call(&state, "POST", "/agents/a/convos/c/messages", &tok, Some(batch)).await;
    assert_eq!(retry.body["data"]["inserted"], 0, "{}", retry.body);
    assert_eq!(retry.body["data"]["messagesNum"], 2);
}

#[tokio::test]
async fn concurrent_ingests_of_overlapping_batches_never_drift() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    create_convo(&state, &tok, "a", "c").await;
    // Four batches of 100 that overlap by half: 250 distinct messages.
    let batches: Vec<Vec<Value>> = (0..4).map(|b| (b * 50..b * 50 + 100).map(|i| msg(i, "user")).collect()).collect();
    let sends = batches.into_iter().map(|batch| {
        let (state, tok) = (&state, &tok);
        async move { call(state, "POST", "/agents/a/convos/c/messages", tok, Some(json!({ "messages": batch }))).await }
    });
    let answers = futures::future::join_all(sends).await;
    let inserted: u64 = answers
        .iter()
        .map(|a| {
            assert!(a.status.is_success(), "{}", a.body);
            a.body["data"]["inserted"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(inserted, 250);
    let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
    let header = store.get_header(&Org::stored(org.as_str()), "a", "c").await.unwrap().unwrap();
    assert_eq!(header.messages_num, 250);
    assert_eq!(store.messages(&Org::stored(org.as_str()), "a", "c").await.unwrap().len(), 250);
}

#[tokio::test]
async fn put_creates_then_updates_keeping_absent_fields() {
    let state = state().await;
    let tok = token(&new_org());
    let body = json!({"userName": "Jane Doe", "userEmail": "jane@example.com", "tags": [" vip ", "vip", "lead"], "origin": "sms"});
    let a = call(&state, "PUT", "/agents/a/convos/c", &tok, Some(body)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["data"]["contactId"], "c");
    assert_eq!(a.body["data"]["tags"], json!(["vip", "lead"]));
    assert_eq!(a.body["data"]["feedback"], "Unset");
    let a =
        call(&state, "PUT", "/agents/a/convos/c", &tok, Some(json!({"feedback": "Negative", "contactId": "k9"}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["data"]["userName"], "Jane Doe");
    assert_eq!(a.body["data"]["userEmail"], "jane@example.com");
    assert_eq!(a.body["data"]["origin"], "sms");
    assert_eq!(a.body["data"]["feedback"], "Negative");
    assert_eq!(a.body["data"]["contactId"], "k9");
}

#[tokio::test]
async fn list_is_newest_first_and_pages_with_a_cursor_bound_to_org_and_agent() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    for (i, convo) in ["c0", "c1", "c2", "c3", "c4"].iter().enumerate() {
        create_convo(&state, &tok, "ag", convo).await;
        let m = json!({"messages": [{"id": "x", "from": "user", "content": "hi", "ts": format!("2025-01-0{}T00:00:00Z", i + 1)}]});
        let a = call(&state, "POST", &format!("/agents/ag/convos/{convo}/messages"), &tok, Some(m)).await;
        assert_eq!(a.status, 201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/agents/ag/convos?limit=2&cursor={c}"),
            None => "/agents/ag/convos?limit=2".to_string(),
        };
        let a = call(&state, "GET", &uri, &tok, None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let page = a.body["data"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        match a.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["c4", "c3", "c2", "c1", "c0"]);

    let first = call(&state, "GET", "/agents/ag/convos?limit=2", &tok, None).await;
    let c = first.body["nextCursor"].as_str().unwrap().to_string();
    // Another organization, another agent, a tampered cursor: all 400, nothing leaked.
    let other = token(&new_org());
    let a = call(&state, "GET", &format!("/agents/ag/convos?cursor={c}"), &other, None).await;
    assert_convocore_error(&a, 400, "BAD_REQUEST");
    let a = call(&state, "GET", &format!("/agents/other/convos?cursor={c}"), &tok, None).await;
    assert_convocore_error(&a, 400, "BAD_REQUEST");
    let mut tampered = c.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let a =
        call(&state, "GET", &format!("/agents/ag/convos?cursor={}", String::from_utf8(tampered).unwrap()), &tok, None)
            .await;
    assert_convocore_error(&a, 400, "BAD_REQUEST");
    for bad in ["limit=0", "limit=101", "limit=x", "page=2"] {
        let a = call(&state, "GET", &format!("/agents/ag/convos?{bad}"), &tok, None).await;
        assert_convocore_error(&a, 400, "BAD_REQUEST");
    }
}

#[tokio::test]
async fn another_organization_gets_404_and_writes_nothing() {
    let state = state().await;
    let org_a = new_org();
    let tok_a = token(&org_a);
    create_convo(&state, &tok_a, "ag", "c").await;
    let tok_b = token(&new_org());

    let m = json!({"messages": [msg(1, "user")]});
    let a = call(&state, "POST", "/agents/ag/convos/c/messages", &tok_b, Some(m.clone())).await;
    assert_convocore_error(&a, 404, "NOT_FOUND");
    let unknown = call(&state, "POST", "/agents/ag/convos/nope/messages", &tok_a, Some(m)).await;
    assert_convocore_error(&unknown, 404, "NOT_FOUND");
    assert_eq!(a.body, unknown.body, "another org's id answers exactly like an unknown id");

    let list = call(&state, "GET", "/agents/ag/convos", &tok_b, None).await;
    assert_eq!(list.body["data"], json!([]));
    let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
    assert_eq!(store.get_header(&Org::stored(org_a.as_str()), "ag", "c").await.unwrap().unwrap().messages_num, 0);
    assert!(store.messages(&Org::stored(org_a.as_str()), "ag", "c").await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_input_gets_a_4xx_in_the_envelope_and_writes_nothing() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    create_convo(&state, &tok, "ag", "c").await;
    let auth = format!("Bearer {tok}");
    let json_headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let ingest = "/agents/ag/convos/c/messages";

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"messages\": [".to_vec(), 400, "BAD_REQUEST"),
        ("empty body", Vec::new(), 400, "BAD_REQUEST"),
        (
            "missing field",
            br#"{"messages":[{"from":"user","ts":"2024-12-01T10:30:00Z"}]}"#.to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (
            "wrong type",
            br#"{"messages":[{"from":"user","content":5,"ts":"2024-12-01T10:30:00Z"}]}"#.to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (
            "bad timestamp",
            br#"{"messages":[{"from":"user","content":"x","ts":"yesterday"}]}"#.to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (
            "space for T",
            br#"{"messages":[{"from":"user","content":"x","ts":"2024-12-01 10:30:00Z"}]}"#.to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (
            "positional array",
            br#"[[["m1","user","hi","2024-12-01T10:30:00Z",null,null]]]"#.to_vec(),
            400,
            "BAD_REQUEST",
        ),
        ("unknown field", br#"{"messages":[],"extra":1}"#.to_vec(), 400, "BAD_REQUEST"),
        ("empty batch", br#"{"messages":[]}"#.to_vec(), 400, "BAD_REQUEST"),
        (
            "over 1 MB",
            format!(
                r#"{{"messages":[{{"from":"user","content":"{}","ts":"2024-12-01T10:30:00Z"}}]}}"#,
                "a".repeat(1_100_000)
            )
            .into_bytes(),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (name, body, status, code) in cases {
        let a = send(&state, "POST", ingest, &json_headers, &body).await;
        assert_eq!(a.status.as_u16(), status, "{name}: {}", a.body);
        assert_convocore_error(&a, status, code);
    }
    let too_many: Vec<Value> = (0..501).map(|i| msg(i, "user")).collect();
    let a = call(&state, "POST", ingest, &tok, Some(json!({ "messages": too_many }))).await;
    assert_convocore_error(&a, 400, "BAD_REQUEST");
    let bad_ts = json!({"messages": [msg(1, "user"), {"from": "user", "content": "x", "ts": "2024-13-01"}]});
    let a = call(&state, "POST", ingest, &tok, Some(bad_ts)).await;
    assert_convocore_error(&a, 400, "BAD_REQUEST");
    assert!(a.body["issues"][0]["message"].as_str().unwrap().contains("messages[1].ts"), "{}", a.body);

    let form =
        send(&state, "POST", ingest, &[("authorization", auth.as_str()), ("content-type", "text/plain")], b"{}").await;
    assert_convocore_error(&form, 415, "UNSUPPORTED_MEDIA_TYPE");
    let bad_id = call(&state, "PUT", "/agents/ag/convos/a%23b", &tok, Some(json!({}))).await;
    assert_convocore_error(&bad_id, 400, "BAD_REQUEST");
    let bad_field =
        call(&state, "PUT", "/agents/ag/convos/c", &tok, Some(json!({"tags": ["x".repeat(65)], "feedback": "Meh"})))
            .await;
    assert_convocore_error(&bad_field, 400, "BAD_REQUEST");

    // Nothing above was written.
    let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
    let header = store.get_header(&Org::stored(org.as_str()), "ag", "c").await.unwrap().unwrap();
    assert_eq!(header.messages_num, 0);
    assert_eq!(header.feedback, shared::convos::Feedback::Unset);
    assert!(store.messages(&Org::stored(org.as_str()), "ag", "c").await.unwrap().is_empty());
    assert!(store.get_header(&Org::stored(org.as_str()), "ag", "a#b").await.unwrap().is_none());
}

/// A leap second (`23:59:60`) would be stored and echoed as `:60`, which most clients cannot
/// parse: ingest refuses it naming the message's `ts`, and the agent export its `from` / `to`.
#[tokio::test]
async fn a_leap_second_is_400_naming_the_field_and_writes_nothing() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    create_convo(&state, &tok, "ag", "c").await;
    for leap in ["2016-12-31T23:59:60Z", "2016-12-31T23:59:60.250Z", "2017-01-01T00:59:60+01:00"] {
        let batch = json!({"messages": [msg(1, "user"), {"from": "user", "content": "x", "ts": leap}]});
        let a = call(&state, "POST", "/agents/ag/convos/c/messages", &tok, Some(batch)).await;
        assert_convocore_error(&a, 400, "BAD_REQUEST");
        assert!(a.body["issues"].to_string().contains("messages[1].ts"), "{leap}: {}", a.body);
    }
    for query in ["from=2016-12-31T23:59:60Z", "to=2016-12-31T23:59:60Z"] {
        let a = call(&state, "GET", &format!("/agents/ag/convos/export?{query}"), &tok, None).await;
        assert_convocore_error(&a, 400, "BAD_REQUEST");
        let name = &query[..query.find('=').unwrap()];
        assert!(a.body.to_string().contains(&format!("`{name}`")), "{query}: {}", a.body);
    }
    let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
    assert!(store.messages(&Org::stored(org.as_str()), "ag", "c").await.unwrap().is_empty(), "nothing was stored");
    // The last instant before it is fine.
    let ok = json!({"messages": [{"from": "user", "content": "x", "ts": "2016-12-31T23:59:59.999Z"}]});
    let a = call(&state, "POST", "/agents/ag/convos/c/messages", &tok, Some(ok)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(store.messages(&Org::stored(org.as_str()), "ag", "c").await.unwrap()[0].ts, "2016-12-31T23:59:59.999Z");
}
