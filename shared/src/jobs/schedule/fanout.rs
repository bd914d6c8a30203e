//! The run's coordinator: the `scheduled-export` invocation pages the registry and hands each
//! page to the worker as a batch, by asynchronous invocation (Lambda queues it, retries it twice
//! and runs as many at once as the account allows), checkpointing after each one.
//!
//! A batch is handed out *before* the checkpoint records it, so a coordinator that dies in
//! between hands the same page out again on its retry: at least once, which a batch tolerates
//! (its jobs' ids are derived, and a batch number reports once). Two deliveries of one event
//! at once page the same registry; the checkpoint's condition lets one of them move on, and
//! the other reads where it went.

use std::time::{Duration, Instant};

use super::progress::{self, Progress};
use super::{registry, times, Batch, RunSummary, ScheduledEvent};
use crate::error::{ApiError, ErrorKind};
use crate::AppState;

/// Organizations per batch: one registry page, and one worker invocation of a few seconds
/// (docs/exports.md, "Scheduled exports").
pub const BATCH_SIZE: i32 = 100;

/// Time kept back from the coordinator's deadline: a page takes well under a second.
const MARGIN: Duration = Duration::from_secs(20);

/// The `scheduled-export` function's handler: the coordinator, with its invocation's deadline.
pub async fn handle(
    state: &AppState,
    event: lambda_runtime::LambdaEvent<ScheduledEvent>,
) -> Result<RunSummary, ApiError> {
    let left = event.context.deadline.saturating_sub(crate::jobs::now_ms().max(0) as u64);
    // A deadline already past at the start is no epoch instant: `cargo lambda watch` sends its
    // timeout (600000) there. Without a known deadline the coordinator pages to the end.
    let deadline = (left > 0).then(|| Instant::now() + Duration::from_millis(left));
    coordinate(state, &event.payload, deadline).await
}

/// Runs the coordinator without a deadline (the local server, tests): answers where the run
/// stands once every batch is handed out; the batches report as they finish.
pub async fn run(state: &AppState, event: ScheduledEvent) -> Result<RunSummary, ApiError> {
    coordinate(state, &event, None).await
}

async fn coordinate(
    state: &AppState,
    event: &ScheduledEvent,
    deadline: Option<Instant>,
) -> Result<RunSummary, ApiError> {
    let (scheduled, up_to) = times(state, event)?;
    let scheduled_time = crate::time::to_rfc3339(scheduled);
    let mut at = progress::open(state, &scheduled_time, &up_to).await?;
    // Earlier runs' owed events, and runs a lost batch left unfinished (never in this run's way).
    if let Err(e) = progress::sweep(state, &scheduled_time).await {
        tracing::warn!(error = %e, "could not look at earlier scheduled runs");
    }
    while !at.paged {
        if deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < MARGIN) {
            // The retry (Lambda's, of this asynchronous invocation) goes on from the checkpoint.
            let message =
                format!("Handed out {} organizations before the deadline; the retry goes on", at.summary.organizations);
            return Err(ApiError::new(ErrorKind::Unavailable, message));
        }
        match hand_out_page(state, &at).await? {
            Some(next) => at = next,
            // Another delivery of the event recorded that page first: it goes on, this one
            // stops (if that one dies, its own retry goes on from the checkpoint).
            None => {
                tracing::info!(scheduled = %scheduled_time, "another delivery of the run hands out its pages");
                break;
            }
        }
    }
    // The batches may all have reported before the registry's end was recorded; a finished
    // run whose event is still owed sends it again.
    let now = progress::read(state, &scheduled_time).await?.unwrap_or(at);
    let summary = progress::conclude(state, &now).await?.unwrap_or(now).summary;
    tracing::info!(?summary, "scheduled export run handed out");
    Ok(summary)
}

/// Hands the registry's next page to the worker and records it: the run's item after, or
/// `None` when another delivery recorded that page first.
async fn hand_out_page(state: &AppState, at: &Progress) -> Result<Option<Progress>, ApiError> {
    let (organizations, more) = registry::page(state, at.cursor.as_deref(), BATCH_SIZE).await?;
    let next = if more { organizations.last().cloned() } else { None };
    let handed = organizations.len() as u64;
    if !organizations.is_empty() {
        let batch = Batch {
            scheduled_time: at.summary.scheduled_time.clone(),
            up_to: at.summary.up_to.clone(),
            number: at.summary.batches,
            organizations,
        };
        state.jobs.dispatch_batch(batch).await?;
    }
    Ok(progress::advance(state, at, next.as_deref(), handed).await?)
}
