//! Job storage: every DynamoDB read and write of a job (`ORG#<org>#JOBS` / `JOB#<id>`). The
//! worker's steps are conditional updates, so only the invocation holding the lease can move a
//! job on, and a job that has ended stays as it ended.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::model::{lifecycle_expiry, now_ms, Checkpoint, Job, JobFile};
use crate::keys::{self, Org};
use crate::store_error::{SdkResultExt, StoreError};
use crate::table::{PK, SK};
use crate::AppState;

/// Partition of an organization's jobs.
pub fn jobs_pk(org: &Org) -> String {
    keys::jobs(org)
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

/// What a finished job wrote, for [`JobStore::succeed`].
#[derive(Debug)]
pub struct Done<'a> {
    /// The files.
    pub files: &'a [JobFile],
    /// What was written and left out.
    pub counts: crate::exports::counts::Counts,
    /// Where the manifest is.
    pub manifest_key: String,
    /// Warnings about the files as a whole.
    pub warnings: Vec<String>,
    /// No later than S3's date of the files (a dry run's only file is its manifest).
    pub file_created: chrono::DateTime<chrono::Utc>,
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

    fn key(org: &Org, id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(PK.to_string(), s(jobs_pk(org))), (SK.to_string(), s(job_sk(id)))])
    }

    /// Stores a new job; `Ok(false)` when one with its id exists already.
    pub async fn insert(&self, job: &Job) -> Result<bool, StoreError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(job).map_err(|e| StoreError::fault("encode job", e))?;
        item.extend(Self::key(&job.org(), &job.id));
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
            Err(e) => Err(crate::store_error::from_sdk("create export job", e)),
        }
    }

    /// A job of `org` (strongly consistent), `None` when it does not exist there.
    pub async fn get(&self, org: &Org, id: &str) -> Result<Option<Job>, StoreError> {
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
        out.item.map(serde_dynamo::from_item).transpose().map_err(|e| StoreError::fault("decode job", e))
    }

    /// One page of `org`'s jobs, newest first, continuing before job id `before` (exclusive).
    pub async fn list(
        &self,
        org: &Org,
        limit: usize,
        before: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>), StoreError> {
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
        let mut jobs: Vec<Job> =
            serde_dynamo::from_items(out.items.unwrap_or_default()).map_err(|e| StoreError::fault("decode jobs", e))?;
        let next = if jobs.len() > limit { jobs.get(limit - 1).map(|j| j.id.clone()) } else { None };
        jobs.truncate(limit);
        Ok((jobs, next))
    }

    /// A conditional update of a job; `Ok(None)` when the condition does not hold.
    async fn update(
        &self,
        org: &Org,
        id: &str,
        expression: &str,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Option<Job>, StoreError> {
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
                out.attributes.map(serde_dynamo::from_item).transpose().map_err(|e| StoreError::fault("decode job", e))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(crate::store_error::from_sdk("update export job", e)),
        }
    }

    /// Takes the job for one invocation until `until_ms`, unless another holds a live lease or
    /// it has ended. Answers the job as taken.
    pub async fn claim(&self, org: &Org, id: &str, owner: &str, until_ms: i64) -> Result<Option<Job>, StoreError> {
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
    pub async fn set_total(&self, org: &Org, id: &str, owner: &str, total: u64) -> Result<(), StoreError> {
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
        org: &Org,
        id: &str,
        owner: &str,
        cp: &Checkpoint,
        floor: u64,
    ) -> Result<bool, StoreError> {
        let encode = |e| StoreError::fault("encode checkpoint", e);
        let value = serde_dynamo::to_attribute_value(cp).map_err(encode)?;
        let mut so_far = cp.done;
        so_far.add(cp.counts());
        let reasons = serde_dynamo::to_attribute_value(so_far.reasons).map_err(encode)?;
        let redacted = serde_dynamo::to_attribute_value(so_far.redacted).map_err(encode)?;
        let updated = self
            .update(
                org,
                id,
                "SET #checkpoint = :cp, #processed = :items, #skipped = :skipped, #skippedReasons = :reasons, \
                 #redacted = :redacted, #bytes = :bytes, #failures = :zero",
                "#leaseOwner = :owner AND #status = :running",
                HashMap::from([
                    (":cp".into(), value),
                    (":zero".into(), n(0)),
                    (":items".into(), n(so_far.items.max(floor))),
                    (":skipped".into(), n(so_far.skipped)),
                    (":reasons".into(), reasons),
                    (":redacted".into(), redacted),
                    (":bytes".into(), n(cp.files.iter().map(|f| f.bytes).sum::<u64>() + cp.bytes)),
                    (":owner".into(), s(owner)),
                    (":running".into(), s("running")),
                ]),
            )
            .await?;
        Ok(updated.is_some())
    }

    /// Frees the lease for the next invocation, which is being dispatched now.
    pub async fn hand_over(&self, org: &Org, id: &str, owner: &str) -> Result<bool, StoreError> {
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
    pub async fn record_stall(&self, org: &Org, id: &str, owner: &str) -> Result<Option<Job>, StoreError> {
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
    pub async fn record_failure(&self, org: &Org, id: &str, owner: &str, error: &str) -> Result<(), StoreError> {
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

    /// Marks the job succeeded with its files, counts, manifest and warnings. `fileExpiresAt`
    /// is when the bucket's lifecycle rule may delete the files, counted as S3 counts it from
    /// `file_created` (no later than the object's creation date: for a multipart upload, its
    /// initiation; for a dry run, its manifest's).
    pub async fn succeed(&self, job: &Job, owner: &str, done: Done<'_>) -> Result<Option<Job>, StoreError> {
        let (org, id) = (&job.org(), job.id.as_str());
        let finished = chrono::Utc::now();
        let encode = |e| StoreError::fault("encode finished job", e);
        let reasons = serde_dynamo::to_attribute_value(done.counts.reasons).map_err(encode)?;
        let redacted = serde_dynamo::to_attribute_value(done.counts.redacted).map_err(encode)?;
        let files = serde_dynamo::to_attribute_value(done.files).map_err(encode)?;
        let warnings = serde_dynamo::to_attribute_value(&done.warnings).map_err(encode)?;
        let bytes: u64 = done.files.iter().map(|f| f.bytes).sum();
        let mut values = HashMap::from([
            (":succeeded".into(), s("succeeded")),
            (":finished".into(), s(crate::time::to_rfc3339(finished))),
            (":bytes".into(), n(bytes)),
            (":items".into(), n(done.counts.items)),
            (":skipped".into(), n(done.counts.skipped)),
            (":reasons".into(), reasons),
            (":redacted".into(), redacted),
            (":files".into(), files),
            (":manifest".into(), s(done.manifest_key)),
            (":warnings".into(), warnings),
            (":zero".into(), n(0)),
            (":owner".into(), s(owner)),
            (":event".into(), s(super::model::SUCCEEDED)),
        ]);
        let set = "#eventPending = :event, #status = :succeeded, #finishedAt = :finished, #bytes = :bytes, #processed = :items, \
             #skipped = :skipped, #skippedReasons = :reasons, #redacted = :redacted, #files = :files, #manifestKey = :manifest, \
             #warnings = :warnings, #fileExpiresAt = :expires, #leaseUntil = :zero";
        let expires = lifecycle_expiry(done.file_created, self.state.config.export_retention_days);
        values.insert(":expires".into(), s(crate::time::to_rfc3339(expires)));
        let expression = format!("SET {set} REMOVE #leaseOwner, #checkpoint, #lastError");
        self.update(org, id, &expression, "#leaseOwner = :owner", values).await
    }

    /// Marks the job failed with `reason` unless it has ended already.
    pub async fn fail(&self, org: &Org, id: &str, reason: &str) -> Result<Option<Job>, StoreError> {
        self.update(
            org,
            id,
            "SET #status = :failed, #finishedAt = :finished, #reason = :reason, #leaseUntil = :zero, \
             #eventPending = :event REMOVE #leaseOwner, #checkpoint",
            "attribute_exists(PK) AND #status IN (:queued, :running)",
            HashMap::from([
                (":failed".into(), s("failed")),
                (":queued".into(), s("queued")),
                (":running".into(), s("running")),
                (":finished".into(), s(crate::time::now_rfc3339())),
                (":reason".into(), s(reason)),
                (":zero".into(), n(0)),
                (":event".into(), s(super::model::FAILED)),
            ]),
        )
        .await
    }

    /// Records that the event `detail_type` of the job was delivered.
    pub async fn clear_event(&self, org: &Org, id: &str, detail_type: &str) -> Result<Option<Job>, StoreError> {
        let values = HashMap::from([(":event".into(), s(detail_type))]);
        self.update(org, id, "REMOVE #eventPending", "#eventPending = :event", values).await
    }

    /// Notes a new hand-over of a stale job, unless another reader did it first.
    pub async fn redispatch(&self, job: &Job) -> Result<bool, StoreError> {
        let updated = self
            .update(
                &job.org(),
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
