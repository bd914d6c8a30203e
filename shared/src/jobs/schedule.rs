//! The scheduled export: an incremental JSONL export per organization, on a schedule.
//!
//! EventBridge Scheduler invokes the `scheduled-export` function with its scheduled time. For
//! every organization that has snapshots (a registry item per organization, listed through a
//! sparse GSI1 partition) it exports the non-archived snapshots created or changed since the
//! organization's *watermark* up to the scheduled time (less a settle delay), as a job of the
//! worker. The job's id is derived from the organization and the scheduled time, so a repeated
//! delivery of the same event finds the job it created and makes no second export. Only a
//! succeeded job moves the watermark, so after a failed run the next one covers the gap.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{new_job, JobStore, Trigger};
use crate::error::ApiError;
use crate::exports::producer::{ExportSpec, Window};
use crate::exports::training::Format;
use crate::keys::Org;
use crate::snapshots::store::{Filters, SnapshotStore};
use crate::store_error::SdkResultExt;
use crate::table::{GSI1, PK, SK};
use crate::AppState;

/// The GSI1 partition listing every organization with snapshots.
const REGISTRY: &str = "SCHEDULED#ORGS";
/// The watermark before any export.
const EPOCH: &str = "1970-01-01T00:00:00.000Z";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn state_key(org: &Org) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), s(crate::keys::schedule(org))), (SK.to_string(), s("SCHEDULE"))])
}

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

/// Makes sure `org` is in the scheduled export's registry (once per organization per process).
pub async fn register(state: &AppState, org: &Org) -> Result<(), ApiError> {
    if state.registered.lock().map(|set| set.contains(org.as_str())).unwrap_or(false) {
        return Ok(());
    }
    state
        .dynamo
        .update_item()
        .table_name(&state.config.table_name)
        .set_key(Some(state_key(org)))
        .update_expression("SET #gpk = :registry, #gsk = :org, organizationId = :org")
        .expression_attribute_names("#gpk", GSI1.pk)
        .expression_attribute_names("#gsk", GSI1.sk)
        .expression_attribute_values(":registry", s(REGISTRY))
        .expression_attribute_values(":org", s(org.as_str()))
        .send()
        .await
        .ctx("register organization for scheduled exports")?;
    if let Ok(mut set) = state.registered.lock() {
        set.insert(org.as_str().to_string());
    }
    Ok(())
}

/// Moves `org`'s watermark forward to `up_to` (never back).
pub async fn advance_watermark(state: &AppState, org: &Org, up_to: &str) -> Result<(), ApiError> {
    let result = state
        .dynamo
        .update_item()
        .table_name(&state.config.table_name)
        .set_key(Some(state_key(org)))
        .update_expression("SET watermark = :w")
        .condition_expression("attribute_not_exists(watermark) OR watermark < :w")
        .expression_attribute_values(":w", s(up_to))
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
        Err(e) => Err(crate::store_error::from_sdk("advance scheduled export watermark", e).into()),
    }
}

/// `org`'s watermark: everything changed up to it has been exported.
pub async fn watermark(state: &AppState, org: &Org) -> Result<Option<String>, ApiError> {
    let out = state
        .dynamo
        .get_item()
        .table_name(&state.config.table_name)
        .set_key(Some(state_key(org)))
        .consistent_read(true)
        .send()
        .await
        .ctx("read scheduled export watermark")?;
    Ok(out.item.and_then(|i| i.get("watermark").and_then(|v| v.as_s().ok()).cloned()))
}

/// The job id of `org`'s export for one scheduled time: time-ordered like every id (it names
/// the scheduled time, which becomes the job's `createdAt`), the rest derived from the
/// organization, so every delivery of that run names the same job.
pub fn job_id(scheduled: chrono::DateTime<chrono::Utc>, org: &Org) -> String {
    let digest = Sha256::digest(format!("{org}|{}", scheduled.timestamp()).as_bytes());
    let tail: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}{tail}", crate::ids::time_prefix(scheduled))
}

