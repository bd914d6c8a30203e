//! Request parsing and response building shared by every handler.

use std::future::Future;
use std::time::Instant;

use http::{header, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{de::DeserializeOwned, Serialize};

use crate::auth::Principal;
use crate::error::{ApiError, Envelope, ErrorKind};
use crate::keys::Org;
use crate::AppState;

pub use crate::json::json_response;

/// The success envelope `{success: true, message, data}` shared by both contracts.
#[derive(Debug, Serialize)]
pub struct Success<'a, T: Serialize> {
    success: bool,
    message: &'a str,
    data: T,
}

impl<'a, T: Serialize> Success<'a, T> {
    /// `data` with `message`.
    pub fn new(message: &'a str, data: T) -> Self {
        Self { success: true, message, data }
    }
}

/// A `status` answer of `data` in the success envelope.
pub fn success<T: Serialize>(status: StatusCode, message: &str, data: &T) -> Response<Body> {
    json_response(status, &Success::new(message, data))
}

/// `response` with the header `name: value`; our values (ids, timestamps) are always valid, and
/// one that were not would be left out rather than fail the answer.
pub fn with_header(mut response: Response<Body>, name: header::HeaderName, value: &str) -> Response<Body> {
    if let Ok(value) = http::HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// One page of a list route: `{success: true, message, data, nextCursor}` (`null` on the last).
#[derive(Debug, Serialize)]
pub struct Page<T: Serialize> {
    success: bool,
    message: &'static str,
    data: Vec<T>,
    #[serde(rename = "nextCursor")]
    next_cursor: Option<String>,
}

impl<T: Serialize> Page<T> {
    /// A page of `data`, continued by `next_cursor`.
    pub fn new(message: &'static str, data: Vec<T>, next_cursor: Option<String>) -> Self {
        Self { success: true, message, data, next_cursor }
    }

    /// The `200` answer.
    pub fn into_response(self) -> Response<Body> {
        json_response(StatusCode::OK, &self)
    }
}

/// The `cursor` query parameter of a list that pages by id: the id to continue after, from a
/// cursor this deployment signed for `org` and `scope` (400 otherwise); `None` on the first page.
pub fn cursor_id(state: &AppState, req: &Request, org: &Org, scope: &str) -> Result<Option<String>, ApiError> {
    let Some(cursor) = query_param(req, "cursor") else { return Ok(None) };
    let key = state.cursors.decode(org, scope, cursor)?;
    key.get("id").and_then(|v| v.as_s().ok()).cloned().map(Some).ok_or_else(crate::cursor::invalid)
}

/// The `nextCursor` of a list that pages by id: signed for `org` and `scope`; `None` without a next id.
pub fn next_cursor_id(
    state: &AppState,
    org: &Org,
    scope: &str,
    next: Option<String>,
) -> Result<Option<String>, ApiError> {
    let key = next.map(|id| {
        std::collections::HashMap::from([("id".to_string(), aws_sdk_dynamodb::types::AttributeValue::S(id))])
    });
    state.cursors.encode(org, scope, key.as_ref())
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
            let answer = f(principal, req).await.unwrap_or_else(|e| {
                // The one place a route's fault is logged, with its cause.
                e.log();
                e.into_response(envelope)
            });
            (Some(org), answer)
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
        None => return Err(ApiError::invalid("body", "is empty; a JSON object is required")),
        // serde would also decode a struct from a positional array; the API takes objects only.
        Some(b'{') => {}
        Some(_) => return Err(ApiError::invalid("body", "must be a JSON object")),
    }
    match serde_json::from_slice(bytes) {
        Ok(parsed) => Ok(parsed),
        Err(e) if e.is_syntax() || e.is_eof() => Err(ApiError::invalid("body", format!("is not valid JSON ({e})"))),
        Err(_) => Err(body_issues::<T>(bytes)),
    }
}

/// Most problems one 400 lists about a body.
const MAX_BODY_ISSUES: usize = 20;

/// Every problem of a well-formed JSON body that does not fit `T`, each named by its path
/// (`messages[2].from: unknown variant ...`), so one answer lists them all, not only the first:
/// an unknown member is dropped, and a wrong one replaced by a value of a fitting type
/// (`""`, `0`, `false`, `[]`, `{}` or the first variant the error names) before decoding again.
fn body_issues<T: DeserializeOwned>(bytes: &[u8]) -> ApiError {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let mut issues = Vec::<String>::new();
    while issues.len() < MAX_BODY_ISSUES {
        let Err(e) = serde_path_to_error::deserialize::<_, T>(&value) else { break };
        let path = e.path().to_string();
        let segments: Vec<_> = e.path().iter().cloned().collect();
        let inner = e.into_inner().to_string();
        issues.push(if path == "." { inner.clone() } else { format!("{path}: {inner}") });
        if !inner.starts_with("unknown field") && replace_member::<T>(&mut value, &segments, &path, &inner) {
            continue;
        }
        // Unknown, or nothing of a fitting type found: drop it (a required member then stops here).
        if inner.starts_with("missing field") || !set_member(&mut value, &segments, None) {
            break;
        }
    }
    ApiError::validation_issues(format!("Invalid request body: {}", issues.join("; ")), issues)
}

