//! Training snapshot routes against the emulator (Tether contract).

mod support;

use serde_json::{json, Value};
use shared::keys::Org;
use shared::snapshots::store::{Archived, Filters, Layout, SnapshotStore};
use support::{assert_tether_error, call, new_org, seed_contact, send, state, token, Answer};

async fn create(state: &shared::AppState, tok: &str, body: Value) -> Answer {
    call(state, "POST", "/api/training/snapshots", tok, Some(body)).await
}

/// A JSON request's headers with `Idempotency-Key: key`.
fn keyed<'a>(auth: &'a str, key: &'a str) -> [(&'static str, &'a str); 3] {
    [("authorization", auth), ("content-type", "application/json"), ("idempotency-key", key)]
}

#[tokio::test]
async fn create_freezes_messages_in_time_order_with_tether_fields_and_get_populates_refs() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 6, |i| format!("line {i}")).await;
    let body = json!({"contactId": "k1", "messageIds": ["m00003", "m00001"], "notes": "n", "tags": [" sales ", "sales", "pricing"], "quality": "good", "category": "objection-handling"});
    let a = create(&state, &tok, body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["success"], true);
    assert_eq!(a.body["message"], "Training snapshot created successfully");
    let d = &a.body["data"];
    let id = d["_id"].as_str().unwrap();
    assert!(shared::ids::is_object_id(id));
    assert_eq!(d["organizationId"], org);
    assert_eq!(d["userId"], "user-1");
    assert_eq!(d["contactId"], "k1");
    assert_eq!(d["customerName"], "Jane Doe");
    assert_eq!(d["customerPhone"], "+14155550123");
    assert_eq!(d["tags"], json!(["sales", "pricing"]));
    assert_eq!(d["isArchived"], false);
    assert_eq!(d["messageCount"], 2);
    let ids: Vec<&str> = d["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m00001", "m00003"], "time order, not request order");
    assert_eq!(d["messages"][0]["sender"], "user");
    assert_eq!(d["messages"][0]["senderType"], "AI");
    assert_eq!(d["conversationStartDate"], d["messages"][0]["timestamp"]);
    assert_eq!(d["conversationEndDate"], d["messages"][1]["timestamp"]);
    assert_eq!(d["createdAt"], d["updatedAt"]);

    let g = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.body["success"], true);
    let g = &g.body["data"];
    assert_eq!(
        g["userId"],
        json!({"_id": "user-1", "firstName": "Alice", "lastName": "Rivera", "email": "alice@example.com"})
    );
    assert_eq!(g["contactId"]["_id"], "k1");
    assert_eq!(g["contactId"]["firstName"], "Jane");
    assert_eq!(g["contactId"]["lastName"], "Doe");
    assert_eq!(g["contactId"]["channelType"], "sms");
    assert_eq!(g["messages"], d["messages"]);

    // Without messageIds: every message of the contact; a customer message maps to `contact`.
    let all = create(&state, &tok, json!({"contactId": "k1"})).await;
    assert_eq!(all.body["data"]["messageCount"], 6);
    assert_eq!(all.body["data"]["messages"][0]["sender"], "contact");
    assert_eq!(all.body["data"]["messages"][0]["senderType"], "HUMAN");
}

