//! DynamoDB access for snapshots.
//!
//! A snapshot is a header item (`META`) plus its messages, their JSON array, in one of two
//! layouts (readers take both):
//! - in the header (attribute `data`), when that costs no write unit more at create: the header
//!   with them rounds to the same whole kilobytes as without ([`Layout::SmallInHeader`], which a
//!   deployment turns on once every function reads it: earlier versions read chunks only).
//!   Every index projects all attributes and every PATCH rewrites the header, so messages that
//!   made the header a kilobyte larger would cost that kilobyte again in 3 to 5 index copies
//!   on every write (`docs/performance.md`, "Read cost");
//! - else cut into binary chunk items (`MSGS#<n>`) of at most 350 KB beside it, so a snapshot of
//!   any size, whatever its content, is kept whole under DynamoDB's 400 KB item limit; reading
//!   concatenates the chunks in order.
//!
//! One transaction puts the header, only if there is none, and every chunk: the commit point.
//! So a reader (who only reads the chunks a committed header names) never sees a half-written
//! snapshot, and an attempt that failed, timed out or was given up on wrote all of it or
//! nothing. Delete is one transaction too: the header goes, its chunks get an expiry and its
//! deletion record is put (`TOMBSTONE`, for the scheduled export, until its own TTL); removing
//! the chunks right away is then only a speed-up. (Earlier versions wrote the chunks first,
//! with an expiry: what they left uncommitted is removed by TTL.)
//!
//! This file holds the store, its keys and items, and create; reads are in `store_read.rs`,
//! lists and counts in `store_list.rs` (their filters in `store_filters.rs`), and patch and
//! delete in `store_write.rs`.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::transact_write_items::TransactWriteItemsError,
    types::{AttributeValue, CancellationReason, ConditionCheck, DeleteRequest, Put, TransactWriteItem, WriteRequest},
    Client,
};

pub(super) use super::chunks::chunk_sk;
use super::chunks::{chunk_items, DATA};
pub use super::chunks::{CHUNK_BYTES, MAX_CHUNKS};
use super::model::{Snapshot, SnapshotMessage, MAX_MESSAGE_BYTES};
pub use super::store_filters::{changed_key, Archived, Change, Filters, ReadStats};
use crate::keys::{self, Org, SnapshotList};
use crate::store_error::StoreError;
use crate::table::{IndexDef, GSI1, GSI2, GSI3, GSI4, GSI5, PK, SK, TTL};

pub(super) const META: &str = "META";
/// Sort key of a deleted snapshot's deletion record (in its own partition, until its TTL).
pub(super) const TOMBSTONE: &str = "TOMBSTONE";

/// Every attribute of a header a reader decodes ([`Snapshot`]'s fields). Lists and exports
/// Query only these: the keys (about half of a header's bytes) stay behind, unparsed.
pub(super) const HEADER_ATTRIBUTES: [&str; 22] = [
    "_id",
    "organizationId",
    "user",
    "contact",
    "customerName",
    "customerPhone",
    "customerEmail",
    "messageCount",
    "snapshotDate",
    "conversationStartDate",
    "conversationEndDate",
    "notes",
    "tags",
    "quality",
    "category",
    "isArchived",
    "createdAt",
    "updatedAt",
    "chunks",
    "chunkSet",
    "version",
    "data",
];

/// An item's attributes.
type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A random chunk set for a resumed create: its chunk keys differ from any earlier attempt's.
fn new_chunk_set() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// The list partition of `index` for a snapshot's organization and archive state.
pub(super) fn partition(org: &Org, archived: bool, index: &IndexDef, value: &str) -> String {
    let list = match index.name {
        "GSI2" => SnapshotList::Quality(value),
        "GSI3" => SnapshotList::Category(value),
        "GSI4" => SnapshotList::Contact(value),
        _ => SnapshotList::All,
    };
    keys::snapshot_list(org, archived, list)
}

