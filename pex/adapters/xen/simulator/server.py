"""The simulator on the network: XML-RPC on `/` and `/RPC2`, the admin API on `/sim/...`.

`run_simulator()` starts one on an ephemeral loopback port for a test; `serve()` runs one
until interrupted (what `pex xen-sim` calls). Nothing starts at import time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import xmlrpc.client
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import urlsplit

from pex.adapters.xen.simulator.api import XapiApi, fault_name
from pex.adapters.xen.simulator.clock import Clock
from pex.adapters.xen.simulator.control import ADMIN_ACTIONS, SimulatorControl
from pex.adapters.xen.simulator.pool import SimulatedPool
from pex.adapters.xen.simulator.testbed import HostSpec, SimulatorConfig, config_for
from pex.adapters.xen.simulator.wire import ConnectionDropped, XapiError, failure, method_response, success

log = logging.getLogger(__name__)

XMLRPC_PATHS = ("/", "/RPC2")
ADMIN_PREFIX = "/sim/"
# What xapi answers to a body it cannot parse (an HTML page, HTTP 500).
PARSE_ERROR_PAGE = b"<html><body><h1>HTTP 500 internal server error</h1>Xmlrpc.Parse_error</body></html>"


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate (chain) and its private key: what an https listener presents."""

    certfile: str
    keyfile: str

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


class XapiSimulator:
    """A simulated XAPI pool served over HTTP(S); `url` is what `XenAPI.Session` connects to.

    By default one listener plays the pool master whoever the master is. With `members`,
    every host listens on its own address (the paper hosts' 127.0.0.N) and the same port,
    and answers as xapi does in its role: the master serves the API, a member answers
    HOST_IS_SLAVE [master address] to logins and calls, so the master can move
    (`control.switch_master`) under a client that has to follow it.
    """

    def __init__(self, config: SimulatorConfig | None = None, *, clock: Clock | None = None,
                 bind: str = "127.0.0.1:0", poll_interval: float = 0.5,
                 tls: TlsFiles | Mapping[str, TlsFiles] | None = None, members: bool = False):
        """`bind` is "host:port" (port 0: any free one); `poll_interval` is how often the
        server loop checks for `stop` (small in tests, so teardown is quick). `tls` makes
        every listener https, with one certificate for all hosts or one per host name."""
        self._poll_interval = poll_interval
        self.pool = SimulatedPool(config, clock)
        self.api = XapiApi(self.pool)
        self.control = SimulatorControl(self.pool, self)
        self._tls = tls
        self._listeners: dict[str | None, _HttpServer] = {}  # host ref (None: the master's role) -> server
        self._threads: list[threading.Thread] = []
        self._started = False
        host, _, port = bind.rpartition(":")
        with self.pool.lock:
            hosts = {self.pool.db.get("host", ref)["name_label"]: ref for ref in self.pool.db.tables["host"]}
        if not members:
            self._listeners[None] = self._listen(host or "127.0.0.1", int(port or 0), None, None)
            return
        names = [spec.name for spec in self.pool.config.hosts]
        addresses = [spec.address for spec in self.pool.config.hosts]
        if len(set(addresses)) != len(addresses):
            raise ValueError("members need hosts with distinct addresses (as paper_hosts gives them)")
        first = self._listen(addresses[0], int(port or 0), hosts[names[0]], names[0])
        self._listeners[hosts[names[0]]] = first
        for name, address in zip(names[1:], addresses[1:], strict=True):
            self._listeners[hosts[name]] = self._listen(address, first.server_address[1], hosts[name], name)

    def _listen(self, address: str, port: int, host_ref: str | None, name: str | None) -> _HttpServer:
        context = None
        if isinstance(self._tls, TlsFiles):
            context = self._tls.context()
        elif self._tls is not None:
            context = self._tls[name or self.pool.config.hosts[0].name].context()
        return _HttpServer((address, port), _RequestHandler, self, host_ref, context)

    @property
    def scheme(self) -> str:
        return "http" if self._tls is None else "https"

    @property
    def address(self) -> tuple[str, int]:
        """Where the first host (the initial master) listens."""
        server = next(iter(self._listeners.values()))
        host, port = cast(tuple[str, int], server.server_address[:2])  # an AF_INET socket's
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{self.scheme}://{host}:{port}/"

    def url_of(self, host: str) -> str:
        """The URL of one host's own listener (with `members`), by name, uuid or ref."""
        ref = self.control.host_ref(host)
        server = self._listeners.get(ref)
        if server is None:
            raise KeyError(f"host {host!r} has no listener of its own (start the simulator with members=True)")
        address, port = cast(tuple[str, int], server.server_address[:2])
        return f"{self.scheme}://{address}:{port}/"

    @property
    def admin_url(self) -> str:
        return self.url.rstrip("/") + ADMIN_PREFIX.rstrip("/")

    def start(self) -> XapiSimulator:
        self._started = True
        for server in self._listeners.values():
            thread = threading.Thread(target=server.serve_forever, name="xapi-simulator", daemon=True,
                                      kwargs={"poll_interval": self._poll_interval})
            thread.start()
            self._threads.append(thread)
        return self

    def silence_host(self, host_ref: str) -> None:
        """The host's listener closes: connections to it are refused from now on."""
        server = self._listeners.pop(host_ref, None)
        if server is not None:
            self._close(server)

    def stop(self) -> None:
        self.pool.stop()
        for server in self._listeners.values():
            self._close(server)
        for thread in self._threads:
            thread.join(timeout=5)

    def _close(self, server: _HttpServer) -> None:
        if self._started:  # shutdown() waits for a serve_forever that never ran otherwise
            server.shutdown()
        server.close_open_connections()
        server.server_close()

    def __enter__(self) -> XapiSimulator:
        return self if self._started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def run_simulator(hosts: int | Sequence[HostSpec] = 5, *, clock: Clock | None = None, bind: str = "127.0.0.1:0",
                  tls: TlsFiles | Mapping[str, TlsFiles] | None = None, members: bool = False,
                  **options: object) -> Iterator[XapiSimulator]:
    """A running simulator for the length of a `with` block.

    `hosts` is a count of paper-testbed hosts or explicit `HostSpec`s; `tls` and `members`
    are `XapiSimulator`'s; `options` are any other `SimulatorConfig` fields (username,
    password, guest_ip_delay, seed, templates, ...).
    """
    simulator = XapiSimulator(config_for(hosts, **options), clock=clock, bind=bind, poll_interval=0.01, tls=tls,
                              members=members)
    with simulator:
        yield simulator


