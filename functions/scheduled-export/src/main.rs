//! `scheduled-export` Lambda: EventBridge Scheduler's incremental JSONL export of every organization.
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use shared::jobs::schedule::ScheduledEvent;
use shared::AppState;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    // Configuration and AWS clients are built once per cold start, then shared by every invocation.
    let state = AppState::from_env().await?;
    run(service_fn(|event: LambdaEvent<ScheduledEvent>| async {
        shared::jobs::schedule::run(&state, event.payload).await.map_err(Error::from)
    }))
    .await
}
