//! Property tests of bad input: arbitrary query strings, path parameters and bodies through the
//! routes, arbitrary cursors, and the CSV / JSONL / JSON writers with arbitrary text.
//!
//! Every request answers a success, a redirect or one of the route's documented 4xx in the
//! route's envelope, never a 5xx (storage is healthy here). Every file parses back to exactly
//! the text that went in (CSV cells neutralised against formulas the documented way).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use shared::exports::safe_cell;
use shared::{AppState, Envelope};
use support::*;

/// Cases per route-level property: each is one request against the emulator.
const ROUTE_CASES: u32 = 128;
/// Cases per writer property (no I/O).
const WRITER_CASES: u32 = 256;

fn runner(cases: u32) -> TestRunner {
    // No regression files written into the source tree.
    TestRunner::new(RunnerConfig { cases, failure_persistence: None, ..RunnerConfig::default() })
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Text with what breaks writers and parsers: quotes, separators, CR / LF, NUL, formula
/// starters, BOM, line separators, astral characters, and any char at all.
fn nasty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        2 => "[a-zA-Z0-9 ]{1,6}",
        3 => select(vec![
            ",", "\"", "\"\"", "\n", "\r", "\r\n", "\0", "=", "+", "-", "@", "\t", "'", "\\", "é", "漢字", "🎉", "\u{feff}",
            "\u{2028}", "|", ";", "%", "%00", "&", "#", "?", "/", "..", "{", "}", "[", "]", "<script>",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|v| v.concat())
}

/// Percent-encodes every byte but unreserved ones, as a client (or API Gateway) sends a URL.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const PARAMS: &[&str] = &[
    "limit",
    "cursor",
    "format",
    "delivery",
    "quality",
    "category",
    "tag",
    "archived",
    "from",
    "to",
    "contactId",
    "includeMessages",
    "includeArchived",
    "system",
    "page",
    "source",
];

fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => nasty(),
        2 => select(vec![
            "", "0", "1", "-1", "100", "101", "1e3", "99999999999999999999", "true", "false", "all", "maybe", "json", "jsonl",
            "openai", "csv", "xml", "url", "inline", "auto", "good", "bad", "k1", "2026-01-01", "2026-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z", "9999-12-31T23:59:59.999Z", "2026-02-30T00:00:00Z", "not a date",
        ])
        .prop_map(String::from),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// A query string of 0 to 5 parameters, known names or not, encoded.
fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![4 => select(PARAMS).prop_map(String::from), 1 => nasty()];
    prop::collection::vec((name, param_value()), 0..5)
        .prop_map(|pairs| pairs.iter().map(|(k, v)| format!("{}={}", pct(k), pct(v))).collect::<Vec<_>>().join("&"))
}

/// A path segment: often a valid id, else anything (encoded, never empty).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => "[a-zA-Z0-9_.:@-]{1,20}",
        1 => "[a-zA-Z0-9_.:@-]{129,140}",
        2 => nasty().prop_filter("non-empty", |s| !s.is_empty()),
    ]
    .prop_map(|s| pct(&s))
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        nasty().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(nasty(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "contactId",
    "messageIds",
    "notes",
    "tags",
    "quality",
    "category",
    "isArchived",
    "format",
    "source",
    "agentId",
    "convoId",
    "includeArchived",
    "from",
    "to",
    "system",
    "limit",
    "messages",
    "userName",
    "userEmail",
    "feedback",
    "origin",
];

/// A JSON object of the routes' own field names (and others) with any values.
fn json_object() -> impl Strategy<Value = Value> {
    let field = prop_oneof![4 => select(FIELDS).prop_map(String::from), 1 => nasty()];
    let value = prop_oneof![
        2 => json_value(),
        1 => select(vec![json!("k1"), json!("good"), json!(["m00000", "m00001"]), json!(["a", "b"]), json!(true), json!("jsonl"), json!("conversations")]),
        1 => prop::collection::vec(
            (nasty(), select(vec!["user", "bot", "human", "x"]), select(vec!["2026-01-01T00:00:00Z", "yesterday"])),
            0..3,
        )
        .prop_map(|ms| Value::from(ms.into_iter().map(|(c, f, ts)| json!({"from": f, "content": c, "ts": ts})).collect::<Vec<_>>())),
    ];
    prop::collection::btree_map(field, value, 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A request body: mostly JSON objects, sometimes any JSON, sometimes any bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => json_object().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => nasty().prop_map(String::into_bytes),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        6 => Just(Some("application/json")),
        1 => select(vec![
            Some("application/json; charset=utf-8"), Some("APPLICATION/JSON"), Some("application/merge-patch+json"), Some("text/plain"),
            Some("application/x-www-form-urlencoded"), Some("multipart/form-data; boundary=x"), Some(""), Some("json"), None,
        ]),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks

/// The statuses `openapi.yaml` documents for a route.
fn documented(method: &str, path: &str) -> BTreeSet<u16> {
    static SPEC: OnceLock<serde_yaml::Value> = OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).expect("openapi.yaml");
        serde_yaml::from_str(&text).expect("openapi.yaml parses")
    });
    let responses = &spec["paths"][path][method.to_ascii_lowercase().as_str()]["responses"];
    let statuses: BTreeSet<u16> = responses
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string).or_else(|| k.as_u64().map(|n| n.to_string())))
                .filter_map(|k| k.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(!statuses.is_empty(), "{method} {path} has documented responses");
    statuses
}

