//! Tenant isolation (OWASP API1, broken object level authorization): organization B using
//! organization A's ids, agent, contact, idempotency key and cursors gets exactly the answer
//! it gets for ids that do not exist, on every route, and no byte of A's data; A's data is
//! untouched. Export object keys and presigned URLs cannot be derived from job ids, and no
//! header we set can be injected into.

mod support;

use serde_json::{json, Value};
use shared::keys::Org;
use shared::routes::ROUTES;
use shared::AppState;
use support::{call, download, jobs_state, new_org, send, token, worker_options, Answer, Worker};

/// A random suffix, so that every marker of A's data is unique to this run.
fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The identifiers a request can carry: A's (X), or fresh ones of nothing (Y).
#[derive(Clone, Debug)]
struct Ids {
    agent: String,
    convo: String,
    contact: String,
    snapshot: String,
    job: String,
    idempotency: String,
}

impl Ids {
    fn fresh() -> Self {
        let r = random_hex();
        Self {
            // As long as A's, so that sizes in the answers match too.
            agent: format!("agent-n-{r}"),
            convo: format!("convo-n-{r}"),
            contact: format!("contact-n-{r}"),
            snapshot: shared::ids::object_id(),
            job: shared::ids::object_id(),
            idempotency: format!("idem-n-{r}"),
        }
    }

    fn pairs(&self) -> Vec<&str> {
        vec![&self.agent, &self.convo, &self.contact, &self.snapshot, &self.job, &self.idempotency]
    }
}

/// Organization A and everything it owns.
struct TenantA {
    org: String,
    token: String,
    ids: Ids,
    /// Strings that identify A's data: no answer to B may contain any of them.
    secrets: Vec<String>,
    /// A's list cursors (each list has at least two items; pages of one).
    convos_cursor: String,
    snapshots_cursor: String,
    exports_cursor: String,
    /// Message ids of A's conversation.
    message_ids: Vec<String>,
}

fn messages(ids: &[String], content: impl Fn(usize) -> String) -> Value {
    let list: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "from": if i % 2 == 0 { "user" } else { "bot" }, "content": content(i), "ts": format!("2026-05-18T13:00:{:02}.000Z", i)}))
        .collect();
    json!({ "messages": list })
}

async fn ok(state: &AppState, method: &str, uri: &str, tok: &str, body: Option<Value>, status: u16) -> Answer {
    let a = call(state, method, uri, tok, body).await;
    assert_eq!(a.status.as_u16(), status, "{method} {uri}: {}", a.body);
    a
}

