//! JSON response bodies, the one shape every answer has (success and error alike).

use http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;

/// Builds a JSON response; serialisation cannot fail for our types, but if it did the caller
/// would get a plain 500 rather than a panic.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(e) => {
            tracing::error!(error = %e, "response serialisation failed");
            (StatusCode::INTERNAL_SERVER_ERROR, br#"{"message":"Internal server error"}"#.to_vec())
        }
    };
    let mut response = Response::new(Body::Binary(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
