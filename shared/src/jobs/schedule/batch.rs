//! A batch of a scheduled run, in the worker: for each of its organizations, the job of this
//! run when its snapshots changed since its watermark, unless an earlier scheduled job of it
//! still runs. Then the batch reports its counts to the run (once per batch number).

use std::time::Duration;

use serde::Serialize;

use super::registry::{watermark, EPOCH};
use super::{job_id, progress, Batch};
use crate::error::ApiError;
use crate::exports::producer::{ExportSpec, Window};
use crate::exports::training::Format;
use crate::jobs::{new_job, JobStore, Trigger};
use crate::keys::Org;
use crate::snapshots::store::{Filters, SnapshotStore};
use crate::AppState;

/// Pause before an organization's second attempt within its batch.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What a batch did: the worker's answer to a batch event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchOutcome {
    /// The batch's number in its run.
    pub number: u64,
    /// Its organizations.
    pub organizations: u64,
    /// New jobs.
    pub jobs_created: u64,
    /// Jobs of this run that existed already.
    pub jobs_resumed: u64,
    /// Organizations without changes.
    pub unchanged: u64,
    /// Organizations whose earlier scheduled job still runs.
    pub deferred: u64,
    /// Organizations that failed twice (logged; the next run covers them).
    pub failed: u64,
    /// Whether these counts were added to the run (not when the batch had reported already).
    pub reported: bool,
}

/// Runs a batch: each organization's part (a failed one is tried once more), then its report.
/// An error (only when the report cannot be written) makes Lambda retry the batch, which
/// repeats nothing that was done.
pub async fn run_batch(state: &AppState, batch: &Batch) -> Result<BatchOutcome, ApiError> {
    let scheduled = crate::time::parse_rfc3339(&batch.scheduled_time)
        .ok_or_else(|| ApiError::invalid("scheduledTime", "must be an RFC 3339 timestamp"))?;
    let jobs = JobStore::new(state);
    let snapshots = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let mut outcome =
        BatchOutcome { number: batch.number, organizations: batch.organizations.len() as u64, ..Default::default() };
    for org in &batch.organizations {
        let org = Org::stored(org.as_str());
        let mut result = export_org(state, &jobs, &snapshots, &org, scheduled, &batch.up_to).await;
        if let Err(e) = &result {
            tracing::warn!(org = %org, error = %e, "scheduled export of an organization failed; trying again");
            tokio::time::sleep(RETRY_PAUSE).await;
            result = export_org(state, &jobs, &snapshots, &org, scheduled, &batch.up_to).await;
        }
        match result {
            Ok(OrgRun::Created) => outcome.jobs_created += 1,
            Ok(OrgRun::Resumed) => outcome.jobs_resumed += 1,
            Ok(OrgRun::Unchanged) => outcome.unchanged += 1,
            Ok(OrgRun::Deferred) => outcome.deferred += 1,
            Err(e) => {
                outcome.failed += 1;
                tracing::error!(org = %org, error = %e, "scheduled export of an organization failed");
            }
        }
    }
    if let Some(after) = progress::report(state, &batch.scheduled_time, &outcome).await? {
        outcome.reported = true;
        progress::finish_if_complete(state, &after).await?;
    }
    Ok(outcome)
}

/// What one organization's part of a run did.
enum OrgRun {
    /// A new job.
    Created,
    /// This run's job existed already (a redelivered event or batch).
    Resumed,
    /// Nothing changed, or this run's job has ended.
    Unchanged,
    /// An earlier run's job still runs: its window ends where this one would start.
    Deferred,
}

/// One organization's part of a run. Also revives the organization's stale jobs and sends
/// the events they owe, since nobody may poll a scheduled job.
async fn export_org(
    state: &AppState,
    jobs: &JobStore<'_>,
    snapshots: &SnapshotStore<'_>,
    org: &Org,
    scheduled: chrono::DateTime<chrono::Utc>,
    up_to: &str,
) -> Result<OrgRun, ApiError> {
    let this_run = job_id(scheduled, org);
    let mut earlier_running = false;
    for job in jobs.list(org, 20, None).await?.0 {
        crate::jobs::settle_event(state, &job).await;
        let job = crate::jobs::revive(state, job).await?;
        // Its window starts at the watermark this run would start from, and moves it only
        // when it succeeds: a second window now would export the same changes twice.
        earlier_running |= job.trigger == Trigger::Schedule && !job.status.is_terminal() && job.id != this_run;
    }
    if earlier_running {
        return Ok(OrgRun::Deferred);
    }
    // The index may lag the table: read the watermark from the item itself.
    let after = watermark(state, org).await?.unwrap_or_else(|| EPOCH.to_string());
    if up_to <= after.as_str() || snapshots.changed(org, &after, up_to, None, 1).await?.0.is_empty() {
        return Ok(OrgRun::Unchanged);
    }
    let spec = ExportSpec::Training {
        format: Format::Jsonl,
        filters: Filters::default(),
        system: None,
        changed: Some(Window { after, up_to: up_to.to_string() }),
        split: None,
        redact: None,
        dedup: Default::default(),
    };
    let job = new_job(org, spec, Trigger::Schedule, this_run);
    let (job, created) = if jobs.insert(&job).await? {
        (job, OrgRun::Created)
    } else {
        match jobs.get(org, &job.id).await? {
            Some(existing) if !existing.status.is_terminal() => (existing, OrgRun::Resumed),
            _ => return Ok(OrgRun::Unchanged),
        }
    };
    // A repeated hand-over is harmless: the worker's lease lets one invocation run it.
    if let Err(e) = state.jobs.dispatch(&job.reference()).await {
        tracing::error!(org = %org, job = %job.id, error = %e, "could not hand the scheduled export to the worker");
    }
    Ok(created)
}
