//! Load: 32 concurrent clients send 5,000 mixed requests (create and update conversations,
//! ingest overlapping message batches, create snapshots with and without `Idempotency-Key`,
//! get, list with cursors, patch) to `local_server::serve` over real HTTP/1.1 (hyper's client,
//! one keep-alive connection per client), against the emulator started by `scripts/test.sh`.
//!
//! No answer may be a 5xx, and afterwards the stored state must be exactly what the clients
//! were told: every snapshot created is listed exactly once, and every conversation's
//! `messagesNum` is the number of distinct messages ingested into it (re-sent ids, sent
//! concurrently by several clients, count once), which is also the sum of the `inserted` counts
//! the ingests answered.
//!
//! Sizing: the emulator serves one call at a time and copies the whole table for every
//! transaction (each ingest is one), so the mix (6% conversation updates, 16% ingests, 6%
//! creates, 30% gets, 18% patches, 24% list pages) and the payloads (at most 15 distinct
//! messages per conversation, batches of 1-8, one-line contents) keep the table near 1,000
//! items; the request count stays 5,000. About 2.5 minutes on a busy 2-core machine.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::{new_org, start, token, Reply, DEADLINE};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

const CLIENTS: usize = 32;
const REQUESTS: usize = 5_000;
/// Each client creates one conversation; all of them receive messages from every client.
const CONVOS: usize = CLIENTS;
/// Explicit message ids per conversation: few enough that re-sends are common.
const IDS_PER_CONVO: u64 = 12;
/// Id-less messages per conversation (their id is derived from `ts`, `from` and `content`).
const ANON_PER_CONVO: u64 = 3;
const AGENT: &str = "load-agent";

// ---------------------------------------------------------------------------------------------
// One client: a keep-alive HTTP/1.1 connection (reopened if the server closes it)

struct Client {
    addr: SocketAddr,
    auth: String,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    /// Every request sent, by operation, with its status: the histogram.
    statuses: BTreeMap<(&'static str, u16), usize>,
    /// Time spent waiting for answers, by operation, and the longest wait.
    latency: BTreeMap<&'static str, Duration>,
    slowest: Duration,
    sent: usize,
}

impl Client {
    fn new(addr: SocketAddr, token: &str) -> Self {
        Client {
            addr,
            auth: format!("Bearer {token}"),
            sender: None,
            statuses: BTreeMap::new(),
            latency: BTreeMap::new(),
            slowest: Duration::ZERO,
            sent: 0,
        }
    }

    async fn connection(&mut self) -> &mut http1::SendRequest<Full<Bytes>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr).await.expect("connect");
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().expect("connected above")
    }

    /// Sends one request; `op` names it in the histogram.
    async fn send(
        &mut self,
        op: &'static str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let what = format!("{op}: {method} {path}");
        let started = Instant::now();
        let reply = tokio::time::timeout(DEADLINE, self.exchange(method, path, headers, body))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.sent += 1;
        *self.latency.entry(op).or_default() += started.elapsed();
        self.slowest = self.slowest.max(started.elapsed());
        *self.statuses.entry((op, reply.status)).or_default() += 1;
        reply
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::AUTHORIZATION, self.auth.as_str());
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Full::new(bytes)).map_err(|e| format!("request: {e}"))?;
        let sender = self.connection().await;
        sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let response = sender.send_request(request).await.map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes().to_vec();
        Ok(Reply { status, headers, json: serde_json::from_slice(&body).unwrap_or(Value::Null), body })
    }
}

// ---------------------------------------------------------------------------------------------
// What the clients were told, shared between them

#[derive(Default)]
struct Ledger {
    /// Snapshot ids answered by creates (an idempotent retry answers the same id).
    snapshots: Vec<String>,
    snapshot_set: HashSet<String>,
    /// Per conversation: the distinct messages acknowledged by a 2xx ingest.
    messages: HashMap<String, HashSet<String>>,
    /// Per conversation: the sum of the ingests' `inserted`.
    inserted: HashMap<String, u64>,
}

/// xorshift64*: a deterministic mix per client without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn convo_id(i: usize) -> String {
    format!("lc{i}")
}

