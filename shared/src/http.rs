//! Request parsing and response building shared by every handler.

use std::future::Future;
use std::time::Instant;

use http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;

use crate::auth::Principal;
use crate::error::{ApiError, Envelope, ErrorKind};
use crate::AppState;

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

/// The success envelope `{success: true, message, data}` shared by both contracts.
pub fn success<T: Serialize>(status: StatusCode, message: &str, data: &T) -> Response<Body> {
    json_response(status, &json!({ "success": true, "message": message, "data": data }))
}

/// Runs a route: authenticates the caller, runs `f`, and renders any error in `envelope`.
///
/// Every handler goes through here, so no route can forget authentication, and every
/// request is logged once with its outcome (never with its token or body).
pub async fn handle<F, Fut>(state: &AppState, req: Request, envelope: Envelope, f: F) -> Response<Body>
where
    F: FnOnce(Principal, Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.raw_http_path().to_string();
    let (org, response) = match state.auth.authenticate(req.headers()) {
        Err(e) => (None, e.into_response(envelope)),
        Ok(principal) => {
            let org = principal.organization_id.clone();
            (Some(org), f(principal, req).await.unwrap_or_else(|e| e.into_response(envelope)))
        }
    };
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        organization = org.as_deref().unwrap_or("-"),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Parses a JSON body after checking its size (413) and content type (415).
pub fn read_json<T: DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > max_bytes {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("Request body is {} bytes; the limit is {max_bytes}", bytes.len()),
        ));
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" && !mime.ends_with("+json") {
        return Err(ApiError::new(ErrorKind::UnsupportedMediaType, "Content-Type must be application/json"));
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::validation("Request body is empty; a JSON object is required")),
        // serde would also decode a struct from a positional array; the API takes objects only.
        Some(b'{') => {}
        Some(_) => return Err(ApiError::validation("Request body must be a JSON object")),
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::validation(format!("Invalid JSON body: {e}")))
}

/// Longest id accepted in a path.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is usable as a key part: 1 to 128 characters of letters, digits and `-_.:@`.
///
/// `#` is excluded because it separates key parts; so are spaces and control characters.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.bytes().all(|b| b == b'.') // `.` and `..` are path segments, not ids
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

/// A path parameter that must be a valid id (400 otherwise).
pub fn path_id(req: &Request, name: &str) -> Result<String, ApiError> {
    let params = req.path_parameters_ref();
    let value = params.and_then(|p| p.first(name)).unwrap_or_default();
    if is_valid_id(value) {
        Ok(value.to_string())
    } else {
        Err(ApiError::validation_issues(
            format!("Invalid path parameter `{name}`"),
            vec![format!("`{name}` must be 1-{MAX_ID_LEN} characters of letters, digits, '-', '_', '.', ':' or '@'")],
        ))
    }
}

/// The first value of a query parameter, if present and not empty.
pub fn query_param<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query_string_parameters_ref().and_then(|q| q.first(name)).filter(|v| !v.is_empty())
}

/// Every value of a repeatable query parameter.
pub fn query_params<'a>(req: &'a Request, name: &str) -> Vec<&'a str> {
    req.query_string_parameters_ref().and_then(|q| q.all(name)).unwrap_or_default()
}

/// Parses `limit` (default `default`, between 1 and `max`).
pub fn limit_param(req: &Request, default: usize, max: usize) -> Result<usize, ApiError> {
    match query_param(req, "limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::validation(format!("`limit` must be an integer from 1 to {max}"))),
        },
    }
}
