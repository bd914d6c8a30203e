//! Redaction and dedup as stages of every export, through the routes, the worker and the
//! emulator: placeholders consistent across texts and metadata, `EXPORT_REDACTION=required`
//! on every route and job, and dedup that is deterministic and equal across resumption.

mod support;

use serde_json::{json, Value};
use support::{call, download, jobs_state, jobs_state_with, new_org, seed_contact, token, worker_options};

fn lines(bytes: &[u8]) -> Vec<Value> {
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

async fn snapshot_of(state: &shared::AppState, tok: &str, contact: &str) -> String {
    support::create_snapshot(state, tok, json!({"contactId": contact})).await
}

/// A customer who writes their name, e-mail, phone (in another writing), card and IBAN.
async fn seed_pii(state: &shared::AppState, tok: &str) {
    let texts = [
        "Hi, I'm Jane Doe, mail JANE@example.com or call (415) 555-0123",
        "Thanks Jane! Could you confirm the card?",
        "card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, order #12345678",
        "Done, jane. We'll call +1 415 555 0123 tomorrow.",
    ];
    seed_contact(state, tok, "ag", "k1", texts.len(), |i| texts[i].to_string()).await;
    snapshot_of(state, tok, "k1").await;
}

#[tokio::test]
async fn a_redacted_training_export_replaces_pii_with_consistent_placeholders_in_texts_and_fields() {
    let (state, _) = jobs_state().await;
    let tok = token(&new_org());
    seed_pii(&state, &tok).await;

    let a = call(&state, "GET", "/api/training/export?format=jsonl&redact=pii", &tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let item = &lines(&a.bytes)[0];
    let texts: Vec<&str> =
        item["conversation"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts[0], "Hi, I'm <NAME_1>, mail <EMAIL_1> or call <PHONE_1>");
    assert_eq!(texts[1], "Thanks <NAME_1>! Could you confirm the card?");
    assert_eq!(texts[2], "card <CARD_1>, IBAN <IBAN_1>, order #12345678");
    assert_eq!(texts[3], "Done, <NAME_1>. We'll call <PHONE_1> tomorrow.");
    assert_eq!(item["customer"], json!({"name": "<NAME_1>", "phone": "<PHONE_1>", "email": "<EMAIL_1>"}));
    let header = a.headers["x-export-redacted"].to_str().unwrap();
    assert_eq!(header, "card=1, email=2, iban=1, name=4, phone=3");

    // Narrowed: only e-mails; and the same file in CSV has its customer columns redacted.
    let a = call(&state, "GET", "/api/training/export?format=jsonl&redact=pii&redactTypes=email", &tok, None).await;
    let item = &lines(&a.bytes)[0];
    assert_eq!(item["conversation"][0]["content"], "Hi, I'm Jane Doe, mail <EMAIL_1> or call (415) 555-0123");
    assert_eq!(item["customer"]["name"], "Jane Doe");
    let a = call(&state, "GET", "/api/training/export?format=csv&redact=pii", &tok, None).await;
    let csv = String::from_utf8(a.bytes.clone()).unwrap();
    assert!(csv.contains(",<NAME_1>,<PHONE_1>,<EMAIL_1>,"), "{csv}");
    assert!(!csv.contains("Jane") && !csv.contains("555"), "{csv}");

    // Without redaction nothing changes, and no header says otherwise.
    let a = call(&state, "GET", "/api/training/export?format=jsonl", &tok, None).await;
    assert!(a.headers.get("x-export-redacted").is_none());
    assert_eq!(lines(&a.bytes)[0]["customer"]["name"], "Jane Doe");

    for bad in ["redact=all", "redact=pii&redactTypes=email,fax", "redact=none&redactTypes=email", "dedup=fuzzy"] {
        let a = call(&state, "GET", &format!("/api/training/export?{bad}"), &tok, None).await;
        support::assert_tether_error(&a, 400, "VALIDATION_ERROR");
    }
}

#[tokio::test]
async fn conversation_exports_redact_the_lead_fields_and_the_messages() {
    let (state, _) = jobs_state().await;
    let tok = token(&new_org());
    seed_pii(&state, &tok).await;
    let a = call(&state, "GET", "/agents/ag/convos/export?format=json&redact=pii", &tok, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let convo = &a.body["data"][0];
    let fields = &convo["metadata"]["convo"];
    assert_eq!((fields["userName"].as_str(), fields["userEmail"].as_str()), (Some("<NAME_1>"), Some("<EMAIL_1>")));
    assert_eq!(fields["userPhone"], "<PHONE_1>");
    assert_eq!(
        convo["turns"][0]["messages"][0]["payload"]["message"],
        "Hi, I'm <NAME_1>, mail <EMAIL_1> or call <PHONE_1>"
    );
    let a = call(&state, "GET", "/agents/ag/convos/convo-k1/export?format=csv&redact=pii", &tok, None).await;
    let csv = String::from_utf8(a.bytes.clone()).unwrap();
    assert!(!csv.contains("Jane") && !csv.contains("jane@") && !csv.contains("4111"), "{csv}");
    assert!(a.headers["x-export-redacted"].to_str().unwrap().contains("card=1"));
}

#[tokio::test]
async fn required_redaction_cannot_be_bypassed_on_any_route_or_job() {
    let (optional, mut optional_worker) = jobs_state().await;
    let (state, mut worker) = jobs_state_with(|c| c.export_redaction_required = true).await;
    let tok = token(&new_org());
    seed_pii(&state, &tok).await;
    let routes = [
        "/api/training/export?format=jsonl",
        "/agents/ag/convos/export?format=csv",
        "/agents/ag/convos/convo-k1/export?format=json",
    ];
    for route in routes {
        for bad in ["redact=none", "redactTypes=email"] {
            let a = call(&state, "GET", &format!("{route}&{bad}"), &tok, None).await;
            assert_eq!(a.status, 400, "{route}&{bad}: {}", a.body);
            assert!(a.body.to_string().contains("EXPORT_REDACTION=required"), "{}", a.body);
        }
        // Asked for nothing: redacted all the same.
        let a = call(&state, "GET", route, &tok, None).await;
        assert_eq!(a.status, 200, "{route}: {}", a.body);
        let body = String::from_utf8_lossy(&a.bytes).to_string();
        assert!(!body.contains("Jane") && !body.contains("4111 1111"), "{route}: {body}");
        assert!(a.headers.contains_key("x-export-redacted"), "{route}");
    }
    for body in [json!({"redact": "none"}), json!({"source": "conversations", "agentId": "ag", "redactTypes": ["ip"]})]
    {
        let a = call(&state, "POST", "/api/training/exports", &tok, Some(body.clone())).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
    }
    // A job stored without redaction (created before the setting changed) is redacted when it runs.
    let created = call(&optional, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl"}))).await;
    assert_eq!(created.status, 202, "{}", created.body);
    for event in optional_worker.pending() {
        shared::jobs::worker::run(&state, &event, worker_options()).await.unwrap();
    }
    worker.drain(&state, worker_options()).await;
    let id = created.body["data"]["id"].as_str().unwrap();
    let job = call(&optional, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["redacted"]["name"], 4, "{job}");
    let (_, _, file) = download(job["url"].as_str().unwrap()).await;
    assert!(!String::from_utf8_lossy(&file).contains("Jane"));
    let (_, _, manifest) = download(job["manifest"]["url"].as_str().unwrap()).await;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["redaction"]["types"], json!(["email", "phone", "card", "iban", "ssn", "ip", "name"]));
    assert_eq!(manifest["redaction"]["found"]["card"], 1);
}

/// Three customers whose conversations differ only in their phone number, one who paraphrases
/// a long question with one word changed, and one unrelated.
async fn seed_duplicates(state: &shared::AppState, tok: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for (contact, phone) in [("k1", "+1 415 555 0101"), ("k2", "+1 415 555 0102"), ("k3", "+1 415 555 0103")] {
        let texts = [format!("my number is {phone}, where is my order?"), "It ships tomorrow.".to_string()];
        seed_contact(state, tok, "ag", contact, 2, |i| texts[i].clone()).await;
        ids.push(snapshot_of(state, tok, contact).await);
    }
    let long = "I ordered the blue running shoes in size nine last week and the tracking page still says the \
                parcel is waiting at the depot near the station so could you tell me when it will finally arrive";
    for (contact, word) in [("k4", "blue"), ("k5", "red")] {
        let texts = [long.replace("blue", word), "It arrives on Friday.".to_string()];
        seed_contact(state, tok, "ag", contact, 2, |i| texts[i].clone()).await;
        ids.push(snapshot_of(state, tok, contact).await);
    }
    seed_contact(state, tok, "ag", "k6", 2, |i| ["Do you ship to Canada?", "Yes, in 5 days."][i].to_string()).await;
    ids.push(snapshot_of(state, tok, "k6").await);
    ids
}

#[tokio::test]
async fn dedup_removes_exact_duplicates_after_redaction_and_near_ones_keeping_the_newest() {
    let (state, _) = jobs_state().await;
    let tok = token(&new_org());
    let ids = seed_duplicates(&state, &tok).await;
    let ids_of =
        |a: &support::Answer| lines(&a.bytes).iter().map(|l| l["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();

    let raw = call(&state, "GET", "/api/training/export?format=jsonl&dedup=exact", &tok, None).await;
    assert_eq!(ids_of(&raw).len(), 6, "the phone numbers differ: nothing is equal");
    let exact = call(&state, "GET", "/api/training/export?format=jsonl&dedup=exact&redact=pii", &tok, None).await;
    assert_eq!(exact.status, 200);
    // Newest first: of k1..k3 the newest (k3) stays.
    assert_eq!(ids_of(&exact), [ids[5].as_str(), &ids[4], &ids[3], &ids[2]]);
    assert_eq!(exact.headers["x-export-skipped-reasons"], "duplicate=2");
    let near = call(&state, "GET", "/api/training/export?format=jsonl&dedup=near&redact=pii", &tok, None).await;
    assert_eq!(ids_of(&near), [ids[5].as_str(), &ids[4], &ids[2]]);
    assert_eq!(near.headers["x-export-skipped-reasons"], "duplicate=2, near_duplicate=1");
    // Deterministic: the same request, the same bytes.
    let again = call(&state, "GET", "/api/training/export?format=jsonl&dedup=near&redact=pii", &tok, None).await;
    assert_eq!(again.bytes, near.bytes);
}

#[tokio::test]
async fn a_dedup_job_resumed_in_new_invocations_dedups_as_one_pass_and_samples_its_removals() {
    let (state, mut worker) = jobs_state().await;
    let tok = token(&new_org());
    let ids = seed_duplicates(&state, &tok).await;
    // Split by snapshot so duplicates may fall in different files: a later file drops them too.
    let split = json!({"validation": 0.34, "test": 0.34, "seed": "s", "groupBy": "snapshotId"});
    let body = json!({"format": "jsonl", "dedup": "near", "redact": "pii", "split": split});
    let mut results = Vec::new();
    for budget in [600_000u64, 0] {
        let created = call(&state, "POST", "/api/training/exports", &tok, Some(body.clone())).await;
        assert_eq!(created.status, 202, "{}", created.body);
        let mut options = worker_options();
        options.budget = std::time::Duration::from_millis(budget);
        let outcomes = worker.drain(&state, options).await;
        let id = created.body["data"]["id"].as_str().unwrap();
        let job = call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
        assert_eq!(job["status"], "succeeded", "{job} {outcomes:?}");
        results.push((job, outcomes.len()));
    }
    let (one, resumed) = (&results[0].0, &results[1].0);
    assert!(results[1].1 > results[0].1, "the second job ran in more invocations");
    let digests =
        |job: &Value| job["files"].as_array().unwrap().iter().map(|f| f["sha256"].clone()).collect::<Vec<_>>();
    assert_eq!(digests(one), digests(resumed));
    let mut kept = Vec::new();
    for f in one["files"].as_array().unwrap() {
        let (_, _, bytes) = download(f["url"].as_str().unwrap()).await;
        kept.extend(lines(&bytes).iter().map(|l| l["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(kept.len(), 3, "every duplicate left, whichever file it fell in: {kept:?}");
    // One of each group: the first in the job's order (train, validation, test; newest first).
    assert_eq!(ids[..3].iter().filter(|id| kept.contains(id)).count(), 1, "{kept:?}");
    assert_eq!(ids[3..5].iter().filter(|id| kept.contains(id)).count(), 1, "{kept:?}");
    assert!(kept.contains(&ids[5]));
    let (_, _, manifest) = download(resumed["manifest"]["url"].as_str().unwrap()).await;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["dedup"]["mode"], "near");
    assert_eq!(
        (manifest["dedup"]["duplicate"].as_u64(), manifest["dedup"]["nearDuplicate"].as_u64()),
        (Some(2), Some(1))
    );
    let sample = manifest["dedup"]["sample"].as_array().unwrap();
    assert_eq!(sample.len(), 3, "{manifest}");
    for pair in sample {
        let (k, r) = (pair["kept"].as_str().unwrap().to_string(), pair["removed"].as_str().unwrap().to_string());
        assert!(kept.contains(&k) && !kept.contains(&r), "{pair}");
        let similarity = pair["similarity"].as_f64().unwrap();
        assert!(
            ids[..3].contains(&r) && similarity == 1.0 || r == ids[3] || r == ids[4] && similarity >= 0.8,
            "{pair}"
        );
    }
    assert_eq!(resumed["skippedReasons"], json!({"duplicate": 2, "near_duplicate": 1}));
}

#[tokio::test]
async fn a_chat_format_dedups_the_turns_it_writes() {
    let (state, _) = jobs_state().await;
    let tok = token(&new_org());
    // Two snapshots of one conversation, the later with a customer's "thanks" after the answer:
    // Vertex ends on the model's turn, so both write the same example.
    let texts = ["Where is my parcel?", "It arrives on Friday.", "thanks!"];
    seed_contact(&state, &tok, "ag", "k1", 2, |i| texts[i].to_string()).await;
    let first = snapshot_of(&state, &tok, "k1").await;
    seed_contact(&state, &tok, "ag", "k1", 3, |i| texts[i].to_string()).await;
    let second = snapshot_of(&state, &tok, "k1").await;
    assert_ne!(first, second);
    let jsonl = call(&state, "GET", "/api/training/export?format=jsonl&dedup=exact", &tok, None).await;
    assert_eq!(lines(&jsonl.bytes).len(), 2, "as snapshots they differ");
    let vertex = call(&state, "GET", "/api/training/export?format=vertex&dedup=exact", &tok, None).await;
    assert_eq!(vertex.status, 200, "{}", vertex.body);
    assert_eq!(lines(&vertex.bytes).len(), 1, "as Vertex examples they are one");
    assert_eq!(vertex.headers["x-export-skipped-reasons"], "duplicate=1");
}

#[tokio::test]
async fn a_job_resumed_after_redaction_became_required_starts_again_redacted() {
    let (optional, mut worker) = jobs_state().await;
    let (required, _) = jobs_state_with(|c| c.export_redaction_required = true).await;
    let tok = token(&new_org());
    seed_pii(&optional, &tok).await;
    seed_duplicates(&optional, &tok).await;
    let split = json!({"validation": 0.34, "test": 0.34, "seed": "s", "groupBy": "snapshotId"});
    let created =
        call(&optional, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl", "split": split}))).await;
    assert_eq!(created.status, 202, "{}", created.body);
    // One invocation under the old setting writes the first file and hands over...
    let mut options = worker_options();
    options.budget = std::time::Duration::ZERO;
    let first = worker.pending();
    for event in &first {
        shared::jobs::worker::run(&optional, event, options.clone()).await.unwrap();
    }
    // ...and the rest run once the deployment requires redaction.
    worker.drain(&required, worker_options()).await;
    let id = created.body["data"]["id"].as_str().unwrap();
    let job = call(&optional, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
    assert_eq!(job["status"], "succeeded", "{job}");
    let mut rows = 0;
    for f in job["files"].as_array().unwrap() {
        let (_, _, bytes) = download(f["url"].as_str().unwrap()).await;
        let text = String::from_utf8_lossy(&bytes).to_string();
        assert!(!text.contains("Jane") && !text.contains("4111 1111"), "{text}");
        rows += lines(&bytes).len();
    }
    assert_eq!(rows, 7, "every example once, all redacted");
    // Both seeds wrote contact k1's conversation: its snapshot of the second holds the first's card too.
    assert_eq!(job["redacted"]["card"], 2, "{job}");
}
