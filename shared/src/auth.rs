//! Bearer-token authentication (RFC 8725 practices).
//!
//! The algorithm is pinned by configuration and never read from the token; `exp` is
//! required, `nbf` is honoured (both NumericDates, fractional seconds allowed), `iss` / `aud`
//! are enforced when configured, and a header with `crit` is refused (no extension is understood).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use http::{header, HeaderMap};
use jsonwebtoken::{errors::ErrorKind as JwtErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{ConfigError, JwtAlgorithm, JwtConfig};
use crate::error::ApiError;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// The latest NumericDate accepted in `exp` / `nbf`: 9999-12-31T23:59:59Z. Larger values are
/// refused as malformed rather than read as "never" (and past 2^53 they are not even exact).
pub const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// The claims a token must (or may) carry, as minted here (whole seconds); a presented token's
/// `exp` / `nbf` may also be fractional (see `Presented`).
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

/// The claims as a presented token carries them: like [`Claims`], but `exp` and `nbf` are
/// NumericDates (RFC 7519 §2), any JSON number of seconds, fractional ones included.
#[derive(Deserialize)]
struct Presented {
    sub: String,
    #[serde(rename = "organizationId")]
    organization_id: String,
    #[serde(deserialize_with = "numeric_date")]
    exp: f64,
    #[serde(default, deserialize_with = "optional_numeric_date")]
    nbf: Option<f64>,
    // Typed like `Claims`, so a token that could not be read back as one is refused.
    #[serde(default)]
    #[allow(dead_code)]
    iss: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    given_name: Option<String>,
    #[serde(default)]
    family_name: Option<String>,
}

/// A NumericDate: a JSON number of seconds since the epoch, from 0 to [`MAX_NUMERIC_DATE`].
/// Strings, booleans, null, negative and larger numbers are refused (JSON has no NaN or infinity).
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Seconds;
    impl serde::de::Visitor<'_> for Seconds {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a NumericDate: seconds since the epoch, from 0 to 253402300799")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
            if v > MAX_NUMERIC_DATE as u64 {
                return Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self));
            }
            Ok(v as f64)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
            }
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
            if !(v.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(&v)) {
                return Err(E::invalid_value(serde::de::Unexpected::Float(v), &self));
            }
            Ok(v)
        }
    }
    d.deserialize_any(Seconds)
}

/// An optional NumericDate (`null` is absent, as for the other optional claims).
fn optional_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct Maybe;
    impl<'de> serde::de::Visitor<'de> for Maybe {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a NumericDate or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            numeric_date(d).map(Some)
        }
    }
    d.deserialize_option(Maybe)
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
            JwtAlgorithm::Hs256 => {
                (Algorithm::HS256, DecodingKey::from_secret(config.secret.as_deref().unwrap_or_default().as_bytes()))
            }
            JwtAlgorithm::Rs256 => {
                (Algorithm::RS256, DecodingKey::from_rsa_pem(pem()).map_err(|e| invalid(e.to_string()))?)
            }
            JwtAlgorithm::Es256 => {
                (Algorithm::ES256, DecodingKey::from_ec_pem(pem()).map_err(|e| invalid(e.to_string()))?)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        // `exp` and `nbf` are checked by `authenticate`: the library reads them as integers
        // only, and a fractional NumericDate is valid (RFC 7519 §2). `exp` stays required
        // there (`Presented` has no default for it).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        // A configured issuer or audience must also be present, not merely not contradicted.
        let mut required = vec!["sub"];
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
        // RFC 7515 §4.1.11: a `crit` header names extensions that must be understood; we
        // understand none, so any `crit` is refused (before the signature is even checked).
        if header_has_crit(token) {
            return Err(ApiError::unauthorized("Token header has unsupported critical extensions (`crit`)"));
        }
        let data = jsonwebtoken::decode::<Presented>(token, &self.key, &self.validation).map_err(|e| {
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
        // The library's checks, with fractional seconds: expired once `exp` is more than the
        // leeway in the past, not yet valid while `nbf` is more than the leeway in the future.
        let now = now_epoch_f64();
        let leeway = LEEWAY_SECONDS as f64;
        if claims.exp + leeway < now {
            return Err(ApiError::unauthorized("Token expired"));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err(ApiError::unauthorized("Token not yet valid (nbf)"));
        }
        if claims.organization_id.trim().is_empty() || claims.sub.trim().is_empty() {
            return Err(ApiError::unauthorized("Token claims are invalid: `sub` and `organizationId` are required"));
        }
        if !crate::ids::is_valid_id(&claims.organization_id) {
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

/// Whether the JOSE header (the first segment, base64url JSON) has a `crit` member, whatever
/// its value. A header that cannot be read is left to the decoder, which refuses it.
fn header_has_crit(token: &str) -> bool {
    let first = token.split('.').next().unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(first)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok())
        .is_some_and(|header| header.contains_key("crit"))
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

/// Seconds since the epoch, now, with the fraction.
fn now_epoch_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
