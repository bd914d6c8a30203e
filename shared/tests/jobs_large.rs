//! A 100,000-snapshot export job across several worker invocations (a forced small budget), one
//! of them killed mid-export and retried: the file is identical to a single-pass export,
//! progress only grows, and no multipart upload is left behind.

mod support;

use shared::jobs::worker::{Options, Outcome};
use shared::jobs::{JobRef, JobStore, Status};
use shared::keys::Org;
use shared::snapshots::store::SnapshotStore;
use support::{call, download, jobs_state, new_org, tiny_snapshot, token, uploads_in_progress};

const SNAPSHOTS: usize = 100_000;

#[tokio::test]
async fn a_100k_export_job_resumes_across_invocations_and_after_a_crash_with_an_identical_file() {
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
    // The second invocation is killed instead: it gets time to checkpoint a second part, then
    // S3 fails on the third and the process dies without cleaning up (Lambda then retries it).
    let clock = std::time::Instant::now();
    let a = call(&state, "POST", "/api/training/exports", &tok, Some(serde_json::json!({"format": "jsonl"}))).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.body["data"]["id"].as_str().unwrap().to_string();
    let jobs = JobStore::new(&state);
    let zero = Options { budget: std::time::Duration::ZERO, lifetime: None, fault_after_parts: None };
    let killed = Options { budget: std::time::Duration::from_secs(600), lifetime: None, fault_after_parts: Some(2) };
    let (mut invocations, mut progress, mut crashed) = (0, vec![0u64], false);
    let mut queue: Vec<JobRef> = worker.pending();
    while let Some(event) = queue.pop() {
        invocations += 1;
        if invocations == 2 {
            assert!(shared::jobs::worker::run(&state, &event, killed.clone()).await.is_err(), "the invocation dies");
            let job = jobs.get(&Org::stored(org.as_str()), &id).await.unwrap().unwrap();
            assert_eq!(job.status, Status::Running);
            assert_eq!(job.failures, 1);
            assert_eq!(job.checkpoint.as_ref().map(|c| c.parts), Some(2), "its second part was checkpointed");
            assert_eq!(uploads_in_progress(&state, &org).await, 1, "the upload is kept for the retry");
            progress.push(job.processed);
            crashed = true;
            queue.push(event); // Lambda's retry of the failed asynchronous invocation
            continue;
        }
        let outcome = shared::jobs::worker::run(&state, &event, zero.clone()).await.unwrap();
        let job = jobs.get(&Org::stored(org.as_str()), &id).await.unwrap().unwrap();
        progress.push(job.processed);
        if outcome == Outcome::Paused {
            assert_eq!(job.status, Status::Running);
            assert!(job.checkpoint.is_some());
        }
        queue.extend(worker.pending());
    }
    eprintln!("job: {invocations} invocations in {:?}, progress {progress:?}", clock.elapsed());
    assert!(crashed);
    assert!(invocations >= 4, "{invocations} invocations");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "processed only grows: {progress:?}");
    assert!(
        progress.windows(2).filter(|w| w[0] < w[1]).count() >= 3,
        "progress was reported along the way: {progress:?}"
    );
    let done = call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["processed"], SNAPSHOTS);
    assert_eq!(done["total"], SNAPSHOTS);
    let (_, _, file) = download(done["url"].as_str().unwrap()).await;
    assert_eq!(done["bytes"], file.len());
    assert!(file == expected, "the resumed job's file is byte-identical to the single pass");
    // Its digest, computed across the invocations (the crash included), is the file's.
    let sha256: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&expected).iter().map(|b| format!("{b:02x}")).collect()
    };
    let listed = &done["files"][0];
    assert_eq!(done["files"].as_array().map(Vec::len), Some(1), "{done}");
    assert_eq!(listed["sha256"], sha256.as_str());
    assert_eq!(listed["bytes"], expected.len());
    assert_eq!(listed["rows"], SNAPSHOTS);
    let (status, _, manifest) = download(done["manifest"]["url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["files"][0]["sha256"], sha256.as_str(), "{manifest}");
    assert_eq!(manifest["files"][0]["s3Uri"], listed["s3Uri"]);
    assert_eq!(manifest["counts"]["written"], SNAPSHOTS);
    assert_eq!(manifest["counts"]["read"], SNAPSHOTS);
    assert_eq!(uploads_in_progress(&state, &org).await, 0, "no orphaned multipart upload");
}