/// A's conversations, snapshots, export jobs (run by the worker) and cursors.
async fn tenant_a(state: &AppState, worker: &mut Worker) -> TenantA {
    let org = new_org();
    let tok = token(&org);
    let r = random_hex();
    let ids = Ids {
        agent: format!("agent-a-{r}"),
        convo: format!("convo-a-{r}"),
        contact: format!("contact-a-{r}"),
        snapshot: String::new(),
        job: String::new(),
        idempotency: format!("idem-a-{r}"),
    };
    let name = format!("Zelda Quux{r}");
    let email = format!("zelda.{r}@tenant-a.example");
    let phone = format!("+1415{:07}", u64::from_str_radix(&r[..8], 16).unwrap_or(1) % 10_000_000);
    let notes = format!("A-private-notes-{r}");
    let content = format!("A-secret-content-{r}");
    let header = json!({"contactId": ids.contact, "userName": name, "userEmail": email, "userPhone": phone,
                        "userCompany": format!("A-Corp-{r}"), "notes": notes, "tags": ["vip"], "origin": "sms"});
    let agent = &ids.agent;
    ok(state, "PUT", &format!("/agents/{agent}/convos/{}", ids.convo), &tok, Some(header.clone()), 201).await;
    let message_ids: Vec<String> = (0..4).map(|i| format!("m{i:05}")).collect();
    let content_of = |i: usize| format!("{content}-{i}");
    ok(
        state,
        "POST",
        &format!("/agents/{agent}/convos/{}/messages", ids.convo),
        &tok,
        Some(messages(&message_ids, content_of)),
        201,
    )
    .await;
    // A second conversation of the same agent and contact, so that lists have two items.
    let convo2 = format!("{}-2", ids.convo);
    ok(state, "PUT", &format!("/agents/{agent}/convos/{convo2}"), &tok, Some(header), 201).await;
    ok(
        state,
        "POST",
        &format!("/agents/{agent}/convos/{convo2}/messages"),
        &tok,
        Some(messages(&message_ids[..2], content_of)),
        201,
    )
    .await;

    let snap_body = json!({"contactId": ids.contact, "notes": notes, "tags": ["a-only"], "quality": "good"});
    let first = call(state, "POST", "/api/training/snapshots", &tok, Some(snap_body.clone())).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let snap = send(
        state,
        "POST",
        "/api/training/snapshots",
        &[
            ("authorization", &format!("Bearer {tok}")),
            ("content-type", "application/json"),
            ("idempotency-key", &ids.idempotency),
        ],
        snap_body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(snap.status, 201, "{}", snap.body);
    let snapshot = snap.body["data"]["_id"].as_str().expect("snapshot id").to_string();

    let job = ok(state, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl"})), 202).await;
    ok(state, "POST", "/api/training/exports", &tok, Some(json!({"source": "conversations", "agentId": agent})), 202)
        .await;
    let job_id = job.body["data"]["id"].as_str().expect("job id").to_string();
    worker.drain(state, worker_options()).await;
    let done = ok(state, "GET", &format!("/api/training/exports/{job_id}"), &tok, None, 200).await;
    assert_eq!(done.body["data"]["status"], "succeeded", "{}", done.body);
    let (status, _, file) = download(done.body["data"]["url"].as_str().expect("url")).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&file).contains(&content), "A's export holds A's data (the leak checks can fail)");

    let cursor = |a: &Answer| {
        a.body["nextCursor"].as_str().map(str::to_string).unwrap_or_else(|| panic!("a next page: {}", a.body))
    };
    let convos_cursor = cursor(&ok(state, "GET", &format!("/agents/{agent}/convos?limit=1"), &tok, None, 200).await);
    let snapshots_cursor = cursor(&ok(state, "GET", "/api/training/snapshots?limit=1", &tok, None, 200).await);
    let exports_cursor = cursor(&ok(state, "GET", "/api/training/exports?limit=1", &tok, None, 200).await);
    // A's cursors work for A (so B's 400 is about B, not about the cursor).
    ok(state, "GET", &format!("/agents/{agent}/convos?limit=1&cursor={convos_cursor}"), &tok, None, 200).await;
    ok(state, "GET", &format!("/api/training/snapshots?limit=1&cursor={snapshots_cursor}"), &tok, None, 200).await;
    ok(state, "GET", &format!("/api/training/exports?limit=1&cursor={exports_cursor}"), &tok, None, 200).await;

    let secrets = vec![
        org.clone(),
        name,
        email,
        phone,
        format!("A-Corp-{r}"),
        notes,
        content,
        snapshot.clone(),
        job_id.clone(),
        "a-only".into(),
    ];
    TenantA {
        org,
        token: tok,
        ids: Ids { snapshot, job: job_id, ..ids },
        secrets,
        convos_cursor,
        snapshots_cursor,
        exports_cursor,
        message_ids,
    }
}

/// Fails when `a` (status line, headers or body) contains any of A's identifying strings.
fn assert_no_leak(a: &Answer, secrets: &[String], what: &str) {
    let body = String::from_utf8_lossy(&a.bytes);
    for s in secrets {
        assert!(!body.contains(s.as_str()), "{what}: the answer contains A's {s:?}: {body}");
        for (name, value) in &a.headers {
            let v = String::from_utf8_lossy(value.as_bytes());
            assert!(!v.contains(s.as_str()), "{what}: header {name} contains A's {s:?}");
        }
    }
}

/// Keys whose values differ between two equal answers (times, fresh URLs, stamped names).
const VOLATILE: &[&str] = &[
    "createdAt",
    "updatedAt",
    "ts",
    "exportDate",
    "startedAt",
    "finishedAt",
    "expiresAt",
    "fileExpiresAt",
    "url",
    "key",
    // An object's address holds its random key; a file's digest covers its organization's ids.
    "s3Uri",
    "sha256",
];

