//! Export jobs against the emulator: the job life cycle, its file, tenancy, listing, bad
//! requests, conversation jobs, the synchronous fallback, and stale jobs.

mod support;

use shared::keys::Org;
use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use shared::jobs::worker::Outcome;
use shared::jobs::{job_sk, jobs_pk};
use support::{
    call, create_snapshot, download, jobs_state, jobs_state_with, new_org, seed_contact, token, uploads_in_progress,
    worker_options, Answer,
};

async fn create_job(state: &shared::AppState, tok: &str, body: Value) -> Answer {
    let a = call(state, "POST", "/api/training/exports", tok, Some(body)).await;
    assert_eq!(a.status, 202, "{}", a.body);
    a
}

async fn get_job(state: &shared::AppState, tok: &str, id: &str) -> Value {
    let a = call(state, "GET", &format!("/api/training/exports/{id}"), tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["data"].clone()
}

/// Sets attributes of a stored job directly, as time passing or a crashed worker would leave them.
async fn age_job(state: &shared::AppState, org: &str, id: &str, set: &[(&str, AttributeValue)]) {
    let mut expr = Vec::new();
    let mut values = HashMap::new();
    for (i, (name, value)) in set.iter().enumerate() {
        expr.push(format!("{name} = :v{i}"));
        values.insert(format!(":v{i}"), value.clone());
    }
    state
        .dynamo
        .update_item()
        .table_name(&state.config.table_name)
        .key("PK", AttributeValue::S(jobs_pk(&Org::stored(org))))
        .key("SK", AttributeValue::S(job_sk(id)))
        .update_expression(format!("SET {}", expr.join(", ")))
        .set_expression_attribute_values(Some(values))
        .send()
        .await
        .unwrap();
}

fn ms_ago(ms: i64) -> AttributeValue {
    AttributeValue::N((shared::jobs::now_ms() - ms).to_string())
}

#[tokio::test]
async fn a_job_runs_in_the_background_and_its_file_equals_the_synchronous_export() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "c1", 4, |i| format!("line {i}")).await;
    for quality in ["good", "bad", "good"] {
        create_snapshot(&state, &tok, json!({"contactId": "c1", "quality": quality, "tags": ["t"]})).await;
    }

    let a = create_job(&state, &tok, json!({"format": "jsonl", "quality": "good"})).await;
    let job = &a.body["data"];
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(a.headers["location"], format!("/api/training/exports/{id}").as_str());
    assert_eq!(a.body["success"], true);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["source"], "training");
    assert_eq!(job["params"]["format"], "jsonl");
    assert_eq!(job["params"]["filters"]["quality"], "good");
    assert_eq!(job["processed"], 0);
    assert!(job["url"].is_null());

    let queued = get_job(&state, &tok, &id).await;
    assert_eq!(queued["status"], "queued", "not run until the worker takes it");
    assert!(queued["url"].is_null() && queued["expiresAt"].is_null());

    // As if the job had waited three days before it ran: its file is younger than the job.
    let three_days_ago = shared::time::to_rfc3339(chrono::Utc::now() - chrono::Duration::days(3));
    age_job(&state, &org, &id, &[("createdAt", AttributeValue::S(three_days_ago))]).await;
    assert_eq!(worker.drain(&state, worker_options()).await, vec![Outcome::Succeeded]);
    let done = get_job(&state, &tok, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["processed"], 2);
    assert_eq!(done["total"], 2);
    for field in ["startedAt", "finishedAt", "fileExpiresAt", "url", "expiresAt"] {
        assert!(done[field].is_string(), "{field}: {done}");
    }
    // The retention counts as the bucket's lifecycle rule counts it: from the file's creation
    // (after the job started), plus the days, rounded up to the next midnight UTC.
    let at = |field: &str| shared::time::parse_rfc3339(done[field].as_str().unwrap()).unwrap();
    let days = state.config.export_retention_days;
    let file_expires = at("fileExpiresAt");
    assert_eq!(file_expires.time(), chrono::NaiveTime::MIN, "S3 expires objects at midnight UTC");
    assert!(shared::jobs::lifecycle_expiry(at("startedAt"), days) <= file_expires, "{done}");
    assert!(file_expires <= shared::jobs::lifecycle_expiry(at("finishedAt"), days), "{done}");
    let url = done["url"].as_str().unwrap();
    assert!(!url.contains(&id), "the download URL cannot be derived from the job id");

    let (status, headers, file) = download(url).await;
    assert_eq!(status, 200);
    assert_eq!(done["bytes"], file.len());
    assert!(headers["content-disposition"].to_str().unwrap().contains(done["fileName"].as_str().unwrap()));
    let sync = call(&state, "GET", "/api/training/export?format=jsonl&quality=good", &tok, None).await;
    assert_eq!(sync.status, 200);
    assert_eq!(file, sync.bytes, "the job's file is the synchronous export's");

    // A second delivery of the same event (at-least-once) does nothing.
    state.jobs.dispatch(&shared::jobs::JobRef { organization_id: org.clone(), job_id: id.clone() }).await.unwrap();
    assert_eq!(worker.drain(&state, worker_options()).await, vec![Outcome::Skipped]);

    // Another organization: 404 exactly like an unknown id, and an empty list.
    let other = token(&new_org());
    let a = call(&state, "GET", &format!("/api/training/exports/{id}"), &other, None).await;
    let unknown =
        call(&state, "GET", &format!("/api/training/exports/{}", shared::ids::object_id()), &other, None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body, unknown.body);
    assert_eq!(a.body["success"], false);
    let list = call(&state, "GET", "/api/training/exports", &other, None).await;
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn jobs_list_newest_first_with_a_cursor_bound_to_the_organization() {
    let (state, _worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    let mut ids = Vec::new();
    for format in ["json", "csv", "openai"] {
        ids.push(
            create_job(&state, &tok, json!({"format": format})).await.body["data"]["id"].as_str().unwrap().to_string(),
        );
    }
    let first = call(&state, "GET", "/api/training/exports?limit=2", &tok, None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let page: Vec<&str> = first.body["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(page, vec![ids[2].as_str(), ids[1].as_str()]);
    let cursor = first.body["nextCursor"].as_str().unwrap();
    let second = call(&state, "GET", &format!("/api/training/exports?limit=2&cursor={cursor}"), &tok, None).await;
    let page: Vec<&str> = second.body["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(page, vec![ids[0].as_str()]);
    assert!(second.body["nextCursor"].is_null());
    let stolen = call(&state, "GET", &format!("/api/training/exports?cursor={cursor}"), &token(&new_org()), None).await;
    assert_eq!(stolen.status, 400, "{}", stolen.body);

    // Walking every page one job at a time sees every job once.
    for format in ["jsonl", "json"] {
        ids.push(
            create_job(&state, &tok, json!({"format": format})).await.body["data"]["id"].as_str().unwrap().to_string(),
        );
    }
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/training/exports?limit=1&cursor={c}"),
            None => "/api/training/exports?limit=1".to_string(),
        };
        let page = call(&state, "GET", &uri, &tok, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(page.body["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match page.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn bad_job_requests_answer_400_and_write_nothing() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    for (body, needle) in [
        (json!({"format": "xml"}), "format"),
        (json!({"format": "jsonl", "colour": "red"}), "colour"),
        (json!({"source": "conversations"}), "agentId"),
        (json!({"source": "conversations", "agentId": "ag", "quality": "good"}), "quality"),
        (json!({"agentId": "ag", "format": "jsonl"}), "format"),
        (json!({"source": "training", "limit": 5}), "limit"),
        (json!({"from": "yesterday"}), "from"),
        (json!({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}), "from"),
        (json!({"source": "everything"}), "source"),
        (json!({"agentId": "ag", "limit": 0}), "limit"),
    ] {
        let a = call(&state, "POST", "/api/training/exports", &tok, Some(body.clone())).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(a.body["success"], false);
        assert_eq!(a.body["error"], "VALIDATION_ERROR", "{}", a.body);
        assert!(a.body["message"].as_str().unwrap().contains(needle), "{body}: {}", a.body);
    }
    let a = support::send(
        &state,
        "POST",
        "/api/training/exports",
        &[("authorization", &format!("Bearer {tok}"))],
        b"format=json",
    )
    .await;
    assert_eq!(a.status, 415, "{}", a.body);
    let a =
        support::send(&state, "POST", "/api/training/exports", &[("content-type", "application/json")], b"{}").await;
    assert_eq!(a.status, 401);
    assert!(worker.pending().is_empty(), "no job was dispatched");
    let list = call(&state, "GET", "/api/training/exports", &tok, None).await;
    assert_eq!(list.body["data"], json!([]), "no job was stored");
    let a = call(&state, "GET", "/api/training/exports/not-an-id", &tok, None).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn conversation_jobs_equal_the_synchronous_exports_and_a_missing_conversation_fails_with_a_reason() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    for contact in ["k1", "k2", "k3"] {
        seed_contact(&state, &tok, "ag", contact, 3, |i| format!("=cmd {i}, \"q\"")).await;
    }
    for (body, sync) in [
        (json!({"agentId": "ag", "format": "csv"}), "/agents/ag/convos/export?format=csv"),
        (json!({"agentId": "ag", "limit": 2}), "/agents/ag/convos/export?limit=2"),
        (json!({"agentId": "ag", "convoId": "convo-k2", "format": "json"}), "/agents/ag/convos/convo-k2/export"),
    ] {
        let id = create_job(&state, &tok, body.clone()).await.body["data"]["id"].as_str().unwrap().to_string();
        assert_eq!(worker.drain(&state, worker_options()).await, vec![Outcome::Succeeded]);
        let done = get_job(&state, &tok, &id).await;
        assert_eq!(done["source"], "conversations");
        let (_, _, file) = download(done["url"].as_str().unwrap()).await;
        let expected = call(&state, "GET", sync, &tok, None).await;
        assert_eq!(expected.status, 200);
        assert_eq!(file, expected.bytes, "{body}");
    }
    // A conversation that does not exist answers 404 at once, as the synchronous route does.
    let a =
        call(&state, "POST", "/api/training/exports", &tok, Some(json!({"agentId": "ag", "convoId": "nope"}))).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.body["message"], "Conversation not found");
    // One removed after the job was created fails the job with that reason.
    let id = create_job(&state, &tok, json!({"agentId": "ag", "convoId": "convo-k3"})).await.body["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    state
        .dynamo
        .delete_item()
        .table_name(&state.config.table_name)
        .key("PK", AttributeValue::S(shared::keys::agent(&Org::stored(org.as_str()), "ag")))
        .key("SK", AttributeValue::S(shared::convos::store::convo_sk("convo-k3")))
        .send()
        .await
        .unwrap();
    assert_eq!(worker.drain(&state, worker_options()).await, vec![Outcome::Failed]);
    let failed = get_job(&state, &tok, &id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "Conversation not found");
    assert!(failed["url"].is_null());
}

#[tokio::test]
async fn a_synchronous_export_over_its_time_budget_continues_as_a_job() {
    let (state, mut worker) = jobs_state_with(|c| c.export_sync_budget = std::time::Duration::ZERO).await;
    let org = new_org();
    let tok = token(&org);
    // More than one page (500 snapshots), so the export is not done when the budget is checked.
    let store = shared::snapshots::store::SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let snaps = (0..520).map(|i| support::tiny_snapshot(&org, i)).collect();
    store.import(snaps).await.unwrap();

    let a = call(&state, "GET", "/api/training/export?format=jsonl", &tok, None).await;
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.bytes));
    let id = a.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(a.headers["location"], format!("/api/training/exports/{id}").as_str());
    assert_eq!(a.body["data"]["trigger"], "fallback");
    assert_eq!(a.body["data"]["params"]["format"], "jsonl");
    assert_eq!(worker.drain(&state, worker_options()).await, vec![Outcome::Succeeded]);
    let done = get_job(&state, &tok, &id).await;
    assert_eq!(done["processed"], 520);
    let (_, _, file) = download(done["url"].as_str().unwrap()).await;

    let (unhurried, _) = jobs_state().await;
    let sync = call(&unhurried, "GET", "/api/training/export?format=jsonl", &tok, None).await;
    assert_eq!(sync.status, 200);
    assert_eq!(file, sync.bytes);
    // Nothing of the abandoned attempt is left behind.
    assert_eq!(uploads_in_progress(&state, &org).await, 0);
}

#[tokio::test]
async fn a_stale_job_is_handed_to_the_worker_again_and_fails_with_a_reason_after_too_many_failures() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    snapshot_for_contact(&state, &tok).await;

    // The hand-over was lost (a throttled Invoke, a lost event): the job sits queued.
    let id =
        create_job(&state, &tok, json!({"format": "jsonl"})).await.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(worker.pending().len(), 1);
    assert_eq!(get_job(&state, &tok, &id).await["status"], "queued");
    assert!(worker.pending().is_empty(), "a recently dispatched job is left alone");
    age_job(&state, &org, &id, &[("dispatchedAt", ms_ago(200_000))]).await;
    assert_eq!(get_job(&state, &tok, &id).await["status"], "queued");
    assert_eq!(worker.pending().len(), 1, "the stale job was handed over again");
    let again = call(&state, "GET", "/api/training/exports", &tok, None).await;
    assert_eq!(again.status, 200);
    assert!(worker.pending().is_empty(), "and only once");

    // A worker that crashed while holding the lease: its lease runs out, then a read resumes it.
    let store = shared::jobs::JobStore::new(&state);
    assert!(store
        .claim(&Org::stored(org.as_str()), &id, "crashed-invocation", shared::jobs::now_ms() + 60_000)
        .await
        .unwrap()
        .is_some());
    assert_eq!(get_job(&state, &tok, &id).await["status"], "running");
    assert!(worker.pending().is_empty(), "a live lease is respected");
    age_job(&state, &org, &id, &[("leaseUntil", ms_ago(130_000)), ("dispatchedAt", ms_ago(200_000))]).await;
    get_job(&state, &tok, &id).await;
    assert_eq!(worker.drain(&state, worker_options()).await, vec![Outcome::Succeeded]);
    assert_eq!(get_job(&state, &tok, &id).await["status"], "succeeded");

    // An invocation killed while holding the lease (time limit, memory) is counted by the next.
    let id = create_job(&state, &tok, json!({"format": "json"})).await.body["data"]["id"].as_str().unwrap().to_string();
    worker.pending();
    assert!(store
        .claim(&Org::stored(org.as_str()), &id, "killed-invocation", shared::jobs::now_ms() + 60_000)
        .await
        .unwrap()
        .is_some());
    age_job(&state, &org, &id, &[("leaseUntil", ms_ago(1))]).await;
    let event = shared::jobs::JobRef { organization_id: org.clone(), job_id: id.clone() };
    assert_eq!(shared::jobs::worker::run(&state, &event, worker_options()).await.unwrap(), Outcome::Succeeded);
    let stored = store.get(&Org::stored(org.as_str()), &id).await.unwrap().unwrap();
    assert_eq!(stored.failures, 1, "the killed invocation was counted");
    // ...and one that is killed every time ends failed instead of being retried forever.
    let id = create_job(&state, &tok, json!({"format": "json"})).await.body["data"]["id"].as_str().unwrap().to_string();
    worker.pending();
    assert!(store
        .claim(&Org::stored(org.as_str()), &id, "killed-invocation", shared::jobs::now_ms() + 60_000)
        .await
        .unwrap()
        .is_some());
    age_job(
        &state,
        &org,
        &id,
        &[("leaseUntil", ms_ago(1)), ("failures", AttributeValue::N((shared::jobs::MAX_FAILURES - 1).to_string()))],
    )
    .await;
    let event = shared::jobs::JobRef { organization_id: org.clone(), job_id: id.clone() };
    assert_eq!(shared::jobs::worker::run(&state, &event, worker_options()).await.unwrap(), Outcome::Failed);
    let failed = get_job(&state, &tok, &id).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["reason"].as_str().unwrap().contains("time limit or memory"), "{failed}");

    // A job whose invocations keep failing ends failed, with a reason, instead of running forever.
    let id = create_job(&state, &tok, json!({"format": "csv"})).await.body["data"]["id"].as_str().unwrap().to_string();
    worker.pending();
    age_job(
        &state,
        &org,
        &id,
        &[
            ("failures", AttributeValue::N(shared::jobs::MAX_FAILURES.to_string())),
            ("lastError", AttributeValue::S("Storage is busy; retry shortly".into())),
            ("dispatchedAt", ms_ago(200_000)),
        ],
    )
    .await;
    let failed = get_job(&state, &tok, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("failed 5 times") && reason.contains("Storage is busy"), "{reason}");
    assert!(worker.pending().is_empty());
}

async fn snapshot_for_contact(state: &shared::AppState, tok: &str) {
    seed_contact(state, tok, "ag", "c1", 2, |i| format!("hello {i}")).await;
    create_snapshot(state, tok, json!({"contactId": "c1"})).await;
}

#[tokio::test]
async fn a_conversation_job_limit_is_any_json_integer_and_nothing_else() {
    let (state, _worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "agent-int", "contact-int", 2, |i| format!("hello {i}")).await;
    // JSON Schema's integer includes 5.0 (what openapi.yaml promises).
    for limit in [json!(5), json!(5.0)] {
        let a = call(
            &state,
            "POST",
            "/api/training/exports",
            &tok,
            Some(json!({"source": "conversations", "agentId": "agent-int", "limit": limit})),
        )
        .await;
        assert_eq!(a.status, 202, "limit {limit}: {}", a.body);
    }
    for limit in [json!(5.5), json!(-1), json!("5")] {
        let a = call(
            &state,
            "POST",
            "/api/training/exports",
            &tok,
            Some(json!({"source": "conversations", "agentId": "agent-int", "limit": limit})),
        )
        .await;
        assert_eq!(a.status, 400, "limit {limit}: {}", a.body);
        assert_eq!(a.body["success"], false);
    }
}
