"""Fixtures for the API tests: the real Falcon app in process over an in-memory store with a
manual clock, every response checked against the OpenAPI document; and a real gunicorn.

The helpers ask for PEX's form of every reply (Accept: application/vnd.pex+json), as a PEX
client does; tests of the original's form (test_original_client.py) speak as its client."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import falcon.testing
import pytest
import requests

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.http.app import create_app
from pex.http.contract import ResponseContract, openapi
from pex.http.observability import Metrics
from pex.projections.readmodels import ReadModels
from pex.settings import HttpSettings, Settings
from pex.wire import PEX_JSON, rfc1123
from tests.conftest import T0

ETCH = "PEX Debian Etch 4.0 Template"
PASSWORD = "correct horse battery"
CHEAP = {"PEX_PASSWORD_PROFILE": "cheapest"}
RICH = {"Accept": PEX_JSON}  # PEX's form of a reply, not the original's


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def proposal(size="SMALL", fixed=1, option=0, start: datetime = T0 + timedelta(hours=2), hours=1.0, **extra) -> dict:
    """Figure 7."""
    body = {
        "duration": int(hours * 3600 * 1000),
        "numInstancesFixed": fixed,
        "numInstancesOption": option,
        "startTime": rfc1123(start),
        "template": ETCH,
        "type": size,
    }
    body.update(extra)
    return body


@dataclass
class Api:
    """The in-process API, with helpers that speak as a given user."""

    client: falcon.testing.TestClient
    application: object
    read_models: ReadModels  # what the list endpoints read
    clock: ManualClock
    contract: ResponseContract
    metrics: Metrics
    users: set = field(default_factory=set)

    def user(self, name: str, admin: bool = False) -> dict[str, str]:
        if name not in self.users:
            self.application.register_user(name, PASSWORD, is_admin=admin)
            self.users.add(name)
        return basic(name)

    def post(self, path, user="alice", **kw):
        return self.client.simulate_post(path, headers={**self.user(user), **RICH, **kw.pop("headers", {})}, **kw)

    def put(self, path, user="alice", **kw):
        return self.client.simulate_put(path, headers={**self.user(user), **RICH, **kw.pop("headers", {})}, **kw)

    def get(self, path, user="alice", **kw):
        return self.client.simulate_get(path, headers={**self.user(user), **RICH, **kw.pop("headers", {})}, **kw)

    def delete(self, path, user="alice", **kw):
        return self.client.simulate_delete(path, headers={**self.user(user), **RICH, **kw.pop("headers", {})}, **kw)

    def propose(self, user="alice", **terms):
        return self.post("/OpenPEX/reservations", user=user, json=proposal(**terms))

    def step(self, reservation_id: str, reply: str, user="alice", proposal_body=None, **kw):
        body = {"reply": reply}
        if proposal_body is not None:
            body["proposal"] = proposal_body
        return self.put(f"/OpenPEX/reservations/{reservation_id}", user=user, json=body, **kw)


def make_api(http: HttpSettings | None = None, database_url: str = "memory:") -> Api:
    clock = ManualClock(T0)
    application = build_application(Settings(database_url=database_url, extra_env=CHEAP), clock=clock)
    read_models = ReadModels(application)
    contract, metrics = ResponseContract(openapi()), Metrics()
    http = http or HttpSettings(log_requests=True, login_failures_allowed=3, login_lockout_seconds=30)
    app = create_app(application, http, read_models=read_models, metrics=metrics, response_contract=contract)
    return Api(falcon.testing.TestClient(app), application, read_models, clock, contract, metrics)


@pytest.fixture
def api():
    api = make_api()
    yield api
    api.read_models.close()
    api.application.close()
    assert api.contract.violations == [], "responses broke the OpenAPI contract:\n" + "\n".join(api.contract.violations)


# --- a real gunicorn ----------------------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: str
    env: dict  # what the server was given beyond the inherited environment
    cwd: str
    sessions: list = field(default_factory=list)  # closed before stopping: idle keep-alives delay a graceful stop

    def session(self, auth: tuple[str, str] | None = None) -> requests.Session:
        session = requests.Session()
        session.auth = auth
        session.headers.update(RICH)
        self.sessions.append(session)
        return session

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def register(self, username: str, admin: bool = False) -> tuple[str, str]:
        r = requests.post(f"{self.url}/OpenPEX/users", json={"username": username, "password": PASSWORD}, timeout=10)
        assert r.status_code == 201, r.text
        return (username, PASSWORD)


def free_port() -> int:
    from tests.pg import free_port as pg_free_port

    return pg_free_port()


def start_server(database_url: str, tmp_path, workers: int = 2, extra_env: dict | None = None) -> LiveServer:
    port = free_port()
    given = {**CHEAP, "PEX_DATABASE_URL": database_url, "PEX_LOGIN_FAILURES_ALLOWED": "0", **(extra_env or {})}
    env = {**os.environ, **given}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = str(tmp_path / f"gunicorn-{port}.log")
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "pex.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, given, str(tmp_path))
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{server.log()}")
        try:
            if requests.get(f"{server.url}/readyz", timeout=15).status_code == 200:
                return server
        except (requests.ConnectionError, requests.Timeout):
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"gunicorn did not become ready:\n{server.log()}")
        time.sleep(0.2)


def stop_server(server: LiveServer) -> None:
    for session in server.sessions:
        session.close()
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture
def live_server(postgres_url, tmp_path):
    server = start_server(postgres_url, tmp_path, workers=2)
    yield server
    stop_server(server)
    assert "Traceback" not in server.log(), server.log()
