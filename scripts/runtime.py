#!/usr/bin/env python3
"""Every events/*.json through its function under a real Lambda runtime (stdlib only).

Started by scripts/runtime.sh, which builds the binaries, points them at the emulator
(AWS_ENDPOINT_URL, a TABLE_NAME and BUCKET_NAME of their own) and sets the development secret.
This script starts `cargo lambda watch --only-lambda-apis` (cargo-lambda's emulator of the Lambda
Runtime API and Invoke API) and every function's binary against it, as Lambda starts a bootstrap;
then it invokes every event through the Invoke API in an order that makes each meaningful, and
checks the answers as Lambda encodes them for API Gateway: statusCode, isBase64Encoded, headers
and the decoded body. Events that name an id which only exists after an earlier step (the
snapshot id, the job id) are sent as a copy with the real id; the files stay as they are.

cargo-lambda's Invoke API answers only synchronously, so the functions' own asynchronous
invocations (`InvocationType: Event`: a job or a scheduled batch handed to the worker) go to
`EventQueue` (in scripts/lambda_local.py, with the rest of the local Lambda), a stand-in for
Lambda's event queue that answers 202 and keeps them; a step then delivers what a function
queued to the worker through cargo-lambda, as Lambda would.

Prints one line per check and a last line `N passed, N failed`; exits 1 on any failure.
"""

import argparse
import base64
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lambda_local import EventQueue, Failed, Lambda, Runtime, Stuck, check

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"

# The events' organization (their token's `organizationId`) and the sample ids they name.
ORG = "65a0e0e0e0e0e0e0e0e0e0e0"
SAMPLE_SNAPSHOT_ID = "67f1a0b0c0d0e0f0a0b0c0d0"
SAMPLE_JOB_ID = "6a1b2c3d4e5f60718293a4b5"
BOM = b"\xef\xbb\xbf"


def event(name, **replace):
    """The event file's text with every `old` id replaced by `new`, as JSON."""
    text = (EVENTS / f"{name}.json").read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return json.loads(text)


class Answer:
    """An API Gateway (payload 2.0) answer as the function returned it to Lambda."""

    def __init__(self, function, payload):
        check(isinstance(payload, dict) and isinstance(payload.get("statusCode"), int), f"not an HTTP answer: {payload}")
        self.function = function
        self.status = payload["statusCode"]
        self.base64 = payload.get("isBase64Encoded")
        self.headers = {k.lower(): v for k, v in (payload.get("headers") or {}).items()}
        body = payload.get("body") or ""
        self.raw = base64.b64decode(body) if self.base64 else body.encode()

    def json(self):
        try:
            return json.loads(self.raw)
        except ValueError:
            raise Failed(f"the body is not JSON: {self.raw[:300]!r}") from None

    def expect(self, status, base64_encoded=False, content_type="application/json"):
        """Checks the status, the encoding and the content type; answers the body (JSON when it is JSON)."""
        check(self.status == status, f"statusCode {self.status}, expected {status}: {self.raw[:500]!r}")
        check(self.base64 is base64_encoded, f"isBase64Encoded {self.base64}, expected {base64_encoded}")
        check(self.headers.get("content-type") == content_type, f"content-type {self.headers.get('content-type')!r}, expected {content_type!r}")
        return self.json() if content_type == "application/json" else self.raw

    def attachment(self, prefix, suffix):
        disposition = self.headers.get("content-disposition", "")
        check(disposition.startswith(f'attachment; filename="{prefix}') and disposition.endswith(f'{suffix}"'), f"content-disposition {disposition!r}")