/// The index attributes of a header: set ones, and the ones to remove (no quality, ...).
pub(super) fn index_keys(snap: &Snapshot) -> (Vec<(&'static str, String)>, Vec<&'static str>) {
    let (org, a) = (&snap.org(), snap.is_archived);
    let mut set = vec![(GSI1.pk, partition(org, a, &GSI1, "")), (GSI1.sk, snap.id.clone())];
    let mut remove = Vec::new();
    // Every header is indexed by change, archived ones too: an archive is a change the
    // scheduled export passes on as a deletion record.
    set.push((GSI5.pk, keys::changed(org)));
    set.push((GSI5.sk, changed_key(&snap.updated_at, &snap.id)));
    for (ix, value) in [(&GSI2, &snap.quality), (&GSI3, &snap.category), (&GSI4, &Some(snap.contact.id.clone()))] {
        match value {
            Some(v) => {
                set.push((ix.pk, partition(org, a, ix, v)));
                set.push((ix.sk, snap.id.clone()));
            }
            None => remove.extend([ix.pk, ix.sk]),
        }
    }
    (set, remove)
}
/// Snapshot storage over one table.
pub struct SnapshotStore<'a> {
    pub(super) client: &'a Client,
    pub(super) table: &'a str,
}

impl<'a> SnapshotStore<'a> {
    /// A store over `table`.
    pub fn new(client: &'a Client, table: &'a str) -> Self {
        Self { client, table }
    }

