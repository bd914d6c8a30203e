//! DynamoDB access for snapshots.
//!
//! A snapshot is a header item (`META`) plus its messages: their JSON array, cut into binary
//! chunk items (`MSGS#<n>`) of at most 350 KB, so a snapshot of any size, whatever its content,
//! is kept whole under DynamoDB's 400 KB item limit; reading concatenates the chunks in order.
//!
//! Chunks are written first, carrying an expiry (the table's TTL attribute), under keys of
//! their write attempt only. One transaction then puts the header, only if there is none, and
//! removes the expiry of its chunks: the commit point. So a reader (who only reads the chunks a
//! committed header names) never sees a half-written snapshot, and whatever an attempt that
//! failed, timed out or was given up on leaves behind, or lands late, is never committed and is
//! removed by TTL. Delete is one transaction too: the header goes and its chunks get an expiry;
//! removing the chunks right away is then only a speed-up.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::transact_write_items::TransactWriteItemsError,
    types::{
        AttributeValue, Delete, DeleteRequest, Put, ReturnConsumedCapacity, TransactWriteItem, Update, WriteRequest,
    },
    Client,
};
use chrono::{DateTime, Utc};
use futures::future::try_join_all;

use super::model::{PatchInput, Snapshot, SnapshotMessage, MAX_LABEL_CHARS, MAX_MESSAGE_BYTES};
use crate::error::{ApiError, ErrorKind, SdkResultExt};
use crate::keys::{self, Org, SnapshotList};
use crate::table::{IndexDef, GSI1, GSI2, GSI3, GSI4, GSI5, PK, SK, TTL};
use crate::validate::{Issues, MAX_TAGS, MAX_TAG_CHARS};

/// Bytes of the messages' JSON per chunk item (DynamoDB's item limit is 400 KB).
pub const CHUNK_BYTES: usize = 350_000;
/// Most chunks of a snapshot: its messages are at most [`MAX_MESSAGE_BYTES`] of JSON.
pub const MAX_CHUNKS: usize = MAX_MESSAGE_BYTES.div_ceil(CHUNK_BYTES);
// The commit and the delete are one transaction of the header and every chunk: DynamoDB takes
// at most 100 items and 4 MB (4 MiB) of items in one, so the chunks (at most MAX_MESSAGE_BYTES of
// data) and a header (notes, tags, labels: well under 100 KB) must fit.
const _: () = assert!(MAX_CHUNKS < 100 && MAX_MESSAGE_BYTES + 100_000 <= 4 * 1024 * 1024);
/// How long the chunks of an uncommitted create live (they are removed by TTL afterwards):
/// far longer than any request (29 s), so an attempt never loses its chunks before it commits.
pub const PENDING_CHUNK_SECONDS: u64 = 3600;
/// The chunk attribute: a slice of the messages' JSON array.
const DATA: &str = "data";
const META: &str = "META";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// The sort key of chunk `i` of a write attempt's `set` (empty: the first attempt at an id).
fn chunk_sk(set: &str, i: usize) -> String {
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
fn partition(org: &Org, archived: bool, index: &IndexDef, value: &str) -> String {
    let list = match index.name {
        "GSI2" => SnapshotList::Quality(value),
        "GSI3" => SnapshotList::Category(value),
        "GSI4" => SnapshotList::Contact(value),
        _ => SnapshotList::All,
    };
    keys::snapshot_list(org, archived, list)
}

/// GSI5's sort key: `<updatedAt>#<id>` (timestamps are fixed-width RFC 3339, so they sort).
pub fn changed_key(updated_at: &str, id: &str) -> String {
    format!("{updated_at}#{id}")
}

/// The index attributes of a header: set ones, and the ones to remove (no quality, ...).
fn index_keys(snap: &Snapshot) -> (Vec<(&'static str, String)>, Vec<&'static str>) {
    let (org, a) = (&snap.org(), snap.is_archived);
    let mut set = vec![(GSI1.pk, partition(org, a, &GSI1, "")), (GSI1.sk, snap.id.clone())];
    let mut remove = Vec::new();
    // Only what a default export would include is indexed by change (sparse index).
    if a {
        remove.extend([GSI5.pk, GSI5.sk]);
    } else {
        set.push((GSI5.pk, keys::changed(org)));
        set.push((GSI5.sk, changed_key(&snap.updated_at, &snap.id)));
    }
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

/// Which snapshots a list or an export wants.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    /// Exact quality.
    pub quality: Option<String>,
    /// Exact category.
    pub category: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Archive state.
    pub archived: Archived,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created at or before.
    pub to: Option<DateTime<Utc>>,
    /// Exact contact.
    pub contact_id: Option<String>,
}

/// The `archived` filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Archived {
    /// Only snapshots not archived (the default).
    #[default]
    No,
    /// Only archived snapshots.
    Yes,
    /// Both.
    All,
}

impl Filters {
    /// Checks a request's filters as sent and normalises them (trimmed, empty values and
    /// repeated tags dropped), naming each problem in one 400; `tag_field` is how the request
    /// names the tags. A snapshot holds at most [`MAX_TAGS`] tags of [`MAX_TAG_CHARS`]
    /// characters and labels of [`MAX_LABEL_CHARS`]: past those nothing can match, and every tag
    /// is a clause of the storage filter expression, which DynamoDB caps at 4 KB, so they are
    /// refused here rather than failing in storage.
    pub fn validate(mut self, tag_field: &str) -> Result<Self, ApiError> {
        let mut issues = Issues::default();
        if self.tags.len() > MAX_TAGS {
            issues.push(
                tag_field,
                format!(
                    "at most {MAX_TAGS} values (a snapshot holds at most {MAX_TAGS} tags); {} given",
                    self.tags.len()
                ),
            );
        }
        if self.tags.iter().any(|t| t.chars().count() > MAX_TAG_CHARS) {
            issues.push(tag_field, format!("each tag must be at most {MAX_TAG_CHARS} characters"));
        }
        issues.text("quality", self.quality.as_deref(), MAX_LABEL_CHARS);
        issues.text("category", self.category.as_deref(), MAX_LABEL_CHARS);
        let trimmed = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut seen = std::collections::HashSet::new();
        self.tags = self
            .tags
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty() && seen.insert(*t))
            .map(str::to_string)
            .collect();
        self.quality = trimmed(self.quality);
        self.category = trimmed(self.category);
        self.contact_id = trimmed(self.contact_id);
        if self.contact_id.as_deref().is_some_and(|c| !crate::ids::is_valid_id(c)) {
            issues.push("contactId", "is not a valid id");
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                issues.push("from", "must not be after `to`");
            }
        }
        issues.finish("Invalid filters")?;
        Ok(self)
    }

    /// A stable description of the filters, so a cursor only continues the same query.
    pub fn scope(&self) -> String {
        format!(
            "snapshots:{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.quality, self.category, self.tags, self.archived, self.from, self.to, self.contact_id
        )
    }

    /// The most selective index the filters allow, and its key value.
    fn index(&self) -> (&'static IndexDef, String) {
        if let Some(c) = &self.contact_id {
            (&GSI4, c.clone())
        } else if let Some(c) = &self.category {
            (&GSI3, c.clone())
        } else if let Some(q) = &self.quality {
            (&GSI2, q.clone())
        } else {
            (&GSI1, String::new())
        }
    }
}