/// Message `k` of `convo`: always the same fields, so re-sending it is a true re-send. Ids
/// `0..IDS_PER_CONVO` are sent with their id, the next `ANON_PER_CONVO` without one.
fn message(convo: &str, k: u64) -> (String, Value) {
    let from = ["user", "bot", "human"][(k % 3) as usize];
    let ts = format!("2026-03-01T{:02}:{:02}:{:02}Z", 8 + k / 3600, (k / 60) % 60, k % 60);
    let content = format!("{convo} says {k}");
    if k < IDS_PER_CONVO {
        let id = format!("m{k}");
        (format!("id:{id}"), json!({"id": id, "from": from, "content": content, "ts": ts}))
    } else {
        (format!("derived:{ts}|{from}|{content}"), json!({"from": from, "content": content, "ts": ts}))
    }
}

fn assert_status(op: &str, reply: &Reply, allowed: &[u16]) {
    assert!(reply.status < 500, "{op}: {} {}", reply.status, reply.text());
    assert!(allowed.contains(&reply.status), "{op}: {} not in {allowed:?}: {}", reply.status, reply.text());
}

// ---------------------------------------------------------------------------------------------
// The mix

async fn client(
    index: usize,
    mut client: Client,
    budget: usize,
    ledger: Arc<Mutex<Ledger>>,
    barrier: Arc<Barrier>,
) -> Client {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0x1000_0000_01B3));
    let own = convo_id(index);
    // First its own conversation, so that every ingest after the barrier finds its target.
    let body = json!({"userName": format!("Load Client {index}"), "origin": "web", "tags": ["load"]});
    let r = client.send("put-convo", "PUT", &format!("/agents/{AGENT}/convos/{own}"), &[], Some(&body)).await;
    assert_status("create convo", &r, &[201]);
    barrier.wait().await;

    let mut etags: HashMap<String, String> = HashMap::new();
    let mut n = 0u64;
    while client.sent < budget {
        n += 1;
        let left = budget - client.sent;
        let roll = rng.below(100);
        let (snapshots, ready): (Vec<String>, Vec<String>) = {
            let l = ledger.lock().expect("ledger");
            let ready = l.messages.iter().filter(|(_, m)| !m.is_empty()).map(|(c, _)| c.clone()).collect();
            (l.snapshots.clone(), ready)
        };
        // The mix, in percent (reads take over while nothing is there to read yet).
        if roll < 6 {
            // Update a conversation's header (never its contact, which snapshots look up).
            let convo = convo_id(rng.below(CONVOS as u64) as usize);
            let body = json!({"notes": format!("note {index}-{n}"), "tags": ["load", format!("t{}", rng.below(5))]});
            let r = client.send("put-convo", "PUT", &format!("/agents/{AGENT}/convos/{convo}"), &[], Some(&body)).await;
            assert_status("update convo", &r, &[200]);
        } else if roll < 22 || ready.is_empty() {
            // 1-8 distinct messages, most of them already sent by this or another client.
            let convo = convo_id(rng.below(CONVOS as u64) as usize);
            let mut picked = Vec::new();
            for _ in 0..1 + rng.below(8) {
                let k = rng.below(IDS_PER_CONVO + ANON_PER_CONVO);
                if !picked.contains(&k) {
                    picked.push(k);
                }
            }
            let (keys, messages): (Vec<String>, Vec<Value>) = picked.iter().map(|k| message(&convo, *k)).unzip();
            let body = json!({ "messages": messages });
            let r = client
                .send("ingest", "POST", &format!("/agents/{AGENT}/convos/{convo}/messages"), &[], Some(&body))
                .await;
            assert_status("ingest", &r, &[200, 201]);
            let inserted =
                r.json["data"]["inserted"].as_u64().unwrap_or_else(|| panic!("ingest: no inserted: {}", r.text()));
            assert_eq!(r.json["data"]["received"], keys.len(), "ingest: {}", r.text());
            assert_eq!(r.status == 201, inserted > 0, "ingest: 201 exactly when something was new: {}", r.text());
            let mut l = ledger.lock().expect("ledger");
            l.messages.entry(convo.clone()).or_default().extend(keys);
            *l.inserted.entry(convo).or_default() += inserted;
        } else if roll < 28 {
            // A snapshot of a contact with messages; every third with an Idempotency-Key, and
            // half of those retried with the same key and body (when the budget allows).
            let contact = &ready[rng.below(ready.len() as u64) as usize];
            let quality = ["good", "bad", "excellent"][rng.below(3) as usize];
            let body = json!({"contactId": contact, "quality": quality, "category": "load", "tags": [format!("w{index}")], "notes": format!("snapshot {index}-{n}")});
            let key = format!("load-{index}-{n}");
            let idempotent = rng.below(3) == 0;
            let headers: Vec<(&str, &str)> = if idempotent { vec![("Idempotency-Key", key.as_str())] } else { vec![] };
            let r = client.send("create-snapshot", "POST", "/api/training/snapshots", &headers, Some(&body)).await;
            assert_status("create snapshot", &r, &[201]);
            let id =
                r.json["data"]["_id"].as_str().unwrap_or_else(|| panic!("create: no _id: {}", r.text())).to_string();
            if let Some(etag) = r.header("etag") {
                etags.insert(id.clone(), etag.to_string());
            }
            if idempotent && left >= 2 && rng.below(2) == 0 {
                let again =
                    client.send("create-snapshot", "POST", "/api/training/snapshots", &headers, Some(&body)).await;
                assert_status("create snapshot (retry)", &again, &[201]);
                assert_eq!(
                    again.json["data"]["_id"],
                    id.as_str(),
                    "the retry answers the first snapshot: {}",
                    again.text()
                );
            }
            let mut l = ledger.lock().expect("ledger");
            assert!(l.snapshot_set.insert(id.clone()), "create answered an id twice: {id}");
            l.snapshots.push(id);
        } else if roll < 58 && !snapshots.is_empty() {
            let id = &snapshots[rng.below(snapshots.len() as u64) as usize];
            let r = client.send("get-snapshot", "GET", &format!("/api/training/snapshots/{id}"), &[], None).await;
            assert_status("get snapshot", &r, &[200]);
            assert_eq!(r.json["data"]["_id"], id.as_str(), "get: {}", r.text());
            if let Some(etag) = r.header("etag") {
                etags.insert(id.clone(), etag.to_string());
            }
        } else if roll < 76 && !snapshots.is_empty() {
            // Concurrent PATCHes of the same snapshots; a third with the last ETag this client saw.
            let id = &snapshots[rng.below(snapshots.len() as u64) as usize];
            let body = match rng.below(3) {
                0 => json!({"notes": format!("patched {index}-{n}")}),
                1 => json!({"tags": ["patched", format!("w{index}")], "quality": "good"}),
                _ => json!({"isArchived": rng.below(2) == 0}),
            };
            let if_match = etags.get(id).filter(|_| rng.below(3) == 0).cloned();
            let headers: Vec<(&str, &str)> = if_match.iter().map(|e| ("If-Match", e.as_str())).collect();
            let r = client
                .send("patch-snapshot", "PATCH", &format!("/api/training/snapshots/{id}"), &headers, Some(&body))
                .await;
            assert_status("patch snapshot", &r, if if_match.is_some() { &[200, 412] } else { &[200] });
            if let Some(etag) = r.header("etag").filter(|_| r.status == 200) {
                etags.insert(id.clone(), etag.to_string());
            }
        } else {
            // A list, following `nextCursor` for a second page when there is one.
            let (op, first) = if rng.below(2) == 0 {
                ("list-snapshots", format!("/api/training/snapshots?limit={}", 1 + rng.below(20)))
            } else {
                ("list-convos", format!("/agents/{AGENT}/convos?limit={}", 1 + rng.below(10)))
            };
            let r = client.send(op, "GET", &first, &[], None).await;
            assert_status(op, &r, &[200]);
            assert!(r.json["data"].is_array(), "{op}: {}", r.text());
            if let (Some(cursor), true) = (r.json["nextCursor"].as_str(), left >= 2) {
                let next = format!("{first}&cursor={}", encode(cursor));
                let r = client.send(op, "GET", &next, &[], None).await;
                assert_status(op, &r, &[200]);
            }
        }
    }
    client
}

