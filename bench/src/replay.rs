//! A latency model of AWS for the export (section 10). The emulator answers one request at a
//! time, so it cannot show what overlapping requests gain. This endpoint first *records* the
//! emulator's DynamoDB answers for one export (forwarding each request), then *replays* them:
//! every request is answered from the recording after the modelled latency, as many at once
//! as the client sends. S3 is modelled without storage: a multipart upload's calls are
//! answered after their latency, with made-up ids and ETags.
//!
//! The model (see `docs/performance.md`): a DynamoDB request takes [`DYNAMO_BASE`] plus
//! [`DYNAMO_PER_100KB`] per 100 KB of its answer (a 500-header Query page or a 100-chunk
//! BatchGetItem: 8 to 10 ms); an `UploadPart` takes [`UPLOAD_PER_8MIB`] per 8 MiB (150 ms for a
//! full part); the other S3 calls take [`S3_CALL`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use shared::config::{EXPORT_READ_AHEAD, EXPORT_UPLOADS_AHEAD};
use shared::AppState;

use crate::{call, check, median, raw_read, token, Res, Row, Settings, Target};

/// Fixed part of a DynamoDB request's latency.
pub const DYNAMO_BASE: Duration = Duration::from_millis(5);
/// Added per 100 KB of a DynamoDB answer.
pub const DYNAMO_PER_100KB: Duration = Duration::from_millis(1);
/// An `UploadPart` of 8 MiB (scaled by size).
pub const UPLOAD_PER_8MIB: Duration = Duration::from_millis(150);
/// Any other S3 call (create, complete, abort a multipart upload).
pub const S3_CALL: Duration = Duration::from_millis(30);

type Answer = (u16, Vec<(String, String)>, Bytes);

struct Inner {
    upstream: SocketAddr,
    replaying: AtomicBool,
    recorded: Mutex<HashMap<(String, Bytes), Answer>>,
    /// Requests in flight now, and the most at once.
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// Replayed requests the recording did not hold (forwarded instead).
    misses: AtomicUsize,
}

/// The recording and replaying endpoint.
pub struct Replay {
    /// Its URL (`http://127.0.0.1:<port>`), to point the SDK clients at.
    pub url: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Replay {
    /// Records from the emulator at `upstream` (`http://host:port`) until [`Replay::replay`].
    pub async fn start(upstream: &str) -> Res<Self> {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").trim_end_matches('/').parse()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Inner {
            upstream,
            replaying: AtomicBool::new(false),
            recorded: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        });
        let shared = inner.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let inner = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(inner.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { url, inner, server })
    }

    /// From now on, answers from the recording after the modelled latency.
    pub fn replay(&self) {
        self.inner.replaying.store(true, Ordering::SeqCst);
    }

    /// The most requests in flight at once since the last call (and resets it).
    pub fn take_peak(&self) -> usize {
        self.inner.peak.swap(0, Ordering::SeqCst)
    }

    /// Replayed requests that were not in the recording.
    pub fn misses(&self) -> usize {
        self.inner.misses.load(Ordering::SeqCst)
    }
}

fn answer((status, headers, body): Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(k), http::HeaderValue::try_from(v)) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// Forwards a request to the emulator and answers what it answered.
async fn forward(upstream: SocketAddr, parts: &http::request::Parts, body: Bytes) -> Res<Answer> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(parts.method.clone()).uri(parts.uri.clone());
    for (k, v) in &parts.headers {
        req = req.header(k, v);
    }
    let res = sender.send_request(req.body(Full::new(body))?).await?;
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .filter(|(k, _)| *k != "content-length" && *k != "transfer-encoding" && *k != "connection")
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    Ok((status, headers, res.into_body().collect().await?.to_bytes()))
}

/// A modelled S3 answer for the calls of an upload (`None`: not one of them).
fn s3_model(method: &Method, query: &str, bytes: usize) -> Option<(Duration, Answer)> {
    let xml =
        |body: &str| (200, vec![("content-type".into(), "application/xml".into())], Bytes::from(body.to_string()));
    let etag = |n: &str| (200, vec![("etag".to_string(), format!("\"replay-{n}\""))], Bytes::new());
    let part = |bytes: usize| UPLOAD_PER_8MIB.mul_f64(bytes as f64 / (8 << 20) as f64).max(S3_CALL);
    let number = query.split('&').find_map(|p| p.strip_prefix("partNumber=")).unwrap_or("0");
    Some(match *method {
        Method::POST if query.contains("uploads") => (S3_CALL, xml("<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>replay</UploadId></InitiateMultipartUploadResult>")),
        Method::POST if query.contains("uploadId") => (S3_CALL, xml("<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>\"replay\"</ETag></CompleteMultipartUploadResult>")),
        Method::PUT if query.contains("partNumber") => (part(bytes), etag(number)),
        Method::PUT => (part(bytes), etag("object")),
        Method::DELETE if query.contains("uploadId") => (S3_CALL, (204, Vec::new(), Bytes::new())),
        _ => return None,
    })
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.peak.fetch_max(now, Ordering::SeqCst);
    let reply = respond(&inner, req).await;
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(reply.unwrap_or_else(|e| answer((599, Vec::new(), Bytes::from(format!("replay: {e}"))))))
}

