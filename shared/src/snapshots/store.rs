//! DynamoDB access for snapshots.
//!
//! A snapshot is a header item (`META`) plus its messages: their JSON array, cut into binary
//! chunk items (`MSGS#<n>`) of at most 350 KB, so a snapshot of any size, whatever its content,
//! is kept whole under DynamoDB's 400 KB item limit; reading concatenates the chunks in order.
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

use super::model::{Snapshot, SnapshotMessage, MAX_MESSAGE_BYTES};
pub use super::store_filters::{changed_key, Archived, Change, Filters, ReadStats};
use crate::keys::{self, Org, SnapshotList};
use crate::store_error::StoreError;
use crate::table::{IndexDef, GSI1, GSI2, GSI3, GSI4, GSI5, PK, SK, TTL};

/// Bytes of the messages' JSON per chunk item (DynamoDB's item limit is 400 KB).
pub const CHUNK_BYTES: usize = 350_000;
/// Most chunks of a snapshot: its messages are at most [`MAX_MESSAGE_BYTES`] of JSON.
pub const MAX_CHUNKS: usize = MAX_MESSAGE_BYTES.div_ceil(CHUNK_BYTES);
// The commit and the delete are one transaction of the header and every chunk: DynamoDB takes
// at most 100 items and 4 MB (4 MiB) of items in one, so the chunks (at most MAX_MESSAGE_BYTES of
// data) and a header (notes, tags, labels: well under 100 KB) must fit.
// A delete transaction holds the header, every chunk and the deletion record: at most 100 items.
const _: () = assert!(MAX_CHUNKS < 99 && MAX_MESSAGE_BYTES + 100_000 <= 4 * 1024 * 1024);
/// The chunk attribute: a slice of the messages' JSON array.
const DATA: &str = "data";
pub(super) const META: &str = "META";
/// Sort key of a deleted snapshot's deletion record (in its own partition, until its TTL).
pub(super) const TOMBSTONE: &str = "TOMBSTONE";

/// Every attribute of a header a reader decodes ([`Snapshot`]'s fields). Lists and exports
/// Query only these: the keys (about half of a header's bytes) stay behind, unparsed.
pub(super) const HEADER_ATTRIBUTES: [&str; 21] = [
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
];

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// The sort key of chunk `i` of a write attempt's `set` (empty: the first attempt at an id).
pub(super) fn chunk_sk(set: &str, i: usize) -> String {
    if set.is_empty() {
        format!("MSGS#{i:05}")
    } else {
        format!("MSGS#{set}#{i:05}")
    }
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

    /// Stores a new snapshot under `snap.id` and answers whether this call committed it;
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
        resumed: bool,
    ) -> Result<bool, StoreError> {
        snap.chunk_set = if resumed { new_chunk_set() } else { String::new() };
        let chunks = Self::chunk_items(snap, messages)?;
        if chunks.len() > MAX_CHUNKS {
            return Err(StoreError::fault("create snapshot", format!("{} chunks, at most {MAX_CHUNKS}", chunks.len())));
        }
        let items = self.commit_items(snap, chunks)?;
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

    /// The items of the commit transaction of `snap`: its header, only if there is none, and
    /// its `chunks`.
    fn commit_items(
        &self,
        snap: &Snapshot,
        chunks: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let build = |e| StoreError::fault("build snapshot commit", e);
        let header = Put::builder()
            .table_name(self.table)
            .set_item(Some(Self::header_item(snap)?))
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

    fn header_item(snap: &Snapshot) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(snap).map_err(|e| StoreError::fault("encode snapshot", e))?;
        item.insert(PK.into(), s(keys::snapshot(&snap.org(), &snap.id)));
        item.insert(SK.into(), s(META));
        for (k, v) in index_keys(snap).0 {
            item.insert(k.into(), s(v));
        }
        Ok(item)
    }

    /// The chunk items of `snap`'s chunk set.
    fn chunk_items(
        snap: &mut Snapshot,
        messages: &[SnapshotMessage],
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let pk = keys::snapshot(&snap.org(), &snap.id);
        let json = serde_json::to_vec(messages).map_err(|e| StoreError::fault("encode messages", e))?;
        let items: Vec<_> = json
            .chunks(CHUNK_BYTES)
            .enumerate()
            .map(|(i, piece)| {
                HashMap::from([
                    (PK.to_string(), s(&pk)),
                    (SK.to_string(), s(chunk_sk(&snap.chunk_set, i))),
                    (DATA.to_string(), AttributeValue::B(piece.to_vec().into())),
                ])
            })
            .collect();
        snap.chunks = items.len();
        Ok(items)
    }

    /// Bulk load for seeding (benchmark, tests, migrations): the items of committed snapshots
    /// (no expiry), written 25 at a time with `BatchWriteItem`. Not atomic per snapshot and
    /// unconditional, so it is not used on request paths.
    pub async fn import(&self, snapshots: Vec<(Snapshot, Vec<SnapshotMessage>)>) -> Result<(), StoreError> {
        let mut items = Vec::new();
        for (mut snap, messages) in snapshots {
            snap.chunk_set.clear();
            let chunks = Self::chunk_items(&mut snap, &messages)?;
            // Delete must be able to retire them in one transaction.
            if chunks.len() > MAX_CHUNKS {
                let problem = format!("snapshot {}'s messages are over {MAX_MESSAGE_BYTES} bytes", snap.id);
                return Err(StoreError::fault("import snapshots", problem));
            }
            items.extend(chunks);
            items.push(Self::header_item(&snap)?);
        }
        let requests = items
            .into_iter()
            .filter_map(|item| aws_sdk_dynamodb::types::PutRequest::builder().set_item(Some(item)).build().ok())
            .map(|p| WriteRequest::builder().put_request(p).build())
            .collect();
        self.batch_write(requests, "import snapshots").await
    }
}

