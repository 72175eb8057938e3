"""The reliability tests' parts: a real gunicorn (3 workers) on PostgreSQL, a real timer
worker process dispatching to a XAPI simulator served from the test process, clients under
load in threads (`Load`, with tests.support.clients), `pex audit` run as a subprocess, a
watch on the simulator for duplicate VMs, what the store recorded of the dispatches, and the
figures each test writes to test-artifacts/reliability/ (docs/reliability.md quotes them).

Everything listens on loopback; every process started here is stopped in a `finally`, by its
own process group."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from random import Random
from uuid import UUID

from pex.bootstrap import build_application
from pex.domain.values import State
from pex.settings import Settings
from tests.support.clients import Negotiator, Tally, proposal, seeded, whole_seconds_from_now
from tests.support.server import LiveServer, start_server, stop_server
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "reliability"
SIM_USER, SIM_PASSWORD = "root", "xenroot"


# --- figures ---------------------------------------------------------------------------------


def write_figures(name: str, figures: dict) -> Path:
    """Write one test's figures (with when and where) as JSON, and print them."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    document = {
        "test": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        **figures,
    }
    path = ARTIFACTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"\n{name}: {json.dumps(figures, default=str)}")
    _written.append(path)
    return path


wait_for = partial(eventually, interval=0.1)  # what they wait for is a process or a server

_written: list[Path] = []  # the figures files of this run, for the summary


# --- processes -------------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (gunicorn's workers, for its master)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


@contextmanager
def api_server(database_url: str, tmp_path: Path, workers: int = 3, **extra_env: str):
    """`pex serve` (gunicorn) with `workers` workers and no embedded worker: the tests run
    their own timer worker, against their own simulator."""
    server = start_server(database_url, tmp_path, workers=workers, extra_env={"PEX_EMBEDDED_WORKER": "n", **extra_env})
    try:
        wait_for(lambda: len(children(server.process.pid)) == workers, 30, what="gunicorn's workers")
        yield server
    finally:
        stop_server(server)


class Load:
    """Every user negotiating with the server, each in a thread of its own, until the load ends.
    `step(client, rng)` is one round of one client (its rng seeded by its name and `seed`, so
    every run asks the same); `client_options` go to each Negotiator. In a `with`: the
    threads start on entry and are stopped and joined on exit; `at(seconds)` waits until that
    long into the load, and `outcomes` counts how the negotiations ended."""

    def __init__(self, server: LiveServer, users: list[tuple[str, str]], tally: Tally,
                 step: Callable[[Negotiator, Random], object], seed: int, **client_options):
        self.server, self.users, self.tally, self.step, self.seed = server, users, tally, step, seed
        self.client_options = client_options
        self.outcomes: Counter = Counter()
        self.stop = threading.Event()
        self.began = 0.0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(auth,), name=f"load-{auth[0]}") for auth in users]

    def _run(self, auth: tuple[str, str]) -> None:
        rng = seeded(auth[0], self.seed)
        client = Negotiator(self.server.url, auth, self.tally, give_up=self.stop, **self.client_options)
        try:
            while not self.stop.is_set():
                self.step(client, rng)
        finally:
            with self._lock:
                self.outcomes.update(client.outcomes)
            client.close()

    def at(self, seconds: float) -> None:
        time.sleep(max(0.0, self.began + seconds - time.monotonic()))

    def __enter__(self) -> Load:
        self.began = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)


def check_it_carries_on(server: LiveServer, worker: TimerWorker, workers_before: set[int],
                        auth: tuple[str, str], tally: Tally, after: str) -> int:
    """After a fault (`after`, in words): the same processes carry on (no gunicorn worker and no
    timer worker was restarted; returns how many were: 0), the timer worker dispatches again
    (a reservation made now starts, runs and expires on time), and the server logged no
    unhandled error."""
    restarted = len(workers_before - children(server.process.pid)) + worker.started - 1
    assert restarted == 0 and worker.running
    client = Negotiator(server.url, auth, tally)
    # 5 s ahead, not 1: on a loaded machine the first request of a fresh client (a password
    # check at background priority) can take over a second, and a start already past is 422.
    assert client.negotiate(proposal("SMALL", 1, whole_seconds_from_now(5), 3, auto_start=True)) == "confirmed"
    rid = next(a.reservation for a in reversed(tally.snapshot()) if a.reply == "REQUEST_SUCCESS")
    wait_for(lambda: (client.get_reservation(rid) or {}).get("state") == "EXPIRED", 30,
             interval=0.5, what=f"the reservation made after {after} to run and expire")
    client.close()
    assert "unhandled error" not in server.log() and "Traceback" not in server.log()
    return restarted


