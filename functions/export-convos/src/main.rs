//! `export-convos` Lambda: exports all of an agent's conversations as JSON or CSV (`GET /agents/{agentId}/convos/export`).
use lambda_http::{run, service_fn, Error};
use shared::AppState;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    // Configuration and AWS clients are built once per cold start, then shared by every invocation.
    let state = AppState::from_env().await?;
    run(service_fn(|req| async { Ok::<_, Error>(shared::exports::convos::export_agent_convos(&state, req).await) })).await
}