/// Tether's 404 for snapshots: "Training snapshot not found".
pub const NOT_FOUND: StoreError = StoreError::NotFound("Training snapshot");

/// The bytes of one chunk item.
pub(super) fn chunk_bytes(item: &mut HashMap<String, AttributeValue>) -> Result<Vec<u8>, StoreError> {
    match item.remove(DATA) {
        Some(AttributeValue::B(blob)) => Ok(blob.into_inner()),
        _ => Err(StoreError::fault("read snapshot messages", "chunk item without data")),
    }
}

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

pub(super) fn decode_messages(json: &[u8]) -> Result<Vec<SnapshotMessage>, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::fault("decode snapshot messages", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_under_the_item_limit_and_reassemble_exactly() {
        let m = |n: usize| SnapshotMessage {
            id: format!("m{n}"),
            // Control characters escape to six bytes each: the worst case for JSON size.
            content: "\u{1}".repeat(n),
            sender: "user".into(),
            sender_type: "AI".into(),
            timestamp: "2024-01-01T00:00:00.000Z".into(),
        };
        let messages: Vec<_> = (0..30).map(|i| m(90_000 + i)).collect();
        let mut snap: Snapshot = serde_json::from_value(serde_json::json!({
            "_id": "0".repeat(24), "organizationId": "o", "user": {"_id": "u"}, "contact": {"_id": "k"},
            "messageCount": 30, "snapshotDate": "", "isArchived": false, "createdAt": "", "updatedAt": ""
        }))
        .unwrap();
        let mut items = SnapshotStore::chunk_items(&mut snap, &messages).unwrap();
        assert_eq!(snap.chunks, items.len());
        assert!(items.len() > 40);
        let mut json = Vec::new();
        for item in &mut items {
            let bytes = chunk_bytes(item).unwrap();
            assert!(bytes.len() <= CHUNK_BYTES);
            json.extend(bytes);
        }
        assert_eq!(decode_messages(&json).unwrap(), messages);
    }

    #[test]
    fn the_header_projection_names_every_field_of_a_snapshot() {
        let mut snap: Snapshot = serde_json::from_value(serde_json::json!({
            "_id": "0".repeat(24), "organizationId": "o", "user": {"_id": "u"}, "contact": {"_id": "k"},
            "messageCount": 30, "snapshotDate": "", "isArchived": false, "createdAt": "", "updatedAt": ""
        }))
        .unwrap();
        // Skipped when empty: the one field a projection could miss unnoticed.
        snap.chunk_set = "set".into();
        let item = SnapshotStore::header_item(&snap).unwrap();
        let mut fields: Vec<&str> =
            item.keys().map(String::as_str).filter(|k| *k != PK && *k != SK && !k.starts_with("GSI")).collect();
        fields.sort_unstable();
        let mut projected = HEADER_ATTRIBUTES.to_vec();
        projected.sort_unstable();
        assert_eq!(fields, projected);
    }
}
