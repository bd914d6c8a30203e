//! Exports against the emulator: formats, CSV safety, the fine-tune format, conversation
//! exports, S3 delivery and aborted uploads.

mod support;

use serde_json::{json, Value};
use shared::exports::sink::{Delivery, ExportSink, Finished};
use shared::keys::Org;
use support::{call, create_snapshot, download, new_org, seed_contact, send, state, state_with, token, Answer};

/// The seed's `TrainingExportPayload` schema (OpenAPI 3.0) as plain JSON Schema.
fn seed_schema() -> Value {
    let text = include_str!("fixtures/tether-training-export.openapi.yaml");
    let doc: Value = serde_yaml::from_str(text).unwrap();
    fn resolve(v: &Value, root: &Value) -> Value {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let name = r.trim_start_matches("#/components/schemas/");
                    return resolve(&root["components"]["schemas"][name], root);
                }
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    if k != "nullable" && k != "example" {
                        out.insert(k.clone(), resolve(v, root));
                    }
                }
                // OpenAPI 3.0's `nullable: true` is JSON Schema's `type: [T, "null"]`.
                if map.get("nullable") == Some(&Value::Bool(true)) {
                    if let Some(Value::String(t)) = map.get("type") {
                        out.insert("type".into(), json!([t, "null"]));
                    }
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| resolve(v, root)).collect()),
            other => other.clone(),
        }
    }
    resolve(&doc["components"]["schemas"]["TrainingExportPayload"], &doc)
}

async fn export(state: &shared::AppState, tok: &str, query: &str) -> Answer {
    let a = call(state, "GET", &format!("/api/training/export{query}"), tok, None).await;
    assert!(a.status == 200 || a.status == 303, "{query}: {} {}", a.status, String::from_utf8_lossy(&a.bytes));
    a
}

#[tokio::test]
async fn json_export_is_tethers_payload_and_validates_against_the_seed_schema() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "full", 4, |i| format!("line {i}")).await;
    let full = create_snapshot(
        &state,
        &tok,
        json!({"contactId": "full", "notes": "n", "tags": ["sales"], "quality": "good", "category": "pricing"}),
    )
    .await;
    // A contact with no lead fields and a snapshot with no optional field.
    let a = call(&state, "PUT", "/agents/ag/convos/bare", &tok, Some(json!({}))).await;
    assert_eq!(a.status, 201);
    let m = json!({"messages": [{"id": "b1", "from": "user", "content": "hi", "ts": "2026-01-01T00:00:00Z"}]});
    assert_eq!(call(&state, "POST", "/agents/ag/convos/bare/messages", &tok, Some(m)).await.status, 201);
    let bare = create_snapshot(&state, &tok, json!({"contactId": "bare"})).await;

    let validator = jsonschema::validator_for(&seed_schema()).unwrap();
    for query in ["", "?quality=good", "?contactId=bare"] {
        let a = export(&state, &tok, query).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["content-type"], "application/json");
        let cd = a.headers["content-disposition"].to_str().unwrap();
        assert!(cd.starts_with("attachment; filename=\"training-data-") && cd.ends_with(".json\""), "{cd}");
        let errors: Vec<String> =
            validator.iter_errors(&a.body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{query}: {errors:?}\n{}", a.body);
        assert!(a.body.get("success").is_none(), "not wrapped in the envelope");
        assert_eq!(a.body["organizationId"], org);
        assert_eq!(a.body["totalSnapshots"], a.body["data"].as_array().unwrap().len());
    }
    let all = export(&state, &tok, "").await.body;
    assert_eq!(all["totalSnapshots"], 2);
    let item = all["data"].as_array().unwrap().iter().find(|i| i["id"] == full).unwrap();
    assert_eq!(item["customer"], json!({"name": "Jane Doe", "phone": "+14155550123", "email": "jane@example.com"}));
    assert_eq!(item["conversation"][0]["role"], "user");
    assert_eq!(item["conversation"][0]["senderType"], "HUMAN");
    assert_eq!(item["conversation"][1]["role"], "assistant");
    assert_eq!(item["conversation"][1]["senderType"], "AI");
    assert_eq!(item["metadata"]["quality"], "good");
    assert_eq!(item["metadata"]["messageCount"], 4);
    assert_eq!(item["metadata"]["dateRange"]["start"], item["conversation"][0]["timestamp"]);
    let bare_item = all["data"].as_array().unwrap().iter().find(|i| i["id"] == bare).unwrap();
    assert_eq!(bare_item["customer"], json!({"email": null}), "absent fields are left out; email is nullable");
    assert_eq!(bare_item["metadata"]["category"], Value::Null);
    assert!(bare_item["metadata"].get("quality").is_none() && bare_item["metadata"].get("notes").is_none());

    // Archived snapshots are left out unless asked for.
    let p = call(&state, "PATCH", &format!("/api/training/snapshots/{bare}"), &tok, Some(json!({"isArchived": true})))
        .await;
    assert_eq!(p.status, 200);
    assert_eq!(export(&state, &tok, "").await.body["totalSnapshots"], 1);
    assert_eq!(export(&state, &tok, "?includeArchived=true").await.body["totalSnapshots"], 2);
    // Another organization exports nothing of this one.
    let other = export(&state, &token(&new_org()), "").await.body;
    assert_eq!(other["totalSnapshots"], 0);
}

