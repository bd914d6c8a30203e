//! Section 6, DynamoDB cost of the two layouts of a snapshot's messages (in its header, or in
//! chunk items beside it: `shared::snapshots::store`).
//!
//! The write and read units are DynamoDB's rules applied to the items `SnapshotStore::items`
//! writes (the emulator does not price writes):
//! - a create is one transaction: each item (header, chunks, the deletion record's check)
//!   counts twice its kilobytes; each index the header is in writes a copy of it (every index
//!   projects all attributes), counted once (were index copies counted twice in a transaction,
//!   the header layout's extra cost would only grow);
//! - a PATCH rewrites the header, and its copy in each index; the index of changes moves it
//!   (a delete and a put);
//! - an export reads the header from a list index by Query (sizes summed over the page: a
//!   fraction of 4 KB each) and the chunks by key (each rounds up to 4 KB on its own),
//!   eventually consistent (half a unit per 4 KB).

use std::sync::Arc;

use shared::capacity::{item_size, write_units, READ_UNIT_BYTES};
use shared::snapshots::store::{Layout, SnapshotStore};
use shared::AppState;

use crate::{drop_exports, export_process, median, raw_read, snapshot};
use crate::{Res, Row, Settings, Target};

const SECTION: &str = "6. DynamoDB cost";
/// Snapshots of one short message exported to measure the read capacity of the header layout.
const SMALL_SNAPSHOTS: usize = 2_000;

/// The write units of a create and of one PATCH of a header of `header` bytes with `chunks`
/// (their sizes), in `indexes` indexes.
fn write_cost(header: usize, chunks: &[usize], indexes: usize) -> usize {
    let h = write_units(header);
    let create = 2 * (h + chunks.iter().map(|c| write_units(*c)).sum::<usize>() + 1) + indexes * h;
    let patch = h + (indexes + 1) * h;
    create + patch
}

/// The read units of exporting a header of `header` bytes and its `chunks`.
fn read_cost(header: usize, chunks: &[usize]) -> f64 {
    let unit = READ_UNIT_BYTES as f64;
    (header as f64 / unit + chunks.iter().map(|c| (*c as f64 / unit).ceil()).sum::<f64>()) / 2.0
}

/// One short message (about 110 bytes of JSON), `i` making it unique.
fn short(org: &str, i: usize) -> Res<(shared::snapshots::Snapshot, Vec<shared::snapshots::SnapshotMessage>)> {
    let (snap, mut messages) = snapshot(org, i, 1)?;
    messages[0].content = format!("ok {}", i % 100);
    Ok((snap, messages))
}

/// Both layouts priced for snapshots of several sizes, with the layout a create chooses.
pub fn layouts() -> Res<Vec<Row>> {
    let org = "0123456789abcdef01234567";
    let cases = [
        ("one short message", short(org, 1)?),
        ("one message", snapshot(org, 7, 1)?),
        ("4 messages", snapshot(org, 7, 4)?),
        ("20 messages", snapshot(org, 7, 20)?),
        ("250 messages", snapshot(org, 7, 250)?),
    ];
    let mut rows = Vec::new();
    for (label, (snap, messages)) in cases {
        let mut chosen = snap.clone();
        SnapshotStore::items(&mut chosen, &messages, Layout::SmallInHeader)?;
        let mut apart = snap;
        let items = SnapshotStore::items(&mut apart, &messages, Layout::Chunks)?;
        let header = item_size(&items[0]);
        let chunks: Vec<usize> = items[1..].iter().map(item_size).collect();
        let indexes = items[0].keys().filter(|k| k.starts_with("GSI") && k.ends_with("PK")).count();
        let json = serde_json::to_string(&messages)?.len();
        // What lay_out adds to the header: the attribute `data` and the JSON.
        let inline = header + "data".len() + json;
        let note = format!(
            "{json} bytes of messages, a {header}-byte header in {indexes} indexes; small-in-header puts them {}",
            if chosen.inline.is_some() { "in the header" } else { "beside it" }
        );
        rows.push(Row {
            section: SECTION,
            measure: format!("write units of a create and a PATCH, {label}: in the header (vs beside it)"),
            unit: "WCU",
            ours: write_cost(inline, &[], indexes) as f64,
            baseline: Some(write_cost(header, &chunks, indexes) as f64),
            target: None,
            note: note.clone(),
        });
        rows.push(Row {
            section: SECTION,
            measure: format!("read units of exporting it, {label}: in the header (vs beside it)"),
            unit: "RCU",
            ours: read_cost(inline, &[]),
            baseline: Some(read_cost(header, &chunks)),
            target: None,
            note,
        });
    }
    Ok(rows)
}

/// The read capacity an export of `org`'s snapshots reports, per snapshot (median of the runs).
async fn export_capacity(settings: &Settings, state: &Arc<AppState>, secret: &str, org: &str) -> Res<f64> {
    let mut capacity = Vec::new();
    for _ in 0..settings.runs {
        let (_, log) = export_process(settings, state, secret, org, SMALL_SNAPSHOTS).await?;
        drop_exports(state, org).await?;
        capacity.push(log["read_capacity"].as_f64().unwrap_or(0.0) / SMALL_SNAPSHOTS as f64);
    }
    Ok(median(capacity))
}

/// The read capacity of exporting snapshots of one short message, per snapshot: kept in their
/// headers, against their size read by a Query, and against the same snapshots in chunks.
pub async fn small_snapshot_reads(settings: &Settings, state: &Arc<AppState>, secret: &str) -> Res<Vec<Row>> {
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let (in_header, in_chunks) = (shared::ids::object_id(), shared::ids::object_id());
    for (org, layout) in [(&in_header, Layout::SmallInHeader), (&in_chunks, Layout::Chunks)] {
        let snapshots = (0..SMALL_SNAPSHOTS).map(|i| short(org, i)).collect::<Res<Vec<_>>>()?;
        for batch in snapshots.chunks(1000) {
            store.import_as(batch.to_vec(), layout).await?;
        }
    }
    let ours = export_capacity(settings, state, secret, &in_header).await?;
    let chunked = export_capacity(settings, state, secret, &in_chunks).await?;
    let sized = raw_read(state, &in_header).await?;
    if sized.chunked > 0 {
        return Err(format!("{} of the small snapshots were stored in chunks", sized.chunked).into());
    }
    let bytes = sized.bytes as f64 / sized.snapshots.max(1) as f64;
    Ok(vec![
        Row {
            section: SECTION,
            measure: format!(
                "read capacity per exported snapshot, one short message in its header (vs one item's: {bytes:.0} bytes / 4 KB, halved)"
            ),
            unit: "RCU",
            ours,
            baseline: Some(bytes / READ_UNIT_BYTES as f64 / 2.0),
            target: Some(Target::AtMost(1.05)),
            note: format!("{SMALL_SNAPSHOTS} snapshots, every one a single item"),
        },
        Row {
            section: SECTION,
            measure: "the same, in its header (vs the same snapshots with the message in a chunk)".into(),
            unit: "RCU",
            ours,
            baseline: Some(chunked),
            target: None,
            note: "the chunk's read by key rounds up to 4 KB on its own".into(),
        },
    ])
}
