//! The one error type of every route, and the two error envelopes it renders into.
//!
//! Tether's routes answer `{success: false, message, error}`, Convocore's routes answer
//! `{message, code, issues: [{message}]}`. Which one a route uses is its [`Envelope`].
//! Store errors are mapped to status and message here, in one `From`. A fault's cause travels in
//! the error (never in the body) and is logged once, at the boundary that answers: [`ApiError::log`].

use std::fmt::Display;

use http::StatusCode;

pub use crate::store_error::StoreError;
use lambda_http::{Body, Response};
use serde::Serialize;

/// The error-body family of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `{success, message, data}` / `{success: false, message, error}`.
    Tether,
    /// `{success, message, data}` / `{message, code, issues: [{message}]}`.
    Convocore,
}

/// What went wrong, which decides the status and the machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed or fails validation.
    Validation,
    /// 401: no valid bearer token.
    Unauthorized,
    /// 404: no such resource in the caller's organization (or no such route).
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the request conflicts with the stored state.
    Conflict,
    /// 412: an `If-Match` precondition failed.
    PreconditionFailed,
    /// 413: the body or the answer is too large.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 503: a dependency is unavailable or throttling; retry later.
    Unavailable,
    /// 500: a fault of ours.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Validation => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the envelope (Tether's `error`, Convocore's `code`).
    pub fn code(self, envelope: Envelope) -> &'static str {
        match (self, envelope) {
            (Self::Validation, Envelope::Tether) => "VALIDATION_ERROR",
            (Self::Validation, Envelope::Convocore) => "BAD_REQUEST",
            (Self::Unauthorized, _) => "UNAUTHORIZED",
            (Self::NotFound, _) => "NOT_FOUND",
            (Self::MethodNotAllowed, _) => "METHOD_NOT_SUPPORTED",
            (Self::Conflict, _) => "CONFLICT",
            (Self::PreconditionFailed, _) => "PRECONDITION_FAILED",
            (Self::PayloadTooLarge, _) => "PAYLOAD_TOO_LARGE",
            (Self::UnsupportedMediaType, _) => "UNSUPPORTED_MEDIA_TYPE",
            (Self::Unavailable, _) => "SERVICE_UNAVAILABLE",
            (Self::Internal, Envelope::Tether) => "INTERNAL_ERROR",
            (Self::Internal, Envelope::Convocore) => "INTERNAL_SERVER_ERROR",
        }
    }
}

/// An error answer: a kind, a message safe to show, and optional per-field issues.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Decides status and code.
    pub kind: ErrorKind,
    /// Human-readable, safe to send.
    pub message: String,
    /// Individual problems (Convocore's `issues`; Tether gets them as `issues` too).
    pub issues: Vec<String>,
    /// What failed and why, for the log only (never sent): set for faults and outages.
    pub cause: Option<String>,
}

impl Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)?;
        match &self.cause {
            Some(cause) => write!(f, " ({cause})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    /// The one mapping of storage outcomes to answers.
    fn from(e: StoreError) -> Self {
        let (kind, message) = match &e {
            StoreError::Unavailable { .. } => (ErrorKind::Unavailable, UNAVAILABLE.to_string()),
            StoreError::Contended { .. } => {
                (ErrorKind::Unavailable, "Storage is busy with concurrent changes; retry shortly".to_string())
            }
            StoreError::NotFound(what) => (ErrorKind::NotFound, format!("{what} not found")),
            StoreError::Changed { .. } => (
                ErrorKind::PreconditionFailed,
                "The snapshot changed since it was read (If-Match does not match updatedAt)".to_string(),
            ),
            StoreError::KeyReused => {
                (ErrorKind::Conflict, "Idempotency-Key was already used with a different request body".to_string())
            }
            StoreError::KeyInProgress => (
                ErrorKind::Conflict,
                "A request with this Idempotency-Key is still in progress; retry shortly".to_string(),
            ),
            StoreError::InlineTooLarge { limit } => (
                ErrorKind::PayloadTooLarge,
                format!("The export is larger than {limit} bytes; use delivery=url (or auto) to get a download link"),
            ),
            StoreError::Fault { .. } => (ErrorKind::Internal, INTERNAL.to_string()),
        };
        let cause = matches!(kind, ErrorKind::Unavailable | ErrorKind::Internal).then(|| e.to_string());
        Self { kind, message, issues: Vec::new(), cause }
    }
}

/// The message of every 503 caused by an outage.
pub const UNAVAILABLE: &str = "The service is temporarily unavailable; retry shortly";
const INTERNAL: &str = "Internal server error";

/// One of an error's `issues`.
#[derive(Debug, Serialize)]
struct Issue<'a> {
    message: &'a str,
}