def serve(bind: str = "127.0.0.1:8080", hosts: int = 5, *, announce: Callable[[str], None] = print,
          stop: threading.Event | None = None, tls: TlsFiles | None = None, members: bool = False,
          **options: object) -> None:
    """Run a simulator on `bind` ("host:port") until interrupted (Ctrl-C) or `stop` is set.

    `tls` and `members` are `XapiSimulator`'s (with `members`, the hosts listen on
    127.0.0.1 ... 127.0.0.N at `bind`'s port); `options` are `SimulatorConfig` fields
    (username, password, guest_ip_delay, seed, ...).
    """
    simulator = XapiSimulator(config_for(hosts, **options), bind=bind, tls=tls, members=members).start()
    config = simulator.pool.config
    announce(f"XAPI simulator: {simulator.url} (user {config.username!r}, {len(config.hosts)} hosts), "
             f"admin API: {simulator.admin_url}/<action>")
    if members:
        announce("pool members: " + ", ".join(simulator.url_of(spec.name) for spec in config.hosts[1:]))
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):  # in slices: a signal handler that sets `stop` is then noticed
            pass
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, simulator: XapiSimulator, host_ref: str | None,
                 tls: ssl.SSLContext | None = None):
        self.simulator = simulator
        self.host_ref = host_ref  # the host this listener is; None: whichever is the master
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)
        if tls is not None:
            # The handshake happens in the request's thread (setup), never in the accept loop.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that rejects our certificate (as it should, when it is not the pinned one) hangs up.
        log.debug("connection from %s failed", client_address, exc_info=True)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def close_open_connections(self) -> None:
        # Keep-alive clients would otherwise hold handler threads (and the port) after stop.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10.0)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle plus the client's
        # delayed ACK would add 40 ms to every call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.track(self.connection, False)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if path in XMLRPC_PATHS:
            self._xmlrpc(body)
        elif path.startswith(ADMIN_PREFIX):
            self._admin(path[len(ADMIN_PREFIX):], body)
        else:
            self._reply(404, "text/plain", b"not found")

    def do_GET(self) -> None:
        if urlsplit(self.path).path == ADMIN_PREFIX + "state":
            self._admin("state", b"{}")
        else:
            self._reply(404, "text/plain", b"not found")

    def _xmlrpc(self, body: bytes) -> None:
        simulator = self.server.simulator
        pool = simulator.pool
        try:
            params, method = xmlrpc.client.loads(body)
        except Exception:
            self._reply(500, "text/html", PARSE_ERROR_PAGE)
            return
        name = fault_name(method or "")
        if pool.faults.take_drop(name):
            self.close_connection = True  # closes the socket without a response
            return
        if pool.faults.take_http_error(name):
            self._reply(500, "text/html", PARSE_ERROR_PAGE)
            return
        try:
            # A methodResponse body has no method name (None): it fails as INTERNAL_ERROR below.
            envelope = success(simulator.api.call(method, params, host=self.server.host_ref))  # type: ignore[arg-type]
        except XapiError as error:
            envelope = failure(error.description)
        except ConnectionDropped:
            self.close_connection = True
            return
        except Exception as error:
            log.exception("simulator bug in %s", method)
            envelope = failure(["INTERNAL_ERROR", str(error)])
        with contextlib.suppress(OSError):  # the client may have given up (socket timeout)
            self._reply(200, "text/xml", method_response(envelope))

    def _admin(self, action: str, body: bytes) -> None:
        control = self.server.simulator.control
        if action not in ADMIN_ACTIONS:
            self._reply(404, "application/json", json.dumps({"error": f"unknown action {action!r}"}).encode())
            return
        try:
            arguments = json.loads(body or b"{}")
            result = getattr(control, action)(**arguments)
            self._reply(200, "application/json", json.dumps({"result": result}).encode())
        except (TypeError, KeyError, ValueError) as error:
            self._reply(400, "application/json", json.dumps({"error": str(error)}).encode())

    def _reply(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

