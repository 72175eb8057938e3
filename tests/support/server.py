"""A real gunicorn (`pex serve`) on a free loopback port, as a subprocess in its own process
group, and how to stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests

from tests.pg import free_port
from tests.support.api import CHEAP, PASSWORD, RICH


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


@contextmanager
def serving(database_url: str, tmp_path, workers: int = 2, extra_env: dict | None = None) -> Iterator[LiveServer]:
    """A live server for the `with` block, stopped after it; its log must show no traceback."""
    server = start_server(database_url, tmp_path, workers, extra_env)
    try:
        yield server
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


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
