//! Export events on EventBridge, read back through a rule with an SQS target on the emulator:
//! a job that succeeds, one that fails, a scheduled run, and an event that EventBridge would
//! not take at first (the job's outcome unchanged, the event sent again by a later read).

mod support;

use serde_json::json;
use serde_json::Value;
use shared::jobs::schedule::{run, ScheduledEvent};
use shared::AppState;
use support::{call, jobs_state, jobs_state_with, new_org, seed_contact, token, worker_options};

/// A scheduled run sweeps every organization's recent jobs and sends the events they still
/// owe: this file's tests take turns, so each sees exactly the events its own steps send.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn seed(state: &shared::AppState, tok: &str) {
    seed_contact(state, tok, "ag", "k1", 2, |i| ["Where is my order?", "It ships today."][i].to_string()).await;
    support::create_snapshot(state, tok, json!({"contactId": "k1"})).await;
}

#[tokio::test]
async fn a_succeeded_job_puts_one_event_with_its_files_and_no_url_or_customer_data() {
    let _turn = TURN.lock().await;
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed(&state, &tok).await;
    let events = subscribe(&state, json!({"organizationId": [org.as_str()]})).await;
    let created = call(&state, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl"}))).await;
    assert_eq!(created.status, 202, "{}", created.body);
    worker.drain(&state, worker_options()).await;
    let id = created.body["data"]["id"].as_str().unwrap();
    let job = call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await.body["data"].clone();
    assert_eq!(job["status"], "succeeded");

    let got = events.receive(2).await;
    assert_eq!(got.len(), 1, "exactly one event: {got:?}");
    let event = &got[0];
    assert_eq!(event["source"], "training-data.exports");
    assert_eq!(event["detail-type"], "Export Job Succeeded");
    let d = &event["detail"];
    assert_eq!(d["eventId"], format!("{id}:succeeded"));
    assert_eq!((d["jobId"].as_str(), d["organizationId"].as_str()), (Some(id), Some(org.as_str())));
    assert_eq!(
        (d["trigger"].as_str(), d["format"].as_str(), d["source"].as_str()),
        (Some("request"), Some("jsonl"), Some("training"))
    );
    assert_eq!(d["counts"]["written"], 1);
    let file = &d["files"][0];
    assert_eq!(file["name"], job["files"][0]["name"]);
    assert_eq!(file["sha256"], job["files"][0]["sha256"]);
    assert_eq!(file["s3Uri"], job["files"][0]["s3Uri"]);
    assert_eq!(d["manifestS3Uri"], job["manifest"]["s3Uri"]);
    assert!(d["manifestKey"].as_str().is_some_and(|k| k.ends_with("/manifest.json")));
    assert!(d["reason"].is_null());
    let text = event.to_string();
    assert!(!text.contains("X-Amz-Signature") && !text.contains("Where is my order"), "{text}");
    // Delivered: the job owes nothing, and reads send nothing more.
    call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await;
    assert!(events.receive(1).await.is_empty());
}

#[tokio::test]
async fn a_failed_job_puts_its_reason() {
    let _turn = TURN.lock().await;
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed(&state, &tok).await;
    let events = subscribe(&state, json!({"organizationId": [org.as_str()]})).await;
    let body = json!({"agentId": "ag", "convoId": "convo-k1"});
    let created = call(&state, "POST", "/api/training/exports", &tok, Some(body)).await;
    assert_eq!(created.status, 202, "{}", created.body);
    let key = |k: &str| aws_sdk_dynamodb::types::AttributeValue::S(k.to_string());
    let owner = shared::keys::Org::stored(org.as_str());
    state
        .dynamo
        .delete_item()
        .table_name(&state.config.table_name)
        .key("PK", key(&shared::keys::agent(&owner, "ag")))
        .key("SK", key(&shared::convos::store::convo_sk("convo-k1")))
        .send()
        .await
        .unwrap();
    worker.drain(&state, worker_options()).await;
    let got = events.receive(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["detail-type"], "Export Job Failed");
    assert_eq!(got[0]["detail"]["reason"], "Conversation not found");
    assert_eq!(got[0]["detail"]["source"], "conversations");
    assert_eq!(got[0]["detail"]["files"], json!([]));
}

/// A scheduled time no earlier run used (years ahead: every change is in its window), which
/// names the run's event.
fn far_scheduled_time() -> String {
    let at = chrono::Utc::now() + chrono::Duration::days(5 * 366);
    shared::time::to_rfc3339(at)
}

#[tokio::test]
async fn a_scheduled_run_puts_its_summary() {
    let _turn = TURN.lock().await;
    let (state, mut worker) = jobs_state_with(|c| c.schedule_settle = std::time::Duration::ZERO).await;
    let tok = token(&new_org());
    seed(&state, &tok).await;
    let scheduled = &far_scheduled_time();
    let events = subscribe(&state, json!({"eventId": [format!("run:{scheduled}:complete")]})).await;
    run(&state, ScheduledEvent { scheduled_time: Some(scheduled.into()), ..Default::default() }).await.unwrap();
    worker.drain(&state, worker_options()).await;
    let summary = shared::jobs::schedule::summary(&state, scheduled).await.unwrap().expect("the run's item");
    assert!(summary.finished, "{summary:?}");
    let got = events.receive(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["detail-type"], "Scheduled Export Run Finished");
    let d = &got[0]["detail"];
    assert_eq!(d["scheduledTime"], scheduled.as_str());
    assert_eq!(d["jobsCreated"], json!(summary.jobs_created));
    assert_eq!(d["organizations"], json!(summary.organizations));
    assert_eq!(d["batches"], json!(summary.batches));
    assert_eq!(d["batchesFinished"], json!(summary.batches));
    assert!(summary.jobs_created >= 1);
}

#[tokio::test]
async fn concurrent_deliveries_of_a_run_and_of_its_batches_make_one_job_each_and_put_one_event() {
    let _turn = TURN.lock().await;
    let (state, mut worker) = jobs_state_with(|c| c.schedule_settle = std::time::Duration::ZERO).await;
    let toks: Vec<String> = (0..3).map(|_| token(&new_org())).collect();
    for tok in &toks {
        seed(&state, tok).await;
    }
    let scheduled = &far_scheduled_time();
    let events = subscribe(&state, json!({"eventId": [{"prefix": format!("run:{scheduled}:")}]})).await;
    let event = ScheduledEvent { scheduled_time: Some(scheduled.into()), ..Default::default() };
    // Two deliveries of the event at once; then every batch twice, all at once.
    let (a, b) = tokio::join!(run(&state, event.clone()), run(&state, event.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.organizations, b.organizations);
    worker.pending();
    let batches = std::mem::take(&mut worker.batches);
    let numbers: std::collections::BTreeSet<u64> = batches.iter().map(|b| b.number).collect();
    let twice = batches.iter().chain(batches.iter()).map(|b| shared::jobs::schedule::run_batch(&state, b, None));
    let outcomes = futures::future::join_all(twice).await;
    assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|o| o.failed == 0)), "{outcomes:?}");
    let summary = shared::jobs::schedule::summary(&state, scheduled).await.unwrap().expect("the run's item");
    assert!(summary.finished, "{summary:?}");
    assert_eq!(summary.batches_finished as usize, numbers.len(), "each batch counted once: {summary:?}");
    for tok in &toks {
        let jobs = call(&state, "GET", "/api/training/exports", tok, None).await;
        let scheduled_jobs: Vec<&Value> =
            jobs.body["data"].as_array().unwrap().iter().filter(|j| j["trigger"] == "schedule").collect();
        assert_eq!(scheduled_jobs.len(), 1, "one job per organization: {}", jobs.body);
    }
    let got = events.receive(2).await;
    assert_eq!(got.len(), 1, "one run event: {got:?}");
    assert_eq!(got[0]["detail"]["jobsCreated"], json!(summary.jobs_created));
    // A later delivery of the event puts no second one.
    run(&state, event).await.unwrap();
    assert!(events.receive(1).await.is_empty());
    worker.drain(&state, worker_options()).await;
}

