//! Faults: DynamoDB throttling, S3 failing in the middle of an export, and the emulator
//! stopping in the middle of a request.
//!
//! Faults are injected outside the product: a small HTTP proxy between the AWS SDK and the
//! emulator answers chosen calls with AWS's own error answers (or holds them), and the
//! "emulator stopped" tests freeze a dedicated emulator process with SIGSTOP. The product runs
//! its real code paths and its real retry configuration (`shared::aws`).

mod support;

use shared::keys::Org;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use serde_json::{json, Value};
use shared::aws::MAX_ATTEMPTS;
use shared::jobs::worker::Outcome;
use shared::AppState;
use support::*;

// ---------------------------------------------------------------------------------------------
// The fault-injecting proxy.

/// One AWS call as the proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// DynamoDB's operation (`X-Amz-Target`), or the S3 operation told by method and query.
    op: String,
    /// Path and query.
    uri: String,
    /// Body size.
    bytes: usize,
}

impl Seen {
    /// The S3 part number of an `UploadPart`.
    fn part_number(&self) -> Option<u32> {
        query_value(&self.uri, "partNumber")?.parse().ok()
    }
}

/// What the proxy does with a call.
enum Action {
    /// Pass it to the emulator.
    Forward,
    /// Answer it instead of the emulator.
    Respond { status: u16, content_type: &'static str, body: String },
}

type Rule = Arc<dyn Fn(&Seen, &[u8]) -> Action + Send + Sync>;

/// An HTTP proxy in front of an emulator that applies a [`Rule`] to every call.
struct Proxy {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    rule: Arc<Mutex<Rule>>,
    task: tokio::task::JoinHandle<()>,
}

fn query_value<'a>(uri: &'a str, name: &str) -> Option<&'a str> {
    let query = uri.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Names the AWS operation of a request.
fn operation(parts: &http::request::Parts) -> String {
    if let Some(target) = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let uri = parts.uri.to_string();
    let has = |name: &str| query_value(&uri, name).is_some();
    let op = match (parts.method.as_str(), has("uploadId"), has("uploads"), has("partNumber")) {
        ("PUT", true, _, true) => "UploadPart",
        ("POST", false, true, _) => "CreateMultipartUpload",
        ("POST", true, _, _) => "CompleteMultipartUpload",
        ("DELETE", true, _, _) => "AbortMultipartUpload",
        ("GET", false, true, _) => "ListMultipartUploads",
        ("GET", true, _, _) => "ListParts",
        ("PUT", false, false, _) => "PutObject",
        (m, ..) => return format!("S3 {m}"),
    };
    op.to_string()
}

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> http::Response<BoxBody<Bytes, hyper::Error>> {
    let mut r = http::Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_str(content_type).expect("content type"));
    r
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `upstream` (`http://host:port`).
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let addr: SocketAddr = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Arc::new(|_: &Seen, _: &[u8]| Action::Forward)));
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let upstream = upstream.trim_end_matches('/').to_string();
        let (seen_, rule_) = (seen.clone(), rule.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (seen, rule, client, upstream) = (seen_.clone(), rule_.clone(), client.clone(), upstream.clone());
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (seen, rule, client, upstream) = (seen.clone(), rule.clone(), client.clone(), upstream.clone());
                    async move {
                        let (mut parts, body) = req.into_parts();
                        let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
                            return Ok::<_, Infallible>(full(400, "text/plain", "unreadable body"));
                        };
                        let call = Seen { op: operation(&parts), uri: parts.uri.to_string(), bytes: body.len() };
                        let rule = rule.lock().expect("rule").clone();
                        let action = rule(&call, &body);
                        seen.lock().expect("seen").push(call);
                        match action {
                            Action::Respond { status, content_type, body } => Ok(full(status, content_type, body)),
                            Action::Forward => {
                                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
                                parts.uri = format!("{upstream}{path}").parse().expect("upstream uri");
                                // The body is forwarded whole, with its length.
                                parts.headers.remove(http::header::TRANSFER_ENCODING);
                                match client.request(http::Request::from_parts(parts, Full::new(body))).await {
                                    Ok(response) => Ok(response.map(|b| b.boxed())),
                                    Err(e) => Ok(full(502, "text/plain", format!("proxy: {e}"))),
                                }
                            }
                        }
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { url: format!("http://{addr}"), seen, rule, task }
    }

    /// Replaces the rule applied to every later call.
    fn set_rule(&self, rule: impl Fn(&Seen, &[u8]) -> Action + Send + Sync + 'static) {
        *self.rule.lock().expect("rule") = Arc::new(rule);
    }

    /// Forgets the calls seen so far.
    fn clear(&self) {
        self.seen.lock().expect("seen").clear();
    }

    /// The calls seen so far.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// How many calls of `op` were seen.
    fn count(&self, op: &str) -> usize {
        self.seen().iter().filter(|s| s.op == op).count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// DynamoDB's throttling answer, exactly as DynamoDB sends it.
fn throttled() -> Action {
    Action::Respond {
        status: 400,
        content_type: "application/x-amz-json-1.0",
        body: json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was exceeded."
        })
        .to_string(),
    }
}

/// S3's answer to a request it failed on its side.
fn s3_internal_error() -> Action {
    Action::Respond {
        status: 500,
        content_type: "application/xml",
        body: "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
               <Message>We encountered an internal error. Please try again.</Message><RequestId>FAULT</RequestId></Error>"
            .into(),
    }
}