/// Sends a request and checks the answer: no 5xx, a documented status, and on an error the
/// route's envelope. Returns the answer for further checks.
async fn checked(
    state: &AppState,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, TestCaseError> {
    let path = uri.split_once('?').map_or(uri, |(p, _)| p);
    let (route, _) =
        shared::routes::find(method, path).map_err(|_| TestCaseError::fail(format!("no route for {method} {path}")))?;
    let a = send(state, method, uri, headers, body).await;
    let status = a.status.as_u16();
    let shown = || {
        format!(
            "{method} {uri} body {:?}: {status} {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&a.bytes)
        )
    };
    prop_assert!(status < 500, "5xx: {}", shown());
    prop_assert!(documented(route.method, route.path).contains(&status), "undocumented status: {}", shown());
    if status >= 400 {
        match route.envelope {
            Envelope::Tether => {
                prop_assert!(a.body["success"] == false, "Tether envelope: {}", shown());
                prop_assert!(a.body["error"].as_str().is_some_and(|e| !e.is_empty()), "Tether envelope: {}", shown());
                prop_assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "Tether envelope: {}", shown());
            }
            Envelope::Convocore => {
                prop_assert!(a.body["code"].as_str().is_some_and(|e| !e.is_empty()), "Convocore envelope: {}", shown());
                prop_assert!(
                    a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "Convocore envelope: {}",
                    shown()
                );
                prop_assert!(a.body["issues"].is_array(), "Convocore envelope: {}", shown());
            }
        }
    }
    Ok(a)
}

/// A state (jobs go to a channel nobody drains), an organization with two conversations of
/// contact `k1` / `k2` under agent `a1`, and one snapshot of `k1`.
struct Fixture {
    rt: tokio::runtime::Runtime,
    state: AppState,
    tok: String,
    snapshot: String,
    _worker: Worker,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (state, worker, tok, snapshot) = rt.block_on(async {
        let (state, worker) = jobs_state().await;
        let tok = token(&new_org());
        seed_contact(&state, &tok, "a1", "k1", 4, |i| format!("message {i}")).await;
        seed_contact(&state, &tok, "a1", "k2", 2, |i| format!("other {i}")).await;
        let a = call(&state, "POST", "/api/training/snapshots", &tok, Some(json!({"contactId": "k1"}))).await;
        assert_eq!(a.status, 201, "{}", a.body);
        let id = a.body["data"]["_id"].as_str().expect("id").to_string();
        (state, worker, tok, id)
    });
    Fixture { rt, state, tok, snapshot, _worker: worker }
}

// ---------------------------------------------------------------------------------------------
// Routes

