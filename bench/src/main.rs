//! The benchmark command (`./scripts/bench.sh`): every figure is the median of several runs and
//! is compared, in the same run, with a baseline, so the ratios hold on a noisy machine.
//!
//! 1. Cold start: a function's release binary under a local Lambda Runtime API, from spawn to
//!    its first response, against a minimal `lambda_runtime` function.
//! 2. Request overhead: p50 / p99 of GET snapshot, list and create through the handler at
//!    concurrency 1 and 16, against the raw SDK GetItem / Query / PutItem round trip.
//! 3. Export throughput per format, against reading the same items with the raw SDK.
//! 4. Export memory: peak RSS of the export function's process for a small and a large export.
//! 5. Size of each function's release binary and zipped package.
//! 6. Read capacity per exported snapshot, against the item size divided by 4 KB.
//! 9. Export CPU per 1,000 snapshots per format, against the CPU of the same reads alone.
//! 10. The export under a latency model of AWS (recorded, then replayed with real concurrency):
//!     pipelined against sequential and against the reads alone.
//! 11. Build time of the release profile (timed by `scripts/bench.sh`).
//!
//! It expects the environment of `scripts/bench.sh`: an emulator (`AWS_ENDPOINT_URL`),
//! `TABLE_NAME`, `BUCKET_NAME`, `JWT_SECRET` and the release binaries in `BENCH_BIN_DIR`.

mod build;
mod corpus;
mod cost;
mod cpu;
mod dedup;
mod redaction;
mod replay;
mod runtime_api;

use shared::keys::Org;
use std::collections::HashMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde_json::{json, Value};
use shared::snapshots::store::SnapshotStore;
use shared::snapshots::{Snapshot, SnapshotMessage};
use shared::{gateway, routes, table, AppState, Config};
use tokio::io::{AsyncBufReadExt, BufReader};

use runtime_api::RuntimeApi;

// The functions' allocator, so the reads measured in this process (the floor of section 9) cost
// what they cost in a function.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Knobs, from the environment (defaults are the figures).
struct Settings {
    runs: usize,
    cold_runs: usize,
    requests: usize,
    export_snapshots: usize,
    memory_small: usize,
    memory_large: usize,
    messages: usize,
    bin_dir: PathBuf,
    root: PathBuf,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        Self {
            runs: env_usize("BENCH_RUNS", 3).max(1),
            cold_runs: env_usize("BENCH_COLD_RUNS", 15).max(1),
            requests: env_usize("BENCH_REQUESTS", 320).max(16),
            export_snapshots: env_usize("BENCH_EXPORT_SNAPSHOTS", 20_000),
            memory_small: env_usize("BENCH_MEMORY_SMALL", 5_000),
            memory_large: env_usize("BENCH_MEMORY_LARGE", 50_000),
            messages: env_usize("BENCH_MESSAGES", 20).max(1),
            bin_dir: std::env::var("BENCH_BIN_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target/release")),
            root,
        }
    }
}

/// One line of the table (and of the JSON file).
struct Row {
    section: &'static str,
    measure: String,
    unit: &'static str,
    ours: f64,
    baseline: Option<f64>,
    /// What the issue asks of the figure.
    target: Option<Target>,
    note: String,
}

