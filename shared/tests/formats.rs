//! The fine-tune formats against their targets' documented rules (../shared/reference/
//! training-formats.md), with a checker written from that documentation rather than from our
//! code: every line of every chat format passes it, and every conversation that breaks a rule
//! is left out with its reason, on the synchronous route and in an export job alike.

mod support;

use serde_json::{json, Value};
use support::{call, download, jobs_state, new_org, token, worker_options, Answer};

/// Strings Bedrock refuses in any text (its validator compares case-insensitively).
const RESERVED: &[&str] =
    &["System:", "User:", "Bot:", "Assistant:", "Thought:", "[EOS]", "<image>", "<video>", "<unk>"];

fn text_ok(v: &Value) -> Result<&str, String> {
    match v.as_str() {
        Some(t) if !t.trim().is_empty() => Ok(t),
        _ => Err(format!("not a non-empty text: {v}")),
    }
}

fn only_keys(v: &Value, allowed: &[&str]) -> Result<(), String> {
    let obj = v.as_object().ok_or(format!("not an object: {v}"))?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unexpected key {k}")),
        None => Ok(()),
    }
}

/// Roles alternate, the first is `first`, the last is `last`.
fn alternates(roles: &[&str], first: &str, last: &str) -> Result<(), String> {
    if roles.len() < 2 || roles[0] != first || roles[roles.len() - 1] != last {
        return Err(format!("roles must run {first} .. {last}, at least one pair: {roles:?}"));
    }
    if roles.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("roles must alternate: {roles:?}"));
    }
    Ok(())
}

/// One line of `format` against its target's rules; answers the line's texts.
fn check(format: &str, line: &Value) -> Result<Vec<String>, String> {
    let mut texts = Vec::new();
    match format {
        "bedrock" => {
            only_keys(line, &["schemaVersion", "system", "messages"])?;
            if line["schemaVersion"] != "bedrock-conversation-2024" {
                return Err("schemaVersion".into());
            }
            if let Some(system) = line.get("system") {
                for block in system.as_array().ok_or("system is a list")? {
                    only_keys(block, &["text"])?;
                    texts.push(text_ok(&block["text"])?.to_string());
                }
            }
            let messages = line["messages"].as_array().ok_or("messages is a list")?;
            let mut roles = Vec::new();
            for m in messages {
                only_keys(m, &["role", "content"])?;
                roles.push(m["role"].as_str().ok_or("role")?);
                let content = m["content"].as_array().ok_or("content is a list")?;
                if content.is_empty() {
                    return Err("empty content".into());
                }
                for block in content {
                    only_keys(block, &["text"])?;
                    texts.push(text_ok(&block["text"])?.to_string());
                }
            }
            alternates(&roles, "user", "assistant")?;
            let lower: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
            if let Some(r) = RESERVED.iter().find(|r| lower.iter().any(|t| t.contains(&r.to_lowercase()))) {
                return Err(format!("reserved {r}"));
            }
        }
        "vertex" => {
            only_keys(line, &["systemInstruction", "contents"])?;
            if let Some(system) = line.get("systemInstruction") {
                only_keys(system, &["parts"])?;
                for part in system["parts"].as_array().ok_or("parts")? {
                    texts.push(text_ok(&part["text"])?.to_string());
                }
            }
            let mut roles = Vec::new();
            for c in line["contents"].as_array().ok_or("contents is a list")? {
                only_keys(c, &["role", "parts"])?;
                roles.push(c["role"].as_str().ok_or("role")?);
                for part in c["parts"].as_array().ok_or("parts")? {
                    only_keys(part, &["text"])?;
                    texts.push(text_ok(&part["text"])?.to_string());
                }
            }
            alternates(&roles, "user", "model")?;
        }
        "sharegpt" => {
            only_keys(line, &["conversations", "system"])?;
            if let Some(system) = line.get("system") {
                texts.push(text_ok(system)?.to_string());
            }
            let turns = line["conversations"].as_array().ok_or("conversations is a list")?;
            for t in turns {
                only_keys(t, &["from", "value"])?;
                if !matches!(t["from"].as_str(), Some("human" | "gpt")) {
                    return Err(format!("from {}", t["from"]));
                }
                texts.push(text_ok(&t["value"])?.to_string());
            }
            if !turns.iter().any(|t| t["from"] == "gpt") {
                return Err("no gpt turn".into());
            }
        }
        "openai" => {
            only_keys(line, &["messages"])?;
            let messages = line["messages"].as_array().ok_or("messages is a list")?;
            for m in messages {
                only_keys(m, &["role", "content", "name", "function_call", "weight"])?;
                if !matches!(m["role"].as_str(), Some("system" | "user" | "assistant")) {
                    return Err(format!("role {}", m["role"]));
                }
                texts.push(text_ok(&m["content"])?.to_string());
            }
            if !messages.iter().any(|m| m["role"] == "assistant") {
                return Err("no assistant message".into());
            }
        }
        other => return Err(format!("no checker for {other}")),
    }
    Ok(texts)
}

