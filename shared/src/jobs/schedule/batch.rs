//! A batch of a scheduled run, in the worker: for each of its organizations, the job of this
//! run when its snapshots changed since its watermark, unless an earlier scheduled job of it
//! still runs. Then the batch reports its counts to the run (once per batch number).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::registry::{claim, schedule_state, ScheduleState, EPOCH};
use super::{job_id, progress, Batch};
use crate::error::ApiError;
use crate::exports::producer::{ExportSpec, Window};
use crate::exports::training::Format;
use crate::jobs::model::{Job, Status};
use crate::jobs::{new_job, JobStore, Trigger};
use crate::keys::Org;
use crate::snapshots::store::{Filters, SnapshotStore};
use crate::AppState;

/// Pause before an organization's second attempt within its batch.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// A claimed window whose job does not exist yet is taken for another batch's this long.
const CLAIM_GRACE: chrono::Duration = chrono::Duration::minutes(5);
/// Owed events are sent again (up to 2 s each) only while this much of the invocation is left.
const SETTLE_MARGIN: Duration = Duration::from_secs(120);

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
/// `deadline` is the invocation's (none locally). An error (only when the report cannot be
/// written) makes Lambda retry the batch, which repeats nothing that was done.
pub async fn run_batch(state: &AppState, batch: &Batch, deadline: Option<Instant>) -> Result<BatchOutcome, ApiError> {
    let scheduled = crate::time::parse_rfc3339(&batch.scheduled_time)
        .ok_or_else(|| ApiError::invalid("scheduledTime", "must be an RFC 3339 timestamp"))?;
    let run = RunOfOrg {
        state,
        jobs: JobStore::new(state),
        snapshots: SnapshotStore::new(&state.dynamo, &state.config.table_name),
        scheduled,
        up_to: &batch.up_to,
        deadline,
    };
    let mut outcome =
        BatchOutcome { number: batch.number, organizations: batch.organizations.len() as u64, ..Default::default() };
    for org in &batch.organizations {
        let org = Org::stored(org.as_str());
        let mut result = run.export(&org).await;
        if let Err(e) = &result {
            tracing::warn!(org = %org, error = %e, "scheduled export of an organization failed; trying again");
            tokio::time::sleep(RETRY_PAUSE).await;
            result = run.export(&org).await;
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
    let after = match progress::report(state, &batch.scheduled_time, &outcome).await? {
        Some(after) => {
            outcome.reported = true;
            Some(after)
        }
        // Reported before: a retry after the report, whose end (finishing the run, its event)
        // may not have happened.
        None => progress::read(state, &batch.scheduled_time).await?,
    };
    if let Some(after) = after {
        progress::conclude(state, &after).await?;
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

/// What every organization of a batch shares.
struct RunOfOrg<'a> {
    state: &'a AppState,
    jobs: JobStore<'a>,
    snapshots: SnapshotStore<'a>,
    scheduled: chrono::DateTime<chrono::Utc>,
    up_to: &'a str,
    deadline: Option<Instant>,
}

impl RunOfOrg<'_> {
    /// One organization's part of a run. Also revives the organization's stale jobs and sends
    /// the events they owe (while the invocation has time for it), since nobody may poll a
    /// scheduled job.
    async fn export(&self, org: &Org) -> Result<OrgRun, ApiError> {
        let (state, jobs) = (self.state, &self.jobs);
        let this_run = job_id(self.scheduled, org);
        let settle = self.deadline.is_none_or(|d| d.saturating_duration_since(Instant::now()) > SETTLE_MARGIN);
        let (mut earlier_running, mut listed) = (false, Vec::new());
        for job in jobs.list(org, 20, None).await?.0 {
            if settle {
                crate::jobs::settle_event(state, &job).await;
            }
            let job = crate::jobs::revive(state, job).await?;
            earlier_running |= job.trigger == Trigger::Schedule && !job.status.is_terminal() && job.id != this_run;
            listed.push(job);
        }
        // An earlier scheduled job still runs: its window starts at the watermark this run
        // would start from, and moves it only when it succeeds.
        if earlier_running {
            return Ok(OrgRun::Deferred);
        }
        let seen = schedule_state(state, org).await?;
        // Another run's active job among the newest 20 has ended (else it was deferred above).
        let active = match seen.active_job.as_deref() {
            None => None,
            Some(a) => match listed.into_iter().find(|j| j.id == a) {
                Some(job) => Some(job),
                None if a == this_run => None,
                None => {
                    // Not among the newest 20 (many requested exports since): read it. A claim
                    // whose job is not there yet is another batch's, about to create it.
                    let claimed = seen.claimed_at.as_deref().and_then(crate::time::parse_rfc3339);
                    let fresh = claimed.is_some_and(|t| chrono::Utc::now() - t < CLAIM_GRACE);
                    match jobs.get(org, a).await? {
                        Some(job) if !job.status.is_terminal() => return Ok(OrgRun::Deferred),
                        None if fresh => return Ok(OrgRun::Deferred),
                        found => found,
                    }
                }
            },
        };
        let seen = caught_up(state, org, seen, active.as_ref()).await?;
        let after = seen.watermark.clone().unwrap_or_else(|| EPOCH.to_string());
        if !self.changed_since(org, &after).await? {
            return Ok(OrgRun::Unchanged);
        }
        // The window is claimed, so a batch of another run at the same time defers; it starts
        // at the watermark as of the claim (an earlier job that ended since has moved it).
        let Some(claimed) = claim(state, org, &this_run, seen.active_job.as_deref()).await? else {
            return Ok(OrgRun::Deferred);
        };
        if claimed.watermark != seen.watermark {
            // An earlier job ended in between and moved it: look again from there.
            let after = claimed.watermark.clone().unwrap_or_else(|| EPOCH.to_string());
            if !self.changed_since(org, &after).await? {
                return Ok(OrgRun::Unchanged);
            }
        }
        let after = claimed.watermark.unwrap_or_else(|| EPOCH.to_string());
        self.start(org, this_run, after).await
    }

    /// Whether anything changed in `(after, up_to]` (an expired deletion record is skipped,
    /// so an empty page that goes on counts as a change).
    async fn changed_since(&self, org: &Org, after: &str) -> Result<bool, ApiError> {
        if self.up_to <= after {
            return Ok(false);
        }
        let (changes, more) = self.snapshots.changed(org, after, self.up_to, None, 1).await?;
        Ok(!changes.is_empty() || more)
    }

    /// Creates this run's job over `(after, up_to]` (or finds it) and hands it to the worker.
    async fn start(&self, org: &Org, id: String, after: String) -> Result<OrgRun, ApiError> {
        let spec = ExportSpec::Training {
            format: Format::Jsonl,
            filters: Filters::default(),
            system: None,
            changed: Some(Window { after, up_to: self.up_to.to_string() }),
            split: None,
            redact: None,
            dedup: Default::default(),
        };
        let job = new_job(org, spec, Trigger::Schedule, id);
        let (job, created) = if self.jobs.insert(&job).await? {
            (job, OrgRun::Created)
        } else {
            match self.jobs.get(org, &job.id).await? {
                Some(existing) if !existing.status.is_terminal() => (existing, OrgRun::Resumed),
                _ => return Ok(OrgRun::Unchanged),
            }
        };
        // A repeated hand-over is harmless: the worker's lease lets one invocation run it.
        if let Err(e) = self.state.jobs.dispatch(&job.reference()).await {
            tracing::error!(org = %org, job = %job.id, error = %e, "could not hand the scheduled export to the worker");
        }
        Ok(created)
    }
}

/// `seen`, with its watermark moved to the end of the window of `active`, the job that last
/// claimed one, when that scheduled job succeeded but did not move it (its invocation ended
/// between the two, or the update failed; see `jobs/ending.rs`): so its window is not exported
/// again, and a run that meets the job just as it succeeds starts after its window.
async fn caught_up(
    state: &AppState,
    org: &Org,
    mut seen: ScheduleState,
    active: Option<&Job>,
) -> Result<ScheduleState, ApiError> {
    let Some(job) = active.filter(|j| j.trigger == Trigger::Schedule && j.status == Status::Succeeded) else {
        return Ok(seen);
    };
    let ExportSpec::Training { changed: Some(window), .. } = &job.params else { return Ok(seen) };
    if seen.watermark.as_deref().is_some_and(|w| w >= window.up_to.as_str()) {
        return Ok(seen);
    }
    super::advance_watermark(state, org, &window.up_to).await?;
    seen.watermark = Some(window.up_to.clone());
    Ok(seen)
}
