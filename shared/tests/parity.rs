//! An export job's file is byte for byte the synchronous export's answer for the same
//! parameters, across every format and every parameter (only the JSON payload's `exportDate`,
//! the moment of each export, differs).

mod support;

use serde_json::{json, Value};
use shared::jobs::worker::Outcome;
use support::{call, download, jobs_state, new_org, seed_contact, token, worker_options, Worker};

/// The synchronous answer's bytes.
async fn sync_file(state: &shared::AppState, tok: &str, path: &str, query: &str) -> Vec<u8> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let a = call(state, "GET", &format!("{path}{sep}delivery=inline&{query}"), tok, None).await;
    assert_eq!(a.status, 200, "{path} {query}: {}", a.body);
    a.bytes
}

/// The file of an export job created with `body`, once the worker ran it.
async fn job_file(state: &shared::AppState, worker: &mut Worker, tok: &str, body: Value) -> Vec<u8> {
    let a = call(state, "POST", "/api/training/exports", tok, Some(body.clone())).await;
    assert_eq!(a.status, 202, "{body}: {}", a.body);
    let id = a.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(worker.drain(state, worker_options()).await, vec![Outcome::Succeeded], "{body}");
    let job = call(state, "GET", &format!("/api/training/exports/{id}"), tok, None).await;
    let (status, _, bytes) = download(job.body["data"]["url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    bytes
}

/// `exportDate` is each export's own moment: the one byte range allowed to differ.
fn without_export_date(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    match text.split_once(r#""exportDate":""#) {
        Some((head, rest)) => format!("{head}\"exportDate\":\"-{}", &rest[rest.find('"').unwrap_or(0)..]).into_bytes(),
        None => bytes.to_vec(),
    }
}

#[tokio::test]
async fn a_jobs_file_equals_the_synchronous_answer_for_every_format_and_parameter() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 4, |i| format!("line {i}, \"quoted\", =formula")).await;
    seed_contact(&state, &tok, "ag", "k2", 3, |i| format!("ligne {i} é")).await;
    let snap = |body: Value| {
        let (state, tok) = (&state, &tok);
        async move {
            let a = call(state, "POST", "/api/training/snapshots", tok, Some(body)).await;
            assert_eq!(a.status, 201, "{}", a.body);
            a.body["data"].clone()
        }
    };
    let first =
        snap(json!({"contactId": "k1", "quality": "good", "category": "sales", "tags": ["a", "b"], "notes": "n"}))
            .await;
    snap(json!({"contactId": "k2", "quality": "bad", "tags": ["a"]})).await;
    // Only the customer's first message: no assistant turn, so `openai` skips it.
    snap(json!({"contactId": "k1", "messageIds": ["m00000"], "category": "sales"})).await;
    let archived = snap(json!({"contactId": "k2", "quality": "good"})).await;
    let patched = call(
        &state,
        "PATCH",
        &format!("/api/training/snapshots/{}", archived["_id"].as_str().unwrap()),
        &tok,
        Some(json!({"isArchived": true})),
    )
    .await;
    assert_eq!(patched.status, 200);
    let created = first["createdAt"].as_str().unwrap();
    let second = format!("{}.000Z", &created[..19]);

    // (query of the synchronous route, body of the job)
    let params: Vec<(String, Value)> = vec![
        (String::new(), json!({})),
        ("quality=good".into(), json!({"quality": "good"})),
        ("quality=%20good%20&category=sales".into(), json!({"quality": " good ", "category": "sales"})),
        ("tag=a&tag=b&tag=a".into(), json!({"tags": ["a", "b", "a"]})),
        ("tag=a&tag=".into(), json!({"tags": ["a", ""]})),
        ("includeArchived=true".into(), json!({"includeArchived": true})),
        ("includeArchived=false".into(), json!({"includeArchived": false})),
        (format!("from={second}"), json!({"from": second})),
        (format!("from={created}&to={created}"), json!({"from": created, "to": created})),
        ("to=2000-01-01T00:00:00Z".into(), json!({"to": "2000-01-01T00:00:00Z"})),
        ("from=2026-01-01T00:00:00.0001Z".into(), json!({"from": "2026-01-01T00:00:00.0001Z"})),
        ("contactId=k2&includeArchived=true".into(), json!({"contactId": "k2", "includeArchived": true})),
        ("system=".into(), json!({"system": ""})),
        ("system=%20%20".into(), json!({"system": "  "})),
        ("system=Be%20kind%2C%20%22brief%22".into(), json!({"system": "Be kind, \"brief\""})),
    ];
    for format in ["json", "jsonl", "openai", "csv"] {
        for (query, body) in &params {
            let mut body = body.clone();
            body["format"] = json!(format);
            let sync = sync_file(&state, &tok, &format!("/api/training/export?format={format}"), query).await;
            let job = job_file(&state, &mut worker, &tok, body.clone()).await;
            assert_eq!(
                String::from_utf8_lossy(&without_export_date(&job)),
                String::from_utf8_lossy(&without_export_date(&sync)),
                "{format} {query}"
            );
            if format == "openai" {
                assert!(
                    !String::from_utf8_lossy(&job).contains(r#"{"role":"system","content":""#),
                    "no empty system message: {body}"
                );
            }
        }
    }

    // Conversations: an agent's, windowed and limited, and one.
    let convo_params: Vec<(String, Value)> = vec![
        (String::new(), json!({})),
        ("limit=1".into(), json!({"limit": 1})),
        (
            "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00%2B01:00".into(),
            json!({"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00+01:00"}),
        ),
        ("to=2000-01-01T00:00:00Z".into(), json!({"to": "2000-01-01T00:00:00Z"})),
    ];
    for format in ["json", "csv"] {
        for (query, body) in &convo_params {
            let mut body = body.clone();
            body["source"] = json!("conversations");
            body["agentId"] = json!("ag");
            body["format"] = json!(format);
            let sync = sync_file(&state, &tok, &format!("/agents/ag/convos/export?format={format}"), query).await;
            let job = job_file(&state, &mut worker, &tok, body).await;
            assert_eq!(String::from_utf8_lossy(&job), String::from_utf8_lossy(&sync), "conversations {format} {query}");
        }
        let sync = sync_file(&state, &tok, &format!("/agents/ag/convos/convo-k1/export?format={format}"), "").await;
        let body = json!({"source": "conversations", "agentId": "ag", "convoId": "convo-k1", "format": format});
        let job = job_file(&state, &mut worker, &tok, body).await;
        assert_eq!(String::from_utf8_lossy(&job), String::from_utf8_lossy(&sync), "conversation {format}");
    }
}
