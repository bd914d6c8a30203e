//! Reading ahead of a snapshot export: a background task pages through the snapshots and
//! fetches the messages of the next groups (several `BatchGetItem` requests in flight) while
//! the export encodes and uploads the current one.
//!
//! Groups arrive in order, so the file is byte for byte what reading one group at a time
//! gives, and a job's positions stay exact: the read-ahead is only ever ahead of what was
//! produced, and a resumed job starts a new one after its checkpoint. Memory stays bounded:
//! a group holds at most [`GROUP_CHUNKS`] message chunks; at most `EXPORT_READ_AHEAD` groups
//! ([`FETCHES_AHEAD`] by default) are being fetched, one waits in the channel, one is being
//! handed over and one is encoded, whatever the size of the export.

use aws_sdk_dynamodb::Client;
use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::split::Keep;
use crate::keys::Org;
use crate::snapshots::store::{Filters, ReadStats, SnapshotStore};
use crate::snapshots::{Snapshot, SnapshotMessage};
use crate::store_error::StoreError;

/// Snapshot headers per page (they are small: fewer round trips).
pub const SNAPSHOT_PAGE: usize = 500;
/// Most message chunks in one group (one `BatchGetItem` of 100 keys; ~35 MB at the very worst).
pub const GROUP_CHUNKS: usize = 100;
/// Groups whose messages are fetched at once, ahead of the one being encoded (the default of
/// `EXPORT_READ_AHEAD`).
pub const FETCHES_AHEAD: usize = crate::config::EXPORT_READ_AHEAD;

/// A group of snapshots in export order, with the messages of those the export keeps.
#[derive(Debug, Default)]
pub struct Group {
    /// The snapshots, in export order.
    pub snapshots: Vec<Snapshot>,
    /// Each snapshot's messages; `None` for one the export does not keep (not read).
    pub messages: Vec<Option<Vec<SnapshotMessage>>>,
    /// What reading this group cost (its page's Query is counted with its first group).
    pub reads: ReadStats,
    /// No group follows.
    pub last: bool,
}

/// The groups of a snapshot export after a position, read in the background (or, with no
/// read-ahead, each when it is asked for).
pub enum ReadAhead {
    /// A background task reads ahead.
    Background {
        /// Groups, in order.
        groups: mpsc::Receiver<Result<Group, StoreError>>,
        /// The task (stopped when the export stops).
        task: JoinHandle<()>,
    },
    /// Nothing is read ahead (`EXPORT_READ_AHEAD=0`): the sequential export.
    OnDemand {
        /// What is read.
        source: Arc<Source>,
        /// Groups of the current page not yet fetched.
        queued: VecDeque<Pending>,
        /// Where the next page starts (`None`: no page is left).
        next_page: Option<Option<String>>,
    },
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // An export that stops early (an error, a job's budget) stops reading too.
        if let Self::Background { task, .. } = self {
            task.abort();
        }
    }
}

/// What the background task reads.
pub struct Source {
    /// DynamoDB.
    pub dynamo: Client,
    /// The table.
    pub table: String,
    /// The organization.
    pub org: Org,
    /// Which snapshots.
    pub filters: Filters,
    /// Continue after this snapshot id (exclusive).
    pub after: Option<String>,
    /// Only these snapshots' messages are read.
    pub keep: Option<Keep>,
}

impl ReadAhead {
    /// Starts reading `source`, `ahead` groups ahead in the background (0: none).
    pub fn start(source: Source, ahead: usize) -> Self {
        if ahead == 0 {
            let next_page = Some(source.after.clone());
            return Self::OnDemand { source: Arc::new(source), queued: VecDeque::new(), next_page };
        }
        let (tx, groups) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            if let Err(e) = run(source, ahead, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Self::Background { groups, task }
    }

    /// The next group, in order; `None` once the last was taken.
    pub async fn next(&mut self) -> Result<Option<Group>, StoreError> {
        match self {
            Self::Background { groups, .. } => groups.recv().await.transpose(),
            Self::OnDemand { source, queued, next_page } => {
                if queued.is_empty() {
                    let Some(after) = next_page.take() else { return Ok(None) };
                    let (groups, next) = source.clone().page(after).await?;
                    *next_page = next.map(Some);
                    queued.extend(groups);
                }
                match queued.pop_front() {
                    Some(group) => source.clone().fetch(group).await.map(Some),
                    None => Ok(None),
                }
            }
        }
    }
}

/// Cuts a page into groups of at most [`GROUP_CHUNKS`] chunks (a snapshot over it alone).
fn groups_of(page: Vec<Snapshot>) -> Vec<Vec<Snapshot>> {
    let mut groups: Vec<Vec<Snapshot>> = Vec::new();
    let mut chunks = 0;
    for s in page {
        match groups.last_mut() {
            Some(g) if chunks + s.chunks <= GROUP_CHUNKS => {
                chunks += s.chunks;
                g.push(s);
            }
            _ => {
                chunks = s.chunks;
                groups.push(vec![s]);
            }
        }
    }
    groups
}

impl Source {
    /// The Query of the page after `after`, as groups (the first carries the Query's reads).
    async fn page(self: Arc<Self>, after: Option<String>) -> Result<(Vec<Pending>, Option<String>), StoreError> {
        let store = SnapshotStore::new(&self.dynamo, &self.table);
        let (snapshots, next, stats) = store.list(&self.org, &self.filters, SNAPSHOT_PAGE, after.as_deref()).await?;
        let mut groups = groups_of(snapshots);
        if groups.is_empty() {
            groups.push(Vec::new());
        }
        let count = groups.len();
        let pending = groups.into_iter().enumerate().map(|(i, snapshots)| Pending {
            snapshots,
            reads: if i == 0 { stats } else { ReadStats::default() },
            last: next.is_none() && i + 1 == count,
        });
        Ok((pending.collect(), next))
    }

