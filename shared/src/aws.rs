//! AWS clients, built once per cold start.
//!
//! The SDK's own environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials) decides where
//! they point, so the same binary talks to AWS in production and to the emulator locally.

use std::time::Duration;

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion};

/// Attempts per AWS call (the first and two retries), throttling included.
pub const MAX_ATTEMPTS: u32 = 3;
/// Base of the exponential backoff between attempts (full jitter on top).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for one attempt's answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest an AWS call may take, every attempt and backoff included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// The AWS clients every function holds.
pub struct Clients {
    /// DynamoDB.
    pub dynamo: aws_sdk_dynamodb::Client,
    /// S3 (path-style addressing with an endpoint override).
    pub s3: aws_sdk_s3::Client,
    /// Lambda (hands export jobs to the worker).
    pub lambda: aws_sdk_lambda::Client,
    /// EventBridge (export events).
    pub events: aws_sdk_eventbridge::Client,
}

/// Builds the DynamoDB, S3, Lambda and EventBridge clients from the environment.
///
/// Retries are explicit (standard mode, 3 attempts, exponential backoff with jitter) so a
/// throttled request is retried before it reaches a caller as 503; timeouts are short enough
/// that an unreachable store answers 503 well inside API Gateway's 29 seconds.
pub async fn clients() -> Clients {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS).with_initial_backoff(INITIAL_BACKOFF))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .load()
        .await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    // An endpoint override (an emulator) cannot serve virtual-hosted bucket names.
    let s3_config = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(sdk.endpoint_url().is_some()).build();
    Clients {
        dynamo,
        s3: aws_sdk_s3::Client::from_conf(s3_config),
        lambda: aws_sdk_lambda::Client::new(&sdk),
        events: aws_sdk_eventbridge::Client::new(&sdk),
    }
}

/// An EventBridge client like `events`, sending to `endpoint` (a test's fault-injecting proxy).
pub fn repointed_events(events: &aws_sdk_eventbridge::Client, endpoint: &str) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::from_conf(events.config().to_builder().endpoint_url(endpoint).build())
}

/// The same DynamoDB and S3 clients (retries, timeouts, credentials, path-style addressing)
/// sending to `endpoint` instead: another emulator, or a test's fault-injecting proxy.
pub fn repointed(
    dynamo: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    endpoint: &str,
) -> (aws_sdk_dynamodb::Client, aws_sdk_s3::Client) {
    (
        aws_sdk_dynamodb::Client::from_conf(dynamo.config().to_builder().endpoint_url(endpoint).build()),
        aws_sdk_s3::Client::from_conf(s3.config().to_builder().endpoint_url(endpoint).build()),
    )
}
