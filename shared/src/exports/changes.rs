//! A scheduled export's page of changes: snapshots created or changed in its window, written
//! as themselves, and snapshots deleted or archived in it, written as deletion records
//! (`{"id", "deleted": true, "deletedAt"}`: no customer data) so that a consumer mirroring the
//! dataset can honour an erasure. A snapshot created after the previous window (never in an
//! earlier file) and deleted or archived in this one needs no record and gets none.

use serde::Serialize;

use super::producer::{Item, Producer, Window};
use crate::error::ApiError;
use crate::snapshots::store::{Change, SnapshotStore};
use crate::snapshots::Snapshot;

/// Changes read per page.
const CHANGE_PAGE: usize = 500;

/// A deletion record's line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeletionRecord<'a> {
    id: &'a str,
    deleted: bool,
    deleted_at: &'a str,
}

fn deletion_record(id: &str, at: &str) -> Result<Vec<u8>, ApiError> {
    let mut line = serde_json::to_vec(&DeletionRecord { id, deleted: true, deleted_at: at })
        .map_err(|e| ApiError::internal("encode deletion record", e))?;
    line.push(b'\n');
    Ok(line)
}

/// The snapshot a change writes as itself (`None`: a deletion, or an archive).
fn live(change: &Change) -> Option<&Snapshot> {
    match change {
        Change::Snapshot(s) if !s.is_archived => Some(s),
        _ => None,
    }
}

impl Producer<'_> {
    /// The next group of the window's changes, in the order of the change feed.
    pub(super) async fn change_page(&mut self, window: &Window) -> Result<Vec<Item>, ApiError> {
        let store = SnapshotStore::new(&self.state.dynamo, &self.state.config.table_name);
        if self.changes.is_empty() && !self.source_done {
            let (page, more) =
                store.changed(&self.org, &window.after, &window.up_to, self.position.as_deref(), CHANGE_PAGE).await?;
            self.changes = page.into();
            self.source_done = !more;
        }
        // At most 100 message chunks in memory, as for every export.
        let (mut take, mut chunks) = (0, 0);
        while take < self.changes.len() {
            let next = live(&self.changes[take]).map_or(0, |s| s.chunks);
            if take > 0 && chunks + next > 100 {
                break;
            }
            chunks += next;
            take += 1;
        }
        let group: Vec<Change> = self.changes.drain(..take).collect();
        self.done = self.changes.is_empty() && self.source_done;
        let live_ones: Vec<Snapshot> = group.iter().filter_map(live).cloned().collect();
        let mut messages = store.messages_of(&live_ones, &mut self.reads).await?.into_iter();
        let Some(encoder) = self.encoder.as_mut() else { return Err(ApiError::internal("export", "no encoder")) };
        let earlier = |created: &str| created <= window.after.as_str();
        let mut items = Vec::with_capacity(group.len());
        for change in &group {
            let bytes = match change {
                Change::Snapshot(s) if !s.is_archived => {
                    self.stages.snapshot(encoder, s, &messages.next().unwrap_or_default())?
                }
                Change::Snapshot(s) if earlier(&s.created_at) => deletion_record(&s.id, &s.updated_at)?,
                Change::Deleted { id, at, created } if earlier(created) => deletion_record(id, at)?,
                Change::Snapshot(_) | Change::Deleted { .. } => Vec::new(),
            };
            if !bytes.is_empty() && live(change).is_none() {
                encoder.counts.deletions += 1;
            }
            items.push(Item { bytes, position: change.position(), counts: encoder.counts, mark: self.stages.mark() });
        }
        self.counts = encoder.counts;
        Ok(items)
    }
}