    /// The messages of the kept snapshots of a group.
    async fn fetch(self: Arc<Self>, group: Pending) -> Result<Group, StoreError> {
        let Pending { snapshots, mut reads, last } = group;
        let store = SnapshotStore::new(&self.dynamo, &self.table);
        let kept: Vec<bool> = snapshots.iter().map(|s| self.keep.as_ref().is_none_or(|k| k.keeps(s))).collect();
        // Only the kept snapshots' messages are read (every snapshot's, without a split).
        let mut fetched = match &self.keep {
            None => store.messages_of(&snapshots, &mut reads).await?,
            Some(_) => {
                let wanted: Vec<Snapshot> =
                    snapshots.iter().zip(&kept).filter(|(_, k)| **k).map(|(s, _)| s.clone()).collect();
                store.messages_of(&wanted, &mut reads).await?
            }
        }
        .into_iter();
        let messages = kept.iter().map(|k| if *k { fetched.next() } else { None }).collect();
        Ok(Group { snapshots, messages, reads, last })
    }
}

/// A group whose messages are still to be read.
pub struct Pending {
    snapshots: Vec<Snapshot>,
    reads: ReadStats,
    last: bool,
}

/// A spawned read: it goes on while the reader waits to hand a group over, and is stopped when
/// the reader stops (dropped).
struct Spawned<T>(JoinHandle<Result<T, StoreError>>);

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T: Send + 'static> Spawned<T> {
    fn start(read: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static) -> Self {
        Self(tokio::spawn(read))
    }

    async fn join(&mut self) -> Result<T, StoreError> {
        (&mut self.0).await.map_err(|e| StoreError::fault("read ahead", e))?
    }
}

/// Reads `source` into `tx`: the next page's Query runs while the current page's groups are
/// fetched, `ahead` at a time (each read a task of its own, so reads go on while a group waits
/// to be taken), and groups are sent in order. A failed read is passed on after the groups
/// before it, as reading one group at a time would.
async fn run(source: Source, ahead: usize, tx: &mpsc::Sender<Result<Group, StoreError>>) -> Result<(), StoreError> {
    let source = Arc::new(source);
    let mut queued: VecDeque<Pending> = VecDeque::new();
    let mut fetching: VecDeque<Spawned<Group>> = VecDeque::new();
    let mut paging = Some(Spawned::start(source.clone().page(source.after.clone())));
    let mut failed = None;
    loop {
        while fetching.len() < ahead {
            let Some(group) = queued.pop_front() else { break };
            fetching.push_back(Spawned::start(source.clone().fetch(group)));
        }
        let Some(first) = fetching.front_mut() else {
            // Nothing is being fetched: the next page is needed (or the reading failed).
            match (paging.as_mut(), failed.take()) {
                (_, Some(e)) => return Err(e),
                (Some(page), None) => {
                    let page = page.join().await;
                    paging = take_page(&source, page, &mut queued, &mut failed);
                    continue;
                }
                (None, None) => return Ok(()),
            }
        };
        tokio::select! {
            // Groups in order, as soon as the first in flight is read.
            group = first.join() => {
                fetching.pop_front();
                let group = group?;
                let last = group.last;
                if tx.send(Ok(group)).await.is_err() || last {
                    return Ok(());
                }
            }
            // The next page, read while groups are fetched (at most one page ahead).
            page = async { paging.as_mut()?.join().await.into() }, if paging.is_some() && queued.len() < ahead => {
                if let Some(page) = page {
                    paging = take_page(&source, page, &mut queued, &mut failed);
                }
            }
        }
    }
}

/// Takes a page that was read: its groups are queued and the read of the next page starts
/// (answered); a failed read is kept in `failed`, passed on once the groups before it are.
fn take_page(
    source: &Arc<Source>,
    page: Result<(Vec<Pending>, Option<String>), StoreError>,
    queued: &mut VecDeque<Pending>,
    failed: &mut Option<StoreError>,
) -> Option<Spawned<(Vec<Pending>, Option<String>)>> {
    match page {
        Ok((groups, next)) => {
            queued.extend(groups);
            next.map(|after| Spawned::start(source.clone().page(Some(after))))
        }
        Err(e) => {
            *failed = Some(e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hold_at_most_100_chunks_and_keep_the_order() {
        let snap = |id: usize, chunks: usize| {
            let mut s: Snapshot = serde_json::from_value(serde_json::json!({
                "_id": format!("{id:024}"), "organizationId": "o", "user": {"_id": "u"}, "contact": {"_id": "k"},
                "messageCount": 1, "snapshotDate": "", "isArchived": false, "createdAt": "", "updatedAt": ""
            }))
            .unwrap();
            s.chunks = chunks;
            s
        };
        let page: Vec<Snapshot> = (0..250).map(|i| snap(i, if i == 120 { 150 } else { 1 })).collect();
        let groups = groups_of(page);
        let sizes: Vec<usize> = groups.iter().map(|g| g.iter().map(|s| s.chunks).sum()).collect();
        assert_eq!(sizes, vec![100, 20, 150, 100, 29]);
        let ids: Vec<String> = groups.into_iter().flatten().map(|s| s.id).collect();
        assert_eq!(ids, (0..250).map(|i| format!("{i:024}")).collect::<Vec<_>>());
    }
}
