//! `Idempotency-Key` records: the same key and body within 24 hours give one resource and
//! replay its answer; the same key with another body answers 409.
//!
//! The resource id is chosen before the key is claimed and stored in the claim (conditional
//! put), and the resource is created under that id with a conditional write. So every request
//! with the key and body works on the same id and at most one creation commits, whatever
//! fails, times out or is applied late: a retry that finds a claim without a recorded answer
//! answers the resource if it exists and otherwise creates it under the claimed id. The claim is
//! completed once answered. Records expire by TTL, and are also treated as gone once older than
//! 24 hours (TTL deletion may lag).

use aws_sdk_dynamodb::{types::AttributeValue, Client};
use sha2::{Digest, Sha256};

use crate::keys::{self, Org};
use crate::store_error::{SdkResultExt, StoreError};
use crate::table::{PK, SK, TTL};

/// How long a key is remembered.
pub const TTL_SECONDS: u64 = 24 * 3600;
/// A claim written by an earlier version (without a resource id) and no answer after this long
/// belongs to a request that has ended (API Gateway waits 29 s, the function's timeout is 29 s);
/// a retry may take it over. Claims with a resource id never need this.
pub const ABANDONED_SECONDS: u64 = 35;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new and now ours, for the id given to [`Idempotency::claim`]: create the
    /// resource under it, then [`Idempotency::complete`].
    New,
    /// An earlier request with this key and body claimed this id but recorded no answer (it
    /// failed, its outcome is unknown, or it is still running): answer the resource if it
    /// exists, else create it under this id (conditionally, so it is created once).
    Resume(String),
    /// The same request was already answered: replay the answer for this resource id.
    Replay(String),
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// Idempotency records of one organization and operation.
pub struct Idempotency<'a> {
    client: &'a Client,
    table: &'a str,
    pk: String,
}

impl<'a> Idempotency<'a> {
    /// Records for `key` of `operation` in `org`.
    pub fn new(client: &'a Client, table: &'a str, org: &Org, operation: &str, key: &str) -> Self {
        let digest = hex(&Sha256::digest(key.as_bytes()));
        Self { client, table, pk: keys::idempotency(org, operation, &digest) }
    }

    /// Claims the key for a request whose body is `body`, naming `id` as the resource it will
    /// create. A claim applied late (after the caller gave up) names the same id, so the retry
    /// resumes it instead of waiting for it.
    pub async fn claim(&self, body: &[u8], id: &str) -> Result<Claim, StoreError> {
        let hash = hex(&Sha256::digest(body));
        let now = crate::auth::now_epoch();
        let put = self
            .client
            .put_item()
            .table_name(self.table)
            .item(PK, s(&self.pk))
            .item(SK, s("IDEM"))
            .item("bodyHash", s(&hash))
            .item("resourceId", s(id))
            // Explicitly false: a record of the previous version without it was completed.
            .item("completed", AttributeValue::Bool(false))
            .item("claimedAt", AttributeValue::N(now.to_string()))
            .item(TTL, AttributeValue::N((now + TTL_SECONDS).to_string()))
            // Take the key if it is free, its record has outlived the window, or it is an
            // earlier version's claim (no resource id) whose request has surely ended.
            .condition_expression(
                "attribute_not_exists(PK) OR claimedAt < :stale OR (attribute_not_exists(resourceId) AND claimedAt < :abandoned)",
            )
            .expression_attribute_values(":stale", AttributeValue::N(now.saturating_sub(TTL_SECONDS).to_string()))
            .expression_attribute_values(":abandoned", AttributeValue::N(now.saturating_sub(ABANDONED_SECONDS).to_string()))
            .send()
            .await;
        match put {
            Ok(_) => return Ok(Claim::New),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(crate::store_error::from_sdk("claim idempotency key", e)),
        }
        let item = self
            .client
            .get_item()
            .table_name(self.table)
            .key(PK, s(&self.pk))
            .key(SK, s("IDEM"))
            .consistent_read(true)
            .send()
            .await
            .ctx("read idempotency key")?
            .item
            .unwrap_or_default();
        let field = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        if field("bodyHash").as_deref() != Some(hash.as_str()) {
            return Err(StoreError::KeyReused);
        }
        let open = matches!(item.get("completed"), Some(AttributeValue::Bool(false)));
        match field("resourceId") {
            Some(id) if open => Ok(Claim::Resume(id)),
            // Completed (by this version, or by the previous one, which wrote no flag).
            Some(id) => Ok(Claim::Replay(id)),
            // The previous version's claim, not answered yet (at most ABANDONED_SECONDS).
            None => Err(StoreError::KeyInProgress),
        }
    }

    /// Records that the request for `resource_id` was answered, so retries replay it.
    pub async fn complete(&self, resource_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(self.table)
            .key(PK, s(&self.pk))
            .key(SK, s("IDEM"))
            .update_expression("SET completed = :yes")
            // Only our claim: not a record that replaced it once the window passed.
            .condition_expression("resourceId = :id")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":id", s(resource_id))
            .send()
            .await
            .ctx("complete idempotency key")?;
        Ok(())
    }

    /// Frees the key after a request that failed for good (not for an outage: then the
    /// outcome may be unknown and the retry must resume the same id), so a retry, possibly
    /// with a corrected body, does the work afresh. Only the claim of `resource_id` is freed.
    pub async fn release(&self, resource_id: &str) {
        let result = self
            .client
            .delete_item()
            .table_name(self.table)
            .key(PK, s(&self.pk))
            .key(SK, s("IDEM"))
            .condition_expression("resourceId = :id AND completed = :no")
            .expression_attribute_values(":id", s(resource_id))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(e), "could not release idempotency key");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
