//! Export events on EventBridge: one event when an export job reaches a final state, and one
//! per scheduled run, on the bus `EVENT_BUS_NAME` (the account's `default` unless set), source
//! `training-data.exports`. A subscriber learns that an export is ready instead of polling.
//!
//! Never blocking, at least once: the job's final state is stored first, with the event it
//! owes (`eventPending`); `PutEvents` is then tried a few times (a failed call, or an entry
//! the answer reports failed, is retried and logged), and only a delivered event clears the
//! debt. A job whose event could not be delivered keeps it, and the next read of the job (its
//! `GET`, the scheduled run's sweep) sends it again; the job's outcome never changes.
//! Each event's `detail.eventId` (job id and state) is stable, so a subscriber drops repeats.
//! Events carry names, `s3Uri`s and digests, never presigned URLs or customer data.

use serde::Serialize;

use super::manifest::{s3_uri, ManifestFile};
pub use super::model::{detail_type, FAILED, SUCCEEDED};
use super::{Job, JobStore, Status, Trigger};
use crate::exports::producer::ExportSpec;
use crate::retry::Backoff;
use crate::AppState;

/// The events' `source`.
pub const SOURCE: &str = "training-data.exports";
/// `detail-type` of a scheduled run.
pub const RUN_FINISHED: &str = "Scheduled Export Run Finished";

/// Attempts of an ending job's `PutEvents` (each also retried by the SDK): 4, 0.2 to 0.8 s apart.
const PUT: Backoff =
    Backoff { attempts: 4, base: std::time::Duration::from_millis(100), max_exponent: 3, jitter: true };
/// A read sending an event again tries once (the SDK's own retries aside): it must not hold
/// up the answer.
const RESEND: Backoff = Backoff { attempts: 1, ..PUT };

/// A job event's `detail`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail<'a> {
    event_id: String,
    organization_id: &'a str,
    job_id: &'a str,
    status: Status,
    trigger: Trigger,
    source: &'static str,
    format: Option<String>,
    dry_run: bool,
    counts: Counts,
    files: Vec<ManifestFile<'a>>,
    manifest_key: Option<&'a str>,
    manifest_s3_uri: Option<String>,
    reason: Option<&'a str>,
    created_at: &'a str,
    finished_at: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    written: u64,
    skipped: u64,
    skipped_reasons: std::collections::BTreeMap<&'static str, u64>,
    redacted: std::collections::BTreeMap<&'static str, u64>,
    bytes: u64,
}

fn status_code(status: Status) -> &'static str {
    match status {
        Status::Queued => "queued",
        Status::Running => "running",
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
    }
}

/// The `detail` of `job`'s event.
pub fn job_detail<'a>(state: &AppState, job: &'a Job) -> JobDetail<'a> {
    let bucket = &state.config.bucket_name;
    let format = match &job.params {
        ExportSpec::Training { format, .. } => serde_json::to_value(format).ok(),
        ExportSpec::Conversations { format, .. } | ExportSpec::Conversation { format, .. } => {
            serde_json::to_value(format).ok()
        }
    };
    JobDetail {
        event_id: format!("{}:{}", job.id, status_code(job.status)),
        organization_id: &job.organization_id,
        job_id: &job.id,
        status: job.status,
        trigger: job.trigger,
        source: job.params.source(),
        format: format.and_then(|v| v.as_str().map(str::to_string)),
        dry_run: job.dry_run,
        counts: Counts {
            written: job.processed,
            skipped: job.skipped,
            skipped_reasons: job.skipped_reasons.by_code(),
            redacted: job.redacted.by_code(),
            bytes: job.bytes,
        },
        files: job.files.iter().map(|f| ManifestFile::of(bucket, f)).collect(),
        manifest_key: job.manifest_key.as_deref(),
        manifest_s3_uri: job.manifest_key.as_deref().map(|k| s3_uri(bucket, k)),
        reason: job.reason.as_deref(),
        created_at: &job.created_at,
        finished_at: job.finished_at.as_deref(),
    }
}

/// Puts one event, retrying a failed call or a failed entry; `true` once EventBridge took it.
pub async fn put(state: &AppState, detail_type: &str, detail: &impl Serialize, what: &str) -> bool {
    put_with(state, PUT, detail_type, detail, what).await
}

async fn put_with(state: &AppState, policy: Backoff, detail_type: &str, detail: &impl Serialize, what: &str) -> bool {
    let detail = match serde_json::to_string(detail) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(what, error = %e, "could not encode an export event");
            return false;
        }
    };
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(&state.config.event_bus_name)
        .source(SOURCE)
        .detail_type(detail_type)
        .detail(detail)
        .build();
    for attempt in 0..policy.attempts {
        policy.wait(attempt).await;
        match state.events.put_events().entries(entry.clone()).send().await {
            Ok(out) if out.failed_entry_count() == 0 => return true,
            Ok(out) => {
                let code = out.entries().first().and_then(|e| e.error_code()).unwrap_or("unknown").to_string();
                tracing::warn!(what, attempt, code, "EventBridge refused an export event; retrying");
            }
            Err(e) => {
                let error = aws_sdk_eventbridge::error::DisplayErrorContext(e);
                tracing::warn!(what, attempt, error = %error, "could not put an export event; retrying");
            }
        }
    }
    tracing::error!(what, "export event not delivered; the job keeps it for a later read to send again");
    false
}

/// Sends the event `job` owes (its final state's), and clears the debt once it is delivered.
/// Never fails: a job's outcome does not depend on its event.
pub async fn publish_job(state: &AppState, job: &Job) {
    publish_with(state, job, PUT).await
}

/// [`publish_job`] from a read of a job that still owes its event: one attempt, given at most
/// [`RESEND_WITHIN`] so the read's answer is not held up (the debt stays for a later read).
pub async fn resend(state: &AppState, job: &Job) {
    if tokio::time::timeout(RESEND_WITHIN, publish_with(state, job, RESEND)).await.is_err() {
        tracing::warn!(job = %job.id, "EventBridge did not answer in time; the job keeps its event");
    }
}

/// Longest a read waits for EventBridge.
pub const RESEND_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

async fn publish_with(state: &AppState, job: &Job, policy: Backoff) {
    let Some(detail_type) = detail_type(job.status) else { return };
    if job.event_pending.as_deref() != Some(detail_type) {
        return;
    }
    let what = format!("job {}", job.id);
    if put_with(state, policy, detail_type, &job_detail(state, job), &what).await {
        if let Err(e) = JobStore::new(state).clear_event(&job.org(), &job.id, detail_type).await {
            // The event was delivered; a repeat later is harmless (its eventId is the same).
            tracing::warn!(job = %job.id, error = %e, "could not record the export event as sent");
        }
    }
}