class TimerWorker:
    """`python -m pex.workers` (what `pex worker` runs) as a process of its own, pointed at
    the test's simulator; the test may SIGKILL it and start another, as a supervisor would."""

    def __init__(self, database_url: str, xapi_url: str, tmp_path: Path, **settings: str):
        self.env = {
            **os.environ,
            "PEX_DATABASE_URL": database_url,
            "PEX_CREATE_TABLES": "n",
            "PEX_XEN_URL": xapi_url,
            "PEX_XEN_USERNAME": SIM_USER,
            "PEX_XEN_PASSWORD": SIM_PASSWORD,
            "PEX_XEN_TIMEOUT_SECONDS": "5",
            "PEX_XEN_TASK_TIMEOUT_SECONDS": "10",
            "PEX_WORKER_TICK_SECONDS": "0.2",
            "PEX_DISPATCH_LEASE_SECONDS": "3",  # a killed worker's claims lapse after 3 s
            "PEX_RESYNC_SECONDS": "2",
            "PEX_WATCH_TIMEOUT_SECONDS": "0.5",
            "PEX_NODE_GRACE_SECONDS": "2",
            "PEX_LOG_LEVEL": "INFO",  # its "worker running" line (INFO) says it is ready
            **settings,
        }
        self.tmp_path = tmp_path
        self.process: subprocess.Popen | None = None
        self.started = 0
        self.kills = 0

    def log_path(self, n: int) -> Path:
        return self.tmp_path / f"worker-{n}.log"

    def start(self) -> TimerWorker:
        self.started += 1
        log = open(self.log_path(self.started), "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pex.workers"], env=self.env, cwd=self.tmp_path,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        path = self.log_path(self.started)
        wait_for(lambda: b"worker running" in path.read_bytes() or self.process.poll() is not None, 30, what="the worker")
        assert self.process.poll() is None, path.read_text()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def logs(self) -> str:
        return "\n".join(self.log_path(n).read_text(errors="replace") for n in range(1, self.started + 1))


class VmWatch:
    """Looks at the simulated pool every `interval` seconds and remembers the most copies of
    one instance's VM it ever saw at once (a VM is PEX's by its tag or by its pex- name)."""

    def __init__(self, simulator, interval: float = 0.1):
        self.simulator = simulator
        self.interval = interval
        self.most: Counter = Counter()
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vm-watch", daemon=True)

    def pex_vms(self) -> list[dict]:
        return [vm for vm in self.simulator.control.state()["vms"] if vm["pex_instance"] or vm["name"].startswith("pex-")]

    def look(self) -> None:
        copies = Counter(vm["name"] for vm in self.pex_vms())
        for name, count in copies.items():
            self.most[name] = max(self.most[name], count)
        self.looks += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.look()

    @property
    def duplicates(self) -> list[str]:
        return sorted(name for name, count in self.most.items() if count > 1)

    def __enter__(self) -> VmWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.look()


# --- the store, read from the test ------------------------------------------------------


@contextmanager
def store(database_url: str):
    """The application over the test's database, to check what it holds."""
    app = build_application(Settings(database_url=database_url, create_tables=False, install_demo_pool=False))
    try:
        yield app
    finally:
        app.close()


def wait_until_all_over(database_url: str, reservations: list[str], watch: VmWatch, seconds: float, what: str) -> None:
    """Until every one of `reservations` has run its course (EXPIRED) and no VM of PEX is left."""
    with store(database_url) as app:
        def all_over() -> bool:
            states = {app.get_reservation(UUID(r)).state for r in reservations}
            return states == {State.EXPIRED} and watch.pex_vms() == []

        wait_for(all_over, seconds, interval=0.5, what=what)


@dataclass
class Dispatches:
    """What the store recorded of the instances of some reservations: each one's events, their
    kinds counted, and the failed dispatches by the start of their error."""

    events: dict[UUID, list]
    recorded: dict[UUID, Counter]
    failures: Counter

    @classmethod
    def of(cls, app, reservations: list[str]) -> Dispatches:
        instance_ids = [i for r in reservations for i in app.get_reservation(UUID(r)).instance_ids]
        events = {i: list(app.events.get(i)) for i in instance_ids}
        recorded = {i: Counter(type(e).__name__ for e in events[i]) for i in instance_ids}
        failures = Counter(e.error.split(":")[0][:60] for i in instance_ids for e in events[i]
                           if type(e).__name__ == "DispatchFailed")
        return cls(events, recorded, failures)

    @property
    def instance_ids(self) -> list[UUID]:
        return list(self.events)

    def twice(self, *kinds: str) -> list[UUID]:
        """The instances with any of these events more than once (a VM made or removed twice)."""
        return [i for i, names in self.recorded.items() if max(names[kind] for kind in kinds) > 1]


def run_audit(database_url: str, cwd: Path) -> tuple[int, dict]:
    """`pex audit --json` as a subprocess against the database; (exit status, report)."""
    env = {**os.environ, "PEX_DATABASE_URL": database_url, "PEX_CREATE_TABLES": "n"}
    result = subprocess.run(
        [sys.executable, "-m", "pex.cli", "audit", "--json"], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=120,
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {"stdout": result.stdout[-2000:], "stderr": result.stderr[-2000:]}
    return result.returncode, report


def audit_figures(report: dict) -> dict:
    return {
        "events": report.get("events"),
        "violations": len(report.get("violations", [])),
        "violated": report.get("violations", []),
        "promises_checked": sorted(report.get("checked", {})),
    }
