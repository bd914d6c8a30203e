//! One invocation's work on a job whose lease it holds (steps 2 to 4 of [`super::worker`]):
//! resume the checkpoint or start the current file, write the items and checkpoint at every
//! part boundary (handing the job over once the budget is spent), finish the file, go on with
//! the next file of a split job ([`super::passes`]), and end the job with its manifest.

use std::ops::ControlFlow;
use std::time::Instant;

use super::journal;
pub use super::model::{Options, Outcome, UploadRef};
use super::passes::{pass_of, Earlier, Next, Pass};
use super::upload::{abort, list_parts, object_exists};
use super::{Checkpoint, Job, JobStore};
use crate::error::ApiError;
use crate::exports::producer::Producer;
use crate::exports::sink::{ExportSink, Finished, ObjectSpec, UploadState};
use crate::exports::{attachment, Counts};
use crate::AppState;

/// S3's smallest part (except the last).
const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// The checkpoint position that means "every part is uploaded; only completion is left".
const FINISHED: &str = "~finished";
/// An upload's parts: number and ETag.
type Parts = Vec<(i32, String)>;

/// One invocation's hold on a job: the job as taken and the owner of its lease.
pub(super) struct Invocation<'a> {
    pub(super) state: &'a AppState,
    pub(super) store: &'a JobStore<'a>,
    pub(super) job: &'a Job,
    pub(super) owner: &'a str,
}

/// The file being written, and what the job's earlier files hold.
struct Current<'a> {
    pass: Pass,
    producer: Producer<'a>,
    sink: ExportSink<'a>,
    earlier: Earlier,
    /// Dedup journal segments written before this file started.
    dedup_start: usize,
}

/// What a checkpoint allows.
enum Resumable {
    /// Nothing to resume: start from the first file.
    Fresh,
    /// Go on from the checkpoint, whose upload holds these parts.
    At(Checkpoint, Parts),
    /// The checkpoint's file was completed (but not recorded).
    Completed(Checkpoint),
}

impl<'a> Invocation<'a> {
    /// Runs the job from its checkpoint (or its start) until it ends, the budget is spent or
    /// the lease is lost. `upload` follows the multipart upload written to, for the caller to
    /// abort on a failure.
    pub(super) async fn execute(&self, options: &Options, upload: &mut Option<UploadRef>) -> Result<Outcome, ApiError> {
        let started = Instant::now();
        let mut next = self.resume(upload).await?;
        loop {
            let mut current = match next {
                ControlFlow::Continue(current) => current,
                ControlFlow::Break(Next::Ended(outcome)) => return Ok(outcome),
                ControlFlow::Break(Next::Pass(index, earlier)) => {
                    if !self.checkpoint_pass_start(index, &earlier).await? {
                        return Ok(Outcome::Skipped);
                    }
                    if started.elapsed() >= options.budget {
                        return self.hand_over(earlier.counts.items).await;
                    }
                    self.start(self.pass(index)?, *earlier).await?
                }
            };
            if let Some(n) = options.fault_after_parts {
                current.sink = current.sink.with_fault_after_parts(n);
            }
            if let ControlFlow::Break(outcome) = self.produce(options, started, &mut current, upload).await? {
                return Ok(outcome);
            }
            next = ControlFlow::Break(self.finish(current).await?);
            // That file's upload is complete: a later failure must not abort it.
            *upload = None;
        }
    }

