//! The export worker: runs a job to S3, checkpointing as it goes.
//!
//! One invocation:
//! 1. takes the job's *lease* (a conditional update: only when nobody holds a live one), so
//!    duplicate deliveries of the same event never run a job twice at once;
//! 2. resumes the checkpoint (the upload's parts, listed from S3, and the producer's position),
//!    or starts the export;
//! 3. after every uploaded part (parts end on item boundaries) saves a checkpoint with the
//!    progress; once its time budget is spent it frees the lease and hands the job to a fresh
//!    invocation;
//! 4. at the end uploads the last part, checkpoints "finished", completes the upload and marks
//!    the job succeeded (a scheduled job also advances its organization's watermark).
//!
//! A failure that retrying cannot fix (bad parameters, a conversation that is gone) aborts the
//! upload and fails the job with the reason. Any other failure is counted, frees the lease and
//! is returned, so Lambda retries the invocation, which resumes from the last checkpoint. A
//! crash or timeout leaves the lease to expire; the retry, or a later read of the job (see
//! [`super::revive`]), resumes it. After [`super::MAX_FAILURES`] the job fails with a reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;

use super::{Checkpoint, Job, JobRef, JobStore, Trigger, MAX_FAILURES};
use crate::error::{ApiError, ErrorKind};
use crate::exports::producer::{ExportSpec, Producer};
use crate::exports::sink::{ExportSink, Finished, ObjectSpec, UploadState};
use crate::exports::{attachment, Counts};
use crate::AppState;

/// Time kept back from an invocation's deadline for the last part and the hand-over.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);
/// S3's smallest part (except the last).
const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// The checkpoint position that means "every part is uploaded; only completion is left".
const FINISHED: &str = "~finished";

/// How one invocation runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Work time before checkpointing and handing over (checked after each item).
    pub budget: Duration,
    /// How long the invocation may live at most (Lambda: until its deadline); the lease lasts
    /// that long, so no other invocation can take the job while this one may still write.
    /// `None`: the budget plus [`DEADLINE_MARGIN`].
    pub lifetime: Option<Duration>,
    /// Fault injection for tests: the upload of part `n + 1` fails as S3 failing would.
    pub fault_after_parts: Option<usize>,
}

/// What one invocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The file is ready.
    Succeeded,
    /// Budget spent; the job was handed to a new invocation.
    Paused,
    /// The job failed for good.
    Failed,
    /// Nothing to do: no such job, it has ended, or another invocation holds it.
    Skipped,
}

/// The budget of an invocation ending at `deadline_ms` (epoch ms): the configured budget, or
/// the time left less [`DEADLINE_MARGIN`].
pub fn budget_for(state: &AppState, deadline_ms: u64) -> Duration {
    let left = time_left(deadline_ms);
    state
        .config
        .export_job_budget
        .map_or_else(|| left.saturating_sub(DEADLINE_MARGIN), |b| b.min(left.saturating_sub(DEADLINE_MARGIN)))
}

fn time_left(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(super::now_ms().max(0) as u64))
}

fn permanent(e: &ApiError) -> bool {
    matches!(e.kind, ErrorKind::Validation | ErrorKind::NotFound | ErrorKind::PayloadTooLarge | ErrorKind::Conflict)
}