fn mask_digits(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A file's name (`training-data-<ms>.jsonl`), stamped with the time.
fn is_file_name(name: &str) -> bool {
    [".json", ".jsonl", ".csv"].iter().any(|ext| name.ends_with(ext))
}

fn mask(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if VOLATILE.contains(&k.as_str()) && !v.is_null() {
                    *v = json!("<volatile>");
                } else if k == "fileName" || (k == "name" && v.as_str().is_some_and(is_file_name)) {
                    *v = json!(mask_digits(v.as_str().unwrap_or_default()));
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(mask),
        _ => {}
    }
}

/// `text` with every id of `from` replaced by the one of `to` at the same position.
fn translate(text: &str, from: &[&str], to: &[&str]) -> String {
    from.iter().zip(to).fold(text.to_string(), |t, (f, to)| t.replace(f, to))
}

/// The answer as compared: status, header names, header values and body, with Y's ids
/// translated to X's and volatile values masked.
fn comparable(a: &Answer, from: &[&str], to: &[&str]) -> (u16, Vec<(String, String)>, Value) {
    let text = translate(&String::from_utf8_lossy(&a.bytes), from, to);
    let mut body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    mask(&mut body);
    let mut headers: Vec<(String, String)> = a
        .headers
        .iter()
        .map(|(name, value)| {
            let v = translate(&String::from_utf8_lossy(value.as_bytes()), from, to);
            let v = match name.as_str() {
                // A presigned URL is fresh every time; a file name is stamped with the time.
                "location" if v.starts_with("http") => "<presigned>".to_string(),
                "content-disposition" => mask_digits(&v),
                _ => v,
            };
            (name.to_string(), v)
        })
        .collect();
    headers.sort();
    (a.status.as_u16(), headers, body)
}

/// One request shaped by a set of ids.
struct Step {
    route: &'static str,
    method: &'static str,
    uri: String,
    body: Option<Value>,
    idempotency: Option<String>,
}

fn step(route: &'static str, method: &'static str, uri: String, body: Option<Value>) -> Step {
    Step { route, method, uri, body, idempotency: None }
}

async fn run(state: &AppState, tok: &str, s: &Step) -> Answer {
    let auth = format!("Bearer {tok}");
    let mut headers = vec![("authorization", auth.as_str())];
    let bytes = s.body.as_ref().map(|b| b.to_string().into_bytes()).unwrap_or_default();
    if !bytes.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    if let Some(k) = &s.idempotency {
        headers.push(("idempotency-key", k.as_str()));
    }
    let a = send(state, s.method, &s.uri, &headers, &bytes).await;
    let (route, _) = shared::routes::find(s.method, s.uri.split('?').next().unwrap_or_default()).expect("route");
    assert_eq!(route.function, s.route, "{} {} is served by {}", s.method, s.uri, s.route);
    a
}

/// B's requests before B has anything: reads, then writes that must fail or stay in B.
fn probes(i: &Ids, message_ids: &[String]) -> Vec<Step> {
    let (ag, cv, ct, sn, jb) = (&i.agent, &i.convo, &i.contact, &i.snapshot, &i.job);
    let mut steps = vec![
        step("list-convos", "GET", format!("/agents/{ag}/convos"), None),
        step("list-convos", "GET", format!("/agents/{ag}/convos?limit=1"), None),
        step("export-convos", "GET", format!("/agents/{ag}/convos/export"), None),
        step("export-convos", "GET", format!("/agents/{ag}/convos/export?format=csv"), None),
        step("export-convos", "GET", format!("/agents/{ag}/convos/export?delivery=url"), None),
        step("export-convo", "GET", format!("/agents/{ag}/convos/{cv}/export"), None),
        step("export-convo", "GET", format!("/agents/{ag}/convos/{cv}/export?format=csv"), None),
        step("get-snapshot", "GET", format!("/api/training/snapshots/{sn}"), None),
        step("list-snapshots", "GET", format!("/api/training/snapshots?contactId={ct}&includeMessages=true"), None),
        step("list-snapshots", "GET", format!("/api/training/snapshots?contactId={ct}&archived=all"), None),
        step("export-training", "GET", format!("/api/training/export?contactId={ct}"), None),
        step(
            "export-training",
            "GET",
            format!("/api/training/export?contactId={ct}&format=csv&includeArchived=true"),
            None,
        ),
        step("export-training", "GET", format!("/api/training/export?contactId={ct}&format=jsonl&delivery=url"), None),
        step("get-export", "GET", format!("/api/training/exports/{jb}"), None),
        step(
            "update-snapshot",
            "PATCH",
            format!("/api/training/snapshots/{sn}"),
            Some(json!({"notes": "B was here", "isArchived": true})),
        ),
        step("delete-snapshot", "DELETE", format!("/api/training/snapshots/{sn}"), None),
        step("create-snapshot", "POST", "/api/training/snapshots".into(), Some(json!({"contactId": ct}))),
        step(
            "create-snapshot",
            "POST",
            "/api/training/snapshots".into(),
            Some(json!({"contactId": ct, "messageIds": message_ids})),
        ),
        step(
            "create-export",
            "POST",
            "/api/training/exports".into(),
            Some(json!({"source": "conversations", "agentId": ag, "convoId": cv})),
        ),
        step(
            "create-export",
            "POST",
            "/api/training/exports".into(),
            Some(json!({"format": "jsonl", "contactId": ct})),
        ),
        step(
            "create-export",
            "POST",
            "/api/training/exports".into(),
            Some(json!({"source": "conversations", "agentId": ag, "format": "csv"})),
        ),
        step(
            "ingest-messages",
            "POST",
            format!("/agents/{ag}/convos/{cv}/messages"),
            Some(messages(message_ids, |i| format!("B's own {i}"))),
        ),
        // Now B writes under the same names: its own data, never A's.
        step("put-convo", "PUT", format!("/agents/{ag}/convos/{cv}"), Some(json!({"notes": "B's notes"}))),
        step(
            "ingest-messages",
            "POST",
            format!("/agents/{ag}/convos/{cv}/messages"),
            Some(messages(message_ids, |i| format!("B's own {i}"))),
        ),
        step("list-convos", "GET", format!("/agents/{ag}/convos"), None),
        step("export-convo", "GET", format!("/agents/{ag}/convos/{cv}/export"), None),
        step("export-convos", "GET", format!("/agents/{ag}/convos/export?format=csv"), None),
        step("create-snapshot", "POST", "/api/training/snapshots".into(), Some(json!({"contactId": ct}))),
    ];
    // The same idempotency key and body as A's snapshot: no replay of A's answer.
    steps.push(Step {
        idempotency: Some(i.idempotency.clone()),
        ..step(
            "create-snapshot",
            "POST",
            "/api/training/snapshots".into(),
            Some(json!({"contactId": ct, "notes": "x"})),
        )
    });
    steps
}

#[tokio::test]
async fn another_organization_gets_the_answers_of_nonexistent_ids_on_every_route() {
    let started = std::time::Instant::now();
    let (state, mut worker) = jobs_state().await;
    let a = tenant_a(&state, &mut worker).await;
    let b_org = new_org();
    let b = token(&b_org);
    let x = a.ids.clone();
    let y = Ids::fresh();
    let (mut from, mut to): (Vec<String>, Vec<String>) =
        (y.pairs().iter().map(|s| s.to_string()).collect(), x.pairs().iter().map(|s| s.to_string()).collect());

    let xs = probes(&x, &a.message_ids);
    let ys = probes(&y, &a.message_ids);
    let mut covered: std::collections::BTreeSet<&str> = Default::default();
    let mut b_jobs = Vec::new();
    for (sx, sy) in xs.iter().zip(&ys) {
        let what = format!("{} {} (B with A's ids)", sx.method, sx.uri);
        let ax = run(&state, &b, sx).await;
        let ay = run(&state, &b, sy).await;
        assert_no_leak(&ax, &a.secrets, &what);
        if sx.route == "create-export" && ax.status == 202 {
            // B's own new jobs: pair them so that their ids translate too.
            let (jx, jy) = (ax.body["data"]["id"].as_str().expect("id"), ay.body["data"]["id"].as_str().expect("id"));
            from.push(jy.to_string());
            to.push(jx.to_string());
            b_jobs.push((jx.to_string(), jy.to_string()));
        }
        let (f, t): (Vec<&str>, Vec<&str>) =
            (from.iter().map(String::as_str).collect(), to.iter().map(String::as_str).collect());
        assert_eq!(
            comparable(&ax, &[], &[]),
            comparable(&ay, &f, &t),
            "{what}: the same answer as for ids that do not exist"
        );
        if ax.status == 303 {
            let key = ax.body["data"]["key"].as_str().expect("key");
            assert!(key.starts_with(&format!("exports/{b_org}/")), "{what}: B's export is stored under B: {key}");
            let (status, _, file) = download(ax.body["data"]["url"].as_str().expect("url")).await;
            assert_eq!(status, 200);
            assert_no_leak(
                &Answer { status: http::StatusCode::OK, headers: Default::default(), body: Value::Null, bytes: file },
                &a.secrets,
                &what,
            );
        }
        covered.insert(sx.route);
    }

    // B's jobs over A's names run in B's organization and export none of A's data.
    worker.drain(&state, worker_options()).await;
    assert_eq!(b_jobs.len(), 2, "two of B's job requests were accepted for both kinds of ids");
    for (jx, jy) in &b_jobs {
        let what = format!("B's job {jx}");
        let ax = ok(&state, "GET", &format!("/api/training/exports/{jx}"), &b, None, 200).await;
        let ay = ok(&state, "GET", &format!("/api/training/exports/{jy}"), &b, None, 200).await;
        assert_eq!(ax.body["data"]["status"], "succeeded", "{}", ax.body);
        assert_no_leak(&ax, &a.secrets, &what);
        let (f, t): (Vec<&str>, Vec<&str>) =
            (from.iter().map(String::as_str).collect(), to.iter().map(String::as_str).collect());
        assert_eq!(comparable(&ax, &[], &[]), comparable(&ay, &f, &t), "{what}");
        let (status, _, fx) = download(ax.body["data"]["url"].as_str().expect("url")).await;
        let (_, _, fy) = download(ay.body["data"]["url"].as_str().expect("url")).await;
        assert_eq!(status, 200);
        assert_no_leak(
            &Answer { status: http::StatusCode::OK, headers: Default::default(), body: Value::Null, bytes: fx.clone() },
            &a.secrets,
            &what,
        );
        assert_eq!(
            mask_digits(&String::from_utf8_lossy(&fx)),
            mask_digits(&translate(&String::from_utf8_lossy(&fy), &f, &t)),
            "{what}: the same file"
        );
    }
    let list = ok(&state, "GET", "/api/training/exports", &b, None, 200).await;
    assert_no_leak(&list, &a.secrets, "B's job list");
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(4), "B sees only its own four jobs");
    let list = ok(&state, "GET", "/api/training/snapshots?archived=all", &b, None, 200).await;
    assert_eq!(list.body["data"], json!([]), "B has no snapshot");
    covered.insert("list-exports");

    // A's cursors in B's hands: exactly a forged cursor's answer.
    let forge = |c: &str| {
        let mut c = c.to_string();
        let last = c.pop().expect("cursor");
        c.push(if last == 'A' { 'B' } else { 'A' });
        c
    };
    for (uri, cursor) in [
        (format!("/agents/{}/convos?limit=1", x.agent), &a.convos_cursor),
        ("/api/training/snapshots?limit=1".to_string(), &a.snapshots_cursor),
        ("/api/training/exports?limit=1".to_string(), &a.exports_cursor),
    ] {
        let what = format!("{uri} with A's cursor");
        let stolen = ok(&state, "GET", &format!("{uri}&cursor={cursor}"), &b, None, 400).await;
        let forged = ok(&state, "GET", &format!("{uri}&cursor={}", forge(cursor)), &b, None, 400).await;
        let garbage = ok(&state, "GET", &format!("{uri}&cursor=bm90LWEtY3Vyc29y.c2ln"), &b, None, 400).await;
        assert_no_leak(&stolen, &a.secrets, &what);
        assert_eq!(
            comparable(&stolen, &[], &[]),
            comparable(&forged, &[], &[]),
            "{what}: the same answer as a forged cursor"
        );
        assert_eq!(comparable(&stolen, &[], &[]), comparable(&garbage, &[], &[]), "{what}");
        let code = if uri.starts_with("/agents") { ("code", "BAD_REQUEST") } else { ("error", "VALIDATION_ERROR") };
        assert_eq!(stolen.body[code.0], code.1, "{what}: {}", stolen.body);
    }

    let mut missing: Vec<&str> = ROUTES.iter().map(|r| r.function).filter(|f| !covered.contains(f)).collect();
    missing.sort();
    assert!(missing.is_empty(), "every route is probed; not yet: {missing:?}");

    // A's data is whole: B's PATCH, DELETE, ingest and PUT under A's names changed nothing of A.
    let convos = ok(&state, "GET", &format!("/agents/{}/convos", x.agent), &a.token, None, 200).await;
    let mine = convos.body["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["id"] == x.convo.as_str())
        .cloned()
        .expect("A's convo");
    assert_eq!(mine["messagesNum"], 4, "{mine}");
    assert_eq!(mine["userName"], a.secrets[1].as_str());
    assert_eq!(mine["notes"], a.secrets[5].as_str());
    let export =
        ok(&state, "GET", &format!("/agents/{}/convos/{}/export", x.agent, x.convo), &a.token, None, 200).await;
    assert!(!String::from_utf8_lossy(&export.bytes).contains("B's own"), "B's messages are not in A's conversation");
    let snap = ok(&state, "GET", &format!("/api/training/snapshots/{}", x.snapshot), &a.token, None, 200).await;
    assert_eq!(snap.body["data"]["notes"], a.secrets[5].as_str());
    assert_eq!(snap.body["data"]["isArchived"], false);
    ok(&state, "GET", &format!("/api/training/exports/{}", x.job), &a.token, None, 200).await;
    let replay = send(
        &state,
        "POST",
        "/api/training/snapshots",
        &[
            ("authorization", &format!("Bearer {}", a.token)),
            ("content-type", "application/json"),
            ("idempotency-key", &x.idempotency),
        ],
        json!({"contactId": x.contact, "notes": a.secrets[5], "tags": ["a-only"], "quality": "good"})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(replay.body["data"]["_id"], x.snapshot.as_str(), "A's key still replays A's snapshot: {}", replay.body);
    assert_eq!(a.org.len(), 24);
    eprintln!("{} probe pairs in {:?}", xs.len(), started.elapsed());
}

/// The 128 random bits of an object key: `exports/<org>/<kind>/<date>/<random>/<file>`.
fn random_part<'k>(key: &'k str, org: &str, kind: &str) -> &'k str {
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 6, "{key}");
    assert_eq!(&parts[..3], ["exports", org, kind], "{key}");
    assert!(chrono::NaiveDate::parse_from_str(parts[3], "%Y-%m-%d").is_ok(), "{key}");
    assert!(parts[4].len() == 32 && parts[4].bytes().all(|b| b.is_ascii_hexdigit()), "128 bits in hex: {key}");
    parts[4]
}

