#!/usr/bin/env bash
# Starts the local stack: the DynamoDB + S3 emulator, the table and bucket, and every route of
# template.yaml on http://127.0.0.1:${PORT:-3000}. Ctrl-C stops everything it started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

install_tools
EMULATOR_PORT="${EMULATOR_PORT:-$(free_port)}"
trap stop_emulator EXIT
start_emulator "$EMULATOR_PORT"
use_emulator "$EMULATOR_PORT"
echo "Emulator (moto) on $AWS_ENDPOINT_URL"

export TABLE_NAME="${TABLE_NAME:-training-data}"
export BUCKET_NAME="${BUCKET_NAME:-training-exports}"
export JWT_SECRET="${JWT_SECRET:-local-development-secret-change-me-0123456789}"
export PORT="${PORT:-3000}"

cargo build --quiet -p local-server
./target/debug/local-server serve