async fn respond(inner: &Inner, req: Request<Incoming>) -> Res<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(target) = target else {
        // S3: modelled, never stored.
        let query = parts.uri.query().unwrap_or("");
        if let Some((latency, reply)) = s3_model(&parts.method, query, body.len()) {
            tokio::time::sleep(latency).await;
            return Ok(answer(reply));
        }
        return Ok(answer(forward(inner.upstream, &parts, body).await?));
    };
    // Maps (keys, attribute values) are sent in any order: the key is the body's JSON re-encoded
    // with its maps sorted.
    let canonical = serde_json::from_slice::<serde_json::Value>(&body).map(|v| Bytes::from(v.to_string()));
    let key = (target, canonical.unwrap_or_else(|_| body.clone()));
    if inner.replaying.load(Ordering::SeqCst) {
        let known = inner.recorded.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        if let Some(reply) = known {
            let size = reply.2.len() as f64 / 100_000.0;
            tokio::time::sleep(DYNAMO_BASE + DYNAMO_PER_100KB.mul_f64(size)).await;
            return Ok(answer(reply));
        }
        if inner.misses.fetch_add(1, Ordering::SeqCst) < 2 {
            eprintln!("   not recorded: {} {}", key.0, String::from_utf8_lossy(&key.1[..key.1.len().min(300)]));
        }
    }
    let reply = forward(inner.upstream, &parts, body).await?;
    inner.recorded.lock().unwrap_or_else(|p| p.into_inner()).insert(key, reply.clone());
    Ok(answer(reply))
}

/// `state` with its DynamoDB and S3 clients sent to `url`, reading `ahead` groups ahead and
/// uploading `uploads` parts in the background.
fn through(state: &AppState, url: &str, ahead: usize, uploads: usize) -> AppState {
    let mut s = state.clone();
    s.config.export_read_ahead = ahead;
    s.config.export_uploads_ahead = uploads;
    let (dynamo, s3) = shared::aws::repointed(&state.dynamo, &state.s3, url);
    (s.dynamo, s.s3) = (dynamo.into(), s3.into());
    s
}

/// Section 10: the `jsonl` export of `org` under the latency model, sequential (nothing read
/// ahead, each part awaited) and pipelined (the defaults), against the same reads alone.
pub async fn latency_model(settings: &Settings, state: &Arc<AppState>, secret: &str, org: &str) -> Res<Vec<Row>> {
    let emulator = std::env::var("AWS_ENDPOINT_URL")?;
    let replay = Replay::start(&emulator).await?;
    let sequential = through(state, &replay.url, 0, 0);
    let pipelined = through(state, &replay.url, EXPORT_READ_AHEAD, EXPORT_UPLOADS_AHEAD);
    let tok = token(secret, org)?;
    let uri = "/api/training/export?format=jsonl&delivery=url";
    let export = |s: &AppState| {
        let s = s.clone();
        let tok = tok.clone();
        async move {
            let started = Instant::now();
            let (status, body) = call(&s, "GET", uri, &tok, None).await?;
            check(status, 303, &body, "export under the latency model")?;
            Res::Ok(started.elapsed().as_secs_f64())
        }
    };
    // Record: both exports make the same DynamoDB requests (the same pages and groups).
    export(&sequential).await?;
    raw_read(&sequential, org).await?;
    replay.replay();
    let count = settings.export_snapshots as f64;
    let (mut floor, mut seq, mut pipe, mut peak) = (vec![], vec![], vec![], vec![]);
    for run in 0..settings.runs {
        let started = Instant::now();
        raw_read(&sequential, org).await?;
        floor.push(count / started.elapsed().as_secs_f64());
        seq.push(count / export(&sequential).await?);
        replay.take_peak();
        pipe.push(count / export(&pipelined).await?);
        peak.push(replay.take_peak() as f64);
        eprintln!(
            "   run {}: reads alone {:.0}/s, sequential {:.0}/s, pipelined {:.0}/s ({} requests at once at most)",
            run + 1,
            floor[run],
            seq[run],
            pipe[run],
            peak[run]
        );
    }
    if replay.misses() > 0 {
        return Err(format!("{} replayed requests were not recorded", replay.misses()).into());
    }
    let (floor, seq, pipe) = (median(floor), median(seq), median(pipe));
    let model = "DynamoDB 5 ms + 1 ms per 100 KB answered, UploadPart 150 ms per 8 MiB, other S3 calls 30 ms";
    let row = |measure: String, ours, baseline, target, note: String| Row {
        section: "10. Pipelined export",
        measure,
        unit: "snapshots/s",
        ours,
        baseline: Some(baseline),
        target: Some(target),
        note,
    };
    Ok(vec![
        row(
            format!("`jsonl`, {count} snapshots: pipelined vs sequential"),
            pipe,
            seq,
            Target::AtLeast(2.0),
            format!("replayed under the latency model ({model}), {} requests at once at most", median(peak)),
        ),
        row(
            "the same: pipelined vs the reads alone (Query + BatchGetItem, one at a time)".into(),
            pipe,
            floor,
            Target::AtLeast(0.9),
            "the export's own CPU runs on this machine's core".into(),
        ),
    ])
}