/// Runs (part of) a job.
pub async fn run(state: &AppState, job: &JobRef, options: Options) -> Result<Outcome, ApiError> {
    let store = JobStore::new(state);
    let (org, id) = (job.organization_id.as_str(), job.job_id.as_str());
    let Some(found) = store.get(org, id).await? else {
        tracing::warn!(job = %id, "no such export job");
        return Ok(Outcome::Skipped);
    };
    if found.status.is_terminal() {
        return Ok(Outcome::Skipped);
    }
    if found.failures >= MAX_FAILURES {
        super::give_up(state, found).await?;
        return Ok(Outcome::Failed);
    }
    let owner = format!("{:032x}", rand::random::<u128>());
    let lifetime = options.lifetime.unwrap_or(options.budget + DEADLINE_MARGIN);
    let lease_until = super::now_ms() + lifetime.as_millis() as i64;
    let Some(mut job) = store.claim(org, id, &owner, lease_until).await? else {
        tracing::info!(job = %id, "export job is held by another invocation or has ended");
        return Ok(Outcome::Skipped);
    };
    if found.lease_owner.is_some() {
        // The previous holder never let go: it was killed (time limit, memory). Count it, so a
        // job that cannot finish ends failed instead of being retried forever.
        tracing::warn!(job = %id, "the previous invocation died holding the job");
        if let Some(counted) = store.record_stall(org, id, &owner).await? {
            if counted.failures >= MAX_FAILURES {
                super::give_up(state, counted).await?;
                return Ok(Outcome::Failed);
            }
            job = counted;
        }
    }
    let mut upload: Option<String> = None;
    match execute(state, &store, &job, &owner, &options, &mut upload).await {
        Ok(outcome) => Ok(outcome),
        Err(e) if permanent(&e) => {
            tracing::warn!(job = %id, error = %e, "export job failed");
            abort(state, &job.key, upload.as_deref()).await;
            store.fail(org, id, &e.message).await?;
            Ok(Outcome::Failed)
        }
        Err(e) => {
            tracing::error!(job = %id, error = %e, "export job invocation failed; it will be retried from its checkpoint");
            // An upload this invocation started but never checkpointed would be orphaned; only
            // a successful read can tell (a failed one must not lose the checkpointed upload).
            if let Ok(Some(now)) = store.get(org, id).await {
                let checkpointed = now.checkpoint.map(|c| c.upload_id);
                if upload.is_some() && upload != checkpointed {
                    abort(state, &job.key, upload.as_deref()).await;
                }
            }
            let message = match e.kind {
                ErrorKind::Unavailable => e.message.clone(),
                _ => "an internal error".to_string(),
            };
            if let Err(record) = store.record_failure(org, id, &owner, &message).await {
                tracing::error!(job = %id, error = %record, "could not record the failure");
            }
            Err(e)
        }
    }
}