/// Read statistics of one read (a list page, a batch of messages), for logs, tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadStats {
    /// Items read: by the key conditions before any filter (`ScannedCount`), or by key.
    pub scanned: i64,
    /// Read capacity reported by DynamoDB (`ReturnConsumedCapacity`).
    pub capacity: f64,
}

/// The smallest id made at or after `t` (`high == false`), or the largest made at or before it:
/// ids name their creation instant to the millisecond (see [`crate::ids`]), so a window on
/// `createdAt` is exactly this range of ids.
fn id_bound(t: DateTime<Utc>, high: bool) -> String {
    let t = if high { floor_ms(t) } else { ceil_ms(t) };
    format!("{}{}", crate::ids::time_prefix(t), if high { "ffffffffffff" } else { "000000000000" })
}

/// `t` rounded down to its millisecond (stored timestamps have milliseconds).
fn floor_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// `t` rounded up to a whole millisecond: `createdAt >= t` is `createdAt >= ceil_ms(t)`.
fn ceil_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_ms(t);
    if floor < t {
        floor + chrono::Duration::milliseconds(1)
    } else {
        floor
    }
}

/// The id just before `id` (ids are 96-bit hex numbers), for an exclusive upper bound.
fn predecessor(id: &str) -> Option<String> {
    let n = u128::from_str_radix(id, 16).ok()?;
    Some(format!("{:024x}", n.checked_sub(1)?))
}

/// Snapshot storage over one table.
pub struct SnapshotStore<'a> {
    client: &'a Client,
    table: &'a str,
}

impl<'a> SnapshotStore<'a> {
    /// A store over `table`.
    pub fn new(client: &'a Client, table: &'a str) -> Self {
        Self { client, table }
    }

