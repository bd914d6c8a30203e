//! Where an export's upload stands: the parts uploaded and being uploaded, a job's resumable
//! state, and the finished file.

use aws_sdk_s3::types::CompletedPart;
use chrono::{DateTime, Utc};

use crate::sha256::Sha256State;
use crate::store_error::StoreError;

/// A part's upload, running in the background.
type PartUpload = tokio::task::JoinHandle<Result<CompletedPart, StoreError>>;

pub(super) struct Upload {
    pub(super) id: String,
    /// Parts uploaded, in order.
    pub(super) parts: Vec<CompletedPart>,
    /// Parts being uploaded (numbered after `parts`), oldest first.
    pub(super) in_flight: std::collections::VecDeque<PartUpload>,
}

impl Upload {
    pub(super) fn new(id: String) -> Self {
        Self { id, parts: Vec::new(), in_flight: Default::default() }
    }

    /// Parts handed to S3 so far, uploaded or not yet.
    pub(super) fn started(&self) -> usize {
        self.parts.len() + self.in_flight.len()
    }

    /// Waits for the oldest part being uploaded.
    pub(super) async fn settle_one(&mut self) -> Result<(), StoreError> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = task.await.map_err(|e| StoreError::fault("upload export part", e))??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Waits until no more than `left` parts are being uploaded.
    pub(super) async fn settle(&mut self, left: usize) -> Result<(), StoreError> {
        while self.in_flight.len() > left {
            self.settle_one().await?;
        }
        Ok(())
    }
}

/// Where a resumable upload stands: enough to continue it in another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    /// The multipart upload.
    pub upload_id: String,
    /// Parts uploaded, in order (numbers 1..=n).
    pub parts: Vec<(i32, String)>,
    /// When the upload was initiated, at the latest: S3 dates the finished object from it.
    pub started: DateTime<Utc>,
    /// SHA-256 of the bytes in the parts.
    pub sha256: Sha256State,
}

/// The finished export.
#[derive(Debug)]
pub enum Finished {
    /// Small enough to answer in the response.
    Inline(Vec<u8>),
    /// Stored in S3 at `key`, `bytes` long.
    Stored {
        /// The object key.
        key: String,
        /// Its size.
        bytes: u64,
        /// No later than the object's creation date as S3 counts it (for a multipart upload,
        /// its initiation), from which the bucket's lifecycle rule counts its expiry.
        created: DateTime<Utc>,
        /// SHA-256 of the object's bytes, lowercase hex.
        sha256: String,
    },
    /// Counted and hashed only ([`Delivery::Discard`]).
    Discarded {
        /// The file's size.
        bytes: u64,
        /// SHA-256 of its bytes, lowercase hex.
        sha256: String,
    },
}