async fn execute(
    state: &AppState,
    store: &JobStore<'_>,
    job: &Job,
    owner: &str,
    options: &Options,
    upload: &mut Option<String>,
) -> Result<Outcome, ApiError> {
    let started = Instant::now();
    let org = job.organization_id.as_str();
    let object = ObjectSpec {
        bucket: state.config.bucket_name.clone(),
        key: job.key.clone(),
        content_type: job.params.content_type().to_string(),
        content_disposition: attachment(&job.file_name),
    };
    // Resume the checkpoint when its upload is still there with all its parts.
    let mut resumed = None;
    if let Some(cp) = &job.checkpoint {
        match list_parts(state, &job.key, &cp.upload_id, cp.parts).await? {
            Some(parts) => resumed = Some((cp.clone(), parts)),
            None if cp.position == FINISHED && object_exists(state, &job.key).await? => {
                // An earlier invocation completed the upload but could not record it.
                let counts = Counts { items: cp.items, skipped: cp.skipped };
                return succeed(state, store, job, owner, cp.bytes, counts, cp.upload_started(job)).await;
            }
            None => {
                tracing::warn!(job = %job.id, "the checkpoint's upload is gone; starting the export again");
                abort(state, &job.key, Some(&cp.upload_id)).await;
            }
        }
    }
    let (mut producer, mut sink) = match resumed {
        Some((cp, parts)) => {
            *upload = Some(cp.upload_id.clone());
            let counts = Counts { items: cp.items, skipped: cp.skipped };
            let producer =
                Producer::resume(state, org, job.params.clone(), &job.created_at, Some(cp.position.clone()), counts);
            let upload = UploadState { upload_id: cp.upload_id.clone(), parts, started: cp.upload_started(job) };
            let sink = ExportSink::resumable(&state.s3, object, Some((upload, cp.bytes)));
            if cp.position == FINISHED {
                return complete(state, store, job, owner, sink, counts).await;
            }
            (producer, sink)
        }
        None => {
            let producer = Producer::new(state, org, job.params.clone(), &job.created_at);
            if job.total.is_none() {
                if let Some(total) = producer.total().await? {
                    store.set_total(org, &job.id, owner, total).await?;
                }
            }
            let mut sink = ExportSink::resumable(&state.s3, object, None);
            sink.write(&producer.header()?).await?;
            (producer, sink)
        }
    };
    if let Some(n) = options.fault_after_parts {
        sink = sink.with_fault_after_parts(n);
    }
    let mut parts = sink.parts();
    let floor = job.processed;
    while let Some(items) = producer.next().await? {
        for item in items {
            if !item.bytes.is_empty() {
                let written = sink.write(&item.bytes).await;
                *upload = sink.upload_state().map(|u| u.upload_id);
                written?;
            }
            let over = started.elapsed() >= options.budget;
            if over && sink.parts() == parts && sink.pending() >= MIN_PART_BYTES {
                // Over budget before the part filled: a smaller (still valid) part ends here.
                let flushed = sink.flush().await;
                *upload = sink.upload_state().map(|u| u.upload_id);
                flushed?;
            }
            // A resume point: a part just ended with this item, or (over budget) nothing is
            // buffered since the last part (skipped items).
            let at_boundary = sink.parts() > parts || (over && sink.pending() == 0 && sink.parts() > 0);
            if !at_boundary {
                continue;
            }
            parts = sink.parts();
            let Some(state_now) = sink.upload_state() else { continue };
            let cp = Checkpoint {
                upload_id: state_now.upload_id,
                parts: parts as i32,
                position: item.position,
                items: item.counts.items,
                skipped: item.counts.skipped,
                bytes: sink.bytes(),
                upload_started_at: Some(crate::time::to_rfc3339(state_now.started)),
            };
            if !store.checkpoint(org, &job.id, owner, &cp, floor).await? {
                tracing::warn!(job = %job.id, "lost the lease; another invocation continues");
                return Ok(Outcome::Skipped);
            }
            if over {
                store.hand_over(org, &job.id, owner).await?;
                if let Err(e) = state.jobs.dispatch(&job.reference()).await {
                    tracing::error!(job = %job.id, error = %e, "could not hand the job over; a later read retries");
                }
                tracing::info!(job = %job.id, processed = cp.items, parts, "budget spent: handed over to a new invocation");
                return Ok(Outcome::Paused);
            }
        }
    }
    sink.write(&producer.footer()).await?;
    let counts = producer.counts();
    if sink.parts() == 0 {
        // Small enough for one PutObject: nothing to checkpoint, a retry simply redoes it.
        let Finished::Stored { bytes, created, .. } = sink.finish().await? else {
            return Err(ApiError::internal("export job", "a job's sink answered inline"));
        };
        return succeed(state, store, job, owner, bytes, counts, created).await;
    }
    sink.flush().await?;
    let Some(last) = sink.upload_state() else { return Err(ApiError::internal("export job", "no upload")) };
    let cp = Checkpoint {
        upload_id: last.upload_id,
        parts: last.parts.len() as i32,
        position: FINISHED.into(),
        items: counts.items,
        skipped: counts.skipped,
        bytes: sink.bytes(),
        upload_started_at: Some(crate::time::to_rfc3339(last.started)),
    };
    if !store.checkpoint(org, &job.id, owner, &cp, floor).await? {
        return Ok(Outcome::Skipped);
    }
    complete(state, store, job, owner, sink, counts).await
}

async fn complete(
    state: &AppState,
    store: &JobStore<'_>,
    job: &Job,
    owner: &str,
    sink: ExportSink<'_>,
    counts: Counts,
) -> Result<Outcome, ApiError> {
    let Finished::Stored { bytes, created, .. } = sink.finish().await? else {
        return Err(ApiError::internal("export job", "a job's sink answered inline"));
    };
    succeed(state, store, job, owner, bytes, counts, created).await
}

