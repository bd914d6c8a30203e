//! Bearer-token authentication (RFC 8725 practices).
//!
//! The algorithm is pinned by configuration and never read from the token; `exp` is
//! required, `nbf` is honoured, and `iss` / `aud` are enforced when configured.

use http::{header, HeaderMap};
use jsonwebtoken::{errors::ErrorKind as JwtErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, JwtAlgorithm, JwtConfig};
use crate::error::ApiError;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// The claims a token must (or may) carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The tenant every read and write is scoped to.
    #[serde(rename = "organizationId")]
    pub organization_id: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: a string or an array of strings (RFC 7519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// The user's e-mail, shown on snapshots they capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// The user's last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
}

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`.
    pub user_id: String,
    /// `organizationId`: the tenant.
    pub organization_id: String,
    /// `email`.
    pub email: Option<String>,
    /// `given_name`.
    pub given_name: Option<String>,
    /// `family_name`.
    pub family_name: Option<String>,
}

/// Verifies tokens with the key and algorithm of the configuration.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the verifier; a key that cannot be parsed stops the cold start.
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { name: "JWT_PUBLIC_KEY", reason };
        let pem = || config.public_key_pem.as_deref().unwrap_or_default().as_bytes();
        let (algorithm, key) = match config.algorithm {
            JwtAlgorithm::Hs256 => (
                Algorithm::HS256,
                DecodingKey::from_secret(config.secret.as_deref().unwrap_or_default().as_bytes()),
            ),
            JwtAlgorithm::Rs256 => {
                (Algorithm::RS256, DecodingKey::from_rsa_pem(pem()).map_err(|e| invalid(e.to_string()))?)
            }
            JwtAlgorithm::Es256 => {
                (Algorithm::ES256, DecodingKey::from_ec_pem(pem()).map_err(|e| invalid(e.to_string()))?)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience must also be present, not merely not contradicted.
        let mut required = vec!["exp", "sub"];
        required.extend(config.issuer.as_ref().map(|_| "iss"));
        required.extend(config.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation })
    }

    /// Verifies the `Authorization: Bearer <JWT>` header. The error says what was wrong
    /// (missing, malformed, expired, bad signature, bad claims) and never echoes the token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("Missing bearer token: send `Authorization: Bearer <token>`"))?;
        let value = value.to_str().map_err(|_| ApiError::unauthorized("Malformed Authorization header"))?;
        // Exactly one form, `Bearer <compact JWS>`: other schemes, casings, extra whitespace and
        // several credentials joined by a proxy are refused rather than guessed at.
        let token = value
            .strip_prefix("Bearer ")
            .filter(|t| is_compact_jws(t))
            .ok_or_else(|| ApiError::unauthorized("Malformed Authorization header: expected `Bearer <token>`"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            let message = match e.kind() {
                JwtErrorKind::ExpiredSignature => "Token expired",
                JwtErrorKind::ImmatureSignature => "Token not yet valid (nbf)",
                JwtErrorKind::InvalidSignature => "Invalid token signature",
                JwtErrorKind::InvalidAlgorithm => "Token algorithm not accepted",
                JwtErrorKind::InvalidIssuer => "Token issuer not accepted",
                JwtErrorKind::InvalidAudience => "Token audience not accepted",
                JwtErrorKind::MissingRequiredClaim(_) | JwtErrorKind::InvalidClaimFormat(_) | JwtErrorKind::Json(_) => {
                    "Token claims are invalid"
                }
                _ => "Malformed token",
            };
            ApiError::unauthorized(message)
        })?;
        let claims = data.claims;
        if claims.organization_id.trim().is_empty() || claims.sub.trim().is_empty() {
            return Err(ApiError::unauthorized("Token claims are invalid: `sub` and `organizationId` are required"));
        }
        if !crate::http::is_valid_id(&claims.organization_id) {
            return Err(ApiError::unauthorized("Token claims are invalid: malformed `organizationId`"));
        }
        Ok(Principal {
            user_id: claims.sub,
            organization_id: claims.organization_id,
            email: claims.email,
            given_name: claims.given_name,
            family_name: claims.family_name,
        })
    }
}

/// Whether `token` has the characters of a compact JWS: base64url segments separated by dots.
fn is_compact_jws(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Signs an HS256 token; used by the local server to print a development token, and by tests.
pub fn mint_hs256(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
}

/// Seconds since the epoch, now.
pub fn now_epoch() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