/// The two error envelopes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ErrorBody<'a> {
    /// `{success: false, message, error, issues?}` (`issues` only when there are some).
    Tether {
        success: bool,
        message: &'a str,
        error: &'static str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        issues: Vec<Issue<'a>>,
    },
    /// `{message, code, issues}`.
    Convocore { message: &'a str, code: &'static str, issues: Vec<Issue<'a>> },
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), issues: Vec::new(), cause: None }
    }
    /// 400 about one field: the message says "`field` problem", its one issue "field: problem"
    /// (every 400 lists its problems, each naming its field).
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Validation,
            message: format!("`{field}` {problem}"),
            issues: vec![format!("{field}: {problem}")],
            cause: None,
        }
    }
    /// 400 listing every problem found.
    pub fn validation_issues(message: impl Into<String>, issues: Vec<String>) -> Self {
        Self { kind: ErrorKind::Validation, message: message.into(), issues, cause: None }
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// 500; the caller sees a generic message, the log (at the boundary) the context and cause.
    pub fn internal(context: &str, cause: impl Display) -> Self {
        Self { cause: Some(format!("{context}: {cause}")), ..Self::new(ErrorKind::Internal, INTERNAL) }
    }
    /// 503 for `message`, with the cause for the log.
    pub fn unavailable(message: impl Into<String>, cause: impl Display) -> Self {
        Self { cause: Some(cause.to_string()), ..Self::new(ErrorKind::Unavailable, message) }
    }

    /// Logs a fault or an outage with its cause: called once, where the error is answered.
    /// Client errors are not logged here (the request line carries their status).
    pub fn log(&self) {
        let cause = self.cause.as_deref().unwrap_or("-");
        match self.kind {
            ErrorKind::Internal => tracing::error!(cause, message = %self.message, "internal error"),
            ErrorKind::Unavailable => tracing::warn!(cause, message = %self.message, "unavailable"),
            _ => {}
        }
    }

    /// Renders the error in the route's envelope.
    pub fn into_response(self, envelope: Envelope) -> Response<Body> {
        let code = self.kind.code(envelope);
        // Every 400 lists its problems; one built without issues lists its message.
        let listed = if self.kind == ErrorKind::Validation && self.issues.is_empty() {
            std::slice::from_ref(&self.message)
        } else {
            &self.issues[..]
        };
        let issues: Vec<_> = listed.iter().map(|m| Issue { message: m }).collect();
        let message = &self.message;
        let body = match envelope {
            Envelope::Tether => ErrorBody::Tether { success: false, message, error: code, issues },
            Envelope::Convocore => ErrorBody::Convocore { message, code, issues },
        };
        let mut response = crate::json::json_response(self.kind.status(), &body);
        if self.kind == ErrorKind::Unavailable {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if self.kind == ErrorKind::Unauthorized {
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_503_with_retry_after_and_faults_500_without_their_cause() {
        let outage = ApiError::from(StoreError::unavailable("read item", "SlowDown"));
        let response = outage.clone().into_response(Envelope::Convocore);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], RETRY_AFTER_SECONDS.to_string().as_str());
        assert!(outage.to_string().contains("read item: storage unavailable: SlowDown"), "{outage}");
        let fault = ApiError::from(StoreError::fault("decode snapshot", "missing field `id`"));
        let response = fault.into_response(Envelope::Tether);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        assert!(!body.contains("decode snapshot") && !body.contains("missing field"), "{body}");
        assert_eq!(ApiError::from(StoreError::Changed { context: "patch" }).kind, ErrorKind::PreconditionFailed);
        assert_eq!(ApiError::from(StoreError::KeyReused).kind, ErrorKind::Conflict);
    }
}
