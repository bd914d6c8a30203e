//! One invocation's work on a job whose lease it holds (steps 2 to 4 of [`super::worker`]):
//! resume the checkpoint or start the export, write the items and checkpoint at every part
//! boundary (handing the job over once the budget is spent), and finish the file.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::manifest;
use super::store::Done;
use super::upload::{abort, list_parts, object_exists};
use super::{Checkpoint, Job, JobFile, JobStore, Trigger};
use crate::error::ApiError;
use crate::exports::producer::{ExportSpec, Producer};
use crate::exports::sink::{ExportSink, Finished, ObjectSpec, UploadState};
use crate::exports::{attachment, Counts};
use crate::AppState;

/// S3's smallest part (except the last).
const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// The checkpoint position that means "every part is uploaded; only completion is left".
const FINISHED: &str = "~finished";
/// An upload's parts: number and ETag.
type Parts = Vec<(i32, String)>;

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

/// One invocation's hold on a job: the job as taken and the owner of its lease.
pub(super) struct Invocation<'a> {
    pub(super) state: &'a AppState,
    pub(super) store: &'a JobStore<'a>,
    pub(super) job: &'a Job,
    pub(super) owner: &'a str,
}

impl<'a> Invocation<'a> {
    /// Runs the job from its checkpoint (or its start) until it ends, the budget is spent or
    /// the lease is lost. `upload` follows the multipart upload written to, for the caller to
    /// abort on a failure.
    pub(super) async fn execute(&self, options: &Options, upload: &mut Option<String>) -> Result<Outcome, ApiError> {
        let started = Instant::now();
        let (mut producer, mut sink) = match self.resume_or_start(upload).await? {
            ControlFlow::Continue(running) => running,
            ControlFlow::Break(outcome) => return Ok(outcome),
        };
        if let Some(n) = options.fault_after_parts {
            sink = sink.with_fault_after_parts(n);
        }
        if let ControlFlow::Break(outcome) = self.produce(options, started, &mut producer, &mut sink, upload).await? {
            return Ok(outcome);
        }
        self.finish(producer, sink).await
    }

    /// The producer and the sink to go on with: resumed from the checkpoint, or from the start.
    /// Ends the job instead when only the checkpointed upload's completion is left.
    async fn resume_or_start(
        &self,
        upload: &mut Option<String>,
    ) -> Result<ControlFlow<Outcome, (Producer<'a>, ExportSink<'a>)>, ApiError> {
        let (state, job) = (self.state, self.job);
        let object = ObjectSpec {
            bucket: state.config.bucket_name.clone(),
            key: job.key.clone(),
            content_type: job.params.content_type().to_string(),
            content_disposition: attachment(&job.file_name),
        };
        let resumed = match self.resumable_checkpoint().await? {
            ControlFlow::Continue(resumed) => resumed,
            ControlFlow::Break(outcome) => return Ok(ControlFlow::Break(outcome)),
        };
        let Some((cp, parts)) = resumed else {
            return self.start_export(object).await.map(ControlFlow::Continue);
        };
        *upload = Some(cp.upload_id.clone()).filter(|id| !id.is_empty());
        let counts = Counts { items: cp.items, skipped: cp.skipped, reasons: cp.reasons };
        let org = job.org();
        let producer =
            Producer::resume(state, &org, job.params.clone(), &job.created_at, Some(cp.position.clone()), counts);
        let uploaded = UploadState {
            upload_id: cp.upload_id.clone(),
            parts,
            started: cp.upload_started(job),
            sha256: cp.sha256.clone().unwrap_or_default(),
        };
        let sink = ExportSink::resumable(&state.s3, object, job.dry_run, Some((uploaded, cp.bytes)));
        if cp.position == FINISHED {
            return self.complete(sink, counts).await.map(ControlFlow::Break);
        }
        Ok(ControlFlow::Continue((producer, sink)))
    }

