//! The local API: every route of `template.yaml` on loopback, for `make run` and tests.
//!
//! Each HTTP request is turned into an API Gateway HTTP API (payload 2.0) event and then into
//! a `lambda_http::Request` by `lambda_http`'s own conversion, exactly as in Lambda, and handed
//! to the handler the function's binary calls.

use std::convert::Infallible;

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
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
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let e = ApiError::new(ErrorKind::PayloadTooLarge, "Request body exceeds the gateway's 10 MB limit");
            return to_hyper(e.into_response(envelope));
        }
        Err(_) => return to_hyper(ApiError::invalid("body", "could not be read").into_response(envelope)),
    };
    let method = parts.method.as_str();
    if let Some(function) = path.strip_prefix(INVOKE_PREFIX) {
        return invoke_background(state, method, function, &body).await;
    }
    let (route, params) = match routes::find(method, &path) {
        Ok(found) => found,
        Err(true) => {
            let e = ApiError::new(ErrorKind::MethodNotAllowed, format!("{method} is not supported on {path}"));
            let mut response = to_hyper(e.into_response(envelope));
            // The methods of the most specific matching template, the resource the path is (as
            // the spec sees it): `/agents/a/convos/export` is the export (GET), although a PUT
            // there would reach `/agents/{agentId}/convos/{convoId}`.
            let matching: Vec<(&routes::Route, usize)> =
                routes::ROUTES.iter().filter_map(|r| routes::match_path(r.path, &path).map(|p| (r, p.len()))).collect();
            let fewest = matching.iter().map(|(_, n)| *n).min().unwrap_or(0);
            let allowed: Vec<&str> = matching.iter().filter(|(_, n)| *n == fewest).map(|(r, _)| r.method).collect();
            if let Ok(v) = http::HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(http::header::ALLOW, v);
            }
            return response;
        }
        Err(false) => {
            return to_hyper(ApiError::not_found(format!("No route for {method} {path}")).into_response(envelope))
        }
    };
    let route_key = format!("{} {}", route.method, route.path);
    let query = parts.uri.query().unwrap_or("");
    let call = shared::gateway::Call {
        method,
        route_key: &route_key,
        raw_path: &path,
        raw_query: query,
        headers: &parts.headers,
        path_params: &params,
        body: &body,
    };
    let request = match shared::gateway::request(call) {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::internal("local gateway event", e);
            e.log();
            return to_hyper(e.into_response(route.envelope));
        }
    };
    to_hyper((route.handler)(state, request).await)
}

/// Local-only path that runs a function without a route with the event in the body, as
/// `sam local invoke` would: `POST /_local/invoke/scheduled-export` or `.../export-worker`.
pub const INVOKE_PREFIX: &str = "/_local/invoke/";

fn json(status: u16, value: &impl serde::Serialize) -> hyper::Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// The body of a local invocation that failed: `{message}`.
#[derive(serde::Serialize)]
struct Failure {
    message: String,
}

fn failure(status: u16, message: String) -> hyper::Response<Full<Bytes>> {
    json(status, &Failure { message })
}

/// Runs a background function (`routes::BACKGROUND`) with `event`; jobs it dispatches go to the
/// local worker like every other job.
async fn invoke_background(
    state: &AppState,
    method: &str,
    function: &str,
    event: &[u8],
) -> hyper::Response<Full<Bytes>> {
    if method != "POST" {
        return failure(405, "POST the event".into());
    }
    let result = match function {
        "scheduled-export" => match serde_json::from_slice(event) {
            Ok(event) => shared::jobs::schedule::run(state, event).await.map(|summary| json(200, &summary)),
            Err(e) => return failure(400, format!("not a scheduled-export event: {e}")),
        },
        "export-worker" => match serde_json::from_slice::<shared::jobs::WorkerEvent>(event) {
            Ok(event) => {
                let budget = state.config.export_job_budget.unwrap_or(std::time::Duration::from_secs(840));
                let options = shared::jobs::worker::Options { budget, lifetime: None, fault_after_parts: None };
                shared::jobs::worker::run_event(state, &event, options).await.map(|answer| json(200, &answer))
            }
            Err(e) => return failure(400, format!("not an export-worker event: {e}")),
        },
        _ => return failure(404, format!("no background function {function}")),
    };
    result.unwrap_or_else(|e| {
        e.log();
        failure(e.kind.status().as_u16(), e.message)
    })
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
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
