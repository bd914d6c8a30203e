//! A 100,000-snapshot export job across several worker invocations (a forced small budget),
//! and a worker killed mid-export: both files are identical to a single-pass export, progress
//! only grows, and no multipart upload is left behind.

mod support;

use shared::jobs::worker::{Options, Outcome};
use shared::jobs::{JobRef, JobStore, Status};
use shared::snapshots::store::SnapshotStore;
use support::{call, download, jobs_state, new_org, tiny_snapshot, token};

const SNAPSHOTS: usize = 100_000;

async fn uploads_in_progress(state: &shared::AppState, org: &str) -> usize {
    let out = state
        .s3
        .list_multipart_uploads()
        .bucket(&state.config.bucket_name)
        .prefix(format!("exports/{org}/"))
        .send()
        .await
        .unwrap();
    out.uploads().len()
}

#[tokio::test]
async fn a_100k_export_job_resumes_across_invocations_and_after_a_crash_with_identical_files() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let clock = std::time::Instant::now();
    for start in (0..SNAPSHOTS).step_by(5000) {
        store.import((start..start + 5000).map(|i| tiny_snapshot(&org, i)).collect()).await.unwrap();
    }
    eprintln!("seeded {SNAPSHOTS} snapshots in {:?}", clock.elapsed());

    // The single-pass export: the synchronous route, streamed to S3 (with time to finish).
    let clock = std::time::Instant::now();
    let unhurried = support::state_with(|c| c.export_sync_budget = std::time::Duration::from_secs(3600)).await;
    let sync = call(&unhurried, "GET", "/api/training/export?format=jsonl&delivery=url", &tok, None).await;
    assert_eq!(sync.status, 303, "{}", sync.body);
    let (_, _, expected) = download(sync.headers["location"].to_str().unwrap()).await;
    eprintln!("single pass: {} bytes in {:?}", expected.len(), clock.elapsed());
    assert!(expected.len() > 3 * shared::exports::sink::PART_BYTES, "big enough for several parts");
    assert_eq!(expected.iter().filter(|b| **b == b'\n').count(), SNAPSHOTS);

    // A job with no time budget: every invocation uploads one part, checkpoints and hands over.
    let clock = std::time::Instant::now();
    let a = call(&state, "POST", "/api/training/exports", &tok, Some(serde_json::json!({"format": "jsonl"}))).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.body["data"]["id"].as_str().unwrap().to_string();
    let jobs = JobStore::new(&state);
    let zero = Options { budget: std::time::Duration::ZERO, fault_after_parts: None };
    let (mut invocations, mut progress) = (0, vec![0u64]);
    loop {
        let events = worker.pending();
        if events.is_empty() {
            break;
        }
        for event in events {
            let outcome = shared::jobs::worker::run(&state, &event, zero.clone()).await.unwrap();
            invocations += 1;
            let job = jobs.get(&org, &id).await.unwrap().unwrap();
            progress.push(job.processed);
            if outcome == Outcome::Paused {
                assert_eq!(job.status, Status::Running);
                assert!(job.checkpoint.is_some());
            }
        }
    }
    eprintln!("job: {invocations} invocations in {:?}, progress {progress:?}", clock.elapsed());
    assert!(invocations >= 3, "{invocations} invocations");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "processed only grows: {progress:?}");
    assert!(progress.windows(2).filter(|w| w[0] < w[1]).count() >= 3, "progress was reported along the way: {progress:?}");
    let done = call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["processed"], SNAPSHOTS);
    assert_eq!(done["total"], SNAPSHOTS);
    let (_, _, file) = download(done["url"].as_str().unwrap()).await;
    assert_eq!(done["bytes"], file.len());
    assert!(file == expected, "the resumed job's file is byte-identical to the single pass");

    // A worker killed mid-export: S3 fails after two parts and the invocation dies without
    // cleaning up. The retry resumes from the checkpoint and finishes; nothing is orphaned.
    let a = call(&state, "POST", "/api/training/exports", &tok, Some(serde_json::json!({"format": "jsonl"}))).await;
    let id = a.body["data"]["id"].as_str().unwrap().to_string();
    let event = JobRef { organization_id: org.clone(), job_id: id.clone() };
    worker.pending();
    let crash = Options { budget: std::time::Duration::from_secs(600), fault_after_parts: Some(2) };
    assert!(shared::jobs::worker::run(&state, &event, crash).await.is_err(), "the invocation fails");
    let job = jobs.get(&org, &id).await.unwrap().unwrap();
    assert_eq!(job.status, Status::Running);
    assert_eq!(job.failures, 1);
    assert_eq!(job.checkpoint.as_ref().map(|c| c.parts), Some(2), "two parts were checkpointed");
    assert_eq!(uploads_in_progress(&state, &org).await, 1, "the upload is kept for the retry");
    // Lambda's retry of the failed invocation.
    let outcome = shared::jobs::worker::run(&state, &event, support::worker_options()).await.unwrap();
    assert_eq!(outcome, Outcome::Succeeded);
    let done = call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
    assert_eq!(done["status"], "succeeded", "{done}");
    let (_, _, file) = download(done["url"].as_str().unwrap()).await;
    assert!(file == expected, "the file after the crash and retry is byte-identical to the single pass");
    assert_eq!(uploads_in_progress(&state, &org).await, 0, "no orphaned multipart upload");
}
