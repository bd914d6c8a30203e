//! How an HTTP function's answer is handed to Lambda (and so to API Gateway).
//!
//! `lambda_http::run` turns a handler's `Response<Body>` into the gateway's JSON through
//! `lambda_http::IntoResponse`, whose implementation for `Response<Body>` *decodes* every
//! text-like body (`text/*`, `application/json`, `+json`, ...) with `encoding_rs`. Decoding
//! drops a leading byte order mark, so a CSV export (`text/csv; charset=utf-8`, starting with
//! EF BB BF) would reach the client without the BOM docs/exports.md promises, while the local server
//! sends it. [`LambdaReply`] converts without decoding:
//!
//! - `Body::Text` and `Body::Empty` stay as they are;
//! - `Body::Binary` with a text-like content type (the rule `lambda_http` uses), a UTF-8 (or
//!   no) charset, valid UTF-8 bytes and no leading BOM becomes `Body::Text`: JSON stays a plain
//!   text body (`isBase64Encoded: false`);
//! - any other `Body::Binary` stays binary: Lambda sends it base64 (`isBase64Encoded: true`)
//!   and API Gateway decodes it to the exact bytes, BOM included.
//!
//! Every HTTP function's `main.rs` wraps its handler's answer in [`LambdaReply`].

use std::future::Future;
use std::pin::Pin;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;
use lambda_http::{Body, IntoResponse, Response};

/// The UTF-8 byte order mark.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Content-type prefixes `lambda_http` treats as text (its `TEXT_ENCODING_PREFIXES`).
const TEXT_PREFIXES: [&str; 5] =
    ["text", "application/json", "application/javascript", "application/xml", "application/yaml"];
/// Media-type suffixes `lambda_http` treats as text (its `TEXT_ENCODING_SUFFIXES`).
const TEXT_SUFFIXES: [&str; 3] = ["+xml", "+yaml", "+json"];
/// The header with which a response may ask `lambda_http` to treat its body as text.
const X_LAMBDA_HTTP_CONTENT_ENCODING: &str = "x-lambda-http-content-encoding";

/// A handler's answer, converted for Lambda without re-decoding its body (see the module docs).
#[derive(Debug)]
pub struct LambdaReply(pub Response<Body>);

impl IntoResponse for LambdaReply {
    fn into_response(self) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        Box::pin(std::future::ready(for_gateway(self.0)))
    }
}

/// The response with the body variant Lambda should send: see the module docs.
pub fn for_gateway(response: Response<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let body = match body {
        Body::Binary(bytes) if is_text(&parts.headers) && !bytes.starts_with(UTF8_BOM) => {
            match String::from_utf8(bytes) {
                Ok(text) => Body::Text(text),
                Err(e) => Body::Binary(e.into_bytes()),
            }
        }
        other => other,
    };
    Response::from_parts(parts, body)
}

/// Whether `lambda_http` would treat a body with these headers as text, and its charset (if
/// any) is UTF-8, so that sending the bytes as a JSON string changes nothing.
fn is_text(headers: &HeaderMap) -> bool {
    if headers.contains_key(CONTENT_ENCODING) {
        return false;
    }
    match headers.get(CONTENT_TYPE) {
        // lambda_http passes a body without a content type through as UTF-8 text.
        None => true,
        Some(value) => {
            let asked = headers.get(X_LAMBDA_HTTP_CONTENT_ENCODING).is_some_and(|v| v == "text");
            let content_type = value.to_str().unwrap_or_default();
            (asked || is_text_type(content_type)) && is_utf8_charset(content_type)
        }
    }
}

/// Whether `lambda_http` treats a response of this content type as text: its prefixes (on the
/// whole value) and suffixes (on the media type). A UTF-8 text body of such a type without a
/// leading BOM is sent as a JSON string (escaped); any other body base64 encoded.
pub fn is_text_type(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    TEXT_PREFIXES.iter().any(|p| content_type.starts_with(p)) || TEXT_SUFFIXES.iter().any(|s| mime.ends_with(s))
}

