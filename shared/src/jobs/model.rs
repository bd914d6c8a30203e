//! What a job is: its stored form ([`Job`], with its [`Status`], [`Trigger`] and
//! [`Checkpoint`]), the worker's event ([`JobRef`]) and the few rules read off them (staleness,
//! when the file expires). Plain data, shared by the store and the domain code.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exports::spec::ExportSpec;

/// A job without a live lease or a recent dispatch for this long is stale: reads hand it to
/// the worker again (or fail it once it has failed [`MAX_FAILURES`] times).
pub const STALE_AFTER_MS: i64 = 120_000;
/// Failed invocations after which a job fails for good.
pub const MAX_FAILURES: u32 = 5;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, not started.
    Queued,
    /// Started; may be between invocations.
    Running,
    /// The file is ready.
    Succeeded,
    /// Given up; `reason` says why.
    Failed,
}

impl Status {
    /// Succeeded or failed: nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What created a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `POST /api/training/exports`.
    Request,
    /// A synchronous export over its time budget.
    Fallback,
    /// The scheduled export.
    Schedule,
}

/// A job's resume point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The multipart upload.
    pub upload_id: String,
    /// Parts 1..=parts are uploaded and hold every item up to `position`.
    pub parts: i32,
    /// Where the producer continues (opaque, per source).
    pub position: String,
    /// Items written so far.
    pub items: u64,
    /// Items skipped so far.
    pub skipped: u64,
    /// `skipped` by reason (absent in checkpoints written before reasons were counted).
    #[serde(default)]
    pub reasons: crate::exports::counts::Reasons,
    /// What redaction replaced so far, by type.
    #[serde(default)]
    pub redacted: crate::exports::counts::Redacted,
    /// Deletion records written so far.
    #[serde(default)]
    pub deletions: u64,
    /// The dedup journal's segments that hold the state at `position` (all files so far).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedup_journal: Vec<String>,
    /// The redaction the files so far were written with (a job resumed under another one, as
    /// when `EXPORT_REDACTION` changed, starts again: a job's files have one redaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<crate::exports::redact::Redaction>,
    /// How many of them were written before the current file started (a file started again
    /// replays only these).
    #[serde(default)]
    pub dedup_file_start: usize,
    /// Bytes in the uploaded parts.
    pub bytes: u64,
    /// SHA-256 state of those bytes; absent in checkpoints written before files were hashed
    /// (such a checkpoint is not resumed: the export starts again, so the digest is right).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<crate::sha256::Sha256State>,
    /// The file being written: its index among the job's passes (a split job has several).
    #[serde(default)]
    pub file: usize,
    /// The files earlier passes finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<JobFile>,
    /// What earlier passes counted (`items`, `skipped` and `bytes` here are the current file's).
    #[serde(default)]
    pub done: crate::exports::counts::Counts,
    /// When the upload was initiated, at the latest (RFC 3339): the file's retention counts
    /// from it. Absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_started_at: Option<String>,
}

impl Checkpoint {
    /// What the current file counted up to the checkpoint.
    pub fn counts(&self) -> crate::exports::counts::Counts {
        crate::exports::counts::Counts {
            items: self.items,
            skipped: self.skipped,
            reasons: self.reasons,
            redacted: self.redacted,
            deletions: self.deletions,
        }
    }

    /// When the checkpoint's upload was initiated, at the latest: as recorded, else the job's
    /// creation (earlier, so a retention counted from it still ends no later than S3's).
    pub fn upload_started(&self, job: &Job) -> chrono::DateTime<chrono::Utc> {
        [self.upload_started_at.as_deref(), Some(job.created_at.as_str())]
            .into_iter()
            .flatten()
            .find_map(crate::time::parse_rfc3339)
            .unwrap_or_else(chrono::Utc::now)
    }
}

/// When S3's lifecycle rule may delete a file created at `created` that expires after `days`:
/// S3 adds the days to the object's creation and rounds up to the next midnight UTC, and
/// deletes the object some time after that. So the file is there until this moment, and gone
/// no earlier.
pub fn lifecycle_expiry(created: chrono::DateTime<chrono::Utc>, days: u32) -> chrono::DateTime<chrono::Utc> {
    let due = created + chrono::Duration::days(i64::from(days));
    let midnight = due.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    if midnight == due {
        due
    } else {
        midnight + chrono::Duration::days(1)
    }
}