    /// Where the checkpoint stands: the file to go on with, or what its finished file leads to.
    async fn resume(&self, upload: &mut Option<UploadRef>) -> Result<ControlFlow<Next, Current<'a>>, ApiError> {
        let (state, job) = (self.state, self.job);
        let (cp, parts) = match self.resumable_checkpoint().await? {
            Resumable::Fresh => return self.start(self.pass(0)?, Earlier::default()).await.map(ControlFlow::Continue),
            Resumable::Completed(cp) => {
                // An earlier invocation completed the upload but could not record it.
                let counts = cp.counts();
                let dedup = journal::replay(state, job, &cp.dedup_journal).await?;
                let earlier = Earlier { files: cp.files.clone(), counts: cp.done, dedup };
                let sha256 = cp.sha256.as_ref().map(|h| h.hex()).unwrap_or_default();
                let file = (cp.bytes, sha256, Some(cp.upload_started(job)));
                return self.file_done(self.pass(cp.file)?, counts, earlier, file).await.map(ControlFlow::Break);
            }
            Resumable::At(cp, parts) => (cp, parts),
        };
        let pass = self.pass(cp.file)?;
        let dedup = journal::replay(state, job, &cp.dedup_journal).await?;
        let mut earlier = Earlier { files: cp.files.clone(), counts: cp.done, dedup };
        if cp.position.is_empty() {
            // The previous file is done; this one has not started.
            return self.start(pass, earlier).await.map(ControlFlow::Continue);
        }
        *upload = Some(UploadRef { key: pass.key.clone(), id: cp.upload_id.clone() }).filter(|u| !u.id.is_empty());
        let counts = cp.counts();
        let uploaded = UploadState {
            upload_id: cp.upload_id.clone(),
            parts,
            started: cp.upload_started(job),
            sha256: cp.sha256.clone().unwrap_or_default(),
        };
        let sink = ExportSink::resumable(&state.s3, self.object(&pass), job.dry_run, Some((uploaded, cp.bytes)));
        if cp.position == FINISHED {
            return self.complete(pass, sink, counts, earlier).await.map(ControlFlow::Break);
        }
        let producer =
            Producer::resume(state, &job.org(), job.params.clone(), &job.created_at, Some(cp.position.clone()), counts)
                .keeping(super::passes::keep(state, job, &pass).await?)
                .with_dedup(earlier.dedup.take());
        Ok(ControlFlow::Continue(Current { pass, producer, sink, earlier, dedup_start: cp.dedup_file_start }))
    }

    /// The redaction this invocation writes with (the job's, or every type when required).
    fn redaction(&self) -> Option<crate::exports::redact::Redaction> {
        crate::exports::scrub::effective(self.job.params.redaction(), self.state.config.export_redaction_required)
    }

    /// The job's file `index`; a checkpoint naming a file the job does not have is a fault.
    fn pass(&self, index: usize) -> Result<Pass, ApiError> {
        pass_of(self.job, index).ok_or_else(|| ApiError::internal("export job", format!("the job has no file {index}")))
    }

    fn object(&self, pass: &Pass) -> ObjectSpec {
        ObjectSpec {
            bucket: self.state.config.bucket_name.clone(),
            key: pass.key.clone(),
            content_type: self.job.params.content_type().to_string(),
            content_disposition: attachment(&pass.name),
        }
    }

    /// The checkpoint to resume, with its upload's parts; `None` when there is none or its
    /// upload is gone (then aborted, to be sure). A finished upload that was completed (an
    /// invocation died before recording it) resumes as finished, with no parts to list.
    async fn resumable_checkpoint(&self) -> Result<Resumable, ApiError> {
        let (state, job) = (self.state, self.job);
        let Some(cp) = &job.checkpoint else { return Ok(Resumable::Fresh) };
        let key = self.pass(cp.file)?.key;
        if cp.redaction != self.redaction() && (cp.parts > 0 || cp.file > 0) {
            tracing::warn!(job = %job.id, "the redaction setting changed since the job started; starting it again");
            abort(state, &key, Some(&cp.upload_id)).await;
            return Ok(Resumable::Fresh);
        }
        if cp.sha256.is_none() {
            // Written before files were hashed: start again, so the manifest's digest is right.
            abort(state, &key, Some(&cp.upload_id)).await;
            return Ok(Resumable::Fresh);
        }
        if job.dry_run || cp.position.is_empty() {
            // Nothing was uploaded (a dry run counts its parts only), or nothing was started.
            return Ok(Resumable::At(cp.clone(), (1..=cp.parts).map(|n| (n, String::new())).collect()));
        }
        match list_parts(state, &key, &cp.upload_id, cp.parts).await? {
            Some(parts) => Ok(Resumable::At(cp.clone(), parts)),
            None if cp.position == FINISHED && object_exists(state, &key).await? => {
                Ok(Resumable::Completed(cp.clone()))
            }
            None => {
                tracing::warn!(job = %job.id, file = cp.file, "the checkpoint's upload is gone; starting its file again");
                abort(state, &key, Some(&cp.upload_id)).await;
                // The files finished before stay; only this one starts over.
                let restart = Checkpoint {
                    file: cp.file,
                    files: cp.files.clone(),
                    done: cp.done,
                    dedup_journal: cp.dedup_journal.iter().take(cp.dedup_file_start).cloned().collect(),
                    dedup_file_start: cp.dedup_file_start,
                    redaction: cp.redaction.clone(),
                    sha256: Some(Default::default()),
                    ..Checkpoint::default()
                };
                Ok(Resumable::At(restart, Vec::new()))
            }
        }
    }

    /// A producer from the start of `pass` (the export's total recorded when it is known) and a
    /// new sink holding the header.
    async fn start(&self, pass: Pass, mut earlier: Earlier) -> Result<Current<'a>, ApiError> {
        let (state, job) = (self.state, self.job);
        let org = job.org();
        let keep = super::passes::keep(state, job, &pass).await?;
        let dedup_start = earlier.journal().len();
        let producer = Producer::new(state, &org, job.params.clone(), &job.created_at)
            .keeping(keep)
            .with_dedup(earlier.dedup.take());
        if job.total.is_none() && pass.split.is_none() {
            // The total is a progress hint: a count that fails (a slow or throttled table)
            // leaves it unknown rather than failing the export.
            match producer.total().await {
                Ok(Some(total)) => self.store.set_total(&org, &job.id, self.owner, total).await?,
                Ok(None) => {}
                Err(e) => tracing::warn!(job = %job.id, error = %e, "could not count the export's items"),
            }
        }
        let mut sink = ExportSink::resumable(&state.s3, self.object(&pass), job.dry_run, None);
        sink.write(&producer.header()?).await?;
        Ok(Current { pass, producer, sink, earlier, dedup_start })
    }

    /// Writes the producer's items, checkpointing at every part boundary; once the budget is
    /// spent, hands the job over at the next one. `Continue` when every item is written.
    async fn produce(
        &self,
        options: &Options,
        started: Instant,
        current: &mut Current<'a>,
        upload: &mut Option<UploadRef>,
    ) -> Result<ControlFlow<Outcome>, ApiError> {
        let Current { pass, producer, sink, earlier, dedup_start } = current;
        let track = |sink: &ExportSink<'_>, upload: &mut Option<UploadRef>| {
            *upload = sink.upload_state().map(|u| UploadRef { key: pass.key.clone(), id: u.upload_id });
        };
        let mut parts = sink.parts();
        while let Some(items) = producer.next().await? {
            for item in items {
                if !item.bytes.is_empty() {
                    let written = sink.write(&item.bytes).await;
                    track(sink, upload);
                    written?;
                }
                let over = started.elapsed() >= options.budget;
                if over && sink.parts() == parts && sink.pending() >= MIN_PART_BYTES {
                    // Over budget before the part filled: a smaller (still valid) part ends here.
                    let flushed = sink.flush().await;
                    track(sink, upload);
                    flushed?;
                }
                // A resume point: a part just ended with this item, or (over budget) nothing is
                // buffered since the last part (skipped items).
                let at_boundary = sink.parts() > parts || (over && sink.pending() == 0 && sink.parts() > 0);
                if !at_boundary {
                    continue;
                }
                parts = sink.parts();
                journal::write(self.state, self.job, self.owner, producer.dedup_mut(), item.mark).await?;
                let dedup = (producer.dedup_mut().map(|d| d.segments.clone()).unwrap_or_default(), *dedup_start);
                let Some(cp) = self.checkpoint_of(pass, sink, &item.position, (item.counts, dedup), earlier) else {
                    continue;
                };
                if !self.store.checkpoint(&self.job.org(), &self.job.id, self.owner, &cp, self.job.processed).await? {
                    tracing::warn!(job = %self.job.id, "lost the lease; another invocation continues");
                    return Ok(ControlFlow::Break(Outcome::Skipped));
                }
                if over {
                    return self.hand_over(earlier.counts.items + cp.items).await.map(ControlFlow::Break);
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The checkpoint of `pass` after `position` with its counts and dedup segments (so far,
    /// and when the file started), once its upload has a part.
    fn checkpoint_of(
        &self,
        pass: &Pass,
        sink: &ExportSink<'_>,
        position: &str,
        (counts, (dedup_journal, dedup_file_start)): (Counts, (Vec<String>, usize)),
        earlier: &Earlier,
    ) -> Option<Checkpoint> {
        let state = sink.upload_state()?;
        Some(Checkpoint {
            upload_id: state.upload_id,
            parts: state.parts.len() as i32,
            position: position.to_string(),
            items: counts.items,
            skipped: counts.skipped,
            reasons: counts.reasons,
            redacted: counts.redacted,
            deletions: counts.deletions,
            bytes: sink.bytes(),
            upload_started_at: Some(crate::time::to_rfc3339(state.started)),
            sha256: Some(state.sha256),
            file: pass.index,
            files: earlier.files.clone(),
            done: earlier.counts,
            dedup_journal,
            dedup_file_start,
            redaction: self.redaction(),
        })
    }

    /// Records that file `index` starts next (the earlier ones are done).
    async fn checkpoint_pass_start(&self, index: usize, earlier: &Earlier) -> Result<bool, ApiError> {
        let cp = Checkpoint {
            file: index,
            files: earlier.files.clone(),
            done: earlier.counts,
            sha256: Some(Default::default()),
            dedup_journal: earlier.journal(),
            dedup_file_start: earlier.journal().len(),
            redaction: self.redaction(),
            ..Checkpoint::default()
        };
        let job = self.job;
        Ok(self.store.checkpoint(&job.org(), &job.id, self.owner, &cp, job.processed).await?)
    }

    /// Frees the lease and dispatches the job to a fresh invocation, which resumes from the
    /// checkpoint saved just before (so the next invocation never starts ahead of it).
    async fn hand_over(&self, processed: u64) -> Result<Outcome, ApiError> {
        let job = self.job;
        self.store.hand_over(&job.org(), &job.id, self.owner).await?;
        if let Err(e) = self.state.jobs.dispatch(&job.reference()).await {
            tracing::error!(job = %job.id, error = %e, "could not hand the job over; a later read retries");
        }
        tracing::info!(job = %job.id, processed, "budget spent: handed over to a new invocation");
        Ok(Outcome::Paused)
    }

    /// After the file's last item: writes the footer, then stores it in one PutObject, or
    /// uploads the last part, checkpoints "finished" and completes the upload.
    async fn finish(&self, current: Current<'a>) -> Result<Next, ApiError> {
        let Current { pass, mut producer, mut sink, mut earlier, dedup_start } = current;
        sink.write(&producer.footer()).await?;
        let counts = producer.counts();
        // Everything the file kept is journaled before the next checkpoint counts it.
        journal::write(self.state, self.job, self.owner, producer.dedup_mut(), u64::MAX).await?;
        earlier.dedup = producer.into_dedup();
        if sink.parts() > 0 {
            sink.flush().await?;
            let dedup = (earlier.journal(), dedup_start);
            let Some(cp) = self.checkpoint_of(&pass, &sink, FINISHED, (counts, dedup), &earlier) else {
                return Err(ApiError::internal("export job", "no upload"));
            };
            if !self.store.checkpoint(&self.job.org(), &self.job.id, self.owner, &cp, self.job.processed).await? {
                return Ok(Next::Ended(Outcome::Skipped));
            }
        }
        // Small enough for one PutObject: nothing to checkpoint, a retry simply redoes it.
        self.complete(pass, sink, counts, earlier).await
    }

    /// Completes the file of `pass` (a dry run only counts it): the job's next file, or its end.
    async fn complete(
        &self,
        pass: Pass,
        sink: ExportSink<'_>,
        counts: Counts,
        earlier: Earlier,
    ) -> Result<Next, ApiError> {
        let file = match sink.finish().await? {
            Finished::Stored { bytes, created, sha256, .. } => (bytes, sha256, Some(created)),
            Finished::Discarded { bytes, sha256 } => (bytes, sha256, None),
            Finished::Inline(_) => return Err(ApiError::internal("export job", "a job's sink answered inline")),
        };
        self.file_done(pass, counts, earlier, file).await
    }
}