    /// Stores a new snapshot under `snap.id` and answers whether this call committed it;
    /// `false`: a snapshot with this id was already committed (by another attempt of the same
    /// idempotent request; read it to answer it).
    ///
    /// `resumed` says that an earlier attempt may have written under this id: the chunks then
    /// get keys of their own (a random chunk set), so nothing that attempt wrote, or writes
    /// late, can mix with them. The chunks are written with an expiry, then one transaction
    /// puts the header (if there is none) and removes their expiry. Chunks of an attempt that
    /// does not commit stay invisible and expire; when the attempt surely did not commit they
    /// are removed at once.
    pub async fn create(
        &self,
        snap: &mut Snapshot,
        messages: &[SnapshotMessage],
        resumed: bool,
    ) -> Result<bool, ApiError> {
        snap.chunk_set = if resumed { new_chunk_set() } else { String::new() };
        let expires = crate::auth::now_epoch() + PENDING_CHUNK_SECONDS;
        let items = Self::chunk_items(snap, messages, Some(expires))?;
        if items.len() > MAX_CHUNKS {
            return Err(ApiError::internal("create snapshot", format!("{} chunks, at most {MAX_CHUNKS}", items.len())));
        }
        let condition = format!("attribute_not_exists({PK}) OR attribute_exists({TTL})");
        let puts = items.into_iter().map(|item| {
            let condition = condition.clone();
            async move {
                self.client
                    .put_item()
                    .table_name(self.table)
                    .set_item(Some(item))
                    // A committed chunk is never overwritten (a put given up on may land late).
                    .condition_expression(condition)
                    .send()
                    .await
                    .ctx("put snapshot chunk")
            }
        });
        if let Err(e) = try_join_all(puts).await {
            // Outcome unknown or storage down: the chunks expire; otherwise remove them now.
            if e.kind != ErrorKind::Unavailable {
                self.discard_chunks(snap).await;
            }
            return Err(e);
        }
        self.commit(snap).await
    }

