//! One chunk's transaction of [`ConvoStore::ingest`]: the message puts, the header's counters
//! under its version, and what a cancelled transaction says about each message.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    error::SdkError,
    operation::transact_write_items::TransactWriteItemsError,
    types::{AttributeValue, Put, TransactWriteItem, Update},
};

use crate::convos::model::Message;
use crate::convos::store::{activity_sk, convo_sk, n, s, ConvoStore, IngestOutcome, MAX_VERSION_RETRIES, NOT_FOUND};
use crate::keys::{self, Org};
use crate::store_error::StoreError;
use crate::table::{LSI1, PK, SK};

impl ConvoStore<'_> {
    /// Writes one chunk of [`Self::ingest`], retrying while the header's version races and
    /// dropping the messages already stored; counts into `outcome`.
    pub(super) async fn ingest_chunk(
        &self,
        org: &Org,
        agent: &str,
        convo: &str,
        chunk: &[Message],
        outcome: &mut IngestOutcome,
    ) -> Result<(), StoreError> {
        let pk = keys::messages(org, agent, convo);
        let mut pending: Vec<&Message> = chunk.iter().collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            if attempts > MAX_VERSION_RETRIES + chunk.len() {
                return Err(StoreError::contended("ingest messages", format!("{attempts} attempts")));
            }
            let header = &outcome.convo;
            let first = pending.iter().map(|m| m.ts.as_str()).chain(header.first_message_ts.as_deref()).min();
            let last = pending.iter().map(|m| m.ts.as_str()).chain(header.last_message_ts.as_deref()).max();
            let (Some(first), Some(last)) = (first.map(str::to_owned), last.map(str::to_owned)) else {
                break;
            };
            let mut items = message_puts(self.table, &pk, &pending)?;
            let now = crate::time::now_rfc3339();
            let bump = HeaderBump { added: pending.len(), first: &first, last: &last, now: &now };
            items.push(header_update(self.table, org, agent, convo, header.version, &bump)?);
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => {
                    let header = &mut outcome.convo;
                    outcome.inserted += pending.len();
                    header.messages_num += pending.len() as u64;
                    header.first_message_ts = Some(first);
                    header.last_message_ts = Some(last);
                    header.updated_at = now;
                    header.version += 1;
                    pending.clear();
                }
                Err(err) => {
                    let (kept, header_failed) = drop_cancelled(err, &pending)?;
                    outcome.duplicates += pending.len() - kept.len();
                    pending = kept;
                    if header_failed {
                        // Another writer moved the header on (or it vanished): read it again.
                        outcome.convo = self.get_header(org, agent, convo).await?.ok_or(NOT_FOUND)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One put per message, each only if the message is not stored yet.
fn message_puts(table: &str, pk: &str, pending: &[&Message]) -> Result<Vec<TransactWriteItem>, StoreError> {
    let mut items = Vec::with_capacity(pending.len() + 1);
    for m in pending {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(m).map_err(|e| StoreError::fault("encode message", e))?;
        item.insert(PK.into(), s(pk));
        item.insert(SK.into(), s(format!("MSG#{}", m.id)));
        item.insert(LSI1.sk.into(), s(format!("{}#{}", m.ts, m.id)));
        item.insert("type".into(), s("text"));
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .map_err(|e| StoreError::fault("build message put", e))?;
        items.push(TransactWriteItem::builder().put(put).build());
    }
    Ok(items)
}

/// What one chunk changes on the header.
struct HeaderBump<'b> {
    added: usize,
    first: &'b str,
    last: &'b str,
    now: &'b str,
}

/// The header's counters update, only while the header is still at `version`.
fn header_update(
    table: &str,
    org: &Org,
    agent: &str,
    convo: &str,
    version: u64,
    bump: &HeaderBump<'_>,
) -> Result<TransactWriteItem, StoreError> {
    let update = Update::builder()
        .table_name(table)
        .key(PK, s(keys::agent(org, agent)))
        .key(SK, s(convo_sk(convo)))
        .update_expression(
            "SET messagesNum = messagesNum + :n, firstMessageTS = :first, lastMessageTS = :last, \
             GSI1SK = :activity, updatedAt = :now, version = version + :one",
        )
        .condition_expression("version = :v")
        .expression_attribute_values(":n", n(bump.added as u64))
        .expression_attribute_values(":first", s(bump.first))
        .expression_attribute_values(":last", s(bump.last))
        .expression_attribute_values(":activity", s(activity_sk(bump.last, convo)))
        .expression_attribute_values(":now", s(bump.now))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":v", n(version))
        .build()
        .map_err(|e| StoreError::fault("build header update", e))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// The messages of a cancelled transaction still to write (those not already stored), and
/// whether the header's condition failed too (or the reasons are missing). Any other error is returned.
fn drop_cancelled<'m, R>(
    err: SdkError<TransactWriteItemsError, R>,
    pending: &[&'m Message],
) -> Result<(Vec<&'m Message>, bool), StoreError>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let reasons = match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => e.cancellation_reasons().to_vec(),
        _ => return Err(crate::store_error::from_sdk("ingest messages", err)),
    };
    let failed = |i: usize| reasons.get(i).and_then(|r| r.code()).is_some_and(|c| c == "ConditionalCheckFailed");
    let before = pending.len();
    let kept: Vec<&Message> = pending.iter().enumerate().filter(|(i, _)| !failed(*i)).map(|(_, m)| *m).collect();
    Ok((kept, failed(before) || reasons.is_empty()))
}
