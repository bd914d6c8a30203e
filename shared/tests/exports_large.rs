//! A 40 MB export of 20,000 snapshots: the presigned download is byte-identical to the inline
//! answer and to the sequential export (nothing read ahead, one part uploaded at a time), and
//! producing it through S3 keeps memory bounded (the smallest Lambda has 128 MB).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use shared::snapshots::store::SnapshotStore;
use shared::snapshots::{Snapshot, SnapshotMessage};
use support::{call, download, new_org, state_with, token};

/// Counts live heap bytes and their high-water mark.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

const SNAPSHOTS: usize = 20_000;

fn snapshot(org: &str, i: usize) -> (Snapshot, Vec<SnapshotMessage>) {
    let messages: Vec<SnapshotMessage> = (0..14)
        .map(|j| SnapshotMessage {
            id: format!("m{i}-{j}"),
            content: format!("snapshot {i:05} message {j:02}: héllo 👋, \"quoted\" text..."),
            sender: if j % 2 == 0 { "contact".into() } else { "user".into() },
            sender_type: if j % 2 == 0 { "HUMAN".into() } else { "AI".into() },
            timestamp: format!("2026-05-18T13:{:02}:{:02}.000Z", j, i % 60),
        })
        .collect();
    let (id, at) = shared::ids::new_id();
    let now = shared::time::to_rfc3339(at);
    let snap: Snapshot = serde_json::from_value(json!({
        "_id": id, "organizationId": org, "user": {"_id": "u"}, "contact": {"_id": format!("k{}", i % 50)},
        "customerName": "Jane Doe", "customerPhone": "+14155550123", "customerEmail": "jane@example.com",
        "messageCount": messages.len(), "snapshotDate": now, "conversationStartDate": messages[0].timestamp,
        "conversationEndDate": messages[13].timestamp, "tags": ["sales"], "quality": "good", "isArchived": false,
        "createdAt": now, "updatedAt": now, "version": 1
    }))
    .unwrap();
    (snap, messages)
}

#[tokio::test]
async fn a_40_mb_export_through_s3_is_byte_identical_to_inline_with_bounded_memory() {
    // Time to finish in the request: this test measures a single pass, not the fallback to a job.
    let state = state_with(|c| c.export_sync_budget = std::time::Duration::from_secs(3600)).await;
    let org = new_org();
    let tok = token(&org);
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let clock = std::time::Instant::now();
    for start in (0..SNAPSHOTS).step_by(1000) {
        store.import((start..start + 1000).map(|i| snapshot(&org, i)).collect()).await.unwrap();
    }

    println!("seeded {SNAPSHOTS} snapshots in {:?}", clock.elapsed());
    let clock = std::time::Instant::now();
    // Through S3: measure memory while the export is produced.
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let a = call(&state, "GET", "/api/training/export?format=jsonl&delivery=url", &tok, None).await;
    let heap_peak = PEAK.load(Ordering::Relaxed) - baseline;
    let rss_peak = peak_rss();
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.body["data"]["items"], SNAPSHOTS);
    let bytes = a.body["data"]["bytes"].as_u64().unwrap();
    assert!(bytes > 40_000_000, "a 40 MB export: {bytes}");
    println!("export through S3 in {:?}", clock.elapsed());
    println!(
        "export: {bytes} bytes; heap peak while producing it {} MiB; process peak RSS {} MiB",
        heap_peak >> 20,
        rss_peak >> 20
    );
    assert!(heap_peak < 64 << 20, "heap grew by {} MiB", heap_peak >> 20);
    assert!(rss_peak < 128 << 20, "peak RSS {} MiB", rss_peak >> 20);

    let (status, _, file) = download(a.headers["location"].to_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(file.len() as u64, bytes);

    // Inline (limit raised for the comparison): the same bytes.
    let clock = std::time::Instant::now();
    let big = state_with(|c| {
        c.inline_export_max_bytes = 64 << 20;
        c.export_sync_budget = std::time::Duration::from_secs(3600);
    })
    .await;
    let inline = call(&big, "GET", "/api/training/export?format=jsonl", &tok, None).await;
    assert_eq!(inline.status, 200);
    println!("inline export in {:?}", clock.elapsed());
    assert!(inline.bytes == file, "the download is byte-identical to the inline answer");

    // Sequential (nothing read ahead, each part awaited): the same bytes as the pipelined export.
    let sequential = state_with(|c| {
        c.export_sync_budget = std::time::Duration::from_secs(3600);
        c.export_read_ahead = 0;
        c.export_uploads_ahead = 0;
    })
    .await;
    let a = call(&sequential, "GET", "/api/training/export?format=jsonl&delivery=url", &tok, None).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let (_, _, one_at_a_time) = download(a.headers["location"].to_str().unwrap()).await;
    assert!(one_at_a_time == file, "the pipelined export is byte-identical to the sequential one");
    assert_eq!(file.iter().filter(|b| **b == b'\n').count(), SNAPSHOTS);
}