#[tokio::test]
async fn create_rejects_bad_input_and_writes_nothing() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 2, |i| format!("{i}")).await;
    let cases = vec![
        (json!({"contactId": "nobody"}), 404, "NOT_FOUND"),
        (json!({"contactId": "k1", "messageIds": ["m00000", "zzz", "m99999"]}), 400, "VALIDATION_ERROR"),
        (json!({"messageIds": []}), 400, "VALIDATION_ERROR"),
        (json!({"contactId": 5}), 400, "VALIDATION_ERROR"),
        (
            json!({"contactId": "k1", "tags": (0..51).map(|i| i.to_string()).collect::<Vec<_>>()}),
            400,
            "VALIDATION_ERROR",
        ),
        (json!({"contactId": "k1", "tags": ["x".repeat(65)]}), 400, "VALIDATION_ERROR"),
        (json!({"contactId": "k1", "notes": "n".repeat(10_001)}), 400, "VALIDATION_ERROR"),
        (
            json!({"contactId": "k1", "messageIds": (0..10_001).map(|i| format!("m{i}")).collect::<Vec<_>>()}),
            400,
            "VALIDATION_ERROR",
        ),
        (json!({"contactId": "k1", "isArchived": true}), 400, "VALIDATION_ERROR"),
    ];
    for (body, status, code) in cases {
        let a = create(&state, &tok, body.clone()).await;
        assert_tether_error(&a, status, code);
    }
    let unknown = create(&state, &tok, json!({"contactId": "k1", "messageIds": ["m00000", "zzz", "m99999"]})).await;
    let message = unknown.body["message"].as_str().unwrap();
    assert!(message.contains("zzz") && message.contains("m99999") && !message.contains("m00000"), "{message}");
    let limits =
        create(&state, &tok, json!({"contactId": "k1", "notes": "n".repeat(10_001), "tags": ["x".repeat(65)]})).await;
    let message = limits.body["message"].as_str().unwrap();
    assert!(message.contains("notes") && message.contains("tags"), "names the fields: {message}");

    let list = call(&state, "GET", "/api/training/snapshots?archived=all", &tok, None).await;
    assert_eq!(list.body["data"], json!([]), "nothing was written");
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer_and_conflicts_on_another_body() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 4, |i| format!("{i}")).await;
    let auth = format!("Bearer {tok}");
    let headers = keyed(&auth, "key-1");
    let body = br#"{"contactId":"k1","quality":"good"}"#;
    let first = send(&state, "POST", "/api/training/snapshots", &headers, body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = send(&state, "POST", "/api/training/snapshots", &headers, body).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.body["data"]["_id"], first.body["data"]["_id"]);
    assert_eq!(again.body["data"]["messages"], first.body["data"]["messages"]);
    let other =
        send(&state, "POST", "/api/training/snapshots", &headers, br#"{"contactId":"k1","quality":"bad"}"#).await;
    assert_tether_error(&other, 409, "CONFLICT");
    let list = call(&state, "GET", "/api/training/snapshots", &tok, None).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1, "one snapshot, whatever the retries");
    // Another organization may use the same key independently.
    let tok_b = token(&new_org());
    let auth_b = format!("Bearer {tok_b}");
    let headers_b = keyed(&auth_b, "key-1");
    let b = send(&state, "POST", "/api/training/snapshots", &headers_b, body).await;
    assert_tether_error(&b, 404, "NOT_FOUND");
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_create_one_snapshot_and_a_failed_request_frees_the_key() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 4, |i| format!("{i}")).await;
    let auth = format!("Bearer {tok}");
    let headers = keyed(&auth, "together");
    let body = br#"{"contactId":"k1"}"#;
    // Sent at once: each answers the one snapshot (the claim names its id, the commit is conditional).
    let answers =
        futures::future::join_all((0..4).map(|_| send(&state, "POST", "/api/training/snapshots", &headers, body)))
            .await;
    let ids: Vec<_> = answers.iter().map(|a| (a.status.as_u16(), a.body["data"]["_id"].clone())).collect();
    assert!(ids.iter().all(|x| x.0 == 201 && x.1 == ids[0].1), "{ids:?}");
    let list = call(&state, "GET", "/api/training/snapshots", &tok, None).await;
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(1), "{}", list.body);
    let id = ids[0].1.as_str().unwrap();
    let got = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
    assert_eq!(got.body["data"]["messages"], answers[0].body["data"]["messages"]);

    // A request that fails for good (404: unknown contact) frees its key for a corrected body.
    let headers = keyed(&auth, "fix-me");
    let wrong = send(&state, "POST", "/api/training/snapshots", &headers, br#"{"contactId":"nobody"}"#).await;
    assert_tether_error(&wrong, 404, "NOT_FOUND");
    let fixed = send(&state, "POST", "/api/training/snapshots", &headers, body).await;
    assert_eq!(fixed.status, 201, "{}", fixed.body);
    assert_ne!(fixed.body["data"]["_id"], ids[0].1);
}

