"""The timer worker's lag: many reservations start at the same instant; how long after that
instant does each VM's start request reach the pool, and when is it running?

PEX: confirmed auto-start reservations on a 40-host simulated pool (the XAPI simulator driven
through the real XenAPI client), a TimerWorker ticking every 0.2 s with its 4 dispatch threads.
Baseline, same run, same simulator: the same VMs created and started by calling the dispatcher
directly from 4 threads at that instant, with no PEX bookkeeping (no claims, no events). The
lag PEX adds is the difference.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from bench.common import Section, median, percentile
from pex.adapters.xen.dispatcher import XenDispatcher
from pex.adapters.xen.enactment import XenEnactment
from pex.adapters.xen.simulator import run_simulator
from pex.bootstrap import build_application
from pex.domain.instance import Instance
from pex.domain.values import Reply, Resources, Terms
from pex.settings import Settings
from pex.workers.dispatch import Dispatch
from pex.workers.timer import TimerWorker

HOSTS = 40
TEMPLATE = "PEX Debian Etch 4.0 Template"


def run(quick: bool = False) -> Section:
    count = 20 if quick else 40
    section = Section("Timer worker lag", "make bench  (or: .venv/bin/python -m bench worker)")
    with run_simulator(HOSTS, guest_ip_delay=0.05, storage_gb=8192) as sim:
        dispatcher = XenDispatcher(sim.url, "root", "xenroot", timeout=10, task_timeout=30, poll_interval=0.01)
        app = build_application(Settings(database_url="memory:"))
        for i in range(6, HOSTS + 1):
            app.register_node(f"node{i}", Resources(4, 4096, 200))
        app.dispatch_now = dispatch = Dispatch(app, XenEnactment(dispatcher), "bench-worker", timedelta(seconds=60))
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4 + count // 5)
        instance_ids = []
        for _ in range(count):
            rid = app.initiate_reservation("bench")
            terms = Terms("XLARGE", TEMPLATE, 1, 0, start, start + timedelta(hours=1), auto_start=True)
            outcome = app.submit_proposal(rid, terms)
            assert outcome.reply == Reply.ACCEPT, outcome
            confirmed = app.confirm(rid)
            instance_ids.extend(confirmed.reservation.instance_ids)
        timer = TimerWorker(app, dispatch=dispatch, threads=4)
        stop = threading.Event()
        thread = threading.Thread(target=timer.run, args=(stop, 0.2), daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        claims, started = {}, {}
        while time.monotonic() < deadline and len(started) < count:
            time.sleep(0.2)
            for iid in instance_ids:
                if iid in started:
                    continue
                for event in app.events.get(iid):
                    if isinstance(event, Instance.DispatchClaimed) and iid not in claims:
                        claims[iid] = (event.timestamp - start).total_seconds()
                    if isinstance(event, Instance.Started):
                        started[iid] = (event.timestamp - start).total_seconds()
        stop.set()
        thread.join(timeout=30)
        timer.close()

        # Baseline: the same number of VMs, created and started straight through the dispatcher.
        names = [f"baseline-{i}" for i in range(count)]
        hosts = [f"node{(i % HOSTS) + 1}" for i in range(count)]
        for i in range(count):  # free the hosts: PEX's VMs are destroyed first
            dispatcher.destroy(instance_ids[i])
        t0 = time.perf_counter()
        done: list[float] = []

        def create(i: int) -> None:
            dispatcher.create_vm(names[i], names[i], TEMPLATE, hosts[i], 4, 3584, 60)
            done.append(time.perf_counter() - t0)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, range(count)))
        dispatcher.close()
        app.close()

    pex_running = sorted(started.values())
    pex_claims = sorted(claims.values())
    section.lines += [
        f"{count} reservations (one XLARGE each) confirmed with auto-start, all starting at the same instant, on a",
        f"{HOSTS}-host simulated pool; one worker ticking every 0.2 s with 4 dispatch threads. Times are seconds after",
        "the reservations' start.",
        "",
        "| | VMs | first | median | p99 | last |",
        "|---|---:|---:|---:|---:|---:|",
        f"| PEX: start request claimed | {len(pex_claims)} | {pex_claims[0]:.2f} s | {median(pex_claims):.2f} s | {percentile(pex_claims, 99):.2f} s | {pex_claims[-1]:.2f} s |",
        f"| PEX: VM running | {len(pex_running)} | {pex_running[0]:.2f} s | {median(pex_running):.2f} s | {percentile(pex_running, 99):.2f} s | {pex_running[-1]:.2f} s |",
        f"| baseline: dispatcher alone, VM running | {len(done)} | {min(done):.2f} s | {median(done):.2f} s | {percentile(done, 99):.2f} s | {max(done):.2f} s |",
        "",
        f"Every VM of PEX was running {pex_running[-1]:.1f} s after the start instant, against {max(done):.1f} s for the bare "
        f"dispatcher ({pex_running[-1] / max(done):.2f}×): what PEX adds is the tick interval, the claims and the events.",
    ]
    return section
