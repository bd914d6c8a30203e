//! Bearer tokens (RFC 8725): every way a token can be wrong answers 401 in the route's envelope,
//! on every route of the route table, and writes nothing. Covered for each algorithm a
//! deployment can pin (HS256, RS256, ES256, with the fixed test keys of `fixtures/`) and with a
//! configured issuer and audience; a valid token of each configuration passes, so every
//! rejection is the token's fault and not the setup's.

mod support;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use shared::auth::{now_epoch, Claims};
use shared::config::JwtAlgorithm;
use shared::error::Envelope;
use shared::routes::{Route, ROUTES};
use shared::AppState;
use support::{
    call, claims, export_objects, item_str, items_with_prefix, jobs_state_with, new_org, seed_contact, send, token,
    token_claims, worker_options, Answer, Worker,
};

/// Test-only key pairs, generated once with `openssl genpkey` (never used anywhere else).
const RS_PRIVATE: &str = include_str!("fixtures/jwt-rs256-private.pem");
const RS_PUBLIC: &str = include_str!("fixtures/jwt-rs256-public.pem");
const ES_PRIVATE: &str = include_str!("fixtures/jwt-es256-private.pem");
const ES_PUBLIC: &str = include_str!("fixtures/jwt-es256-public.pem");

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "training-api";

/// The minimal valid payload, as JSON, for cases that need claims of the wrong type.
fn payload(org: &str) -> Value {
    json!({"sub": "u1", "organizationId": org, "exp": now_epoch() + 600})
}

/// `payload` with `changes` applied (`null` in `changes` removes the claim; use
/// [`with_null`] to keep an explicit null).
fn with(org: &str, changes: Value) -> Value {
    let mut p = payload(org);
    for (k, v) in changes.as_object().expect("object") {
        match v {
            Value::Null => p.as_object_mut().expect("object").remove(k),
            v => p.as_object_mut().expect("object").insert(k.clone(), v.clone()),
        };
    }
    p
}

fn with_null(org: &str, claim: &str) -> Value {
    let mut p = payload(org);
    p[claim] = Value::Null;
    p
}

fn hs(secret: &[u8], alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign HMAC")
}

fn hs256(claims: &Value) -> String {
    hs(std::env::var("JWT_SECRET").expect("JWT_SECRET").as_bytes(), Algorithm::HS256, claims)
}

/// An HS256 token with this header, signed with the suite secret.
fn hs256_header(header: &Header, claims: &Value) -> String {
    let key = EncodingKey::from_secret(std::env::var("JWT_SECRET").expect("JWT_SECRET").as_bytes());
    jsonwebtoken::encode(header, claims, &key).expect("sign HMAC")
}

fn rsa(alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).expect("RSA key"))
        .expect("sign RSA")
}

/// An RS256 token with this header, signed with the test key.
fn rsa_header(header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).expect("RSA key"))
        .expect("sign RSA")
}

fn es256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).expect("EC key"),
    )
    .expect("sign EC")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// An unsigned token with this header (`alg: none` and its spellings).
fn unsigned(alg: &str, claims: &Value) -> String {
    format!("{}.{}.", b64(&json!({"alg": alg, "typ": "JWT"})), b64(claims))
}

/// `token` with its payload replaced and its signature kept.
fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(claims), parts[2])
}

/// `token` with another header and its payload and signature kept.
fn reheaded(token: &str, header: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", b64(header), parts[1], parts[2])
}

