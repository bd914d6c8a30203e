//! An export job as the API answers it: its state, counts and files, each file with a fresh
//! presigned download URL while it is kept (the single `url` stays for one-file jobs, so
//! clients written before `files` keep working).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::jobs::manifest::s3_uri;
use crate::jobs::{Job, Status, Trigger};
use crate::AppState;

/// A job as the API shows it (`url` and `expiresAt` only with a download link).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView<'a> {
    id: &'a str,
    status: Status,
    source: &'static str,
    /// The job's parameters as given, without `source` (which has its own field).
    params: Value,
    trigger: Trigger,
    dry_run: bool,
    processed: u64,
    skipped: u64,
    /// `skipped` by reason code (only the reasons that occurred).
    skipped_reasons: BTreeMap<&'static str, u64>,
    /// What redaction replaced, by type (only the types found).
    redacted: BTreeMap<&'static str, u64>,
    total: Option<u64>,
    bytes: u64,
    created_at: &'a str,
    started_at: Option<&'a str>,
    finished_at: Option<&'a str>,
    reason: Option<&'a str>,
    file_name: &'a str,
    file_expires_at: Option<&'a str>,
    url: Option<String>,
    expires_at: Option<String>,
    files: Vec<FileView<'a>>,
    manifest: Option<Link>,
    warnings: &'a [String],
}

/// One file of a job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileView<'a> {
    name: &'a str,
    split: Option<&'a str>,
    rows: u64,
    bytes: u64,
    sha256: &'a str,
    s3_uri: Option<String>,
    url: Option<String>,
    expires_at: Option<String>,
}

/// Where an object is, and a download link while it is kept.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    s3_uri: String,
    url: Option<String>,
    expires_at: Option<String>,
}

/// Presigned URLs for a job's objects, valid from now for the deployment's TTL.
struct Links<'a> {
    state: &'a AppState,
    expires_at: String,
}

impl Links<'_> {
    async fn get(&self, key: &str) -> Result<(String, String), ApiError> {
        let ttl = std::time::Duration::from_secs(self.state.config.export_url_ttl_seconds);
        let url = crate::exports::objects::presign(&self.state.s3, &self.state.config.bucket_name, key, ttl).await?;
        Ok((url, self.expires_at.clone()))
    }
}

/// The view of `job`, with its download `link` (URL and expiry) when there is one, and the
/// links of its files and manifest (`links`, by key).
pub fn document<'a>(job: &'a Job, link: Option<(String, String)>) -> JobView<'a> {
    with_links(job, None, link, &BTreeMap::new())
}

fn with_links<'a>(
    job: &'a Job,
    bucket: Option<&str>,
    link: Option<(String, String)>,
    links: &BTreeMap<String, (String, String)>,
) -> JobView<'a> {
    let (url, expires_at) = link.map_or((None, None), |(u, e)| (Some(u), Some(e)));
    let mut params = serde_json::to_value(&job.params).unwrap_or(Value::Null);
    if let Some(p) = params.as_object_mut() {
        p.remove("source");
    }
    let source = job.params.source();
    let link_of = |key: &str| links.get(key).cloned().map_or((None, None), |(u, e)| (Some(u), Some(e)));
    let files = job
        .files
        .iter()
        .map(|f| {
            let (url, expires_at) = f.key.as_deref().map_or((None, None), link_of);
            FileView {
                name: &f.name,
                split: f.split.as_deref(),
                rows: f.rows,
                bytes: f.bytes,
                sha256: &f.sha256,
                s3_uri: f.key.as_deref().zip(bucket).map(|(k, b)| s3_uri(b, k)),
                url,
                expires_at,
            }
        })
        .collect();
    let manifest = job.manifest_key.as_deref().zip(bucket).map(|(key, b)| {
        let (url, expires_at) = link_of(key);
        Link { s3_uri: s3_uri(b, key), url, expires_at }
    });
    JobView {
        id: &job.id,
        status: job.status,
        source,
        params,
        trigger: job.trigger,
        dry_run: job.dry_run,
        processed: job.processed,
        skipped: job.skipped,
        skipped_reasons: job.skipped_reasons.by_code(),
        redacted: job.redacted.by_code(),
        total: job.total,
        bytes: job.bytes,
        created_at: &job.created_at,
        started_at: job.started_at.as_deref(),
        finished_at: job.finished_at.as_deref(),
        reason: job.reason.as_deref(),
        file_name: &job.file_name,
        file_expires_at: job.file_expires_at.as_deref(),
        url,
        expires_at,
        files,
        manifest,
        warnings: &job.warnings,
    }
}

/// A job with fresh presigned download URLs for its files and manifest while they are kept.
pub async fn view<'a>(state: &AppState, job: &'a Job) -> Result<JobView<'a>, ApiError> {
    let now = crate::time::now_rfc3339();
    let kept = job.status == Status::Succeeded && job.file_expires_at.as_deref().is_some_and(|e| e > now.as_str());
    let ttl = state.config.export_url_ttl_seconds as i64;
    let links =
        Links { state, expires_at: crate::time::to_rfc3339(chrono::Utc::now() + chrono::Duration::seconds(ttl)) };
    let mut by_key = BTreeMap::new();
    let keys = job.files.iter().filter_map(|f| f.key.clone()).filter(|_| kept);
    let manifest = job.manifest_key.clone().filter(|_| kept);
    for key in keys.chain(manifest) {
        by_key.insert(key.clone(), links.get(&key).await?);
    }
    // One-file jobs keep their single `url` (and jobs written before `files` have only it).
    let single = match job.files.as_slice() {
        // A job written before `files` has only its key (a split job never writes there).
        [] if job.params.split().is_none() => Some(job.key.as_str()),
        [only] => only.key.as_deref(),
        _ => None,
    };
    let link = match single.filter(|_| kept && !job.dry_run) {
        Some(key) => match by_key.get(key) {
            Some(link) => Some(link.clone()),
            None => Some(links.get(key).await?),
        },
        None => None,
    };
    Ok(with_links(job, Some(&state.config.bucket_name), link, &by_key))
}
