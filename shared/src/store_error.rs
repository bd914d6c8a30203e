//! The error every store returns. Stores speak storage, not HTTP: a variant says what happened
//! and carries its cause for the log. `error::ApiError`'s `From` is the one place that maps it
//! to a status, a message safe to show and `Retry-After`; the handler boundary logs it, once.

use std::fmt::Display;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What went wrong in storage (DynamoDB or S3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttled, timed out, or failed on the service's side: a later retry may succeed.
    #[error("{context}: storage unavailable: {cause}")]
    Unavailable { context: &'static str, cause: String },
    /// Concurrent writers kept winning the conditional writes our own retries make.
    #[error("{context}: contended: {cause}")]
    Contended { context: &'static str, cause: String },
    /// The item (named for the answer: "Training snapshot") does not exist for this organization.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A conditional write found the item changed since the caller read it (`If-Match`).
    #[error("{context}: the item changed since it was read")]
    Changed { context: &'static str },
    /// The idempotency key was used with another request body.
    #[error("idempotency key used with another request body")]
    KeyReused,
    /// The idempotency key's first request is still being answered.
    #[error("idempotency key still in progress")]
    KeyInProgress,
    /// An inline answer would exceed what Lambda can return.
    #[error("inline export over {limit} bytes")]
    InlineTooLarge { limit: usize },
    /// A fault of ours: a request built wrong, an item that does not decode.
    #[error("{context}: {cause}")]
    Fault { context: &'static str, cause: String },
}

impl StoreError {
    /// A fault of ours in `context`.
    pub fn fault(context: &'static str, cause: impl Display) -> Self {
        Self::Fault { context, cause: cause.to_string() }
    }
    /// Storage is down or throttling in `context`.
    pub fn unavailable(context: &'static str, cause: impl Display) -> Self {
        Self::Unavailable { context, cause: cause.to_string() }
    }
    /// Our retries lost to concurrent writers in `context`.
    pub fn contended(context: &'static str, cause: impl Display) -> Self {
        Self::Contended { context, cause: cause.to_string() }
    }
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Contended { .. })
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

/// Classifies an AWS SDK error: transient ones are [`StoreError::Unavailable`], the rest faults.
pub fn from_sdk<E, R>(context: &'static str, err: SdkError<E, R>) -> StoreError
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
    let cause = DisplayErrorContext(&err).to_string();
    if transient {
        StoreError::Unavailable { context, cause }
    } else {
        StoreError::Fault { context, cause }
    }
}

/// `.ctx("what")` on AWS SDK results: names the operation and classifies the error.
pub trait SdkResultExt<T> {
    /// Converts the error side, naming the operation for the log.
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T, E, R> SdkResultExt<T> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
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
    fn throttling_and_server_side_failures_are_transient_and_client_errors_are_faults() {
        let transient = |status, code| from_sdk("test", service_error(status, code)).is_transient();
        assert!(transient(400, "ProvisionedThroughputExceededException"));
        assert!(transient(500, "InternalError"), "S3's own name");
        assert!(transient(502, "SomethingNew"), "any 5xx");
        assert!(!transient(400, "ValidationException"), "a request we built wrong is our fault");
        let err = from_sdk("read item", service_error(400, "ValidationException"));
        assert!(
            matches!(&err, StoreError::Fault { context: "read item", cause } if cause.contains("ValidationException"))
        );
    }
}
