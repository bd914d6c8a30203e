#!/usr/bin/env bash
# The functions under a real Lambda runtime: `cargo lambda watch` (cargo-lambda's Lambda Runtime
# API emulator, pinned in scripts/requirements.txt) serves the Runtime API to each function's
# binary, and every events/*.json is invoked through its Lambda Invoke API in an order that makes
# each one meaningful; scripts/runtime.py checks every answer as Lambda encodes it (statusCode,
# isBase64Encoded, headers, body). Ends with `N passed, N failed`; exits non-zero on any failure.
#
# Called by scripts/test.sh with its emulator; run alone it starts (and stops) its own. It uses a
# table and bucket of its own, and the development secret, which signs the events' tokens.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

install_tools
trap stop_emulator EXIT
if [[ -z "${AWS_ENDPOINT_URL:-}" ]]; then
  EMULATOR_PORT="$(free_port)"
  start_emulator "$EMULATOR_PORT"
  use_emulator "$EMULATOR_PORT"
fi

run_id="$(date +%s)-$$"
export TABLE_NAME="training-data-runtime-$run_id"
export BUCKET_NAME="training-exports-runtime-$run_id"
# The development secret: the events' tokens are signed with it. A function in a Lambda runtime
# accepts it because AWS_ENDPOINT_URL is on loopback (shared/src/config.rs, dev_secret_allowed).
export JWT_SECRET="local-development-secret-change-me-0123456789"
unset JWT_PUBLIC_KEY JWT_ALGORITHM JWT_ISSUER JWT_AUDIENCE CURSOR_SECRET
# The worker's name for the functions' asynchronous invocations, which runtime.py's EventQueue
# takes (AWS_ENDPOINT_URL_LAMBDA) and delivers to the worker through cargo-lambda.
export EXPORT_WORKER_FUNCTION="export-worker"

# The binaries of the workspace's debug build with the features of test.sh's `cargo test
# --workspace --all-targets`, so after it only the binaries are linked (about 40 s on 2 cores).
# runtime.py starts them against `cargo lambda watch --only-lambda-apis`: watch's own `cargo run
# --bin <function>` would resolve features for one function package and rebuild much of the
# dependency graph for it (96 s more, measured after a cold `cargo test`).
echo "Building the function binaries (dev profile) ..."
cargo build --quiet --workspace --all-targets
./target/debug/local-server setup

python3 "$ROOT/scripts/runtime.py" --cargo-lambda "$VENV/bin/cargo-lambda" "$@"