#[test]
fn arbitrary_query_strings_answer_2xx_3xx_or_a_documented_4xx_in_the_envelope() {
    let f = fixture();
    let auth = format!("Bearer {}", f.tok);
    let snapshot_path = format!("/api/training/snapshots/{}", f.snapshot);
    let paths = vec![
        "/agents/a1/convos".to_string(),
        "/agents/a1/convos/export".to_string(),
        "/agents/a1/convos/convo-k1/export".to_string(),
        "/api/training/snapshots".to_string(),
        snapshot_path,
        "/api/training/export".to_string(),
        "/api/training/exports".to_string(),
    ];
    let seen = std::cell::RefCell::new(BTreeSet::new());
    runner(ROUTE_CASES)
        .run(&(select(paths), query()), |(path, q)| {
            f.rt.block_on(async {
                let a = checked(&f.state, "GET", &format!("{path}?{q}"), &[("authorization", &auth)], b"").await?;
                seen.borrow_mut().insert(a.status.as_u16());
                Ok(())
            })
        })
        .unwrap();
    // The strategies reach both accepted and refused queries.
    assert!(seen.borrow().contains(&200) && seen.borrow().contains(&400), "{:?}", seen.borrow());
}

#[test]
fn arbitrary_path_parameters_answer_a_documented_status_in_the_envelope() {
    let f = fixture();
    let auth = format!("Bearer {}", f.tok);
    let json_ct = ("content-type", "application/json");
    let seen = std::cell::RefCell::new(BTreeSet::new());
    runner(ROUTE_CASES)
        .run(&(0..6usize, segment(), segment()), |(which, a, b)| {
            f.rt.block_on(async {
                let h = [("authorization", auth.as_str()), json_ct];
                let answer = match which {
                    0 => checked(&f.state, "GET", &format!("/agents/{a}/convos"), &h, b"").await?,
                    1 => checked(&f.state, "GET", &format!("/agents/{a}/convos/{b}/export"), &h, b"").await?,
                    2 => checked(&f.state, "PUT", &format!("/agents/{a}/convos/{b}"), &h, b"{}").await?,
                    3 => {
                        checked(
                            &f.state,
                            "POST",
                            &format!("/agents/{a}/convos/{b}/messages"),
                            &h,
                            br#"{"messages":[]}"#,
                        )
                        .await?
                    }
                    4 => checked(&f.state, "GET", &format!("/api/training/snapshots/{a}"), &h, b"").await?,
                    _ => checked(&f.state, "GET", &format!("/api/training/exports/{a}"), &h, b"").await?,
                };
                seen.borrow_mut().insert(answer.status.as_u16());
                Ok(())
            })
        })
        .unwrap();
    assert!([400, 404].iter().all(|s| seen.borrow().contains(s)), "{:?}", seen.borrow());
}

#[test]
fn arbitrary_bodies_and_content_types_answer_a_documented_status_in_the_envelope() {
    let f = fixture();
    let auth = format!("Bearer {}", f.tok);
    let targets = vec![
        ("POST", "/api/training/snapshots".to_string()),
        ("PATCH", format!("/api/training/snapshots/{}", f.snapshot)),
        ("POST", "/api/training/exports".to_string()),
        ("POST", "/agents/a1/convos/convo-fuzz/messages".to_string()),
        ("PUT", "/agents/a1/convos/convo-fuzz".to_string()),
    ];
    let seen = std::cell::RefCell::new(BTreeSet::new());
    runner(ROUTE_CASES)
        .run(&(select(targets), content_type(), body(), any::<bool>()), |((method, path), ct, body, if_match)| {
            f.rt.block_on(async {
                let mut h = vec![("authorization", auth.as_str())];
                if let Some(ct) = ct {
                    h.push(("content-type", ct));
                }
                if if_match && method == "PATCH" {
                    h.push(("if-match", "2020-01-01T00:00:00.000Z"));
                }
                if !if_match && method == "POST" && path.ends_with("snapshots") {
                    h.push(("idempotency-key", "props"));
                }
                let a = checked(&f.state, method, &path, &h, &body).await?;
                seen.borrow_mut().insert(a.status.as_u16());
                // A body the route cannot parse is refused before anything is read or written.
                if !ct.is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json") || c.ends_with("+json")) {
                    prop_assert_eq!(a.status.as_u16(), 415, "{} {} {:?}", method, path, ct);
                }
                Ok(())
            })
        })
        .unwrap();
    assert!([400, 415].iter().all(|s| seen.borrow().contains(s)), "{:?}", seen.borrow());
    assert!(seen.borrow().iter().any(|s| (200..300).contains(s)), "some bodies are accepted: {:?}", seen.borrow());
}