/// The conversations of the test, by contact: (from, text) in time order.
fn conversations() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let s = |t: &str| t.to_string();
    vec![
        ("fine", vec![("user", s("How much is the premium plan?")), ("bot", s("49 dollars a month."))]),
        (
            "greeting",
            vec![
                ("bot", s("Welcome to Acme!")),
                ("user", s("Price for two?")),
                ("user", s("Yearly, please.")),
                ("human", s("98 dollars a month.")),
                ("user", s("Thanks")),
            ],
        ),
        ("bot-only", vec![("bot", s("Are you still there?"))]),
        ("customer-only", vec![("user", s("Anyone there?")), ("user", s("Hello?"))]),
        ("blank", vec![("user", s("   ")), ("bot", s("\n"))]),
        ("reserved", vec![("user", s("What does [eos] mean?")), ("bot", s("It ends a sequence."))]),
        ("long", vec![("user", s("Tell me everything.")), ("bot", "word ".repeat(19_800))]),
    ]
}

/// Per format: which contacts make an example, and the reasons of the others.
fn expected(format: &str) -> (Vec<&'static str>, Value) {
    match format {
        "bedrock" => (
            vec!["fine", "greeting"],
            json!({"empty": 1, "no_assistant_turn": 1, "no_user_turn": 1, "reserved_text": 1, "too_long": 1}),
        ),
        "vertex" => (
            vec!["fine", "greeting", "reserved", "long"],
            json!({"empty": 1, "no_assistant_turn": 1, "no_user_turn": 1}),
        ),
        _ => (vec!["fine", "greeting", "bot-only", "reserved", "long"], json!({"empty": 1, "no_assistant_turn": 1})),
    }
}

async fn seed(state: &shared::AppState, tok: &str) {
    for (contact, messages) in conversations() {
        let convo = format!("convo-{contact}");
        let a =
            call(state, "PUT", &format!("/agents/ag/convos/{convo}"), tok, Some(json!({"contactId": contact}))).await;
        assert!(a.status.is_success(), "{}", a.body);
        let messages: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, (from, text))| json!({"id": format!("m{i}"), "from": from, "content": text, "ts": format!("2026-05-18T13:00:{i:02}.000Z")}))
            .collect();
        let path = format!("/agents/ag/convos/{convo}/messages");
        let a = call(state, "POST", &path, tok, Some(json!({"messages": messages}))).await;
        assert!(a.status.is_success(), "{}", a.body);
        let a = call(state, "POST", "/api/training/snapshots", tok, Some(json!({"contactId": contact}))).await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "every line ends with a line break");
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON line"))
        .collect()
}

/// Checks every line of a file and answers the contacts' examples it holds, by their first user text.
fn check_file(format: &str, bytes: &[u8]) -> Vec<String> {
    lines(bytes)
        .iter()
        .map(|line| {
            let texts = check(format, line).unwrap_or_else(|e| panic!("{format}: {e}: {line}"));
            assert!(texts.iter().any(|t| t == "Be brief."), "{format}: the system prompt is in every example");
            texts.into_iter().find(|t| t != "Be brief.").unwrap_or_default()
        })
        .collect()
}