class Suite:
    """Runs the steps in order; a failed step is counted and the next one still runs."""

    def __init__(self, runtime, cargo_lambda, queue):
        self.rt = runtime
        self.cargo_lambda = cargo_lambda
        self.queue = queue
        self.passed = 0
        self.failed = 0
        self.stuck = False
        self.ids = {}

    def step(self, name, body):
        if self.stuck:
            self.failed += 1
            print(f"FAIL {name}: not run, an earlier invocation got no answer", flush=True)
            return
        started = time.monotonic()
        try:
            body()
        except Failed as e:
            self.failed += 1
            self.stuck = isinstance(e, Stuck)
            print(f"FAIL {name}: {e}", flush=True)
            return
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            self.failed += 1
            print(f"FAIL {name}: an answer without the expected shape ({type(e).__name__}: {e})", flush=True)
            return
        self.passed += 1
        print(f"ok   {name} ({time.monotonic() - started:.1f} s)", flush=True)

    def http(self, function, payload=None):
        """Invokes an HTTP function with its event (a copy with the real ids, or `payload`)."""
        try:
            return Answer(function, self.rt.invoke(function, payload if payload is not None else event(function, **self.ids)))
        except Stuck:
            raise
        except Failed as e:
            raise Failed(f"{function}: {e}") from None

    def queued(self, n):
        """The `n` events the functions have queued for the worker since the last call."""
        taken = self.queue.take()
        check([f for f, _ in taken] == ["export-worker"] * n, f"{n} events queued for export-worker: {taken}")
        return [e for _, e in taken]

    def run(self):
        ids = self.ids
        snapshot = {}
        job = {}

        def put_convo():
            data = self.http("put-convo").expect(201)["data"]
            check((data["id"], data["contactId"], data["userName"]) == ("convo-1", "contact-1", "Jane Doe"), f"{data}")

        def ingest_messages():
            data = self.http("ingest-messages").expect(201)["data"]
            check((data["inserted"], data["messagesNum"]) == (2, 2), f"{data}")

        def list_convos():
            body = self.http("list-convos").expect(200)
            convos = {c["id"]: c for c in body["data"]}
            check(convos.get("convo-1", {}).get("messagesNum") == 2, f"convo-1 with 2 messages: {body}")
            check(convos["convo-1"]["contactId"] == "contact-1", f"{convos['convo-1']}")

        def create_snapshot():
            a = self.http("create-snapshot")
            data = a.expect(201)["data"]
            check(data["contactId"] == "contact-1" and data["quality"] == "good", f"{data}")
            check([m["id"] for m in data["messages"]] == ["msg-1", "msg-2"], f"the ingested messages, in order: {data['messages']}")
            check(a.headers.get("etag") == f'"{data["updatedAt"]}"', f"ETag {a.headers.get('etag')!r}")
            snapshot.update(data)
            ids[SAMPLE_SNAPSHOT_ID] = data["_id"]

        def get_snapshot():
            a = self.http("get-snapshot")
            data = a.expect(200)["data"]
            check(data["_id"] == snapshot["_id"] and data["messageCount"] == 2, f"{data}")
            check(data["contactId"]["_id"] == "contact-1", f"contactId populated: {data['contactId']}")
            check(a.headers.get("etag") == f'"{snapshot["updatedAt"]}"', f"ETag {a.headers.get('etag')!r}")

        def list_snapshots():
            body = self.http("list-snapshots").expect(200)
            check([s["_id"] for s in body["data"]] == [snapshot["_id"]], f"quality=good&tag=sales finds the snapshot: {body}")

        def export_training():
            a = self.http("export-training")
            payload = a.expect(200)
            a.attachment("training-data-", ".json")
            check(a.headers.get("x-export-items") == "1", f"X-Export-Items {a.headers.get('x-export-items')!r}")
            check(payload["organizationId"] == ORG and payload["totalSnapshots"] == 1, f"{str(payload)[:300]}")
            check([d["id"] for d in payload["data"]] == [snapshot["_id"]], f"{str(payload)[:300]}")

        def export_convos():
            a = self.http("export-convos")
            body = a.expect(200)
            a.attachment("conversations-agent-1-", ".json")
            check([c["metadata"]["convo"]["id"] for c in body["data"]] == ["convo-1"], f"{str(body)[:300]}")
            check(len(body["data"][0]["turns"]) == 2, f"two turns: {str(body)[:300]}")

        def export_convo_csv():
            a = self.http("export-convo")
            csv = a.expect(200, base64_encoded=True, content_type="text/csv; charset=utf-8")
            a.attachment("conversation-convo-1-", ".csv")
            check(csv.startswith(BOM), f"the decoded body starts with the UTF-8 BOM: {csv[:20]!r}")
            rows = csv[len(BOM):].decode().split("\r\n")
            check(rows[0].startswith("convoId,userName,") and rows[-1] == "", f"header row and CRLF endings: {rows[:1]}")
            check([r.split(",")[13] for r in rows[1:-1]] == ["msg-1", "msg-2"], f"one row per message: {rows}")

        def create_export():
            a = self.http("create-export")
            data = a.expect(202)["data"]
            check(data["status"] == "queued" and data["trigger"] == "request", f"{data}")
            check(a.headers.get("location") == f"/api/training/exports/{data['id']}", f"Location {a.headers.get('location')!r}")
            job.update(data)
            ids[SAMPLE_JOB_ID] = data["id"]
            queued = self.queued(1)
            check(queued == [{"organizationId": ORG, "jobId": data["id"]}], f"the job handed to the worker: {queued}")

        def get_export_queued():
            data = self.http("get-export").expect(200)["data"]
            check((data["id"], data["status"], data["url"]) == (job["id"], "queued", None), f"the worker has not run it yet: {data}")

        def list_exports():
            data = self.http("list-exports").expect(200)["data"]
            check([(j["id"], j["status"]) for j in data] == [(job["id"], "queued")], f"{data}")

        def worker_file():
            answer = self.rt.invoke("export-worker", event("export-worker"))
            check(answer.get("outcome") == "Skipped", f"the file's job does not exist: {answer}")

        def worker():
            answer = self.rt.invoke("export-worker", event("export-worker", **ids))
            check(answer == {"jobId": job["id"], "outcome": "Succeeded"}, f"{answer}")

        def get_export_succeeded():
            data = self.http("get-export").expect(200)["data"]
            check((data["status"], data["processed"], data["total"]) == ("succeeded", 1, 1), f"{data}")
            check(data["url"] and data["expiresAt"] and data["bytes"] > 0, f"a download link: {data}")
            with urllib.request.urlopen(data["url"], timeout=30) as r:
                lines = r.read().decode().splitlines()
            check(len(lines) == 1 and json.loads(lines[0])["id"] == snapshot["_id"], f"the JSONL file has the snapshot: {lines}")

        def scheduled_run(payload):
            """The coordinator hands the registry to the worker in one batch; the worker runs it."""
            summary = self.rt.invoke("scheduled-export", payload)
            handed = {k: summary.get(k) for k in ("organizations", "batches", "batchesFinished", "finished")}
            check(handed == {"organizations": 1, "batches": 1, "batchesFinished": 0, "finished": False}, f"{summary}")
            [batch] = self.queued(1)
            check(batch["scheduledBatch"]["organizations"] == [ORG], f"{batch}")
            return self.rt.invoke("export-worker", batch)

        def scheduled_file():
            answer = scheduled_run(event("scheduled-export"))
            counts = {k: answer.get(k) for k in ("number", "organizations", "jobsCreated", "unchanged", "reported")}
            check(counts == {"number": 0, "organizations": 1, "jobsCreated": 0, "unchanged": 1, "reported": True},
                  f"nothing changed before the file's time: {answer}")
            self.queued(0)

        def scheduled_now():
            # The file's scheduledTime is fixed; a copy scheduled two minutes from now exports the snapshot.
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
            answer = scheduled_run(dict(event("scheduled-export"), scheduledTime=at))
            check((answer.get("jobsCreated"), answer.get("failed")) == (1, 0), f"{answer}")
            jobs = self.http("list-exports").expect(200)["data"]
            scheduled = [j for j in jobs if j["trigger"] == "schedule"]
            check(len(jobs) == 2 and len(scheduled) == 1, f"{jobs}")
            [queued] = self.queued(1)
            check(queued == {"organizationId": ORG, "jobId": scheduled[0]["id"]}, f"the batch handed its job over: {queued}")
            answer = self.rt.invoke("export-worker", queued)
            check(answer.get("outcome") == "Succeeded", f"{answer}")

        def update_snapshot():
            a = self.http("update-snapshot")
            data = a.expect(200)["data"]
            check((data["quality"], data["isArchived"], data["tags"]) == ("bad", True, ["sales", "needs-review"]), f"{data}")
            check(a.headers.get("etag") == f'"{data["updatedAt"]}"' and data["updatedAt"] != snapshot["updatedAt"], f"a new ETag: {a.headers}")

        def delete_snapshot():
            data = self.http("delete-snapshot").expect(200)["data"]
            check(data == {"_id": snapshot["_id"]}, f"{data}")
            again = self.http("delete-snapshot").expect(404)
            check((again["success"], again["error"]) == (False, "NOT_FOUND"), f"a second delete: {again}")

        def cargo_lambda_invoke():
            # The command of docs/deploy.md: `cargo lambda invoke <function> --data-file events/<function>.json`.
            out = subprocess.run(
                [self.cargo_lambda, "lambda", "invoke", "list-convos", "--data-file", str(EVENTS / "list-convos.json"),
                 "--invoke-address", "127.0.0.1", "--invoke-port", str(self.rt.port), "--output-format", "json"],
                capture_output=True, text=True, timeout=120, cwd=ROOT,
            )
            check(out.returncode == 0, f"exit {out.returncode}: {out.stderr[-500:]}")
            body = Answer("list-convos", json.loads(out.stdout)).expect(200)
            check([c["id"] for c in body["data"]] == ["convo-1"], f"{body}")

        steps = [
            ("put-convo: creates the conversation (201)", put_convo),
            ("ingest-messages: two new messages (201)", ingest_messages),
            ("list-convos: the conversation with its counters", list_convos),
            ("cargo lambda invoke list-convos --data-file events/list-convos.json", cargo_lambda_invoke),
            ("create-snapshot: the two messages (201, ETag)", create_snapshot),
            ("get-snapshot: the snapshot, contact populated (ETag)", get_snapshot),
            ("list-snapshots: found by quality and tag", list_snapshots),
            ("export-training: Tether's JSON inline, as text", export_training),
            ("export-convos: Convocore's JSON inline, as text", export_convos),
            ("export-convo: CSV inline, base64, with its BOM", export_convo_csv),
            ("create-export: 202 with Location, its job queued for the worker", create_export),
            ("get-export: queued", get_export_queued),
            ("list-exports: the job", list_exports),
            ("export-worker (the file): no such job, skipped", worker_file),
            ("export-worker: the created job succeeds", worker),
            ("get-export: succeeded, its download is the JSONL file", get_export_succeeded),
            ("scheduled-export (the file): one batch, nothing new before its time", scheduled_file),
            ("scheduled-export (now): one batch, its job, which the worker runs", scheduled_now),
            ("update-snapshot: quality, tags, archived (new ETag)", update_snapshot),
            ("delete-snapshot: deleted, then 404", delete_snapshot),
        ]
        for name, body in steps:
            self.step(name, body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cargo-lambda", required=True, help="the cargo-lambda executable")
    args = parser.parse_args()

    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so `finally` stops what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    functions = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").is_file())
    lam = Lambda(args.cargo_lambda)
    queue = EventQueue()
    suite = None
    try:
        lam.wait_ready()
        lam.start(functions, queue.url)
        suite = Suite(Runtime(lam), args.cargo_lambda, queue)
        suite.run()
    except Failed as e:
        print(f"FAIL {e}", flush=True)
    finally:
        lam.stop()
        queue.stop()
    passed, failed = (suite.passed, suite.failed) if suite else (0, 1)
    if failed or not passed:
        tail = [line[:300] for line in lam.log_path.read_text(errors="replace").splitlines()[-20:]]
        print(f"--- last lines of {lam.log_path} (the functions' logs are next to it):", *tail, sep="\n")
    print(f"({len(functions)} functions under cargo lambda watch, {time.monotonic() - started:.0f} s)")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
