//! `manifest.json`: what an export job wrote, beside its files. It is written before the job is
//! marked succeeded (a retry writes it again, identical but for `finishedAt`), so a succeeded
//! job always has one; it holds no customer data and no presigned URL.

use crate::exports::dedup::{Dedup, Deduper, Pair};
use crate::exports::redact::PiiType;
use crate::exports::scrub::effective;
use serde::Serialize;

use super::{Job, JobFile, Trigger};
use crate::error::ApiError;
use crate::exports::counts::{Counts, Reasons};
use crate::exports::objects::put_json;
use crate::exports::spec::{ExportSpec, Format, Window};
use crate::AppState;

/// The manifest's key: `manifest.json` in the folder of the job's file.
pub fn manifest_key(file_key: &str) -> String {
    super::passes::beside(file_key, "manifest.json")
}

/// `s3://bucket/key`: what Bedrock's `CreateModelCustomizationJob` and the AWS CLI take.
pub fn s3_uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Warnings about a file as a whole, from its target's documented bounds.
pub fn warnings(format: Option<Format>, file: &JobFile) -> Vec<String> {
    let (rows, name) = (file.rows, &file.name);
    let validation = file.split.as_deref() == Some("validation");
    let mut out = Vec::new();
    match format {
        Some(Format::Bedrock) => {
            if !(8..=20_000).contains(&rows) {
                out.push(format!("{name}: {rows} examples; Nova model customization takes 8 to 20,000 per file"));
            }
            if validation {
                out.push(format!("{name}: Nova 2 models take no validation set during fine-tuning (Nova 1 models do)"));
            }
        }
        Some(Format::Vertex) if validation && rows > 5_000 => {
            out.push(format!("{name}: {rows} examples; Gemini tuning takes at most 5,000 for validation"));
        }
        Some(Format::OpenAi) if rows < 10 => {
            out.push(format!("{name}: {rows} examples; OpenAI fine-tuning takes at least 10"));
        }
        _ => {}
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    job_id: &'a str,
    organization_id: &'a str,
    trigger: Trigger,
    dry_run: bool,
    params: &'a ExportSpec,
    /// A scheduled job's change window.
    window: Option<&'a Window>,
    counts: ManifestCounts,
    /// What was redacted (absent when nothing was to be).
    #[serde(skip_serializing_if = "Option::is_none")]
    redaction: Option<ManifestRedaction>,
    /// What dedup removed (absent without dedup).
    #[serde(skip_serializing_if = "Option::is_none")]
    dedup: Option<ManifestDedup<'a>>,
    files: Vec<ManifestFile<'a>>,
    warnings: &'a [String],
    created_at: &'a str,
    started_at: Option<&'a str>,
    finished_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestCounts {
    /// Items read: written plus left out.
    read: u64,
    written: u64,
    skipped: u64,
    skipped_reasons: std::collections::BTreeMap<&'static str, u64>,
    /// Deletion records (scheduled exports).
    deletions: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestRedaction {
    types: Vec<PiiType>,
    found: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDedup<'a> {
    mode: Dedup,
    removed: u64,
    duplicate: u64,
    near_duplicate: u64,
    /// The first removals: which example was kept for which removed one.
    sample: &'a [Pair],
}

/// One file of a job as the manifest and the job's event name it (no URL).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile<'a> {
    name: &'a str,
    split: Option<&'a str>,
    rows: u64,
    bytes: u64,
    sha256: &'a str,
    s3_uri: Option<String>,
}

impl<'a> ManifestFile<'a> {
    /// `file` of a job whose files are in `bucket`.
    pub fn of(bucket: &str, file: &'a JobFile) -> Self {
        Self {
            name: &file.name,
            split: file.split.as_deref(),
            rows: file.rows,
            bytes: file.bytes,
            sha256: &file.sha256,
            s3_uri: file.key.as_deref().map(|k| s3_uri(bucket, k)),
        }
    }
}

/// Writes the manifest of `job`'s `files` and answers its key.
pub async fn write(
    state: &AppState,
    job: &Job,
    files: &[JobFile],
    (counts, dedup): (Counts, Option<&Deduper>),
    warnings: &[String],
) -> Result<String, ApiError> {
    let bucket = &state.config.bucket_name;
    let window = match &job.params {
        ExportSpec::Training { changed, .. } => changed.as_ref(),
        _ => None,
    };
    let manifest = Manifest {
        job_id: &job.id,
        organization_id: &job.organization_id,
        trigger: job.trigger,
        dry_run: job.dry_run,
        params: &job.params,
        window,
        counts: counts_of(counts),
        redaction: effective(job.params.redaction(), state.config.export_redaction_required)
            .map(|r| ManifestRedaction { types: r.types, found: counts.redacted.by_code() }),
        dedup: dedup.map(|d| ManifestDedup {
            mode: d.mode(),
            removed: counts.reasons.duplicate + counts.reasons.near_duplicate,
            duplicate: counts.reasons.duplicate,
            near_duplicate: counts.reasons.near_duplicate,
            sample: d.sample(),
        }),
        files: files.iter().map(|f| ManifestFile::of(bucket, f)).collect(),
        warnings,
        created_at: &job.created_at,
        started_at: job.started_at.as_deref(),
        finished_at: crate::time::now_rfc3339(),
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| ApiError::internal("encode manifest", e))?;
    let key = manifest_key(&job.key);
    let disposition = crate::exports::attachment("manifest.json");
    put_json(&state.s3, bucket, &key, body, Some(&disposition), "store export manifest").await?;
    Ok(key)
}

fn counts_of(counts: Counts) -> ManifestCounts {
    let reasons: Reasons = counts.reasons;
    ManifestCounts {
        read: counts.items + counts.skipped,
        written: counts.items,
        skipped: counts.skipped,
        skipped_reasons: reasons.by_code(),
        deletions: counts.deletions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_sits_beside_the_file_and_bounds_warn() {
        assert_eq!(
            manifest_key("exports/o1/training/2026-12-06/ab/training-data-1.jsonl"),
            "exports/o1/training/2026-12-06/ab/manifest.json"
        );
        let file = |rows| JobFile {
            name: "f.jsonl".into(),
            split: None,
            rows,
            bytes: 0,
            sha256: String::new(),
            key: None,
            created_at: None,
        };
        assert_eq!(warnings(Some(Format::Bedrock), &file(7)).len(), 1);
        assert!(warnings(Some(Format::Bedrock), &file(8)).is_empty());
        assert_eq!(warnings(Some(Format::Bedrock), &file(20_001)).len(), 1);
        assert!(warnings(Some(Format::Jsonl), &file(0)).is_empty());
        let validation = JobFile { split: Some("validation".into()), ..file(5_001) };
        assert_eq!(warnings(Some(Format::Vertex), &validation).len(), 1);
        assert!(warnings(Some(Format::Bedrock), &validation).iter().any(|w| w.contains("Nova 2")));
    }
}