/// An HS256 token with exactly this header and payload (any JSON, even what `Header` cannot
/// hold), signed with the suite secret: only the header makes it wrong.
fn hs256_raw(header: &Value, claims: &Value) -> String {
    use hmac::{Hmac, Mac};
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(std::env::var("JWT_SECRET").expect("JWT_SECRET").as_bytes()).expect("key");
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// A header of `alg` with `crit` naming `extensions` (RFC 7515 §4.1.11).
fn crit_header(alg: Algorithm, extensions: &[&str]) -> Header {
    Header { crit: Some(extensions.iter().map(|e| e.to_string()).collect()), ..Header::new(alg) }
}

/// `token` with the last character of its signature changed.
fn bad_signature(token: &str) -> String {
    let mut t = token.to_string();
    let last = t.pop().expect("token");
    t.push(if last == 'A' { 'B' } else { 'A' });
    t
}

/// One way of presenting a token: `Authorization` header values (none, one, or several lines),
/// an extra query string, and the start of the expected message ("" when any 401 will do).
struct Case {
    name: &'static str,
    authorization: Vec<String>,
    query: &'static str,
    message: &'static str,
}

fn case(name: &'static str, authorization: Option<String>, message: &'static str) -> Case {
    Case { name, authorization: authorization.into_iter().collect(), query: "", message }
}

fn bearer(name: &'static str, token: String, message: &'static str) -> Case {
    case(name, Some(format!("Bearer {token}")), message)
}

const MALFORMED_HEADER: &str = "Malformed Authorization header";
const CLAIMS: &str = "Token claims are invalid";
const ALGORITHM: &str = "Token algorithm not accepted";
const SIGNATURE: &str = "Invalid token signature";
const CRIT: &str = "Token header has unsupported critical extensions";

/// Cases for the suite's HS256 configuration.
fn hs256_cases(org: &str) -> Vec<Case> {
    let valid = hs256(&payload(org));
    let now = now_epoch();
    vec![
        // How the token is presented.
        case("no Authorization header", None, "Missing bearer token"),
        case("token without a scheme", Some(valid.clone()), MALFORMED_HEADER),
        case("lowercase bearer", Some(format!("bearer {valid}")), MALFORMED_HEADER),
        case("uppercase BEARER", Some(format!("BEARER {valid}")), MALFORMED_HEADER),
        case("Bearer alone", Some("Bearer".into()), MALFORMED_HEADER),
        case("Bearer and a space, no token", Some("Bearer ".into()), MALFORMED_HEADER),
        case("Bearer followed by two spaces", Some(format!("Bearer  {valid}")), MALFORMED_HEADER),
        case("Bearer followed by a tab", Some(format!("Bearer\t{valid}")), MALFORMED_HEADER),
        case("Basic scheme", Some("Basic dXNlcjpwYXNz".into()), MALFORMED_HEADER),
        case("Basic scheme carrying the token", Some(format!("Basic {valid}")), MALFORMED_HEADER),
        case("Token scheme", Some(format!("Token {valid}")), MALFORMED_HEADER),
        case("two credentials in one header", Some(format!("Bearer {valid}, Bearer {valid}")), MALFORMED_HEADER),
        Case {
            name: "two Authorization headers",
            authorization: vec![format!("Bearer {valid}"), format!("Bearer {valid}")],
            query: "",
            message: MALFORMED_HEADER,
        },
        Case { name: "token in ?token= only", authorization: vec![], query: "token", message: "Missing bearer token" },
        Case {
            name: "token in ?access_token= only",
            authorization: vec![],
            query: "access_token",
            message: "Missing bearer token",
        },
        // The token itself.
        bearer("two segments", "abc.def".into(), "Malformed token"),
        bearer("segments that are not base64url JSON", "a.b.c".into(), "Malformed token"),
        bearer("expired an hour ago", hs256(&with(org, json!({"exp": now - 3600}))), "Token expired"),
        bearer("expired beyond the leeway", hs256(&with(org, json!({"exp": now - 90}))), "Token expired"),
        bearer("nbf in the future", hs256(&with(org, json!({"nbf": now + 3600}))), "Token not yet valid"),
        bearer(
            "signed with another secret",
            hs(b"another-secret-of-sufficient-length-000000", Algorithm::HS256, &payload(org)),
            SIGNATURE,
        ),
        bearer("bad signature", bad_signature(&valid), ""),
        bearer("payload swapped for another organization", tampered(&valid, &payload(&new_org())), SIGNATURE),
        bearer("signature stripped", format!("{}.", valid.rsplit_once('.').expect("token").0), ""),
        bearer("alg none", unsigned("none", &payload(org)), ""),
        bearer("alg None", unsigned("None", &payload(org)), ""),
        bearer("alg NONE", unsigned("NONE", &payload(org)), ""),
        bearer("alg none keeping a valid signature", reheaded(&valid, &json!({"alg": "none", "typ": "JWT"})), ""),
        bearer("header without alg", reheaded(&valid, &json!({"typ": "JWT"})), ""),
        bearer(
            "HS512 with the right secret",
            hs(std::env::var("JWT_SECRET").expect("secret").as_bytes(), Algorithm::HS512, &payload(org)),
            ALGORITHM,
        ),
        bearer("RS256 from the test key", rsa(Algorithm::RS256, &payload(org)), ALGORITHM),
        bearer("ES256 from the test key", es256(&payload(org)), ALGORITHM),
        // Claims: missing, empty, or not strings.
        bearer("organizationId missing", hs256(&with(org, json!({"organizationId": null}))), CLAIMS),
        bearer("organizationId empty", hs256(&with(org, json!({"organizationId": ""}))), CLAIMS),
        bearer("organizationId blank", hs256(&with(org, json!({"organizationId": "   "}))), CLAIMS),
        bearer("organizationId null", hs256(&with_null(org, "organizationId")), CLAIMS),
        bearer("organizationId numeric", hs256(&with(org, json!({"organizationId": 42}))), CLAIMS),
        bearer("organizationId array", hs256(&with(org, json!({"organizationId": [org]}))), CLAIMS),
        bearer("organizationId object", hs256(&with(org, json!({"organizationId": {"id": org}}))), CLAIMS),
        bearer(
            "organizationId with a key separator",
            hs256(&with(org, json!({"organizationId": format!("{org}#SNAP")}))),
            CLAIMS,
        ),
        bearer("sub missing", hs256(&with(org, json!({"sub": null}))), CLAIMS),
        bearer("sub empty", hs256(&with(org, json!({"sub": ""}))), CLAIMS),
        bearer("sub null", hs256(&with_null(org, "sub")), CLAIMS),
        bearer("sub numeric", hs256(&with(org, json!({"sub": 7}))), CLAIMS),
        bearer("exp missing", hs256(&with(org, json!({"exp": null}))), CLAIMS),
        bearer("exp null", hs256(&with_null(org, "exp")), CLAIMS),
        bearer("exp a string", hs256(&with(org, json!({"exp": (now + 600).to_string()}))), CLAIMS),
        bearer("exp a fractional string", hs256(&with(org, json!({"exp": format!("{}.5", now + 600)}))), CLAIMS),
        bearer("exp a boolean", hs256(&with(org, json!({"exp": true}))), CLAIMS),
        bearer("exp an array", hs256(&with(org, json!({"exp": [now + 600]}))), CLAIMS),
        bearer("exp negative", hs256(&with(org, json!({"exp": -1}))), CLAIMS),
        bearer("exp negative fraction", hs256(&with(org, json!({"exp": -0.5}))), CLAIMS),
        bearer("exp after the year 9999", hs256(&with(org, json!({"exp": 253_402_300_800u64}))), CLAIMS),
        bearer("exp huge", hs256(&with(org, json!({"exp": 1e20}))), CLAIMS),
        bearer("exp u64::MAX", hs256(&with(org, json!({"exp": u64::MAX}))), CLAIMS),
        // NumericDates may be fractional (RFC 7519 §2): checked like whole ones, to the fraction.
        bearer("exp fractional, an hour ago", hs256(&with(org, json!({"exp": now as f64 - 3600.26}))), "Token expired"),
        bearer(
            "exp fractional, half a second beyond the leeway",
            hs256(&with(org, json!({"exp": now as f64 - 30.5}))),
            "Token expired",
        ),
        bearer("exp in exponent form (2001)", hs256(&with(org, json!({"exp": 1e9}))), "Token expired"),
        bearer("exp zero", hs256(&with(org, json!({"exp": 0}))), "Token expired"),
        bearer(
            "nbf fractional, in an hour",
            hs256(&with(org, json!({"nbf": now as f64 + 3600.25}))),
            "Token not yet valid",
        ),
        bearer("nbf a string", hs256(&with(org, json!({"nbf": now.to_string()}))), CLAIMS),
        bearer("nbf a boolean", hs256(&with(org, json!({"nbf": false}))), CLAIMS),
        bearer("nbf negative", hs256(&with(org, json!({"nbf": -1.5}))), CLAIMS),
        bearer("nbf huge", hs256(&with(org, json!({"nbf": 1e300}))), CLAIMS),
        // `crit` (RFC 7515 §4.1.11): no extension is understood, so any `crit` is refused,
        // even with a valid signature.
        bearer(
            "crit naming an unknown extension",
            hs256_header(&crit_header(Algorithm::HS256, &["urn:x"]), &payload(org)),
            CRIT,
        ),
        bearer(
            "crit naming b64 (RFC 7797)",
            hs256_raw(&json!({"alg": "HS256", "b64": false, "crit": ["b64"]}), &payload(org)),
            CRIT,
        ),
        bearer(
            "crit naming a registered claim",
            hs256_raw(&json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]}), &payload(org)),
            CRIT,
        ),
        bearer(
            "crit an empty list",
            hs256_raw(&json!({"alg": "HS256", "typ": "JWT", "crit": []}), &payload(org)),
            CRIT,
        ),
        bearer("crit null", hs256_raw(&json!({"alg": "HS256", "typ": "JWT", "crit": null}), &payload(org)), CRIT),
        bearer(
            "crit a string",
            hs256_raw(&json!({"alg": "HS256", "typ": "JWT", "crit": "urn:example:unknown"}), &payload(org)),
            CRIT,
        ),
        bearer(
            "crit with a bad signature",
            bad_signature(&hs256_header(&crit_header(Algorithm::HS256, &["x"]), &payload(org))),
            CRIT,
        ),
        bearer("email numeric", hs256(&with(org, json!({"email": 5}))), CLAIMS),
        bearer("iss numeric", hs256(&with(org, json!({"iss": 5}))), CLAIMS),
    ]
}

