//! The cold-start baseline: the smallest `lambda_runtime` function (the cargo-lambda
//! template's shape), built with the same release profile as the functions.
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|_event: LambdaEvent<Value>| async { Ok::<_, Error>(json!({ "statusCode": 200, "body": "ok" })) }))
        .await
}