/// What a scheduled run did (its invocation's answer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run's scheduled time.
    pub scheduled_time: String,
    /// Changes up to this instant are in the run's files.
    pub up_to: String,
    /// Organizations in the registry.
    pub organizations: u64,
    /// New jobs.
    pub jobs_created: u64,
    /// Jobs this run had created already (a redelivered event).
    pub jobs_resumed: u64,
    /// Organizations without changes.
    pub unchanged: u64,
    /// Organizations whose earlier scheduled job still runs: their changes wait for the next
    /// run after it, so windows never overlap.
    #[serde(default)]
    pub deferred: u64,
    /// Organizations that failed (the run then fails, and is retried).
    pub failed: u64,
}

/// Runs the scheduled export for every registered organization. Answers a summary.
pub async fn run(state: &AppState, event: ScheduledEvent) -> Result<RunSummary, ApiError> {
    let scheduled = match &event.scheduled_time {
        Some(t) => crate::time::parse_rfc3339(t)
            .ok_or_else(|| ApiError::invalid("scheduledTime", "must be an RFC 3339 timestamp"))?,
        None => chrono::Utc::now(),
    };
    let settle = chrono::Duration::from_std(state.config.schedule_settle).unwrap_or_default();
    let up_to = crate::time::to_rfc3339(scheduled - settle);
    let jobs = JobStore::new(state);
    let snapshots = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let (mut organizations, mut created, mut resumed, mut unchanged, mut deferred) = (0, 0, 0, 0, 0);
    let mut pages = state
        .dynamo
        .query()
        .table_name(&state.config.table_name)
        .index_name(GSI1.name)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", GSI1.pk)
        .expression_attribute_values(":pk", s(REGISTRY))
        .into_paginator()
        .items()
        .send();
    let mut failed = 0;
    while let Some(item) = pages.next().await {
        let item = item.ctx("list organizations")?;
        let Some(org) = item.get("organizationId").and_then(|v| v.as_s().ok()).map(Org::stored) else { continue };
        organizations += 1;
        // One organization's trouble must not stop the others; the run fails at the end, so
        // the Scheduler retries it, and a retry repeats nothing that was done.
        match export_org(state, &jobs, &snapshots, &org, scheduled, &up_to).await {
            Ok(OrgRun::Created) => created += 1,
            Ok(OrgRun::Resumed) => resumed += 1,
            Ok(OrgRun::Unchanged) => unchanged += 1,
            Ok(OrgRun::Deferred) => deferred += 1,
            Err(e) => {
                failed += 1;
                tracing::error!(org = %org, error = %e, "scheduled export of an organization failed");
            }
        }
    }
    let summary = RunSummary {
        scheduled_time: crate::time::to_rfc3339(scheduled),
        up_to,
        organizations,
        jobs_created: created,
        jobs_resumed: resumed,
        unchanged,
        deferred,
        failed,
    };
    tracing::info!(?summary, "scheduled export run");
    publish_run(state, &summary).await;
    if failed > 0 {
        return Err(ApiError::new(
            crate::error::ErrorKind::Unavailable,
            format!("{failed} organizations could not be exported; retry"),
        ));
    }
    Ok(summary)
}

/// What one organization's part of a run did.
enum OrgRun {
    /// A new job.
    Created,
    /// This run's job existed already (a redelivered event).
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
        super::settle_event(state, &job).await;
        let job = super::revive(state, job).await?;
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

/// A scheduled run's `detail`: its summary and a stable id (the scheduled time).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDetail<'a> {
    event_id: String,
    #[serde(flatten)]
    summary: &'a RunSummary,
}

/// Sends a scheduled run's event (best effort: a run is not repeated for its event).
pub async fn publish_run(state: &AppState, summary: &RunSummary) {
    // A run that failed for some organizations is retried by the Scheduler: its retry's event,
    // with other counts, has another id than the failed attempt's.
    let outcome = if summary.failed == 0 { "complete" } else { "incomplete" };
    let detail = RunDetail { event_id: format!("run:{}:{outcome}", summary.scheduled_time), summary };
    super::events::put(state, super::events::RUN_FINISHED, &detail, "scheduled run").await;
}