#[tokio::test]
async fn jsonl_and_openai_exports_are_one_valid_line_per_snapshot() {
    let state = state().await;
    let tok = token(&new_org());
    seed_contact(&state, &tok, "ag", "k1", 5, |i| format!("turn {i}")).await;
    create_snapshot(&state, &tok, json!({"contactId": "k1"})).await;
    // Only customer messages: no assistant turn, so the fine-tune export skips it.
    create_snapshot(&state, &tok, json!({"contactId": "k1", "messageIds": ["m00000", "m00002"]})).await;
    // Two assistant messages in a row (after dropping the customer's in between) merge into one turn.
    create_snapshot(&state, &tok, json!({"contactId": "k1", "messageIds": ["m00000", "m00001", "m00003"]})).await;

    let a = export(&state, &tok, "?format=jsonl").await;
    assert_eq!(a.headers["content-type"], "application/x-ndjson");
    assert!(a.headers["content-disposition"].to_str().unwrap().ends_with(".jsonl\""));
    let lines: Vec<Value> =
        String::from_utf8(a.bytes.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["id"].is_string() && l["conversation"].is_array()));

    let a = export(&state, &tok, "?format=openai&system=You%20are%20helpful.").await;
    assert_eq!(a.headers["x-export-skipped"], "1");
    assert_eq!(a.headers["x-export-items"], "2");
    let text = String::from_utf8(a.bytes.clone()).unwrap();
    let examples: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(examples.len(), 2);
    for ex in &examples {
        // The chat fine-tuning format: known roles, non-empty content, an assistant message.
        let messages = ex["messages"].as_array().unwrap();
        assert_eq!(ex.as_object().unwrap().len(), 1);
        assert_eq!(messages[0], json!({"role": "system", "content": "You are helpful."}));
        assert!(messages.iter().all(|m| ["system", "user", "assistant"].contains(&m["role"].as_str().unwrap())));
        assert!(messages.iter().all(|m| !m["content"].as_str().unwrap().trim().is_empty()));
        assert!(messages.iter().any(|m| m["role"] == "assistant"));
        assert!(messages.windows(2).all(|w| w[0]["role"] != w[1]["role"]), "consecutive roles are merged");
    }
    let merged = examples.iter().find(|e| e["messages"].as_array().unwrap().len() == 3).unwrap();
    assert_eq!(merged["messages"][2], json!({"role": "assistant", "content": "turn 1\nturn 3"}));
}

#[tokio::test]
async fn csv_exports_survive_a_round_trip_and_neutralise_formulas() {
    let state = state().await;
    let tok = token(&new_org());
    let nasty = [
        "Crème brûlée 👋 ça va?",
        "a, b and \"quotes\"",
        "line one\nline two\r\nline three",
        "=cmd()",
        "+1",
        "-2",
        "@SUM(A1)",
        "\tx",
    ];
    seed_contact(&state, &tok, "ag", "k1", nasty.len(), |i| nasty[i].to_string()).await;
    create_snapshot(&state, &tok, json!({"contactId": "k1", "notes": "=HYPERLINK(\"x\")", "tags": ["a,b", "c"]})).await;

    for (uri, columns) in [
        ("/api/training/export?format=csv".to_string(), shared::exports::training::CSV_COLUMNS),
        ("/agents/ag/convos/export?format=csv".to_string(), shared::exports::convos::CSV_COLUMNS),
        ("/agents/ag/convos/convo-k1/export?format=csv".to_string(), shared::exports::convos::CSV_COLUMNS),
    ] {
        let a = call(&state, "GET", &uri, &tok, None).await;
        assert_eq!(a.status, 200, "{uri}");
        assert_eq!(a.headers["content-type"], "text/csv; charset=utf-8");
        assert!(a.bytes.starts_with("\u{feff}".as_bytes()), "{uri}: UTF-8 BOM");
        let mut reader = csv::Reader::from_reader(&a.bytes[3..]);
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), columns);
        let content_col = columns.iter().position(|c| *c == "content" || *c == "message").unwrap();
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), nasty.len(), "{uri}: one row per message");
        for (row, original) in rows.iter().zip(nasty) {
            let cell = &row[content_col];
            if matches!(original.as_bytes()[0], b'=' | b'+' | b'-' | b'@' | b'\t') {
                assert_eq!(cell, format!("'{original}"), "{uri}: formula neutralised");
            } else {
                assert_eq!(cell, original, "{uri}: survives the round trip");
            }
            assert!(
                row.iter().all(|c| !matches!(c.as_bytes().first(), Some(b'=' | b'+' | b'@' | b'\t' | b'\r'))),
                "{uri}: {row:?}"
            );
        }
    }
}

