//! Configuration read once per cold start from the environment.

use std::env;
use std::time::Duration;

/// A configuration problem found at cold start; the function refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    /// A variable is set but cannot be used.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// The signing algorithms a deployment may pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256, verified with `JWT_SECRET`.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, verified with the PEM in `JWT_PUBLIC_KEY`.
    Rs256,
    /// ECDSA P-256 with SHA-256, verified with the PEM in `JWT_PUBLIC_KEY`.
    Es256,
}

/// How bearer tokens are verified.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The only algorithm accepted; never taken from the token's header.
    pub algorithm: JwtAlgorithm,
    /// Shared secret for HS256.
    pub secret: Option<String>,
    /// PEM public key for RS256 / ES256.
    pub public_key_pem: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
}

/// Default of `EXPORT_READ_AHEAD`.
pub const EXPORT_READ_AHEAD: usize = 2;
/// Default of `EXPORT_UPLOADS_AHEAD`.
pub const EXPORT_UPLOADS_AHEAD: usize = 2;
/// Most of either (memory: each group is up to 35 MB of messages at worst, each part 8 MiB).
pub const MOST_AHEAD: usize = 4;

/// Settings shared by every function.
#[derive(Debug, Clone)]
pub struct Config {
    /// The single DynamoDB table (`TABLE_NAME`).
    pub table_name: String,
    /// The export bucket (`BUCKET_NAME`).
    pub bucket_name: String,
    /// Token verification (`JWT_*`).
    pub jwt: JwtConfig,
    /// Key that signs pagination cursors (`CURSOR_SECRET`, else `JWT_SECRET`).
    pub cursor_secret: Vec<u8>,
    /// Largest request body accepted (`MAX_BODY_BYTES`, default 1 MiB).
    pub max_body_bytes: usize,
    /// Largest export answered inline (`INLINE_EXPORT_MAX_BYTES`, default 5 MiB, under
    /// Lambda's 6 MB response limit); larger ones go through S3.
    pub inline_export_max_bytes: usize,
    /// Lifetime of export download URLs (`EXPORT_URL_TTL_SECONDS`, default 900).
    pub export_url_ttl_seconds: u64,
    /// Time a synchronous export may take before it continues as a job
    /// (`EXPORT_SYNC_BUDGET_SECONDS`, default 20, under API Gateway's 29 s).
    pub export_sync_budget: Duration,
    /// Groups of snapshots whose messages an export reads ahead of the one it encodes
    /// (`EXPORT_READ_AHEAD`, default 2, at most 4; 0: one group at a time).
    pub export_read_ahead: usize,
    /// Parts a synchronous export uploads in the background (`EXPORT_UPLOADS_AHEAD`, default 2,
    /// at most 4; 0: each part is awaited). A job uploads one at a time: it checkpoints at each.
    pub export_uploads_ahead: usize,
    /// Work time of one worker invocation (`EXPORT_JOB_BUDGET_SECONDS`); by default the
    /// invocation's remaining time less a safety margin.
    pub export_job_budget: Option<Duration>,
    /// Days export files stay in the bucket (`EXPORT_RETENTION_DAYS`, default 7; the bucket's
    /// lifecycle rule uses the same template parameter).
    pub export_retention_days: u32,
    /// The export worker function that jobs are handed to (`EXPORT_WORKER_FUNCTION`; in the
    /// worker itself [`EXPORT_WORKER_SELF`], the function it runs in).
    pub export_worker_function: Option<String>,
    /// How far behind its scheduled time a scheduled export's window ends, so writes still in
    /// flight at that time are in the next window rather than missed (`SCHEDULE_SETTLE_SECONDS`, default 60).
    pub schedule_settle: Duration,
    /// Every export and job is redacted, whatever the caller asks (`EXPORT_REDACTION=required`;
    /// `optional`, the default, redacts when asked).
    pub export_redaction_required: bool,
    /// Region that nationally written phone numbers are read for when the customer's own
    /// number does not say (`REDACTION_REGION`, an ISO 3166 code, default `US`).
    pub redaction_region: phonenumber::country::Id,
    /// Largest number of distinct examples one export's dedup holds: about 1 KB each in half
    /// the function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, 512 MB when unset: 262,144).
    pub dedup_max_kept: usize,
    /// How long a deleted snapshot's deletion record is kept for the scheduled export
    /// (`DELETION_RECORD_DAYS`, default 35: past a monthly schedule's window and its retries).
    pub deletion_record_for: Duration,
    /// The EventBridge bus export events go to (`EVENT_BUS_NAME`, default `default`).
    pub event_bus_name: String,
    /// A new snapshot's messages go in its header item when they fit in its last kilobyte
    /// (`SNAPSHOT_LAYOUT=small-in-header`); else, and by default (`chunks`), in chunk items.
    pub small_snapshots_in_header: bool,
}