/// One file of a job, as recorded on the job and in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFile {
    /// The download's file name.
    pub name: String,
    /// `train`, `validation` or `test` when the job splits; `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Items in the file (snapshots, examples or conversations).
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes (lowercase hex), computed while it was written.
    pub sha256: String,
    /// The object key; `None` for a dry run, which stores no file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// No later than S3's date of the object (RFC 3339), from which its retention counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// An export job as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Time-ordered id (24 hex digits).
    pub id: String,
    /// Owner.
    pub organization_id: String,
    /// Status.
    pub status: Status,
    /// What to export.
    pub params: ExportSpec,
    /// What created the job.
    pub trigger: Trigger,
    /// Created (RFC 3339).
    pub created_at: String,
    /// First started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Succeeded or failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Items exported so far (only grows).
    #[serde(default)]
    pub processed: u64,
    /// Items skipped (fine-tune examples without an assistant turn).
    #[serde(default)]
    pub skipped: u64,
    /// `skipped` by reason.
    #[serde(default)]
    pub skipped_reasons: crate::exports::counts::Reasons,
    /// What redaction replaced, by type.
    #[serde(default)]
    pub redacted: crate::exports::counts::Redacted,
    /// The event this final job still owes (its `detail-type`), until EventBridge took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_pending: Option<String>,
    /// Items the export will have, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Bytes uploaded so far; the file's size once succeeded.
    #[serde(default)]
    pub bytes: u64,
    /// Why it failed, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A dry run: every stage runs, only the manifest is written.
    #[serde(default)]
    pub dry_run: bool,
    /// The files written, once succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<JobFile>,
    /// The manifest's object key, once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// Warnings about the files as a whole (a target's bounds on a file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The download's file name.
    pub file_name: String,
    /// The object key (never shown).
    pub key: String,
    /// When the file leaves the bucket (RFC 3339), once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_expires_at: Option<String>,
    /// Resume point while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    /// Invocation holding the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    /// Epoch ms until which the lease holds (0: free).
    #[serde(default)]
    pub lease_until: i64,
    /// Epoch ms of the last hand-over to the worker.
    #[serde(default)]
    pub dispatched_at: i64,
    /// Failed invocations so far.
    #[serde(default)]
    pub failures: u32,
    /// The last failure, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Job {
    /// Whether nobody works on the job and nobody was asked to recently.
    pub fn is_stale(&self, now_ms: i64) -> bool {
        !self.status.is_terminal()
            && now_ms > self.lease_until + STALE_AFTER_MS
            && now_ms > self.dispatched_at + STALE_AFTER_MS
    }

    /// The organization it is stored under.
    pub fn org(&self) -> crate::keys::Org {
        crate::keys::Org::stored(&self.organization_id)
    }

    /// The reference the worker is invoked with.
    pub fn reference(&self) -> JobRef {
        JobRef { organization_id: self.organization_id.clone(), job_id: self.id.clone() }
    }
}

/// The worker's event: which job to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    /// The job's organization.
    pub organization_id: String,
    /// The job.
    pub job_id: String,
}

/// A share of a scheduled run: the organizations of one registry page, handed to the worker
/// by the run's coordinator (`scheduled-export`), which makes or resumes each one's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// The run's scheduled time (RFC 3339): names the run and every job it makes.
    pub scheduled_time: String,
    /// The end of the run's windows.
    pub up_to: String,
    /// Its place in the run (0, 1, …): a redelivered batch is counted once.
    pub number: u64,
    /// The organizations, as the registry stores them.
    pub organizations: Vec<String>,
}

/// What the `export-worker` function is invoked with: a job to run (`{organizationId, jobId}`)
/// or a scheduled run's batch (`{"scheduledBatch": {...}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkerEvent {
    /// A scheduled run's batch.
    Batch {
        /// The batch.
        #[serde(rename = "scheduledBatch")]
        scheduled_batch: Batch,
    },
    /// A job.
    Job(JobRef),
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How one invocation runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Work time before checkpointing and handing over (checked after each item).
    pub budget: Duration,
    /// How long the invocation may live at most (Lambda: until its deadline); the lease lasts
    /// that long, so no other invocation can take the job while this one may still write.
    /// `None`: the budget plus [`DEADLINE_MARGIN`](super::worker::DEADLINE_MARGIN).
    pub lifetime: Option<Duration>,
    /// Fault injection for tests: the upload of part `n + 1` fails as S3 failing would.
    pub fault_after_parts: Option<usize>,
}

/// What one invocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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

/// A multipart upload this invocation writes to, for the caller to abort on a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRef {
    /// The object key.
    pub key: String,
    /// The upload.
    pub id: String,
}

/// `detail-type` of a job that succeeded.
pub const SUCCEEDED: &str = "Export Job Succeeded";
/// `detail-type` of a job that failed.
pub const FAILED: &str = "Export Job Failed";

/// The `detail-type` a job in its final state owes (`None` while it runs).
pub fn detail_type(status: Status) -> Option<&'static str> {
    match status {
        Status::Succeeded => Some(SUCCEEDED),
        Status::Failed => Some(FAILED),
        Status::Queued | Status::Running => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_expiry_rounds_up_to_the_next_midnight_utc_as_s3_does() {
        let t = |s: &str| crate::time::parse_rfc3339(s).unwrap();
        assert_eq!(lifecycle_expiry(t("2026-01-15T10:30:00Z"), 1), t("2026-01-17T00:00:00Z"));
        assert_eq!(lifecycle_expiry(t("2026-01-15T23:59:59.999Z"), 7), t("2026-01-23T00:00:00Z"));
        assert_eq!(lifecycle_expiry(t("2026-01-15T00:00:00Z"), 7), t("2026-01-22T00:00:00Z"));
    }
}