/// Percent-encodes everything but unreserved characters, for a cursor in a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every item of a cursor-paginated list, page by page.
async fn walk(client: &mut Client, op: &'static str, first: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut target = first.to_string();
    for _ in 0..10_000 {
        let r = client.send(op, "GET", &target, &[], None).await;
        assert_status(op, &r, &[200]);
        items.extend(r.json["data"].as_array().unwrap_or_else(|| panic!("{op}: {}", r.text())).iter().cloned());
        match r.json["nextCursor"].as_str() {
            Some(cursor) => target = format!("{first}&cursor={}", encode(cursor)),
            None => return items,
        }
    }
    panic!("{op}: more than 10,000 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_mixed_requests_from_32_clients() {
    let server = start().await;
    let addr = server.addr;
    let org = new_org();
    let token = token(&org);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let barrier = Arc::new(Barrier::new(CLIENTS));

    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            // 5,000 requests split as evenly as 32 clients allow.
            let budget = REQUESTS / CLIENTS + usize::from(i < REQUESTS % CLIENTS);
            tokio::spawn(client(i, Client::new(addr, &token), budget, ledger.clone(), barrier.clone()))
        })
        .collect();
    let mut histogram: BTreeMap<(&'static str, u16), usize> = BTreeMap::new();
    let mut latency: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let mut total = 0;
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let c = task.await.expect("a client failed");
        total += c.sent;
        slowest = slowest.max(c.slowest);
        for (k, v) in c.statuses {
            *histogram.entry(k).or_default() += v;
        }
        for (k, v) in c.latency {
            *latency.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{total} requests from {CLIENTS} clients in {:.1} s: {:.0} requests/s, slowest answer {:.1} s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        slowest.as_secs_f64()
    );
    for ((op, status), n) in &histogram {
        println!("  {op:<16} {status}: {n}");
    }
    for (op, spent) in &latency {
        let n: usize = histogram.iter().filter(|((o, _), _)| o == op).map(|(_, n)| n).sum();
        println!("  {op:<16} mean latency {:.0} ms", spent.as_secs_f64() * 1000.0 / n.max(1) as f64);
    }
    assert_eq!(total, REQUESTS);
    let server_errors: usize = histogram.iter().filter(|((_, s), _)| *s >= 500).map(|(_, n)| n).sum();
    assert_eq!(server_errors, 0, "5xx answers: {histogram:?}");
    for op in
        ["put-convo", "ingest", "create-snapshot", "get-snapshot", "patch-snapshot", "list-snapshots", "list-convos"]
    {
        assert!(histogram.keys().any(|(o, s)| *o == op && *s < 300), "the mix never succeeded at {op}: {histogram:?}");
    }

    // Afterwards: the stored state is exactly what the clients were told.
    let ledger = Arc::try_unwrap(ledger).ok().expect("clients are done").into_inner().expect("ledger");
    let mut checker = Client::new(addr, &token);

    let listed =
        walk(&mut checker, "verify", "/api/training/snapshots?archived=all&limit=100&includeMessages=true").await;
    let mut seen = HashSet::new();
    for s in &listed {
        let id = s["_id"].as_str().unwrap_or_else(|| panic!("listed snapshot without _id: {s}"));
        assert!(seen.insert(id.to_string()), "snapshot {id} listed twice");
        // Whole, too: a committed header whose messages went missing would be a lost snapshot.
        let messages = s["messages"].as_array().map_or(0, Vec::len);
        assert!(
            messages > 0 && s["messageCount"] == messages,
            "snapshot {id}: {messages} messages, messageCount {}",
            s["messageCount"]
        );
    }
    assert_eq!(listed.len(), ledger.snapshots.len(), "snapshots listed vs created");
    assert_eq!(seen, ledger.snapshot_set, "the listed snapshots are exactly the created ones");

    let convos = walk(&mut checker, "verify", &format!("/agents/{AGENT}/convos?limit=100")).await;
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for c in convos {
        let id = c["id"].as_str().unwrap_or_else(|| panic!("listed convo without id: {c}")).to_string();
        assert!(by_id.insert(id.clone(), c).is_none(), "conversation {id} listed twice");
    }
    assert_eq!(by_id.len(), CONVOS, "conversations listed: {:?}", by_id.keys());
    let mut messages = 0;
    for i in 0..CONVOS {
        let id = convo_id(i);
        let c = by_id.get(&id).unwrap_or_else(|| panic!("{id} is not listed"));
        let distinct = ledger.messages.get(&id).map_or(0, HashSet::len) as u64;
        assert_eq!(c["messagesNum"].as_u64(), Some(distinct), "{id}: messagesNum vs distinct messages ingested: {c}");
        assert_eq!(ledger.inserted.get(&id).copied().unwrap_or(0), distinct, "{id}: sum of `inserted` answers");
        messages += distinct;
    }
    println!(
        "verified: {} snapshots listed once each, {CONVOS} conversations, {messages} distinct messages",
        ledger.snapshots.len()
    );
    drop(server); // shuts the server down
}