    /// Stores a new snapshot under `snap.id`, its messages in `layout`, and answers whether this
    /// call committed it;
    /// `false`: a snapshot with this id was already committed (by another attempt of the same
    /// idempotent request; read it to answer it), and maybe deleted since.
    ///
    /// One transaction puts the header (if there is none) and every chunk: one round trip, and
    /// a create that fails, times out or lands late writes all of it or nothing. `resumed` says
    /// that an earlier attempt may have written under this id: the chunks then get keys of
    /// their own (a random chunk set), so they never meet that attempt's.
    pub async fn create(
        &self,
        snap: &mut Snapshot,
        messages: &[SnapshotMessage],
        layout: Layout,
        resumed: bool,
    ) -> Result<bool, StoreError> {
        snap.chunk_set = if resumed { new_chunk_set() } else { String::new() };
        let (header, chunks) = lay_out(snap, messages, layout)?;
        let items = self.commit_items(snap, header, chunks)?;
        let err = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(true),
            Err(err) => err,
        };
        let reasons = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(e)) => e.cancellation_reasons().to_vec(),
            // Timed out or storage down: the commit may still be applied, whole.
            _ => return Err(crate::store_error::from_sdk("commit snapshot", err)),
        };
        self.commit_canceled(snap, reasons).await
    }

    /// The items of the commit transaction of `snap`: its `header` item, only if there is
    /// none, and its `chunks`.
    fn commit_items(
        &self,
        snap: &Snapshot,
        header: Item,
        chunks: Vec<Item>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let build = |e| StoreError::fault("build snapshot commit", e);
        let header = Put::builder()
            .table_name(self.table)
            .set_item(Some(header))
            .condition_expression(format!("attribute_not_exists({PK})"))
            .build()
            .map_err(build)?;
        // A deleted snapshot stays deleted: an attempt landing after the delete (given up on,
        // or a retry of its key) finds the deletion record and writes nothing.
        let deleted = ConditionCheck::builder()
            .table_name(self.table)
            .key(PK, s(keys::snapshot(&snap.org(), &snap.id)))
            .key(SK, s(TOMBSTONE))
            .condition_expression(format!("attribute_not_exists({PK})"))
            .build()
            .map_err(build)?;
        let mut items = vec![
            TransactWriteItem::builder().put(header).build(),
            TransactWriteItem::builder().condition_check(deleted).build(),
        ];
        for chunk in chunks {
            let put = Put::builder()
                .table_name(self.table)
                .set_item(Some(chunk))
                // A committed chunk is never overwritten; an expiring one (left by the
                // two-step create of earlier versions) may be.
                .condition_expression(format!("attribute_not_exists({PK}) OR attribute_exists({TTL})"))
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(items)
    }

    /// Answers a commit transaction that was canceled for `reasons` (one per item: the header,
    /// the deletion record's check, the chunks). A canceled transaction wrote nothing, so
    /// nothing is left to remove.
    async fn commit_canceled(&self, snap: &Snapshot, reasons: Vec<CancellationReason>) -> Result<bool, StoreError> {
        let failed = |i: usize| reasons.get(i).and_then(|r| r.code()).is_some_and(|c| c == "ConditionalCheckFailed");
        if failed(1) && !failed(0) {
            // Committed by another attempt, then deleted: reading it answers 404.
            return Ok(false);
        }
        if failed(0) {
            // A header exists: ours (an SDK retry of a commit that was applied) or another attempt's.
            let committed = self.get_header(&snap.org(), &snap.id).await?;
            return match committed {
                Some(h) => Ok(h.chunk_set == snap.chunk_set),
                None => Err(StoreError::contended("commit snapshot", "the header vanished after a conflict")),
            };
        }
        // Throttled, or a committed chunk without its header under one of our keys.
        Err(StoreError::unavailable("commit snapshot", format!("canceled: {reasons:?}")))
    }

    pub(super) fn header_item(snap: &Snapshot) -> Result<Item, StoreError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(snap).map_err(|e| StoreError::fault("encode snapshot", e))?;
        item.insert(PK.into(), s(keys::snapshot(&snap.org(), &snap.id)));
        item.insert(SK.into(), s(META));
        for (k, v) in index_keys(snap).0 {
            item.insert(k.into(), s(v));
        }
        Ok(item)
    }

    /// The items that store `snap` with its `messages` in `layout`: the header, then any chunks
    /// (what [`Self::create`] and [`Self::import`] write; the benchmark prices them).
    pub fn items(snap: &mut Snapshot, messages: &[SnapshotMessage], layout: Layout) -> Result<Vec<Item>, StoreError> {
        let (header, chunks) = lay_out(snap, messages, layout)?;
        Ok(std::iter::once(header).chain(chunks).collect())
    }

    /// Bulk load for seeding (benchmark, tests, migrations): the items of committed snapshots
    /// (no expiry), written 25 at a time with `BatchWriteItem`, their messages in chunks (the
    /// layout every version reads; [`Self::import_as`] takes another). Not atomic per snapshot
    /// and unconditional, so it is not used on request paths.
    pub async fn import(&self, snapshots: Vec<(Snapshot, Vec<SnapshotMessage>)>) -> Result<(), StoreError> {
        self.import_as(snapshots, Layout::Chunks).await
    }

    /// [`Self::import`] in `layout` ([`Layout::Chunks`]: as versions before the header layout
    /// stored every snapshot).
    pub async fn import_as(
        &self,
        snapshots: Vec<(Snapshot, Vec<SnapshotMessage>)>,
        layout: Layout,
    ) -> Result<(), StoreError> {
        let mut items = Vec::new();
        for (mut snap, messages) in snapshots {
            snap.chunk_set.clear();
            let (header, chunks) = lay_out(&mut snap, &messages, layout)?;
            // The chunks before their header, as a reader expects them.
            items.extend(chunks);
            items.push(header);
        }
        let requests = items
            .into_iter()
            .filter_map(|item| aws_sdk_dynamodb::types::PutRequest::builder().set_item(Some(item)).build().ok())
            .map(|p| WriteRequest::builder().put_request(p).build())
            .collect();
        self.batch_write(requests, "import snapshots").await
    }
}

/// Where a snapshot's messages are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// In chunk items beside the header, whatever their size: the default (`SNAPSHOT_LAYOUT`),
    /// and the only layout that versions before this one read.
    Chunks,
    /// In the header when that costs no write unit more (they fit in its last kilobyte), else
    /// in chunks (`SNAPSHOT_LAYOUT=small-in-header`).
    SmallInHeader,
}

