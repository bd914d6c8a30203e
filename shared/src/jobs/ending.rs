//! How a job's file ends and the job with it: the file recorded, then the next file of a
//! split job or, after the last, the manifest and the job marked succeeded.

use super::invocation::Invocation;
use super::model::Outcome;
use super::passes::{passes, Earlier, Next, Pass};
use super::{manifest, JobFile, Trigger};
use crate::error::ApiError;
use crate::exports::producer::ExportSpec;
use crate::exports::Counts;

impl Invocation<'_> {
    /// Records the finished file of `pass` (its size, digest and S3 date): the job's next
    /// file, or its end.
    pub(super) async fn file_done(
        &self,
        pass: Pass,
        counts: Counts,
        earlier: Earlier,
        (bytes, sha256, created): (u64, String, Option<chrono::DateTime<chrono::Utc>>),
    ) -> Result<Next, ApiError> {
        let job = self.job;
        let file = JobFile {
            name: pass.name.clone(),
            split: pass.split.map(|s| s.name().to_string()),
            rows: counts.items + counts.deletions,
            bytes,
            sha256,
            key: (!job.dry_run).then(|| pass.key.clone()),
            created_at: created.map(crate::time::to_rfc3339),
        };
        let mut earlier = earlier;
        earlier.counts.add(counts);
        if counts.items > 0 || pass.split.is_none() {
            earlier.files.push(file);
        } else if !job.dry_run {
            // One file per non-empty split: an empty one is removed.
            super::upload::delete_object(self.state, &pass.key).await;
        }
        if pass.index + 1 < passes(job).len() {
            return Ok(Next::Pass(pass.index + 1, Box::new(earlier)));
        }
        self.succeed(earlier).await.map(Next::Ended)
    }

    /// Writes the manifest and marks the job succeeded (a scheduled job then advances its
    /// organization's watermark).
    async fn succeed(&self, done: Earlier) -> Result<Outcome, ApiError> {
        let job = self.job;
        let format = match &job.params {
            ExportSpec::Training { format, .. } => Some(*format),
            _ => None,
        };
        let warnings: Vec<String> = done.files.iter().flat_map(|f| manifest::warnings(format, f)).collect();
        let manifest_written = chrono::Utc::now();
        let manifest_key =
            manifest::write(self.state, job, &done.files, (done.counts, done.dedup.as_ref()), &warnings).await?;
        // Retention counts from the oldest file (a dry run's only file is its manifest).
        let oldest =
            done.files.iter().filter_map(|f| f.created_at.as_deref()).filter_map(crate::time::parse_rfc3339).min();
        let file_created = oldest.unwrap_or(manifest_written);
        let record =
            super::store::Done { files: &done.files, counts: done.counts, manifest_key, warnings, file_created };
        let Some(succeeded) = self.store.succeed(job, self.owner, record).await? else {
            return Ok(Outcome::Skipped);
        };
        // The watermark only once the job has succeeded: moved before, a job that then failed
        // for good (its manifest not written, say) would leave its window exported by no
        // succeeded job. Should this update not happen, the next run moves it for the job before
        // it claims a window (`schedule/batch.rs`).
        if let (Trigger::Schedule, ExportSpec::Training { changed: Some(window), .. }) = (job.trigger, &job.params) {
            if let Err(e) = super::schedule::advance_watermark(self.state, &job.org(), &window.up_to).await {
                tracing::warn!(job = %job.id, error = %e, "watermark not moved; the next scheduled run moves it");
            }
        }
        let bytes: u64 = done.files.iter().map(|f| f.bytes).sum();
        tracing::info!(job = %job.id, items = done.counts.items, bytes, files = done.files.len(), "export job succeeded");
        super::events::publish_job(self.state, &succeeded).await;
        Ok(Outcome::Succeeded)
    }
}