    /// The commit transaction: the header, only if there is none, and its chunks' expiry removed.
    async fn commit(&self, snap: &Snapshot) -> Result<bool, ApiError> {
        let pk = keys::snapshot(&snap.org(), &snap.id);
        let build = |e| ApiError::internal("build snapshot commit", e);
        let header = Put::builder()
            .table_name(self.table)
            .set_item(Some(Self::header_item(snap)?))
            .condition_expression(format!("attribute_not_exists({PK})"))
            .build()
            .map_err(build)?;
        let mut items = vec![TransactWriteItem::builder().put(header).build()];
        for i in 0..snap.chunks {
            let update = Update::builder()
                .table_name(self.table)
                .key(PK, s(&pk))
                .key(SK, s(chunk_sk(&snap.chunk_set, i)))
                .update_expression(format!("REMOVE {TTL}"))
                // An update would create a missing chunk: it must still be there.
                .condition_expression(format!("attribute_exists({PK})"))
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        let err = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(true),
            Err(err) => err,
        };
        let reasons = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(e)) => e.cancellation_reasons().to_vec(),
            // Timed out or storage down: the commit may still be applied; the chunks expire if not.
            _ => return Err(crate::error::from_sdk("commit snapshot", err)),
        };
        let failed = |i: usize| reasons.get(i).and_then(|r| r.code()).is_some_and(|c| c == "ConditionalCheckFailed");
        if failed(0) {
            // A header exists: ours (an SDK retry of a commit that was applied) or another attempt's.
            let committed = self.get_header(&snap.org(), &snap.id).await?;
            if committed.as_ref().is_some_and(|h| h.chunk_set == snap.chunk_set) {
                return Ok(true);
            }
            self.discard_chunks(snap).await;
            return match committed {
                Some(_) => Ok(false),
                None => Err(ApiError::new(
                    ErrorKind::Unavailable,
                    "The snapshot is being changed concurrently; retry shortly",
                )),
            };
        }
        // Canceled, so nothing was applied: throttled, or a chunk vanished (a concurrent delete).
        self.discard_chunks(snap).await;
        tracing::warn!(snapshot = %snap.id, reasons = ?reasons, "snapshot commit canceled");
        Err(ApiError::new(ErrorKind::Unavailable, "The service is temporarily unavailable; retry shortly"))
    }

    /// Best effort: removes the chunks of an attempt that surely did not commit (they would
    /// expire anyway). Their keys belong to that attempt only, so no committed item is touched.
    async fn discard_chunks(&self, snap: &Snapshot) {
        let pk = keys::snapshot(&snap.org(), &snap.id);
        let requests = (0..snap.chunks)
            .filter_map(|i| {
                let key = HashMap::from([(PK.to_string(), s(&pk)), (SK.to_string(), s(chunk_sk(&snap.chunk_set, i)))]);
                DeleteRequest::builder().set_key(Some(key)).build().ok()
            })
            .map(|d| WriteRequest::builder().delete_request(d).build())
            .collect();
        if let Err(e) = self.batch_write(requests, "discard snapshot chunks").await {
            tracing::warn!(snapshot = %snap.id, error = %e, "uncommitted chunks left to expire");
        }
    }

    fn header_item(snap: &Snapshot) -> Result<HashMap<String, AttributeValue>, ApiError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(snap).map_err(|e| ApiError::internal("encode snapshot", e))?;
        item.insert(PK.into(), s(keys::snapshot(&snap.org(), &snap.id)));
        item.insert(SK.into(), s(META));
        for (k, v) in index_keys(snap).0 {
            item.insert(k.into(), s(v));
        }
        Ok(item)
    }

    /// The chunk items of `snap`'s chunk set (with the expiry `expires`, when uncommitted).
    fn chunk_items(
        snap: &mut Snapshot,
        messages: &[SnapshotMessage],
        expires: Option<u64>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, ApiError> {
        let pk = keys::snapshot(&snap.org(), &snap.id);
        let json = serde_json::to_vec(messages).map_err(|e| ApiError::internal("encode messages", e))?;
        let items: Vec<_> = json
            .chunks(CHUNK_BYTES)
            .enumerate()
            .map(|(i, piece)| {
                let mut item = HashMap::from([
                    (PK.to_string(), s(&pk)),
                    (SK.to_string(), s(chunk_sk(&snap.chunk_set, i))),
                    (DATA.to_string(), AttributeValue::B(piece.to_vec().into())),
                ]);
                if let Some(at) = expires {
                    item.insert(TTL.to_string(), AttributeValue::N(at.to_string()));
                }
                item
            })
            .collect();
        snap.chunks = items.len();
        Ok(items)
    }

    /// Bulk load for seeding (benchmark, tests, migrations): the items of committed snapshots
    /// (no expiry), written 25 at a time with `BatchWriteItem`. Not atomic per snapshot and
    /// unconditional, so it is not used on request paths.
    pub async fn import(&self, snapshots: Vec<(Snapshot, Vec<SnapshotMessage>)>) -> Result<(), ApiError> {
        let mut items = Vec::new();
        for (mut snap, messages) in snapshots {
            snap.chunk_set.clear();
            let chunks = Self::chunk_items(&mut snap, &messages, None)?;
            // Delete must be able to retire them in one transaction.
            if chunks.len() > MAX_CHUNKS {
                return Err(ApiError::invalid(
                    "messages",
                    format!("of snapshot {} are more than {MAX_MESSAGE_BYTES} bytes", snap.id),
                ));
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

    /// The header of a snapshot (strongly consistent), without messages.
    pub async fn get_header(&self, org: &Org, id: &str) -> Result<Option<Snapshot>, ApiError> {
        let out = self
            .client
            .get_item()
            .table_name(self.table)
            .key(PK, s(keys::snapshot(org, id)))
            .key(SK, s(META))
            .consistent_read(true)
            .send()
            .await
            .ctx("get snapshot")?;
        out.item.map(serde_dynamo::from_item).transpose().map_err(|e| ApiError::internal("decode snapshot", e))
    }

    /// A snapshot with its messages, in one paged Query of its partition.
    pub async fn get(&self, org: &Org, id: &str) -> Result<Option<(Snapshot, Vec<SnapshotMessage>)>, ApiError> {
        let mut pages = self
            .client
            .query()
            .table_name(self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(keys::snapshot(org, id)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let (mut header, mut chunks) = (None, HashMap::new());
        while let Some(item) = pages.next().await {
            let mut item = item.ctx("get snapshot")?;
            match item.get(SK).and_then(|v| v.as_s().ok()).cloned() {
                Some(sk) if sk == META => {
                    header = Some(
                        serde_dynamo::from_item::<_, Snapshot>(item)
                            .map_err(|e| ApiError::internal("decode snapshot", e))?,
                    )
                }
                Some(sk) => {
                    chunks.insert(sk, chunk_bytes(&mut item)?);
                }
                None => {}
            }
        }
        let Some(header) = header else { return Ok(None) };
        // Only the chunks the header committed: others are an uncommitted attempt's, expiring.
        let mut json = Vec::new();
        for i in 0..header.chunks {
            let part = chunks.remove(&chunk_sk(&header.chunk_set, i)).ok_or_else(|| {
                ApiError::internal("get snapshot", format!("snapshot {id} misses chunk {i} of {}", header.chunks))
            })?;
            json.extend(part);
        }
        let messages = decode_messages(&json)?;
        if messages.len() != header.message_count {
            return Err(ApiError::internal(
                "get snapshot",
                format!("snapshot {id} has {} of {} messages", messages.len(), header.message_count),
            ));
        }
        Ok(Some((header, messages)))
    }

    /// The messages of several snapshots, fetched by key with `BatchGetItem` (the headers say
    /// how many chunks each has), 100 keys a request: one round trip for a page of small
    /// snapshots instead of one Query each. Answers in the order of `snaps`; the read capacity
    /// DynamoDB reports is added to `stats`.
    pub async fn messages_of(
        &self,
        snaps: &[Snapshot],
        stats: &mut ReadStats,
    ) -> Result<Vec<Vec<SnapshotMessage>>, ApiError> {
        use std::collections::HashMap as Map;
        let keys: Vec<(String, String)> = snaps
            .iter()
            .flat_map(|snap| {
                let pk = keys::snapshot(&snap.org(), &snap.id);
                (0..snap.chunks).map(move |i| (pk.clone(), chunk_sk(&snap.chunk_set, i)))
            })
            .collect();
        let mut chunks: Map<(String, String), Vec<u8>> = Map::with_capacity(keys.len());
        for group in keys.chunks(100) {
            let mut pending: Vec<Map<String, AttributeValue>> =
                group.iter().map(|(pk, sk)| Map::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])).collect();
            for attempt in 0..10 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << attempt.min(5))).await;
                }
                let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .build()
                    .map_err(|e| ApiError::internal("batch get chunks", e))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(self.table, request)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .ctx("read snapshot messages")?;
                stats.capacity += out.consumed_capacity().iter().filter_map(|c| c.capacity_units).sum::<f64>();
                stats.scanned +=
                    out.responses.as_ref().and_then(|r| r.get(self.table)).map_or(0, |items| items.len() as i64);
                for mut item in out.responses.and_then(|mut r| r.remove(self.table)).unwrap_or_default() {
                    let key = (
                        item.get(PK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default(),
                        item.get(SK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default(),
                    );
                    chunks.insert(key, chunk_bytes(&mut item)?);
                }
                // Past 16 MB or under throttling DynamoDB answers part and returns the rest.
                pending =
                    out.unprocessed_keys.and_then(|mut u| u.remove(self.table)).map(|k| k.keys).unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(ApiError::new(ErrorKind::Unavailable, "Storage is busy; retry the export shortly"));
            }
        }
        snaps
            .iter()
            .map(|snap| {
                let pk = keys::snapshot(&snap.org(), &snap.id);
                let mut json = Vec::new();
                for i in 0..snap.chunks {
                    let part = chunks.remove(&(pk.clone(), chunk_sk(&snap.chunk_set, i))).ok_or_else(|| {
                        ApiError::internal("read snapshot messages", format!("snapshot {} misses chunk {i}", snap.id))
                    })?;
                    json.extend(part);
                }
                decode_messages(&json)
            })
            .collect()
    }

    /// One page of snapshots, newest first: `limit` items and the id to continue after.
    /// Each archive partition is one Query on the most selective index; other filters narrow it.
    pub async fn list(
        &self,
        org: &Org,
        filters: &Filters,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Snapshot>, Option<String>, ReadStats), ApiError> {
        let archived: &[bool] = match filters.archived {
            Archived::No => &[false],
            Archived::Yes => &[true],
            Archived::All => &[false, true],
        };
        let mut stats = ReadStats::default();
        let mut all = Vec::new();
        for &a in archived {
            let (mut items, part) = self.query_partition(org, filters, a, limit + 1, after).await?;
            stats.scanned += part.scanned;
            stats.capacity += part.capacity;
            all.append(&mut items);
        }
        // Both partitions are sorted by id descending; merged, the first `limit` are the page.
        all.sort_by(|a, b| b.id.cmp(&a.id));
        let next = if all.len() > limit { all.get(limit - 1).map(|s| s.id.clone()) } else { None };
        all.truncate(limit);
        Ok((all, next, stats))
    }

    /// The Query of one archive partition on the most selective index, newest first, with the
    /// other filters as a filter expression; `after` (exclusive) continues a listing.
    fn partition_query(
        &self,
        org: &Org,
        f: &Filters,
        archived: bool,
        after: Option<&str>,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let (index, value) = f.index();
        let lo = f.from.map(|t| id_bound(t, false)).unwrap_or_else(|| "0".repeat(24));
        let mut hi = f.to.map(|t| id_bound(t, true)).unwrap_or_else(|| "f".repeat(24));
        if let Some(after) = after.and_then(predecessor) {
            hi = hi.min(after);
        }
        let mut filters = Vec::new();
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":pk".into(), s(partition(org, archived, index, &value))),
            (":lo".into(), s(lo)),
            (":hi".into(), s(hi)),
        ]);
        if let (Some(q), false) = (&f.quality, index.name == GSI2.name) {
            filters.push("quality = :q");
            values.insert(":q".into(), s(q));
        }
        if let (Some(c), false) = (&f.category, index.name == GSI3.name) {
            filters.push("category = :c");
            values.insert(":c".into(), s(c));
        }
        let tag_filters: Vec<String> = (0..f.tags.len()).map(|i| format!("contains(tags, :t{i})")).collect();
        for (i, t) in f.tags.iter().enumerate() {
            values.insert(format!(":t{i}"), s(t));
        }
        // The id range is exact for ids that name their instant; `createdAt` is what `from` /
        // `to` mean, so it is checked too (it costs no read: a filter on items already read).
        if let Some(from) = f.from {
            filters.push("createdAt >= :from");
            values.insert(":from".into(), s(crate::time::to_rfc3339(ceil_ms(from))));
        }
        if let Some(to) = f.to {
            filters.push("createdAt <= :to");
            values.insert(":to".into(), s(crate::time::to_rfc3339(floor_ms(to))));
        }
        let filter = filters.into_iter().map(str::to_string).chain(tag_filters).collect::<Vec<_>>().join(" AND ");
        self.client
            .query()
            .table_name(self.table)
            .index_name(index.name)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", index.pk)
            .expression_attribute_names("#sk", index.sk)
            .set_expression_attribute_values(Some(values))
            .set_filter_expression((!filter.is_empty()).then_some(filter))
            .scan_index_forward(false)
    }

    async fn query_partition(
        &self,
        org: &Org,
        f: &Filters,
        archived: bool,
        want: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Snapshot>, ReadStats), ApiError> {
        let query = self.partition_query(org, f, archived, after);
        let mut out = Vec::new();
        let mut stats = ReadStats::default();
        let mut start = None;
        loop {
            let page = query
                .clone()
                .limit((want - out.len()).max(1) as i32)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .ctx("list snapshots")?;
            stats.scanned += i64::from(page.scanned_count);
            stats.capacity += page.consumed_capacity.as_ref().and_then(|c| c.capacity_units).unwrap_or(0.0);
            let items: Vec<Snapshot> = serde_dynamo::from_items(page.items.unwrap_or_default())
                .map_err(|e| ApiError::internal("decode snapshots", e))?;
            out.extend(items);
            start = page.last_evaluated_key;
            if out.len() >= want || start.is_none() {
                break;
            }
        }
        out.truncate(want);
        Ok((out, stats))
    }

    /// One page of an organization's non-archived snapshots changed in `(after, up_to]`, oldest
    /// change first, continuing after the GSI5 sort key `start` (exclusive). Answers the page and
    /// whether more may follow.
    pub async fn changed(
        &self,
        org: &Org,
        after: &str,
        up_to: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Snapshot>, bool), ApiError> {
        // `<ts>#~` sorts after every `<ts>#<id>`, so the bounds are exclusive / inclusive.
        let lo = start.map_or_else(|| format!("{after}#~"), str::to_string);
        let exclusive_start = start.and_then(|key| {
            let id = key.split_once('#')?.1;
            Some(HashMap::from([
                (PK.to_string(), s(keys::snapshot(org, id))),
                (SK.to_string(), s(META)),
                (GSI5.pk.to_string(), s(keys::changed(org))),
                (GSI5.sk.to_string(), s(key)),
            ]))
        });
        let out = self
            .client
            .query()
            .table_name(self.table)
            .index_name(GSI5.name)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", GSI5.pk)
            .expression_attribute_names("#sk", GSI5.sk)
            .expression_attribute_values(":pk", s(keys::changed(org)))
            .expression_attribute_values(":lo", s(lo))
            .expression_attribute_values(":hi", s(format!("{up_to}#~")))
            .set_exclusive_start_key(exclusive_start)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .ctx("list changed snapshots")?;
        let items: Vec<Snapshot> = serde_dynamo::from_items(out.items.unwrap_or_default())
            .map_err(|e| ApiError::internal("decode snapshots", e))?;
        Ok((items, out.last_evaluated_key.is_some()))
    }

    /// How many snapshots `filters` match (a `COUNT` query per archive partition).
    pub async fn count(&self, org: &Org, filters: &Filters) -> Result<u64, ApiError> {
        let archived: &[bool] = match filters.archived {
            Archived::No => &[false],
            Archived::Yes => &[true],
            Archived::All => &[false, true],
        };
        let mut total = 0u64;
        for &a in archived {
            let q = self.partition_query(org, filters, a, None);
            let mut start = None;
            loop {
                let page = q
                    .clone()
                    .select(aws_sdk_dynamodb::types::Select::Count)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .ctx("count snapshots")?;
                total += page.count.max(0) as u64;
                start = page.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Applies a patch with an optimistic-concurrency loop: a concurrent change re-reads and
    /// re-applies, so no field is ever lost; with `if_match` (the `updatedAt` values the client
    /// accepts, any one of them) a document whose `updatedAt` is none of them answers 412
    /// instead, and the write is conditional on the stored `updatedAt` still being the one matched.
    pub async fn patch(
        &self,
        org: &Org,
        id: &str,
        patch: &PatchInput,
        if_match: Option<&[String]>,
    ) -> Result<Snapshot, ApiError> {
        for attempt in 0..PATCH_ATTEMPTS {
            if attempt > 0 {
                // Full jitter: writers that collided on one snapshot spread out instead of
                // colliding again in lockstep (about 1.6 s of waiting at most, on average).
                use rand::Rng;
                let cap = 10u64 << attempt.min(6);
                let wait = rand::rng().random_range(0..=cap); // the generator is not Send: drop it before awaiting
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            let Some(mut snap) = self.get_header(org, id).await? else {
                return Err(not_found());
            };
            if if_match.is_some_and(|tags| !tags.contains(&snap.updated_at)) {
                return Err(precondition_failed());
            }
            let read_version = snap.version;
            let matched = if_match.map(|_| snap.updated_at.clone());
            patch.apply(&mut snap);
            let now = crate::time::now_rfc3339();
            snap.updated_at = if now > snap.updated_at { now } else { bump(&snap.updated_at) };
            snap.version += 1;
            let (set, remove) = index_keys(&snap);
            let mut values: HashMap<String, AttributeValue> = HashMap::from([
                (":notes".into(), opt(&snap.notes)),
                (":tags".into(), AttributeValue::L(snap.tags.iter().map(s).collect())),
                (":quality".into(), opt(&snap.quality)),
                (":category".into(), opt(&snap.category)),
                (":archived".into(), AttributeValue::Bool(snap.is_archived)),
                (":updated".into(), s(&snap.updated_at)),
                (":version".into(), AttributeValue::N(snap.version.to_string())),
                (":read".into(), AttributeValue::N(read_version.to_string())),
            ]);
            let mut sets = vec![
                "notes = :notes".to_string(),
                "tags = :tags".into(),
                "quality = :quality".into(),
                "category = :category".into(),
                "isArchived = :archived".into(),
                "updatedAt = :updated".into(),
                "version = :version".into(),
            ];
            for (i, (k, v)) in set.into_iter().enumerate() {
                sets.push(format!("{k} = :k{i}"));
                values.insert(format!(":k{i}"), s(v));
            }
            let mut expr = format!("SET {}", sets.join(", "));
            if !remove.is_empty() {
                expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
            }
            // Unchanged since read; with If-Match, still at the `updatedAt` that matched (a
            // change in between fails the condition, and the re-read answers 412).
            let condition = match matched {
                Some(m) => {
                    values.insert(":matched".into(), s(m));
                    "version = :read AND updatedAt = :matched"
                }
                None => "version = :read",
            };
            let result = self
                .client
                .update_item()
                .table_name(self.table)
                .key(PK, s(keys::snapshot(org, id)))
                .key(SK, s(META))
                .update_expression(expr)
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(snap),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => continue,
                Err(e) => return Err(crate::error::from_sdk("patch snapshot", e)),
            }
        }
        Err(ApiError::new(ErrorKind::Unavailable, "The snapshot is being changed concurrently; retry shortly"))
    }

    /// Deletes a snapshot and its message chunks. `Ok(false)` when there was none.
    ///
    /// One transaction deletes the header and gives its chunks an expiry (they are invisible
    /// once the header is gone), so whatever fails afterwards, nothing stays forever. The chunks
    /// are then removed right away, best effort; a delete of a snapshot that is gone removes
    /// any expiring chunks left in its partition.
    pub async fn delete(&self, org: &Org, id: &str) -> Result<bool, ApiError> {
        let pk = keys::snapshot(org, id);
        let Some(header) = self.get_header(org, id).await? else {
            self.delete_expiring(&pk).await?;
            return Ok(false);
        };
        if header.chunks > MAX_CHUNKS {
            return Err(ApiError::internal(
                "delete snapshot",
                format!("snapshot {id} has {} chunks, at most {MAX_CHUNKS}", header.chunks),
            ));
        }
        let build = |e| ApiError::internal("build snapshot delete", e);
        let delete = Delete::builder()
            .table_name(self.table)
            .key(PK, s(&pk))
            .key(SK, s(META))
            .condition_expression(format!("attribute_exists({PK})"))
            .build()
            .map_err(build)?;
        let mut items = vec![TransactWriteItem::builder().delete(delete).build()];
        // Expired at once: DynamoDB removes them within days unless removed below first.
        let now = AttributeValue::N(crate::auth::now_epoch().to_string());
        for i in 0..header.chunks {
            let update = Update::builder()
                .table_name(self.table)
                .key(PK, s(&pk))
                .key(SK, s(chunk_sk(&header.chunk_set, i)))
                .update_expression(format!("SET {TTL} = :now"))
                .expression_attribute_values(":now", now.clone())
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => {}
            Err(err) => {
                let gone = match err.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
                        .cancellation_reasons()
                        .first()
                        .and_then(|r| r.code())
                        .is_some_and(|c| c == "ConditionalCheckFailed"),
                    _ => false,
                };
                if gone {
                    // A concurrent delete won.
                    return Ok(false);
                }
                return Err(crate::error::from_sdk("delete snapshot", err));
            }
        }
        let requests = (0..header.chunks)
            .filter_map(|i| {
                let key =
                    HashMap::from([(PK.to_string(), s(&pk)), (SK.to_string(), s(chunk_sk(&header.chunk_set, i)))]);
                DeleteRequest::builder().set_key(Some(key)).build().ok()
            })
            .map(|d| WriteRequest::builder().delete_request(d).build())
            .collect();
        if let Err(e) = self.batch_write(requests, "delete snapshot chunks").await {
            tracing::warn!(snapshot = %id, error = %e, "deleted snapshot's chunks left to expire");
        }
        Ok(true)
    }

    /// Removes the expiring items of a snapshot partition without a header (chunks of a failed
    /// create or a delete): each only while it still carries an expiry, so a chunk that a
    /// concurrent create commits in between is never removed.
    async fn delete_expiring(&self, pk: &str) -> Result<(), ApiError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(self.table)
            .key_condition_expression("PK = :pk")
            .filter_expression(format!("attribute_exists({TTL})"))
            .expression_attribute_values(":pk", s(pk))
            .projection_expression("PK, SK")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            keys.push(item.ctx("list snapshot chunks")?);
        }
        let deletes = keys.into_iter().map(|key| async move {
            let deleted = self
                .client
                .delete_item()
                .table_name(self.table)
                .set_key(Some(key))
                .condition_expression(format!("attribute_exists({TTL})"))
                .send()
                .await;
            match deleted {
                Err(e) if !e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                    Err(crate::error::from_sdk("delete snapshot chunk", e))
                }
                _ => Ok(()),
            }
        });
        try_join_all(deletes).await.map(|_| ())
    }

    /// `BatchWriteItem`, 25 requests at a time, retrying unprocessed ones with backoff.
    async fn batch_write(&self, requests: Vec<WriteRequest>, context: &'static str) -> Result<(), ApiError> {
        for batch in requests.chunks(25) {
            let mut pending = batch.to_vec();
            for attempt in 0..8 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let out =
                    self.client.batch_write_item().request_items(self.table, pending).send().await.ctx(context)?;
                pending = out.unprocessed_items.and_then(|mut u| u.remove(self.table)).unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(ApiError::new(ErrorKind::Unavailable, "Storage is busy; retry shortly"));
            }
        }
        Ok(())
    }
}

