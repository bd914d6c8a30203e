//! `scheduled-export` Lambda: EventBridge Scheduler's incremental JSONL export of every organization;
//! it hands the registry of organizations to the worker in batches.
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use shared::jobs::schedule::ScheduledEvent;
use shared::AppState;

// jemalloc: glibc's allocator cost a quarter of an export's CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    // Configuration is read once per cold start (AWS clients are built on first use), then shared by every invocation.
    let state = AppState::from_env().await?;
    run(service_fn(|event: LambdaEvent<ScheduledEvent>| async {
        shared::jobs::schedule::handle(&state, event).await.map_err(Error::from)
    }))
    .await
}