/// Replaces the member at `path` with the first stand-in that decoding gets past.
fn replace_member<T: DeserializeOwned>(
    value: &mut serde_json::Value,
    path: &[serde_path_to_error::Segment],
    here: &str,
    error: &str,
) -> bool {
    use serde_json::json;
    let variant = error.split("expected one of `").nth(1).and_then(|rest| rest.split('`').next()).map(|v| json!(v));
    let candidates = variant.into_iter().chain([json!(""), json!(0), json!(false), json!([]), json!({})]);
    for candidate in candidates {
        let mut attempt = value.clone();
        if !set_member(&mut attempt, path, Some(candidate)) {
            return false;
        }
        let stuck =
            serde_path_to_error::deserialize::<_, T>(&attempt).err().is_some_and(|e| e.path().to_string() == here);
        if !stuck {
            *value = attempt;
            return true;
        }
    }
    false
}

/// Sets (or, with `None`, removes) the object member at `path`; `false` when there is none.
/// Array elements are never removed: that would renumber the ones after them.
fn set_member(
    value: &mut serde_json::Value,
    path: &[serde_path_to_error::Segment],
    new: Option<serde_json::Value>,
) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else { return false };
    let mut at = value;
    for segment in parents {
        let next = match (segment, at) {
            (Segment::Map { key }, serde_json::Value::Object(map)) => map.get_mut(key),
            (Segment::Seq { index }, serde_json::Value::Array(list)) => list.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        at = next;
    }
    match (last, at, new) {
        (Segment::Map { key }, serde_json::Value::Object(map), None) => map.remove(key).is_some(),
        (Segment::Map { key }, serde_json::Value::Object(map), Some(v)) => map.insert(key.clone(), v).is_some(),
        (Segment::Seq { index }, serde_json::Value::Array(list), Some(v)) if *index < list.len() => {
            list[*index] = v;
            true
        }
        _ => false,
    }
}

/// A path parameter that must be a valid id (400 otherwise).
pub fn path_id(req: &Request, name: &str) -> Result<String, ApiError> {
    let params = req.path_parameters_ref();
    let value = params.and_then(|p| p.first(name)).unwrap_or_default();
    if crate::ids::is_valid_id(value) {
        Ok(value.to_string())
    } else {
        Err(ApiError::validation_issues(
            format!("Invalid path parameter `{name}`"),
            vec![format!(
                "`{name}` must be 1-{} characters of letters, digits, '-', '_', '.', ':' or '@'",
                crate::ids::MAX_ID_LEN
            )],
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
            _ => Err(ApiError::invalid("limit", format!("must be an integer from 1 to {max}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        from: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        contact_id: String,
        limit: Option<u32>,
        items: Option<Vec<Inner>>,
    }

    fn issues(body: &str) -> Vec<String> {
        let headers =
            http::HeaderMap::from_iter([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))]);
        let req = crate::gateway::request(crate::gateway::Call {
            method: "POST",
            route_key: "POST /x",
            raw_path: "/x",
            raw_query: "",
            headers: &headers,
            path_params: &[],
            body: body.as_bytes(),
        })
        .unwrap();
        let e = read_json::<Body>(&req, 1 << 20).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        e.issues
    }

    #[test]
    fn a_body_that_does_not_fit_lists_every_problem_by_its_field() {
        let got = issues(
            r#"{"contactId": 5, "limit": "ten", "colour": "red", "size": 2, "items": [{"from": "a"}, {"from": 1}]}"#,
        );
        for field in ["contactId", "limit", "colour", "size", "items[1].from"] {
            assert!(
                got.iter().any(|i| i.starts_with(&format!("{field}: ")) || i.contains(&format!("`{field}`"))),
                "{field} in {got:?}"
            );
        }
        assert_eq!(issues(r#"{"limit": 1}"#), vec!["missing field `contactId`".to_string()]);
        assert_eq!(issues(r#"{"contactId": 1}"#).len(), 1, "a wrong field is not also missing");
        assert_eq!(issues(r#"{"contactId": "k", "items": [{"from": 7}, {"from": []}]}"#).len(), 2);
        assert!(issues("{").iter().all(|i| i.starts_with("body: ")));
    }
}