/// Read-modify-write attempts of a PATCH before it answers 503 (each after a jittered backoff).
const PATCH_ATTEMPTS: u32 = 10;

fn opt(v: &Option<String>) -> AttributeValue {
    v.as_ref().map_or(AttributeValue::Null(true), s)
}

/// One millisecond after an RFC 3339 timestamp, so `updatedAt` strictly grows.
fn bump(ts: &str) -> String {
    crate::time::parse_rfc3339(ts)
        .map(|t| crate::time::to_rfc3339(t + chrono::Duration::milliseconds(1)))
        .unwrap_or_else(crate::time::now_rfc3339)
}

/// Tether's 404 for snapshots.
pub fn not_found() -> ApiError {
    ApiError::not_found("Training snapshot not found")
}

fn precondition_failed() -> ApiError {
    ApiError::new(
        ErrorKind::PreconditionFailed,
        "The snapshot changed since it was read (If-Match does not match updatedAt)",
    )
}

/// The bytes of one chunk item.
fn chunk_bytes(item: &mut HashMap<String, AttributeValue>) -> Result<Vec<u8>, ApiError> {
    match item.remove(DATA) {
        Some(AttributeValue::B(blob)) => Ok(blob.into_inner()),
        _ => Err(ApiError::internal("read snapshot messages", "chunk item without data")),
    }
}

