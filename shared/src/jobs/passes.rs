//! A job's files, one pass over the source each. A job without a split has one file; a split
//! job writes `train`, then `validation` and `test` (those with a share), each pass keeping the
//! snapshots of its split, so every pass is a plain resumable export of one file. The reads are
//! repeated per file (the price of exact, resumable files without holding any in memory).
//!
//! Which split a group belongs to is decided once, when the job starts, from every matching
//! snapshot (`exports::split`), and stored beside the files as `split-assignment.json` with the
//! newest snapshot then (`upTo`); every pass and every invocation reads that same assignment and
//! keeps no snapshot newer than `upTo`, so the files are disjoint and cover every example of
//! that data set exactly once, whatever is created while the job runs.

use std::collections::HashMap;
use std::sync::Arc;

use super::model::Outcome;
use super::{Job, JobFile};
use crate::error::ApiError;
use crate::exports::counts::Counts;
use crate::exports::dedup::Deduper;
use crate::exports::objects::{get, put_json};
use crate::exports::producer::{ExportSpec, Keep};
use crate::exports::split::{Groups, Split, SplitSpec};
use crate::snapshots::store::SnapshotStore;
use crate::AppState;

/// One file of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Its place among the job's passes.
    pub index: usize,
    /// The split it holds (`None`: the job does not split).
    pub split: Option<Split>,
    /// Its object key.
    pub key: String,
    /// Its download name.
    pub name: String,
}

/// The files earlier passes finished, their counts, and the dedup state they leave.
#[derive(Debug, Clone, Default)]
pub struct Earlier {
    /// The files.
    pub files: Vec<JobFile>,
    /// What they hold.
    pub counts: Counts,
    /// What dedup kept in them (`None`: the job does not dedup, or it starts fresh).
    pub dedup: Option<Deduper>,
}

impl Earlier {
    /// The dedup journal's segments that hold what the earlier files kept.
    pub fn journal(&self) -> Vec<String> {
        self.dedup.as_ref().map(|d| d.segments.clone()).unwrap_or_default()
    }
}

/// What a finished file leads to.
pub enum Next {
    /// The job ended (succeeded, or skipped when the lease was lost).
    Ended(Outcome),
    /// The next file starts from scratch.
    Pass(usize, Box<Earlier>),
}

/// The passes of `job`, in order.
pub fn passes(job: &Job) -> Vec<Pass> {
    let Some(spec) = job.params.split() else {
        return vec![Pass { index: 0, split: None, key: job.key.clone(), name: job.file_name.clone() }];
    };
    spec.splits()
        .into_iter()
        .enumerate()
        .map(|(index, split)| {
            let name = ExportSpec::split_file_name(&job.file_name, split);
            Pass { index, split: Some(split), key: beside(&job.key, &name), name }
        })
        .collect()
}

/// The key of `name` in the folder of `key`.
pub fn beside(key: &str, name: &str) -> String {
    match key.rsplit_once('/') {
        Some((folder, _)) => format!("{folder}/{name}"),
        None => name.to_string(),
    }
}

/// The pass `index` of a job (`None` for an index the job does not have).
pub fn pass_of(job: &Job, index: usize) -> Option<Pass> {
    let mut all = passes(job);
    (index < all.len()).then(|| all.swap_remove(index))
}

/// What the producer of `pass` keeps: the snapshots of its split, per the job's assignment
/// (computed and stored when `start` is set and none is stored yet).
pub async fn keep(state: &AppState, job: &Job, pass: &Pass) -> Result<Option<Keep>, ApiError> {
    let (Some(spec), Some(split)) = (job.params.split(), pass.split) else { return Ok(None) };
    let stored = assignment(state, job, spec).await?;
    Ok(Some(Keep { spec: spec.clone(), split, assignment: Arc::new(stored.groups), up_to: stored.up_to }))
}

/// `split-assignment.json`: each group's split, and the newest snapshot of the data set.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Assignment {
    up_to: Option<String>,
    groups: HashMap<String, Split>,
}

/// The job's stored assignment, or a new one stored now.
async fn assignment(state: &AppState, job: &Job, spec: &SplitSpec) -> Result<Assignment, ApiError> {
    let key = beside(&job.key, "split-assignment.json");
    let bucket = &state.config.bucket_name;
    if let Some(bytes) = get(&state.s3, bucket, &key, "read split assignment").await? {
        return serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("decode split assignment", e));
    }
    let assigned = compute(state, job, spec).await?;
    let body = serde_json::to_vec(&assigned).map_err(|e| ApiError::internal("encode split assignment", e))?;
    put_json(&state.s3, bucket, &key, body, None, "store split assignment").await?;
    Ok(assigned)
}

/// Reads every matching snapshot's header (not its chunks: only a small one holds its messages) and
/// assigns the groups.
async fn compute(state: &AppState, job: &Job, spec: &SplitSpec) -> Result<Assignment, ApiError> {
    let ExportSpec::Training { filters, .. } = &job.params else { return Ok(Assignment::default()) };
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let (org, mut groups, mut after) = (job.org(), Groups::default(), None::<String>);
    let mut up_to: Option<String> = None;
    loop {
        let (page, next, _) = store.list(&org, filters, 500, after.as_deref()).await?;
        // Newest first: the first snapshot of the first page is the newest.
        up_to = up_to.or_else(|| page.first().map(|s| s.id.clone()));
        for s in &page {
            groups.add(spec, s);
        }
        match (next, page.last()) {
            (Some(_), Some(last)) => after = Some(last.id.clone()),
            _ => break,
        }
    }
    tracing::info!(job = %job.id, groups = groups.len(), "split assignment computed");
    Ok(Assignment { up_to, groups: groups.assign(spec) })
}
