//! The common crate of every Lambda function in this workspace.
//!
//! Configuration, AWS clients, authentication, the error type and response envelopes live
//! here, next to the domain code (grouped by domain). Each function's `main.rs` only builds
//! an [`AppState`] once per cold start and hands requests to one handler of [`routes`].

pub mod auth;
pub mod aws;
pub mod capacity;
pub mod config;
pub mod convos;
pub mod cursor;
pub mod error;
pub mod exports;
pub mod gateway;
pub mod handlers;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod jobs;
pub mod json;
pub mod keys;
pub mod lambda;
pub mod retry;
pub mod routes;
pub mod sha256;
pub mod snapshots;
pub mod store_error;
pub mod table;
pub mod time;
pub mod validate;

pub use config::Config;
pub use error::{ApiError, Envelope};

use auth::Authenticator;

/// Everything a handler needs, built once per cold start and shared by every invocation.
#[derive(Clone)]
pub struct AppState {
    /// Settings read from the environment.
    pub config: Config,
    /// DynamoDB client (honours `AWS_ENDPOINT_URL`), built on first use.
    pub dynamo: aws::Lazy<aws_sdk_dynamodb::Client>,
    /// S3 client (path-style addressing when an endpoint override is set), built on first use.
    pub s3: aws::Lazy<aws_sdk_s3::Client>,
    /// EventBridge client (export events on `EVENT_BUS_NAME`), built on first use.
    pub events: aws::Lazy<aws_sdk_eventbridge::Client>,
    /// Verifies bearer tokens with the algorithm pinned by configuration.
    pub auth: Authenticator,
    /// Signs and checks pagination cursors.
    pub cursors: cursor::CursorCodec,
    /// Hands export jobs to the worker (`EXPORT_WORKER_FUNCTION`; a channel locally).
    pub jobs: jobs::Dispatcher,
    /// Organizations this process has registered for the scheduled export (one write per
    /// organization per cold start instead of one per snapshot).
    pub registered: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl AppState {
    /// Reads the configuration from the environment and builds the AWS clients.
    pub async fn from_env() -> Result<Self, config::ConfigError> {
        let config = Config::from_env()?;
        Self::new(config).await
    }

    /// Builds the clients for an explicit configuration (the local server and tests use this).
    pub async fn new(config: Config) -> Result<Self, config::ConfigError> {
        let auth = Authenticator::new(&config.jwt)?;
        let cursors = cursor::CursorCodec::new(&config.cursor_secret)?;
        let aws::Clients { dynamo, s3, lambda, events } = aws::clients().await;
        let jobs = match &config.export_worker_function {
            Some(function) => jobs::Dispatcher::Lambda { client: lambda, function: function.clone() },
            None => jobs::Dispatcher::Disabled,
        };
        Ok(Self { config, dynamo, s3, events, auth, cursors, jobs, registered: Default::default() })
    }
}
