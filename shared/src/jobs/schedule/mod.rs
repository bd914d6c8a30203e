//! The scheduled export: an incremental JSONL export per organization, on a schedule.
//!
//! EventBridge Scheduler invokes the `scheduled-export` function with its scheduled time. That
//! invocation is the run's *coordinator* ([`fanout`]): it pages the registry of organizations
//! (a sparse GSI1 partition, [`registry`]) and hands each page to the `export-worker` function
//! as a [`Batch`], by asynchronous invocation, checkpointing its place in the registry on the
//! run's item ([`progress`]) after each one. Each batch ([`batch`]) makes, for every
//! organization whose non-archived snapshots were created, changed or deleted since its
//! *watermark*, a job of the worker over the window from the watermark to the scheduled time
//! (less a settle delay). The job's id is derived from the organization and the scheduled
//! time, so a redelivered event or batch finds the job it made and makes no second one. Only a
//! succeeded job moves the watermark, so after a failed run the next one covers the gap. The
//! batch that completes the run puts its `Scheduled Export Run Finished` event.

mod batch;
mod fanout;
mod progress;
mod registry;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::model::Batch;
use crate::error::ApiError;
use crate::keys::Org;
use crate::AppState;
pub use batch::{run_batch, BatchOutcome};
pub use fanout::{handle, run, BATCH_SIZE};
pub use progress::{publish_run, summary};
pub use registry::{advance_watermark, register, watermark};

/// The event the schedule sends (its `Input` in `template.yaml`, with Scheduler's context
/// attributes); every field is optional so a hand-made `{}` runs an export up to now.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledEvent {
    /// `<aws.scheduler.scheduled-time>`: the same for every delivery of one run.
    #[serde(default)]
    pub scheduled_time: Option<String>,
    /// `<aws.scheduler.schedule-arn>`.
    #[serde(default)]
    pub schedule_arn: Option<String>,
    /// `<aws.scheduler.execution-id>`.
    #[serde(default)]
    pub execution_id: Option<String>,
}

/// The job id of `org`'s export for one scheduled time: time-ordered like every id (it names
/// the scheduled time, which becomes the job's `createdAt`), the rest derived from the
/// organization, so every delivery of that run names the same job.
pub fn job_id(scheduled: chrono::DateTime<chrono::Utc>, org: &Org) -> String {
    let digest = Sha256::digest(format!("{org}|{}", scheduled.timestamp()).as_bytes());
    let tail: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}{tail}", crate::ids::time_prefix(scheduled))
}

/// A run's scheduled time (now for a hand-made `{}`) and the end of its windows.
fn times(state: &AppState, event: &ScheduledEvent) -> Result<(chrono::DateTime<chrono::Utc>, String), ApiError> {
    let scheduled = match &event.scheduled_time {
        Some(t) => crate::time::parse_rfc3339(t)
            .ok_or_else(|| ApiError::invalid("scheduledTime", "must be an RFC 3339 timestamp"))?,
        None => chrono::Utc::now(),
    };
    let settle = chrono::Duration::from_std(state.config.schedule_settle).unwrap_or_default();
    Ok((scheduled, crate::time::to_rfc3339(scheduled - settle)))
}

/// Where a scheduled run stands: the coordinator's answer, and the detail of the run's event
/// once every batch has reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run's scheduled time.
    pub scheduled_time: String,
    /// Changes up to this instant are in the run's files.
    pub up_to: String,
    /// Organizations in the registry (so far, while the coordinator pages it).
    pub organizations: u64,
    /// Batches handed to the worker.
    pub batches: u64,
    /// Batches that have reported; the run has finished when all have and the registry is
    /// paged to its end.
    pub batches_finished: u64,
    /// Whether the run has finished.
    pub finished: bool,
    /// New jobs.
    pub jobs_created: u64,
    /// Jobs this run had made already (a redelivered event or batch).
    pub jobs_resumed: u64,
    /// Organizations without changes.
    pub unchanged: u64,
    /// Organizations whose earlier scheduled job still runs: their changes wait for the next
    /// run after it, so windows never overlap.
    pub deferred: u64,
    /// Organizations that failed twice in their batch: the next run covers their changes.
    pub failed: u64,
}
