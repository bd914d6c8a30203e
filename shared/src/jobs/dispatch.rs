//! How a job reaches the worker.
//!
//! Deployed, a job is handed to the `export-worker` function with an *asynchronous* Lambda
//! invocation (`InvocationType: Event`): Lambda queues the event, retries a failed or timed-out
//! invocation twice with backoff (the template's `EventInvokeConfig`), and the worker resumes
//! from the job's checkpoint. Locally and in tests the same event goes through a channel to the
//! same worker code (the local server runs it in a task).

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

pub use super::model::JobRef;
use super::model::{Batch, WorkerEvent};
use crate::error::{ApiError, ErrorKind};

/// Hands jobs to the worker.
#[derive(Clone, Debug)]
pub enum Dispatcher {
    /// Asynchronous invocation of the worker function (deployed).
    Lambda {
        /// Lambda client.
        client: crate::aws::Lazy<aws_sdk_lambda::Client>,
        /// The worker's function name or ARN.
        function: String,
    },
    /// The local server and tests: the serialized event goes to a worker loop.
    Channel(tokio::sync::mpsc::UnboundedSender<String>),
    /// No worker configured: creating a job answers 503.
    Disabled,
}

impl Dispatcher {
    /// Whether jobs can run.
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Self::Disabled)
    }

    /// Hands `job` to the worker.
    pub async fn dispatch(&self, job: &JobRef) -> Result<(), ApiError> {
        self.send(&WorkerEvent::Job(job.clone())).await
    }

    /// Hands a scheduled run's `batch` to the worker.
    pub async fn dispatch_batch(&self, batch: Batch) -> Result<(), ApiError> {
        self.send(&WorkerEvent::Batch { scheduled_batch: batch }).await
    }

    async fn send(&self, event: &WorkerEvent) -> Result<(), ApiError> {
        let payload = serde_json::to_string(event).map_err(|e| ApiError::internal("encode worker event", e))?;
        match self {
            Self::Lambda { client, function } => {
                client
                    .invoke()
                    .function_name(function)
                    .invocation_type(InvocationType::Event)
                    .payload(Blob::new(payload))
                    .send()
                    .await
                    .map_err(|e| {
                        let cause = format!("invoke export worker: {}", aws_sdk_lambda::error::DisplayErrorContext(&e));
                        ApiError::unavailable("The export worker could not be started; retry shortly", cause)
                    })?;
                Ok(())
            }
            Self::Channel(tx) => {
                tx.send(payload).map_err(|_| ApiError::new(ErrorKind::Unavailable, "The export worker is not running"))
            }
            Self::Disabled => {
                Err(ApiError::new(ErrorKind::Unavailable, "Export jobs are not configured in this deployment"))
            }
        }
    }
}
