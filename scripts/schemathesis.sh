#!/usr/bin/env bash
# Property-based API test: schemathesis generates requests from openapi.yaml for every operation
# and sends them to ./target/debug/local-server over HTTP; every answer must match the spec
# (status, content type, headers, body schema) and none may be a 5xx. Fails when fewer than
# SCHEMATHESIS_MIN_REQUESTS (1000) requests were sent, so a quietly shrinking run cannot pass.
#
# Called by scripts/test.sh with its emulator; run alone it starts (and stops) its own.
# SCHEMATHESIS_EXAMPLES (examples per operation, 40: about 1,900 requests) and SCHEMATHESIS_SEED change the run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

install_tools
if [[ ! -x "$VENV/bin/schemathesis" ]]; then
  echo "schemathesis is not installed: it needs Python 3.11 or newer ($(python3 --version))" >&2
  exit 1
fi
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  stop_emulator
}
trap cleanup EXIT
if [[ -z "${AWS_ENDPOINT_URL:-}" ]]; then
  EMULATOR_PORT="$(free_port)"
  start_emulator "$EMULATOR_PORT"
  use_emulator "$EMULATOR_PORT"
fi

# Its own table: moto copies a whole table on every transaction, so a small one stays fast.
export TABLE_NAME="training-data-schemathesis"
export BUCKET_NAME="${BUCKET_NAME:-training-exports-test}"
export JWT_SECRET="${JWT_SECRET:-test-secret-for-the-suite-only-0123456789abcdef}"
unset JWT_PUBLIC_KEY JWT_ALGORITHM JWT_ISSUER JWT_AUDIENCE CURSOR_SECRET

examples="${SCHEMATHESIS_EXAMPLES:-40}"
seed="${SCHEMATHESIS_SEED:-20260701}"
min_requests="${SCHEMATHESIS_MIN_REQUESTS:-1000}"
report_dir="$ROOT/.local/schemathesis"
rm -rf "$report_dir"
mkdir -p "$report_dir"

cargo build --quiet -p local-server
./target/debug/local-server setup
TOKEN="$(./target/debug/local-server token)"
PORT="$(free_port)"
PORT="$PORT" ./target/debug/local-server serve > "$report_dir/server.log" 2>&1 &
SERVER_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 150); do
  if grep -q '^Listening on' "$report_dir/server.log"; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "local-server exited; see $report_dir/server.log" >&2
    exit 1
  fi
  sleep 0.2
done
grep -q '^Listening on' "$report_dir/server.log" || { echo "local-server did not start; see $report_dir/server.log" >&2; exit 1; }

# A conversation with messages and a snapshot of it, so lists and exports have real items.
api() {
  local method="$1" path="$2" body="$3"
  python3 - "$method" "$BASE$path" "$TOKEN" "$body" <<'PY'
import sys, urllib.request
method, url, token, body = sys.argv[1:5]
req = urllib.request.Request(url, data=body.encode(), method=method,
                             headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    if r.status >= 300:
        sys.exit(f"{method} {url}: {r.status}")
PY
}
api PUT /agents/agent-1/convos/convo-1 '{"userName":"Jane Doe","userEmail":"jane@example.com","origin":"sms","tags":["vip"]}'
api POST /agents/agent-1/convos/convo-1/messages \
  '{"messages":[{"id":"m1","from":"user","content":"Where is my order?","ts":"2026-01-01T10:00:00Z"},{"id":"m2","from":"bot","content":"It ships today.","ts":"2026-01-01T10:00:05Z"}]}'
api POST /api/training/snapshots '{"contactId":"convo-1","quality":"good","category":"support","tags":["shipping"]}'

echo "== schemathesis: openapi.yaml against $BASE ($examples examples per operation, seed $seed)"
status=0
# --generation-database none: no examples carried over from an earlier run, so a seed is a run.
"$VENV/bin/schemathesis" --no-color --config-file scripts/schemathesis.toml run openapi.yaml \
  --url "$BASE" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all \
  --max-examples "$examples" \
  --seed "$seed" \
  --generation-database none \
  --workers 1 \
  --request-timeout 60 \
  --report ndjson --report-dir "$report_dir" || status=$?

# Counted from the run's own event log (every request and its answer), not from its summary.
python3 - "$report_dir" "$min_requests" "$status" <<'PY'
import collections, glob, json, sys
report_dir, min_requests, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
statuses = collections.Counter()
for path in glob.glob(report_dir + "/*.ndjson"):
    with open(path) as f:
        for line in f:
            finished = json.loads(line).get("ScenarioFinished")
            for interaction in ((finished or {}).get("recorder") or {}).get("interactions", {}).values():
                response = interaction.get("response") or {}
                statuses[response.get("status_code", "no answer")] += 1
total = sum(statuses.values())
server_errors = sum(n for s, n in statuses.items() if not isinstance(s, int) or s >= 500)
print(f"== schemathesis sent {total} requests (at least {min_requests} required); 5xx or no answer: {server_errors}")
print("   statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items(), key=lambda x: str(x[0]))))
if status != 0:
    sys.exit(f"schemathesis found failures (exit {status}); server log: {report_dir}/server.log")
if total < min_requests or server_errors:
    sys.exit("too few requests, or a server error schemathesis did not report")
PY