#[tokio::test]
async fn conversation_exports_follow_convocores_shape() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    let put = json!({"userName": "John Doe", "userEmail": "john@example.com", "userCompany": "Acme", "notes": "n", "tags": ["vip"], "origin": "web-chat", "feedback": "Positive"});
    assert_eq!(call(&state, "PUT", "/agents/ag/convos/c1", &tok, Some(put)).await.status, 201);
    let messages = json!({"messages": [
        {"id": "1", "from": "user", "content": "Hello!", "ts": "2024-12-01T10:30:00Z"},
        {"id": "2", "from": "user", "content": "Anyone?", "ts": "2024-12-01T10:30:01Z"},
        {"id": "3", "from": "bot", "content": "Hi! How can I help you today?", "ts": "2024-12-01T22:30:02Z", "feedback": "Positive"},
        {"id": "4", "from": "human", "content": "A human here.", "ts": "2024-12-02T09:00:00Z"}
    ]});
    assert_eq!(call(&state, "POST", "/agents/ag/convos/c1/messages", &tok, Some(messages)).await.status, 201);
    assert_eq!(call(&state, "PUT", "/agents/ag/convos/c2", &tok, Some(json!({}))).await.status, 201);
    let late = json!({"messages": [{"id": "x", "from": "user", "content": "later", "ts": "2025-06-01T00:00:00Z"}]});
    assert_eq!(call(&state, "POST", "/agents/ag/convos/c2/messages", &tok, Some(late)).await.status, 201);

    let one = call(&state, "GET", "/agents/ag/convos/c1/export", &tok, None).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body["success"], true);
    assert_eq!(one.body["message"], "Conversation exported successfully");
    let d = &one.body["data"];
    assert_eq!(d["metadata"]["feedback"], "Positive");
    assert_eq!(d["metadata"]["convo"]["userName"], "John Doe");
    assert_eq!(d["metadata"]["convo"]["origin"], "web-chat");
    assert_eq!(d["metadata"]["convo"]["userWebsite"], Value::Null);
    assert_eq!(d["metadata"]["sessions"], json!([]));
    let turns = d["turns"].as_array().unwrap();
    assert_eq!(turns.iter().map(|t| t["from"].as_str().unwrap()).collect::<Vec<_>>(), ["user", "bot", "human"]);
    assert_eq!(turns[0]["messages"].as_array().unwrap().len(), 2, "consecutive messages of one sender form one turn");
    assert_eq!(
        turns[0]["messages"][0],
        json!({"type": "text", "ts": "December 1st 2024, 10:30:00 am", "payload": {"message": "Hello!", "feedback": "Unset", "aiGenerated": false}})
    );
    assert_eq!(turns[1]["messages"][0]["ts"], "December 1st 2024, 10:30:02 pm");
    assert_eq!(turns[1]["messages"][0]["payload"]["aiGenerated"], true);

    let all = call(&state, "GET", "/agents/ag/convos/export", &tok, None).await;
    assert_eq!(all.body["message"], "Conversations exported successfully");
    let ids: Vec<&str> =
        all.body["data"].as_array().unwrap().iter().map(|c| c["metadata"]["convo"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c2", "c1"]);
    let ranged =
        call(&state, "GET", "/agents/ag/convos/export?from=2024-12-01T00:00:00Z&to=2024-12-31T00:00:00Z", &tok, None)
            .await;
    assert_eq!(ranged.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(ranged.body["data"][0]["metadata"]["convo"]["id"], "c1");
    let limited = call(&state, "GET", "/agents/ag/convos/export?limit=1", &tok, None).await;
    assert_eq!(limited.body["data"].as_array().unwrap().len(), 1);

    // Not this agent's, not this organization's: 404 like an unknown id.
    for (uri, t) in [
        ("/agents/other/convos/c1/export", &tok),
        ("/agents/ag/convos/c1/export", &token(&new_org())),
        ("/agents/ag/convos/nope/export", &tok),
    ] {
        let a = call(&state, "GET", uri, t, None).await;
        assert_eq!(a.status, 404, "{uri}");
        assert_eq!(a.body["code"], "NOT_FOUND");
    }
    let other_org = call(&state, "GET", "/agents/ag/convos/export", &token(&new_org()), None).await;
    assert_eq!(other_org.body["data"], json!([]));
    for bad in ["?format=xml", "?from=yesterday", "?limit=0", "?delivery=email"] {
        let a = call(&state, "GET", &format!("/agents/ag/convos/export{bad}"), &tok, None).await;
        assert_eq!((a.status.as_u16(), a.body["code"].as_str()), (400, Some("BAD_REQUEST")), "{bad}");
    }
}

#[tokio::test]
async fn delivery_url_answers_303_with_a_presigned_download_and_inline_limit_answers_413() {
    let state = state_with(|c| c.inline_export_max_bytes = 2_000).await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 40, |i| format!("message number {i} with some text")).await;
    create_snapshot(&state, &tok, json!({"contactId": "k1", "quality": "good"})).await;

    // Over the inline limit: 303 to the file in S3, with the same bytes as inline would give.
    let a = export(&state, &tok, "?format=jsonl").await;
    assert_eq!(a.status, 303);
    let url = a.headers["location"].to_str().unwrap().to_string();
    assert_eq!(a.body["data"]["url"], url);
    assert_eq!(a.body["success"], true);
    let key = a.body["data"]["key"].as_str().unwrap();
    assert!(key.starts_with(&format!("exports/{org}/training/")), "{key}");
    let random = key.split('/').nth(4).unwrap();
    assert!(random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()), "128 random bits in the key: {key}");
    assert!(a.body["data"]["expiresAt"].is_string());
    let (status, headers, file) = download(&url).await;
    assert_eq!(status, 200);
    assert_eq!(file.len() as u64, a.body["data"]["bytes"].as_u64().unwrap());
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert!(headers["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"training-data-"));
    let big = state_with(|c| c.inline_export_max_bytes = 10_000_000).await;
    let inline = export(&big, &tok, "?format=jsonl").await;
    assert_eq!(inline.status, 200);
    assert_eq!(inline.bytes, file, "the download is byte-identical to the inline answer");

    let forced = export(&big, &tok, "?delivery=url&format=csv").await;
    assert_eq!(forced.status, 303);
    let a = call(&state, "GET", "/api/training/export?delivery=inline", &tok, None).await;
    assert_eq!((a.status.as_u16(), a.body["error"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));
    let a = call(&state, "GET", "/agents/ag/convos/export?delivery=url", &tok, None).await;
    assert_eq!(a.status, 303);
    let (status, _, file) = download(a.headers["location"].to_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&file).unwrap()["message"], "Conversations exported successfully");
    for bad in ["?format=xml", "?includeArchived=maybe", "?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"] {
        let a = send(
            &state,
            "GET",
            &format!("/api/training/export{bad}"),
            &[("authorization", &format!("Bearer {tok}"))],
            b"",
        )
        .await;
        assert_eq!((a.status.as_u16(), a.body["error"].as_str()), (400, Some("VALIDATION_ERROR")), "{bad}");
    }
}

#[tokio::test]
async fn a_failed_upload_is_aborted_and_leaves_no_parts_or_object() {
    let state = state().await;
    let org = new_org();
    let spec = shared::exports::object_spec(
        &state,
        &Org::stored(org.as_str()),
        "training",
        "fault.jsonl",
        "application/x-ndjson",
    );
    let mut sink = ExportSink::new(&state.s3, spec.clone(), Delivery::Url, 0).with_fault_after_parts(2);
    let chunk = vec![b'x'; 1024 * 1024];
    let mut failed = None;
    for _ in 0..40 {
        if let Err(e) = sink.write(&chunk).await {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("the third part fails");
    assert!(e.is_transient(), "{e}");
    let uploads =
        state.s3.list_multipart_uploads().bucket(&spec.bucket).prefix(format!("exports/{org}/")).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "no orphaned multipart upload: {:?}", uploads.uploads());
    let objects =
        state.s3.list_objects_v2().bucket(&spec.bucket).prefix(format!("exports/{org}/")).send().await.unwrap();
    assert_eq!(objects.key_count(), Some(0), "no partial object");

    // The same sink without a fault completes as one object.
    let mut sink = ExportSink::new(&state.s3, spec.clone(), Delivery::Url, 0);
    for _ in 0..12 {
        sink.write(&chunk).await.unwrap();
    }
    let Finished::Stored { key, bytes, .. } = sink.finish().await.unwrap() else { panic!("stored") };
    assert_eq!(bytes, 12 * 1024 * 1024);
    let head = state.s3.head_object().bucket(&spec.bucket).key(&key).send().await.unwrap();
    assert_eq!(head.content_length(), Some(12 * 1024 * 1024));
}