/// Cases for an RS256 configuration with the test public key (algorithm confusion first).
fn rs256_cases(org: &str) -> Vec<Case> {
    let valid = rsa(Algorithm::RS256, &payload(org));
    let now = now_epoch();
    vec![
        bearer(
            "HS256 signed with the RS256 public key PEM",
            hs(RS_PUBLIC.as_bytes(), Algorithm::HS256, &payload(org)),
            ALGORITHM,
        ),
        bearer(
            "HS256 signed with the public key PEM, header claiming RS256",
            reheaded(
                &hs(RS_PUBLIC.as_bytes(), Algorithm::HS256, &payload(org)),
                &json!({"alg": "RS256", "typ": "JWT"}),
            ),
            SIGNATURE,
        ),
        bearer("HS256 signed with the suite secret", hs256(&payload(org)), ALGORITHM),
        bearer("alg none", unsigned("none", &payload(org)), ""),
        bearer("alg none keeping a valid signature", reheaded(&valid, &json!({"alg": "none"})), ""),
        bearer("RS384 with the right key", rsa(Algorithm::RS384, &payload(org)), ALGORITHM),
        bearer("PS256 with the right key", rsa(Algorithm::PS256, &payload(org)), ALGORITHM),
        bearer("ES256", es256(&payload(org)), ALGORITHM),
        bearer("bad signature", bad_signature(&valid), ""),
        bearer("payload swapped for another organization", tampered(&valid, &payload(&new_org())), SIGNATURE),
        bearer("signature stripped", format!("{}.", valid.rsplit_once('.').expect("token").0), ""),
        bearer("expired", rsa(Algorithm::RS256, &with(org, json!({"exp": now - 3600}))), "Token expired"),
        bearer(
            "nbf in the future",
            rsa(Algorithm::RS256, &with(org, json!({"nbf": now + 3600}))),
            "Token not yet valid",
        ),
        bearer("organizationId missing", rsa(Algorithm::RS256, &with(org, json!({"organizationId": null}))), CLAIMS),
        bearer("organizationId empty", rsa(Algorithm::RS256, &with(org, json!({"organizationId": ""}))), CLAIMS),
        bearer(
            "crit naming an unknown extension, right key",
            rsa_header(&crit_header(Algorithm::RS256, &["urn:x"]), &payload(org)),
            CRIT,
        ),
        bearer(
            "exp fractional, an hour ago",
            rsa(Algorithm::RS256, &with(org, json!({"exp": now as f64 - 3600.5}))),
            "Token expired",
        ),
        case("lowercase bearer", Some(format!("bearer {valid}")), MALFORMED_HEADER),
    ]
}

