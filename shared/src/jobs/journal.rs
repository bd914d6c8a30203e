//! A dedup job's journal: what its dedup kept, one segment per checkpoint, stored beside its
//! files (`dedup/00000.bin`, …). A checkpoint records how many segments hold the state at its
//! position, so a resumed invocation replays exactly those and dedups as one pass would; a
//! segment written before a checkpoint that was then not saved is rewritten, the same, later.

use super::passes::beside;
use super::Job;
use crate::error::ApiError;
use crate::exports::dedup::Deduper;
use crate::exports::objects::{get, put};
use crate::AppState;

fn key(job: &Job, segment: u32) -> String {
    beside(&job.key, &format!("dedup/{segment:05}.bin"))
}

/// The dedup state after the job's first `segments` segments (`None`: the job does not dedup).
pub async fn replay(state: &AppState, job: &Job, segments: u32) -> Result<Option<Deduper>, ApiError> {
    let mode = job.params.dedup();
    if mode.is_none() {
        return Ok(None);
    }
    let mut read = Vec::with_capacity(segments as usize);
    for segment in 0..segments {
        let bytes = get(&state.s3, &state.config.bucket_name, &key(job, segment), "read dedup journal")
            .await?
            .ok_or_else(|| ApiError::internal("dedup journal", format!("segment {segment} is missing")))?;
        read.push(bytes);
    }
    let dedup = Deduper::replay(mode, &read)?;
    tracing::info!(job = %job.id, segments, kept = dedup.kept(), "dedup journal replayed");
    Ok(Some(dedup))
}

/// Journals what `dedup` recorded before `mark` as the next segment (nothing when nothing was).
pub async fn write(state: &AppState, job: &Job, dedup: Option<&mut Deduper>, mark: u64) -> Result<(), ApiError> {
    let Some(dedup) = dedup else { return Ok(()) };
    let segment = dedup.segments;
    if let Some(bytes) = dedup.segment(mark) {
        let content = ("application/octet-stream", None);
        put(&state.s3, &state.config.bucket_name, &key(job, segment), bytes, content, "write dedup journal").await?;
    }
    Ok(())
}
