"""A throw-away PostgreSQL server for the tests, started by the tests themselves.

Debian's postgresql-15 binaries refuse to run as root, so as root the cluster belongs to the
unprivileged `postgres` user (runuser); as anyone else it is simply ours. It listens on
loopback on a free port, with fsync off, in a temporary directory removed at the end.
Set PEX_TEST_POSTGRES_URL=postgresql://user:pw@host:port/ to use a server you run instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

BIN = Path(os.environ.get("PEX_PG_BINDIR", "/usr/lib/postgresql/15/bin"))


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str = ""
    datadir: str | None = None
    _as_user: list[str] | None = None
    _options: str = ""  # the server options it was started with, to start it again the same way

    def url(self, dbname: str) -> str:
        auth = f"{self.user}:{self.password}" if self.password else self.user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres", autocommit=True
        )

    def create_database(self) -> str:
        name = f"pex_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop_serving(self) -> None:
        """An outage: stop the server (fast: sessions are cut), keeping its data."""
        self._pg_ctl("stop", "-m", "fast")

    def start_serving(self) -> None:
        """The end of an outage: start it again as it was, and return once it takes connections."""
        assert self.datadir
        log = os.path.join(os.path.dirname(self.datadir), "log")
        self._pg_ctl("start", "-o", self._options, "-l", log)

    def _pg_ctl(self, *args: str) -> None:
        assert self.datadir and self._as_user is not None
        subprocess.run(
            [*self._as_user, str(BIN / "pg_ctl"), "-D", self.datadir, "-w", "-t", "60", *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def crash(self) -> None:
        """The server dies as a machine would: `pg_ctl stop -m immediate`, no shutdown checkpoint,
        sessions cut."""
        self._pg_ctl("stop", "-m", "immediate")

    def promote(self) -> None:
        """A standby becomes a primary (`pg_ctl promote`, waiting until it takes writes)."""
        self._pg_ctl("promote")

    def stop(self) -> None:
        if self.datadir:
            try:
                self._pg_ctl("stop", "-m", "immediate")
            except subprocess.CalledProcessError:  # stopped already (crashed by the test)
                pass
            shutil.rmtree(os.path.dirname(self.datadir), ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(own: bool = False, settings: str = "") -> PostgresServer:
    """The server for the tests: PEX_TEST_POSTGRES_URL's, or one started here. `own=True`
    always starts one here (a test that stops and restarts its server needs that), with the
    server `settings` (`-c name=value ...`) on top of the defaults."""
    external = None if own or settings else os.environ.get("PEX_TEST_POSTGRES_URL")
    if external:
        from urllib.parse import urlparse

        u = urlparse(external)
        return PostgresServer(u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres", u.password or "")
    if not (BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL binaries not found in {BIN}; install postgresql-15 or set PEX_PG_BINDIR")
    as_user: list[str] = []
    base = tempfile.mkdtemp(prefix="pex-pg-")
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o755)
        shutil.chown(base, "postgres", "postgres")
    datadir = os.path.join(base, "data")
    subprocess.run(
        [*as_user, str(BIN / "initdb"), "-D", datadir, "-U", "pex", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return _serve(datadir, base, as_user, settings)


def start_standby(primary: PostgresServer, settings: str = "") -> PostgresServer:
    """A hot standby of `primary` (one started here), streaming from it: a base backup taken
    with pg_basebackup -R (which writes standby.signal and the primary's conninfo), started on
    a port of its own. Returns once it takes (read-only) connections."""
    assert primary.datadir and primary._as_user is not None
    as_user = primary._as_user
    base = tempfile.mkdtemp(prefix="pex-pg-standby-")
    if os.geteuid() == 0:
        os.chmod(base, 0o755)
        shutil.chown(base, "postgres", "postgres")
    datadir = os.path.join(base, "data")
    subprocess.run(
        [*as_user, str(BIN / "pg_basebackup"), "-D", datadir, "-h", primary.host, "-p", str(primary.port),
         "-U", primary.user, "-R", "-X", "stream", "--no-sync", "-c", "fast"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return _serve(datadir, base, as_user, settings)


def _serve(datadir: str, base: str, as_user: list[str], settings: str) -> PostgresServer:
    port = free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
        f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 {settings}"
    ).strip()
    server = PostgresServer("127.0.0.1", port, "pex", datadir=datadir, _as_user=as_user, _options=options)
    subprocess.run(
        [*as_user, str(BIN / "pg_ctl"), "-D", datadir, "-o", options, "-l", os.path.join(base, "log"), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            server.admin().close()
            return server
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