/// Whether the content type's charset, if it names one, is UTF-8.
fn is_utf8_charset(content_type: &str) -> bool {
    let charsets = content_type.split(';').skip(1).filter_map(|p| p.split_once('='));
    charsets.filter(|(k, _)| k.trim().eq_ignore_ascii_case("charset")).all(|(_, v)| {
        let v = v.trim().trim_matches('"');
        v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn response(content_type: Option<&str>, body: Body) -> Response<Body> {
        let mut r = Response::new(body);
        if let Some(ct) = content_type {
            r.headers_mut().insert(CONTENT_TYPE, ct.parse().unwrap());
        }
        r
    }

    async fn converted(r: Response<Body>) -> Body {
        LambdaReply(r).into_response().await.into_body()
    }

    const CSV: &[u8] = b"\xEF\xBB\xBFconvoId,userName\r\nconvo-1,Jane\r\n";

    #[tokio::test]
    async fn csv_with_a_bom_stays_binary_with_every_byte() {
        let body = converted(response(Some("text/csv; charset=utf-8"), Body::Binary(CSV.to_vec()))).await;
        assert_eq!(body, Body::Binary(CSV.to_vec()));
        // Lambda sends a binary body base64 encoded (isBase64Encoded: true); API Gateway decodes it.
        let wire: String = serde_json::from_value(serde_json::to_value(&body).unwrap()).unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(wire).unwrap(), CSV);
    }

    #[tokio::test]
    async fn lambda_http_alone_drops_the_bom() {
        // What LambdaReply is for: lambda_http's own conversion decodes text and loses the BOM.
        let r = response(Some("text/csv; charset=utf-8"), Body::Binary(CSV.to_vec()));
        let body = IntoResponse::into_response(r).await.into_body();
        assert_eq!(body, Body::Text(String::from_utf8(CSV[3..].to_vec()).unwrap()));
    }

    #[tokio::test]
    async fn json_becomes_a_text_body() {
        let json = r#"{"success":true,"data":{"x":"é ☃ \u00e9"}}"#.as_bytes().to_vec();
        let expected = String::from_utf8(json.clone()).unwrap();
        for ct in ["application/json", "application/json; charset=utf-8", "application/problem+json", "text/plain"] {
            let body = converted(response(Some(ct), Body::Binary(json.clone()))).await;
            assert_eq!(body, Body::Text(expected.clone()), "{ct}");
        }
        // As lambda_http does, a body without a content type is text.
        assert_eq!(converted(response(None, Body::Binary(json.clone()))).await, Body::Text(expected));
    }

    #[tokio::test]
    async fn ndjson_and_other_binary_types_stay_binary() {
        let lines = b"{\"a\":1}\n{\"a\":2}\n".to_vec();
        for ct in ["application/x-ndjson", "application/octet-stream", "image/png"] {
            let body = converted(response(Some(ct), Body::Binary(lines.clone()))).await;
            assert_eq!(body, Body::Binary(lines.clone()), "{ct}");
        }
    }

    #[tokio::test]
    async fn bytes_that_would_change_as_text_stay_binary() {
        // Not UTF-8.
        let latin1 = b"caf\xe9".to_vec();
        assert_eq!(converted(response(Some("text/plain"), Body::Binary(latin1.clone()))).await, Body::Binary(latin1));
        // Another charset.
        let utf16 = b"\x00a\x00b".to_vec();
        let body = converted(response(Some("text/plain; charset=utf-16"), Body::Binary(utf16.clone()))).await;
        assert_eq!(body, Body::Binary(utf16));
        // A content encoding (compressed bytes).
        let mut r = response(Some("application/json"), Body::Binary(b"{}".to_vec()));
        r.headers_mut().insert(CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(converted(r).await, Body::Binary(b"{}".to_vec()));
        // JSON with a BOM keeps it.
        let json = b"\xEF\xBB\xBF{}".to_vec();
        assert_eq!(converted(response(Some("application/json"), Body::Binary(json.clone()))).await, Body::Binary(json));
    }

    #[tokio::test]
    async fn text_empty_and_headers_are_kept() {
        let mut r = response(Some("text/csv; charset=utf-8"), Body::Text("\u{feff}a,b\r\n".into()));
        r.headers_mut().insert("content-disposition", "attachment; filename=\"x.csv\"".parse().unwrap());
        *r.status_mut() = http::StatusCode::CREATED;
        let out = LambdaReply(r).into_response().await;
        assert_eq!(out.status(), http::StatusCode::CREATED);
        assert_eq!(out.headers()["content-disposition"], "attachment; filename=\"x.csv\"");
        assert_eq!(out.into_body(), Body::Text("\u{feff}a,b\r\n".into()));
        assert_eq!(converted(response(Some("application/json"), Body::Empty)).await, Body::Empty);
        let charset_utf8 = response(Some("text/plain; Charset=\"UTF-8\""), Body::Binary(b"ok".to_vec()));
        assert_eq!(converted(charset_utf8).await, Body::Text("ok".into()));
    }
}
