//! A dedup job's journal: what its dedup kept, one segment per checkpoint, stored beside its
//! files (`dedup/00000-<owner>.bin`, …). A checkpoint lists the segments that hold the state
//! at its position, so a resumed invocation replays exactly those and dedups as one pass would.
//! Each segment's name carries the lease owner that wrote it: an invocation that lost its lease
//! can only write names no checkpoint lists, never overwrite one that a checkpoint counts.

use futures::{stream, StreamExt, TryStreamExt};

use super::passes::beside;
use super::Job;
use crate::error::ApiError;
use crate::exports::dedup::Deduper;
use crate::exports::objects::{get, put};
use crate::AppState;

/// Segments read at once when replaying.
const CONCURRENT_READS: usize = 8;

fn key(job: &Job, name: &str) -> String {
    beside(&job.key, &format!("dedup/{name}.bin"))
}

/// The dedup state after the segments `names` (`None`: the job does not dedup).
pub async fn replay(state: &AppState, job: &Job, names: &[String]) -> Result<Option<Deduper>, ApiError> {
    let mode = job.params.dedup();
    if mode.is_none() {
        return Ok(None);
    }
    let keys: Vec<String> = names.iter().map(|name| key(job, name)).collect();
    let reads = keys.into_iter().map(|key| {
        let (s3, bucket) = (state.s3.clone(), state.config.bucket_name.clone());
        async move {
            get(&s3, &bucket, &key, "read dedup journal")
                .await?
                .ok_or_else(|| ApiError::internal("dedup journal", format!("{key} is missing")))
        }
    });
    let read: Vec<Vec<u8>> = stream::iter(reads).buffered(CONCURRENT_READS).try_collect().await?;
    let mut dedup = Deduper::replay(mode, state.config.dedup_max_kept, &read)?;
    dedup.segments = names.to_vec();
    tracing::info!(job = %job.id, segments = names.len(), kept = dedup.kept(), "dedup journal replayed");
    Ok(Some(dedup))
}

/// Journals what `dedup` recorded before `mark` as the next segment of `owner` (nothing when
/// nothing was).
pub async fn write(
    state: &AppState,
    job: &Job,
    owner: &str,
    dedup: Option<&mut Deduper>,
    mark: u64,
) -> Result<(), ApiError> {
    let Some(dedup) = dedup else { return Ok(()) };
    let Some(bytes) = dedup.segment(mark) else { return Ok(()) };
    let name = format!("{:05}-{}", dedup.segments.len(), &owner[..owner.len().min(12)]);
    let content = ("application/octet-stream", None);
    put(&state.s3, &state.config.bucket_name, &key(job, &name), bytes, content, "write dedup journal").await?;
    dedup.segments.push(name);
    Ok(())
}