#[derive(Clone, Copy)]
enum Target {
    /// ours / baseline at most this.
    AtMost(f64),
    /// ours / baseline at least this.
    AtLeast(f64),
    /// ours at most this absolute value.
    Below(f64),
    /// ours / baseline at most the first, and ours below the second.
    AtMostAndBelow(f64, f64),
    /// ours at least this absolute value.
    Above(f64),
    /// ours at most this absolute value.
    NoMore(f64),
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.ours / b)
    }

    fn met(&self) -> Option<bool> {
        match self.target? {
            Target::AtMost(x) => self.ratio().map(|r| r <= x),
            Target::AtLeast(x) => self.ratio().map(|r| r >= x),
            Target::Below(x) => Some(self.ours < x),
            Target::AtMostAndBelow(x, y) => self.ratio().map(|r| r <= x && self.ours < y),
            Target::Above(x) => Some(self.ours >= x),
            Target::NoMore(x) => Some(self.ours <= x),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Some(Target::AtMost(x)) => format!("≤ {x} x"),
            Some(Target::AtLeast(x)) => format!("≥ {x} x"),
            Some(Target::Below(x)) => format!("< {x} {}", self.unit),
            Some(Target::AtMostAndBelow(x, y)) => format!("≤ {x} x and < {y} {}", self.unit),
            Some(Target::Above(x)) => format!("≥ {x}"),
            Some(Target::NoMore(x)) => format!("≤ {x} {}", self.unit),
            None => String::new(),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile of `v` (`p` in 0..=100).
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Res<()> {
    let settings = Settings::from_env();
    if std::env::var("BENCH_ONLY").as_deref() == Ok("redaction") {
        // The redaction figures alone: no emulator, no data.
        let started = Instant::now();
        let mut rows = redaction::redaction();
        rows.extend(dedup::near_duplicates());
        println!("{}", render(&rows, &machine(), &settings, started.elapsed()));
        return Ok(());
    }
    let mut config = Config::from_env()?;
    // Exports here measure a single pass, not the fallback to a job.
    config.export_sync_budget = Duration::from_secs(3600);
    // Request latencies and cold starts use a table of their own: the emulator copies a whole
    // table for every transaction (DynamoDB does not), so the export data would slow creates.
    let mut requests_config = config.clone();
    requests_config.table_name = format!("{}-requests", config.table_name);
    let state = AppState::new(config).await?;
    let requests = AppState::new(requests_config).await?;
    for s in [&state, &requests] {
        table::ensure_table(&s.dynamo, &s.config.table_name).await?;
        table::ensure_bucket(&s.s3, &s.config.bucket_name).await?;
    }
    let state = Arc::new(state);
    let requests = Arc::new(requests);
    let secret = std::env::var("JWT_SECRET")?;
    let started = Instant::now();
    let mut rows = Vec::new();
    if std::env::var("BENCH_ONLY").as_deref() == Ok("cpu") {
        // Section 9 alone: its data and the export function's process, nothing else running.
        let export_org = shared::ids::object_id();
        seed(&state, &export_org, settings.export_snapshots, settings.messages).await?;
        rows.extend(cpu::export_cpu(&settings, &state, &secret, &export_org).await?);
        println!("{}", render(&rows, &machine(), &settings, started.elapsed()));
        return Ok(());
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("pipeline") {
        // Section 10 alone.
        let export_org = shared::ids::object_id();
        seed(&state, &export_org, settings.export_snapshots, settings.messages).await?;
        rows.extend(replay::latency_model(&settings, &state, &secret, &export_org).await?);
        println!("{}", render(&rows, &machine(), &settings, started.elapsed()));
        return Ok(());
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("cost") {
        // Section 6's layouts and the small snapshots' reads.
        rows.extend(cost::layouts()?);
        rows.extend(cost::small_snapshot_reads(&settings, &state, &secret).await?);
        println!("{}", render(&rows, &machine(), &settings, started.elapsed()));
        return Ok(());
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("throughput") {
        // Section 3 alone: its data and its exports, nothing else running.
        let export_org = shared::ids::object_id();
        seed(&state, &export_org, settings.export_snapshots, settings.messages).await?;
        rows.extend(export_throughput(&settings, &state, &secret, &export_org).await?);
        println!("{}", render(&rows, &machine(), &settings, started.elapsed()));
        return Ok(());
    }

    eprintln!("== seeding");
    let latency_org = shared::ids::object_id();
    let latency_ids = seed_latency_org(&requests, &secret, &latency_org).await?;
    let cold_export_org = shared::ids::object_id();
    seed(&requests, &cold_export_org, 50, settings.messages).await?;
    let export_org = shared::ids::object_id();
    seed(&state, &export_org, settings.export_snapshots, settings.messages).await?;
    let small_org = shared::ids::object_id();
    seed(&state, &small_org, settings.memory_small, settings.messages).await?;
    let large_org = shared::ids::object_id();
    seed(&state, &large_org, settings.memory_large, settings.messages).await?;
    eprintln!("   seeded in {:.0} s", started.elapsed().as_secs_f64());

    eprintln!("== 1. cold start");
    rows.extend(
        cold_start(&settings, &requests.config.table_name, &secret, &latency_org, &latency_ids[0], &cold_export_org)
            .await?,
    );
    save_partial(&settings, &rows, started.elapsed());
    eprintln!("== 2. request overhead");
    rows.extend(request_overhead(&settings, &requests, &secret, &latency_org, &latency_ids).await?);
    save_partial(&settings, &rows, started.elapsed());
    eprintln!("== 3. export throughput");
    rows.extend(export_throughput(&settings, &state, &secret, &export_org).await?);
    save_partial(&settings, &rows, started.elapsed());
    eprintln!("== 4 and 6. export memory and read capacity");
    rows.extend(export_memory(&settings, &state, &secret, &small_org, &large_org).await?);
    rows.extend(cost::small_snapshot_reads(&settings, &state, &secret).await?);
    rows.extend(cost::layouts()?);
    save_partial(&settings, &rows, started.elapsed());
    eprintln!("== 10. pipelined export under a latency model");
    rows.extend(replay::latency_model(&settings, &state, &secret, &export_org).await?);
    save_partial(&settings, &rows, started.elapsed());
    eprintln!("== 9. export CPU");
    rows.extend(cpu::export_cpu(&settings, &state, &secret, &export_org).await?);
    save_partial(&settings, &rows, started.elapsed());
    eprintln!("== 5. size");
    rows.extend(sizes(&settings)?);
    rows.extend(build::build_time());
    eprintln!("== 7. redaction");
    rows.extend(redaction::redaction());
    eprintln!("== 8. near duplicates");
    rows.extend(dedup::near_duplicates());

    let machine = machine();
    let table = render(&rows, &machine, &settings, started.elapsed());
    println!("{table}");
    let dir = settings.root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let results = json!({
        "machine": machine,
        "settings": {
            "runs": settings.runs, "coldRuns": settings.cold_runs, "requests": settings.requests,
            "exportSnapshots": settings.export_snapshots, "memorySmall": settings.memory_small,
            "memoryLarge": settings.memory_large, "messagesPerSnapshot": settings.messages,
        },
        "seconds": started.elapsed().as_secs_f64(),
        "rows": rows.iter().map(|r| json!({
            "section": r.section, "measure": r.measure, "unit": r.unit, "ours": r.ours,
            "baseline": r.baseline, "ratio": r.ratio(), "target": r.target_text(), "met": r.met(), "note": r.note,
        })).collect::<Vec<_>>(),
    });
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let pretty = serde_json::to_string_pretty(&results)?;
    std::fs::write(dir.join(format!("bench-{stamp}.json")), &pretty)?;
    std::fs::write(dir.join("latest.json"), &pretty)?;
    std::fs::write(dir.join("latest.md"), &table)?;
    eprintln!("written: target/bench/latest.json, target/bench/latest.md, target/bench/bench-{stamp}.json");
    Ok(())
}

/// The rows measured so far (`target/bench/partial.md`): a run that stops halfway keeps them.
fn save_partial(settings: &Settings, rows: &[Row], elapsed: Duration) {
    let dir = settings.root.join("target/bench");
    let table = render(rows, &machine(), settings, elapsed);
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(dir.join("partial.md"), table)) {
        eprintln!("   could not save the partial table: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Data

fn token(secret: &str, org: &str) -> Res<String> {
    let claims = shared::auth::Claims {
        sub: "bench-user".into(),
        organization_id: org.into(),
        exp: shared::auth::now_epoch() + 24 * 3600,
        nbf: None,
        iss: None,
        aud: None,
        email: None,
        given_name: None,
        family_name: None,
    };
    Ok(shared::auth::mint_hs256(secret, &claims)?)
}

/// A snapshot of `n` messages whose contents vary between 40 and 200 characters.
fn snapshot(org: &str, i: usize, n: usize) -> Res<(Snapshot, Vec<SnapshotMessage>)> {
    const FILLER: &str = "Thanks for reaching out! Our premium plan includes priority support, \
        unlimited agents and exports; billing is monthly or yearly, and you can cancel any time. ";
    let messages: Vec<SnapshotMessage> = (0..n)
        .map(|j| {
            let len = 40 + (i * 7 + j * 13) % 160;
            let mut content = format!("#{i} m{j}: ");
            while content.len() < len {
                content.push_str(FILLER);
            }
            content.truncate(len);
            SnapshotMessage {
                id: format!("m{i}-{j}"),
                content,
                sender: if j % 2 == 0 { "contact".into() } else { "user".into() },
                sender_type: if j % 2 == 0 { "HUMAN".into() } else { "AI".into() },
                timestamp: format!("2026-05-18T13:{:02}:{:02}.000Z", (j / 60) % 60, j % 60),
            }
        })
        .collect();
    let (id, at) = shared::ids::new_id();
    let now = shared::time::to_rfc3339(at);
    let snap: Snapshot = serde_json::from_value(json!({
        "_id": id, "organizationId": org, "user": {"_id": "bench-user"},
        "contact": {"_id": format!("contact-{}", i % 50)}, "customerName": "Jane Doe",
        "customerPhone": "+14155550123", "customerEmail": "jane@example.com",
        "messageCount": messages.len(), "snapshotDate": now, "conversationStartDate": messages[0].timestamp,
        "conversationEndDate": messages[messages.len() - 1].timestamp, "tags": ["sales", "pricing"],
        "quality": "good", "category": "support", "isArchived": false, "createdAt": now, "updatedAt": now, "version": 1
    }))?;
    Ok((snap, messages))
}

/// Seeds `count` snapshots of `messages` messages for `org` (bulk import, as a migration would).
async fn seed(state: &AppState, org: &str, count: usize, messages: usize) -> Res<()> {
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    for start in (0..count).step_by(1000) {
        let batch = (start..(start + 1000).min(count)).map(|i| snapshot(org, i, messages)).collect::<Res<Vec<_>>>()?;
        store.import(batch).await?;
    }
    Ok(())
}

/// The request-overhead organization: a conversation to capture and 100 snapshots to read.
async fn seed_latency_org(state: &AppState, secret: &str, org: &str) -> Res<Vec<String>> {
    let tok = token(secret, org)?;
    let header =
        json!({"contactId": "bench-contact", "userName": "Jane Doe", "userPhone": "+14155550123", "origin": "sms"});
    let (status, body) = call(state, "PUT", "/agents/bench-agent/convos/bench-convo", &tok, Some(&header)).await?;
    check(status, 201, &body, "put convo")?;
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            json!({"id": format!("m{i:03}"), "from": if i % 2 == 0 { "user" } else { "bot" },
                        "content": format!("message {i}: how much is the premium plan, and can I pay yearly?"),
                        "ts": format!("2026-05-18T13:00:{i:02}.000Z")})
        })
        .collect();
    let (status, body) = call(
        state,
        "POST",
        "/agents/bench-agent/convos/bench-convo/messages",
        &tok,
        Some(&json!({"messages": messages})),
    )
    .await?;
    check(status, 201, &body, "ingest")?;
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let batch = (0..100).map(|i| snapshot(org, i, 20)).collect::<Res<Vec<_>>>()?;
    let ids = batch.iter().map(|(s, _)| s.id.clone()).collect();
    store.import(batch).await?;
    Ok(ids)
}

/// Deletes the export files of `org`: the emulator keeps every object in memory, and some forty
/// files of 90 MB made it too slow to answer within the functions' timeouts.
pub async fn drop_exports(state: &AppState, org: &str) -> Res<()> {
    let bucket = &state.config.bucket_name;
    let mut pages = state.s3.list_objects_v2().bucket(bucket).prefix(format!("exports/{org}/")).into_paginator().send();
    while let Some(page) = pages.next().await {
        for key in page?.contents.unwrap_or_default().into_iter().filter_map(|o| o.key) {
            state.s3.delete_object().bucket(bucket).key(key).send().await?;
        }
    }
    Ok(())
}

fn check(status: u16, want: u16, body: &[u8], what: &str) -> Res<()> {
    if status == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {status}: {}", String::from_utf8_lossy(&body[..body.len().min(500)]))
            .into())
    }
}

/// The API Gateway event of a request (as `sam local` or API Gateway would send it).
fn event(method: &str, uri: &str, token: &str, body: Option<&Value>) -> Res<(Value, &'static routes::Route)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let (route, params) = routes::find(method, path).map_err(|_| format!("no route for {method} {path}"))?;
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", http::HeaderValue::from_str(&format!("Bearer {token}"))?);
    headers.insert("host", http::HeaderValue::from_static("bench.execute-api.us-east-1.amazonaws.com"));
    let bytes = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
    if !bytes.is_empty() {
        headers.insert("content-type", http::HeaderValue::from_static("application/json"));
    }
    let route_key = format!("{} {}", route.method, route.path);
    let call = gateway::Call {
        method,
        route_key: &route_key,
        raw_path: path,
        raw_query: query,
        headers: &headers,
        path_params: &params,
        body: &bytes,
    };
    Ok((gateway::event(call), route))
}

/// A request through the route's handler, in this process: status and body bytes.
async fn call(state: &AppState, method: &str, uri: &str, token: &str, body: Option<&Value>) -> Res<(u16, Vec<u8>)> {
    let (event, route) = event(method, uri, token, body)?;
    let req = lambda_http::request::from_str(&event.to_string())?;
    let response = (route.handler)(state, req).await;
    let (parts, body) = response.into_parts();
    Ok((parts.status.as_u16(), body.to_vec()))
}

// ---------------------------------------------------------------------------------------------
// 1. Cold start (and the process runs of 4.)

/// What one function process did for one invocation.
struct ProcessRun {
    init: Duration,
    response: Duration,
    peak_rss: u64,
    /// CPU (user + system) of the process up to its answer, in milliseconds.
    cpu_ms: f64,
    status: u16,
    body: Value,
    logs: Vec<String>,
}

/// Peak resident set size (`VmHWM`) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs `export-training` once for `event` (once more after a 503).
async fn run_export(settings: &Settings, table: &str, event: &Value) -> Res<ProcessRun> {
    let bin = settings.bin_dir.join("export-training");
    again_on_503(|| run_process(&bin, "export-training", table, event, Duration::from_secs(3600)), |r| r.status).await
}

/// Runs `measure` once more when `status` says it answered 503 (the emulator was too slow and
/// the function asked its caller to retry), said on stderr; a client would retry it.
async fn again_on_503<T, F: std::future::Future<Output = Res<T>>>(
    mut measure: impl FnMut() -> F,
    status: impl Fn(&T) -> u16,
) -> Res<T> {
    let first = measure().await?;
    if status(&first) != 503 {
        return Ok(first);
    }
    eprintln!("   503 (the emulator was too slow; Retry-After): this export is measured again");
    tokio::time::sleep(Duration::from_secs(1)).await;
    measure().await
}

/// Spawns `binary` under a fresh Runtime API with one queued event and waits for its answer.
async fn run_process(binary: &Path, name: &str, table: &str, event: &Value, timeout: Duration) -> Res<ProcessRun> {
    let mut api = RuntimeApi::start().await?;
    api.push(event);
    let spawned = Instant::now();
    // BENCH_WRAP (say `perf record -g -o perf.data --`) runs every function under a profiler.
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace().map(str::to_string).chain([binary.display().to_string()]);
    let program = words.next().unwrap_or_default();
    let mut child = tokio::process::Command::new(program)
        .args(words)
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .env("TABLE_NAME", table)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        // As in Lambda: the log level comes from the logging configuration.
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
    let pid = child.id().unwrap_or_default();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(BufReader::new(out))));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(BufReader::new(err))));
    }
    let posted = tokio::time::timeout(timeout, api.posted()).await;
    let rss = peak_rss(pid);
    let cpu_ms = cpu::process_cpu_ms(&pid.to_string());
    if wrap.is_empty() {
        let _ = child.kill().await;
    } else {
        // A profiler writes its data and stops its workload on SIGINT (SIGKILL would orphan it).
        let _ = tokio::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
        let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    }
    let mut logs = Vec::new();
    for r in readers {
        logs.extend(r.await.unwrap_or_default());
    }
    let posted = posted
        .map_err(|_| format!("{name}: no answer within {timeout:?}; logs: {logs:?}"))?
        .ok_or("runtime API closed")?;
    if posted.error {
        return Err(format!(
            "{name} posted an error for {}: {}; logs: {logs:?}",
            posted.request_id,
            String::from_utf8_lossy(&posted.body)
        )
        .into());
    }
    let body: Value = serde_json::from_slice(&posted.body)?;
    let init = api.first_poll().map_or(Duration::ZERO, |t| t.duration_since(spawned));
    Ok(ProcessRun {
        init,
        response: posted.at.duration_since(spawned),
        peak_rss: rss,
        cpu_ms,
        status: body["statusCode"].as_u64().unwrap_or(0) as u16,
        body,
        logs,
    })
}