#[tokio::test]
async fn a_5000_message_conversation_round_trips_byte_for_byte() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    // About 2 MB: 400 bytes a message with accents, emoji, quotes and newlines.
    let content = |i: usize| format!("{i:05} héllo 👋 \"quoted\", new\nline {}", "x".repeat(360));
    let sent = seed_contact(&state, &tok, "ag", "big", 5000, content).await;
    let a = create(&state, &tok, json!({"contactId": "big", "quality": "good"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["data"]["_id"].as_str().unwrap().to_string();
    assert!(a.bytes.len() > 2_000_000, "about 2 MB: {}", a.bytes.len());

    let g = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
    assert_eq!(g.status, 200);
    let got = g.body["data"]["messages"].as_array().unwrap();
    assert_eq!(got.len(), 5000);
    for (m, s) in got.iter().zip(&sent) {
        assert_eq!(m["id"], s["id"]);
        assert_eq!(m["content"].as_str().unwrap().as_bytes(), s["content"].as_str().unwrap().as_bytes());
    }
    assert_eq!(g.body["data"]["messageCount"], 5000);
    let header = SnapshotStore::new(&state.dynamo, &state.config.table_name)
        .get_header(&Org::stored(org.as_str()), &id)
        .await
        .unwrap()
        .unwrap();
    assert!(header.chunks >= 5, "spilled into chunk items: {}", header.chunks);

    let d = call(&state, "DELETE", &format!("/api/training/snapshots/{id}"), &tok, None).await;
    assert_eq!(d.status, 200);
    let left = state
        .dynamo
        .query()
        .table_name(&state.config.table_name)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(shared::keys::snapshot(&Org::stored(&org), &id)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(left.count, 1, "the header and every chunk are gone; the deletion record stays");
}

#[tokio::test]
async fn a_snapshot_of_the_largest_size_commits_in_one_transaction_reads_back_and_deletes_whole() {
    // Bodies above 1 MiB only to seed faster; the snapshot itself is created as always.
    let state = support::state_with(|c| c.max_body_bytes = 8 << 20).await;
    let org = new_org();
    let tok = token(&org);
    // 40 messages of 99,000 bytes: just under MAX_MESSAGE_BYTES as JSON, so the most chunks.
    let sent = seed_contact(&state, &tok, "ag", "huge", 40, |i| format!("{i:02} {}", "x".repeat(99_000))).await;
    let a = create(&state, &tok, json!({"contactId": "huge", "notes": "é".repeat(10_000), "tags": ["big"]})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["data"]["_id"].as_str().unwrap().to_string();
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let header = store.get_header(&Org::stored(org.as_str()), &id).await.unwrap().unwrap();
    assert_eq!(header.chunks, shared::snapshots::store::MAX_CHUNKS);

    let g = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
    assert_eq!(g.status, 200);
    let got = g.body["data"]["messages"].as_array().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got.iter().zip(&sent).all(|(m, s)| m["content"] == s["content"]));
    let list = call(&state, "GET", "/api/training/snapshots?includeMessages=true", &tok, None).await;
    assert_eq!(list.body["data"][0]["messages"], g.body["data"]["messages"]);
    // Every chunk was committed: none carries an expiry.
    let items = partition(&state, &org, &id).await;
    assert_eq!(items.len(), 1 + header.chunks);
    assert!(items.iter().all(|i| !i.contains_key(shared::table::TTL)));

    let d = call(&state, "DELETE", &format!("/api/training/snapshots/{id}"), &tok, None).await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await.status, 404);
    // The header and every chunk are gone; only the deletion record stays, without content.
    let left = partition(&state, &org, &id).await;
    assert_eq!(left.len(), 1, "{left:?}");
    let mut names: Vec<&str> = left[0].keys().map(String::as_str).collect();
    names.sort();
    let ttl = shared::table::TTL;
    let mut want = vec!["GSI5PK", "GSI5SK", "PK", "SK", "_id", "createdAt", "deletedAt", "organizationId", ttl];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(left[0]["SK"].as_s().unwrap(), "TOMBSTONE");
}

/// Every item of a snapshot's partition (all pages: chunks are large).
async fn partition(
    state: &shared::AppState,
    org: &str,
    id: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let pages = state
        .dynamo
        .query()
        .table_name(&state.config.table_name)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(shared::keys::snapshot(&Org::stored(org), id)),
        )
        .into_paginator()
        .items()
        .send();
    pages.collect::<Vec<_>>().await.into_iter().map(|i| i.unwrap()).collect()
}

#[tokio::test]
async fn get_patch_delete_answer_404_for_unknown_and_other_organizations_ids() {
    let state = state().await;
    let tok_a = token(&new_org());
    seed_contact(&state, &tok_a, "ag", "k1", 2, |i| format!("{i}")).await;
    let a = create(&state, &tok_a, json!({"contactId": "k1", "quality": "good"})).await;
    let id = a.body["data"]["_id"].as_str().unwrap().to_string();
    let tok_b = token(&new_org());
    let unknown = shared::ids::object_id();
    let not_found = json!({"success": false, "message": "Training snapshot not found", "error": "NOT_FOUND"});
    for target in [&id, &unknown] {
        let uri = format!("/api/training/snapshots/{target}");
        let g = call(&state, "GET", &uri, &tok_b, None).await;
        assert_eq!((g.status.as_u16(), &g.body), (404, &not_found));
        let p = call(&state, "PATCH", &uri, &tok_b, Some(json!({"quality": "bad"}))).await;
        assert_eq!((p.status.as_u16(), &p.body), (404, &not_found));
        let d = call(&state, "DELETE", &uri, &tok_b, None).await;
        assert_eq!((d.status.as_u16(), &d.body), (404, &not_found));
    }
    // A's snapshot is untouched.
    let g = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok_a, None).await;
    assert_eq!(g.body["data"]["quality"], "good");
    for bad in ["123", "zzzzzzzzzzzzzzzzzzzzzzzz", "67f1a0b0c0d0e0f0a0b0c0d0aa"] {
        let g = call(&state, "GET", &format!("/api/training/snapshots/{bad}"), &tok_a, None).await;
        assert_tether_error(&g, 400, "VALIDATION_ERROR");
    }
    let d = call(&state, "DELETE", &format!("/api/training/snapshots/{id}"), &tok_a, None).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body["data"]["_id"], id);
    let again = call(&state, "DELETE", &format!("/api/training/snapshots/{id}"), &tok_a, None).await;
    assert_eq!((again.status.as_u16(), &again.body), (404, &not_found));
}

