//! AWS clients, built once per cold start.
//!
//! The SDK's own environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials) decides where
//! they point, so the same binary talks to AWS in production and to the emulator locally.

use std::time::Duration;

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion};

/// Builds the DynamoDB, S3 and Lambda clients from the environment.
///
/// Retries are explicit (standard mode, 3 attempts, exponential backoff with jitter) so a
/// throttled request is retried before it reaches a caller as 503; timeouts are short enough
/// that an unreachable store answers 503 well inside API Gateway's 29 seconds.
pub async fn clients() -> (aws_sdk_dynamodb::Client, aws_sdk_s3::Client, aws_sdk_lambda::Client) {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(50)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(8))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .load()
        .await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    // An endpoint override (an emulator) cannot serve virtual-hosted bucket names.
    let s3_config = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(sdk.endpoint_url().is_some()).build();
    (dynamo, aws_sdk_s3::Client::from_conf(s3_config), aws_sdk_lambda::Client::new(&sdk))
}
