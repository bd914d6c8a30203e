//! Train / validation / test splits: the assignment's properties (deterministic, grouped,
//! stable when data is added, stratified within about one group), and split export jobs end to
//! end (one file per split, disjoint, covering every example once, identical when resumed).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use serde_json::{json, Value};
use shared::exports::split::{GroupBy, Groups, Split, SplitSpec, StratifyBy};
use shared::snapshots::Snapshot;
use support::{call, download, jobs_state, new_org, token, worker_options};

/// Snapshot `i` (ids grow with `i`: later is newer) of `contact`, in stratum `quality`.
fn snapshot(i: usize, contact: usize, quality: usize) -> Snapshot {
    let (mut s, _) = support::tiny_snapshot("org-split", i);
    s.id = format!("{i:024x}");
    s.contact.id = format!("contact-{contact}");
    s.quality = Some(["good", "bad", "ok"][quality % 3].to_string());
    s
}

fn spec(validation: f64, test: f64, seed: &str, stratify: bool) -> SplitSpec {
    SplitSpec {
        validation,
        test,
        seed: seed.into(),
        group_by: GroupBy::ContactId,
        stratify_by: stratify.then_some(StratifyBy::Quality),
    }
}

fn assign(spec: &SplitSpec, snaps: &[Snapshot]) -> HashMap<String, Split> {
    let mut groups = Groups::default();
    // In any order: the export reads newest first.
    for s in snaps.iter().rev() {
        groups.add(spec, s);
    }
    groups.assign(spec)
}

/// (contact, stratum) of each snapshot, in creation order.
fn data() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0..60usize, 0..3usize), 1..300)
}

fn shares() -> impl Strategy<Value = (f64, f64)> {
    (0.0..0.5f64, 0.0..0.45f64).prop_filter("something held out", |(v, t)| v + t > 0.01)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn splits_are_deterministic_grouped_stable_and_stratified(rows in data(), (v, t) in shares(), seed in "[a-z]{0,8}", cut in 0.0..1.0f64) {
        let snaps: Vec<Snapshot> = rows.iter().enumerate().map(|(i, (c, q))| snapshot(i, *c, *q)).collect();
        let spec = spec(v, t, &seed, true);
        let all = assign(&spec, &snaps);
        // Deterministic: the same seed and data give the same assignment.
        prop_assert_eq!(&all, &assign(&spec, &snaps));
        // Every group has exactly one split (so a customer's snapshots never straddle files).
        let groups: BTreeSet<&str> = snaps.iter().map(|s| s.contact.id.as_str()).collect();
        prop_assert_eq!(all.len(), groups.len());
        // Stable: adding newer snapshots never moves a group already assigned.
        let older = &snaps[..((snaps.len() as f64 * cut) as usize)];
        for (group, split) in assign(&spec, older) {
            prop_assert_eq!(all.get(&group), Some(&split), "group {} moved when data was added", group);
        }
        // Stratified: in every stratum (of a group's first snapshot), each held-out split has its
        // share of the groups to within 1 + validation + test below and less than one above.
        let mut first: BTreeMap<&str, &Snapshot> = BTreeMap::new();
        for s in &snaps {
            first.entry(s.contact.id.as_str()).or_insert(s);
        }
        let mut strata: BTreeMap<&str, Vec<Split>> = BTreeMap::new();
        for (group, s) in &first {
            strata.entry(s.quality.as_deref().unwrap_or("")).or_default().push(all[*group]);
        }
        for (stratum, splits) in strata {
            let n = splits.len() as f64;
            for (split, share) in [(Split::Validation, v), (Split::Test, t)] {
                let got = splits.iter().filter(|s| **s == split).count() as f64;
                prop_assert!(got < share * n + 1.0 && got > share * n - 1.0 - v - t,
                    "stratum {stratum}: {split:?} has {got} of {n} groups for a share of {share}");
            }
        }
    }
}

#[test]
fn the_seed_decides_and_snapshot_groups_split_each_snapshot() {
    let snaps: Vec<Snapshot> = (0..400).map(|i| snapshot(i, i, i % 3)).collect();
    let a = assign(&spec(0.2, 0.1, "a", false), &snaps);
    let b = assign(&spec(0.2, 0.1, "b", false), &snaps);
    assert_ne!(a, b, "another seed, another split");
    let count = |m: &HashMap<String, Split>, s| m.values().filter(|x| **x == s).count();
    assert_eq!(count(&a, Split::Validation), 80);
    assert_eq!(count(&a, Split::Test), 40);
    let mut by_snapshot = spec(0.5, 0.0, "a", false);
    by_snapshot.group_by = GroupBy::SnapshotId;
    let one_contact: Vec<Snapshot> = (0..10).map(|i| snapshot(i, 7, 0)).collect();
    let split = assign(&by_snapshot, &one_contact);
    assert_eq!(split.len(), 10, "each snapshot is its own group");
    assert_eq!(split.values().filter(|s| **s == Split::Validation).count(), 5);
}

// ---------------------------------------------------------------------------------------------
// Split export jobs

async fn seed(state: &shared::AppState, tok: &str, contacts: usize) {
    for c in 0..contacts {
        support::seed_contact(state, tok, "ag", &format!("k{c}"), 2, |i| format!("contact {c} line {i}")).await;
        for _ in 0..(1 + c % 2) {
            let quality = ["good", "bad"][c % 2];
            let body = json!({"contactId": format!("k{c}"), "quality": quality});
            let a = call(state, "POST", "/api/training/snapshots", tok, Some(body)).await;
            assert_eq!(a.status, 201, "{}", a.body);
        }
    }
}