fn assert_unrelated(random: &str, job_id: &str, what: &str) {
    // A job id is 8 hex of seconds, 10 of per-process randomness and a 6-hex counter.
    for part in [&job_id[..8], &job_id[8..18], &job_id[18..]] {
        assert!(!random.contains(part), "{what}: {random} contains {part} of the job id {job_id}");
    }
}

#[tokio::test]
async fn export_keys_and_urls_are_random_and_not_derived_from_ids() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    support::seed_contact(&state, &tok, "ag", "k1", 2, |i| format!("line {i}")).await;
    ok(&state, "POST", "/api/training/snapshots", &tok, Some(json!({"contactId": "k1"})), 201).await;

    // Two jobs with identical parameters, created back to back.
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let a = ok(&state, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl"})), 202).await;
        assert!(a.body["data"].get("key").is_none(), "a job never shows its key: {}", a.body);
        jobs.push(a.body["data"]["id"].as_str().expect("id").to_string());
    }
    worker.drain(&state, worker_options()).await;
    let store = shared::jobs::JobStore::new(&state);
    let mut randoms = Vec::new();
    for id in &jobs {
        let job = store.get(&Org::stored(org.as_str()), id).await.expect("get").expect("job");
        let random = random_part(&job.key, &org, "training").to_string();
        assert!(!job.key.contains(id.as_str()), "the key does not contain the job id: {}", job.key);
        assert_unrelated(&random, id, "job key");
        let view = ok(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None, 200).await;
        assert!(view.body["data"].get("key").is_none(), "{}", view.body);
        let url = view.body["data"]["url"].as_str().expect("url");
        assert!(url.contains(&random), "the URL points at the job's object");
        assert!(!url.contains(id.as_str()), "the URL does not contain the job id: {url}");
        assert!(
            url.contains(&format!("X-Amz-Expires={}", state.config.export_url_ttl_seconds)),
            "the URL lives EXPORT_URL_TTL_SECONDS: {url}"
        );
        // A fresh URL on every read, for the same object.
        let again = ok(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None, 200).await;
        assert!(again.body["data"]["url"].as_str().expect("url").contains(&random));
        randoms.push(random);
    }
    let bits = |h: &str| u128::from_str_radix(h, 16).expect("hex");
    let differing = (bits(&randoms[0]) ^ bits(&randoms[1])).count_ones();
    // Independent 128-bit values differ in 64 bits on average; a counter or a hash of
    // neighbouring ids would differ in few (the chance of < 24 by luck is below 1e-6).
    assert!(differing >= 24, "identical jobs get unrelated keys: {randoms:?} differ in {differing} bits");

    // Synchronous exports through S3: the same for their keys.
    let mut sync = Vec::new();
    for _ in 0..2 {
        let a = ok(&state, "GET", "/api/training/export?format=jsonl&delivery=url", &tok, None, 303).await;
        sync.push(random_part(a.body["data"]["key"].as_str().expect("key"), &org, "training").to_string());
    }
    assert!((bits(&sync[0]) ^ bits(&sync[1])).count_ones() >= 24, "{sync:?}");
    assert!(!randoms.contains(&sync[0]) && !randoms.contains(&sync[1]));
}