async fn read_lines<R: tokio::io::AsyncBufRead + Unpin>(reader: R) -> Vec<String> {
    let mut lines = reader.lines();
    let mut out = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        out.push(line);
    }
    out
}

async fn cold_start(
    settings: &Settings,
    table: &str,
    secret: &str,
    org: &str,
    snapshot_id: &str,
    export_org: &str,
) -> Res<Vec<Row>> {
    let baseline_bin = settings.bin_dir.join("bench-baseline");
    let (get_event, _) = event("GET", &format!("/api/training/snapshots/{snapshot_id}"), &token(secret, org)?, None)?;
    let (export_event, _) = event("GET", "/api/training/export?format=jsonl", &token(secret, export_org)?, None)?;
    let cases = [("get-snapshot", get_event, 200u16), ("export-training", export_event, 200u16)];
    let mut rows = Vec::new();
    for (name, event, want) in &cases {
        let bin = settings.bin_dir.join(name);
        let (mut ours_init, mut ours_resp, mut base_init, mut base_resp) = (vec![], vec![], vec![], vec![]);
        for _ in 0..settings.cold_runs {
            // Alternate, so a slow spell of the machine hits both.
            let base = run_process(&baseline_bin, "bench-baseline", table, event, Duration::from_secs(30)).await?;
            let ours = run_process(&bin, name, table, event, Duration::from_secs(30)).await?;
            check(ours.status, *want, ours.body.to_string().as_bytes(), name)?;
            base_init.push(ms(base.init));
            base_resp.push(ms(base.response));
            ours_init.push(ms(ours.init));
            ours_resp.push(ms(ours.response));
        }
        rows.push(Row {
            section: "1. Cold start",
            measure: format!("`{name}`: spawn to first response"),
            unit: "ms",
            ours: median(ours_resp),
            baseline: Some(median(base_resp)),
            target: None,
            note: "includes building the clients it uses and its storage round trips; baseline answers a constant"
                .into(),
        });
        rows.push(Row {
            section: "1. Cold start",
            measure: format!("`{name}`: spawn to ready (first `/next`)"),
            unit: "ms",
            ours: median(ours_init),
            baseline: Some(median(base_init)),
            target: Some(Target::AtMost(1.5)),
            note: "configuration read; AWS clients and credentials are built on first use".into(),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// 2. Request overhead

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    /// GET snapshot again, against the raw Query it makes (isolates our code's share).
    GetSameQuery,
    List,
    Create,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get | Op::GetSameQuery => "GET snapshot",
            Op::List => "list snapshots",
            Op::Create => "create snapshot",
        }
    }

    fn baseline(self) -> &'static str {
        match self {
            Op::Get => "GetItem",
            Op::GetSameQuery => "the same Query",
            Op::List => "Query (20)",
            Op::Create => "PutItem",
        }
    }
}