/// `state` with its DynamoDB and S3 clients pointed at `endpoint`; everything else (the retry
/// configuration of `shared::aws` included) unchanged, except timeouts when given.
fn pointed_at(
    state: &AppState,
    endpoint: &str,
    timeouts: Option<aws_sdk_dynamodb::config::timeout::TimeoutConfig>,
) -> AppState {
    let mut s = state.clone();
    let mut dynamo = s.dynamo.config().to_builder().endpoint_url(endpoint);
    let mut s3 = s.s3.config().to_builder().endpoint_url(endpoint);
    if let Some(t) = timeouts {
        dynamo = dynamo.timeout_config(t.clone());
        s3 = s3.timeout_config(t);
    }
    s.dynamo = aws_sdk_dynamodb::Client::from_conf(dynamo.build()).into();
    s.s3 = aws_sdk_s3::Client::from_conf(s3.build()).into();
    s
}

fn emulator_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL")
}

/// Asserts a 503 in the route's envelope with a usable `Retry-After`.
fn assert_unavailable(a: &Answer, envelope: shared::Envelope) {
    assert_eq!(a.status, 503, "body: {}", String::from_utf8_lossy(&a.bytes));
    match envelope {
        shared::Envelope::Tether => {
            assert_eq!(a.body["success"], false, "{}", a.body);
            assert_eq!(a.body["error"], "SERVICE_UNAVAILABLE", "{}", a.body);
            assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", a.body);
        }
        shared::Envelope::Convocore => assert_convocore_error(a, 503, "SERVICE_UNAVAILABLE"),
    }
    let retry = a.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "Retry-After in seconds: {:?}", a.headers);
    // Internal details stay in the logs.
    let text = String::from_utf8_lossy(&a.bytes).to_lowercase();
    for leak in ["provisionedthroughput", "internalerror", "timeout", "dispatch", "127.0.0.1"] {
        assert!(!text.contains(leak), "the answer leaks `{leak}`: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Throttling

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_and_answers_503_with_retry_after_once_attempts_run_out() {
    let direct = state().await;
    // The retry and timeout settings are explicit on every client, not the SDK's defaults.
    for (retry, timeouts) in [
        (direct.dynamo.config().retry_config(), direct.dynamo.config().timeout_config()),
        (direct.s3.config().retry_config(), direct.s3.config().timeout_config()),
    ] {
        let retry = retry.expect("retry configuration");
        assert_eq!(
            (retry.mode(), retry.max_attempts()),
            (aws_sdk_dynamodb::config::retry::RetryMode::Standard, MAX_ATTEMPTS)
        );
        assert_eq!(retry.initial_backoff(), shared::aws::INITIAL_BACKOFF);
        let timeouts = timeouts.expect("timeout configuration");
        assert_eq!(timeouts.operation_attempt_timeout(), Some(shared::aws::ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(shared::aws::OPERATION_TIMEOUT));
        assert_eq!(timeouts.connect_timeout(), Some(shared::aws::CONNECT_TIMEOUT));
    }
    let org = new_org();
    let tok = token(&org);
    let a = call(&direct, "PUT", "/agents/a1/convos/c1", &tok, Some(json!({"userName": "Jane"}))).await;
    assert_eq!(a.status, 201, "{}", a.body);

    let proxy = Proxy::start(&emulator_url()).await;
    let s = pointed_at(&direct, &proxy.url, None);
    let throttle_first = |n: usize| {
        let left = Arc::new(AtomicUsize::new(n));
        move |call: &Seen, _: &[u8]| {
            if call.op == "Query" && left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1)).is_ok()
            {
                throttled()
            } else {
                Action::Forward
            }
        }
    };

    // Throttled on every attempt but the last: the caller never notices.
    proxy.set_rule(throttle_first(MAX_ATTEMPTS as usize - 1));
    let a = call(&s, "GET", "/agents/a1/convos", &tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["data"][0]["id"], "c1", "{}", a.body);
    assert_eq!(proxy.count("Query"), MAX_ATTEMPTS as usize, "the SDK retried the throttled Query: {:?}", proxy.seen());

    // Throttled on every attempt: exactly MAX_ATTEMPTS attempts, then 503 with Retry-After.
    for (uri, envelope) in
        [("/agents/a1/convos", shared::Envelope::Convocore), ("/api/training/snapshots", shared::Envelope::Tether)]
    {
        proxy.clear();
        proxy.set_rule(throttle_first(usize::MAX));
        let a = call(&s, "GET", uri, &tok, None).await;
        assert_unavailable(&a, envelope);
        assert_eq!(proxy.count("Query"), MAX_ATTEMPTS as usize, "{uri}: attempts {:?}", proxy.seen());
    }

    // Throttling over, the same request succeeds.
    proxy.set_rule(|_, _| Action::Forward);
    let a = call(&s, "GET", "/agents/a1/convos", &tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn throttled_writes_are_retried_without_writing_twice() {
    let direct = state().await;
    let org = new_org();
    let tok = token(&org);
    let a = call(&direct, "PUT", "/agents/a1/convos/c1", &tok, Some(json!({}))).await;
    assert_eq!(a.status, 201, "{}", a.body);

    let proxy = Proxy::start(&emulator_url()).await;
    let s = pointed_at(&direct, &proxy.url, None);
    let left = Arc::new(AtomicUsize::new(MAX_ATTEMPTS as usize - 1));
    proxy.set_rule(move |call, _| {
        if call.op == "TransactWriteItems"
            && left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1)).is_ok()
        {
            throttled()
        } else {
            Action::Forward
        }
    });
    let messages: Vec<Value> =
        (0..3).map(|i| json!({"id": format!("m{i}"), "from": "user", "content": "hi", "ts": format!("2026-01-01T00:00:0{i}Z")})).collect();
    let a = call(&s, "POST", "/agents/a1/convos/c1/messages", &tok, Some(json!({"messages": messages}))).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        (a.body["data"]["inserted"].as_u64(), a.body["data"]["messagesNum"].as_u64()),
        (Some(3), Some(3)),
        "{}",
        a.body
    );
    assert_eq!(proxy.count("TransactWriteItems"), MAX_ATTEMPTS as usize);
    let stored = shared::convos::store::ConvoStore::new(&direct.dynamo, &direct.config.table_name)
        .messages(&Org::stored(org), "a1", "c1")
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// S3 failing in the middle of an export

/// Seeds `n` snapshots of about 1 MiB each (two messages of 512 KiB), so an export of them
/// spans several 8 MiB parts.
async fn seed_large(state: &AppState, org: &str, n: usize) {
    let store = shared::snapshots::store::SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let snaps = (0..n)
        .map(|i| {
            let (snap, mut messages) = tiny_snapshot(org, i);
            for (j, m) in messages.iter_mut().enumerate() {
                m.content = format!("{i}/{j} {}", "x".repeat(512 * 1024));
            }
            (snap, messages)
        })
        .collect();
    store.import(snaps).await.unwrap();
}

/// Fails every `UploadPart` after the first `n` parts, as S3 failing would.
fn fail_parts_after(n: u32) -> impl Fn(&Seen, &[u8]) -> Action + Send + Sync + 'static {
    move |call, _| {
        if call.op == "UploadPart" && call.part_number().is_some_and(|p| p > n) {
            s3_internal_error()
        } else {
            Action::Forward
        }
    }
}

