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

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use super::invocation::{Invocation, UploadRef};
pub use super::invocation::{Options, Outcome};
use super::upload::abort;
pub use super::upload::abort_upload;
use super::{Job, JobRef, JobStore, WorkerEvent, MAX_FAILURES};
use crate::error::{ApiError, ErrorKind};
use crate::keys::Org;
use crate::AppState;

/// Time kept back from an invocation's deadline for the last part and the hand-over.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

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
pub async fn run(state: &AppState, event: &JobRef, options: Options) -> Result<Outcome, ApiError> {
    let store = JobStore::new(state);
    let (job, owner) = match take(state, &store, event, &options).await? {
        ControlFlow::Continue(taken) => taken,
        ControlFlow::Break(outcome) => return Ok(outcome),
    };
    let invocation = Invocation { state, store: &store, job: &job, owner: &owner };
    let mut upload: Option<UploadRef> = None;
    match invocation.execute(&options, &mut upload).await {
        Ok(outcome) => Ok(outcome),
        Err(e) if permanent(&e) => fail_for_good(&invocation, event, &e, upload.as_ref()).await,
        Err(e) => {
            record_failed_invocation(&invocation, event, &e, upload).await;
            Err(e)
        }
    }
}

/// Reads the job of `event` and takes its lease for this invocation: answers the job as taken
/// and the lease's owner, or the outcome when there is nothing to run.
async fn take(
    state: &AppState,
    store: &JobStore<'_>,
    event: &JobRef,
    options: &Options,
) -> Result<ControlFlow<Outcome, (Job, String)>, ApiError> {
    let (org, id) = (&Org::stored(event.organization_id.as_str()), event.job_id.as_str());
    let Some(found) = store.get(org, id).await? else {
        tracing::warn!(job = %id, "no such export job");
        return Ok(ControlFlow::Break(Outcome::Skipped));
    };
    if found.status.is_terminal() {
        return Ok(ControlFlow::Break(Outcome::Skipped));
    }
    if found.failures >= MAX_FAILURES {
        super::give_up(state, found).await?;
        return Ok(ControlFlow::Break(Outcome::Failed));
    }
    let owner = format!("{:032x}", rand::random::<u128>());
    let lifetime = options.lifetime.unwrap_or(options.budget + DEADLINE_MARGIN);
    let lease_until = super::now_ms() + lifetime.as_millis() as i64;
    let Some(mut job) = store.claim(org, id, &owner, lease_until).await? else {
        tracing::info!(job = %id, "export job is held by another invocation or has ended");
        return Ok(ControlFlow::Break(Outcome::Skipped));
    };
    if found.lease_owner.is_some() {
        // The previous holder never let go: it was killed (time limit, memory). Count it, so a
        // job that cannot finish ends failed instead of being retried forever.
        tracing::warn!(job = %id, "the previous invocation died holding the job");
        if let Some(counted) = store.record_stall(org, id, &owner).await? {
            if counted.failures >= MAX_FAILURES {
                super::give_up(state, counted).await?;
                return Ok(ControlFlow::Break(Outcome::Failed));
            }
            job = counted;
        }
    }
    Ok(ControlFlow::Continue((job, owner)))
}

/// A failure that retrying cannot fix: aborts the upload and fails the job with the reason.
async fn fail_for_good(
    invocation: &Invocation<'_>,
    event: &JobRef,
    e: &ApiError,
    upload: Option<&UploadRef>,
) -> Result<Outcome, ApiError> {
    let (org, id) = (&Org::stored(event.organization_id.as_str()), event.job_id.as_str());
    tracing::warn!(job = %id, error = %e, "export job failed");
    if let Some(u) = upload {
        abort(invocation.state, &u.key, Some(&u.id)).await;
    }
    if let Some(failed) = invocation.store.fail(org, id, &e.message).await? {
        super::events::publish_job(invocation.state, &failed).await;
    }
    Ok(Outcome::Failed)
}

