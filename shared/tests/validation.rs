//! Client input is answered with a 400 that names each problem, in the route's envelope:
//! bodies that do not fit (unknown fields, wrong types), repeatable filters past their bounds
//! (on the list, the export and export jobs alike), and never a 5xx or a retry hint.

mod support;

use serde_json::{json, Value};
use support::{call, jobs_state, new_org, seed_contact, send, token, Answer};

/// The issue messages of a 400, after checking status and envelope.
fn issues(a: &Answer) -> Vec<String> {
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.headers.get("retry-after").is_none());
    let list = a.body["issues"].as_array().unwrap_or_else(|| panic!("issues in {}", a.body));
    assert!(!list.is_empty(), "{}", a.body);
    list.iter().map(|i| i["message"].as_str().unwrap().to_string()).collect()
}

fn names(issues: &[String], field: &str) -> bool {
    issues.iter().any(|i| i.starts_with(&format!("{field}: ")))
}

#[tokio::test]
async fn bodies_that_do_not_fit_list_every_offending_field_in_both_envelopes() {
    let (state, _worker) = jobs_state().await;
    let tok = token(&new_org());
    // Tether: an unknown field and a wrong type together.
    let a = call(
        &state,
        "POST",
        "/api/training/snapshots",
        &tok,
        Some(json!({"contactId": 7, "colour": "red", "tags": "x"})),
    )
    .await;
    assert_eq!(a.body["success"], false);
    assert_eq!(a.body["error"], "VALIDATION_ERROR");
    let got = issues(&a);
    for field in ["contactId", "colour", "tags"] {
        assert!(names(&got, field), "{field}: {got:?}");
    }
    let a =
        call(&state, "POST", "/api/training/exports", &tok, Some(json!({"format": 3, "limit": "ten", "extra": true})))
            .await;
    let got = issues(&a);
    for field in ["format", "limit", "extra"] {
        assert!(names(&got, field), "{field}: {got:?}");
    }
    let id = "0".repeat(24);
    let a = call(
        &state,
        "PATCH",
        &format!("/api/training/snapshots/{id}"),
        &tok,
        Some(json!({"isArchived": "yes", "nope": 1})),
    )
    .await;
    let got = issues(&a);
    assert!(names(&got, "isArchived") && names(&got, "nope"), "{got:?}");
    // Convocore: `issues` is never empty on a 400.
    let a = call(&state, "PUT", "/agents/ag/convos/c1", &tok, Some(json!({"userName": 5, "bogus": 1}))).await;
    assert_eq!(a.body["code"], "BAD_REQUEST");
    let got = issues(&a);
    assert!(names(&got, "userName") && names(&got, "bogus"), "{got:?}");
    let a = call(
        &state,
        "POST",
        "/agents/ag/convos/c1/messages",
        &tok,
        Some(json!({"messages": [{"from": "robot", "content": 1, "ts": "2026-01-01T00:00:00Z"}]})),
    )
    .await;
    let got = issues(&a);
    assert!(names(&got, "messages[0].from") && names(&got, "messages[0].content"), "{got:?}");
    // Query and path problems name their parameter too, in both envelopes.
    for (uri, field) in [
        ("/agents/ag/convos?limit=0", "limit"),
        ("/agents/ag/convos/export?format=xml", "format"),
        ("/api/training/snapshots?archived=maybe", "archived"),
        ("/api/training/export?format=xml", "format"),
        ("/api/training/snapshots/nothex", "id"),
        ("/api/training/exports?limit=500", "limit"),
    ] {
        let a = call(&state, "GET", uri, &tok, None).await;
        assert!(names(&issues(&a), field), "{uri}: {}", a.body);
    }
    let a = send(
        &state,
        "POST",
        "/api/training/snapshots",
        &[("authorization", &format!("Bearer {tok}")), ("content-type", "application/json")],
        b"{\"contactId\":",
    )
    .await;
    assert!(names(&issues(&a), "body"));
}

#[tokio::test]
async fn filters_past_their_bounds_answer_400_on_the_list_the_export_and_jobs() {
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 2, |i| format!("line {i}")).await;
    let a =
        call(&state, "POST", "/api/training/snapshots", &tok, Some(json!({"contactId": "k1", "tags": ["t0", "t1"]})))
            .await;
    assert_eq!(a.status, 201, "{}", a.body);

    let tags = |n: usize| (0..n).map(|i| format!("tag=t{i}")).collect::<Vec<_>>().join("&");
    for path in ["/api/training/snapshots", "/api/training/export"] {
        for query in [tags(1000), tags(51), format!("tag={}", "x".repeat(65)), format!("quality={}", "q".repeat(101))] {
            let a = call(&state, "GET", &format!("{path}?{query}"), &tok, None).await;
            assert_eq!(a.body["error"], "VALIDATION_ERROR", "{path}: {}", a.body);
            let got = issues(&a);
            assert!(names(&got, "tag") || names(&got, "quality"), "{got:?}");
        }
        // 50 tags, the most a snapshot can have, are still a query; the first two match.
        let a = call(&state, "GET", &format!("{path}?{}", tags(2)), &tok, None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let a = call(&state, "GET", &format!("{path}?{}", tags(50)), &tok, None).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // A job's parameters are checked as completely when it is created: nothing is queued.
    let many: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
    for body in [
        json!({"tags": many}),
        json!({"tags": ["x".repeat(65)]}),
        json!({"category": "c".repeat(101)}),
        json!({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "tags": many}),
    ] {
        let a = call(&state, "POST", "/api/training/exports", &tok, Some(body.clone())).await;
        let got = issues(&a);
        assert!(["tags", "category", "from"].iter().any(|f| names(&got, f)), "{body}: {got:?}");
    }
    let jobs = call(&state, "GET", "/api/training/exports", &tok, None).await;
    assert_eq!(jobs.body["data"], json!([]), "no job was created");
    assert!(worker.pending().is_empty());
    let a = call(
        &state,
        "POST",
        "/api/training/exports",
        &tok,
        Some(json!({"tags": (0..50).map(|i| format!("t{i}")).collect::<Vec<_>>()})),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
    let _: Value = a.body;
}