#[tokio::test]
async fn s3_failing_mid_export_answers_503_aborts_the_upload_and_leaves_no_parts() {
    let direct = state().await;
    let org = new_org();
    let tok = token(&org);
    seed_large(&direct, &org, 20).await;

    let proxy = Proxy::start(&emulator_url()).await;
    let s = pointed_at(&direct, &proxy.url, None);
    proxy.set_rule(fail_parts_after(1));
    let uri = "/api/training/export?format=jsonl&delivery=url";
    let a = call(&s, "GET", uri, &tok, None).await;
    assert_unavailable(&a, shared::Envelope::Tether);

    let seen = proxy.seen();
    let parts: Vec<u32> = seen.iter().filter_map(Seen::part_number).collect();
    // Part 1 stored, part 2 tried MAX_ATTEMPTS times (the SDK retries S3's 500); the parts
    // uploaded in the background meanwhile go no further than UPLOADS_IN_FLIGHT past it.
    let in_flight = shared::exports::sink::UPLOADS_IN_FLIGHT as u32;
    assert_eq!(parts.iter().filter(|p| **p == 1).count(), 1, "{seen:?}");
    assert_eq!(parts.iter().filter(|p| **p == 2).count(), MAX_ATTEMPTS as usize, "{seen:?}");
    assert!(parts.iter().all(|p| *p <= 1 + in_flight), "{seen:?}");
    // The abort comes after every part's upload ended, so none can land after it.
    assert_eq!(seen.last().map(|c| c.op.as_str()), Some("AbortMultipartUpload"), "{seen:?}");
    assert!(
        seen.iter().any(|c| c.part_number() == Some(1) && c.bytes >= shared::exports::sink::PART_BYTES),
        "{seen:?}"
    );
    assert_eq!(proxy.count("AbortMultipartUpload"), 1, "{seen:?}");
    assert_eq!(proxy.count("CompleteMultipartUpload"), 0);
    assert_eq!(uploads_in_progress(&direct, &org).await, 0, "no orphaned multipart upload");
    assert_eq!(export_objects(&direct, &org).await, Vec::<String>::new(), "no partial object");

    // S3 is back: the same request answers the whole file.
    proxy.set_rule(|_, _| Action::Forward);
    let a = call(&s, "GET", uri, &tok, None).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let (status, _, file) = download(a.body["data"]["url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(file.len() as u64, a.body["data"]["bytes"].as_u64().unwrap());
    assert!(file.len() > 16 * 1024 * 1024, "three parts or more: {}", file.len());
    let lines: Vec<Value> =
        file.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert_eq!(lines.len(), 20);
    assert_eq!(uploads_in_progress(&direct, &org).await, 0);
    assert_eq!(export_objects(&direct, &org).await.len(), 1);
}

#[tokio::test]
async fn a_job_whose_s3_fails_mid_export_keeps_its_parts_resumes_and_leaves_no_upload() {
    let (direct, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed_large(&direct, &org, 20).await;

    let proxy = Proxy::start(&emulator_url()).await;
    let s = pointed_at(&direct, &proxy.url, None);
    let a = call(&s, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl"}))).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.body["data"]["id"].as_str().unwrap().to_string();

    // The first invocation stores a part, then S3 fails: the invocation fails (Lambda retries
    // it) and the job is not failed for good.
    proxy.set_rule(fail_parts_after(1));
    let events = worker.pending();
    assert_eq!(events.len(), 1);
    let e = shared::jobs::worker::run(&s, &events[0], worker_options()).await.expect_err("the invocation fails");
    assert_eq!(e.kind, shared::error::ErrorKind::Unavailable, "{e:?}");
    let job = call(&s, "GET", &format!("/api/training/exports/{id}"), &tok, None).await;
    assert_eq!(job.status, 200, "{}", job.body);
    assert_ne!(job.body["data"]["status"], "failed", "{}", job.body);
    assert_ne!(job.body["data"]["status"], "succeeded", "{}", job.body);
    assert_eq!(uploads_in_progress(&direct, &org).await, 1, "the upload is kept for the retry");
    worker.pending(); // a read may hand a stale job over again; the retry below is Lambda's

    // Lambda's retry, with S3 back: it resumes after the stored part, and only uploads the rest.
    proxy.clear();
    proxy.set_rule(|_, _| Action::Forward);
    assert_eq!(shared::jobs::worker::run(&s, &events[0], worker_options()).await.unwrap(), Outcome::Succeeded);
    let parts: Vec<u32> = proxy.seen().iter().filter_map(Seen::part_number).collect();
    assert!(!parts.contains(&1), "part 1 is not uploaded again: {parts:?}");
    assert_eq!(proxy.count("CreateMultipartUpload"), 0, "the same upload continues");

    let done = call(&s, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["processed"], 20);
    let (_, _, file) = download(done["url"].as_str().unwrap()).await;
    assert_eq!(file.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), 20);
    // Byte-identical to a synchronous export of the same data: the resumed upload lost nothing.
    let sync = call(&direct, "GET", "/api/training/export?format=jsonl&delivery=url", &tok, None).await;
    assert_eq!(sync.status, 303, "{}", sync.body);
    let (_, _, expected) = download(sync.body["data"]["url"].as_str().unwrap()).await;
    assert!(file == expected, "the job's file differs from the synchronous export");
    assert_eq!(uploads_in_progress(&direct, &org).await, 0, "no multipart upload left");
}

/// A scheduled run, as the deployed functions make it: the coordinator and its batches; answers
/// the jobs it handed to the worker.
async fn scheduled_run(state: &AppState, worker: &mut Worker) -> Vec<shared::jobs::JobRef> {
    tokio::time::sleep(Duration::from_millis(1100)).await; // a scheduled time after every write
    let event = shared::jobs::schedule::ScheduledEvent {
        scheduled_time: Some(shared::time::now_rfc3339()),
        ..Default::default()
    };
    shared::jobs::schedule::run(state, event).await.unwrap();
    worker.run_batches(state).await;
    worker.pending()
}

/// The window (`after`, `upTo`) of the newest job of `tok`'s organization, and its status.
async fn newest_window(state: &AppState, tok: &str) -> (String, String, String) {
    let listed = call(state, "GET", "/api/training/exports", tok, None).await;
    let job = &listed.body["data"][0];
    let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (field(&job["params"]["changed"]["after"]), field(&job["params"]["changed"]["upTo"]), field(&job["status"]))
}

/// A scheduled job whose manifest S3 refuses has not succeeded, so the organization's
/// watermark stays before its window until it does: moved early, a job that then failed for
/// good would leave its window exported by no succeeded job. And a job that succeeds without
/// moving it (the update fails) has it moved by the next run, whose window starts after its.
#[tokio::test]
async fn a_scheduled_jobs_window_is_passed_only_once_it_succeeded_and_never_exported_twice() {
    // A table of its own: a scheduled run walks every organization of its table.
    let (direct, mut worker) = jobs_state_with(|c| {
        c.table_name = format!("{}-watermark", c.table_name);
        c.schedule_settle = Duration::ZERO;
    })
    .await;
    shared::table::ensure_table(&direct.dynamo, &direct.config.table_name).await.unwrap();
    let org = new_org();
    let (tok, o) = (token(&org), Org::stored(org.as_str()));
    let watermark = || shared::jobs::schedule::watermark(&direct, &o);
    seed_contact(&direct, &tok, "ag", "k1", 2, |i| format!("line {i}")).await;
    create_snapshot(&direct, &tok, json!({"contactId": "k1"})).await;
    let jobs = scheduled_run(&direct, &mut worker).await;
    assert_eq!(jobs.len(), 1, "one scheduled job");

    let proxy = Proxy::start(&emulator_url()).await;
    let s = pointed_at(&direct, &proxy.url, None);
    let manifest = |c: &Seen| c.op == "PutObject" && c.uri.contains("manifest.json");
    proxy.set_rule(move |c, _| if manifest(c) { s3_internal_error() } else { Action::Forward });
    let e = shared::jobs::worker::run(&s, &jobs[0], worker_options()).await.expect_err("no manifest, no success");
    assert_eq!(e.kind, shared::error::ErrorKind::Unavailable, "{e:?}");
    assert!(proxy.seen().iter().any(manifest), "the manifest was tried");
    assert_eq!(watermark().await.unwrap(), None, "moved by a job that has not succeeded");

    // Lambda's retry, with S3 back but the watermark's update refused: the job succeeds.
    worker.pending();
    // `advance_watermark`'s update, the only one that sets the watermark.
    let moves_watermark =
        |c: &Seen, body: &[u8]| c.op == "UpdateItem" && body.windows(13).any(|w| w == b"SET watermark");
    proxy.set_rule(move |c, body| if moves_watermark(c, body) { throttled() } else { Action::Forward });
    assert_eq!(shared::jobs::worker::run(&s, &jobs[0], worker_options()).await.unwrap(), Outcome::Succeeded);
    let (_, first_up_to, status) = newest_window(&direct, &tok).await;
    assert_eq!(status, "succeeded");
    assert_eq!(watermark().await.unwrap(), None, "the update was refused");

    // The next run moves it for that job, and its window starts where that job's ended.
    create_snapshot(&direct, &tok, json!({"contactId": "k1"})).await;
    let jobs = scheduled_run(&direct, &mut worker).await;
    assert_eq!(jobs.len(), 1, "one scheduled job");
    assert_eq!(watermark().await.unwrap().as_deref(), Some(first_up_to.as_str()));
    let (after, _, _) = newest_window(&direct, &tok).await;
    assert_eq!(after, first_up_to, "the next window starts after the succeeded one");
}

// ---------------------------------------------------------------------------------------------
// The emulator stopped in the middle of a request

/// A dedicated emulator process, so a test can freeze it without disturbing the others.
/// Killed when dropped (also when the test panics).
struct Emulator {
    child: std::process::Child,
    url: String,
}

impl Emulator {
    async fn start() -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let child = std::process::Command::new(root.join(".local/venv/bin/python"))
            .arg(root.join("scripts/emulator.py"))
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a dedicated emulator (.local/venv from scripts/test.sh)");
        let emulator = Self { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<Bytes>>();
        let probe_url: http::Uri = format!("{}/moto-api/", emulator.url).parse().expect("url");
        loop {
            let probe = tokio::time::timeout(Duration::from_secs(2), client.get(probe_url.clone())).await;
            if probe.is_ok_and(|r| r.is_ok_and(|r| r.status() == 200)) {
                return emulator;
            }
            assert!(Instant::now() < deadline, "the dedicated emulator did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn signal(pid: u32, signal: &str) {
        let ok =
            std::process::Command::new("kill").arg(signal).arg(pid.to_string()).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} {pid}");
    }

    /// Freezes the process: connections are still accepted, nothing is answered.
    fn stop(pid: u32) {
        Self::signal(pid, "-STOP");
    }

    /// Lets it run again; it then serves what it received meanwhile.
    fn resume(&self) {
        Self::signal(self.child.id(), "-CONT");
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL also ends a stopped process
        let _ = self.child.wait();
    }
}

/// Timeouts short enough that a frozen store answers 503 in about three seconds.
fn short_timeouts() -> aws_sdk_dynamodb::config::timeout::TimeoutConfig {
    aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(500))
        .operation_attempt_timeout(Duration::from_millis(800))
        .operation_timeout(Duration::from_secs(3))
        .build()
}

/// A dedicated emulator with the suite's table and bucket, a proxy in front of it, and a
/// state using the proxy with short timeouts.
async fn frozen_setup() -> (Emulator, Proxy, AppState, AppState) {
    let base = state().await;
    let emulator = Emulator::start().await;
    // Created with the product's timeouts: moto's first calls of a service are slow.
    let direct = pointed_at(&base, &emulator.url, None);
    shared::table::ensure_table(&direct.dynamo, &direct.config.table_name).await.expect("table");
    shared::table::ensure_bucket(&direct.s3, &direct.config.bucket_name).await.expect("bucket");
    let proxy = Proxy::start(&emulator.url).await;
    let s = pointed_at(&base, &proxy.url, Some(short_timeouts()));
    (emulator, proxy, s, direct)
}

/// Freezes the emulator (by pid) when the `nth` call matching `matches` reaches the proxy,
/// before it is forwarded: the request is in the middle of its work.
fn stop_at(
    pid: u32,
    nth: usize,
    matches: impl Fn(&Seen, &[u8]) -> bool + Send + Sync + 'static,
) -> impl Fn(&Seen, &[u8]) -> Action + Send + Sync + 'static {
    let count = AtomicUsize::new(0);
    move |call, body| {
        if matches(call, body) && count.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            Emulator::stop(pid);
        }
        Action::Forward
    }
}

/// Reads `f` until two reads 300 ms apart agree: the emulator has served what it received
/// while frozen (requests whose callers had given up).
async fn settled<T: PartialEq + std::fmt::Debug, F: std::future::Future<Output = T>>(mut f: impl FnMut() -> F) -> T {
    let mut last = f().await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = f().await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("never settled: {last:?}");
}

#[tokio::test]
async fn emulator_stopped_mid_ingest_answers_503_writes_nothing_half_and_the_same_request_then_succeeds() {
    let (emulator, proxy, s, direct) = frozen_setup().await;
    let org = new_org();
    let tok = token(&org);
    let a = call(&s, "PUT", "/agents/a1/convos/c1", &tok, Some(json!({"userName": "Jane"}))).await;
    assert_eq!(a.status, 201, "{}", a.body);
    // 500 messages: six transactions of at most 99 messages and the header's counters.
    let messages: Vec<Value> = (0..500)
        .map(|i| json!({"id": format!("m{i:03}"), "from": if i % 2 == 0 { "user" } else { "bot" }, "content": format!("message {i}"),
                        "ts": format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60)}))
        .collect();
    let body = json!({ "messages": messages });

    // Frozen when the third transaction arrives: two are stored, the rest never answered.
    proxy.set_rule(stop_at(emulator.child.id(), 3, |call, _| call.op == "TransactWriteItems"));
    let started = Instant::now();
    let a = call(&s, "POST", "/agents/a1/convos/c1/messages", &tok, Some(body.clone())).await;
    let waited = started.elapsed();
    assert_unavailable(&a, shared::Envelope::Convocore);
    assert!(waited < Duration::from_secs(10), "answered within the configured timeouts: {waited:?}");
    assert_eq!(proxy.count("TransactWriteItems"), 2 + MAX_ATTEMPTS as usize, "{:?}", proxy.seen());

    emulator.resume();
    proxy.set_rule(|_, _| Action::Forward);
    // Whatever the frozen emulator applied later, counters and stored messages agree.
    let store = shared::convos::store::ConvoStore::new(&direct.dynamo, &direct.config.table_name);
    let tenant = Org::stored(org.as_str());
    let header = || async {
        let h = store.get_header(&tenant, "a1", "c1").await.unwrap().expect("header");
        (h.messages_num, h.first_message_ts, h.last_message_ts)
    };
    let (num, first, last) = settled(header).await;
    let stored = store.messages(&tenant, "a1", "c1").await.unwrap();
    assert_eq!(num as usize, stored.len(), "messagesNum matches the stored messages");
    assert!((2 * 99..500).contains(&num), "two transactions or more, not all: {num}");
    assert_eq!(first.as_deref(), stored.iter().map(|m| m.ts.as_str()).min());
    assert_eq!(last.as_deref(), stored.iter().map(|m| m.ts.as_str()).max());

    // The same request again: the rest is stored, nothing twice.
    let a = call(&s, "POST", "/agents/a1/convos/c1/messages", &tok, Some(body)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["data"]["inserted"].as_u64(), Some(500 - num), "{}", a.body);
    assert_eq!(a.body["data"]["messagesNum"], 500);
    let stored = store.messages(&tenant, "a1", "c1").await.unwrap();
    assert_eq!(stored.len(), 500);
    let list = call(&s, "GET", "/agents/a1/convos", &tok, None).await;
    assert_eq!(list.body["data"][0]["messagesNum"], 500, "{}", list.body);
    assert_eq!(list.body["data"][0]["firstMessageTS"], "2026-01-01T00:00:00.000Z");
    assert_eq!(list.body["data"][0]["lastMessageTS"], "2026-01-01T00:08:19.000Z");
}

