# Shared by scripts/run.sh and scripts/test.sh: pinned tools in .local/venv and the emulator.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.local/venv"

# Installs a pinned requirements file into a venv once (again only when the file changes):
# pinned_venv <venv> <requirements file> <an executable it provides> <what, for the message>.
pinned_venv() {
  local venv="$1" requirements="$2" probe="$3" what="$4" stamp want
  stamp="$venv/.requirements"
  want="$(cat "$requirements")"
  if [[ -x "$venv/bin/$probe" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  echo "Installing $what into ${venv#"$ROOT"/} ..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  printf '%s' "$want" > "$stamp"
}

# The emulator and linters (scripts/requirements.txt) in .local/venv.
install_tools() {
  pinned_venv "$VENV" "$ROOT/scripts/requirements.txt" moto_server "the local emulator and linters"
}

# The SAM CLI (scripts/requirements-sam.txt) in .local/sam, a venv of its own: it pins boto3 and
# cfn-lint versions of its own. test.sh only: run.sh does not need it.
install_sam() {
  pinned_venv "$ROOT/.local/sam" "$ROOT/scripts/requirements-sam.txt" sam "the SAM CLI"
}

# Prints a free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Starts moto server on 127.0.0.1:$1 in the background and waits until it answers.
start_emulator() {
  local port="$1"
  mkdir -p "$ROOT/.local"
  "$VENV/bin/python" "$ROOT/scripts/emulator.py" "$port" > "$ROOT/.local/emulator.log" 2>&1 &
  EMULATOR_PID=$!
  for _ in $(seq 1 150); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
      echo "The emulator exited; see .local/emulator.log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "The emulator did not start on port $port; see .local/emulator.log" >&2
  return 1
}

stop_emulator() {
  if [[ -n "${EMULATOR_PID:-}" ]]; then
    kill "$EMULATOR_PID" 2>/dev/null || true
    wait "$EMULATOR_PID" 2>/dev/null || true
  fi
}

# Points the AWS SDK at the emulator with throwaway credentials (never real ones).
use_emulator() {
  local port="$1"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
}
