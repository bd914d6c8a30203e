//! `scheduled-export` Lambda: EventBridge Scheduler's incremental JSONL export of every organization;
//! it hands the registry of organizations to the worker in batches.
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use shared::jobs::schedule::ScheduledEvent;
use shared::AppState;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    // Configuration and AWS clients are built once per cold start, then shared by every invocation.
    let state = AppState::from_env().await?;
    run(service_fn(|event: LambdaEvent<ScheduledEvent>| async {
        shared::jobs::schedule::handle(&state, event).await.map_err(Error::from)
    }))
    .await
}
