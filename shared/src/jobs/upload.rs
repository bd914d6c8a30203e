//! The S3 side of a job's multipart upload: what a checkpoint's upload still holds, whether
//! the file exists, and aborting an upload that will not be completed.

use aws_sdk_s3::error::ProvideErrorMetadata;

use super::Job;
use crate::store_error::StoreError;
use crate::AppState;

/// Parts 1..=`count` of an upload, from S3; `None` when the upload or one of them is gone.
pub(super) async fn list_parts(
    state: &AppState,
    key: &str,
    upload_id: &str,
    count: i32,
) -> Result<Option<Vec<(i32, String)>>, StoreError> {
    let mut parts = Vec::with_capacity(count.max(0) as usize);
    let mut marker: Option<String> = None;
    loop {
        let result = state
            .s3
            .list_parts()
            .bucket(&state.config.bucket_name)
            .key(key)
            .upload_id(upload_id)
            .set_part_number_marker(marker.clone())
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchUpload") => return Ok(None),
            Err(e) => return Err(crate::store_error::from_sdk("list export parts", e)),
        };
        for p in out.parts() {
            if let (Some(n), Some(etag)) = (p.part_number, p.e_tag.clone()) {
                if n <= count {
                    parts.push((n, etag));
                }
            }
        }
        marker = out.next_part_number_marker.clone();
        if !out.is_truncated.unwrap_or(false) || marker.is_none() {
            break;
        }
    }
    parts.sort_by_key(|(n, _)| *n);
    let complete = parts.len() == count as usize && parts.iter().enumerate().all(|(i, (n, _))| *n == i as i32 + 1);
    Ok(complete.then_some(parts))
}

/// Whether the export object `key` exists (a completed upload).
pub(super) async fn object_exists(state: &AppState, key: &str) -> Result<bool, StoreError> {
    match state.s3.head_object().bucket(&state.config.bucket_name).key(key).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
        Err(e) => Err(crate::store_error::from_sdk("check export object", e)),
    }
}

/// Aborts `upload_id` of `key`, if any (best effort, logged).
pub(super) async fn abort(state: &AppState, key: &str, upload_id: Option<&str>) {
    // An empty id is no upload (a dry run's, or a file not started).
    if let Some(upload_id) = upload_id.filter(|id| !id.is_empty()) {
        crate::exports::objects::abort_upload(&state.s3, &state.config.bucket_name, key, upload_id).await;
    }
}

/// Aborts a job's checkpointed upload, if any (for a job failing for good).
pub async fn abort_upload(state: &AppState, job: &Job) {
    if let Some(cp) = &job.checkpoint {
        if let Some(pass) = super::passes::pass_of(job, cp.file) {
            abort(state, &pass.key, Some(cp.upload_id.as_str())).await;
        }
    }
}

/// Deletes an export object (best effort, logged: the bucket's lifecycle rule removes it later).
pub(super) async fn delete_object(state: &AppState, key: &str) {
    if let Err(e) = state.s3.delete_object().bucket(&state.config.bucket_name).key(key).send().await {
        tracing::warn!(key, error = %aws_sdk_s3::error::DisplayErrorContext(e), "could not delete an empty export file");
    }
}
