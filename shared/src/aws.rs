//! AWS clients, built once per cold start.
//!
//! The SDK's own environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials) decides where
//! they point, so the same binary talks to AWS in production and to the emulator locally.

use std::time::Duration;

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::meta::region::ProvideRegion;
use aws_config::provider_config::ProviderConfig;
use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, SdkConfig};
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;

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

/// A client built the first time it is used. Building an SDK client loads and parses the
/// system's root certificates for its connection pool (about a millisecond each), so a
/// function builds only the clients it uses, and none before its first request: its cold
/// start is ready to take work as soon as the configuration is read.
pub struct Lazy<T> {
    client: Arc<OnceLock<T>>,
    build: Arc<dyn Fn() -> T + Send + Sync>,
}

impl<T> Lazy<T> {
    /// A client `build` makes on first use.
    pub fn new(build: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self { client: Arc::new(OnceLock::new()), build: Arc::new(build) }
    }

    /// Whether the client was built (used) yet.
    pub fn is_built(&self) -> bool {
        self.client.get().is_some()
    }
}

impl<T: Clone + Send + Sync + 'static> From<T> for Lazy<T> {
    /// A client already built (a test's repointed one).
    fn from(client: T) -> Self {
        let ready = client.clone();
        Self { client: Arc::new(OnceLock::from(client)), build: Arc::new(move || ready.clone()) }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy").field("client", &self.client.get()).finish()
    }
}

impl<T> Clone for Lazy<T> {
    fn clone(&self) -> Self {
        Self { client: self.client.clone(), build: self.build.clone() }
    }
}

impl<T> Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.client.get_or_init(|| (self.build)())
    }
}

/// The SDK's default credentials chain, built when credentials are first asked for. Building
/// it builds an STS client for web-identity credentials, which loads the root certificates: a
/// third of a cold start, spent before the first event and for nothing on Lambda, where the
/// chain's first link (the environment) answers. It is configured as the loader would (region,
/// retries, timeouts).
#[derive(Debug)]
struct LazyChain {
    config: ProviderConfig,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
}

impl ProvideCredentials for LazyChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let build = || DefaultCredentialsChain::builder().configure(self.config.clone()).build();
            self.chain.get_or_init(build).await.provide_credentials().await
        })
    }

    fn fallback_on_interrupt(&self) -> Option<Credentials> {
        self.chain.get().and_then(|chain| chain.fallback_on_interrupt())
    }
}

/// The AWS clients of a function, each built on first use.
pub struct Clients {
    /// DynamoDB.
    pub dynamo: Lazy<aws_sdk_dynamodb::Client>,
    /// S3 (path-style addressing with an endpoint override).
    pub s3: Lazy<aws_sdk_s3::Client>,
    /// Lambda (hands export jobs to the worker).
    pub lambda: Lazy<aws_sdk_lambda::Client>,
    /// EventBridge (export events).
    pub events: Lazy<aws_sdk_eventbridge::Client>,
}

/// A client `build` makes from the SDK's configuration on first use.
fn with<T: 'static>(sdk: &Arc<SdkConfig>, build: fn(&SdkConfig) -> T) -> Lazy<T> {
    let sdk = sdk.clone();
    Lazy::new(move || build(&sdk))
}

/// Reads the SDK's configuration from the environment; the DynamoDB, S3, Lambda and
/// EventBridge clients are built from it on first use.
///
/// Retries are explicit (standard mode, 3 attempts, exponential backoff with jitter) so a
/// throttled request is retried before it reaches a caller as 503; timeouts are short enough
/// that an unreachable store answers 503 well inside API Gateway's 29 seconds.
pub async fn clients() -> Clients {
    let retry = RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS).with_initial_backoff(INITIAL_BACKOFF);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let region = aws_config::default_provider::region::default_provider().region().await;
    let credentials = LazyChain {
        config: ProviderConfig::default()
            .with_region(region.clone())
            .with_retry_config(retry.clone())
            .with_timeout_config(timeouts.clone())
            .with_behavior_version(Some(BehaviorVersion::latest())),
        chain: Default::default(),
    };
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(credentials)
        .retry_config(retry)
        .timeout_config(timeouts)
        .load()
        .await;
    let sdk = Arc::new(sdk);
    Clients {
        dynamo: with(&sdk, aws_sdk_dynamodb::Client::new),
        s3: with(&sdk, |sdk| {
            // An endpoint override (an emulator) cannot serve virtual-hosted bucket names.
            let config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(sdk.endpoint_url().is_some()).build();
            aws_sdk_s3::Client::from_conf(config)
        }),
        lambda: with(&sdk, aws_sdk_lambda::Client::new),
        events: with(&sdk, aws_sdk_eventbridge::Client::new),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_is_built_on_first_use_only() {
        let clients = clients().await;
        let all = |c: &Clients| [c.dynamo.is_built(), c.s3.is_built(), c.lambda.is_built(), c.events.is_built()];
        assert_eq!(all(&clients), [false; 4], "nothing is built at a cold start");
        let copy = clients.dynamo.clone();
        let _ = clients.dynamo.config();
        assert_eq!(all(&clients), [true, false, false, false], "only the client used");
        assert!(copy.is_built(), "copies share the client");
        let ready: Lazy<aws_sdk_s3::Client> = (*clients.s3).clone().into();
        assert!(ready.is_built());
    }
}
