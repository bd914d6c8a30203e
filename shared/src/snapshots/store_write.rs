//! Snapshot writes after create: patch, delete (and its cleanup) and batched writes.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::transact_write_items::TransactWriteItemsError,
    types::{AttributeValue, Delete, TransactWriteItem, Update, WriteRequest},
};
use futures::future::try_join_all;

use super::model::{PatchInput, Snapshot};
use super::store::{
    changed_key, chunk_deletes, chunk_sk, index_keys, s, SnapshotStore, MAX_CHUNKS, META, NOT_FOUND, TOMBSTONE,
};
use crate::keys::{self, Org};
use crate::retry;
use crate::store_error::{SdkResultExt, StoreError};
use crate::table::{GSI5, PK, SK, TTL};

impl SnapshotStore<'_> {
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
    ) -> Result<Snapshot, StoreError> {
        for attempt in 0..retry::PATCH.attempts {
            retry::PATCH.wait(attempt).await;
            let Some(mut snap) = self.get_header(org, id).await? else {
                return Err(NOT_FOUND);
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
            let (expr, condition, values) = patch_update(&snap, read_version, matched);
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
                Err(e) => return Err(crate::store_error::from_sdk("patch snapshot", e)),
            }
        }
        Err(StoreError::contended("patch snapshot", format!("{} attempts", retry::PATCH.attempts)))
    }

    /// Deletes a snapshot and its message chunks. `Ok(false)` when there was none.
    ///
    /// One transaction deletes the header, gives its chunks an expiry (they are invisible once
    /// the header is gone), so whatever fails afterwards, nothing stays forever, and puts its
    /// deletion record (id and time only), which the scheduled export passes on and which
    /// expires after `record_for`. The chunks are then removed right away, best effort; a
    /// delete of a snapshot that is gone removes any expiring chunks left in its partition.
    pub async fn delete(&self, org: &Org, id: &str, record_for: std::time::Duration) -> Result<bool, StoreError> {
        let pk = keys::snapshot(org, id);
        let Some(header) = self.get_header(org, id).await? else {
            self.delete_expiring(&pk).await?;
            return Ok(false);
        };
        if header.chunks > MAX_CHUNKS {
            return Err(StoreError::fault(
                "delete snapshot",
                format!("snapshot {id} has {} chunks, at most {MAX_CHUNKS}", header.chunks),
            ));
        }
        let mut items = self.delete_items(&pk, &header)?;
        items.push(deletion_record(self.table, &pk, &header, record_for)?);
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
                return Err(crate::store_error::from_sdk("delete snapshot", err));
            }
        }
        let requests = chunk_deletes(&pk, &header.chunk_set, header.chunks);
        if let Err(e) = self.batch_write(requests, "delete snapshot chunks").await {
            tracing::warn!(snapshot = %id, error = %e, "deleted snapshot's chunks left to expire");
        }
        Ok(true)
    }

    /// The delete transaction: the header (while it exists) goes and its chunks get an expiry.
    fn delete_items(&self, pk: &str, header: &Snapshot) -> Result<Vec<TransactWriteItem>, StoreError> {
        let build = |e| StoreError::fault("build snapshot delete", e);
        let delete = Delete::builder()
            .table_name(self.table)
            .key(PK, s(pk))
            .key(SK, s(META))
            .condition_expression(format!("attribute_exists({PK})"))
            .build()
            .map_err(build)?;
        let mut items = vec![TransactWriteItem::builder().delete(delete).build()];
        // Expired at once: DynamoDB removes them within days unless `delete` removes them first.
        let now = AttributeValue::N(crate::auth::now_epoch().to_string());
        for i in 0..header.chunks {
            let update = Update::builder()
                .table_name(self.table)
                .key(PK, s(pk))
                .key(SK, s(chunk_sk(&header.chunk_set, i)))
                .update_expression(format!("SET {TTL} = :now"))
                .expression_attribute_values(":now", now.clone())
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        Ok(items)
    }

    /// Removes the expiring items of a snapshot partition without a header (chunks of a delete,
    /// or of a failed create of an earlier version): each only while it still carries an
    /// expiry, so a committed chunk is never removed.
    async fn delete_expiring(&self, pk: &str) -> Result<(), StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(self.table)
            .key_condition_expression("PK = :pk")
            .filter_expression(format!("attribute_exists({TTL}) AND {SK} <> :record"))
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":record", s(TOMBSTONE))
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
                    Err(crate::store_error::from_sdk("delete snapshot chunk", e))
                }
                _ => Ok(()),
            }
        });
        try_join_all(deletes).await.map(|_| ())
    }

    /// `BatchWriteItem`, 25 requests at a time, retrying unprocessed ones with backoff.
    pub(super) async fn batch_write(
        &self,
        requests: Vec<WriteRequest>,
        context: &'static str,
    ) -> Result<(), StoreError> {
        for batch in requests.chunks(25) {
            let mut pending = batch.to_vec();
            for attempt in 0..retry::BATCH_WRITE.attempts {
                if pending.is_empty() {
                    break;
                }
                retry::BATCH_WRITE.wait(attempt).await;
                let out =
                    self.client.batch_write_item().request_items(self.table, pending).send().await.ctx(context)?;
                pending = out.unprocessed_items.and_then(|mut u| u.remove(self.table)).unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(StoreError::contended(context, format!("{} items unprocessed", pending.len())));
            }
        }
        Ok(())
    }
}

/// The conditional update that writes the patched header `snap`, read at `read_version` (and
/// matched by If-Match at the `updatedAt` `matched`): its expression, condition and values.
fn patch_update(
    snap: &Snapshot,
    read_version: u64,
    matched: Option<String>,
) -> (String, &'static str, HashMap<String, AttributeValue>) {
    let (set, remove) = index_keys(snap);
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
    (expr, condition, values)
}

fn opt(v: &Option<String>) -> AttributeValue {
    v.as_ref().map_or(AttributeValue::Null(true), s)
}

/// One millisecond after an RFC 3339 timestamp, so `updatedAt` strictly grows.
fn bump(ts: &str) -> String {
    crate::time::parse_rfc3339(ts)
        .map(|t| crate::time::to_rfc3339(t + chrono::Duration::milliseconds(1)))
        .unwrap_or_else(crate::time::now_rfc3339)
}

fn precondition_failed() -> StoreError {
    StoreError::Changed { context: "patch snapshot" }
}

/// A deleted snapshot's record for the scheduled export's change feed (GSI5): its id and the
/// time of the delete, nothing of its content; DynamoDB removes it after `record_for`.
fn deletion_record(
    table: &str,
    pk: &str,
    header: &Snapshot,
    record_for: std::time::Duration,
) -> Result<TransactWriteItem, StoreError> {
    let deleted_at = crate::time::now_rfc3339();
    let expires = crate::auth::now_epoch() + record_for.as_secs();
    let put = aws_sdk_dynamodb::types::Put::builder()
        .table_name(table)
        .item(PK, s(pk))
        .item(SK, s(TOMBSTONE))
        .item("_id", s(&header.id))
        .item("organizationId", s(&header.organization_id))
        .item("deletedAt", s(&deleted_at))
        .item("createdAt", s(&header.created_at))
        .item(GSI5.pk, s(keys::changed(&header.org())))
        .item(GSI5.sk, s(changed_key(&deleted_at, &header.id)))
        .item(TTL, AttributeValue::N(expires.to_string()))
        .build()
        .map_err(|e| StoreError::fault("build snapshot deletion record", e))?;
    Ok(TransactWriteItem::builder().put(put).build())
}
