//! `list-convos` Lambda: lists an agent's conversations, newest first (`GET /agents/{agentId}/convos`).
use lambda_http::{run, service_fn, Error};
use shared::lambda::LambdaReply;
use shared::AppState;

// jemalloc: glibc's allocator cost a quarter of an export's CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    // Configuration is read once per cold start (AWS clients are built on first use), then shared by every invocation.
    let state = AppState::from_env().await?;
    // LambdaReply hands the answer to Lambda without re-decoding it (a CSV keeps its BOM).
    run(service_fn(|req| async {
        Ok::<_, Error>(LambdaReply(shared::handlers::convos::list_convos(&state, req).await))
    }))
    .await
}