#[tokio::test]
async fn a_run_event_eventbridge_refused_and_a_run_that_lost_a_batch_are_sent_by_the_next_run() {
    let _turn = TURN.lock().await;
    let (state, mut worker) = jobs_state_with(|c| c.schedule_settle = std::time::Duration::ZERO).await;
    seed(&state, &token(&new_org())).await;
    let refusing = Refusing::start(&refused()).await;
    let mut down = state.clone();
    down.events = shared::aws::repointed_events(&state.events, &refusing.url).into();
    // A run 8 hours ago whose batches were lost (never run): it cannot finish by itself.
    let lost = shared::time::to_rfc3339(chrono::Utc::now() - chrono::Duration::hours(8));
    run(&down, ScheduledEvent { scheduled_time: Some(lost.clone()), ..Default::default() }).await.unwrap();
    worker.pending();
    worker.batches.clear();
    // A run that finishes while EventBridge refuses its event: it stays owed.
    let refused_run = &shared::time::to_rfc3339(chrono::Utc::now() - chrono::Duration::hours(1));
    run(&down, ScheduledEvent { scheduled_time: Some(refused_run.clone()), ..Default::default() }).await.unwrap();
    worker.pending();
    for batch in std::mem::take(&mut worker.batches) {
        shared::jobs::schedule::run_batch(&down, &batch, None).await.unwrap();
    }
    assert!(shared::jobs::schedule::summary(&state, refused_run).await.unwrap().unwrap().finished);
    assert!(refusing.calls() >= 4, "retried: {} calls", refusing.calls());
    // Some time later (backdated: the refused run's finish a minute, the lost run's last
    // hand-out 8 hours), the next run's coordinator sends both.
    let ago = |d: chrono::Duration| shared::time::to_rfc3339(chrono::Utc::now() - d);
    let backdate = [
        (refused_run.as_str(), "finishedAt", ago(chrono::Duration::minutes(1))),
        (lost.as_str(), "touchedAt", ago(chrono::Duration::hours(8))),
    ];
    for (at, attribute, when) in backdate {
        state
            .dynamo
            .update_item()
            .table_name(&state.config.table_name)
            .key("PK", aws_sdk_dynamodb::types::AttributeValue::S("SCHEDULED#RUNS".into()))
            .key("SK", aws_sdk_dynamodb::types::AttributeValue::S(format!("RUN#{at}")))
            .update_expression("SET #a = :t")
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":t", aws_sdk_dynamodb::types::AttributeValue::S(when))
            .send()
            .await
            .unwrap();
    }
    let ids = [format!("run:{refused_run}:complete"), format!("run:{lost}:incomplete")];
    let events = subscribe(&state, json!({"eventId": ids})).await;
    let next = shared::time::now_rfc3339();
    run(&state, ScheduledEvent { scheduled_time: Some(next), ..Default::default() }).await.unwrap();
    let mut got: Vec<String> =
        events.receive(3).await.iter().map(|e| e["detail"]["eventId"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(got, want, "each owed event once");
    let ended = shared::jobs::schedule::summary(&state, &lost).await.unwrap().unwrap();
    assert!(ended.finished && ended.failed >= 1, "the lost batch's organizations count as failed: {ended:?}");
    worker.drain(&state, worker_options()).await;
}

/// EventBridge's answer when it takes none of the entries.
fn refused() -> String {
    json!({"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}]})
        .to_string()
}

#[tokio::test]
async fn an_event_eventbridge_refuses_is_sent_again_later_and_the_job_stays_succeeded() {
    let _turn = TURN.lock().await;
    let (state, mut worker) = jobs_state().await;
    let org = new_org();
    let tok = token(&org);
    seed(&state, &tok).await;
    let events = subscribe(&state, json!({"organizationId": [org.as_str()]})).await;
    // EventBridge refuses the entry every time while the job ends (a partial failure).
    let refusing = Refusing::start(&refused()).await;
    let mut down = state.clone();
    down.events = shared::aws::repointed_events(&state.events, &refusing.url).into();
    let created = call(&state, "POST", "/api/training/exports", &tok, Some(json!({"format": "jsonl"}))).await;
    assert_eq!(created.status, 202);
    for event in worker.pending() {
        let outcome = shared::jobs::worker::run(&down, &event, worker_options()).await.unwrap();
        assert_eq!(outcome, shared::jobs::worker::Outcome::Succeeded, "the job's outcome does not depend on its event");
    }
    assert!(refusing.calls() >= 4, "retried: {} calls", refusing.calls());
    assert!(events.receive(1).await.is_empty());
    let id = created.body["data"]["id"].as_str().unwrap();
    let store = shared::jobs::JobStore::new(&state);
    let stored = store.get(&shared::keys::Org::stored(org.as_str()), id).await.unwrap().unwrap();
    assert_eq!(stored.event_pending.as_deref(), Some("Export Job Succeeded"));
    // The next read sends it, once.
    let job = call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await;
    assert_eq!(job.body["data"]["status"], "succeeded");
    let got = events.receive(2).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["detail"]["eventId"], format!("{id}:succeeded"));
    let stored = store.get(&shared::keys::Org::stored(org.as_str()), id).await.unwrap().unwrap();
    assert_eq!(stored.event_pending, None);
    call(&state, "GET", &format!("/api/training/exports/{id}"), &tok, None).await;
    assert!(events.receive(1).await.is_empty(), "sent once");
}

/// A stand-in EventBridge endpoint that answers every call with `body` (status 200).
struct Refusing {
    url: String,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Refusing {
    async fn start(body: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counter, body) = (calls.clone(), body.to_string());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (counter, body) = (counter.clone(), body.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut read = Vec::new();
                    // Read the request (headers and its Content-Length body), then answer.
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        read.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&read).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                                })
                                .and_then(|v| v.parse::<usize>().ok())
                                .unwrap_or(0);
                            if read.len() >= end + 4 + length {
                                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let answer = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                let _ = stream.write_all(answer.as_bytes()).await;
                                read.clear();
                            }
                        }
                    }
                });
            }
        });
        Self { url, calls, task }
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// A subscriber: a rule with an SQS target.

