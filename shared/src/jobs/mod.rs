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
//!
//! The parts: [`model`] (what a job is, as stored), [`store`] (every read and write of one),
//! [`lifecycle`] (creating a job, reviving or giving up a stale one), [`worker`] (running one),
//! [`schedule`] (the scheduled export) and [`dispatch`].

pub mod dispatch;
mod ending;
pub mod events;
mod invocation;
mod journal;
pub mod lifecycle;
pub mod manifest;
pub mod model;
pub mod passes;
pub mod schedule;
pub mod store;
mod upload;
pub mod worker;

use crate::exports::producer::ExportSpec;
pub use dispatch::Dispatcher;
pub use lifecycle::{give_up, launch, revive, settle_event, start};
pub use model::{
    lifecycle_expiry, now_ms, Batch, Checkpoint, Job, JobFile, JobRef, Status, Trigger, WorkerEvent, MAX_FAILURES,
    STALE_AFTER_MS,
};
pub use store::{job_sk, jobs_pk, JobStore};

/// A new queued job for `spec` (not yet stored).
pub fn new_job(org: &crate::keys::Org, spec: ExportSpec, trigger: Trigger, id: String) -> Job {
    // The instant the id names, when it names one, so the list order is `createdAt` order.
    let created = crate::ids::instant(&id).unwrap_or_else(chrono::Utc::now);
    let file_name = spec.file_name(created);
    Job {
        key: crate::exports::object_key(org, spec.kind(), &file_name),
        id,
        organization_id: org.as_str().to_string(),
        status: Status::Queued,
        params: spec,
        trigger,
        created_at: crate::time::to_rfc3339(created),
        started_at: None,
        finished_at: None,
        processed: 0,
        skipped: 0,
        skipped_reasons: Default::default(),
        redacted: Default::default(),
        event_pending: None,
        total: None,
        bytes: 0,
        reason: None,
        dry_run: false,
        files: Vec::new(),
        manifest_key: None,
        warnings: Vec::new(),
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
