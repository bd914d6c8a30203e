//! `export-worker` Lambda: runs export jobs to S3 and the scheduled run's batches, invoked
//! asynchronously with `{organizationId, jobId}` or `{"scheduledBatch": {...}}`.
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use shared::jobs::WorkerEvent;
use shared::AppState;

// jemalloc: glibc's allocator cost a quarter of an export's CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    // Configuration is read once per cold start (AWS clients are built on first use), then shared by every invocation.
    let state = AppState::from_env().await?;
    // An error fails the invocation, so Lambda retries it; a job resumes from its checkpoint.
    run(service_fn(|event: LambdaEvent<WorkerEvent>| async {
        shared::jobs::worker::handle(&state, event).await.map_err(Error::from)
    }))
    .await
}
