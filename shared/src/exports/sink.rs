//! Where an export's bytes go: kept in memory while small, else streamed to S3.
//!
//! An export is produced as a stream of writes, one per item. While it stays under the inline
//! limit it is answered in the response; past that it continues as an S3 multipart upload. A
//! part is uploaded as soon as the buffer passes the part size at the end of a write, so every
//! part ends on an item boundary: a job can checkpoint "parts so far + the last item read" and
//! resume in another invocation. Memory stays bounded by the part size plus one item.
//!
//! A synchronous export aborts its upload on any failure, so no orphaned parts remain. A job's
//! sink is *resumable*: a failure leaves the upload for the job's next attempt, which resumes it
//! or, when the job fails for good, aborts it.

use aws_sdk_s3::{
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
    Client,
};

use chrono::{DateTime, Utc};

use super::parts::Upload;
pub use super::parts::{Finished, UploadState};
use crate::sha256::Sha256State;
use crate::store_error::{SdkResultExt, StoreError};

/// S3 part size: above S3's 5 MiB minimum; 10,000 parts of it allow exports up to 80 GiB.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts a synchronous export uploads in the background while it goes on producing the next
/// (memory: this many parts besides the one being filled). A job's parts are uploaded one at a
/// time: it checkpoints at every part, which must be uploaded by then.
pub const UPLOADS_IN_FLIGHT: usize = crate::config::EXPORT_UPLOADS_AHEAD;

/// How the caller wants the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Inline while under the limit, else a download URL.
    #[default]
    Auto,
    /// Always through S3 and a download URL.
    Url,
    /// Only inline: past the limit answers 413.
    Inline,
    /// Nowhere: only counted and hashed (a dry run). Its "parts" are uploaded nowhere, so a
    /// job's checkpoints work as for a real upload.
    Discard,
}

/// Where an S3 object goes and how it is described.
#[derive(Debug, Clone)]
pub struct ObjectSpec {
    /// Bucket.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// `Content-Type` stored on the object.
    pub content_type: String,
    /// `Content-Disposition` stored on the object.
    pub content_disposition: String,
}

/// Now, taken just before a request that creates an object or an upload: S3 dates the object
/// at or after it, so retention counted from it never ends later than S3's own.
fn before_request() -> DateTime<Utc> {
    Utc::now()
}

/// Receives an export's bytes.
pub struct ExportSink<'a> {
    s3: &'a Client,
    spec: ObjectSpec,
    delivery: Delivery,
    inline_max: usize,
    buffer: Vec<u8>,
    upload: Option<Upload>,
    /// See [`UploadState::started`].
    started: Option<DateTime<Utc>>,
    total: u64,
    /// SHA-256 of every byte written.
    hash: Sha256State,
    /// Size of the buffer once encoded in Lambda's JSON response (escaped text or base64).
    encoded: usize,
    text_body: bool,
    fail_after_parts: Option<usize>,
    part_bytes: usize,
    resumable: bool,
    /// Parts uploaded in the background at once (0: each is awaited before going on).
    uploads_ahead: usize,
}

/// Bytes `bytes` add to a JSON string (the response body as Lambda serialises it).
fn escaped_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

impl<'a> ExportSink<'a> {
    /// A sink that answers inline up to `inline_max` bytes (per `delivery`).
    pub fn new(s3: &'a Client, spec: ObjectSpec, delivery: Delivery, inline_max: usize) -> Self {
        let text_body = crate::lambda::is_text_type(&spec.content_type);
        Self {
            s3,
            spec,
            delivery,
            inline_max,
            buffer: Vec::new(),
            upload: None,
            started: None,
            total: 0,
            hash: Sha256State::default(),
            encoded: 0,
            text_body,
            fail_after_parts: None,
            part_bytes: PART_BYTES,
            resumable: false,
            uploads_ahead: UPLOADS_IN_FLIGHT,
        }
    }

    /// A job's sink: always S3 (or, for a dry run, `Discard`), never aborts on its own, and
    /// continues `resume` (the upload and its parts so far, `bytes` long) when given.
    pub fn resumable(s3: &'a Client, spec: ObjectSpec, dry_run: bool, resume: Option<(UploadState, u64)>) -> Self {
        let mut sink = Self::new(s3, spec, if dry_run { Delivery::Discard } else { Delivery::Url }, 0);
        sink.resumable = true;
        sink.uploads_ahead = 0;
        if let Some((state, bytes)) = resume {
            let parts = state
                .parts
                .into_iter()
                .map(|(n, etag)| CompletedPart::builder().part_number(n).e_tag(etag).build())
                .collect();
            sink.upload = Some(Upload { parts, ..Upload::new(state.upload_id) });
            sink.started = Some(state.started);
            sink.hash = state.sha256;
            sink.total = bytes;
        }
        sink
    }