/// Cases for an ES256 configuration with the test public key.
fn es256_cases(org: &str) -> Vec<Case> {
    let valid = es256(&payload(org));
    vec![
        bearer(
            "HS256 signed with the ES256 public key PEM",
            hs(ES_PUBLIC.as_bytes(), Algorithm::HS256, &payload(org)),
            ALGORITHM,
        ),
        bearer("RS256", rsa(Algorithm::RS256, &payload(org)), ALGORITHM),
        bearer("alg none", unsigned("none", &payload(org)), ""),
        bearer("bad signature", bad_signature(&valid), ""),
        bearer("payload swapped for another organization", tampered(&valid, &payload(&new_org())), SIGNATURE),
        bearer("expired", es256(&with(org, json!({"exp": now_epoch() - 3600}))), "Token expired"),
    ]
}

/// Cases for an HS256 configuration that requires `iss` and `aud`.
fn issuer_audience_cases(org: &str) -> Vec<Case> {
    let good = || with(org, json!({"iss": ISSUER, "aud": AUDIENCE}));
    let changed = |changes: Value| {
        let mut p = good();
        for (k, v) in changes.as_object().expect("object") {
            match v {
                Value::Null => p.as_object_mut().expect("object").remove(k),
                v => p.as_object_mut().expect("object").insert(k.clone(), v.clone()),
            };
        }
        hs256(&p)
    };
    vec![
        bearer("wrong iss", changed(json!({"iss": "https://evil.example"})), "Token issuer not accepted"),
        bearer("iss with a trailing slash", changed(json!({"iss": format!("{ISSUER}/")})), "Token issuer not accepted"),
        bearer("iss missing", changed(json!({"iss": null})), CLAIMS),
        bearer("iss numeric", changed(json!({"iss": 1})), ""),
        bearer("wrong aud", changed(json!({"aud": "other"})), "Token audience not accepted"),
        bearer("aud missing", changed(json!({"aud": null})), CLAIMS),
        bearer("aud array without ours", changed(json!({"aud": ["other", "training"]})), "Token audience not accepted"),
        bearer("aud empty array", changed(json!({"aud": []})), ""),
        bearer("valid iss and aud but expired", changed(json!({"exp": now_epoch() - 3600})), "Token expired"),
    ]
}

