//! The local API: every route of `template.yaml` on loopback, for `make run` and tests.
//!
//! Each HTTP request is turned into an API Gateway HTTP API (payload 2.0) event and then into
//! a `lambda_http::Request` by `lambda_http`'s own conversion, exactly as in Lambda, and handed
//! to the handler the function's binary calls.

use std::convert::Infallible;

use base64::Engine;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use serde_json::{json, Map, Value};
use shared::error::{ApiError, Envelope, ErrorKind};
use shared::{routes, AppState};
use tokio::net::TcpListener;

/// API Gateway's own request size limit (10 MB); the handlers enforce the smaller API limit.
pub const GATEWAY_MAX_BODY: usize = 10 * 1024 * 1024;

/// Organization of the development token.
pub const DEV_ORG: &str = "65a0e0e0e0e0e0e0e0e0e0e0";

/// Which envelope an unrouted path answers with: Tether's under `/api/`, else Convocore's.
fn envelope_for(path: &str) -> Envelope {
    if path.starts_with("/api/") {
        Envelope::Tether
    } else {
        Envelope::Convocore
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds the payload 2.0 event API Gateway would send for this request.
pub fn gateway_event(
    method: &str,
    route_key: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &http::HeaderMap,
    path_params: &[(String, String)],
    body: &[u8],
) -> Value {
    let mut hdrs = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match hdrs.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                hdrs.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let mut query = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")));
        match query.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query.insert(k, Value::String(v));
            }
        }
    }
    let params: Map<String, Value> =
        path_params.iter().map(|(k, v)| (k.clone(), Value::String(percent_decode(v)))).collect();
    let (body, base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::String(text.to_string()), false),
        Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(body)), true),
    };
    let now = chrono::Utc::now();
    let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": hdrs,
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
        "pathParameters": if params.is_empty() { Value::Null } else { Value::Object(params) },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get(http::header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": format!("local-{}", now.timestamp_nanos_opt().unwrap_or_default()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "body": body,
        "isBase64Encoded": base64,
    })
}

fn to_hyper(response: lambda_http::Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// Serves one request: route it, shape it as API Gateway does, call the handler.
pub async fn dispatch(state: &AppState, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let envelope = envelope_for(&path);
    let body = match Limited::new(body, GATEWAY_MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = ApiError::new(ErrorKind::PayloadTooLarge, "Request body exceeds the gateway's 10 MB limit");
            return to_hyper(e.into_response(envelope));
        }
    };
    let method = parts.method.as_str();
    let (route, params) = match routes::find(method, &path) {
        Ok(found) => found,
        Err(true) => {
            let e = ApiError::new(ErrorKind::MethodNotAllowed, format!("{method} is not supported on {path}"));
            return to_hyper(e.into_response(envelope));
        }
        Err(false) => return to_hyper(ApiError::not_found(format!("No route for {method} {path}")).into_response(envelope)),
    };
    let route_key = format!("{} {}", route.method, route.path);
    let event = gateway_event(method, &route_key, &path, parts.uri.query().unwrap_or(""), &parts.headers, &params, &body);
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => return to_hyper(ApiError::internal("local gateway event", e).into_response(route.envelope)),
    };
    to_hyper((route.handler)(state, request).await)
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(dispatch(&state, req).await) }
                    });
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(error = %e, "connection closed");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
}
