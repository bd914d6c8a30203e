//! Export objects in S3 outside a running upload: abort an upload that will not be completed,
//! and hand out a download link.

use aws_sdk_s3::Client;

use crate::store_error::{SdkResultExt, StoreError};

/// Aborts a multipart upload, so none of its parts stay stored (best effort: a failure is
/// logged, and the bucket's lifecycle rule removes incomplete uploads later).
pub async fn abort_upload(s3: &Client, bucket: &str, key: &str, upload_id: &str) {
    let result = s3.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send().await;
    if let Err(e) = result {
        tracing::error!(key, error = %aws_sdk_s3::error::DisplayErrorContext(e), "could not abort an export upload");
    }
}

/// A presigned GET URL for an export object, valid for `ttl`.
pub async fn presign(s3: &Client, bucket: &str, key: &str, ttl: std::time::Duration) -> Result<String, StoreError> {
    let config =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl).map_err(|e| StoreError::fault("presign", e))?;
    let request = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .presigned(config)
        .await
        .map_err(|e| StoreError::fault("presign", aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(request.uri().to_string())
}

/// Stores a small JSON object (a job's manifest or split assignment) at `key`.
pub async fn put_json(
    s3: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    disposition: Option<&str>,
    context: &'static str,
) -> Result<(), StoreError> {
    put(s3, bucket, key, body, ("application/json", disposition), context).await
}

/// Reads a small object whole (`None` when there is none).
pub async fn get(s3: &Client, bucket: &str, key: &str, context: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let bytes = out.body.collect().await.map_err(|e| StoreError::unavailable(context, e))?;
            Ok(Some(bytes.into_bytes().to_vec()))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(crate::store_error::from_sdk(context, e)),
    }
}

/// Stores a small object with its content type and disposition.
pub async fn put(
    s3: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    (content_type, disposition): (&str, Option<&str>),
    context: &'static str,
) -> Result<(), StoreError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .set_content_disposition(disposition.map(str::to_string))
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .ctx(context)?;
    Ok(())
}