/// An SQS queue on the emulator subscribed, by an EventBridge rule on the deployment's bus, to
/// the export events whose `detail` matches `detail_pattern`.
struct Subscription {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

/// Subscribes a new queue to export events matching `detail_pattern` (for example
/// `{"organizationId": [org]}`), as a user's rule with an SQS target would.
async fn subscribe(state: &AppState, detail_pattern: Value) -> Subscription {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = format!("events-{}", shared::ids::object_id());
    let queue_url = sqs.create_queue().queue_name(&name).send().await.expect("CreateQueue").queue_url.expect("url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("queue arn");
    let pattern = serde_json::json!({"source": [shared::jobs::events::SOURCE], "detail": detail_pattern});
    let bus = &state.config.event_bus_name;
    state
        .events
        .put_rule()
        .name(&name)
        .event_bus_name(bus)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .expect("PutRule");
    let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(arn).build().expect("target");
    state.events.put_targets().rule(&name).event_bus_name(bus).targets(target).send().await.expect("PutTargets");
    Subscription { sqs, queue_url }
}

impl Subscription {
    /// The events received within a few seconds, until `n` have arrived.
    async fn receive(&self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while out.len() < n && std::time::Instant::now() < deadline {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            for m in got.messages() {
                out.push(serde_json::from_str(m.body().unwrap_or("null")).expect("event JSON"));
                if let Some(handle) = m.receipt_handle() {
                    let _ = self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await;
                }
            }
        }
        out
    }
}