fn decode_messages(json: &[u8]) -> Result<Vec<SnapshotMessage>, ApiError> {
    serde_json::from_slice(json).map_err(|e| ApiError::internal("decode snapshot messages", e))
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
        let mut items = SnapshotStore::chunk_items(&mut snap, &messages, None).unwrap();
        assert_eq!(snap.chunks, items.len());
        assert!(items.len() > 40);
        let mut json = Vec::new();
        for item in &mut items {
            let bytes = chunk_bytes(item).unwrap();
            assert!(bytes.len() <= CHUNK_BYTES);
            json.extend(bytes);
        }
        assert_eq!(decode_messages(&json).unwrap(), messages);
        assert_eq!(predecessor("000000000000000000000010").as_deref(), Some("00000000000000000000000f"));
        assert_eq!(predecessor("000000000000000000000000"), None);
    }

    #[test]
    fn id_bounds_are_exactly_the_created_at_window() {
        let t = |s: &str| crate::time::parse_rfc3339(s).unwrap();
        let id = crate::ids::object_id_at(t("2026-11-20T10:00:37.279Z"));
        let inside = |from: &str, to: &str| id_bound(t(from), false) <= id && id <= id_bound(t(to), true);
        assert!(inside("2026-11-20T10:00:37.000Z", "2026-11-20T10:00:38Z"), "from at the start of its second");
        assert!(inside("2026-11-20T10:00:37.279Z", "2026-11-20T10:00:37.279Z"), "both bounds inclusive");
        assert!(!inside("2026-11-20T10:00:37.280Z", "2026-11-20T10:01:00Z"));
        assert!(!inside("2026-11-20T10:00:00Z", "2026-11-20T10:00:36.999Z"), "to before it");
        assert!(!inside("2026-11-20T10:00:37.2791Z", "2026-11-20T10:01:00Z"), "from after it by less than 1 ms");
        assert!(inside("2026-11-20T10:00:00Z", "2026-11-20T10:00:37.2799Z"), "to after it by less than 1 ms");
    }
}