/// One request of `op` through the handler; its latency.
async fn ours(state: &AppState, tok: &str, op: Op, id: &str) -> Res<Duration> {
    let body = json!({"contactId": "bench-contact", "notes": "benchmark", "tags": ["bench"], "quality": "good"});
    let started = Instant::now();
    let (status, bytes) = match op {
        Op::Get | Op::GetSameQuery => call(state, "GET", &format!("/api/training/snapshots/{id}"), tok, None).await?,
        Op::List => call(state, "GET", "/api/training/snapshots?limit=20", tok, None).await?,
        Op::Create => call(state, "POST", "/api/training/snapshots", tok, Some(&body)).await?,
    };
    let elapsed = started.elapsed();
    check(status, if op == Op::Create { 201 } else { 200 }, &bytes, op.name())?;
    Ok(elapsed)
}

/// The raw SDK round trip the operation is compared with.
async fn raw(
    state: &AppState,
    org: &str,
    op: Op,
    id: &str,
    item: &HashMap<String, AttributeValue>,
    n: usize,
) -> Res<Duration> {
    let t = &state.config.table_name;
    let started = Instant::now();
    match op {
        Op::Get => {
            let out = state
                .dynamo
                .get_item()
                .table_name(t)
                .key("PK", AttributeValue::S(shared::keys::snapshot(&Org::stored(org), id)))
                .key("SK", AttributeValue::S("META".into()))
                .send()
                .await?;
            if out.item.is_none() {
                return Err("baseline GetItem found nothing".into());
            }
        }
        Op::GetSameQuery => {
            let out = state
                .dynamo
                .query()
                .table_name(t)
                .key_condition_expression("PK = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(shared::keys::snapshot(&Org::stored(org), id)))
                .send()
                .await?;
            if out.count < 2 {
                return Err("baseline Query found no snapshot".into());
            }
        }
        Op::List => {
            let out = state
                .dynamo
                .query()
                .table_name(t)
                .index_name("GSI1")
                .key_condition_expression("GSI1PK = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(format!("ORG#{org}#SNAPS#A0")))
                .scan_index_forward(false)
                .limit(20)
                .send()
                .await?;
            if out.count != 20 {
                return Err(format!("baseline Query read {} items", out.count).into());
            }
        }
        Op::Create => {
            let mut item = item.clone();
            item.insert("PK".into(), AttributeValue::S(format!("BENCH#{org}#{n}#{}", shared::ids::object_id())));
            for index in
                ["GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK", "GSI3PK", "GSI3SK", "GSI4PK", "GSI4SK", "GSI5PK", "GSI5SK"]
            {
                item.remove(index);
            }
            state.dynamo.put_item().table_name(t).set_item(Some(item)).send().await?;
        }
    }
    Ok(started.elapsed())
}

/// One timed request: the state and the request's number in, its latency out.
type Timed = Arc<dyn Fn(Arc<AppState>, usize) -> futures::future::BoxFuture<'static, Res<Duration>> + Send + Sync>;

/// Latencies of `total` requests spread over `concurrency` tasks.
async fn latencies(state: &Arc<AppState>, concurrency: usize, total: usize, f: Timed) -> Res<Vec<f64>> {
    let per_task = total / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let (state, f) = (state.clone(), f.clone());
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    out.push(ms(f(state.clone(), task * per_task + i).await?));
                }
                Ok::<_, Box<dyn Error + Send + Sync>>(out)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

async fn request_overhead(
    settings: &Settings,
    state: &Arc<AppState>,
    secret: &str,
    org: &str,
    ids: &[String],
) -> Res<Vec<Row>> {
    let tok = Arc::new(token(secret, org)?);
    let ids = Arc::new(ids.to_vec());
    let header = state
        .dynamo
        .get_item()
        .table_name(&state.config.table_name)
        .key("PK", AttributeValue::S(shared::keys::snapshot(&Org::stored(org), &ids[0])))
        .key("SK", AttributeValue::S("META".into()))
        .send()
        .await?
        .item
        .ok_or("no snapshot header to copy")?;
    let header = Arc::new(header);
    let org = Arc::new(org.to_string());
    let mut rows = Vec::new();
    // Warm the connections of both paths.
    for op in [Op::Get, Op::List, Op::Create] {
        ours(state, &tok, op, &ids[0]).await?;
        raw(state, &org, op, &ids[0], &header, 0).await?;
    }
    for op in [Op::Get, Op::GetSameQuery, Op::List, Op::Create] {
        for concurrency in [1usize, 16] {
            let (mut ours_p50, mut ours_p99, mut base_p50, mut base_p99) = (vec![], vec![], vec![], vec![]);
            for _ in 0..settings.runs {
                let (t, i) = (tok.clone(), ids.clone());
                let mut ours_l = latencies(
                    state,
                    concurrency,
                    settings.requests,
                    Arc::new(move |s, n| {
                        let (t, i) = (t.clone(), i.clone());
                        Box::pin(async move { ours(&s, &t, op, &i[n % i.len()]).await })
                    }),
                )
                .await?;
                let (o, i, h) = (org.clone(), ids.clone(), header.clone());
                let mut base_l = latencies(
                    state,
                    concurrency,
                    settings.requests,
                    Arc::new(move |s, n| {
                        let (o, i, h) = (o.clone(), i.clone(), h.clone());
                        Box::pin(async move { raw(&s, &o, op, &i[n % i.len()], &h, n).await })
                    }),
                )
                .await?;
                ours_p50.push(percentile(&mut ours_l, 50.0));
                ours_p99.push(percentile(&mut ours_l, 99.0));
                base_p50.push(percentile(&mut base_l, 50.0));
                base_p99.push(percentile(&mut base_l, 99.0));
            }
            let note = match op {
                Op::Get => "one Query (header and message chunks) vs one GetItem".to_string(),
                Op::GetSameQuery => "our share: auth, decoding, the document; the storage request is the same".to_string(),
                Op::List => "one Query on the list index vs the same Query".to_string(),
                Op::Create => "reads the contact's conversations and messages, then one transaction of header and chunk (3 round trips) vs one PutItem".to_string(),
            };
            rows.push(Row {
                section: "2. Request overhead",
                measure: format!("{} p50, concurrency {concurrency} (vs {})", op.name(), op.baseline()),
                unit: "ms",
                ours: median(ours_p50),
                baseline: Some(median(base_p50)),
                target: Some(Target::AtMost(1.2)),
                note,
            });
            rows.push(Row {
                section: "2. Request overhead",
                measure: format!("{} p99, concurrency {concurrency} (vs {})", op.name(), op.baseline()),
                unit: "ms",
                ours: median(ours_p99),
                baseline: Some(median(base_p99)),
                target: None,
                note: String::new(),
            });
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// 3. Export throughput

/// What reading an organization's snapshots with the raw SDK costs.
struct RawRead {
    snapshots: u64,
    /// Snapshots whose messages are in chunks (the others' are in their headers).
    chunked: u64,
    bytes: u64,
    elapsed: Duration,
}

/// Reads every non-archived snapshot of `org` with the raw SDK and does nothing with it: the
/// list index page by page, and each page's message chunks by key.
async fn raw_read(state: &AppState, org: &str) -> Res<RawRead> {
    let t = &state.config.table_name;
    let started = Instant::now();
    let (mut snapshots, mut chunked, mut bytes) = (0u64, 0u64, 0u64);
    // The next page continues below the last id read, as a key condition (as the export's
    // cursor does): the emulator serves it by bisection, whereas ExclusiveStartKey makes it scan
    // the whole index partition for every page (DynamoDB serves both alike).
    let mut below = "g".to_string();
    loop {
        let page = state
            .dynamo
            .query()
            .table_name(t)
            .index_name("GSI1")
            .key_condition_expression("GSI1PK = :pk AND GSI1SK < :below")
            .expression_attribute_values(":pk", AttributeValue::S(format!("ORG#{org}#SNAPS#A0")))
            .expression_attribute_values(":below", AttributeValue::S(below.clone()))
            .scan_index_forward(false)
            // Pages of 500, as the export reads them (a DynamoDB page of 1 MB holds about as many).
            .limit(500)
            .send()
            .await?;
        if let Some(last) = page.items().last().and_then(|i| i.get("GSI1SK")).and_then(|v| v.as_s().ok()) {
            below = last.clone();
        }
        let mut keys = Vec::new();
        for item in page.items() {
            snapshots += 1;
            bytes += shared::capacity::item_size(item) as u64;
            let chunks: usize =
                item.get("chunks").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
            chunked += u64::from(chunks > 0);
            let pk = item.get("PK").cloned().ok_or("header without PK")?;
            for i in 0..chunks {
                keys.push(HashMap::from([
                    ("PK".to_string(), pk.clone()),
                    ("SK".to_string(), AttributeValue::S(format!("MSGS#{i:05}"))),
                ]));
            }
        }
        for group in keys.chunks(100) {
            let mut pending = group.to_vec();
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder().set_keys(Some(std::mem::take(&mut pending))).build()?;
                let out = state.dynamo.batch_get_item().request_items(t, request).send().await?;
                for item in out.responses.as_ref().and_then(|r| r.get(t)).into_iter().flatten() {
                    bytes += shared::capacity::item_size(item) as u64;
                }
                pending = out.unprocessed_keys.and_then(|mut u| u.remove(t)).map(|k| k.keys).unwrap_or_default();
            }
        }
        if page.last_evaluated_key.is_none() {
            break;
        }
    }
    Ok(RawRead { snapshots, chunked, bytes, elapsed: started.elapsed() })
}

async fn export_throughput(settings: &Settings, state: &Arc<AppState>, secret: &str, org: &str) -> Res<Vec<Row>> {
    let tok = token(secret, org)?;
    let formats = ["json", "jsonl", "openai", "csv"];
    // The stages of issue 15 on the `jsonl` export, measured in the same runs.
    let staged = [("jsonl", "redact=pii"), ("jsonl", "redact=pii&dedup=near")];
    let mut base_rate = Vec::new();
    let mut base_mb = Vec::new();
    let mut rates: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut mbs: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut file_bytes: HashMap<&str, u64> = HashMap::new();
    for run in 0..settings.runs {
        let base = raw_read(state, org).await?;
        if base.snapshots != settings.export_snapshots as u64 {
            return Err(format!("baseline read {} snapshots", base.snapshots).into());
        }
        base_rate.push(base.snapshots as f64 / base.elapsed.as_secs_f64());
        base_mb.push(base.bytes as f64 / 1e6 / base.elapsed.as_secs_f64());
        eprintln!("   run {}: raw read {} snapshots in {:.1} s", run + 1, base.snapshots, base.elapsed.as_secs_f64());
        let runs = formats.iter().map(|f| (*f, "")).chain(staged);
        for (format, stages) in runs {
            let query = format!("format={format}&delivery=url&{stages}");
            let label = if stages.is_empty() { format } else { stages };
            let uri = format!("/api/training/export?{query}");
            let timed = || async {
                let started = Instant::now();
                let answer = call(state, "GET", &uri, &tok, None).await?;
                Res::Ok((answer, started.elapsed().as_secs_f64()))
            };
            let ((status, body), elapsed) = again_on_503(timed, |((status, _), _)| *status).await?;
            check(status, 303, &body, "export")?;
            let answer: Value = serde_json::from_slice(&body)?;
            let items = answer["data"]["items"].as_u64().unwrap_or(0) + answer["data"]["skipped"].as_u64().unwrap_or(0);
            let bytes = answer["data"]["bytes"].as_u64().unwrap_or(0);
            if items != settings.export_snapshots as u64 {
                return Err(format!("{format} export had {items} snapshots").into());
            }
            eprintln!("   run {}: {label} {:.1} MB in {elapsed:.1} s", run + 1, bytes as f64 / 1e6);
            rates.entry(label).or_default().push(items as f64 / elapsed);
            mbs.entry(label).or_default().push(bytes as f64 / 1e6 / elapsed);
            file_bytes.insert(label, bytes);
            drop_exports(state, org).await?;
        }
    }
    let base_rate = median(base_rate);
    let base_mb = median(base_mb);
    // Taken before the rows below take the per-format figures out.
    let jsonl = rates.get("jsonl").cloned().map(median);
    let mut rows = Vec::new();
    for format in formats {
        rows.push(Row {
            section: "3. Export throughput",
            measure: format!(
                "`{format}`: snapshots/s ({} snapshots, {:.1} MB file)",
                settings.export_snapshots,
                file_bytes[format] as f64 / 1e6
            ),
            unit: "snapshots/s",
            ours: median(rates.remove(format).unwrap_or_default()),
            baseline: Some(base_rate),
            target: Some(Target::AtLeast(0.8)),
            note: "through the handler to S3 (multipart) vs raw Query + BatchGetItem of the same items".into(),
        });
        rows.push(Row {
            section: "3. Export throughput",
            measure: format!("`{format}`: MB/s of file written (baseline: MB/s of items read)"),
            unit: "MB/s",
            ours: median(mbs.remove(format).unwrap_or_default()),
            baseline: Some(base_mb),
            target: None,
            note: String::new(),
        });
    }
    for (format, stages) in staged {
        rows.push(Row {
            section: "3. Export throughput",
            measure: format!("`{format}` with `{stages}`: snapshots/s (baseline: `{format}` without)"),
            unit: "snapshots/s",
            ours: median(rates.remove(stages).unwrap_or_default()),
            baseline: jsonl,
            target: (!stages.contains("dedup")).then_some(Target::AtLeast(0.9)),
            note: "the same runs as the rows above; every message and customer field scanned".into(),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// 4. Export memory, 6. read capacity

/// One `jsonl` export of `org` through S3 by the `export-training` process, checked to answer
/// its URL and to have exported `count` snapshots: the run and its `export finished` log line.
async fn export_process(
    settings: &Settings,
    state: &AppState,
    secret: &str,
    org: &str,
    count: usize,
) -> Res<(ProcessRun, Value)> {
    let (event, _) = event("GET", "/api/training/export?format=jsonl&delivery=url", &token(secret, org)?, None)?;
    let result = run_export(settings, &state.config.table_name, &event).await?;
    check(result.status, 303, result.body.to_string().as_bytes(), "export-training")?;
    let log = export_log(&result.logs).ok_or("export-training logged no `export finished` line")?;
    let items = log["items"].as_f64().unwrap_or(0.0);
    if items as usize != count {
        return Err(format!("export-training exported {items} of {count}").into());
    }
    Ok((result, log))
}

/// The `export finished` log line's fields, from the function's JSON logs.
fn export_log(logs: &[String]) -> Option<Value> {
    logs.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find_map(|v| {
        let fields = if v.get("fields").is_some() { v["fields"].clone() } else { v.clone() };
        (fields["message"] == "export finished").then_some(fields)
    })
}

async fn export_memory(
    settings: &Settings,
    state: &Arc<AppState>,
    secret: &str,
    small: &str,
    large: &str,
) -> Res<Vec<Row>> {
    let mut peaks: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut capacity: HashMap<&str, Vec<f64>> = HashMap::new();
    for run in 0..settings.runs {
        for (label, org, count) in [("small", small, settings.memory_small), ("large", large, settings.memory_large)] {
            let (result, log) = export_process(settings, state, secret, org, count).await?;
            let items = count as f64;
            eprintln!(
                "   run {}: {count} snapshots in {:.1} s, peak RSS {:.1} MB, {} RCU",
                run + 1,
                result.response.as_secs_f64(),
                result.peak_rss as f64 / 1e6,
                log["read_capacity"]
            );
            drop_exports(state, org).await?;
            peaks.entry(label).or_default().push(result.peak_rss as f64 / (1 << 20) as f64);
            capacity.entry(label).or_default().push(log["read_capacity"].as_f64().unwrap_or(0.0) / items.max(1.0));
        }
    }
    let small_peak = median(peaks.remove("small").unwrap_or_default());
    let large_peak = median(peaks.remove("large").unwrap_or_default());
    let sized = raw_read(state, small).await?;
    // What one item per snapshot, read by a Query (sizes summed per page), would cost:
    // eventually consistent, half a unit per 4 KB.
    let ideal = sized.bytes as f64 / sized.snapshots.max(1) as f64 / 4096.0 / 2.0;
    Ok(vec![
        Row {
            section: "4. Export memory",
            measure: format!("peak RSS of `export-training`, {} snapshots (JSONL via S3)", settings.memory_small),
            unit: "MiB",
            ours: small_peak,
            baseline: None,
            target: Some(Target::Below(128.0)),
            note: String::new(),
        },
        Row {
            section: "4. Export memory",
            measure: format!("peak RSS, {} snapshots (vs {})", settings.memory_large, settings.memory_small),
            unit: "MiB",
            ours: large_peak,
            baseline: Some(small_peak),
            target: Some(Target::AtMostAndBelow(1.1, 64.0)),
            note: "memory does not grow with the export (pipelined: groups read ahead, parts uploading)".into(),
        },
        Row {
            section: "6. DynamoDB cost",
            measure: format!(
                "read capacity per exported snapshot, {} messages (vs one item's: {:.0} bytes of header and chunks / 4 KB, halved)",
                settings.messages,
                sized.bytes as f64 / sized.snapshots.max(1) as f64
            ),
            unit: "RCU",
            ours: median(capacity.remove("small").unwrap_or_default()),
            baseline: Some(ideal),
            target: Some(Target::AtMost(1.05)),
            note: format!(
                "{} of {} with their messages in chunks, which a read by key rounds up to 4 KB each",
                sized.chunked, sized.snapshots
            ),
        },
    ])
}

// ---------------------------------------------------------------------------------------------
// 5. Size

fn sizes(settings: &Settings) -> Res<Vec<Row>> {
    let mut names: Vec<String> = std::fs::read_dir(settings.root.join("functions"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let zips = settings.root.join("target/bench/zip");
    std::fs::create_dir_all(&zips)?;
    let zip = |name: &str| -> Res<u64> {
        let out = zips.join(format!("{name}.zip"));
        // The package Lambda gets: the binary as `bootstrap`, deflated (as cargo-lambda does).
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z: z.write(sys.argv[2], 'bootstrap')",
            ])
            .arg(&out)
            .arg(settings.bin_dir.join(name))
            .status()?;
        if !status.success() {
            return Err(format!("zip {name} failed").into());
        }
        Ok(std::fs::metadata(&out)?.len())
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let base_bin = std::fs::metadata(settings.bin_dir.join("bench-baseline"))?.len();
    let base_zip = zip("bench-baseline")?;
    let mut rows = Vec::new();
    for name in names {
        let bin = std::fs::metadata(settings.bin_dir.join(&name)).map_err(|e| format!("{name}: {e}"))?.len();
        let zipped = zip(&name)?;
        rows.push(Row {
            section: "5. Size",
            measure: format!("`{name}` binary / zip (baseline: minimal function)"),
            unit: "MiB",
            ours: mib(bin),
            baseline: Some(mib(base_bin)),
            target: None,
            note: format!("zip {:.2} MiB (baseline {:.2})", mib(zipped), mib(base_zip)),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Output

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    json!({
        "cpu": cpu.unwrap_or_else(|| "unknown".into()),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memoryGiB": (mem_kb as f64 / 1024.0 / 1024.0).round(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "arch": std::env::consts::ARCH,
        "rustc": std::env::var("BENCH_RUSTC").unwrap_or_default(),
        "emulator": std::env::var("BENCH_EMULATOR").unwrap_or_default(),
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
    })
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn render(rows: &[Row], machine: &Value, settings: &Settings, elapsed: Duration) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Measured {} on {} ({} cores, {} GiB, Linux {}, {}), {}, against {}; medians of {} runs ({} for cold starts); {} requests per latency case; {:.0} s in all.\n\n",
        machine["date"].as_str().unwrap_or(""),
        machine["cpu"].as_str().unwrap_or(""),
        machine["cores"],
        machine["memoryGiB"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["arch"].as_str().unwrap_or(""),
        machine["rustc"].as_str().unwrap_or(""),
        machine["emulator"].as_str().unwrap_or(""),
        settings.runs,
        settings.cold_runs,
        settings.requests,
        elapsed.as_secs_f64(),
    ));
    out.push_str(
        "| measure | unit | ours | baseline | ratio | target | met | notes |\n|---|---|---:|---:|---:|---|---|---|\n",
    );
    let mut section = "";
    for r in rows {
        if r.section != section {
            section = r.section;
            out.push_str(&format!("| **{section}** | | | | | | | |\n"));
        }
        let met = match r.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.measure,
            r.unit,
            number(r.ours),
            r.baseline.map(number).unwrap_or_default(),
            r.ratio().map(|x| format!("{x:.2}")).unwrap_or_default(),
            r.target_text(),
            met,
            r.note,
        ));
    }
    out
}