    /// The checkpoint to resume, with its upload's parts; `None` when there is none or its
    /// upload is gone (then aborted, to be sure). Ends the job when the upload was completed.
    async fn resumable_checkpoint(&self) -> Result<ControlFlow<Outcome, Option<(Checkpoint, Parts)>>, ApiError> {
        let (state, job) = (self.state, self.job);
        // Resume the checkpoint when its upload is still there with all its parts.
        let Some(cp) = &job.checkpoint else { return Ok(ControlFlow::Continue(None)) };
        if cp.sha256.is_none() {
            // Written before files were hashed: start again, so the manifest's digest is right.
            abort(state, &job.key, Some(&cp.upload_id)).await;
            return Ok(ControlFlow::Continue(None));
        }
        if job.dry_run {
            // Nothing was uploaded: the parts were counted only.
            let parts = (1..=cp.parts).map(|n| (n, String::new())).collect();
            return Ok(ControlFlow::Continue(Some((cp.clone(), parts))));
        }
        match list_parts(state, &job.key, &cp.upload_id, cp.parts).await? {
            Some(parts) => Ok(ControlFlow::Continue(Some((cp.clone(), parts)))),
            None if cp.position == FINISHED && object_exists(state, &job.key).await? => {
                // An earlier invocation completed the upload but could not record it.
                let counts = Counts { items: cp.items, skipped: cp.skipped, reasons: cp.reasons };
                let sha256 = cp.sha256.as_ref().map(|h| h.hex()).unwrap_or_default();
                let file = Written { bytes: cp.bytes, sha256, created: Some(cp.upload_started(job)) };
                self.succeed(file, counts).await.map(ControlFlow::Break)
            }
            None => {
                tracing::warn!(job = %job.id, "the checkpoint's upload is gone; starting the export again");
                abort(state, &job.key, Some(&cp.upload_id)).await;
                Ok(ControlFlow::Continue(None))
            }
        }
    }

    /// A producer from the start (the export's total recorded when it is known) and a new sink
    /// holding the header.
    async fn start_export(&self, object: ObjectSpec) -> Result<(Producer<'a>, ExportSink<'a>), ApiError> {
        let (state, job) = (self.state, self.job);
        let org = job.org();
        let producer = Producer::new(state, &org, job.params.clone(), &job.created_at);
        if job.total.is_none() {
            // The total is a progress hint: a count that fails (a slow or throttled table)
            // leaves it unknown rather than failing the export.
            match producer.total().await {
                Ok(Some(total)) => self.store.set_total(&org, &job.id, self.owner, total).await?,
                Ok(None) => {}
                Err(e) => tracing::warn!(job = %job.id, error = %e, "could not count the export's items"),
            }
        }
        let mut sink = ExportSink::resumable(&state.s3, object, job.dry_run, None);
        sink.write(&producer.header()?).await?;
        Ok((producer, sink))
    }

