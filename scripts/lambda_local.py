"""A local Lambda for scripts/runtime.py (stdlib only): `cargo lambda watch --only-lambda-apis`
(cargo-lambda's emulator of the Lambda Runtime API and Invoke API) with one process per
function, an invoker through its Invoke API, and a stand-in for Lambda's queue of asynchronous
invocations, which cargo-lambda answers only synchronously."""

import concurrent.futures
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / ".local" / "runtime"
# Longest wait for one invocation (a cold start takes a second; a function that exits fails at once).
INVOKE_TIMEOUT = int(os.environ.get("RUNTIME_INVOKE_TIMEOUT", "120"))


class Failed(Exception):
    """A check that did not hold."""


class Stuck(Failed):
    """An invocation that got no answer: the runtime cannot be trusted for the next steps."""


def check(condition, message):
    if not condition:
        raise Failed(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EventQueue:
    """Lambda's queue of asynchronous invocations, standing in at AWS_ENDPOINT_URL_LAMBDA: takes
    `POST /2015-03-31/functions/<name>/invocations` with `X-Amz-Invocation-Type: Event`, answers
    202 as Lambda does, and keeps each (function, event) for `take`."""

    def __init__(self):
        events, lock = [], threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.split("/")
                if len(parts) != 5 or parts[1:3] != ["2015-03-31", "functions"] or parts[4] != "invocations":
                    return self._answer(404, b'{"message":"not an Invoke request"}')
                if self.headers.get("X-Amz-Invocation-Type") != "Event":
                    return self._answer(400, b'{"message":"only asynchronous invocations are queued"}')
                with lock:
                    events.append((urllib.parse.unquote(parts[3]), json.loads(body)))
                self._answer(202, b"")

            def _answer(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.events, self.lock = events, lock
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self):
        """The (function, event) pairs queued since the last call, in order."""
        with self.lock:
            taken = list(self.events)
            self.events.clear()
        return taken

    def stop(self):
        self.server.shutdown()


class Lambda:
    """`cargo lambda watch --only-lambda-apis`: cargo-lambda's emulator of the Lambda Runtime API
    (which the functions poll for invocations) and of the Lambda Invoke API (which this script
    calls); and one process per function, started as Lambda starts a function's bootstrap, with
    the Runtime API's address and the function's name, version, memory and log settings (those of
    template.yaml: 256 MB, JSON logs at INFO). Logs go to .local/runtime/."""

    def __init__(self, cargo_lambda):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        for old in LOG_DIR.glob("*.log"):
            old.unlink()
        self.port = free_port()
        self.log_path = LOG_DIR / "watch.log"
        self.functions = {}
        self.logs = []
        command = [cargo_lambda, "lambda", "watch", "--only-lambda-apis",
                   "--invoke-address", "127.0.0.1", "--invoke-port", str(self.port)]
        self.watch = self._spawn(command, self.log_path, os.environ)

    def _spawn(self, command, log_path, env):
        log = open(log_path, "wb")
        self.logs.append(log)
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.watch.poll() is not None:
                raise Failed(f"cargo lambda watch exited ({self.watch.returncode}); see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise Failed(f"cargo lambda watch did not listen on port {self.port}; see {self.log_path}")

    def start(self, names, queue_url):
        binaries = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
        for name in names:
            binary = binaries / name
            check(binary.is_file(), f"{binary} is not built")
            env = dict(
                os.environ,
                AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{self.port}/.rt/{name}",
                AWS_LAMBDA_FUNCTION_NAME=name,
                AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
                AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
                AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{name}",
                AWS_LAMBDA_LOG_STREAM_NAME="runtime-test",
                AWS_LAMBDA_LOG_FORMAT="JSON",
                AWS_LAMBDA_LOG_LEVEL="INFO",
                # Their asynchronous invocations go to the EventQueue, the rest to the emulator.
                AWS_ENDPOINT_URL_LAMBDA=queue_url,
            )
            env.pop("RUST_LOG", None)
            self.functions[name] = self._spawn([str(binary)], LOG_DIR / f"{name}.log", env)

    def exited(self, name):
        """The end of a function's log if its process has exited, else None."""
        process = self.functions.get(name)
        if process is None or process.poll() is None:
            return None
        tail = (LOG_DIR / f"{name}.log").read_text(errors="replace").splitlines()[-5:]
        return f"exit {process.returncode}: " + " | ".join(line[:300] for line in tail)

    def stop(self):
        """Stops the functions, then watch: only the processes this script started."""
        for process in self.functions.values():
            if process.poll() is None:
                process.terminate()
        if self.watch.poll() is None:
            self.watch.send_signal(signal.SIGINT)
        for process in [*self.functions.values(), self.watch]:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()


class Runtime:
    """Invokes functions through the emulator's Lambda Invoke API."""

    def __init__(self, lam):
        self.lam = lam
        self.port = lam.port
        self.base = f"http://127.0.0.1:{lam.port}"
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def _post(self, function, payload, timeout):
        request = urllib.request.Request(
            f"{self.base}/2015-03-31/functions/{function}/invocations",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def invoke(self, function, payload, timeout=INVOKE_TIMEOUT):
        """The function's answer payload, decoded from JSON. Raises Failed on a function error,
        and at once when the function's process has exited (watch would wait for it forever)."""
        future = self.pool.submit(self._post, function, payload, timeout)
        while not future.done():
            concurrent.futures.wait([future], timeout=0.2)
            exited = None if future.done() else self.lam.exited(function)
            if exited:
                raise Stuck(f"{function}: its process exited without answering ({exited})")
        try:
            raw = future.result()
        except urllib.error.HTTPError as e:
            raise Failed(f"{function}: invocation failed ({e.code}): {e.read()[:500]!r}") from None
        except (TimeoutError, urllib.error.URLError) as e:
            raise Stuck(f"{function}: no answer in {timeout} s ({e}); see {LOG_DIR}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise Failed(f"{function}: the answer is not JSON: {raw[:300]!r}") from None
