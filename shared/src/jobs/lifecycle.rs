//! A job's life cycle outside the worker: creating one and handing it over ([`start`]), and
//! what a read does with a job nobody works on ([`revive`], [`give_up`]).

use super::{new_job, now_ms, Job, JobStore, Trigger, MAX_FAILURES};
use crate::error::ApiError;
use crate::exports::producer::ExportSpec;
use crate::keys::Org;
use crate::AppState;

/// Creates a queued job for `spec` and hands it to the worker. A failed hand-over leaves the
/// job queued; reading it later hands it over again (see [`revive`]).
pub async fn start(state: &AppState, org: &Org, spec: ExportSpec, trigger: Trigger) -> Result<Job, ApiError> {
    launch(state, new_job(org, spec, trigger, crate::ids::object_id())).await
}

/// Stores `job` (a new one, from [`new_job`]) and hands it to the worker, as [`start`] does.
pub async fn launch(state: &AppState, job: Job) -> Result<Job, ApiError> {
    if !state.jobs.is_enabled() {
        return Err(ApiError::new(
            crate::error::ErrorKind::Unavailable,
            "Export jobs are not configured in this deployment",
        ));
    }
    JobStore::new(state).insert(&job).await?;
    if let Err(e) = state.jobs.dispatch(&job.reference()).await {
        tracing::error!(job = %job.id, error = %e, "could not hand the job to the worker; a later read retries");
    }
    Ok(job)
}

/// Fails a job that has failed [`MAX_FAILURES`] times, with a reason that says so, and aborts
/// its upload. Answers the job as it now stands.
pub async fn give_up(state: &AppState, job: Job) -> Result<Job, ApiError> {
    let last = job.last_error.as_deref().unwrap_or("the worker stopped responding");
    let reason = format!(
        "The export failed {} times (last: {last}). Create it again; if it keeps failing, narrow its filters.",
        job.failures
    );
    super::upload::abort_upload(state, &job).await;
    match JobStore::new(state).fail(&job.org(), &job.id, &reason).await? {
        Some(failed) => {
            super::events::publish_job(state, &failed).await;
            Ok(failed)
        }
        None => Ok(job),
    }
}

/// Sends the event of a finished job that was not delivered when it ended (one attempt: the
/// job's `GET` and the scheduled run's sweep call this, so a debt is paid by a later read).
pub async fn settle_event(state: &AppState, job: &Job) {
    if job.status.is_terminal() && job.event_pending.is_some() {
        super::events::resend(state, job).await;
    }
}

/// Deals with a stale job found by a read: hands it to the worker again, or, after
/// [`MAX_FAILURES`] failed invocations, fails it with a reason (aborting its upload).
/// Answers the job as it now stands.
pub async fn revive(state: &AppState, job: Job) -> Result<Job, ApiError> {
    if !job.is_stale(now_ms()) {
        return Ok(job);
    }
    if job.failures >= MAX_FAILURES {
        return give_up(state, job).await;
    }
    let store = JobStore::new(state);
    if store.redispatch(&job).await? {
        tracing::warn!(job = %job.id, failures = job.failures, "stale export job: handing it to the worker again");
        // The read still answers; the next read after the stale period tries again.
        if let Err(e) = state.jobs.dispatch(&job.reference()).await {
            tracing::error!(job = %job.id, error = %e, "could not hand the stale job to the worker");
        }
    }
    Ok(store.get(&job.org(), &job.id).await?.unwrap_or(job))
}