/// Any other failure: aborts the upload unless a checkpoint holds it, counts the failure and
/// frees the lease, so the retry (the caller returns the error) resumes from the checkpoint.
async fn record_failed_invocation(
    invocation: &Invocation<'_>,
    event: &JobRef,
    e: &ApiError,
    upload: Option<UploadRef>,
) {
    let (org, id) = (&Org::stored(event.organization_id.as_str()), event.job_id.as_str());
    // An upload this invocation started but never checkpointed would be orphaned; only
    // a successful read can tell (a failed one must not lose the checkpointed upload).
    if let (Some(u), Ok(Some(now))) = (&upload, invocation.store.get(org, id).await) {
        let checkpointed = now.checkpoint.as_ref().and_then(|c| {
            super::passes::pass_of(&now, c.file).map(|p| UploadRef { key: p.key, id: c.upload_id.clone() })
        });
        if checkpointed.as_ref() != Some(u) {
            abort(invocation.state, &u.key, Some(&u.id)).await;
        }
    }
    let message = match e.kind {
        ErrorKind::Unavailable => e.message.clone(),
        _ => "an internal error".to_string(),
    };
    if let Err(record) = invocation.store.record_failure(org, id, invocation.owner, &message).await {
        tracing::error!(job = %id, error = %record, "could not record the failure");
    }
}

/// The worker's answer to a job's invocation.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerAnswer {
    /// The job.
    pub job_id: String,
    /// What this invocation did with it.
    pub outcome: Outcome,
}

/// The worker's answer to an invocation: a job's, or a scheduled run's batch's.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// A job's invocation.
    Job(WorkerAnswer),
    /// A batch's invocation.
    Batch(super::schedule::BatchOutcome),
}

/// Runs one invocation's event: a job (part of it, within `options`) or a scheduled batch.
pub async fn run_event(state: &AppState, event: &WorkerEvent, options: Options) -> Result<Answer, ApiError> {
    match event {
        WorkerEvent::Job(job) => {
            let outcome = run(state, job, options).await?;
            Ok(Answer::Job(WorkerAnswer { job_id: job.job_id.clone(), outcome }))
        }
        WorkerEvent::Batch { scheduled_batch } => {
            // A batch has the invocation's lifetime (none locally, and none when the runtime's
            // deadline was already past: `cargo lambda watch` sends a duration there).
            let deadline = options.lifetime.filter(|left| !left.is_zero()).map(|left| std::time::Instant::now() + left);
            super::schedule::run_batch(state, scheduled_batch, deadline).await.map(Answer::Batch)
        }
    }
}

fn describe(event: &WorkerEvent) -> String {
    match event {
        WorkerEvent::Job(job) => format!("job {}", job.job_id),
        WorkerEvent::Batch { scheduled_batch: b } => format!("scheduled batch {} of {}", b.number, b.scheduled_time),
    }
}

/// The worker function's handler: runs the event; an error makes Lambda retry.
pub async fn handle(state: &AppState, event: lambda_runtime::LambdaEvent<WorkerEvent>) -> Result<Answer, ApiError> {
    let budget = budget_for(state, event.context.deadline);
    let lifetime = Some(time_left(event.context.deadline));
    let options = Options { budget, lifetime, fault_after_parts: None };
    run_event(state, &event.payload, options).await.map_err(|e| {
        // The one log of a failed invocation; Lambda retries it (a job resumes from its checkpoint).
        tracing::error!(event = %describe(&event.payload), error = %e, "export worker invocation failed");
        e
    })
}

/// The local server's worker: runs each dispatched event in its own task, retrying a failed
/// invocation twice after a pause, as Lambda does with asynchronous invocations.
pub async fn serve_channel(state: Arc<AppState>, mut events: tokio::sync::mpsc::UnboundedReceiver<String>) {
    while let Some(payload) = events.recv().await {
        let state = state.clone();
        tokio::spawn(async move {
            let event: WorkerEvent = match serde_json::from_str(&payload) {
                Ok(event) => event,
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
                match run_event(&state, &event, Options { budget, lifetime: None, fault_after_parts: None }).await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::error!(event = %describe(&event), attempt, error = %e, "export worker invocation failed")
                    }
                }
            }
        });
    }
}
