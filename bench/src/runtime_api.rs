//! A local Lambda Runtime API (the part a function's runtime client uses): it hands out queued
//! events on `GET /2018-06-01/runtime/invocation/next` and records what the function posts to
//! `/response` or `/error`, with the time it arrived.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What a function posted for one invocation.
#[derive(Debug)]
pub struct Posted {
    /// The invocation's request id (`init` for an initialization error).
    pub request_id: String,
    /// The response (or error) body.
    pub body: Bytes,
    /// Posted to `/error` or `/init/error`.
    pub error: bool,
    /// When it arrived.
    pub at: Instant,
}

struct Inner {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    posted: mpsc::UnboundedSender<Posted>,
    first_poll: Mutex<Option<Instant>>,
    next_id: Mutex<u64>,
}

/// One Runtime API endpoint, for one function process at a time.
pub struct RuntimeApi {
    /// Where it listens (`AWS_LAMBDA_RUNTIME_API` is this address).
    pub addr: SocketAddr,
    events: mpsc::UnboundedSender<Vec<u8>>,
    posted: mpsc::UnboundedReceiver<Posted>,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Listens on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let (posted_tx, posted) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            events: tokio::sync::Mutex::new(events_rx),
            posted: posted_tx,
            first_poll: Mutex::new(None),
            next_id: Mutex::new(0),
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
        Ok(Self { addr, events, posted, inner, server })
    }

    /// Queues an event for the next `/invocation/next`.
    pub fn push(&self, event: &serde_json::Value) {
        let _ = self.events.send(event.to_string().into_bytes());
    }

    /// The next posted response or error.
    pub async fn posted(&mut self) -> Option<Posted> {
        self.posted.recv().await
    }

    /// When the function first asked for an event (its initialization was done).
    pub fn first_poll(&self) -> Option<Instant> {
        *self.inner.first_poll.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let reply = |status: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::from_static(br#"{"status":"OK"}"#)));
        *r.status_mut() = status;
        r
    };
    if req.method() == Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        inner.first_poll.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(Instant::now);
        let event = inner.events.lock().await.recv().await;
        let Some(event) = event else {
            // No more events: the function waits, as it would in Lambda, until it is stopped.
            return futures::future::pending().await;
        };
        let id = {
            let mut n = inner.next_id.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            format!("bench-{n}")
        };
        let deadline = chrono::Utc::now().timestamp_millis() + 900_000;
        let mut r = Response::new(Full::new(Bytes::from(event)));
        let h = r.headers_mut();
        h.insert("content-type", http::HeaderValue::from_static("application/json"));
        if let Ok(v) = http::HeaderValue::from_str(&id) {
            h.insert("lambda-runtime-aws-request-id", v);
        }
        h.insert("lambda-runtime-deadline-ms", http::HeaderValue::from(deadline));
        h.insert(
            "lambda-runtime-invoked-function-arn",
            http::HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:bench"),
        );
        h.insert(
            "lambda-runtime-trace-id",
            http::HeaderValue::from_static("Root=1-00000000-000000000000000000000000;Sampled=0"),
        );
        return Ok(r);
    }
    if req.method() == Method::POST {
        let at = Instant::now();
        let target = if path == "/2018-06-01/runtime/init/error" {
            Some(("init".to_string(), true))
        } else {
            path.strip_prefix("/2018-06-01/runtime/invocation/").and_then(|rest| {
                let (id, kind) = rest.split_once('/')?;
                Some((id.to_string(), kind == "error"))
            })
        };
        if let Some((request_id, error)) = target {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let _ = inner.posted.send(Posted { request_id, body, error, at });
            return Ok(reply(StatusCode::ACCEPTED));
        }
    }
    Ok(reply(StatusCode::NOT_FOUND))
}