async fn run_job(state: &shared::AppState, worker: &mut support::Worker, tok: &str, body: Value, budget: u64) -> Value {
    let created = call(state, "POST", "/api/training/exports", tok, Some(body)).await;
    assert_eq!(created.status, 202, "{}", created.body);
    let mut options = worker_options();
    options.budget = std::time::Duration::from_millis(budget);
    let outcomes = worker.drain(state, options).await;
    let id = created.body["data"]["id"].as_str().unwrap();
    let job = call(state, "GET", &format!("/api/training/exports/{id}"), tok, None).await.body["data"].clone();
    assert_eq!(job["status"], "succeeded", "{job} after {outcomes:?}");
    job
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

#[tokio::test]
async fn a_split_job_writes_one_file_per_split_disjoint_by_customer_and_covering_every_example() {
    let (state, mut worker) = jobs_state().await;
    let tok = token(&new_org());
    seed(&state, &tok, 16).await;
    let sync = call(&state, "GET", "/api/training/export?format=jsonl", &tok, None).await;
    let everything = lines(&sync.bytes);
    assert_eq!(everything.len(), 24);
    let split = json!({"validation": 0.25, "test": 0.25, "seed": "fixed", "stratifyBy": "quality"});
    let body = json!({"source": "training", "format": "jsonl", "split": split});
    let job = run_job(&state, &mut worker, &tok, body.clone(), 600_000).await;
    let files = job["files"].as_array().unwrap().clone();
    let names: Vec<&str> = files.iter().map(|f| f["split"].as_str().unwrap()).collect();
    assert_eq!(names, ["train", "validation", "test"]);
    let mut seen: BTreeMap<String, String> = BTreeMap::new(); // customer -> split
    let mut written = Vec::new();
    for f in &files {
        let (status, _, bytes) = download(f["url"].as_str().unwrap()).await;
        assert_eq!(status, 200);
        let file = lines(&bytes);
        assert_eq!(f["rows"], json!(file.len()));
        assert!(f["name"].as_str().unwrap().ends_with(&format!("-{}.jsonl", f["split"].as_str().unwrap())));
        for item in &file {
            let customer = item["customer"]["name"].as_str().unwrap().to_string();
            let text = item["conversation"][0]["content"].as_str().unwrap().to_string();
            let contact = text.split(' ').nth(1).unwrap().to_string();
            let split = f["split"].as_str().unwrap().to_string();
            assert_eq!(
                seen.entry(contact.clone()).or_insert(split.clone()),
                &split,
                "{customer} {contact} straddles files"
            );
        }
        written.extend(file);
    }
    // Every example exactly once.
    let key = |v: &Value| v["id"].as_str().unwrap().to_string();
    let mut got: Vec<String> = written.iter().map(key).collect();
    let mut want: Vec<String> = everything.iter().map(key).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Stratified: 8 customers per quality, a quarter of each for validation and for test.
    for quality in ["good", "bad"] {
        let of = |split: &str| {
            (0..16).filter(|c| ["good", "bad"][c % 2] == quality && seen[&c.to_string()] == split).count()
        };
        assert_eq!((of("train"), of("validation"), of("test")), (4, 2, 2), "{quality}: {seen:?}");
    }
    // The same job with no time budget (a new invocation per file) gives the same files.
    let resumed = run_job(&state, &mut worker, &tok, body, 0).await;
    let digests =
        |job: &Value| job["files"].as_array().unwrap().iter().map(|f| f["sha256"].clone()).collect::<Vec<_>>();
    assert_eq!(digests(&resumed), digests(&job));
    let (_, _, manifest) = download(resumed["manifest"]["url"].as_str().unwrap()).await;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["files"].as_array().map(Vec::len), Some(3));
    assert_eq!(manifest["counts"]["written"], 24);
    assert_eq!(manifest["params"]["split"]["seed"], "fixed");
}

#[tokio::test]
async fn a_split_left_with_one_file_has_no_empty_files_and_keeps_the_single_url() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed(&state, &tok, 2).await;
    let body =
        json!({"source": "training", "format": "jsonl", "split": {"validation": 0.01, "test": 0.01, "seed": "one"}});
    let job = run_job(&state, &mut worker, &tok, body, 600_000).await;
    let files = job["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "the empty splits have no file: {job}");
    assert_eq!(files[0]["split"], "train");
    assert_eq!(files[0]["rows"], 3);
    let (_, _, single) = download(job["url"].as_str().expect("a one-file job keeps its url")).await;
    let (_, _, listed) = download(files[0]["url"].as_str().unwrap()).await;
    assert_eq!(single, listed);
    let objects = support::export_objects(&state, &org).await;
    let names: Vec<&str> = objects.iter().filter_map(|k| k.rsplit('/').next()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-train.jsonl")));
    assert!(names.contains(&"manifest.json") && names.contains(&"split-assignment.json"), "{names:?}");
}

#[tokio::test]
async fn a_split_is_only_for_jobs_and_its_shares_are_checked() {
    let (state, _worker) = jobs_state().await;
    let tok = token(&new_org());
    let a = call(&state, "GET", "/api/training/export?format=jsonl&split=0.1", &tok, None).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body["message"].as_str().unwrap().contains("POST /api/training/exports"), "{}", a.body);
    for bad in [
        json!({"validation": 0.6, "test": 0.5}),
        json!({"validation": -0.1}),
        json!({"validation": "0.1"}),
        json!({"folds": 3}),
    ] {
        let body = json!({"source": "training", "split": bad});
        let a = call(&state, "POST", "/api/training/exports", &tok, Some(body)).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.body["issues"][0]["message"].as_str().unwrap().starts_with("split"), "{}", a.body);
    }
    let body = json!({"source": "conversations", "agentId": "ag", "split": {"validation": 0.1}});
    let a = call(&state, "POST", "/api/training/exports", &tok, Some(body)).await;
    assert_eq!(a.status, 400, "{}", a.body);
}
