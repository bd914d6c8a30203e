#!/usr/bin/env bash
# The benchmark command: release build, its own emulator and data, one markdown table on stdout
# (also target/bench/latest.md and JSON under target/bench/). Not part of the test command:
# speed is measured here, never asserted in tests. Knobs: BENCH_RUNS (3), BENCH_COLD_RUNS (15),
# BENCH_REQUESTS (320), BENCH_EXPORT_SNAPSHOTS (20000), BENCH_MEMORY_SMALL (5000),
# BENCH_MEMORY_LARGE (50000), BENCH_MESSAGES (20); BENCH_ONLY=redaction runs sections 7 and 8
# alone (redaction and near duplicates: only the bench is built, and no emulator is needed);
# BENCH_ONLY=throughput runs section 3 alone (only the bench is built); BENCH_ONLY=cpu runs
# section 9 alone (only the bench and export-training are built); BENCH_ONLY=pipeline runs
# section 10 alone (the latency model; only the bench is built); BENCH_ONLY=cost runs section
# 6's layouts and small snapshots' reads (the bench and export-training are built).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

if [ "${BENCH_ONLY:-}" = "redaction" ]; then
  cargo build --release --quiet -p bench
  BENCH_RUSTC="$(rustc -V)" BENCH_EMULATOR="none" ./target/release/bench
  exit 0
fi

install_tools
if [ "${BENCH_ONLY:-}" = "throughput" ] || [ "${BENCH_ONLY:-}" = "pipeline" ]; then
  # Section 3 alone (export throughput, redaction's cost included): only the bench is built.
  cargo build --release --quiet -p bench
elif [ "${BENCH_ONLY:-}" = "cpu" ] || [ "${BENCH_ONLY:-}" = "cost" ]; then
  # Section 9 or 6 alone (CPU per 1,000 exported snapshots; layouts): the bench and the export function.
  cargo build --release --quiet -p bench -p export-training
else
  # Section 11 times this build: cold (a fresh clone's target) it is every dependency and
  # every function in one cargo invocation; then one function's rebuild after a change to it,
  # which is what each further function of `sam build` (one cargo-lambda build per function)
  # adds once the dependencies are built.
  BENCH_BUILD_COLD=0
  [ -e target/release/export-training ] || BENCH_BUILD_COLD=1
  echo "== cargo build --release (every function, the bench and its baseline; cold: $BENCH_BUILD_COLD)" >&2
  started=$(date +%s)
  cargo build --release --quiet --workspace --bins --exclude local-server
  BENCH_BUILD_SECONDS=$(( $(date +%s) - started ))
  touch functions/get-snapshot/src/main.rs
  started=$(date +%s)
  # The same cargo invocation: `-p get-snapshot` alone would resolve other dependency features
  # and rebuild the SDKs.
  cargo build --release --quiet --workspace --bins --exclude local-server
  BENCH_REBUILD_SECONDS=$(( $(date +%s) - started ))
  export BENCH_BUILD_COLD BENCH_BUILD_SECONDS BENCH_REBUILD_SECONDS
fi

EMULATOR_PORT="$(free_port)"
trap stop_emulator EXIT
start_emulator "$EMULATOR_PORT"
use_emulator "$EMULATOR_PORT"

export TABLE_NAME="bench-data" BUCKET_NAME="bench-exports"
export JWT_SECRET="bench-secret-for-the-benchmark-only-0123456789abcdef"
unset JWT_PUBLIC_KEY JWT_ALGORITHM JWT_ISSUER JWT_AUDIENCE CURSOR_SECRET EXPORT_WORKER_FUNCTION
# A single pass per export (the fallback to a job after 20 s is not what is measured).
export EXPORT_SYNC_BUDGET_SECONDS=3600
export BENCH_BIN_DIR="$ROOT/target/release"
BENCH_RUSTC="$(rustc -V)"
BENCH_EMULATOR="$(grep -o 'moto\[server\]==[0-9.]*' scripts/requirements.txt) (scripts/emulator.py)"
export BENCH_RUSTC BENCH_EMULATOR
RUST_LOG="${RUST_LOG:-warn}" ./target/release/bench