    /// Writes the producer's items, checkpointing at every part boundary; once the budget is
    /// spent, hands the job over at the next one. `Continue` when every item is written.
    async fn produce(
        &self,
        options: &Options,
        started: Instant,
        producer: &mut Producer<'a>,
        sink: &mut ExportSink<'a>,
        upload: &mut Option<String>,
    ) -> Result<ControlFlow<Outcome>, ApiError> {
        let job = self.job;
        let mut parts = sink.parts();
        let floor = job.processed;
        while let Some(items) = producer.next().await? {
            for item in items {
                if !item.bytes.is_empty() {
                    let written = sink.write(&item.bytes).await;
                    *upload = sink.upload_state().map(|u| u.upload_id);
                    written?;
                }
                let over = started.elapsed() >= options.budget;
                if over && sink.parts() == parts && sink.pending() >= MIN_PART_BYTES {
                    // Over budget before the part filled: a smaller (still valid) part ends here.
                    let flushed = sink.flush().await;
                    *upload = sink.upload_state().map(|u| u.upload_id);
                    flushed?;
                }
                // A resume point: a part just ended with this item, or (over budget) nothing is
                // buffered since the last part (skipped items).
                let at_boundary = sink.parts() > parts || (over && sink.pending() == 0 && sink.parts() > 0);
                if !at_boundary {
                    continue;
                }
                parts = sink.parts();
                let Some(state_now) = sink.upload_state() else { continue };
                let cp = Checkpoint {
                    upload_id: state_now.upload_id,
                    parts: parts as i32,
                    position: item.position,
                    items: item.counts.items,
                    skipped: item.counts.skipped,
                    reasons: item.counts.reasons,
                    bytes: sink.bytes(),
                    upload_started_at: Some(crate::time::to_rfc3339(state_now.started)),
                    sha256: Some(state_now.sha256),
                };
                if !self.store.checkpoint(&job.org(), &job.id, self.owner, &cp, floor).await? {
                    tracing::warn!(job = %job.id, "lost the lease; another invocation continues");
                    return Ok(ControlFlow::Break(Outcome::Skipped));
                }
                if over {
                    return self.hand_over(&cp, parts).await.map(ControlFlow::Break);
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Frees the lease and dispatches the job to a fresh invocation, which resumes from `cp`
    /// (saved just before, so the next invocation never starts ahead of it).
    async fn hand_over(&self, cp: &Checkpoint, parts: usize) -> Result<Outcome, ApiError> {
        let job = self.job;
        self.store.hand_over(&job.org(), &job.id, self.owner).await?;
        if let Err(e) = self.state.jobs.dispatch(&job.reference()).await {
            tracing::error!(job = %job.id, error = %e, "could not hand the job over; a later read retries");
        }
        tracing::info!(job = %job.id, processed = cp.items, parts, "budget spent: handed over to a new invocation");
        Ok(Outcome::Paused)
    }

    /// After the last item: writes the footer, then stores the file in one PutObject, or
    /// uploads the last part, checkpoints "finished" and completes the upload.
    async fn finish(&self, producer: Producer<'a>, mut sink: ExportSink<'a>) -> Result<Outcome, ApiError> {
        let job = self.job;
        sink.write(&producer.footer()).await?;
        let counts = producer.counts();
        if sink.parts() == 0 {
            // Small enough for one PutObject: nothing to checkpoint, a retry simply redoes it.
            return self.complete(sink, counts).await;
        }
        sink.flush().await?;
        let Some(last) = sink.upload_state() else { return Err(ApiError::internal("export job", "no upload")) };
        let cp = Checkpoint {
            upload_id: last.upload_id,
            parts: last.parts.len() as i32,
            position: FINISHED.into(),
            items: counts.items,
            skipped: counts.skipped,
            reasons: counts.reasons,
            bytes: sink.bytes(),
            upload_started_at: Some(crate::time::to_rfc3339(last.started)),
            sha256: Some(last.sha256),
        };
        if !self.store.checkpoint(&job.org(), &job.id, self.owner, &cp, job.processed).await? {
            return Ok(Outcome::Skipped);
        }
        self.complete(sink, counts).await
    }

    /// Completes the upload (or, for a dry run, the count) and marks the job succeeded.
    async fn complete(&self, sink: ExportSink<'_>, counts: Counts) -> Result<Outcome, ApiError> {
        let file = match sink.finish().await? {
            Finished::Stored { bytes, created, sha256, .. } => Written { bytes, sha256, created: Some(created) },
            Finished::Discarded { bytes, sha256 } => Written { bytes, sha256, created: None },
            Finished::Inline(_) => return Err(ApiError::internal("export job", "a job's sink answered inline")),
        };
        self.succeed(file, counts).await
    }

    /// Writes the manifest and marks the job succeeded (a scheduled job first advances its
    /// organization's watermark).
    async fn succeed(&self, file: Written, counts: Counts) -> Result<Outcome, ApiError> {
        let job = self.job;
        // The watermark first: it only moves forward, so a retry after a failure in between
        // repeats it harmlessly, while the other order could end the job and keep the watermark.
        if let (Trigger::Schedule, ExportSpec::Training { changed: Some(window), .. }) = (job.trigger, &job.params) {
            super::schedule::advance_watermark(self.state, &job.org(), &window.up_to).await?;
        }
        let files = [JobFile {
            name: job.file_name.clone(),
            split: None,
            rows: counts.items,
            bytes: file.bytes,
            sha256: file.sha256,
            key: (!job.dry_run).then(|| job.key.clone()),
        }];
        let format = match &job.params {
            ExportSpec::Training { format, .. } => Some(*format),
            _ => None,
        };
        let warnings = manifest::warnings(format, counts.items);
        let manifest_written = chrono::Utc::now();
        let manifest_key = manifest::write(self.state, job, &files, counts, &warnings).await?;
        let file_created = file.created.unwrap_or(manifest_written);
        let done = Done { files: &files, counts, manifest_key, warnings, file_created };
        if self.store.succeed(job, self.owner, done).await?.is_none() {
            return Ok(Outcome::Skipped);
        }
        tracing::info!(job = %job.id, items = counts.items, bytes = file.bytes, "export job succeeded");
        Ok(Outcome::Succeeded)
    }
}

/// A finished file: its size and digest, and no later than when S3 dated it (`None`: a dry run).
struct Written {
    bytes: u64,
    sha256: String,
    created: Option<chrono::DateTime<chrono::Utc>>,
}