    /// Where the upload stands, once a part has been uploaded.
    pub fn upload_state(&self) -> Option<UploadState> {
        self.upload.as_ref().map(|u| UploadState {
            upload_id: u.id.clone(),
            parts: u.parts.iter().map(|p| (p.part_number.unwrap_or(0), p.e_tag.clone().unwrap_or_default())).collect(),
            started: self.started.unwrap_or_else(before_request),
            sha256: self.hash.clone(),
        })
    }

    /// Parts cut so far (a job's are all uploaded: it uploads one at a time).
    pub fn parts(&self) -> usize {
        self.upload.as_ref().map_or(0, Upload::started)
    }

    /// Bytes written but not yet uploaded.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Uploads up to `n` parts in the background (`EXPORT_UPLOADS_AHEAD`); a job's sink stays at 0.
    pub fn with_uploads_ahead(mut self, n: usize) -> Self {
        if !self.resumable {
            self.uploads_ahead = n;
        }
        self
    }

    /// Fault injection for tests: the upload of part `n + 1` fails as S3 failing would.
    pub fn with_fault_after_parts(mut self, n: usize) -> Self {
        self.fail_after_parts = Some(n);
        self
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Whether the export may still be answered inline (only then is its encoded size counted).
    fn may_answer_inline(&self) -> bool {
        matches!(self.delivery, Delivery::Auto | Delivery::Inline) && self.upload.is_none()
    }

    fn spilling(&self) -> bool {
        matches!(self.delivery, Delivery::Url | Delivery::Discard)
            || self.encoded > self.inline_max
            || self.upload.is_some()
    }

    /// Appends bytes; uploads a part whenever one is full. On error the upload is aborted.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.total == 0 && bytes.starts_with(crate::lambda::UTF8_BOM) {
            // A body that starts with a BOM (CSV) is sent base64 encoded, to keep the BOM.
            self.text_body = false;
        }
        self.total += bytes.len() as u64;
        self.hash.update(bytes);
        if self.buffer.is_empty() && !bytes.is_empty() && self.spilling() {
            // A part's buffer is allocated once at its size (plus an item's worth), not grown
            // by doubling: no copies of it, and no 16 MiB buffer for an 8 MiB part.
            self.buffer.reserve_exact(self.part_bytes + (self.part_bytes / 16).max(bytes.len()));
        }
        self.buffer.extend_from_slice(bytes);
        // The limit is on the answer Lambda returns: text is JSON-escaped, anything else base64.
        self.encoded = if !self.may_answer_inline() {
            0
        } else if self.text_body {
            self.encoded.saturating_add(escaped_len(bytes))
        } else {
            self.buffer.len().div_ceil(3) * 4
        };
        if self.delivery == Delivery::Inline && self.encoded > self.inline_max {
            return Err(StoreError::InlineTooLarge { limit: self.inline_max });
        }
        // Whole writes only: a part always ends where an item ends (see the module docs).
        if self.spilling() && self.buffer.len() >= self.part_bytes {
            let part = std::mem::take(&mut self.buffer);
            if let Err(e) = self.upload_part(part).await {
                if !self.resumable {
                    self.abort().await;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn upload_part(&mut self, part: Vec<u8>) -> Result<(), StoreError> {
        if self.delivery == Delivery::Discard {
            let upload = self.upload.get_or_insert_with(|| Upload::new(String::new()));
            let number = upload.parts.len() as i32 + 1;
            upload.parts.push(CompletedPart::builder().part_number(number).e_tag("").build());
            self.started.get_or_insert_with(before_request);
            return Ok(());
        }
        if self.upload.is_none() {
            self.started = Some(before_request());
            let created = self
                .s3
                .create_multipart_upload()
                .bucket(&self.spec.bucket)
                .key(&self.spec.key)
                .content_type(&self.spec.content_type)
                .content_disposition(&self.spec.content_disposition)
                .send()
                .await
                .ctx("start export upload")?;
            let id = created.upload_id.ok_or_else(|| StoreError::fault("start export upload", "no upload id"))?;
            self.upload = Some(Upload::new(id));
        }
        let Some(upload) = self.upload.as_mut() else { return Err(StoreError::fault("upload part", "no upload")) };
        if self.fail_after_parts.is_some_and(|n| upload.started() >= n) {
            return Err(StoreError::unavailable("upload part", "injected fault: S3 failed during the export"));
        }
        let number = upload.started() as i32 + 1;
        let request = self
            .s3
            .upload_part()
            .bucket(&self.spec.bucket)
            .key(&self.spec.key)
            .upload_id(&upload.id)
            .part_number(number)
            .body(ByteStream::from(part));
        upload.in_flight.push_back(tokio::spawn(async move {
            // Not signed (SigV4 hashed every byte again: 4 % of an export's CPU): the part's
            // CRC32 checksum, which S3 verifies, and TLS keep its integrity.
            let out = request.customize().disable_payload_signing().send().await.ctx("upload export part")?;
            Ok(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build())
        }));
        upload.settle(self.uploads_ahead).await
    }

    /// Uploads what is buffered as a part (a job's last part, before its "finished" checkpoint).
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if !self.buffer.is_empty() {
            let part = std::mem::take(&mut self.buffer);
            self.upload_part(part).await?;
        }
        Ok(())
    }

    /// Aborts the multipart upload, if one was started (best effort, logged).
    pub async fn abort(&mut self) {
        if let Some(upload) = self.upload.as_mut() {
            // A part still being uploaded could land after the abort and keep its storage.
            while !upload.in_flight.is_empty() {
                let _ = upload.settle_one().await;
            }
        }
        if let Some(upload) = self.upload.take().filter(|u| !u.id.is_empty()) {
            super::objects::abort_upload(self.s3, &self.spec.bucket, &self.spec.key, &upload.id).await;
        }
    }

    /// Completes the export: inline bytes, or the stored object.
    pub async fn finish(mut self) -> Result<Finished, StoreError> {
        if !self.spilling() {
            return Ok(Finished::Inline(std::mem::take(&mut self.buffer)));
        }
        let result = self.complete().await;
        if result.is_err() && !self.resumable {
            self.abort().await;
        }
        result
    }

    async fn complete(&mut self) -> Result<Finished, StoreError> {
        let key = self.spec.key.clone();
        let sha256 = self.hash.hex();
        if self.delivery == Delivery::Discard {
            self.buffer.clear();
            return Ok(Finished::Discarded { bytes: self.total, sha256 });
        }
        if self.upload.is_none() {
            // Never reached a full part: one PutObject is cheaper than a multipart upload.
            let created = before_request();
            self.s3
                .put_object()
                .bucket(&self.spec.bucket)
                .key(&key)
                .content_type(&self.spec.content_type)
                .content_disposition(&self.spec.content_disposition)
                .body(ByteStream::from(std::mem::take(&mut self.buffer)))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .ctx("store export")?;
            return Ok(Finished::Stored { key, bytes: self.total, created, sha256 });
        }
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer);
            self.upload_part(last).await?;
        }
        let Some(upload) = self.upload.as_mut() else { return Err(StoreError::fault("complete export", "no upload")) };
        upload.settle(0).await?;
        self.s3
            .complete_multipart_upload()
            .bucket(&self.spec.bucket)
            .key(&key)
            .upload_id(&upload.id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(upload.parts.clone())).build())
            .send()
            .await
            .ctx("complete export upload")?;
        self.upload = None;
        let created = self.started.unwrap_or_else(before_request);
        Ok(Finished::Stored { key, bytes: self.total, created, sha256 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::is_text_type as is_text;

    #[test]
    fn the_inline_limit_counts_what_lambda_sends() {
        assert!(is_text("application/json") && is_text("text/csv; charset=utf-8"));
        assert!(!is_text("application/x-ndjson"), "sent base64-encoded by lambda_http");
        assert_eq!(escaped_len(b"ab"), 2);
        assert_eq!(escaped_len(b"\"q\"\n"), 7);
        assert_eq!(escaped_len(&[0x01]), 6);
        assert_eq!(escaped_len("é".as_bytes()), 2, "UTF-8 is not escaped");
    }

    #[tokio::test]
    async fn a_body_that_starts_with_a_bom_counts_as_base64() {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        let s3 = Client::from_conf(config);
        let spec = |ct: &str| ObjectSpec {
            bucket: "b".into(),
            key: "k".into(),
            content_type: ct.into(),
            content_disposition: "attachment".into(),
        };
        // 8 bytes: 10 as escaped text, 12 as base64; the limit is 10.
        let mut csv = ExportSink::new(&s3, spec("text/csv; charset=utf-8"), Delivery::Inline, 10);
        csv.write(crate::lambda::UTF8_BOM).await.unwrap();
        assert!(csv.write(b"a,b\r\n").await.is_err(), "a CSV with its BOM is sent base64 encoded");
        let mut text = ExportSink::new(&s3, spec("text/csv; charset=utf-8"), Delivery::Inline, 10);
        text.write(b"abc").await.unwrap();
        text.write(b"a,b\r\n").await.unwrap();
    }
}
