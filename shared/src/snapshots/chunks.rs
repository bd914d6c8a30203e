//! Chunk items: a snapshot's messages, their JSON array, cut into binary items beside its
//! header (see `store.rs`), their keys, and reading them back.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::model::{Snapshot, SnapshotMessage, MAX_MESSAGE_BYTES};
use crate::keys;
use crate::store_error::StoreError;
use crate::table::{PK, SK};

/// Bytes of the messages' JSON per chunk item (DynamoDB's item limit is 400 KB).
pub const CHUNK_BYTES: usize = 350_000;
/// Most chunks of a snapshot: its messages are at most [`MAX_MESSAGE_BYTES`] of JSON.
pub const MAX_CHUNKS: usize = MAX_MESSAGE_BYTES.div_ceil(CHUNK_BYTES);
// The commit and the delete are one transaction of the header and every chunk: DynamoDB takes
// at most 100 items and 4 MB (4 MiB) of items in one, so the chunks (at most MAX_MESSAGE_BYTES of
// data) and a header (notes, tags, labels: well under 100 KB) must fit.
// A delete transaction holds the header, every chunk and the deletion record: at most 100 items.
const _: () = assert!(MAX_CHUNKS < 99 && MAX_MESSAGE_BYTES + 100_000 <= 4 * 1024 * 1024);
/// The attribute of the messages' JSON: a chunk's slice of it (binary), or a header's whole
/// array (a string, [`Snapshot::inline`]).
pub(super) const DATA: &str = "data";

/// The sort key of chunk `i` of a write attempt's `set` (empty: the first attempt at an id).
pub(super) fn chunk_sk(set: &str, i: usize) -> String {
    if set.is_empty() {
        format!("MSGS#{i:05}")
    } else {
        format!("MSGS#{set}#{i:05}")
    }
}

/// The chunk items of `json`, the messages of `snap`, in its chunk set.
pub(super) fn chunk_items(snap: &mut Snapshot, json: &[u8]) -> Vec<HashMap<String, AttributeValue>> {
    let pk = keys::snapshot(&snap.org(), &snap.id);
    let items: Vec<_> = json
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, piece)| {
            HashMap::from([
                (PK.to_string(), AttributeValue::S(pk.clone())),
                (SK.to_string(), AttributeValue::S(chunk_sk(&snap.chunk_set, i))),
                (DATA.to_string(), AttributeValue::B(piece.to_vec().into())),
            ])
        })
        .collect();
    snap.chunks = items.len();
    items
}

/// The bytes of one chunk item.
pub(super) fn chunk_bytes(item: &mut HashMap<String, AttributeValue>) -> Result<Vec<u8>, StoreError> {
    match item.remove(DATA) {
        Some(AttributeValue::B(blob)) => Ok(blob.into_inner()),
        _ => Err(StoreError::fault("read snapshot messages", "chunk item without data")),
    }
}

pub(super) fn decode_messages(json: &[u8]) -> Result<Vec<SnapshotMessage>, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::fault("decode snapshot messages", e))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A message of `content` (the store's tests use it too).
    pub(in crate::snapshots) fn message(id: usize, content: String) -> SnapshotMessage {
        SnapshotMessage {
            id: format!("m{id}"),
            content,
            sender: "user".into(),
            sender_type: "AI".into(),
            timestamp: "2024-01-01T00:00:00.000Z".into(),
        }
    }

    /// A bare header of `count` messages.
    pub(in crate::snapshots) fn header(count: usize) -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "_id": "0".repeat(24), "organizationId": "o", "user": {"_id": "u"}, "contact": {"_id": "k"},
            "messageCount": count, "snapshotDate": "", "isArchived": false, "createdAt": "", "updatedAt": ""
        }))
        .unwrap()
    }

    #[test]
    fn chunks_stay_under_the_item_limit_and_reassemble_exactly() {
        // Control characters escape to six bytes each: the worst case for JSON size.
        let messages: Vec<_> = (0..30).map(|i| message(i, "\u{1}".repeat(90_000 + i))).collect();
        let mut snap = header(30);
        let json = serde_json::to_vec(&messages).unwrap();
        let mut items = chunk_items(&mut snap, &json);
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
}