/// The development secret of docs/configuration.md, `scripts/run.sh` and the tokens in `events/`.
/// A deployed function refuses to start with it; see [`dev_secret_allowed`].
pub const DEV_JWT_SECRET: &str = "local-development-secret-change-me-0123456789";

/// Whether a process may use [`DEV_JWT_SECRET`], given its `AWS_LAMBDA_FUNCTION_NAME`,
/// `AWS_SAM_LOCAL` and `AWS_ENDPOINT_URL` (unset or empty: `None`).
///
/// Outside a Lambda runtime (no function name: tests, the local server) it may. In a Lambda
/// runtime only when it talks to a local emulator: under `sam local` (`AWS_SAM_LOCAL`), or with
/// an endpoint override whose host is loopback (`127.0.0.0/8`, `[::1]`, `localhost`) or
/// `host.docker.internal` (a container reaching its host), as under `cargo lambda watch` with
/// the emulator of `scripts/run.sh`. A deployed function has no such endpoint, so it refuses
/// the public secret.
pub fn dev_secret_allowed(function_name: Option<&str>, sam_local: Option<&str>, endpoint_url: Option<&str>) -> bool {
    function_name.is_none() || sam_local.is_some() || endpoint_url.is_some_and(is_local_endpoint)
}

/// Whether `url` (`scheme://[user@]host[:port][/...]`) names a loopback host or
/// `host.docker.internal`.
fn is_local_endpoint(url: &str) -> bool {
    let Some((_, rest)) = url.trim().split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, _)) => host,
            None => return false,
        },
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let host = host.to_ascii_lowercase();
    let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || host == "localhost" || host == "host.docker.internal"
}

/// Default largest request body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// `EXPORT_WORKER_FUNCTION` of the worker itself: it hands its continuations to the function it
/// runs in, which Lambda names in `AWS_LAMBDA_FUNCTION_NAME` (the template cannot name a
/// function in its own environment: the reference would be circular). Never a function name.
pub const EXPORT_WORKER_SELF: &str = "$AWS_LAMBDA_FUNCTION_NAME";

/// The worker function from `EXPORT_WORKER_FUNCTION` (`setting`), [`EXPORT_WORKER_SELF`]
/// standing for `own` (`AWS_LAMBDA_FUNCTION_NAME`), which must then be set.
pub fn export_worker_function(setting: Option<String>, own: Option<String>) -> Result<Option<String>, ConfigError> {
    match setting {
        Some(v) if v.trim() == EXPORT_WORKER_SELF => {
            own.map(Some).ok_or(ConfigError::Missing("AWS_LAMBDA_FUNCTION_NAME"))
        }
        other => Ok(other),
    }
}

fn optional(name: &'static str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn required(name: &'static str) -> Result<String, ConfigError> {
    optional(name).ok_or(ConfigError::Missing(name))
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match optional(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name, reason: e.to_string() }),
    }
}