fn header(a: &Answer, name: &str) -> String {
    a.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn every_chat_format_follows_its_targets_rules_and_counts_what_it_leaves_out_by_reason() {
    let (state, mut worker) = jobs_state().await;
    let tok = token(&new_org());
    seed(&state, &tok).await;
    let first_text: std::collections::HashMap<&str, String> = conversations()
        .into_iter()
        .map(|(contact, messages)| {
            (contact, messages.iter().map(|(_, t)| t.clone()).find(|t| !t.trim().is_empty()).unwrap_or_default())
        })
        .collect();
    for format in ["openai", "bedrock", "vertex", "sharegpt"] {
        let (kept, reasons) = expected(format);
        let a =
            call(&state, "GET", &format!("/api/training/export?format={format}&system=Be%20brief."), &tok, None).await;
        assert_eq!(a.status, 200, "{format}: {}", String::from_utf8_lossy(&a.bytes));
        assert_eq!(header(&a, "content-type"), "application/x-ndjson");
        let firsts = check_file(format, &a.bytes);
        let skipped = conversations().len() - kept.len();
        assert_eq!(header(&a, "x-export-items"), kept.len().to_string(), "{format}");
        assert_eq!(header(&a, "x-export-skipped"), skipped.to_string(), "{format}");
        let listed: Vec<String> = reasons.as_object().unwrap().iter().map(|(code, n)| format!("{code}={n}")).collect();
        assert_eq!(header(&a, "x-export-skipped-reasons"), listed.join(", "), "{format}");
        // The examples are the kept conversations; Bedrock and Vertex start with the customer.
        let mut want: Vec<String> = kept
            .iter()
            .map(|c| match (*c, format) {
                ("greeting", "bedrock" | "vertex") => "Price for two?\n\nYearly, please.".to_string(),
                ("greeting", "openai") => first_text["greeting"].clone(),
                (c, _) => first_text[c].clone(),
            })
            .collect();
        let mut got = firsts.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{format}");

        // An export job writes the same examples and records the same reasons.
        let body = json!({"source": "training", "format": format, "system": "Be brief."});
        let created = call(&state, "POST", "/api/training/exports", &tok, Some(body)).await;
        assert_eq!(created.status, 202, "{}", created.body);
        worker.drain(&state, worker_options()).await;
        let id = created.body["data"]["id"].as_str().unwrap();
        let job = call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await;
        assert_eq!(job.body["data"]["status"], "succeeded", "{}", job.body);
        assert_eq!(job.body["data"]["skipped"], json!(skipped), "{format}");
        assert_eq!(job.body["data"]["skippedReasons"], reasons, "{format}");
        let (status, _, file) = download(job.body["data"]["url"].as_str().unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(lines(&file), lines(&a.bytes), "{format}: the job's file holds the synchronous answer's lines");
        check_manifest(&job.body["data"], &file, kept.len(), skipped).await;
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The job's one file and its manifest describe `file` exactly.
async fn check_manifest(job: &Value, file: &[u8], rows: usize, skipped: usize) {
    let listed = &job["files"][0];
    assert_eq!(job["files"].as_array().map(Vec::len), Some(1), "{job}");
    assert_eq!(listed["rows"], json!(rows));
    assert_eq!(listed["bytes"], json!(file.len()));
    assert_eq!(listed["sha256"], sha256_hex(file).as_str());
    assert!(listed["s3Uri"]
        .as_str()
        .is_some_and(|u| u.starts_with("s3://") && u.ends_with(listed["name"].as_str().unwrap())));
    let (status, _, manifest) = download(job["manifest"]["url"].as_str().expect("a manifest link")).await;
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["jobId"], job["id"]);
    assert_eq!(manifest["files"][0]["sha256"], listed["sha256"]);
    assert_eq!(manifest["files"][0]["rows"], listed["rows"]);
    assert_eq!(manifest["files"][0]["bytes"], listed["bytes"]);
    assert_eq!(manifest["files"][0]["s3Uri"], listed["s3Uri"]);
    assert_eq!(manifest["counts"]["written"], json!(rows));
    assert_eq!(manifest["counts"]["skipped"], json!(skipped));
    assert_eq!(manifest["counts"]["read"], json!(rows + skipped));
    assert_eq!(manifest["counts"]["skippedReasons"], job["skippedReasons"]);
    assert_eq!(manifest["warnings"], job["warnings"]);
}

#[tokio::test]
async fn a_dry_run_writes_only_the_manifest_with_what_the_file_would_hold() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed(&state, &tok).await;
    let sync = call(&state, "GET", "/api/training/export?format=bedrock", &tok, None).await;
    assert_eq!(sync.status, 200);
    let body = json!({"source": "training", "format": "bedrock", "dryRun": true});
    let created = call(&state, "POST", "/api/training/exports", &tok, Some(body)).await;
    assert_eq!(created.status, 202, "{}", created.body);
    assert_eq!(created.body["data"]["dryRun"], true);
    worker.drain(&state, worker_options()).await;
    let id = created.body["data"]["id"].as_str().unwrap();
    let job = call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["url"], Value::Null, "no file to download");
    let listed = &job["files"][0];
    assert_eq!(listed["sha256"], sha256_hex(&sync.bytes).as_str(), "the file it would have written");
    assert_eq!(listed["bytes"], json!(sync.bytes.len()));
    assert_eq!(listed["rows"], 2);
    assert_eq!(listed["s3Uri"], Value::Null);
    assert_eq!(listed["url"], Value::Null);
    // Bedrock wants 8 to 20,000 examples per file: two is worth a warning, not a failure.
    assert!(job["warnings"][0].as_str().is_some_and(|w| w.contains("8 to 20,000")), "{job}");
    let objects = support::export_objects(&state, &org).await;
    assert_eq!(objects.len(), 1, "only the manifest: {objects:?}");
    assert!(objects[0].ends_with("/manifest.json"));
    let (_, _, manifest) = download(job["manifest"]["url"].as_str().unwrap()).await;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["dryRun"], true);
    assert_eq!(manifest["files"][0]["s3Uri"], Value::Null);
    assert_eq!(manifest["counts"]["skippedReasons"]["reserved_text"], 1);
}

#[test]
fn the_checker_refuses_what_each_target_refuses() {
    let bad = [
        (
            "bedrock",
            json!({"schemaVersion": "bedrock-conversation-2024", "messages": [{"role": "assistant", "content": [{"text": "hi"}]}, {"role": "user", "content": [{"text": "q"}]}]}),
        ),
        (
            "bedrock",
            json!({"schemaVersion": "bedrock-conversation-2024", "messages": [{"role": "user", "content": [{"text": "Bot: q"}]}, {"role": "assistant", "content": [{"text": "a"}]}]}),
        ),
        (
            "vertex",
            json!({"contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "assistant", "parts": [{"text": "a"}]}]}),
        ),
        ("sharegpt", json!({"conversations": [{"from": "human", "value": "q"}]})),
        ("openai", json!({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]})),
    ];
    for (format, line) in bad {
        assert!(check(format, &line).is_err(), "{format} accepts {line}");
    }
}
