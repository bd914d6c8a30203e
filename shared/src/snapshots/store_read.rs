//! Snapshot reads: a header, a whole snapshot, and the messages of a page of snapshots.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnConsumedCapacity};

use super::chunks::{chunk_bytes, chunk_sk, decode_messages};
use super::model::{Snapshot, SnapshotMessage};
use super::store::{s, SnapshotStore, META, TOMBSTONE};
use super::store_filters::ReadStats;
use crate::keys::{self, Org};
use crate::store_error::{SdkResultExt, StoreError};
use crate::table::{PK, SK};

/// The key of a chunk item: its partition and sort keys.
type ChunkKey = (String, String);

impl SnapshotStore<'_> {
    /// The header of a snapshot (strongly consistent), without messages.
    pub async fn get_header(&self, org: &Org, id: &str) -> Result<Option<Snapshot>, StoreError> {
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
        out.item.map(serde_dynamo::from_item).transpose().map_err(|e| StoreError::fault("decode snapshot", e))
    }

    /// A snapshot with its messages, in one paged Query of its partition.
    pub async fn get(&self, org: &Org, id: &str) -> Result<Option<(Snapshot, Vec<SnapshotMessage>)>, StoreError> {
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
                            .map_err(|e| StoreError::fault("decode snapshot", e))?,
                    )
                }
                // A deleted snapshot's record: nothing to read.
                Some(sk) if sk == TOMBSTONE => {}
                Some(sk) => {
                    chunks.insert(sk, chunk_bytes(&mut item)?);
                }
                None => {}
            }
        }
        let Some(mut header) = header else { return Ok(None) };
        // In the header, or only the chunks it committed: others expire (an earlier version's
        // failed create).
        let mut json = header.inline.take().map(String::into_bytes).unwrap_or_default();
        for i in 0..header.chunks {
            let part = chunks.remove(&chunk_sk(&header.chunk_set, i)).ok_or_else(|| {
                StoreError::fault("get snapshot", format!("snapshot {id} misses chunk {i} of {}", header.chunks))
            })?;
            json.extend(part);
        }
        let messages = decode_messages(&json)?;
        if messages.len() != header.message_count {
            return Err(StoreError::fault(
                "get snapshot",
                format!("snapshot {id} has {} of {} messages", messages.len(), header.message_count),
            ));
        }
        Ok(Some((header, messages)))
    }

    /// The messages of several snapshots: from their headers, or their chunks fetched by key with
    /// `BatchGetItem` (the headers say how many chunks each has), 100 keys a request: one round
    /// trip for a page of snapshots instead of one Query each. Answers in the order of `snaps`;
    /// the read capacity DynamoDB reports is added to `stats`.
    pub async fn messages_of(
        &self,
        snaps: &[Snapshot],
        stats: &mut ReadStats,
    ) -> Result<Vec<Vec<SnapshotMessage>>, StoreError> {
        let keys: Vec<ChunkKey> = snaps
            .iter()
            .flat_map(|snap| {
                let pk = keys::snapshot(&snap.org(), &snap.id);
                (0..snap.chunks).map(move |i| (pk.clone(), chunk_sk(&snap.chunk_set, i)))
            })
            .collect();
        let mut chunks: HashMap<ChunkKey, Vec<u8>> = HashMap::with_capacity(keys.len());
        for group in keys.chunks(100) {
            self.batch_get_chunks(group, &mut chunks, stats).await?;
        }
        snaps
            .iter()
            .map(|snap| {
                if let Some(json) = &snap.inline {
                    return decode_messages(json.as_bytes());
                }
                let pk = keys::snapshot(&snap.org(), &snap.id);
                let mut json = Vec::new();
                for i in 0..snap.chunks {
                    let part = chunks.remove(&(pk.clone(), chunk_sk(&snap.chunk_set, i))).ok_or_else(|| {
                        StoreError::fault("read snapshot messages", format!("snapshot {} misses chunk {i}", snap.id))
                    })?;
                    // Most snapshots are one chunk: taken as it is, not copied.
                    if json.is_empty() {
                        json = part;
                    } else {
                        json.extend(part);
                    }
                }
                decode_messages(&json)
            })
            .collect()
    }

    /// Reads the chunk items of `group` (at most 100 keys) into `chunks` with `BatchGetItem`,
    /// retrying the keys DynamoDB leaves unprocessed with backoff; adds its reads to `stats`.
    async fn batch_get_chunks(
        &self,
        group: &[ChunkKey],
        chunks: &mut HashMap<ChunkKey, Vec<u8>>,
        stats: &mut ReadStats,
    ) -> Result<(), StoreError> {
        let mut pending: Vec<HashMap<String, AttributeValue>> =
            group.iter().map(|(pk, sk)| HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])).collect();
        for attempt in 0..crate::retry::BATCH_GET.attempts {
            if pending.is_empty() {
                break;
            }
            crate::retry::BATCH_GET.wait(attempt).await;
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .build()
                .map_err(|e| StoreError::fault("batch get chunks", e))?;
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
            pending = out.unprocessed_keys.and_then(|mut u| u.remove(self.table)).map(|k| k.keys).unwrap_or_default();
        }
        if !pending.is_empty() {
            return Err(StoreError::contended("batch get chunks", format!("{} keys unprocessed", pending.len())));
        }
        Ok(())
    }
}