impl Config {
    /// Reads every setting from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let (algorithm, secret, public_key_pem) = jwt_from_env()?;
        let cursor_secret = optional("CURSOR_SECRET")
            .or_else(|| secret.clone())
            .ok_or(ConfigError::Missing("CURSOR_SECRET"))?
            .into_bytes();
        Ok(Self {
            table_name: required("TABLE_NAME")?,
            bucket_name: required("BUCKET_NAME")?,
            jwt: JwtConfig {
                algorithm,
                secret,
                public_key_pem: public_key_pem.map(|p| p.replace("\\n", "\n")),
                issuer: optional("JWT_ISSUER"),
                audience: optional("JWT_AUDIENCE"),
            },
            cursor_secret,
            max_body_bytes: parsed("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            inline_export_max_bytes: parsed("INLINE_EXPORT_MAX_BYTES", 5 * 1024 * 1024)?,
            export_url_ttl_seconds: parsed("EXPORT_URL_TTL_SECONDS", 900u64)?,
            export_sync_budget: Duration::from_secs_f64(parsed("EXPORT_SYNC_BUDGET_SECONDS", 20f64)?.clamp(0.0, 900.0)),
            export_read_ahead: parsed("EXPORT_READ_AHEAD", EXPORT_READ_AHEAD)?.min(MOST_AHEAD),
            export_uploads_ahead: parsed("EXPORT_UPLOADS_AHEAD", EXPORT_UPLOADS_AHEAD)?.min(MOST_AHEAD),
            export_job_budget: optional("EXPORT_JOB_BUDGET_SECONDS")
                .map(|_| {
                    parsed("EXPORT_JOB_BUDGET_SECONDS", 0f64).map(|s| Duration::from_secs_f64(s.clamp(0.0, 900.0)))
                })
                .transpose()?,
            export_retention_days: parsed("EXPORT_RETENTION_DAYS", 7u32)?,
            export_worker_function: export_worker_function(
                optional("EXPORT_WORKER_FUNCTION"),
                optional("AWS_LAMBDA_FUNCTION_NAME"),
            )?,
            schedule_settle: Duration::from_secs(parsed("SCHEDULE_SETTLE_SECONDS", 60u64)?),
            deletion_record_for: Duration::from_secs(parsed("DELETION_RECORD_DAYS", 35u64)?.saturating_mul(86_400)),
            event_bus_name: optional("EVENT_BUS_NAME").unwrap_or_else(|| "default".to_string()),
            small_snapshots_in_header: small_in_header(optional("SNAPSHOT_LAYOUT").as_deref())?,
            dedup_max_kept: parsed("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 512usize)?.saturating_mul(512),
            export_redaction_required: redaction_required(optional("EXPORT_REDACTION").as_deref())?,
            redaction_region: match optional("REDACTION_REGION") {
                None => phonenumber::country::Id::US,
                Some(v) => v.trim().to_ascii_uppercase().parse().map_err(|_| ConfigError::Invalid {
                    name: "REDACTION_REGION",
                    reason: format!("`{v}` is not an ISO 3166 region code"),
                })?,
            },
        })
    }
}

/// `SNAPSHOT_LAYOUT`: `chunks` (or unset) or `small-in-header`.
pub fn small_in_header(v: Option<&str>) -> Result<bool, ConfigError> {
    match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("chunks") => Ok(false),
        Some("small-in-header") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name: "SNAPSHOT_LAYOUT",
            reason: format!("`{other}` is neither chunks nor small-in-header"),
        }),
    }
}

/// `EXPORT_REDACTION`: `optional` (or unset) or `required`.
pub fn redaction_required(v: Option<&str>) -> Result<bool, ConfigError> {
    match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("optional") => Ok(false),
        Some("required") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name: "EXPORT_REDACTION",
            reason: format!("`{other}` is neither optional nor required"),
        }),
    }
}