#[test]
fn oversized_bodies_answer_413_in_both_envelopes_whatever_their_content() {
    let f = fixture();
    let auth = format!("Bearer {}", f.tok);
    let max = f.state.config.max_body_bytes;
    let targets = vec![
        ("POST", "/api/training/snapshots".to_string(), Envelope::Tether),
        ("PATCH", format!("/api/training/snapshots/{}", f.snapshot), Envelope::Tether),
        ("POST", "/api/training/exports".to_string(), Envelope::Tether),
        ("POST", "/agents/a1/convos/convo-k1/messages".to_string(), Envelope::Convocore),
        ("PUT", "/agents/a1/convos/convo-k1".to_string(), Envelope::Convocore),
    ];
    runner(32)
        .run(&(select(targets), 1..4096usize, any::<u8>()), |((method, path, envelope), over, fill)| {
            f.rt.block_on(async {
                let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
                let mut body = br#"{"notes":""#.to_vec();
                body.resize(max + over, fill);
                let a = checked(&f.state, method, &path, &h, &body).await?;
                prop_assert_eq!(a.status.as_u16(), 413);
                let code = if envelope == Envelope::Tether { &a.body["error"] } else { &a.body["code"] };
                prop_assert_eq!(code, "PAYLOAD_TOO_LARGE");
                Ok(())
            })
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Cursors

#[test]
fn arbitrary_cursors_are_always_rejected_with_400() {
    let codec = shared::cursor::CursorCodec::new(b"props-secret").expect("codec");
    let key = HashMap::from([("PK".to_string(), aws_sdk_dynamodb::types::AttributeValue::S("x".into()))]);
    let org = shared::keys::Org::stored("org");
    let real = codec.encode(&org, "scope", Some(&key)).expect("encode").expect("cursor");
    let chars: Vec<char> = real.chars().collect();
    let arbitrary = prop_oneof![
        3 => nasty(),
        2 => "[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}",
        // A real cursor with one character changed.
        2 => (0..chars.len(), any::<char>()).prop_map(move |(i, c)| {
            let mut s = chars.clone();
            s[i] = c;
            s.into_iter().collect::<String>()
        }),
    ];
    assert!(codec.decode(&org, "scope", &real).is_ok(), "the untouched cursor is accepted");
    let original = real.clone();
    runner(WRITER_CASES)
        .run(&arbitrary, |cursor| {
            prop_assume!(cursor != original);
            match codec.decode(&org, "scope", &cursor) {
                Ok(key) => prop_assert!(false, "accepted {cursor:?} as {key:?}"),
                Err(e) => prop_assert_eq!(e.kind, shared::error::ErrorKind::Validation),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn tampered_cursors_on_list_routes_answer_400_in_the_envelope() {
    let f = fixture();
    let auth = format!("Bearer {}", f.tok);
    // A real next-page cursor of each paginated route.
    let cursors: Vec<(String, String, Envelope)> = f.rt.block_on(async {
        let mut out = Vec::new();
        let jobs = call(&f.state, "POST", "/api/training/exports", &f.tok, Some(json!({"format": "jsonl"}))).await;
        assert_eq!(jobs.status, 202, "{}", jobs.body);
        call(&f.state, "POST", "/api/training/exports", &f.tok, Some(json!({"format": "csv"}))).await;
        call(&f.state, "POST", "/api/training/snapshots", &f.tok, Some(json!({"contactId": "k2"}))).await;
        for (path, envelope) in [
            ("/agents/a1/convos", Envelope::Convocore),
            ("/api/training/snapshots", Envelope::Tether),
            ("/api/training/exports", Envelope::Tether),
        ] {
            let a = call(&f.state, "GET", &format!("{path}?limit=1"), &f.tok, None).await;
            let next = a.body["nextCursor"]
                .as_str()
                .or(a.body["data"]["nextCursor"].as_str())
                .or(a.body["pagination"]["nextCursor"].as_str());
            let next = next.unwrap_or_else(|| panic!("{path}: a next page: {}", a.body)).to_string();
            // The real cursor works, so the 400s below are about the tampering.
            let ok = call(&f.state, "GET", &format!("{path}?limit=1&cursor={}", pct(&next)), &f.tok, None).await;
            assert_eq!(ok.status, 200, "{path}: {}", ok.body);
            out.push((path.to_string(), next, envelope));
        }
        out
    });
    let tamper = (select(cursors), any::<prop::sample::Index>(), any::<char>(), 0..3usize);
    runner(ROUTE_CASES)
        .run(&tamper, |((path, real, envelope), at, c, how)| {
            let mut chars: Vec<char> = real.chars().collect();
            let i = at.index(chars.len());
            match how {
                0 => chars[i] = c,
                1 => chars.truncate(i),
                _ => chars.insert(i, c),
            }
            let cursor: String = chars.into_iter().collect();
            prop_assume!(cursor != real && !cursor.is_empty());
            f.rt.block_on(async {
                let a = checked(
                    &f.state,
                    "GET",
                    &format!("{path}?limit=1&cursor={}", pct(&cursor)),
                    &[("authorization", &auth)],
                    b"",
                )
                .await?;
                prop_assert_eq!(a.status.as_u16(), 400, "{} {:?}: {}", path, cursor, a.body);
                let code = if envelope == Envelope::Tether { &a.body["error"] } else { &a.body["code"] };
                prop_assert_eq!(code, if envelope == Envelope::Tether { "VALIDATION_ERROR" } else { "BAD_REQUEST" });
                Ok(())
            })
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Writers

/// A snapshot with arbitrary text in every free-text field, and its messages.
fn snapshot() -> impl Strategy<Value = (shared::snapshots::Snapshot, Vec<shared::snapshots::SnapshotMessage>)> {
    let message = (nasty(), nasty(), any::<bool>(), any::<bool>());
    (
        (prop::option::of(nasty()), prop::option::of(nasty()), prop::option::of(nasty())),
        (prop::option::of(nasty()), prop::option::of(nasty()), prop::collection::vec(nasty(), 0..3)),
        prop::collection::vec(message, 1..6),
    )
        .prop_map(|((name, phone, email), (notes, category, tags), messages)| {
            let messages: Vec<shared::snapshots::SnapshotMessage> = messages
                .into_iter()
                .enumerate()
                .map(|(i, (id, content, business, ai))| shared::snapshots::SnapshotMessage {
                    id: format!("{i}{id}"),
                    content,
                    sender: if business { "user" } else { "contact" }.into(),
                    sender_type: if ai { "AI" } else { "HUMAN" }.into(),
                    timestamp: format!("2026-05-18T13:00:{i:02}.000Z"),
                })
                .collect();
            let snap = serde_json::from_value(json!({
                "_id": shared::ids::object_id(), "organizationId": "org", "user": {"_id": "u"}, "contact": {"_id": "k1"},
                "customerName": name, "customerPhone": phone, "customerEmail": email, "messageCount": messages.len(),
                "snapshotDate": "2026-05-18T13:00:00.000Z", "conversationStartDate": messages[0].timestamp,
                "conversationEndDate": messages[messages.len() - 1].timestamp, "tags": tags, "quality": "good", "category": category,
                "notes": notes, "isArchived": false, "createdAt": "2026-05-18T13:00:00.000Z", "updatedAt": "2026-05-18T13:00:00.000Z",
                "version": 1
            }))
            .expect("snapshot");
            (snap, messages)
        })
}

fn encode_all(
    format: shared::exports::training::Format,
    snaps: &[(shared::snapshots::Snapshot, Vec<shared::snapshots::SnapshotMessage>)],
) -> Vec<u8> {
    let mut encoder = shared::exports::training::Encoder::new(format, Some("Be helpful, \"always\".\r\n".into()));
    let mut out = encoder.start("2026-05-18T13:00:00.000Z", "org").expect("start");
    for (s, m) in snaps {
        out.extend(encoder.item(s, m).expect("item"));
    }
    out.extend(encoder.finish());
    out
}

/// Reads an RFC 4180 file with a BOM and a header row into rows of cells.
fn read_csv(bytes: &[u8], columns: &[&str]) -> Result<Vec<Vec<String>>, TestCaseError> {
    prop_assert!(bytes.starts_with(shared::exports::BOM), "BOM first");
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(&bytes[shared::exports::BOM.len()..]);
    let header: Vec<String> =
        reader.headers().map_err(|e| TestCaseError::fail(e.to_string()))?.iter().map(str::to_string).collect();
    prop_assert_eq!(header, columns.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| TestCaseError::fail(format!("unparsable CSV: {e}")))?;
        prop_assert_eq!(record.len(), columns.len());
        rows.push(record.iter().map(str::to_string).collect());
    }
    Ok(rows)
}

#[test]
fn training_writers_give_back_exactly_the_text_that_went_in() {
    use shared::exports::training::{Format, CSV_COLUMNS};
    runner(WRITER_CASES)
        .run(&prop::collection::vec(snapshot(), 1..4), |snaps| {
            // JSONL: one item per line, each the snapshot's text.
            let jsonl = encode_all(Format::Jsonl, &snaps);
            prop_assert!(jsonl.ends_with(b"\n"));
            let lines: Vec<Value> = jsonl[..jsonl.len() - 1]
                .split(|b| *b == b'\n')
                .map(serde_json::from_slice)
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("a JSONL line does not parse: {e}")))?;
            prop_assert_eq!(lines.len(), snaps.len());
            // Each line is byte for byte what earlier releases wrote: the item through a sorted map.
            for (line, item) in jsonl[..jsonl.len() - 1].split(|b| *b == b'\n').zip(&lines) {
                let sorted = serde_json::to_vec(item).unwrap_or_default();
                prop_assert_eq!(line, sorted.as_slice());
            }
            // JSON: Tether's payload, the same items.
            let payload: Value = serde_json::from_slice(&encode_all(Format::Json, &snaps))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&payload["totalSnapshots"], &json!(snaps.len()));
            prop_assert_eq!(payload["data"].as_array().map(|d| d.to_vec()), Some(lines.clone()));
            for ((s, messages), item) in snaps.iter().zip(&lines) {
                prop_assert_eq!(&item["id"], &json!(s.id));
                prop_assert_eq!(&item["customer"]["email"], &json!(s.customer_email));
                prop_assert_eq!(&item["metadata"]["notes"], &s.notes.as_ref().map_or(Value::Null, |n| json!(n)));
                prop_assert_eq!(&item["metadata"]["tags"], &json!(s.tags));
                let contents: Vec<Value> = item["conversation"]
                    .as_array()
                    .map(|c| c.iter().map(|m| m["content"].clone()).collect())
                    .unwrap_or_default();
                prop_assert_eq!(contents, messages.iter().map(|m| json!(m.content)).collect::<Vec<_>>());
            }
            // CSV: one row per message, every cell the text (formula starters neutralised).
            let rows = read_csv(&encode_all(Format::Csv, &snaps), CSV_COLUMNS)?;
            let expected: Vec<Vec<String>> = snaps
                .iter()
                .flat_map(|(s, messages)| {
                    messages.iter().enumerate().map(move |(i, m)| {
                        let role = if m.sender == "contact" { "user" } else { "assistant" };
                        [
                            s.id.as_str(),
                            "k1",
                            s.customer_name.as_deref().unwrap_or(""),
                            s.customer_phone.as_deref().unwrap_or(""),
                            s.customer_email.as_deref().unwrap_or(""),
                            "good",
                            s.category.as_deref().unwrap_or(""),
                            &s.tags.join("|"),
                            s.notes.as_deref().unwrap_or(""),
                            "false",
                            "2026-05-18T13:00:00.000Z",
                            &i.to_string(),
                            &m.id,
                            role,
                            &m.sender_type,
                            &m.timestamp,
                            &m.content,
                        ]
                        .iter()
                        .map(|c| safe_cell(c).into_owned())
                        .collect()
                    })
                })
                .collect();
            prop_assert_eq!(rows, expected);
            // Fine-tune JSONL: every line parses, roles alternate, no text is lost.
            let openai = encode_all(Format::OpenAi, &snaps);
            for line in openai.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let example: Value = serde_json::from_slice(line).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let sorted = serde_json::to_vec(&example).unwrap_or_default();
                prop_assert_eq!(line, sorted.as_slice(), "sorted keys");
                let roles: Vec<&str> = example["messages"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|x| x["role"].as_str()).collect())
                    .unwrap_or_default();
                prop_assert_eq!(roles.first().copied(), Some("system"));
                prop_assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn conversation_writers_give_back_exactly_the_text_that_went_in() {
    use shared::convos::{Convo, Message};
    let convo = (
        prop::option::of(nasty()),
        prop::option::of(nasty()),
        prop::option::of(nasty()),
        prop::collection::vec(nasty(), 0..3),
    );
    let messages = prop::collection::vec((nasty(), select(vec!["user", "bot", "human"]), any::<bool>()), 1..8);
    runner(WRITER_CASES)
        .run(&(convo, messages), |((name, notes, website, tags), messages)| {
            let c: Convo = serde_json::from_value(json!({
                "id": "c1", "agentId": "a1", "contactId": "k1", "userName": name, "notes": notes, "userWebsite": website, "tags": tags,
                "createdAt": "2026-05-18T13:00:00.000Z", "updatedAt": "2026-05-18T13:00:00.000Z",
            }))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let messages: Vec<Message> = messages
                .into_iter()
                .enumerate()
                .map(|(i, (content, from, ai))| {
                    serde_json::from_value(json!({"id": format!("m{i}"), "from": from, "content": content, "ts": format!("2026-05-18T13:00:{i:02}.000Z"), "aiGenerated": ai}))
                })
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;

            // JSON: the item survives encoding, and its turns hold the messages in order.
            let bytes = serde_json::to_vec(&shared::exports::convos::export_item(&c, &messages)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let item: Value = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Byte for byte what earlier releases wrote: the item through a sorted map.
            prop_assert_eq!(&bytes, &serde_json::to_vec(&item).unwrap_or_default());
            prop_assert_eq!(&item["metadata"]["convo"]["userName"], &json!(c.user_name));
            prop_assert_eq!(&item["metadata"]["convo"]["notes"], &json!(c.notes));
            let sent: Vec<Value> = item["turns"]
                .as_array()
                .map(|t| t.iter().flat_map(|turn| turn["messages"].as_array().cloned().unwrap_or_default()).map(|m| m["payload"]["message"].clone()).collect())
                .unwrap_or_default();
            prop_assert_eq!(sent, messages.iter().map(|m| json!(m.content)).collect::<Vec<_>>());

            // CSV: one row per message with the text.
            let mut file = shared::exports::convos::csv_head().map_err(|e| TestCaseError::fail(e.to_string()))?;
            file.extend(shared::exports::convos::csv_rows(&c, &messages).map_err(|e| TestCaseError::fail(e.to_string()))?);
            let rows = read_csv(&file, shared::exports::convos::CSV_COLUMNS)?;
            prop_assert_eq!(rows.len(), messages.len());
            let col = |name: &str| shared::exports::convos::CSV_COLUMNS.iter().position(|c| *c == name).expect("column");
            for (row, m) in rows.iter().zip(&messages) {
                prop_assert_eq!(&row[col("message")], &safe_cell(&m.content).into_owned());
                prop_assert_eq!(&row[col("userName")], &safe_cell(c.user_name.as_deref().unwrap_or("")).into_owned());
                prop_assert_eq!(&row[col("notes")], &safe_cell(c.notes.as_deref().unwrap_or("")).into_owned());
                prop_assert_eq!(&row[col("userWebsite")], &safe_cell(c.user_website.as_deref().unwrap_or("")).into_owned());
                prop_assert_eq!(&row[col("tags")], &safe_cell(&c.tags.join("|")).into_owned());
                prop_assert_eq!(&row[col("messageId")], &m.id);
            }
            Ok(())
        })
        .unwrap();
}