/// What a route is called with: a path on the organization's own data (so a request that got
/// through would really write) and a body that would pass validation.
struct Target {
    route: &'static Route,
    path: String,
    body: Value,
}

/// One target per route of the route table; the test fails when a route is added without one.
fn targets(agent: &str, convo: &str, snapshot: &str, job: &str) -> Vec<Target> {
    ROUTES
        .iter()
        .map(|route| {
            let path = route.path.replace("{agentId}", agent).replace("{convoId}", convo);
            let path = if path.starts_with("/api/training/exports/") {
                path.replace("{id}", job)
            } else {
                path.replace("{id}", snapshot)
            };
            let body = match route.function {
                "put-convo" => json!({"userName": "Mallory", "notes": "overwritten"}),
                "ingest-messages" => json!({"messages": [{"id": "evil", "from": "user", "content": "injected", "ts": "2026-05-18T13:00:00Z"}]}),
                "create-snapshot" => json!({"contactId": "k1", "notes": "forged"}),
                "update-snapshot" => json!({"notes": "overwritten", "isArchived": true}),
                "create-export" => json!({"format": "jsonl"}),
                "list-convos" | "export-convos" | "export-convo" | "list-snapshots" | "get-snapshot" | "delete-snapshot"
                | "export-training" | "list-exports" | "get-export" => Value::Null,
                other => panic!("route {other} has no target in this test: add one"),
            };
            assert!(!path.contains('{'), "{}: every path parameter is filled", route.function);
            Target { route, path, body }
        })
        .collect()
}