/// The JWT settings of [`Config::from_env`]: the algorithm (checked against the key material it
/// needs), the shared secret and the public key PEM as set.
fn jwt_from_env() -> Result<(JwtAlgorithm, Option<String>, Option<String>), ConfigError> {
    let secret = optional("JWT_SECRET");
    let public_key_pem = optional("JWT_PUBLIC_KEY");
    let algorithm = match optional("JWT_ALGORITHM").as_deref().map(str::to_ascii_uppercase).as_deref() {
        None if public_key_pem.is_some() && secret.is_none() => {
            return Err(ConfigError::Missing("JWT_ALGORITHM"));
        }
        None | Some("HS256") => JwtAlgorithm::Hs256,
        Some("RS256") => JwtAlgorithm::Rs256,
        Some("ES256") => JwtAlgorithm::Es256,
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "JWT_ALGORITHM",
                reason: format!("{other} is not one of HS256, RS256, ES256"),
            })
        }
    };
    match algorithm {
        JwtAlgorithm::Hs256 if secret.is_none() => return Err(ConfigError::Missing("JWT_SECRET")),
        JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 if public_key_pem.is_none() => {
            return Err(ConfigError::Missing("JWT_PUBLIC_KEY"))
        }
        _ => {}
    }
    if let Some(s) = &secret {
        if algorithm == JwtAlgorithm::Hs256 && s.len() < 32 {
            return Err(ConfigError::Invalid { name: "JWT_SECRET", reason: "use at least 32 bytes".into() });
        }
    }
    let allowed = dev_secret_allowed(
        optional("AWS_LAMBDA_FUNCTION_NAME").as_deref(),
        optional("AWS_SAM_LOCAL").as_deref(),
        optional("AWS_ENDPOINT_URL").as_deref(),
    );
    if !allowed && secret.as_deref() == Some(DEV_JWT_SECRET) {
        return Err(ConfigError::Invalid {
            name: "JWT_SECRET",
            reason:
                "the public development secret cannot be deployed (a Lambda runtime accepts it only with AWS_SAM_LOCAL \
                     or an AWS_ENDPOINT_URL on loopback or host.docker.internal)"
                    .into(),
        });
    }
    Ok((algorithm, secret, public_key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_layout_is_chunks_unless_set_and_a_typo_is_refused() {
        assert!(!small_in_header(None).unwrap());
        assert!(!small_in_header(Some("chunks")).unwrap());
        assert!(small_in_header(Some(" Small-In-Header ")).unwrap());
        let e = small_in_header(Some("small")).unwrap_err().to_string();
        assert!(e.contains("SNAPSHOT_LAYOUT") && e.contains("small-in-header"), "{e}");
    }

    #[test]
    fn the_development_secret_is_refused_only_by_a_function_without_a_local_emulator() {
        // Not in a Lambda runtime: tests, the local server.
        assert!(dev_secret_allowed(None, None, None));
        assert!(dev_secret_allowed(None, None, Some("https://dynamodb.us-east-1.amazonaws.com")));
        // Deployed: a function name and no endpoint override, or a remote one.
        assert!(!dev_secret_allowed(Some("stack-list-convos"), None, None));
        for remote in [
            "https://dynamodb.us-east-1.amazonaws.com",
            "http://10.0.0.5:4566",
            "http://192.168.1.10:4566",
            "http://localhost.example.com:4566",
            "http://127.0.0.1.nip.io:4566",
            "http://evil.example/127.0.0.1",
            "http://127.0.0.1@evil.example:4566",
            "http://[::2]:4566",
            "127.0.0.1:4566",
            "localhost",
            "",
        ] {
            assert!(!dev_secret_allowed(Some("f"), None, Some(remote)), "{remote}");
        }
        // sam local, and cargo lambda watch (or any emulator) against a local endpoint.
        assert!(dev_secret_allowed(Some("f"), Some("true"), None));
        for local in [
            "http://127.0.0.1:4566",
            "http://127.1.2.3:4566/",
            "http://localhost:4566",
            "http://LOCALHOST",
            "https://localhost/path?x=1",
            "http://[::1]:4566",
            "http://host.docker.internal:4566",
            "http://user:pw@127.0.0.1:4566",
            " http://127.0.0.1:4566 ",
        ] {
            assert!(dev_secret_allowed(Some("f"), None, Some(local)), "{local}");
        }
    }
}

#[cfg(test)]
mod worker_tests {
    use super::*;

    #[test]
    fn the_worker_hands_its_continuations_to_the_function_it_runs_in() {
        let some = |s: &str| Some(s.to_string());
        let own = some("stack-ExportWorkerFunction-AbC123");
        assert_eq!(export_worker_function(some(EXPORT_WORKER_SELF), own.clone()).unwrap(), own);
        assert!(matches!(
            export_worker_function(some(EXPORT_WORKER_SELF), None),
            Err(ConfigError::Missing("AWS_LAMBDA_FUNCTION_NAME"))
        ));
        assert_eq!(
            export_worker_function(some("stack-ExportWorkerFunction-AbC123"), some("stack-CreateExportFunction-x"))
                .unwrap(),
            own
        );
        assert_eq!(
            export_worker_function(None, some("stack-CreateExportFunction-x")).unwrap(),
            None,
            "without the setting, no worker"
        );
    }
}