#[tokio::test]
async fn patch_updates_metadata_only_never_loses_a_field_and_honours_if_match() {
    let state = state().await;
    let tok = token(&new_org());
    seed_contact(&state, &tok, "ag", "k1", 2, |i| format!("{i}")).await;
    let a = create(&state, &tok, json!({"contactId": "k1", "quality": "good", "notes": "keep"})).await;
    let id = a.body["data"]["_id"].as_str().unwrap().to_string();
    let created = a.body["data"]["updatedAt"].as_str().unwrap().to_string();
    let uri = format!("/api/training/snapshots/{id}");

    for body in [
        json!({"messages": []}),
        json!({"_id": "x"}),
        json!({"createdAt": "2020-01-01T00:00:00Z"}),
        json!({}),
        json!({"isArchived": "yes"}),
    ] {
        let p = call(&state, "PATCH", &uri, &tok, Some(body)).await;
        assert_tether_error(&p, 400, "VALIDATION_ERROR");
    }
    // Concurrent PATCHes of different fields: both survive.
    let (x, y) = tokio::join!(
        call(&state, "PATCH", &uri, &tok, Some(json!({"category": "pricing"}))),
        call(&state, "PATCH", &uri, &tok, Some(json!({"tags": ["a", "b"]}))),
    );
    assert_eq!((x.status.as_u16(), y.status.as_u16()), (200, 200), "{} {}", x.body, y.body);
    let g = call(&state, "GET", &uri, &tok, None).await;
    assert_eq!(g.body["data"]["category"], "pricing");
    assert_eq!(g.body["data"]["tags"], json!(["a", "b"]));
    assert_eq!(g.body["data"]["notes"], "keep");
    assert_eq!(g.body["data"]["messageCount"], 2);
    let updated = g.body["data"]["updatedAt"].as_str().unwrap().to_string();
    assert!(updated > created);

    // If-Match: the stale updatedAt answers 412 and changes nothing; the current one works.
    let auth = format!("Bearer {tok}");
    let stale =
        [("authorization", auth.as_str()), ("content-type", "application/json"), ("if-match", created.as_str())];
    let p = send(&state, "PATCH", &uri, &stale, br#"{"quality":"bad"}"#).await;
    assert_tether_error(&p, 412, "PRECONDITION_FAILED");
    let quoted = format!("\"{updated}\"");
    let fresh = [("authorization", auth.as_str()), ("content-type", "application/json"), ("if-match", quoted.as_str())];
    let p = send(&state, "PATCH", &uri, &fresh, br#"{"quality":"bad","isArchived":true,"notes":null}"#).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["data"]["quality"], "bad");
    assert_eq!(p.body["data"]["isArchived"], true);
    assert_eq!(p.body["data"]["notes"], Value::Null);
    // Archived now: gone from the default list, found with archived=true and quality=bad.
    let l = call(&state, "GET", "/api/training/snapshots", &tok, None).await;
    assert_eq!(l.body["data"], json!([]));
    let l = call(&state, "GET", "/api/training/snapshots?archived=true&quality=bad", &tok, None).await;
    assert_eq!(l.body["data"][0]["_id"], id);
    let l = call(&state, "GET", "/api/training/snapshots?archived=true&quality=good", &tok, None).await;
    assert_eq!(l.body["data"], json!([]));
}

/// `If-Match` is a list (RFC 9110 §13.1.1): it matches when any member is the current ETag,
/// compared strongly (`W/` tags never match); `*` matches any current version. A bare
/// `updatedAt` (older clients) still counts as that tag.
#[tokio::test]
async fn if_match_with_a_list_matches_when_any_member_is_current() {
    let state = state().await;
    let tok = token(&new_org());
    seed_contact(&state, &tok, "ag", "k1", 2, |i| format!("{i}")).await;
    let a = create(&state, &tok, json!({"contactId": "k1", "notes": "created"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["data"]["_id"].as_str().unwrap().to_string();
    let uri = format!("/api/training/snapshots/{id}");
    let auth = format!("Bearer {tok}");
    let patch = |lines: Vec<String>, notes: &'static str| {
        let (state, uri, auth) = (&state, &uri, &auth);
        async move {
            let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
            headers.extend(lines.iter().map(|l| ("if-match", l.as_str())));
            send(state, "PATCH", uri, &headers, json!({ "notes": notes }).to_string().as_bytes()).await
        }
    };
    let current = |a: &Answer| a.body["data"]["updatedAt"].as_str().unwrap().to_string();
    let mut now = current(&a);
    let etag = a.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{now}\""));

    // A stale tag and the current one: 200.
    let p = patch(vec![format!("\"stale\", {etag}")], "one").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["data"]["notes"], "one");
    let before = now;
    now = current(&p);
    // Only stale tags (the previous ETag among them): 412, nothing changes.
    for lines in [
        vec!["\"stale1\", \"stale2\"".to_string()],
        vec![format!("\"stale\", \"{before}\"")],
        vec![format!("W/\"{now}\"")],
        vec![format!("W/\"{now}\", \"stale\"")],
    ] {
        let p = patch(lines.clone(), "lost").await;
        assert_tether_error(&p, 412, "PRECONDITION_FAILED");
        assert!(p.headers.get("etag").is_none(), "{lines:?}");
    }
    // The current tag last, bare (as older clients send it), or on its own line: 200.
    let p = patch(vec![format!("\"a\", \"b,c\", \"{now}\"")], "two").await;
    assert_eq!(p.status, 200, "{}", p.body);
    now = current(&p);
    let p = patch(vec![format!("\"stale\", {now}")], "three").await;
    assert_eq!(p.status, 200, "{}", p.body);
    now = current(&p);
    let p = patch(vec!["\"stale\"".to_string(), format!("\"{now}\"")], "four").await;
    assert_eq!(p.status, 200, "{}", p.body);
    now = current(&p);
    let p = patch(vec!["*".to_string()], "five").await;
    assert_eq!(p.status, 200, "{}", p.body);
    // Not a list of entity-tags, or `*` inside a list: 400 naming If-Match.
    for bad in [format!("\"{now}\"; x=1"), format!("*, \"{now}\""), "\"unterminated".to_string()] {
        let p = patch(vec![bad.clone()], "lost").await;
        assert_tether_error(&p, 400, "VALIDATION_ERROR");
        assert!(p.body.to_string().contains("If-Match"), "{bad}: {}", p.body);
    }
    let g = call(&state, "GET", &uri, &tok, None).await;
    assert_eq!(g.body["data"]["notes"], "five");
}

/// A leap second (`23:59:60`) is not accepted as a bound: it would be echoed as `:60`, which
/// most clients cannot parse.
#[tokio::test]
async fn a_leap_second_in_from_or_to_is_400_naming_the_field() {
    let state = state().await;
    let tok = token(&new_org());
    let queries = [
        ("from", "from=2016-12-31T23:59:60Z"),
        ("to", "to=2016-12-31T23:59:60.5Z"),
        ("from", "from=2017-01-01T00:59:60%2B01:00"),
    ];
    for (name, query) in queries {
        for path in ["/api/training/snapshots", "/api/training/export"] {
            let a = call(&state, "GET", &format!("{path}?{query}"), &tok, None).await;
            assert_tether_error(&a, 400, "VALIDATION_ERROR");
            assert!(a.body["message"].as_str().unwrap().contains(name), "{path}?{query}: {}", a.body);
        }
    }
    let a = call(&state, "GET", "/api/training/snapshots?from=2016-12-31T23:59:59.999Z", &tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn list_filters_pages_and_binds_cursors_to_org_and_filters() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 2, |i| format!("{i}")).await;
    seed_contact(&state, &tok, "ag", "k2", 2, |i| format!("{i}")).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let body = json!({"contactId": if i % 2 == 0 { "k1" } else { "k2" }, "quality": if i < 4 { "good" } else { "bad" },
                          "category": if i % 3 == 0 { "pricing" } else { "support" }, "tags": if i % 2 == 0 { json!(["x", "y"]) } else { json!(["x"]) }});
        let a = create(&state, &tok, body).await;
        assert_eq!(a.status, 201, "{}", a.body);
        ids.push(a.body["data"]["_id"].as_str().unwrap().to_string());
    }
    let list = |q: &str| {
        let uri = format!("/api/training/snapshots{q}");
        let (state, tok) = (&state, &tok);
        async move {
            let a = call(state, "GET", &uri, tok, None).await;
            assert_eq!(a.status, 200, "{uri}: {}", a.body);
            a
        }
    };
    let got = |a: &Answer| -> Vec<String> {
        a.body["data"].as_array().unwrap().iter().map(|s| s["_id"].as_str().unwrap().to_string()).collect()
    };
    let newest_first = |idx: &[usize]| -> Vec<String> { idx.iter().rev().map(|&i| ids[i].clone()).collect() };

    assert_eq!(got(&list("").await), newest_first(&[0, 1, 2, 3, 4, 5, 6]));
    assert_eq!(got(&list("?quality=good").await), newest_first(&[0, 1, 2, 3]));
    assert_eq!(got(&list("?category=pricing").await), newest_first(&[0, 3, 6]));
    assert_eq!(got(&list("?contactId=k2").await), newest_first(&[1, 3, 5]));
    assert_eq!(got(&list("?tag=y").await), newest_first(&[0, 2, 4, 6]));
    assert_eq!(got(&list("?tag=x&tag=y&quality=bad").await), newest_first(&[4, 6]));
    assert_eq!(got(&list("?contactId=k1&category=pricing").await), newest_first(&[0, 6]));
    let item = &list("?quality=good").await.body["data"][0];
    assert!(item.get("messages").is_none(), "messages are left out by default");
    assert_eq!(item["contactId"]["_id"], "k2");
    let with = list("?quality=good&includeMessages=true&limit=1").await;
    assert_eq!(with.body["data"][0]["messages"].as_array().unwrap().len(), 2);
    assert_eq!(got(&list("?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z").await).len(), 7);
    assert_eq!(got(&list("?to=2000-01-01T00:00:00Z").await), Vec::<String>::new());

    // Paging: limit 3 through the good+bad list, no duplicates, no gaps.
    let mut seen = Vec::new();
    let mut uri = "?limit=3&tag=x".to_string();
    loop {
        let a = list(&uri).await;
        seen.extend(got(&a));
        match a.body["nextCursor"].as_str() {
            Some(c) => uri = format!("?limit=3&tag=x&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first(&[0, 1, 2, 3, 4, 5, 6]));

    // Cursors: bound to the organization and to the filters; forged ones are rejected.
    let first = list("?limit=2").await;
    let cursor = first.body["nextCursor"].as_str().unwrap().to_string();
    let other =
        call(&state, "GET", &format!("/api/training/snapshots?limit=2&cursor={cursor}"), &token(&new_org()), None)
            .await;
    assert_tether_error(&other, 400, "VALIDATION_ERROR");
    let changed =
        call(&state, "GET", &format!("/api/training/snapshots?limit=2&quality=bad&cursor={cursor}"), &tok, None).await;
    assert_tether_error(&changed, 400, "VALIDATION_ERROR");
    for bad in [
        "?archived=maybe",
        "?limit=0",
        "?limit=101",
        "?from=yesterday",
        "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "?cursor=abc.def",
    ] {
        let a = call(&state, "GET", &format!("/api/training/snapshots{bad}"), &tok, None).await;
        assert_tether_error(&a, 400, "VALIDATION_ERROR");
    }
}

/// 1,000 snapshots, half good and half bad: listing `quality=good` reads only good ones.
/// The emulator reports a constant `ConsumedCapacity`, so the test asserts `ScannedCount`
/// (the items the key condition read, which is what capacity is billed on).
#[tokio::test]
async fn listing_by_quality_reads_no_snapshot_of_another_quality() {
    let state = state().await;
    let org = new_org();
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let message = shared::snapshots::SnapshotMessage {
        id: "m1".into(),
        content: "hi".into(),
        sender: "contact".into(),
        sender_type: "HUMAN".into(),
        timestamp: "2026-01-01T00:00:00.000Z".into(),
    };
    // Bulk-seeded: the same committed items as a create, without a transaction each.
    let snaps = (0..1000)
        .map(|i| {
            let (id, at) = shared::ids::new_id();
            let now = shared::time::to_rfc3339(at);
            let snap: shared::snapshots::Snapshot = serde_json::from_value(json!({
                "_id": id, "organizationId": org, "user": {"_id": "u"}, "contact": {"_id": "k"},
                "messageCount": 1, "snapshotDate": now, "quality": if i % 2 == 0 { "good" } else { "bad" },
                "isArchived": false, "createdAt": now, "updatedAt": now, "version": 1
            }))
            .unwrap();
            (snap, vec![message.clone()])
        })
        .collect();
    store.import(snaps).await.unwrap();
    let filters = Filters { quality: Some("good".into()), archived: Archived::No, ..Filters::default() };
    let (mut after, mut returned, mut scanned, mut pages) = (None, 0, 0, 0);
    loop {
        let (page, next, stats) =
            store.list(&Org::stored(org.as_str()), &filters, 100, after.as_deref()).await.unwrap();
        assert!(page.iter().all(|s| s.quality.as_deref() == Some("good")));
        assert!(stats.capacity > 0.0, "ReturnConsumedCapacity is requested and reported");
        returned += page.len();
        scanned += stats.scanned;
        pages += 1;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(returned, 500);
    // Each page reads one item ahead to know whether there is a next page; nothing else.
    assert!(scanned as usize <= returned + pages, "scanned {scanned} items for {returned} good ones in {pages} pages");
}

/// Every snapshot's `createdAt`, newest first as listed (`from`/`to` applied by the server).
async fn listed(state: &shared::AppState, tok: &str, query: &str) -> Vec<(String, String)> {
    let a = call(state, "GET", &format!("/api/training/snapshots?limit=100{query}"), tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["nextCursor"].is_null(), "one page holds them all");
    a.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["createdAt"].as_str().unwrap().to_string(), d["_id"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn from_and_to_mean_created_at_exactly_across_second_boundaries_under_parallel_creates() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 2, |i| format!("line {i}")).await;
    // Waves of parallel creates until they span a second boundary.
    let mut all: Vec<(String, String)> = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let wave = futures::future::join_all((0..20).map(|_| create(&state, &tok, json!({"contactId": "k1"})))).await;
        for a in wave {
            assert_eq!(a.status, 201, "{}", a.body);
            let d = &a.body["data"];
            assert_eq!(d["createdAt"], d["updatedAt"]);
            all.push((d["createdAt"].as_str().unwrap().to_string(), d["_id"].as_str().unwrap().to_string()));
        }
        let seconds: std::collections::BTreeSet<&str> = all.iter().map(|(c, _)| &c[..19]).collect();
        if seconds.len() >= 2 {
            break;
        }
    }
    assert!(all.len() <= 100, "one list page");
    assert!(
        all.iter().map(|(c, _)| &c[..19]).collect::<std::collections::BTreeSet<_>>().len() >= 2,
        "across a second boundary"
    );
    // Newest first by createdAt, ties by id.
    let mut expected = all.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed(&state, &tok, "").await, expected, "list order is createdAt order");

    let ms = |t: &str, delta: i64| {
        shared::time::to_rfc3339(shared::time::parse_rfc3339(t).unwrap() + chrono::Duration::milliseconds(delta))
    };
    for (created, id) in &all {
        let second = format!("{}.000Z", &created[..19]);
        for from in [created.clone(), second] {
            let want: Vec<_> = expected.iter().filter(|(c, _)| *c >= from).cloned().collect();
            assert_eq!(listed(&state, &tok, &format!("&from={from}")).await, want, "from={from}");
        }
        let before = ms(created, -1);
        let got = listed(&state, &tok, &format!("&to={before}")).await;
        assert!(!got.iter().any(|(_, i)| i == id), "to={before} excludes {id} created at {created}");
        assert_eq!(got, expected.iter().filter(|(c, _)| *c <= before).cloned().collect::<Vec<_>>());
        let only = listed(&state, &tok, &format!("&from={created}&to={created}")).await;
        assert!(only.iter().any(|(_, i)| i == id) && only.iter().all(|(c, _)| c == created));
    }
    // The export reads the same window.
    let (created, _) = &all[all.len() / 2];
    let from = format!("{}.000Z", &created[..19]);
    let a = call(&state, "GET", &format!("/api/training/export?format=jsonl&from={from}"), &tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let exported: Vec<String> = String::from_utf8(a.bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = expected.iter().filter(|(c, _)| *c >= from).map(|(_, i)| i.clone()).collect();
    assert_eq!(exported, want);
}

// A create that lands after its snapshot was deleted (an attempt given up on, or the retry of a
// key whose answer was lost) writes nothing: the deletion record stops its transaction.
#[tokio::test]
async fn a_create_landing_after_the_delete_does_not_bring_the_snapshot_back() {
    let s = state().await;
    let org = new_org();
    let tok = token(&org);
    let store = SnapshotStore::new(&s.dynamo, &s.config.table_name);
    // One short message: in its header with `SmallInHeader`, in a chunk with `Chunks`.
    for (i, layout) in [Layout::Chunks, Layout::SmallInHeader].into_iter().enumerate() {
        let (mut snap, mut messages) = support::tiny_snapshot(&org, i);
        messages.truncate(1);
        messages[0].content = "ok".into();
        snap.message_count = 1;
        let want = SnapshotStore::items(&mut snap.clone(), &messages, layout).unwrap().len();
        assert_eq!(want, if layout == Layout::Chunks { 2 } else { 1 }, "{layout:?}: one short message");
        assert!(store.create(&mut snap.clone(), &messages, layout, false).await.unwrap(), "committed");
        let path = format!("/api/training/snapshots/{}", snap.id);
        let stored = support::items_with_prefix(&s, &format!("ORG#{org}#SNAP#{}", snap.id)).await;
        assert_eq!(stored.len(), want, "{layout:?}: {stored:?}");
        assert_eq!(call(&s, "DELETE", &path, &tok, None).await.status, 200);

        for resumed in [false, true] {
            let committed = store.create(&mut snap.clone(), &messages, layout, resumed).await.unwrap();
            assert!(!committed, "committed again after its delete ({layout:?}, resumed: {resumed})");
        }
        assert_eq!(call(&s, "GET", &path, &tok, None).await.status, 404);
        let left = support::items_with_prefix(&s, &format!("ORG#{org}#SNAP#{}", snap.id)).await;
        assert!(left.iter().all(|i| support::item_str(i, "SK") == "TOMBSTONE"), "{layout:?}: {left:?}");
    }
    let list = call(&s, "GET", "/api/training/snapshots?archived=all", &tok, None).await;
    assert_eq!(list.body["data"], json!([]), "{}", list.body);
    let items = support::items_with_prefix(&s, &format!("ORG#{org}#SNAP#")).await;
    assert!(items.iter().all(|i| support::item_str(i, "SK") != "META"), "a header is back: {items:?}");
}