async fn send_target(state: &AppState, t: &Target, authorization: &[String], query: &str) -> Answer {
    let body = if t.body.is_null() { Vec::new() } else { t.body.to_string().into_bytes() };
    let mut headers: Vec<(&str, &str)> = authorization.iter().map(|v| ("authorization", v.as_str())).collect();
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    let uri = if query.is_empty() { t.path.clone() } else { format!("{}?{query}", t.path) };
    send(state, t.route.method, &uri, &headers, &body).await
}

/// The 401 of `route`'s envelope, with exactly the envelope's fields and a Bearer challenge.
fn assert_unauthorized(a: &Answer, envelope: Envelope, what: &str) {
    assert_eq!(a.status.as_u16(), 401, "{what}: {}", a.body);
    let keys: Vec<&str> = a.body.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    match envelope {
        Envelope::Tether => {
            assert_eq!(keys, ["error", "message", "success"], "{what}: Tether's error envelope: {}", a.body);
            assert_eq!(a.body["success"], false, "{what}");
            assert_eq!(a.body["error"], "UNAUTHORIZED", "{what}");
        }
        Envelope::Convocore => {
            assert_eq!(keys, ["code", "issues", "message"], "{what}: Convocore's error envelope: {}", a.body);
            assert_eq!(a.body["code"], "UNAUTHORIZED", "{what}");
            assert_eq!(a.body["issues"], json!([]), "{what}");
        }
    }
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", a.body);
    assert_eq!(a.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"), "{what}");
    assert_eq!(a.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"), "{what}");
}

/// Sends every case to every route, asserting 401 in the envelope and the expected message;
/// the token is never echoed. Returns how many requests were sent.
async fn reject_everywhere(state: &AppState, cases: &[Case], targets: &[Target], valid: &str) -> usize {
    let mut sent = 0;
    for c in cases {
        let query = match c.query {
            "" => String::new(),
            name => format!("{name}={valid}"),
        };
        for t in targets {
            let what = format!("{} on {} {}", c.name, t.route.method, t.route.path);
            let a = send_target(state, t, &c.authorization, &query).await;
            assert_unauthorized(&a, t.route.envelope, &what);
            let message = a.body["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(c.message), "{what}: expected {:?}, got {message:?}", c.message);
            for value in &c.authorization {
                let secretish = value.rsplit('.').next().unwrap_or_default();
                if secretish.len() > 16 {
                    assert!(
                        !String::from_utf8_lossy(&a.bytes).contains(secretish),
                        "{what}: the token is never echoed"
                    );
                }
            }
            sent += 1;
        }
    }
    sent
}

/// Every item of `org` in the table (all its keys start with `ORG#<org>#`), in key order.
async fn org_items(state: &AppState, org: &str) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = items_with_prefix(state, &format!("ORG#{org}#")).await;
    items.sort_by_key(|i| (item_str(i, "PK"), item_str(i, "SK")));
    items
}

fn rs256_config(c: &mut shared::Config) {
    c.jwt.algorithm = JwtAlgorithm::Rs256;
    c.jwt.public_key_pem = Some(RS_PUBLIC.into());
}

fn es256_config(c: &mut shared::Config) {
    c.jwt.algorithm = JwtAlgorithm::Es256;
    c.jwt.public_key_pem = Some(ES_PUBLIC.into());
}

fn issuer_audience_config(c: &mut shared::Config) {
    c.jwt.issuer = Some(ISSUER.into());
    c.jwt.audience = Some(AUDIENCE.into());
}

/// A state of `configure`d token settings whose export jobs go to a channel (so that a job a
/// bad token managed to create would be seen).
async fn configured(configure: fn(&mut shared::Config)) -> (AppState, Worker) {
    jobs_state_with(configure).await
}

#[tokio::test]
async fn every_bad_token_answers_401_on_every_route_and_writes_nothing() {
    let started = std::time::Instant::now();
    let org = new_org();
    let (hs_state, mut hs_worker) = configured(|_| {}).await;

    // The organization's own data, so that PATCH, DELETE, ingest and PUT would change something.
    let tok = token(&org);
    seed_contact(&hs_state, &tok, "ag", "k1", 4, |i| format!("original {i}")).await;
    let snap =
        call(&hs_state, "POST", "/api/training/snapshots", &tok, Some(json!({"contactId": "k1", "notes": "kept"})))
            .await;
    assert_eq!(snap.status, 201, "{}", snap.body);
    let snapshot_id = snap.body["data"]["_id"].as_str().expect("id").to_string();
    let job = call(&hs_state, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl"}))).await;
    assert_eq!(job.status, 202, "{}", job.body);
    let job_id = job.body["data"]["id"].as_str().expect("job id").to_string();
    hs_worker.drain(&hs_state, worker_options()).await;
    let targets = targets("ag", "convo-k1", &snapshot_id, &job_id);
    assert_eq!(targets.len(), ROUTES.len());

    let items_before = org_items(&hs_state, &org).await;
    let objects_before = export_objects(&hs_state, &org).await;
    assert!(items_before.len() >= 5, "the organization has data to protect: {}", items_before.len());
    assert_eq!(objects_before.len(), 2, "the job's file and its manifest");

    // Each configuration with its own cases; the valid token of each is checked at the end.
    let (rs_state, mut rs_worker) = configured(rs256_config).await;
    let (es_state, mut es_worker) = configured(es256_config).await;
    let (ia_state, mut ia_worker) = configured(issuer_audience_config).await;
    let mut sent = 0;
    let mut cases = 0;
    for (state, list, valid) in [
        (&hs_state, hs256_cases(&org), hs256(&payload(&org))),
        (&rs_state, rs256_cases(&org), rsa(Algorithm::RS256, &payload(&org))),
        (&es_state, es256_cases(&org), es256(&payload(&org))),
        (&ia_state, issuer_audience_cases(&org), hs256(&with(&org, json!({"iss": ISSUER, "aud": AUDIENCE})))),
    ] {
        cases += list.len();
        sent += reject_everywhere(state, &list, &targets, &valid).await;
    }
    assert!(cases >= 80, "the table covers every listed case: {cases}");
    assert_eq!(sent, cases * ROUTES.len());

    // Writes nothing: the table and the bucket hold exactly what they held, no job was handed over.
    assert_eq!(org_items(&hs_state, &org).await, items_before, "no item of the organization changed");
    assert_eq!(export_objects(&hs_state, &org).await, objects_before, "no export object was written");
    for worker in [&mut hs_worker, &mut rs_worker, &mut es_worker, &mut ia_worker] {
        assert!(worker.pending().is_empty(), "no export job was handed to the worker");
    }
    let list = call(&hs_state, "GET", "/api/training/snapshots", &tok, None).await;
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(1), "{}", list.body);
    assert_eq!(list.body["data"][0]["notes"], "kept");
    let convo = call(&hs_state, "GET", "/agents/ag/convos", &tok, None).await;
    assert_eq!(convo.body["data"][0]["messagesNum"], 4, "{}", convo.body);
    assert_eq!(convo.body["data"][0]["userName"], "Jane Doe", "{}", convo.body);
    let jobs = call(&hs_state, "GET", "/api/training/exports", &tok, None).await;
    assert_eq!(jobs.body["data"].as_array().map(Vec::len), Some(1), "{}", jobs.body);

    // The valid token of each configuration gets through on a read route, so each rejection
    // above was the token's doing (run last: a write route would change the data).
    let list_route = targets.iter().find(|t| t.route.function == "list-snapshots").expect("list-snapshots");
    for (state, valid) in [
        (&hs_state, hs256(&payload(&org))),
        (&rs_state, rsa(Algorithm::RS256, &payload(&org))),
        (&es_state, es256(&payload(&org))),
        (&ia_state, hs256(&with(&org, json!({"iss": ISSUER, "aud": AUDIENCE})))),
        (&ia_state, hs256(&with(&org, json!({"iss": ISSUER, "aud": ["other", AUDIENCE]})))),
        // Within the 30 s leeway.
        (&hs_state, hs256(&with(&org, json!({"exp": now_epoch() - 5})))),
        // Fractional NumericDates (RFC 7519 §2): in the future, within the leeway, `nbf` passed
        // or within the leeway; and with RS256.
        (&hs_state, hs256(&with(&org, json!({"exp": now_epoch() as f64 + 600.26})))),
        (&hs_state, hs256(&with(&org, json!({"exp": now_epoch() as f64 - 5.5})))),
        (&hs_state, hs256(&with(&org, json!({"nbf": now_epoch() as f64 - 0.75, "exp": now_epoch() as f64 + 600.5})))),
        (&hs_state, hs256(&with(&org, json!({"nbf": now_epoch() as f64 + 10.5})))),
        (&rs_state, rsa(Algorithm::RS256, &with(&org, json!({"exp": now_epoch() as f64 + 600.26})))),
    ] {
        let a = send_target(state, list_route, &[format!("Bearer {valid}")], "").await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["data"][0]["_id"], snapshot_id.as_str());
    }
    // ... and on every route (writes included, now that nothing else is checked).
    for t in &targets {
        let a = send_target(&rs_state, t, &[format!("Bearer {}", rsa(Algorithm::RS256, &payload(&org)))], "").await;
        assert_ne!(a.status, 401, "{} {}: {}", t.route.method, t.route.path, a.body);
    }
    eprintln!("{sent} rejected requests ({cases} cases x {} routes) in {:?}", ROUTES.len(), started.elapsed());
}

#[tokio::test]
async fn a_configuration_that_cannot_verify_refuses_to_start() {
    // A public key that is not a key, and a key of the other family, stop the cold start.
    let mut config = support::state().await.config;
    config.jwt.algorithm = JwtAlgorithm::Rs256;
    config.jwt.public_key_pem = Some("not a pem".into());
    assert!(shared::auth::Authenticator::new(&config.jwt).is_err());
    config.jwt.public_key_pem = Some(ES_PUBLIC.into());
    assert!(shared::auth::Authenticator::new(&config.jwt).is_err(), "an EC key cannot verify RS256");
    config.jwt.algorithm = JwtAlgorithm::Es256;
    config.jwt.public_key_pem = Some(RS_PUBLIC.into());
    assert!(shared::auth::Authenticator::new(&config.jwt).is_err(), "an RSA key cannot verify ES256");
    config.jwt.public_key_pem = Some(ES_PUBLIC.into());
    assert!(shared::auth::Authenticator::new(&config.jwt).is_ok());
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let state = support::state_with(issuer_audience_config).await;
    let org = new_org();
    let good = Claims { iss: Some(ISSUER.into()), aud: Some(AUDIENCE.into()), ..claims(&org) };
    let cases = [
        (Claims { iss: Some("https://evil.example".into()), ..good.clone() }, 401),
        (Claims { aud: Some("other".into()), ..good.clone() }, 401),
        (Claims { iss: None, ..good.clone() }, 401),
        (Claims { aud: None, ..good.clone() }, 401),
        (good.clone(), 200),
        (Claims { aud: Some(json!(["other", AUDIENCE])), ..good.clone() }, 200),
        (Claims { aud: Some(json!(["other"])), ..good.clone() }, 401),
    ];
    for (c, status) in cases {
        let auth = format!("Bearer {}", token_claims(c));
        let a = send(&state, "GET", "/agents/ag/convos", &[("authorization", auth.as_str())], b"").await;
        assert_eq!(a.status.as_u16(), status, "{}", a.body);
    }
}
