"""The gunicorn worker of `pex serve`: gthread, except that a connection reaches a thread only
once its whole request (headers and body, up to the body limit) has arrived.

gunicorn's gthread worker hands a connection to a thread as soon as its first byte arrives,
and the thread then blocks reading the rest: ten clients that announce `Content-Length: 100`
and send one byte hold every thread of a default server, and /healthz stops answering. Here
the worker's main loop, which already polls every idle keep-alive connection, reads requests
without blocking into a buffer per connection; a complete request is handed to a thread with
its bytes already in gunicorn's parser, so no thread ever waits on a client. A request that
has not fully arrived within PEX_REQUEST_TIMEOUT_SECONDS is answered 408 and its connection
closed; a body over the limit (413), a chunked body (411) and headers over HEADER_BYTES_MAX
(431) are refused at once, without waiting for the rest.

What a slow client costs is then a socket and at most HEADER_BYTES_MAX + PEX_MAX_BODY_BYTES of
memory, up to gunicorn's worker_connections per worker (docs/operations.md). TLS is not
served here (the bytes are read before any handshake): terminate TLS in front of PEX.
"""

from __future__ import annotations

import errno
import html
import json
import re
import selectors
import threading
import time
import uuid
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from pex.http import wsgi
from pex.http.problems import TYPE_BASE, default_kind

HEADER_BYTES_MAX = 64 * 1024  # request line and header fields together
READ_SIZE = 64 * 1024
END_OF_HEADERS = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:([^\r\n]*)", re.IGNORECASE)
DIGITS = re.compile(rb"[ \t]*0*([0-9]{1,30})[ \t]*")
TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)
CONTINUE = object()
EXPECT_CONTINUE = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue[ \t]*(?=\r\n)", re.IGNORECASE)


INSTANCE_BYTES_MAX = 1024  # a longer path is not echoed back (a 414's path is the problem)
REQUEST_PATH = re.compile(rb"[A-Z]{1,20} (/[\x21-\x7e]*?)[? ]")


def problem_reply(status: int, reason: str, kind: str, detail: str, arrived: bytes | bytearray = b"") -> bytes:
    """A complete HTTP/1.1 reply with an RFC 9457 body, that closes the connection.

    The body has the same members as the application's problems (pex.http.problems): the
    request's path as `instance`, when it can be read and is short enough to repeat, else the
    occurrence's own URN, and a fresh `request_id`, also sent as X-Request-ID."""
    request_id = uuid.uuid4().hex
    path = REQUEST_PATH.match(bytes(arrived[:INSTANCE_BYTES_MAX + 22]))
    instance = path.group(1).decode("ascii") if path and len(path.group(1)) <= INSTANCE_BYTES_MAX else None
    body = json.dumps({
        "type": TYPE_BASE + kind, "title": reason, "status": status, "detail": detail,
        "instance": instance or f"urn:uuid:{uuid.UUID(request_id)}", "request_id": request_id,
    }).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
        f"X-Request-ID: {request_id}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


GUNICORN_ERROR_PAGE = re.compile(rb"HTTP/1\.1 (\d{3}) ([^\r]*)\r\n.*?</h1>\s*(.*?)\s*</body>", re.DOTALL)


class ProblemSocket:
    """A client socket that turns gunicorn's own HTML error page, written when its parser refuses
    a request the door let through (a malformed header, a bad method), into the same reply as a
    problem (pex.http.problems): one wire for every refusal, whoever makes it."""

    def __init__(self, sock, arrived: bytes):
        self.sock = sock
        self.arrived = arrived

    def sendall(self, data: bytes) -> None:
        page = GUNICORN_ERROR_PAGE.match(data)
        if page is not None:
            status = int(page.group(1))
            detail = html.unescape(page.group(3).decode("latin-1")) or page.group(2).decode("latin-1")
            data = problem_reply(status, page.group(2).decode("latin-1"),
                                 default_kind(status), detail, self.arrived)
        self.sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


class Arrival:
    """The bytes of one request received so far, and when it must be complete."""

    def __init__(self, deadline: float, data: bytes = b""):
        self.deadline = deadline
        self.data = bytearray(data)
        self.continued = False  # "100 Continue" sent


class BufferingThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, with requests read by the main loop (see the module's doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        http = wsgi.settings().http  # forked from the serving process, or read once
        self.request_timeout = http.request_timeout_seconds
        self.max_body_bytes = http.max_body_bytes
        self.arriving: dict = {}  # TConn → Arrival
        self.handling = threading.local()  # the request bytes a thread is handling

    @classmethod
    def check_config(cls, cfg, log):
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise RuntimeError("PEX's worker reads requests before any TLS handshake: terminate TLS in front")

    # --- where gthread would hand a connection to a thread, wait for its request instead ----

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.await_request(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))

    def on_client_socket_readable(self, conn, client):
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.await_request(conn)
        self.on_request_bytes(conn, client)  # readable now: read before anything may drop it

    def finish_request(self, conn, fs):
        # gthread sends a kept-alive connection with pipelined bytes straight back to a thread,
        # whose read of an incomplete next request would block: those bytes wait here too.
        if not fs.cancelled() and fs.exception() is None and fs.result() is True and self.alive:
            ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
            if ahead:
                self.await_request(conn, ahead)
                return
        super().finish_request(conn, fs)

    def handle(self, conn):
        arrival = getattr(conn, "request_bytes", b"")
        self.handling.arrived = arrival  # for handle_error's reply, in this same thread
        if arrival:
            conn.request_bytes = b""
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(arrival)
        return super().handle(conn)

    def handle_error(self, req, client, addr, exc):
        super().handle_error(req, ProblemSocket(client, getattr(self.handling, "arrived", b"")), addr, exc)

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        for conn, arrival in list(self.arriving.items()):
            if not self.alive and not arrival.data:
                self.drop(conn)  # stopping: a connection that has sent nothing is not waited for
            elif arrival.deadline <= now:
                if arrival.data:
                    self.refuse(conn, problem_reply(
                        408, "Request Timeout", "request-timeout",
                        f"The request did not arrive within {self.request_timeout:g} seconds.",
                        arrival.data,
                    ))
                else:
                    self.drop(conn)

    # --- reading ------------------------------------------------------------------------------

    def await_request(self, conn, data: bytes = b"") -> None:
        conn.sock.setblocking(False)
        self.arriving[conn] = Arrival(time.monotonic() + self.request_timeout, data)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
        if data:
            self.on_request_bytes(conn, conn.sock, read=False)

    def on_request_bytes(self, conn, client, read: bool = True) -> None:
        arrival = self.arriving[conn]
        if read:
            try:
                chunk = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.drop(conn)
                return
            if not chunk:
                self.drop(conn)  # the client went away before finishing its request
                return
            arrival.data += chunk
        verdict = self.verdict(arrival)
        if verdict is CONTINUE:
            arrival.continued = True
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass  # the client is gone or not reading: the deadline closes the connection
            return
        if verdict is None:
            return
        if isinstance(verdict, bytes):
            self.refuse(conn, verdict)
            return
        self.poller.unregister(conn.sock)
        del self.arriving[conn]
        conn.request_bytes = bytes(arrival.data)
        conn.data_ready = True
        self.enqueue_req(conn)

    def verdict(self, arrival: Arrival):
        """True when the request has fully arrived, a refusal (bytes) to send, CONTINUE when the
        client waits for "100 Continue" before sending its body, or None to wait."""
        data = arrival.data
        # gunicorn's parser would refuse a longer request line with an HTML page: say it here,
        # as a problem, at the same limit.
        line_end = data.find(b"\r\n")
        if (line_end if line_end >= 0 else len(data)) > self.cfg.limit_request_line > 0:
            return problem_reply(414, "URI Too Long", "uri-too-long",
                                 f"The request line exceeds {self.cfg.limit_request_line} bytes.", data)
        end = data.find(END_OF_HEADERS)
        if end < 0:
            if len(data) > HEADER_BYTES_MAX:
                return problem_reply(431, "Request Header Fields Too Large", "headers-too-large",
                                     f"The request line and headers exceed {HEADER_BYTES_MAX} bytes.", data)
            return None
        head = bytes(data[:end + 2])
        if TRANSFER_ENCODING.search(head):
            return problem_reply(411, "Length Required", "length-required", "Send a Content-Length header.", data)
        lengths = CONTENT_LENGTH.findall(head)
        if not lengths:
            return True  # no body
        digits = DIGITS.fullmatch(lengths[0])
        if len(lengths) > 1 or digits is None:
            # Refused here rather than left to gunicorn's parser: a length read differently
            # there would make a thread wait for a body.
            return problem_reply(400, "Bad Request", "bad-request", "Send one Content-Length, a number of bytes.", data)
        length = int(digits.group(1))
        if length > self.max_body_bytes:
            return problem_reply(413, "Content Too Large", "payload-too-large",
                                 f"The body has {length} bytes; at most {self.max_body_bytes} are accepted.", data)
        if len(data) >= end + len(END_OF_HEADERS) + length:
            return True
        if not arrival.continued and EXPECT_CONTINUE.search(head):
            return CONTINUE
        return None

    def refuse(self, conn, reply: bytes) -> None:
        try:
            conn.sock.send(reply)  # small enough for an empty socket buffer: never blocks
        except OSError:
            pass
        self.drop(conn)

    def drop(self, conn) -> None:
        self.arriving.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        conn.close()