/// Values that must never reach a header: CR/LF, quotes, semicolons, key separators, slashes,
/// non-ASCII, all percent-encoded as a client would send them in a path or query.
const HOSTILE: &[&str] = &[
    "a%0D%0ASet-Cookie:%20x=1",
    "a%0Ab",
    "a%0Db",
    "a%22b",
    "a%22%3B%20filename=%22evil.sh",
    "a%3Bb",
    "a%23SNAP",
    "a%2Fb",
    "%C3%A9t%C3%A9",
    "a%E2%80%A8b",
    "a%00b",
    "a%20b",
    "..",
];

fn assert_clean_headers(a: &Answer, what: &str) {
    for (name, value) in &a.headers {
        let v = value.as_bytes();
        assert!(!v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{what}: header {name} carries a control character");
        assert!(v.is_ascii(), "{what}: header {name} is ASCII");
    }
    if let Some(cd) = a.headers.get("content-disposition") {
        let cd = cd.to_str().expect("ASCII");
        let name = cd
            .strip_prefix("attachment; filename=\"")
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{what}: {cd}"));
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "{what}: a quoted name of safe characters only: {cd}"
        );
    }
}

#[tokio::test]
async fn headers_cannot_be_injected_through_ids_formats_or_names() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    support::seed_contact(&state, &tok, "ag", "k1", 2, |i| format!("line {i}")).await;
    let snap = ok(&state, "POST", "/api/training/snapshots", &tok, Some(json!({"contactId": "k1"})), 201).await;
    let snapshot = snap.body["data"]["_id"].as_str().expect("id").to_string();

    // Hostile path parameters and query values: 400 in the route's envelope, clean headers.
    let mut checked = 0;
    for bad in HOSTILE {
        let requests: Vec<(&str, String, Option<Value>, &str)> = vec![
            ("PUT", format!("/agents/{bad}/convos/c1"), Some(json!({})), "code"),
            ("PUT", format!("/agents/ag/convos/{bad}"), Some(json!({})), "code"),
            (
                "POST",
                format!("/agents/ag/convos/{bad}/messages"),
                Some(messages(&["m1".into()], |_| "x".into())),
                "code",
            ),
            ("GET", format!("/agents/{bad}/convos"), None, "code"),
            ("GET", format!("/agents/{bad}/convos/export"), None, "code"),
            ("GET", format!("/agents/ag/convos/{bad}/export"), None, "code"),
            ("GET", format!("/agents/ag/convos/export?format={bad}"), None, "code"),
            ("GET", format!("/agents/ag/convos/convo-k1/export?format={bad}"), None, "code"),
            ("GET", format!("/agents/ag/convos?cursor={bad}"), None, "code"),
            ("GET", format!("/api/training/snapshots/{bad}"), None, "error"),
            ("PATCH", format!("/api/training/snapshots/{bad}"), Some(json!({"notes": "n"})), "error"),
            ("DELETE", format!("/api/training/snapshots/{bad}"), None, "error"),
            ("GET", format!("/api/training/exports/{bad}"), None, "error"),
            ("GET", format!("/api/training/export?format={bad}"), None, "error"),
            ("GET", format!("/api/training/export?delivery={bad}"), None, "error"),
            ("GET", format!("/api/training/export?contactId={bad}"), None, "error"),
            ("GET", format!("/api/training/snapshots?contactId={bad}"), None, "error"),
            ("GET", format!("/api/training/exports?cursor={bad}"), None, "error"),
        ];
        for (method, uri, body, code_field) in requests {
            let what = format!("{method} {uri}");
            let a = call(&state, method, &uri, &tok, body).await;
            assert_clean_headers(&a, &what);
            assert_eq!(a.status.as_u16(), 400, "{what}: {}", a.body);
            let code = if code_field == "code" { "BAD_REQUEST" } else { "VALIDATION_ERROR" };
            assert_eq!(a.body[code_field], code, "{what}: {}", a.body);
            assert!(a.headers.get("content-disposition").is_none() && a.headers.get("location").is_none(), "{what}");
            checked += 1;
        }
    }

    // The same values in a job's body: 400, no job.
    for bad in ["a\r\nSet-Cookie: x=1", "a\"b", "a;b", "été", "a#SNAP", "a/b", "a\u{2028}b"] {
        for body in [
            json!({"source": "conversations", "agentId": bad}),
            json!({"source": "conversations", "agentId": "ag", "convoId": bad}),
            json!({"format": bad}),
            json!({"contactId": bad}),
        ] {
            let a = call(&state, "POST", "/api/training/exports", &tok, Some(body.clone())).await;
            assert_clean_headers(&a, &body.to_string());
            assert_eq!(a.status, 400, "{body}: {}", a.body);
            assert_eq!(a.body["error"], "VALIDATION_ERROR");
            assert!(a.headers.get("location").is_none());
        }
    }
    assert!(worker.pending().is_empty(), "no job was created from a hostile body");

    // Ids that are valid but carry characters a file name must not (`:` and `@`): the file
    // name keeps only safe characters, inline, in S3 and in the job's Location.
    let (agent, convo) = ("ag:x@y.z", "c:1@2");
    ok(
        &state,
        "PUT",
        &format!("/agents/{agent}/convos/{convo}"),
        &tok,
        Some(json!({"userName": "Quote \" Semi ; Line\r\nBreak"})),
        201,
    )
    .await;
    ok(
        &state,
        "POST",
        &format!("/agents/{agent}/convos/{convo}/messages"),
        &tok,
        Some(messages(&["m1".into()], |_| "x\r\ny".into())),
        201,
    )
    .await;
    for uri in [
        format!("/agents/{agent}/convos/export"),
        format!("/agents/{agent}/convos/export?format=csv"),
        format!("/agents/{agent}/convos/{convo}/export"),
        format!("/agents/{agent}/convos/{convo}/export?format=csv"),
        format!("/agents/{agent}/convos/{convo}/export?delivery=url"),
        "/api/training/export?format=csv".to_string(),
        "/api/training/export?format=openai&system=a%0D%0Ab".to_string(),
    ] {
        let a = call(&state, "GET", &uri, &tok, None).await;
        assert!(matches!(a.status.as_u16(), 200 | 303), "{uri}: {}", a.body);
        assert_clean_headers(&a, &uri);
        if a.status == 200 {
            assert!(a.headers.get("content-disposition").is_some(), "{uri}: an attachment");
        } else {
            let (status, headers, _) = download(a.headers["location"].to_str().expect("location")).await;
            assert_eq!(status, 200);
            let cd = headers.get("content-disposition").and_then(|v| v.to_str().ok()).unwrap_or_default();
            assert!(
                cd.starts_with("attachment; filename=\"conversation-c12-") && !cd.contains(':'),
                "{uri}: the stored object's name: {cd}"
            );
        }
        checked += 1;
    }
    let job = ok(
        &state,
        "POST",
        "/api/training/exports",
        &tok,
        Some(json!({"source": "conversations", "agentId": agent, "convoId": convo})),
        202,
    )
    .await;
    assert_clean_headers(&job, "job");
    let id = job.body["data"]["id"].as_str().expect("id");
    assert_eq!(job.headers["location"], format!("/api/training/exports/{id}").as_str());
    worker.drain(&state, worker_options()).await;
    let done = ok(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None, 200).await;
    let (_, headers, _) = download(done.body["data"]["url"].as_str().expect("url")).await;
    let cd = headers.get("content-disposition").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(cd.starts_with("attachment; filename=\"conversation-c12-") && cd.ends_with(".json\""), "{cd}");

    // ETag comes from the stored document, never from If-Match.
    let patch = send(
        &state,
        "PATCH",
        &format!("/api/training/snapshots/{snapshot}"),
        &[
            ("authorization", &format!("Bearer {tok}")),
            ("content-type", "application/json"),
            ("if-match", "\"x\"; evil=\"1\""),
        ],
        br#"{"notes":"n"}"#,
    )
    .await;
    assert_clean_headers(&patch, "PATCH with a hostile If-Match");
    assert!(matches!(patch.status.as_u16(), 400 | 412), "{}", patch.body);
    assert!(patch.headers.get("etag").is_none_or(|e| !e.to_str().unwrap_or_default().contains("evil")));
    eprintln!("{checked} hostile requests");
}