async fn succeed(
    state: &AppState,
    store: &JobStore<'_>,
    job: &Job,
    owner: &str,
    bytes: u64,
    counts: Counts,
    file_created: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, ApiError> {
    // The watermark first: it only moves forward, so a retry after a failure in between
    // repeats it harmlessly, while the other order could end the job and keep the watermark.
    if let (Trigger::Schedule, ExportSpec::Training { changed: Some(window), .. }) = (job.trigger, &job.params) {
        super::schedule::advance_watermark(state, &job.organization_id, &window.up_to).await?;
    }
    if store.succeed(job, owner, bytes, counts, file_created).await?.is_none() {
        return Ok(Outcome::Skipped);
    }
    tracing::info!(job = %job.id, items = counts.items, bytes, "export job succeeded");
    Ok(Outcome::Succeeded)
}

/// Parts 1..=`count` of an upload, from S3; `None` when the upload or one of them is gone.
async fn list_parts(
    state: &AppState,
    key: &str,
    upload_id: &str,
    count: i32,
) -> Result<Option<Vec<(i32, String)>>, ApiError> {
    let mut parts = Vec::with_capacity(count.max(0) as usize);
    let mut marker: Option<String> = None;
    loop {
        let result = state
            .s3
            .list_parts()
            .bucket(&state.config.bucket_name)
            .key(key)
            .upload_id(upload_id)
            .set_part_number_marker(marker.clone())
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchUpload") => return Ok(None),
            Err(e) => return Err(crate::error::from_sdk("list export parts", e)),
        };
        for p in out.parts() {
            if let (Some(n), Some(etag)) = (p.part_number, p.e_tag.clone()) {
                if n <= count {
                    parts.push((n, etag));
                }
            }
        }
        marker = out.next_part_number_marker.clone();
        if !out.is_truncated.unwrap_or(false) || marker.is_none() {
            break;
        }
    }
    parts.sort_by_key(|(n, _)| *n);
    let complete = parts.len() == count as usize && parts.iter().enumerate().all(|(i, (n, _))| *n == i as i32 + 1);
    Ok(complete.then_some(parts))
}

async fn object_exists(state: &AppState, key: &str) -> Result<bool, ApiError> {
    match state.s3.head_object().bucket(&state.config.bucket_name).key(key).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
        Err(e) => Err(crate::error::from_sdk("check export object", e)),
    }
}

/// Aborts `upload_id` of `key`, if any (best effort, logged).
async fn abort(state: &AppState, key: &str, upload_id: Option<&str>) {
    if let Some(upload_id) = upload_id {
        crate::exports::sink::abort_upload(&state.s3, &state.config.bucket_name, key, upload_id).await;
    }
}

/// Aborts a job's checkpointed upload, if any (for a job failing for good).
pub async fn abort_upload(state: &AppState, job: &Job) {
    abort(state, &job.key, job.checkpoint.as_ref().map(|c| c.upload_id.as_str())).await;
}

/// The worker function's handler: runs the job of the event; an error makes Lambda retry.
pub async fn handle(
    state: &AppState,
    event: lambda_runtime::LambdaEvent<JobRef>,
) -> Result<serde_json::Value, ApiError> {
    let budget = budget_for(state, event.context.deadline);
    let lifetime = Some(time_left(event.context.deadline));
    let outcome = run(state, &event.payload, Options { budget, lifetime, fault_after_parts: None }).await?;
    Ok(serde_json::json!({ "jobId": event.payload.job_id, "outcome": format!("{outcome:?}") }))
}

/// The local server's worker: runs each dispatched event in its own task, retrying a failed
/// invocation twice after a pause, as Lambda does with asynchronous invocations.
pub async fn serve_channel(state: Arc<AppState>, mut events: tokio::sync::mpsc::UnboundedReceiver<String>) {
    while let Some(payload) = events.recv().await {
        let state = state.clone();
        tokio::spawn(async move {
            let job: JobRef = match serde_json::from_str(&payload) {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(error = %e, "bad worker event");
                    return;
                }
            };
            let budget = state.config.export_job_budget.unwrap_or(Duration::from_secs(840));
            for attempt in 0..3u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
                }
                match run(&state, &job, Options { budget, lifetime: None, fault_after_parts: None }).await {
                    Ok(_) => return,
                    Err(e) => tracing::warn!(job = %job.job_id, attempt, error = %e, "worker invocation failed"),
                }
            }
        });
    }
}