/// Every stored item of `org`'s snapshots, by partition: `(partition, sort keys)`.
async fn snapshot_partitions(direct: &AppState, org: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for item in items_with_prefix(direct, &format!("ORG#{org}#SNAP#")).await {
        out.entry(item_str(&item, "PK")).or_default().push(item_str(&item, "SK"));
    }
    out
}

/// Every stored item of `org`'s snapshots: `(partition, sort key, expiresAt)`.
async fn snapshot_items(direct: &AppState, org: &str) -> Vec<(String, String, Option<u64>)> {
    items_with_prefix(direct, &format!("ORG#{org}#SNAP#"))
        .await
        .iter()
        .map(|item| {
            let expires = item
                .get(shared::table::TTL)
                .and_then(|v| v.as_n().ok())
                .map(|n| n.parse::<u64>().expect("epoch seconds"));
            (item_str(item, "PK"), item_str(item, "SK"), expires)
        })
        .collect()
}

/// Asserts that every stored snapshot item is a committed header, a chunk its header commits,
/// or an item that expires by `latest` (DynamoDB's TTL removes it; moto keeps it). Answers how
/// many expire.
async fn assert_only_committed_or_expiring(direct: &AppState, org: &str, latest: u64) -> usize {
    let store = shared::snapshots::store::SnapshotStore::new(&direct.dynamo, &direct.config.table_name);
    let mut expiring = 0;
    for (pk, sk, expires) in snapshot_items(direct, org).await {
        if sk == "TOMBSTONE" {
            // A deleted snapshot's record (id and times, kept for the scheduled export).
            continue;
        }
        if expires.is_some_and(|at| at <= latest) {
            expiring += 1;
            continue;
        }
        assert!(expires.is_none(), "{pk} {sk} expires too late: {expires:?} > {latest}");
        let id = pk.rsplit('#').next().expect("id");
        let header = store.get_header(&Org::stored(org), id).await.unwrap();
        let header = header.unwrap_or_else(|| panic!("{pk} {sk}: neither committed nor expiring"));
        let committed: Vec<String> = (0..header.chunks)
            .map(|i| {
                if header.chunk_set.is_empty() {
                    format!("MSGS#{i:05}")
                } else {
                    format!("MSGS#{}#{i:05}", header.chunk_set)
                }
            })
            .collect();
        assert!(
            sk == "META" || committed.contains(&sk),
            "{pk} {sk}: a chunk its header does not commit, without expiry"
        );
    }
    expiring
}

