//! The one error type of every route, and the two error envelopes it renders into.
//!
//! Tether's routes answer `{success: false, message, error}`, Convocore's routes answer
//! `{message, code, issues: [{message}]}`. Which one a route uses is its [`Envelope`].
//! Infrastructure faults are logged here with their context and reach callers only as a
//! generic 5xx message.

use std::fmt::Display;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::json;

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
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    /// Decides status and code.
    pub kind: ErrorKind,
    /// Human-readable, safe to send.
    pub message: String,
    /// Individual problems (Convocore's `issues`; Tether gets them as `issues` too).
    pub issues: Vec<String>,
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), issues: Vec::new() }
    }
    /// 400 about one field: the message says "`field` problem", its one issue "field: problem"
    /// (every 400 lists its problems, each naming its field).
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Validation,
            message: format!("`{field}` {problem}"),
            issues: vec![format!("{field}: {problem}")],
        }
    }
    /// 400 listing every problem found.
    pub fn validation_issues(message: impl Into<String>, issues: Vec<String>) -> Self {
        Self { kind: ErrorKind::Validation, message: message.into(), issues }
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// 500 after logging the cause; the caller sees a generic message.
    pub fn internal(context: &str, cause: impl Display) -> Self {
        tracing::error!(context, error = %cause, "internal error");
        Self::new(ErrorKind::Internal, "Internal server error")
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
        let issues: Vec<_> = listed.iter().map(|m| json!({ "message": m })).collect();
        let body = match envelope {
            Envelope::Tether if issues.is_empty() => {
                json!({ "success": false, "message": self.message, "error": code })
            }
            Envelope::Tether => json!({ "success": false, "message": self.message, "error": code, "issues": issues }),
            Envelope::Convocore => json!({ "message": self.message, "code": code, "issues": issues }),
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

/// Error codes from AWS that mean "try again shortly", not "we are broken".
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "ServiceUnavailable",
    "SlowDown",
    // S3's names for a failure on its side and for a request it gave up waiting on.
    "InternalError",
    "RequestTimeout",
];

/// Whether an AWS answer's HTTP status says the fault is on the service's side (5xx): that is
/// an outage to retry, whatever its error code (S3's `InternalError`, an unknown code).
fn server_side<R: 'static>(raw: &R) -> bool {
    let raw: &dyn std::any::Any = raw;
    raw.downcast_ref::<aws_sdk_dynamodb::config::http::HttpResponse>().is_some_and(|r| r.status().is_server_error())
}

/// Turns an AWS SDK error into an [`ApiError`], logging it with its context.
pub fn from_sdk<E, R>(context: &'static str, err: SdkError<E, R>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => {
            e.err().code().is_some_and(|c| TRANSIENT_CODES.contains(&c)) || server_side(e.raw())
        }
        _ => false,
    };
    if transient {
        tracing::warn!(context, error = %DisplayErrorContext(&err), "storage unavailable");
        ApiError::new(ErrorKind::Unavailable, "The service is temporarily unavailable; retry shortly")
    } else {
        ApiError::internal(context, DisplayErrorContext(&err))
    }
}

/// `.ctx("what")` on AWS SDK results: log with context and convert to [`ApiError`].
pub trait SdkResultExt<T> {
    /// Converts the error side, naming the operation for the log.
    fn ctx(self, context: &'static str) -> Result<T, ApiError>;
}

impl<T, E, R> SdkResultExt<T> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn ctx(self, context: &'static str) -> Result<T, ApiError> {
        self.map_err(|e| from_sdk(context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_smithy_types::body::SdkBody;

    fn service_error(status: u16, code: &str) -> SdkError<GetItemError, HttpResponse> {
        let raw = http::Response::builder().status(status).body(SdkBody::empty()).expect("response");
        let raw = HttpResponse::try_from(raw).expect("http 1 response");
        SdkError::service_error(GetItemError::generic(ErrorMetadata::builder().code(code).build()), raw)
    }

    #[test]
    fn throttling_and_server_side_failures_are_503_and_client_errors_are_500() {
        let kind = |status, code| from_sdk("test", service_error(status, code)).kind;
        assert_eq!(kind(400, "ProvisionedThroughputExceededException"), ErrorKind::Unavailable);
        assert_eq!(kind(500, "InternalError"), ErrorKind::Unavailable, "S3's own name");
        assert_eq!(kind(502, "SomethingNew"), ErrorKind::Unavailable, "any 5xx");
        assert_eq!(kind(400, "ValidationException"), ErrorKind::Internal, "a request we built wrong is our fault");
        let response = from_sdk("test", service_error(503, "SlowDown")).into_response(Envelope::Convocore);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], RETRY_AFTER_SECONDS.to_string().as_str());
    }
}
