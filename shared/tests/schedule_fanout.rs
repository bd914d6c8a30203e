//! A scheduled run over 2,000 organizations: the coordinator hands the registry to the worker
//! in batches through Lambda's Invoke API (a stand-in endpoint that takes or refuses them), its
//! retry goes on from its checkpoint, and neither a redelivered event nor a redelivered batch
//! makes a second job for anyone. Prints the run's figures (docs/exports.md cites them).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shared::jobs::schedule::{self, ScheduledEvent, BATCH_SIZE};
use shared::jobs::{Batch, WorkerEvent};
use shared::keys::Org;
use support::{items_with_prefix, jobs_state_with, new_org, tiny_snapshot};

const ORGS: usize = 2_000;

#[tokio::test]
async fn a_run_over_2000_organizations_makes_one_job_each_resumes_from_its_checkpoint_and_ignores_redeliveries() {
    let (state, mut worker) = jobs_state_with(|c| c.schedule_settle = Duration::ZERO).await;
    // Every organization is registered; three in four have a snapshot (a change to export).
    let orgs: Vec<String> = (0..ORGS).map(|_| new_org()).collect();
    let changed: BTreeSet<String> =
        orgs.iter().enumerate().filter(|(i, _)| i % 4 != 0).map(|(_, o)| o.clone()).collect();
    futures::stream::iter(&orgs)
        .for_each_concurrent(16, |org| {
            let state = &state;
            async move { schedule::register(state, &Org::stored(org.as_str())).await.expect("register") }
        })
        .await;
    let store = shared::snapshots::store::SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let snapshots: Vec<_> = changed.iter().enumerate().map(|(i, org)| tiny_snapshot(org, i)).collect();
    for chunk in snapshots.chunks(500) {
        store.import(chunk.to_vec()).await.expect("import");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let scheduled = shared::time::now_rfc3339();
    let event = ScheduledEvent { scheduled_time: Some(scheduled.clone()), ..Default::default() };

    // The coordinator hands batches to the worker through Lambda, which takes 7 and then fails:
    // the invocation fails, and its checkpoint holds the 7 batches handed out.
    let lambda = LambdaStandIn::start(7).await;
    let mut coordinator = state.clone();
    coordinator.jobs = lambda.dispatcher().await;
    let started = Instant::now();
    let failed = schedule::run(&coordinator, event.clone()).await;
    assert!(failed.is_err(), "{failed:?}");
    let at = schedule::summary(&state, &scheduled).await.unwrap().expect("the run's item");
    assert_eq!((at.batches, at.organizations, at.finished), (7, 7 * BATCH_SIZE as u64, false), "{at:?}");

    // Its retry goes on from there; a redelivered event afterwards hands out nothing.
    lambda.accept_all();
    let handed = schedule::run(&coordinator, event.clone()).await.expect("the retry");
    let coordinator_time = started.elapsed();
    let batches_total = ORGS.div_ceil(BATCH_SIZE as usize) as u64;
    assert_eq!((handed.organizations, handed.batches), (ORGS as u64, batches_total), "{handed:?}");
    let again = schedule::run(&coordinator, event.clone()).await.expect("a redelivery");
    assert_eq!((again.organizations, again.batches), (handed.organizations, handed.batches));
    let batches = lambda.batches();
    assert_eq!(batches.len() as u64, batches_total, "one invocation per batch");
    assert_eq!(batches.iter().map(|b| b.number).collect::<Vec<_>>(), (0..batches_total).collect::<Vec<_>>());
    let handed_out: Vec<&String> = batches.iter().flat_map(|b| &b.organizations).collect();
    assert_eq!(handed_out.len(), ORGS, "every organization once");
    assert_eq!(handed_out.into_iter().cloned().collect::<BTreeSet<_>>(), orgs.iter().cloned().collect());

    // The batches, as the worker runs them (here one after another; Lambda runs them at once).
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for batch in &batches {
        outcomes.push(schedule::run_batch(&state, batch, None).await.expect("batch"));
    }
    let batch_time = started.elapsed();
    assert!(outcomes.iter().all(|o| o.reported && o.failed == 0), "{outcomes:?}");
    let summary = schedule::summary(&state, &scheduled).await.unwrap().unwrap();
    assert!(summary.finished, "{summary:?}");
    assert_eq!(summary.batches_finished, batches_total);
    assert_eq!((summary.jobs_created, summary.unchanged), (changed.len() as u64, (ORGS - changed.len()) as u64));
    assert_eq!((summary.jobs_resumed, summary.deferred, summary.failed), (0, 0, 0));

    // A redelivered batch finds its jobs, makes none and is not counted twice.
    let repeat = schedule::run_batch(&state, &batches[3], None).await.expect("a redelivered batch");
    let changed_in_it = batches[3].organizations.iter().filter(|o| changed.contains(*o)).count() as u64;
    assert_eq!((repeat.reported, repeat.jobs_created, repeat.jobs_resumed), (false, 0, changed_in_it));
    assert_eq!(schedule::summary(&state, &scheduled).await.unwrap().unwrap(), summary);

    // One job per changed organization, with the run's id, dispatched to the worker.
    let jobs = items_with_prefix(&state, "ORG#").await;
    let mut per_org: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in jobs.iter().filter(|i| support::item_str(i, "SK").starts_with("JOB#")) {
        per_org.entry(support::item_str(item, "organizationId")).or_default().push(support::item_str(item, "SK"));
    }
    assert_eq!(per_org.keys().cloned().collect::<BTreeSet<_>>(), changed, "a job for each changed organization");
    let when = shared::time::parse_rfc3339(&scheduled).unwrap();
    for (org, jobs) in &per_org {
        assert_eq!(jobs, &[format!("JOB#{}", schedule::job_id(when, &Org::stored(org.as_str())))], "{org}");
    }
    let dispatched: BTreeSet<(String, String)> =
        worker.pending().into_iter().map(|j| (j.organization_id, j.job_id)).collect();
    assert_eq!(dispatched.len(), changed.len(), "each job handed to the worker (again only by a redelivery)");

    let per_org_ms = batch_time.as_secs_f64() * 1000.0 / ORGS as f64;
    println!(
        "scheduled run over {ORGS} organizations: coordinator {:.1} s for {batches_total} batches \
         ({} Lambda invocations tried), batches {:.1} s in all ({per_org_ms:.1} ms per organization, \
         one after another on the emulator), {} jobs created, 0 duplicated",
        coordinator_time.as_secs_f64(),
        lambda.calls(),
        batch_time.as_secs_f64(),
        summary.jobs_created,
    );
}

/// A stand-in for Lambda's Invoke API: takes the first `accept` invocations (202, as Lambda
/// answers `InvocationType: Event`), refuses the others with a 500 until told to take them all.
struct LambdaStandIn {
    url: String,
    accept: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    taken: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LambdaStandIn {
    async fn start(accept: usize) -> Self {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accept = Arc::new(AtomicUsize::new(accept));
        let calls = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let (a, c, t) = (accept.clone(), calls.clone(), taken.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (a, c, t) = (a.clone(), c.clone(), t.clone());
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (a, c, t) = (a.clone(), c.clone(), t.clone());
                    async move {
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        c.fetch_add(1, Ordering::SeqCst);
                        let mut taken = t.lock().unwrap();
                        let answer = if taken.len() < a.load(Ordering::SeqCst) {
                            taken.push(String::from_utf8_lossy(&body).to_string());
                            http::Response::builder().status(202).body(String::new())
                        } else {
                            http::Response::builder()
                                .status(500)
                                .header("x-amzn-ErrorType", "ServiceException")
                                .body(r#"{"message":"stand-in refuses"}"#.to_string())
                        };
                        Ok::<_, std::convert::Infallible>(answer.unwrap())
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
            }
        });
        Self { url, accept, calls, taken, task }
    }

    /// A dispatcher that invokes the worker through this endpoint.
    async fn dispatcher(&self) -> shared::jobs::Dispatcher {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let config = aws_sdk_lambda::config::Builder::from(&sdk).endpoint_url(&self.url).build();
        shared::jobs::Dispatcher::Lambda {
            client: aws_sdk_lambda::Client::from_conf(config).into(),
            function: "export-worker".into(),
        }
    }

    fn accept_all(&self) {
        self.accept.store(usize::MAX, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The batches it took, in order.
    fn batches(&self) -> Vec<Batch> {
        let taken = self.taken.lock().unwrap();
        taken
            .iter()
            .map(|payload| match serde_json::from_str(payload).expect("a worker event") {
                WorkerEvent::Batch { scheduled_batch } => scheduled_batch,
                other => panic!("not a batch: {other:?}"),
            })
            .collect()
    }
}

impl Drop for LambdaStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