/// Creates a snapshot with an `Idempotency-Key` while the emulator freezes at the first call
/// matching `stop_on`; then checks the 503, that nothing is half-written, and that the same
/// request succeeds once the emulator is back, creating exactly one snapshot. Answers how many
/// items the failed attempt left to expire (none: a create is one transaction).
async fn create_snapshot_with_emulator_stopped_at(stop_on: fn(&Seen, &[u8]) -> bool) -> usize {
    let (emulator, proxy, s, direct) = frozen_setup().await;
    let org = new_org();
    let tok = token(&org);
    // 16 messages of 40 KB: two message chunks.
    let sent = seed_contact(&s, &tok, "a1", "k1", 16, |i| format!("{i} {}", "y".repeat(40_000))).await;
    let body = json!({"contactId": "k1", "notes": "stopped", "quality": "good"});
    let bytes = serde_json::to_vec(&body).unwrap();
    let auth = format!("Bearer {tok}");
    let headers =
        [("authorization", auth.as_str()), ("content-type", "application/json"), ("idempotency-key", "stop-1")];

    proxy.set_rule(stop_at(emulator.child.id(), 1, stop_on));
    let a = send(&s, "POST", "/api/training/snapshots", &headers, &bytes).await;
    assert_unavailable(&a, shared::Envelope::Tether);
    emulator.resume();
    proxy.set_rule(|_, _| Action::Forward);
    settled(|| snapshot_partitions(&direct, &org)).await;

    // The same request, once the store is back, creates the snapshot (or answers the one the
    // first attempt committed), and a further retry replays it.
    let a = send(&s, "POST", "/api/training/snapshots", &headers, &bytes).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["data"]["_id"].as_str().expect("id").to_string();
    let messages = a.body["data"]["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), sent.len());
    for (m, want) in messages.iter().zip(&sent) {
        assert_eq!(m["content"], want["content"]);
    }
    let again = send(&s, "POST", "/api/training/snapshots", &headers, &bytes).await;
    assert_eq!((again.status.as_u16(), again.body["data"]["_id"].as_str()), (201, Some(id.as_str())), "{}", again.body);

    // Exactly one snapshot, listed, and no chunks without a header anywhere.
    let list = call(&s, "GET", "/api/training/snapshots?archived=all", &tok, None).await;
    let listed: Vec<&str> =
        list.body["data"].as_array().expect("list").iter().filter_map(|x| x["_id"].as_str()).collect();
    assert_eq!(listed, vec![id.as_str()], "{}", list.body);
    let partitions = snapshot_partitions(&direct, &org).await;
    let orphans: Vec<_> = partitions.iter().filter(|(_, sks)| !sks.iter().any(|sk| sk == "META")).collect();
    assert!(orphans.is_empty(), "message chunks without a snapshot: {orphans:?}");
    assert_eq!(partitions.len(), 1, "{partitions:?}");
    // The failed attempt wrote all of its transaction or nothing (a late one is canceled by the
    // committed header), and the snapshot reads back whole.
    let expiring = assert_only_committed_or_expiring(&direct, &org, shared::auth::now_epoch() + 60).await;
    let got = call(&s, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["data"]["messages"], a.body["data"]["messages"]);
    expiring
}

fn is_put_of(call: &Seen, body: &[u8], sort_key: &str) -> bool {
    call.op == "PutItem"
        && std::str::from_utf8(body).is_ok_and(|b| b.contains(&format!("\"SK\":{{\"S\":\"{sort_key}\"}}")))
}

// A create is one transaction of the header and every chunk (no chunk written before it), so
// the store is written in one round trip and an attempt writes all of it or nothing.
#[tokio::test]
async fn a_snapshot_create_writes_its_header_and_chunks_in_one_transaction() {
    let direct = state().await;
    let org = new_org();
    let tok = token(&org);
    // 16 messages of 40 KB: two message chunks.
    seed_contact(&direct, &tok, "a1", "k1", 16, |i| format!("{i} {}", "w".repeat(40_000))).await;
    let proxy = Proxy::start(&emulator_url()).await;
    let s = pointed_at(&direct, &proxy.url, None);
    // The organization's first snapshot also registers it for the scheduled export, once.
    let first = call(&s, "POST", "/api/training/snapshots", &tok, Some(json!({"contactId": "k1"}))).await;
    assert_eq!(first.status, 201, "{}", first.body);
    proxy.clear();
    let a = call(&s, "POST", "/api/training/snapshots", &tok, Some(json!({"contactId": "k1"}))).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let writes: Vec<String> = proxy
        .seen()
        .into_iter()
        .map(|c| c.op)
        .filter(|op| ["PutItem", "UpdateItem", "BatchWriteItem", "TransactWriteItems"].contains(&op.as_str()))
        .collect();
    assert_eq!(writes, ["TransactWriteItems"], "the create's writes");
    let items = snapshot_items(&direct, &org).await;
    assert_eq!(items.len(), 6, "two snapshots, each a header and two chunks: {items:?}");
    assert!(items.iter().all(|(_, _, expires)| expires.is_none()), "nothing expiring: {items:?}");
}

/// The commit transaction of a snapshot (it puts the header).
fn is_commit(call: &Seen, body: &[u8]) -> bool {
    call.op == "TransactWriteItems"
        && std::str::from_utf8(body).is_ok_and(|b| b.contains("\"SK\":{\"S\":\"META\"}") && b.contains("\"Put\""))
}

// The commit the caller gave up on is applied later; the key's claim names that snapshot, so
// the retry answers it instead of creating another.
#[tokio::test]
async fn emulator_stopped_while_the_snapshot_header_commits_creates_it_once() {
    assert_eq!(create_snapshot_with_emulator_stopped_at(is_commit).await, 0, "the late commit left nothing to expire");
}

/// A stored snapshot of two chunks for `org`, created through the API; answers its id.
async fn two_chunk_snapshot(s: &AppState, direct: &AppState, tok: &str, org: &str) -> String {
    seed_contact(s, tok, "a1", "k1", 16, |i| format!("{i} {}", "z".repeat(40_000))).await;
    let a = call(s, "POST", "/api/training/snapshots", tok, Some(json!({"contactId": "k1"}))).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(snapshot_partitions(direct, org).await.len(), 1);
    a.body["data"]["_id"].as_str().expect("id").to_string()
}

/// The deleted snapshot `id` is nowhere to be read: get, list (with messages) and export.
async fn assert_invisible(s: &AppState, tok: &str, id: &str) {
    assert_eq!(call(s, "GET", &format!("/api/training/snapshots/{id}"), tok, None).await.status, 404);
    let list = call(s, "GET", "/api/training/snapshots?archived=all&includeMessages=true", tok, None).await;
    assert_eq!(list.body["data"], json!([]), "{}", list.body);
    let export = call(s, "GET", "/api/training/export?format=jsonl&includeArchived=true", tok, None).await;
    assert_eq!(export.status, 200, "{}", export.body);
    assert!(export.bytes.is_empty(), "{}", String::from_utf8_lossy(&export.bytes));
}

// The header goes and the chunks get an expiry in one transaction, so a clean-up the store
// never finishes (or applies late) leaves nothing that stays.
#[tokio::test]
async fn emulator_stopped_while_a_snapshot_is_deleted_leaves_nothing_behind() {
    let (emulator, proxy, s, direct) = frozen_setup().await;
    let org = new_org();
    let tok = token(&org);
    let id = two_chunk_snapshot(&s, &direct, &tok, &org).await;

    // Frozen once the header is gone, when the chunks are removed.
    proxy.set_rule(stop_at(emulator.child.id(), 1, |call, _| call.op == "BatchWriteItem"));
    let uri = format!("/api/training/snapshots/{id}");
    let first = call(&s, "DELETE", &uri, &tok, None).await;
    emulator.resume();
    proxy.set_rule(|_, _| Action::Forward);
    settled(|| snapshot_partitions(&direct, &org)).await;
    match first.status.as_u16() {
        200 => {}
        // A client retries a 503; the retry finds the header gone and answers 404.
        503 => assert_eq!(call(&s, "DELETE", &uri, &tok, None).await.status, 404),
        other => panic!("unexpected {other}: {}", first.body),
    }
    assert_invisible(&s, &tok, &id).await;
    // Whatever remains has expired already (DynamoDB's TTL removes it; moto keeps it).
    assert_only_committed_or_expiring(&direct, &org, shared::auth::now_epoch()).await;
    // A repeated delete answers 404 and removes what is left but the deletion record.
    assert_eq!(call(&s, "DELETE", &uri, &tok, None).await.status, 404);
    let mut left = snapshot_partitions(&direct, &org).await;
    left.retain(|_, sks| sks.iter().any(|sk| sk != "TOMBSTONE"));
    assert!(left.is_empty(), "items of the deleted snapshot remain: {left:?}");
}

#[tokio::test]
async fn a_delete_whose_chunk_clean_up_fails_answers_200_and_leaves_only_expired_invisible_chunks() {
    let direct = state().await;
    let org = new_org();
    let tok = token(&org);
    let proxy = Proxy::start(&emulator_url()).await;
    let s = pointed_at(&direct, &proxy.url, None);
    let id = two_chunk_snapshot(&s, &direct, &tok, &org).await;

    // The clean-up after the delete transaction fails on every attempt, never applied.
    proxy.clear();
    proxy.set_rule(|call, _| {
        if call.op == "BatchWriteItem" {
            Action::Respond {
                status: 500,
                content_type: "application/x-amz-json-1.0",
                body: json!({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "Internal server error"}).to_string(),
            }
        } else {
            Action::Forward
        }
    });
    let uri = format!("/api/training/snapshots/{id}");
    let a = call(&s, "DELETE", &uri, &tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(proxy.count("BatchWriteItem"), MAX_ATTEMPTS as usize, "{:?}", proxy.seen());
    proxy.set_rule(|_, _| Action::Forward);

    // The chunks are still stored, each with an expiry that has passed, and nothing reads them
    // (beside them, the deletion record the delete put for the scheduled export).
    let mut items = snapshot_items(&direct, &org).await;
    let record = items.iter().position(|(_, sk, _)| sk == "TOMBSTONE").expect("the deletion record");
    let record = items.remove(record);
    assert_eq!(items.len(), 2, "{items:?}");
    let now = shared::auth::now_epoch();
    assert!(items.iter().all(|(_, sk, at)| sk.starts_with("MSGS#") && at.is_some_and(|at| at <= now)), "{items:?}");
    assert_invisible(&s, &tok, &id).await;
    // A repeated delete answers 404 and removes them.
    assert_eq!(call(&s, "DELETE", &uri, &tok, None).await.status, 404);
    assert_eq!(snapshot_items(&direct, &org).await, vec![record], "only the deletion record is left");
}

// The claim the caller gave up on is applied later, without an answer recorded; it names the
// snapshot id, so the same request resumes it at once (no 409 "in progress").
#[tokio::test]
async fn emulator_stopped_while_the_idempotency_key_is_claimed_then_the_same_request_succeeds() {
    assert_eq!(create_snapshot_with_emulator_stopped_at(|call, body| is_put_of(call, body, "IDEM")).await, 0);
}