/// The header item and the chunk items that store `snap` with its `messages` in `layout`: the
/// messages in the header (`snap.inline`, no chunks) or in chunks; fails (as a fault: a create
/// checks the size first) over [`MAX_CHUNKS`].
fn lay_out(snap: &mut Snapshot, messages: &[SnapshotMessage], layout: Layout) -> Result<(Item, Vec<Item>), StoreError> {
    let json = serde_json::to_string(messages).map_err(|e| StoreError::fault("encode messages", e))?;
    snap.inline = None;
    if layout == Layout::SmallInHeader {
        snap.chunks = 0;
        let mut header = SnapshotStore::header_item(snap)?;
        let bare = crate::capacity::item_size(&header);
        // The messages add their attribute: its name and the JSON string.
        if crate::capacity::write_units(bare + DATA.len() + json.len()) == crate::capacity::write_units(bare) {
            header.insert(DATA.to_string(), AttributeValue::S(json.clone()));
            snap.inline = Some(json);
            return Ok((header, Vec::new()));
        }
    }
    let chunks = chunk_items(snap, json.as_bytes());
    // Delete must be able to retire them in one transaction.
    if chunks.len() > MAX_CHUNKS {
        let problem = format!("snapshot {}'s messages are over {MAX_MESSAGE_BYTES} bytes", snap.id);
        return Err(StoreError::fault("store snapshot", problem));
    }
    Ok((SnapshotStore::header_item(snap)?, chunks))
}

/// Tether's 404 for snapshots: "Training snapshot not found".
pub const NOT_FOUND: StoreError = StoreError::NotFound("Training snapshot");

/// Delete requests of the chunks `0..chunks` of the chunk set `set` in the snapshot partition `pk`.
pub(super) fn chunk_deletes(pk: &str, set: &str, chunks: usize) -> Vec<WriteRequest> {
    (0..chunks)
        .filter_map(|i| {
            let key = HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(chunk_sk(set, i)))]);
            DeleteRequest::builder().set_key(Some(key)).build().ok()
        })
        .map(|d| WriteRequest::builder().delete_request(d).build())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{item_size, write_units};
    use crate::snapshots::chunks::tests::{header, message};

    #[test]
    fn messages_go_in_the_header_exactly_when_it_stays_within_its_write_units() {
        let bare = item_size(&SnapshotStore::header_item(&header(1)).unwrap());
        let room = write_units(bare) * 1024 - bare;
        // The JSON of one message of `n` content bytes, as the header's `data` attribute holds it.
        let cost = |n: usize| DATA.len() + serde_json::to_string(&[message(0, "x".repeat(n))]).unwrap().len();
        let fits = (0..2000).rev().find(|n| cost(*n) <= room).expect("some room in a small header");
        for (n, inline) in [(0, true), (fits, true), (fits + 1, false), (5000, false)] {
            let messages = vec![message(0, "x".repeat(n))];
            let mut snap = header(1);
            let items = SnapshotStore::items(&mut snap, &messages, Layout::SmallInHeader).unwrap();
            assert_eq!(snap.inline.is_some(), inline, "{n} bytes of content");
            assert_eq!(items.len(), if inline { 1 } else { 2 });
            assert_eq!(snap.chunks, items.len() - 1);
            // In the header, the messages cost no write unit: exactly the header's of the chunk layout.
            let mut chunked = header(1);
            let apart = SnapshotStore::items(&mut chunked, &messages, Layout::Chunks).unwrap();
            assert_eq!(apart.len(), 2);
            let (units, apart_units) = (write_units(item_size(&items[0])), write_units(item_size(&apart[0])));
            assert!(if inline { units == apart_units } else { units >= apart_units });
        }
    }

    #[test]
    fn the_header_projection_names_every_field_of_a_snapshot() {
        let mut snap = header(30);
        // Skipped when empty: the fields a projection could miss unnoticed.
        snap.chunk_set = "set".into();
        snap.inline = Some("[]".into());
        let item = SnapshotStore::header_item(&snap).unwrap();
        let mut fields: Vec<&str> =
            item.keys().map(String::as_str).filter(|k| *k != PK && *k != SK && !k.starts_with("GSI")).collect();
        fields.sort_unstable();
        let mut projected = HEADER_ATTRIBUTES.to_vec();
        projected.sort_unstable();
        assert_eq!(fields, projected);
    }
}
