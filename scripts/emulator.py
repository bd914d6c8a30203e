"""The local DynamoDB + S3 emulator: moto's server, serving one request at a time.

moto's in-memory backends are not safe under concurrent writes (its TransactWriteItems
deep-copies the table while other threads change it, and fails with "dictionary changed size
during iteration"). Real DynamoDB has no such limit, so the emulator serialises requests
instead of the product working around it. Usage: emulator.py PORT
"""

import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialised(environ, start_response):
        with lock:
            # Consume the response inside the lock: the body may still read backend state.
            return [b"".join(app(environ, start_response))]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    run_simple("127.0.0.1", port, serialised, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
