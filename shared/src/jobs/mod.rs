//! Export jobs: exports of any size, run in the background by the `export-worker` function.
//!
//! A job is one item (`ORG#<org>#JOBS` / `JOB#<id>`, ids time-ordered so a Query lists newest
//! first). It holds the export's parameters ([`ExportSpec`]), its status and progress, and while
//! it runs a *lease* (which invocation works on it, until when) and a *checkpoint* (the multipart
//! upload, how many parts it has, and the position of the last item in them). The worker runs
//! until its time budget is spent, saves a checkpoint at a part boundary and hands the job to a
//! fresh invocation, so no size is too large; a crashed or timed-out invocation is retried
//! from the last checkpoint. See [`worker`] for the life cycle and [`dispatch`] for how a job
//! reaches the worker.

pub mod dispatch;
pub mod schedule;
pub mod worker;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, SdkResultExt};
use crate::exports::producer::ExportSpec;
use crate::table::{PK, SK};
use crate::AppState;
pub use dispatch::{Dispatcher, JobRef};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Bytes in the uploaded parts.
    pub bytes: u64,
    /// When the upload was initiated, at the latest (RFC 3339): the file's retention counts
    /// from it. Absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_started_at: Option<String>,
}

impl Checkpoint {
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
    /// Items the export will have, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Bytes uploaded so far; the file's size once succeeded.
    #[serde(default)]
    pub bytes: u64,
    /// Why it failed, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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

    /// The reference the worker is invoked with.
    pub fn reference(&self) -> JobRef {
        JobRef { organization_id: self.organization_id.clone(), job_id: self.id.clone() }
    }
}

/// Partition of an organization's jobs.
pub fn jobs_pk(org: &str) -> String {
    format!("ORG#{org}#JOBS")
}

