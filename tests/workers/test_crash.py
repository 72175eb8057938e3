"""Workers killed with SIGKILL at random points of dispatch, again and again, two at a time:
the pool still ends consistent. No duplicate or orphaned VM or disk, every start and every
removal recorded exactly once, the reservation expired once.

The workers are real processes (tests/workers/crash_worker.py) on one SQLite store and one
simulated pool; their clock is a file this test moves, so claims of killed workers lapse when
the test says, not after a wall-clock wait. Simulated XAPI calls are slowed down a little so
that the kills land inside creates, starts and destroys."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from pex.adapters.xen.simulator import run_simulator
from pex.bootstrap import build_application
from pex.domain.instance import Instance
from pex.domain.values import Reply, State, Terms
from pex.settings import Settings
from tests.support import T0
from tests.support.waiting import eventually
from tests.support.xen import TEMPLATE
from tests.workers.crash_worker import LEASE, FileClock

pytestmark = [pytest.mark.xen, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SLOW_CALLS = ("VM.clone", "VM.add_to_other_config", "VM.provision", "VM.start_on", "VM.hard_shutdown", "VM.destroy",
              "VDI.destroy", "VM.set_memory_limits")
ROUNDS_STARTING, ROUNDS_ENDING = 3, 2  # two workers killed per round: 10 kills


class Workers:
    def __init__(self, database_url: str, xapi_url: str, clock_file: str, tmp: Path):
        self.args = [database_url, xapi_url, clock_file]
        self.tmp = tmp
        self.count = 0

    def spawn(self, count: int = 1) -> list[subprocess.Popen]:
        """Start `count` workers at once; return when all of them are built (and dispatching)."""
        processes = []
        for _ in range(count):
            self.count += 1
            log = open(self.tmp / f"worker-{self.count}.log", "w")
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tests.workers.crash_worker", *self.args, f"worker-{self.count}"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
            ))
        for process in processes:
            assert process.stdout.readline().strip() == "ready", process.args
        return processes

    def kill_both_at_random_points(self, rng: random.Random) -> list[float]:
        """Start two workers; SIGKILL each at its own random moment of their dispatching."""
        processes = self.spawn(2)
        delays = sorted(rng.uniform(0.02, 0.4) for _ in processes)
        started = time.monotonic()
        for process, delay in zip(processes, delays, strict=True):
            time.sleep(max(0.0, started + delay - time.monotonic()))
            os.kill(process.pid, signal.SIGKILL)
        for process in processes:
            process.wait(10)
            assert process.returncode == -signal.SIGKILL
        return delays

    def finish(self, done) -> None:
        """One worker that is left alone until `done()`, then stopped cleanly."""
        (process,) = self.spawn()
        try:
            eventually(done, timeout=20.0, interval=0.05)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


def test_killed_workers_leave_a_consistent_pool(tmp_path):
    rng = random.Random(int(os.environ.get("PEX_CRASH_SEED", "4")))
    database_url = f"sqlite:///{tmp_path}/pex.sqlite3"
    clock = FileClock(str(tmp_path / "clock"))
    clock.set(T0)
    with run_simulator(hosts=5, guest_ip_delay=0.01, seed=3) as simulator:
        for method in SLOW_CALLS:
            simulator.control.set_latency(method, 0.02)
        app = build_application(Settings(database_url=database_url), clock=clock)
        start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
        reservations = []
        for size, fixed in (("SMALL", 6), ("SMALL", 6), ("MEDIUM", 2)):  # 16 of the pool's 20 CPUs
            rid = app.initiate_reservation("alice")
            assert app.submit_proposal(rid, Terms(size, TEMPLATE, fixed, 0, start, end)).reply == Reply.ACCEPT
            app.confirm(rid)
            app.activate(rid)
            reservations.append(rid)
        instances = [i for rid in reservations for i in app.get_reservation(rid).instance_ids]
        workers = Workers(database_url, simulator.url, str(clock.path), tmp_path)

        def pex_vms() -> list[dict]:
            return [vm for vm in simulator.control.state()["vms"] if vm["pex_instance"] or vm["name"].startswith("pex-")]

        def statuses() -> set[str]:
            return {app.get_instance(i).status for i in instances}

        # --- the start, with kills ------------------------------------------------------
        clock.set(start)
        for _ in range(ROUNDS_STARTING):
            workers.kill_both_at_random_points(rng)
            clock.set(clock() + LEASE + timedelta(seconds=1))  # the killed workers' claims lapse
        workers.finish(lambda: statuses() == {"RUNNING"})

        vms = pex_vms()
        assert sorted(vm["pex_instance"] for vm in vms) == sorted(map(str, instances)), vms  # no orphan, no twin
        assert all(vm["power_state"] == "Running" and not vm["is_a_template"] for vm in vms)
        for iid in instances:
            counts = Counter(type(e).__name__ for e in app.events.get(iid))
            assert (counts["Provisioned"], counts["Started"]) == (1, 1), (iid, counts)
            view = app.get_instance(iid)
            vm = next(vm for vm in vms if vm["pex_instance"] == str(iid))
            assert vm["host"] == view.node

        # --- the end, with kills --------------------------------------------------------
        clock.set(end)
        for _ in range(ROUNDS_ENDING):
            workers.kill_both_at_random_points(rng)
            clock.set(clock() + LEASE + timedelta(seconds=1))
        workers.finish(lambda: all(app.get_reservation(r).state == State.EXPIRED for r in reservations))

        assert pex_vms() == []
        assert simulator.control.state()["vdis"] == 0  # no disk left behind
        for iid in instances:
            events = list(app.events.get(iid))
            names = Counter(type(e).__name__ for e in events)
            assert (names["Provisioned"], names["Started"], names["Destroyed"]) == (1, 1, 1), (iid, names)
            assert app.get_instance(iid).status == "ENDED"
            # Every claim was either carried out or lapsed with its killed worker.
            assert names["DispatchClaimed"] >= 2
            assert all(e.lease_until > e.at for e in events if isinstance(e, Instance.DispatchClaimed))
        for rid in reservations:
            assert [type(e).__name__ for e in app.reservation_events(rid)].count("Expired") == 1
        app.close()
