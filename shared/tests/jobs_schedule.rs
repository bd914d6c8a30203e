//! The scheduled export: one incremental JSONL export per organization with changes, safe to
//! deliver twice, and a failed run leaves the watermark where it was.

mod support;

use serde_json::{json, Value};
use shared::jobs::schedule::{watermark, RunSummary, ScheduledEvent};
use shared::jobs::worker::Outcome;
use shared::keys::Org;
use support::{call, create_snapshot, download, jobs_state_with, new_org, seed_contact, token, worker_options, Worker};

/// A scheduled run walks every organization: this file's runs take turns, so that one test's
/// run does not start (or defer) another's jobs.
static RUNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn jobs(state: &shared::AppState, tok: &str) -> Vec<Value> {
    let a = call(state, "GET", "/api/training/exports", tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["data"].as_array().unwrap().clone()
}

/// The ids in a scheduled export's file, in order.
async fn exported_ids(job: &Value) -> Vec<String> {
    let (status, _, file) = download(job["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    String::from_utf8(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect()
}

/// A scheduled time strictly after every write so far (ids and job ids carry seconds).
async fn next_tick() -> ScheduledEvent {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ScheduledEvent { scheduled_time: Some(shared::time::now_rfc3339()), ..Default::default() }
}

/// A run as the deployed functions make it: the coordinator, then its batches in the worker
/// (the jobs they make wait in `worker.pending()`). Answers the run's summary after its batches.
async fn run(state: &shared::AppState, worker: &mut Worker, event: ScheduledEvent) -> RunSummary {
    let handed_out = shared::jobs::schedule::run(state, event).await.expect("coordinator");
    worker.run_batches(state).await;
    shared::jobs::schedule::summary(state, &handed_out.scheduled_time).await.unwrap().expect("the run's item")
}

#[tokio::test]
async fn scheduled_exports_are_incremental_idempotent_and_resume_after_a_failed_run() {
    let _turn = RUNS.lock().await;
    let (state, mut worker) = jobs_state_with(|c| c.schedule_settle = std::time::Duration::ZERO).await;
    let (org_a, org_b, quiet) = (new_org(), new_org(), new_org());
    let (tok_a, tok_b, tok_quiet) = (token(&org_a), token(&org_b), token(&quiet));
    seed_contact(&state, &tok_a, "ag", "ka", 2, |i| format!("a {i}")).await;
    seed_contact(&state, &tok_b, "ag", "kb", 2, |i| format!("b {i}")).await;
    let a1 = create_snapshot(&state, &tok_a, json!({"contactId": "ka"})).await;
    let a2 = create_snapshot(&state, &tok_a, json!({"contactId": "ka", "quality": "good"})).await;
    let archived = create_snapshot(&state, &tok_a, json!({"contactId": "ka"})).await;
    let a = call(
        &state,
        "PATCH",
        &format!("/api/training/snapshots/{archived}"),
        &tok_a,
        Some(json!({"isArchived": true})),
    )
    .await;
    assert_eq!(a.status, 200);
    let b1 = create_snapshot(&state, &tok_b, json!({"contactId": "kb"})).await;

    // The same event delivered twice: one export per organization.
    let first = next_tick().await;
    let summary = run(&state, &mut worker, first.clone()).await;
    assert!(summary.jobs_created >= 2 && summary.finished, "{summary:?}");
    assert_eq!(summary.batches_finished, summary.batches, "{summary:?}");
    let again = run(&state, &mut worker, first.clone()).await;
    assert_eq!(again, summary, "a redelivered event hands nothing out again");
    assert!(worker.drain(&state, worker_options()).await.contains(&Outcome::Succeeded));
    let after_done = run(&state, &mut worker, first.clone()).await;
    assert_eq!(after_done, summary);
    assert!(
        worker.pending().iter().all(|e| e.organization_id != org_a && e.organization_id != org_b),
        "nothing more to do for A or B"
    );
    let (jobs_a, jobs_b) = (jobs(&state, &tok_a).await, jobs(&state, &tok_b).await);
    assert_eq!(jobs_a.len(), 1, "{jobs_a:?}");
    assert_eq!(jobs_b.len(), 1);
    assert!(jobs(&state, &tok_quiet).await.is_empty(), "an organization without snapshots gets nothing");
    let job = &jobs_a[0];
    assert_eq!(job["trigger"], "schedule");
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["params"]["format"], "jsonl");
    assert!(job["fileName"].as_str().unwrap().starts_with("training-changes-"));
    assert!(job["fileExpiresAt"].is_string());
    let mut ids = exported_ids(job).await;
    ids.sort();
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort();
    assert_eq!(ids, want, "every non-archived snapshot of A, nothing archived");
    assert_eq!(exported_ids(&jobs_b[0]).await, vec![b1.clone()]);
    let mark = watermark(&state, &Org::stored(org_a.as_str())).await.unwrap().unwrap();
    assert_eq!(Some(mark.as_str()), jobs_a[0]["params"]["changed"]["upTo"].as_str());

    // Changes since: exactly the new and the changed snapshots.
    let a =
        call(&state, "PATCH", &format!("/api/training/snapshots/{a1}"), &tok_a, Some(json!({"quality": "bad"}))).await;
    assert_eq!(a.status, 200);
    let a3 = create_snapshot(&state, &tok_a, json!({"contactId": "ka"})).await;
    let second = next_tick().await;
    let summary = run(&state, &mut worker, second).await;
    assert_eq!(summary.jobs_created, 1, "only A changed: {summary:?}");
    worker.drain(&state, worker_options()).await;
    let jobs_a = jobs(&state, &tok_a).await;
    assert_eq!(jobs_a.len(), 2);
    assert_eq!(exported_ids(&jobs_a[0]).await, vec![a1.clone(), a3.clone()], "oldest change first");
    assert_eq!(jobs(&state, &tok_b).await.len(), 1);

    // A failed run leaves the watermark where it was; the next run covers the gap.
    let mark_b = watermark(&state, &Org::stored(org_b.as_str())).await.unwrap();
    let b2 = create_snapshot(&state, &tok_b, json!({"contactId": "kb"})).await;
    let third = next_tick().await;
    run(&state, &mut worker, third).await;
    let lost: Vec<_> = worker.pending(); // the invocations never run...
    assert_eq!(lost.len(), 1);
    let failed_id = jobs(&state, &tok_b).await[0]["id"].as_str().unwrap().to_string();
    // ...and after enough failed attempts the job fails for good.
    state
        .dynamo
        .update_item()
        .table_name(&state.config.table_name)
        .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(shared::jobs::jobs_pk(&Org::stored(org_b.as_str()))))
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S(shared::jobs::job_sk(&failed_id)))
        .update_expression("SET failures = :f, dispatchedAt = :old")
        .expression_attribute_values(
            ":f",
            aws_sdk_dynamodb::types::AttributeValue::N(shared::jobs::MAX_FAILURES.to_string()),
        )
        .expression_attribute_values(":old", aws_sdk_dynamodb::types::AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(jobs(&state, &tok_b).await[0]["status"], "failed");
    assert_eq!(
        watermark(&state, &Org::stored(org_b.as_str())).await.unwrap(),
        mark_b,
        "a failed run does not move the watermark"
    );
    let b3 = create_snapshot(&state, &tok_b, json!({"contactId": "kb"})).await;
    let fourth = next_tick().await;
    run(&state, &mut worker, fourth).await;
    worker.drain(&state, worker_options()).await;
    let latest = &jobs(&state, &tok_b).await[0];
    assert_eq!(latest["status"], "succeeded");
    assert_eq!(exported_ids(latest).await, vec![b2, b3], "the gap of the failed run is covered");
}

#[tokio::test]
async fn a_run_while_the_last_scheduled_job_still_runs_starts_no_overlapping_window() {
    let _turn = RUNS.lock().await;
    let (state, mut worker) = jobs_state_with(|c| c.schedule_settle = std::time::Duration::ZERO).await;
    let tok = token(&new_org());
    seed_contact(&state, &tok, "ag", "k", 2, |i| format!("line {i}")).await;
    let first_snapshot = create_snapshot(&state, &tok, json!({"contactId": "k"})).await;
    run(&state, &mut worker, next_tick().await).await;
    // The first run's job is slow: it has not run when the next run comes.
    let slow = worker.pending();
    let later = create_snapshot(&state, &tok, json!({"contactId": "k"})).await;
    let summary = run(&state, &mut worker, next_tick().await).await;
    assert!(summary.deferred >= 1, "{summary:?}");
    assert_eq!(jobs(&state, &tok).await.len(), 1, "no second window over the same changes");
    worker.pending(); // the first job handed to the worker again by the sweep: the same job
    for event in &slow {
        assert_eq!(shared::jobs::worker::run(&state, event, worker_options()).await.unwrap(), Outcome::Succeeded);
    }
    // The next run starts where the slow job's window ended.
    run(&state, &mut worker, next_tick().await).await;
    worker.drain(&state, worker_options()).await;
    let all = jobs(&state, &tok).await;
    assert_eq!(all.len(), 2);
    assert_eq!(exported_ids(&all[1]).await, vec![first_snapshot.clone()]);
    assert_eq!(exported_ids(&all[0]).await, vec![later], "each change in one window");
    assert_eq!(all[0]["params"]["changed"]["after"], all[1]["params"]["changed"]["upTo"]);
}

/// A scheduled export's lines.
async fn exported_lines(job: &Value) -> Vec<Value> {
    let (status, _, file) = download(job["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    String::from_utf8(file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn deletions_and_archives_reach_the_next_incremental_export_as_records_until_their_ttl() {
    let _turn = RUNS.lock().await;
    let (state, mut worker) = jobs_state_with(|c| c.schedule_settle = std::time::Duration::ZERO).await;
    let tok = token(&new_org());
    seed_contact(&state, &tok, "ag", "k", 2, |i| format!("line {i}")).await;
    let kept = create_snapshot(&state, &tok, json!({"contactId": "k"})).await;
    let deleted = create_snapshot(&state, &tok, json!({"contactId": "k"})).await;
    let archived = create_snapshot(&state, &tok, json!({"contactId": "k"})).await;
    run(&state, &mut worker, next_tick().await).await;
    worker.drain(&state, worker_options()).await;
    assert_eq!(exported_ids(&jobs(&state, &tok).await[0]).await.len(), 3);

    let a = call(&state, "DELETE", &format!("/api/training/snapshots/{deleted}"), &tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a =
        call(&state, "PATCH", &format!("/api/training/snapshots/{archived}"), &tok, Some(json!({"isArchived": true})))
            .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Created and deleted between two runs: never exported, so no record either.
    let fleeting = create_snapshot(&state, &tok, json!({"contactId": "k"})).await;
    call(&state, "DELETE", &format!("/api/training/snapshots/{fleeting}"), &tok, None).await;
    let added = create_snapshot(&state, &tok, json!({"contactId": "k"})).await;
    run(&state, &mut worker, next_tick().await).await;
    worker.drain(&state, worker_options()).await;
    let job = jobs(&state, &tok).await[0].clone();
    let lines = exported_lines(&job).await;
    let records: Vec<&Value> = lines.iter().filter(|l| l["deleted"] == true).collect();
    let mut recorded: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    recorded.sort();
    let mut want = vec![deleted.as_str(), archived.as_str()];
    want.sort();
    assert_eq!(recorded, want, "{lines:?}");
    for r in &records {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["deleted", "deletedAt", "id"], "no customer data in {r}");
    }
    let written: Vec<&str> =
        lines.iter().filter(|l| l["deleted"].is_null()).map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(written, [added.as_str()]);
    assert!(!lines.iter().any(|l| l["id"] == fleeting.as_str() || l["id"] == kept.as_str()));
    assert_eq!(job["files"][0]["rows"], 3, "rows count every line");

    // A record past its TTL is gone: the next run has nothing to export.
    let (expiring, _) = jobs_state_with(|c| c.deletion_record_for = std::time::Duration::ZERO).await;
    let a = call(&expiring, "DELETE", &format!("/api/training/snapshots/{added}"), &tok, None).await;
    assert_eq!(a.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    run(&state, &mut worker, next_tick().await).await;
    worker.drain(&state, worker_options()).await;
    assert_eq!(jobs(&state, &tok).await.len(), 2, "no export for an expired record");
}
