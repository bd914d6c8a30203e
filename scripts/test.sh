#!/usr/bin/env bash
# The whole suite: formatting and lints first (cargo fmt, clippy -D warnings), then its own
# emulator on a free port, every test of the workspace against it, the functions under a Lambda
# runtime (scripts/runtime.sh), cfn-lint and `sam validate --lint` on template.yaml, schemathesis;
# stops what it started.
# `.ci/run` runs exactly this.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

echo "== cargo fmt --check, cargo clippy -D warnings, one-way layers in shared/src, doc links"
cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
python3 scripts/layers.py
python3 scripts/links.py

install_tools
EMULATOR_PORT="$(free_port)"
trap stop_emulator EXIT
start_emulator "$EMULATOR_PORT"
use_emulator "$EMULATOR_PORT"

export TABLE_NAME="training-data-test"
export BUCKET_NAME="training-exports-test"
export JWT_SECRET="test-secret-for-the-suite-only-0123456789abcdef"
unset JWT_PUBLIC_KEY JWT_ALGORITHM JWT_ISSUER JWT_AUDIENCE CURSOR_SECRET

echo "== cfn-lint template.yaml, sam validate --lint"
"$VENV/bin/cfn-lint" template.yaml
install_sam
# Validation is local (the transform and cfn-lint); SAM only wants a region to start.
SAM_CLI_TELEMETRY=0 AWS_REGION=us-east-1 "$ROOT/.local/sam/bin/sam" validate --lint --template template.yaml

echo "== cargo test (emulator on $AWS_ENDPOINT_URL)"
cargo build --quiet -p local-server
./target/debug/local-server setup
cargo test --workspace --all-targets "$@"

echo "== Lambda runtime: every events/*.json through cargo lambda watch"
./scripts/runtime.sh

echo "== schemathesis: openapi.yaml against the local server"
./scripts/schemathesis.sh
