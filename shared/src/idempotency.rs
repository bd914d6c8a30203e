//! `Idempotency-Key` records: the same key and body within 24 hours replay the first answer;
//! the same key with another body answers 409.
//!
//! A key is claimed (conditional put) before the work and completed with the resource id
//! after it, so two concurrent retries cannot both create. Records expire by TTL, and are
//! also treated as gone once older than 24 hours (TTL deletion may lag).

use aws_sdk_dynamodb::{types::AttributeValue, Client};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorKind, SdkResultExt};
use crate::table::{PK, SK};

/// How long a key is remembered.
pub const TTL_SECONDS: u64 = 24 * 3600;
/// A claim with no recorded answer after this long belongs to a request that died (a function
/// runs at most 29 s behind API Gateway); a retry may take it over.
pub const ABANDONED_SECONDS: u64 = 120;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new and now ours: do the work, then [`Idempotency::complete`].
    New,
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

/// Checks a client's key: printable ASCII, 1 to 255 characters.
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::validation("Idempotency-Key must be 1-255 printable ASCII characters"));
    }
    Ok(())
}

impl<'a> Idempotency<'a> {
    /// Records for `key` of `operation` in `org`.
    pub fn new(client: &'a Client, table: &'a str, org: &str, operation: &str, key: &str) -> Self {
        let digest = hex(&Sha256::digest(key.as_bytes()));
        Self { client, table, pk: format!("ORG#{org}#IDEM#{operation}#{digest}") }
    }

    /// Claims the key for a request whose body is `body`.
    pub async fn claim(&self, body: &[u8]) -> Result<Claim, ApiError> {
        let hash = hex(&Sha256::digest(body));
        let now = crate::auth::now_epoch();
        let put = self
            .client
            .put_item()
            .table_name(self.table)
            .item(PK, s(&self.pk))
            .item(SK, s("IDEM"))
            .item("bodyHash", s(&hash))
            .item("claimedAt", AttributeValue::N(now.to_string()))
            .item("expiresAt", AttributeValue::N((now + TTL_SECONDS).to_string()))
            // Take the key if it is free, its record has outlived the window, or its request
            // was abandoned (no answer recorded long after any invocation could still run).
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
            Err(e) => return Err(crate::error::from_sdk("claim idempotency key", e)),
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
            return Err(ApiError::new(ErrorKind::Conflict, "Idempotency-Key was already used with a different request body"));
        }
        match field("resourceId") {
            Some(id) => Ok(Claim::Replay(id)),
            None => Err(ApiError::new(ErrorKind::Conflict, "A request with this Idempotency-Key is still in progress; retry shortly")),
        }
    }

    /// Records the created resource, so retries replay it.
    pub async fn complete(&self, resource_id: &str) -> Result<(), ApiError> {
        self.client
            .update_item()
            .table_name(self.table)
            .key(PK, s(&self.pk))
            .key(SK, s("IDEM"))
            .update_expression("SET resourceId = :id")
            .expression_attribute_values(":id", s(resource_id))
            .send()
            .await
            .ctx("complete idempotency key")?;
        Ok(())
    }

    /// Frees the key after a failed request, so a retry can do the work.
    pub async fn release(&self) {
        let result = self.client.delete_item().table_name(self.table).key(PK, s(&self.pk)).key(SK, s("IDEM")).send().await;
        if let Err(e) = result {
            tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(e), "could not release idempotency key");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
