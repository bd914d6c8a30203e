//! Opaque pagination cursors: signed, bound to one organization and one query.
//!
//! A cursor is `base64url(payload).base64url(HMAC-SHA256(payload))`. The payload carries
//! the organization and a scope (the route and its filters), so a cursor can neither be
//! forged nor replayed by another organization or against another query: either answers 400.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::ApiError;
use crate::keys::Org;

type HmacSha256 = Hmac<Sha256>;

/// The longest cursor accepted; a real one is far shorter.
const MAX_CURSOR_LEN: usize = 2048;

#[derive(Serialize, Deserialize)]
struct Payload {
    o: String,
    s: String,
    k: BTreeMap<String, String>,
}

/// Signs and checks cursors with one secret; built once per cold start.
#[derive(Clone)]
pub struct CursorCodec {
    mac: HmacSha256,
}

/// The 400 of a cursor that this deployment did not issue for this query.
pub fn invalid() -> ApiError {
    ApiError::invalid("cursor", "is not valid here: use the `nextCursor` of the previous page with the same filters")
}

impl CursorCodec {
    /// A codec with the deployment's cursor secret.
    pub fn new(secret: &[u8]) -> Result<Self, crate::config::ConfigError> {
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|e| crate::config::ConfigError::Invalid { name: "CURSOR_SECRET", reason: e.to_string() })?;
        Ok(Self { mac })
    }

    fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    /// Encodes DynamoDB's `LastEvaluatedKey` for `org` and `scope`; `None` when there is no next page.
    pub fn encode(
        &self,
        org: &Org,
        scope: &str,
        last_key: Option<&HashMap<String, AttributeValue>>,
    ) -> Result<Option<String>, ApiError> {
        let Some(last_key) = last_key else { return Ok(None) };
        let mut k = BTreeMap::new();
        for (name, value) in last_key {
            let s = value.as_s().map_err(|_| ApiError::internal("cursor", format!("non-string key {name}")))?;
            k.insert(name.clone(), s.clone());
        }
        let payload = serde_json::to_vec(&Payload { o: org.as_str().to_string(), s: scope.to_string(), k })
            .map_err(|e| ApiError::internal("cursor", e))?;
        let mut mac = self.mac();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        Ok(Some(format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag))))
    }

    /// Decodes a cursor back into an `ExclusiveStartKey`, checking signature, organization and scope.
    pub fn decode(&self, org: &Org, scope: &str, cursor: &str) -> Result<HashMap<String, AttributeValue>, ApiError> {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(invalid());
        }
        let (payload_b64, tag_b64) = cursor.split_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| invalid())?;
        let payload: Payload = serde_json::from_slice(&payload).map_err(|_| invalid())?;
        if payload.o != org.as_str() || payload.s != scope {
            return Err(invalid());
        }
        Ok(payload.k.into_iter().map(|(k, v)| (k, AttributeValue::S(v))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HashMap<String, AttributeValue> {
        HashMap::from([("PK".to_string(), AttributeValue::S("ORG#a".into()))])
    }

    #[test]
    fn round_trips_and_rejects_other_orgs_scopes_and_forgeries() {
        let (a, b) = (Org::stored("org-a"), Org::stored("org-b"));
        let codec = CursorCodec::new(b"secret").unwrap();
        let c = codec.encode(&a, "convos:x", Some(&key())).unwrap().unwrap();
        assert_eq!(codec.decode(&a, "convos:x", &c).unwrap(), key());
        assert!(codec.decode(&b, "convos:x", &c).is_err());
        assert!(codec.decode(&a, "convos:y", &c).is_err());
        assert!(CursorCodec::new(b"other").unwrap().decode(&a, "convos:x", &c).is_err());
        let (p, t) = c.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"o":"org-b","s":"convos:x","k":{}}"#);
        assert!(codec.decode(&b, "convos:x", &format!("{forged_payload}.{t}")).is_err());
        assert!(codec.decode(&a, "convos:x", &format!("{p}.")).is_err());
        assert!(codec.decode(&a, "convos:x", "garbage").is_err());
        assert_eq!(codec.encode(&a, "s", None).unwrap(), None);
    }
}
