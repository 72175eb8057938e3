"""A webhook receiver for the tests: a real HTTP server on loopback (http.server, in a thread)
that checks every request's signature as docs/api.md tells a receiver to, and records it.

    with Receiver() as receiver:            # listening on 127.0.0.1:<free port>
        receiver.secret = "whsec_..."       # the secret its signatures are checked with
        receiver.answer = 500               # what it answers (200 by default)
        receiver.gate = threading.Event()   # a slow receiver: each request waits for the gate
        receiver.received                   # [Received(headers, body, signed)] in order

`Receiver(listening=False)` has its port but is down (connections refused) until `start()`."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool  # the signature is right for the body, the timestamp and the secret

    @property
    def json(self) -> dict:
        return json.loads(self.body)


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """docs/api.md's check, as a receiver writes it."""
    timestamp = headers.get("X-PEX-Timestamp", "")
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("X-PEX-Signature", ""))


class Receiver:
    def __init__(self, listening: bool = True):
        self.secret = ""
        self.answer = 200
        self.gate: threading.Event | None = None
        self.waiting = threading.Event()  # set when a request waits at the gate
        self.received: list[Received] = []
        self._lock = threading.Lock()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if listening:
            self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pex"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()}
                if receiver.gate is not None:
                    receiver.waiting.set()
                    receiver.gate.wait(timeout=60)
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, body, verify(receiver.secret, headers, body)))
                self.send_response(receiver.answer)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    def types(self) -> list[str]:
        with self._lock:
            return [r.json["type"] for r in self.received]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
