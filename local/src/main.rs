//! `local-server`: `setup` creates the emulator's table and bucket; `serve` (the default)
//! also serves every route on `http://127.0.0.1:$PORT` (3000 by default); `token` prints only a
//! development token (for scripts such as `scripts/schemathesis.sh`).

use std::sync::Arc;

use shared::auth::{mint_hs256, now_epoch, Claims};
use shared::{table, AppState, Config};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    if std::env::args().nth(1).as_deref() == Some("token") {
        // Needs no storage: scripts mint a token without touching the emulator.
        let secret = config.jwt.secret.as_deref().ok_or("`token` needs JWT_SECRET (HS256)")?;
        println!("{}", dev_token(&config, secret)?);
        return Ok(());
    }
    let mut state = AppState::new(config).await?;
    // Jobs go to the worker code in this process, as the deployed functions hand them to the worker function.
    let (jobs, events) = tokio::sync::mpsc::unbounded_channel();
    state.jobs = shared::jobs::Dispatcher::Channel(jobs);
    table::ensure_table(&state.dynamo, &state.config.table_name).await?;
    table::ensure_bucket(&state.s3, &state.config.bucket_name).await?;
    if std::env::args().nth(1).as_deref() == Some("setup") {
        println!("Table {} and bucket {} are ready", state.config.table_name, state.config.bucket_name);
        return Ok(());
    }

    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    println!("Listening on http://127.0.0.1:{port}");
    if let Some(secret) = &state.config.jwt.secret {
        let token = dev_token(&state.config, secret)?;
        println!("\nDevelopment token (organization {}, valid 12 hours):\n{token}\n", local_server::DEV_ORG);
        println!("Try it:");
        println!(
            "curl -s -X PUT http://127.0.0.1:{port}/agents/agent-1/convos/convo-1 \\\n  -H \"Authorization: Bearer {token}\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"userName\":\"Jane Doe\",\"origin\":\"sms\"}}'\n"
        );
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let state = Arc::new(state);
    tokio::spawn(shared::jobs::worker::serve_channel(state.clone(), events));
    local_server::serve(state, listener, shutdown).await;
    Ok(())
}

/// A token of the development user in `DEV_ORG`, valid 12 hours.
fn dev_token(config: &Config, secret: &str) -> Result<String, Error> {
    let claims = Claims {
        sub: "dev-user".into(),
        organization_id: local_server::DEV_ORG.into(),
        exp: now_epoch() + 12 * 3600,
        nbf: None,
        iss: config.jwt.issuer.clone(),
        aud: config.jwt.audience.clone().map(serde_json::Value::String),
        email: Some("dev@example.com".into()),
        given_name: Some("Dev".into()),
        family_name: Some("User".into()),
    };
    Ok(mint_hs256(secret, &claims)?)
}