/// Sort key of a job.
pub fn job_sk(id: &str) -> String {
    format!("JOB#{id}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// `#name` → `name` for every `#name` in `expressions` (many attribute names are reserved words).
fn names(expressions: &[&str]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for e in expressions {
        let mut rest = *e;
        while let Some(i) = rest.find('#') {
            let name: String = rest[i + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[i + 1 + name.len()..];
            if !name.is_empty() {
                out.insert(format!("#{name}"), name);
            }
        }
    }
    out
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new queued job for `spec` (not yet stored).
pub fn new_job(org: &str, spec: ExportSpec, trigger: Trigger, id: String) -> Job {
    // The instant the id names, when it names one, so the list order is `createdAt` order.
    let created = crate::ids::instant(&id).unwrap_or_else(chrono::Utc::now);
    let file_name = spec.file_name(created);
    Job {
        key: crate::exports::object_key(org, spec.kind(), &file_name),
        id,
        organization_id: org.to_string(),
        status: Status::Queued,
        params: spec,
        trigger,
        created_at: crate::time::to_rfc3339(created),
        started_at: None,
        finished_at: None,
        processed: 0,
        skipped: 0,
        total: None,
        bytes: 0,
        reason: None,
        file_name,
        file_expires_at: None,
        checkpoint: None,
        lease_owner: None,
        lease_until: 0,
        dispatched_at: now_ms(),
        failures: 0,
        last_error: None,
    }
}

/// Job storage over the table.
pub struct JobStore<'a> {
    state: &'a AppState,
}

impl<'a> JobStore<'a> {
    /// A store over the state's table.
    pub fn new(state: &'a AppState) -> Self {
        Self { state }
    }

    fn table(&self) -> &str {
        &self.state.config.table_name
    }

    fn key(org: &str, id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(PK.to_string(), s(jobs_pk(org))), (SK.to_string(), s(job_sk(id)))])
    }

    /// Stores a new job; `Ok(false)` when one with its id exists already.
    pub async fn insert(&self, job: &Job) -> Result<bool, ApiError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(job).map_err(|e| ApiError::internal("encode job", e))?;
        item.extend(Self::key(&job.organization_id, &job.id));
        // The record outlives its file by 30 days, so a job can still say it expired.
        let ttl = chrono::Utc::now().timestamp() + i64::from(self.state.config.export_retention_days + 30) * 86_400;
        item.insert("expiresAt".into(), n(ttl));
        let result = self
            .state
            .dynamo
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(crate::error::from_sdk("create export job", e)),
        }
    }

    /// A job of `org` (strongly consistent), `None` when it does not exist there.
    pub async fn get(&self, org: &str, id: &str) -> Result<Option<Job>, ApiError> {
        let out = self
            .state
            .dynamo
            .get_item()
            .table_name(self.table())
            .set_key(Some(Self::key(org, id)))
            .consistent_read(true)
            .send()
            .await
            .ctx("get export job")?;
        out.item.map(serde_dynamo::from_item).transpose().map_err(|e| ApiError::internal("decode job", e))
    }

    /// One page of `org`'s jobs, newest first, continuing before job id `before` (exclusive).
    pub async fn list(
        &self,
        org: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>), ApiError> {
        let (condition, bound) = match before {
            Some(id) => ("PK = :pk AND SK < :b", job_sk(id)),
            None => ("PK = :pk AND begins_with(SK, :b)", "JOB#".to_string()),
        };
        let out = self
            .state
            .dynamo
            .query()
            .table_name(self.table())
            .key_condition_expression(condition)
            .expression_attribute_values(":pk", s(jobs_pk(org)))
            .expression_attribute_values(":b", s(bound))
            .scan_index_forward(false)
            .limit(limit as i32 + 1)
            .send()
            .await
            .ctx("list export jobs")?;
        let mut jobs: Vec<Job> = serde_dynamo::from_items(out.items.unwrap_or_default())
            .map_err(|e| ApiError::internal("decode jobs", e))?;
        let next = if jobs.len() > limit { jobs.get(limit - 1).map(|j| j.id.clone()) } else { None };
        jobs.truncate(limit);
        Ok((jobs, next))
    }

    /// A conditional update of a job; `Ok(None)` when the condition does not hold.
    async fn update(
        &self,
        org: &str,
        id: &str,
        expression: &str,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Option<Job>, ApiError> {
        let result = self
            .state
            .dynamo
            .update_item()
            .table_name(self.table())
            .set_key(Some(Self::key(org, id)))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .set_expression_attribute_names(Some(names(&[expression, condition])))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                out.attributes.map(serde_dynamo::from_item).transpose().map_err(|e| ApiError::internal("decode job", e))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(crate::error::from_sdk("update export job", e)),
        }
    }

    /// Takes the job for one invocation until `until_ms`, unless another holds a live lease or
    /// it has ended. Answers the job as taken.
    pub async fn claim(&self, org: &str, id: &str, owner: &str, until_ms: i64) -> Result<Option<Job>, ApiError> {
        let now = now_ms();
        self.update(
            org,
            id,
            "SET #status = :running, #leaseOwner = :owner, #leaseUntil = :until, #startedAt = if_not_exists(#startedAt, :now_s)",
            "attribute_exists(PK) AND #status IN (:queued, :running) AND #leaseUntil < :now",
            HashMap::from([
                (":running".into(), s("running")),
                (":queued".into(), s("queued")),
                (":owner".into(), s(owner)),
                (":until".into(), n(until_ms)),
                (":now".into(), n(now)),
                (":now_s".into(), s(crate::time::now_rfc3339())),
            ]),
        )
        .await
    }

    /// Records the count of items the export will have.
    pub async fn set_total(&self, org: &str, id: &str, owner: &str, total: u64) -> Result<(), ApiError> {
        self.update(
            org,
            id,
            "SET #total = :total",
            "#leaseOwner = :owner",
            HashMap::from([(":total".into(), n(total)), (":owner".into(), s(owner))]),
        )
        .await?;
        Ok(())
    }

    /// Saves a checkpoint and the progress it stands for (never below `floor`, the progress
    /// already shown, so `processed` only grows); progress resets the failure count.
    /// `Ok(false)` when the lease was lost.
    pub async fn checkpoint(
        &self,
        org: &str,
        id: &str,
        owner: &str,
        cp: &Checkpoint,
        floor: u64,
    ) -> Result<bool, ApiError> {
        let value = serde_dynamo::to_attribute_value(cp).map_err(|e| ApiError::internal("encode checkpoint", e))?;
        let updated = self
            .update(
                org,
                id,
                "SET #checkpoint = :cp, #processed = :items, #skipped = :skipped, #bytes = :bytes, #failures = :zero",
                "#leaseOwner = :owner AND #status = :running",
                HashMap::from([
                    (":cp".into(), value),
                    (":zero".into(), n(0)),
                    (":items".into(), n(cp.items.max(floor))),
                    (":skipped".into(), n(cp.skipped)),
                    (":bytes".into(), n(cp.bytes)),
                    (":owner".into(), s(owner)),
                    (":running".into(), s("running")),
                ]),
            )
            .await?;
        Ok(updated.is_some())
    }

    /// Frees the lease for the next invocation, which is being dispatched now.
    pub async fn hand_over(&self, org: &str, id: &str, owner: &str) -> Result<bool, ApiError> {
        let updated = self
            .update(
                org,
                id,
                "SET #leaseUntil = :zero, #dispatchedAt = :now REMOVE #leaseOwner",
                "#leaseOwner = :owner",
                HashMap::from([(":zero".into(), n(0)), (":now".into(), n(now_ms())), (":owner".into(), s(owner))]),
            )
            .await?;
        Ok(updated.is_some())
    }

    /// Counts an invocation that died holding the lease (a timeout or out of memory), found by
    /// the invocation that took the lease after it. Answers the job as updated.
    pub async fn record_stall(&self, org: &str, id: &str, owner: &str) -> Result<Option<Job>, ApiError> {
        self.update(
            org,
            id,
            "SET #lastError = :error, #failures = if_not_exists(#failures, :zero) + :one",
            "#leaseOwner = :owner",
            HashMap::from([
                (":zero".into(), n(0)),
                (":one".into(), n(1)),
                (":error".into(), s("the worker was stopped before it finished (time limit or memory)")),
                (":owner".into(), s(owner)),
            ]),
        )
        .await
    }

    /// Records a failed invocation and frees the lease, so a retry can resume at once.
    pub async fn record_failure(&self, org: &str, id: &str, owner: &str, error: &str) -> Result<(), ApiError> {
        self.update(
            org,
            id,
            "SET #leaseUntil = :zero, #lastError = :error, #failures = if_not_exists(#failures, :zero) + :one REMOVE #leaseOwner",
            "#leaseOwner = :owner",
            HashMap::from([(":zero".into(), n(0)), (":one".into(), n(1)), (":error".into(), s(error)), (":owner".into(), s(owner))]),
        )
        .await?;
        Ok(())
    }

    /// Marks the job succeeded with its final size and counts. `fileExpiresAt` is when the
    /// bucket's lifecycle rule may delete the file, counted as S3 counts it from `file_created`
    /// (no later than the object's creation date: for a multipart upload, its initiation).
    pub async fn succeed(
        &self,
        job: &Job,
        owner: &str,
        bytes: u64,
        counts: crate::exports::Counts,
        file_created: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Job>, ApiError> {
        let (org, id) = (job.organization_id.as_str(), job.id.as_str());
        let (items, skipped) = (counts.items, counts.skipped);
        let finished = chrono::Utc::now();
        let expires = lifecycle_expiry(file_created, self.state.config.export_retention_days);
        self.update(
            org,
            id,
            "SET #status = :succeeded, #finishedAt = :finished, #fileExpiresAt = :expires, #bytes = :bytes, #processed = :items, \
             #skipped = :skipped, #leaseUntil = :zero REMOVE #leaseOwner, #checkpoint, #lastError",
            "#leaseOwner = :owner",
            HashMap::from([
                (":succeeded".into(), s("succeeded")),
                (":finished".into(), s(crate::time::to_rfc3339(finished))),
                (":expires".into(), s(crate::time::to_rfc3339(expires))),
                (":bytes".into(), n(bytes)),
                (":items".into(), n(items)),
                (":skipped".into(), n(skipped)),
                (":zero".into(), n(0)),
                (":owner".into(), s(owner)),
            ]),
        )
        .await
    }

    /// Marks the job failed with `reason` unless it has ended already.
    pub async fn fail(&self, org: &str, id: &str, reason: &str) -> Result<Option<Job>, ApiError> {
        self.update(
            org,
            id,
            "SET #status = :failed, #finishedAt = :finished, #reason = :reason, #leaseUntil = :zero REMOVE #leaseOwner, #checkpoint",
            "attribute_exists(PK) AND #status IN (:queued, :running)",
            HashMap::from([
                (":failed".into(), s("failed")),
                (":queued".into(), s("queued")),
                (":running".into(), s("running")),
                (":finished".into(), s(crate::time::now_rfc3339())),
                (":reason".into(), s(reason)),
                (":zero".into(), n(0)),
            ]),
        )
        .await
    }

    /// Notes a new hand-over of a stale job, unless another reader did it first.
    pub async fn redispatch(&self, job: &Job) -> Result<bool, ApiError> {
        let updated = self
            .update(
                &job.organization_id,
                &job.id,
                "SET #dispatchedAt = :now",
                "#dispatchedAt = :seen AND #leaseUntil = :lease",
                HashMap::from([
                    (":now".into(), n(now_ms())),
                    (":seen".into(), n(job.dispatched_at)),
                    (":lease".into(), n(job.lease_until)),
                ]),
            )
            .await?;
        Ok(updated.is_some())
    }
}

/// Creates a queued job for `spec` and hands it to the worker. A failed hand-over leaves the
/// job queued; reading it later hands it over again (see [`revive`]).
pub async fn start(state: &AppState, org: &str, spec: ExportSpec, trigger: Trigger) -> Result<Job, ApiError> {
    if !state.jobs.is_enabled() {
        return Err(ApiError::new(
            crate::error::ErrorKind::Unavailable,
            "Export jobs are not configured in this deployment",
        ));
    }
    let job = new_job(org, spec, trigger, crate::ids::object_id());
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
    worker::abort_upload(state, &job).await;
    Ok(JobStore::new(state).fail(&job.organization_id, &job.id, &reason).await?.unwrap_or(job))
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
    Ok(store.get(&job.organization_id, &job.id).await?.unwrap_or(job))
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
