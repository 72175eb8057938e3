"""The timer worker's lag: many reservations start at the same instant; how long after that
instant does each VM's start request reach the pool, and when is it running?

PEX: confirmed auto-start reservations on a 40-host simulated pool (the XAPI simulator driven
through the real XenAPI client), a TimerWorker ticking every 0.2 s with its 4 dispatch threads.
Baseline, same run, same simulator: the same VMs created and started by calling the dispatcher
directly from 4 threads at that instant, with no PEX bookkeeping (no claims, no events). The
lag PEX adds is the difference.

Running at the start (issue 13, item 3), same run: the same reservations on a pool whose clone
and provisioning are slow (SLOW_CALL seconds each), served by a whole worker process (the
timer, and the monitors that see the guests' IP addresses). With preparation on (the default
10-minute lead), the worker makes every VM ahead of the start and only boots it at the start;
with it off, it makes and boots each at the start. How soon after the start is each VM running,
and when has it an IP address? The reservations are made an hour ahead; PEX's clock then moves
into the lead and, once the VMs are made, to a second before the start (the simulator keeps
real time). Every time is read from the events' own `at` (PEX's clock).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import Section, ShiftedClock, percentile, seconds_row
from pex.adapters.xen.dispatcher import XenDispatcher
from pex.adapters.xen.enactment import XenEnactment
from pex.adapters.xen.simulator import run_simulator
from pex.bootstrap import build_application
from pex.domain.instance import Instance
from pex.domain.values import Reply, Resources, Terms
from pex.settings import Settings, WorkerSettings
from pex.workers.dispatch import Dispatch
from pex.workers.index import DispatchIndex
from pex.workers.runner import WorkerProcess
from pex.workers.timer import TimerWorker

HOSTS = 40
TEMPLATE = "PEX Debian Etch 4.0 Template"
SLOW_CALL = 2.0  # seconds each VM.clone and each VM.provision take in the runs at the start
GUEST_BOOT = 0.5  # seconds from a guest's boot to its IP address in them
TICK = 0.2
LEAD = timedelta(minutes=10)  # PEX_PREPARE_LEAD_SECONDS' default


def run(quick: bool = False) -> Section:
    count = 20 if quick else 40
    section = Section("Timer worker lag", "make bench  (or: .venv/bin/python -m bench worker)")
    with run_simulator(HOSTS, guest_ip_delay=0.05, storage_gb=8192) as sim:
        dispatcher = XenDispatcher(sim.url, "root", "xenroot", timeout=10, task_timeout=30, poll_interval=0.01)
        app = build_application(Settings(database_url="memory:"))
        app.prepare_lead = timedelta(0)  # made at the start, like the baseline (preparation: below)
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
        timer = TimerWorker(app, DispatchIndex(prepare_lead=timedelta(0)), dispatch=dispatch, threads=4)
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
            dispatcher.create_vm(names[i], names[i], TEMPLATE, hosts[i], 4, 3584, 60, vm_data={}, fresh=True)
            done.append(time.perf_counter() - t0)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, range(count)))
        dispatcher.close()
        app.close()

    pex_running = sorted(started.values())
    at_the_start = [running_at_the_start(count, LEAD), running_at_the_start(count, timedelta(0))]
    pex_claims = sorted(claims.values())
    section.lines += [
        f"{count} reservations (one XLARGE each) confirmed with auto-start, all starting at the same instant, on a",
        f"{HOSTS}-host simulated pool; one worker ticking every 0.2 s with 4 dispatch threads. Times are seconds after",
        "the reservations' start.",
        "",
        "| | VMs | first | median | p99 | last |",
        "|---|---:|---:|---:|---:|---:|",
        seconds_row("PEX: start request claimed", pex_claims),
        seconds_row("PEX: VM running", pex_running),
        seconds_row("baseline: dispatcher alone, VM running", done),
        "",
        f"Every VM of PEX was running {pex_running[-1]:.1f} s after the start instant, against {max(done):.1f} s for the bare "
        f"dispatcher ({pex_running[-1] / max(done):.2f}×): what PEX adds is the tick interval, the claims and the events.",
    ]
    section.lines += [
        "",
        "### Running at the start: VMs prepared ahead",
        "",
        f"The same {count} reservations on a {HOSTS}-host simulated pool where every VM.clone and every VM.provision takes",
        f"{SLOW_CALL:.0f} s and a guest has its IP address {GUEST_BOOT} s after it boots; a whole worker process (timer every",
        f"{TICK} s with 4 dispatch threads, and the monitors). With preparation on ({LEAD.seconds // 60} minutes, the default), the",
        "worker makes each VM halted on its booked host ahead of the start and boots it at the start; off",
        "(PEX_PREPARE_LEAD_SECONDS=0), it makes and boots it at the start. Seconds after the reservations' start:",
        "",
        "| | VMs | first | median | p99 | last |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in at_the_start:
        section.lines += [seconds_row(f"{run.label}: VM running", run.running),
                          seconds_row(f"{run.label}: running with an IP", run.with_ip)]
    prepared, unprepared = at_the_start
    p99 = percentile(prepared.with_ip, 99) if prepared.with_ip else float("nan")
    section.lines += [
        "",
        f"- Prepared ahead: p99 **{p99:.2f} s** from the start to running with an IP address (target: at most 2 s);",
        f"  making the {count} VMs took {prepared.preparing:.0f} s of the lead, none of it after the start.",
        f"- Made at the start: p99 {percentile(unprepared.with_ip, 99):.2f} s, the slow clone and provisioning queued behind",
        "  each other on the dispatch threads.",
    ]
    return section


@dataclass
class AtTheStart:
    label: str
    running: list[float] = field(default_factory=list)  # seconds after the start
    with_ip: list[float] = field(default_factory=list)
    preparing: float = 0.0  # real seconds the worker took to make every VM ahead


def running_at_the_start(count: int, lead: timedelta) -> AtTheStart:
    """`count` XLARGE reservations starting at one instant, served by a worker process with
    preparation `lead` (0: off) on a pool with slow clones."""
    figures = AtTheStart("prepared ahead" if lead else "made at the start")
    with run_simulator(HOSTS, guest_ip_delay=GUEST_BOOT, storage_gb=8192) as sim:
        sim.control.set_latency("VM.clone", SLOW_CALL)
        sim.control.set_latency("VM.provision", SLOW_CALL)
        dispatcher = XenDispatcher(sim.url, "root", "xenroot", timeout=30, task_timeout=60, poll_interval=0.01)
        clock = ShiftedClock()
        # One set of settings for the application and its worker (the lead is both's).
        settings = Settings(database_url="memory:",
                            worker=WorkerSettings(tick=TICK, threads=4, prepare_lead=lead, resync=3600.0))
        app = build_application(settings, clock)
        for i in range(6, HOSTS + 1):
            app.register_node(f"node{i}", Resources(4, 4096, 200))
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        instance_ids = []
        for _ in range(count):
            rid = app.initiate_reservation("bench")
            outcome = app.submit_proposal(rid, Terms("XLARGE", TEMPLATE, 1, 0, start, start + timedelta(hours=1),
                                                     auto_start=True))
            assert outcome.reply == Reply.ACCEPT, outcome
            instance_ids.extend(app.confirm(rid).reservation.instance_ids)
        dispatch = Dispatch(app, XenEnactment(dispatcher), "bench-worker", timedelta(minutes=2))
        app.dispatch_now = dispatch
        worker = WorkerProcess(app, dispatcher, settings.worker, dispatch)
        index = worker.index
        worker.start()
        try:
            if lead:
                t = time.perf_counter()
                clock.move_to(start - lead / 2)  # well inside the lead: the worker makes the VMs
                wait_for(lambda: all(_made(index.instance(i)) for i in instance_ids), 600)
                figures.preparing = time.perf_counter() - t
            clock.move_to(start - timedelta(seconds=1))
            wait_for(lambda: all(_addressed(index.instance(i)) for i in instance_ids), 600)
            for iid in instance_ids:
                events = list(app.events.get(iid))
                started = [e.at for e in events if isinstance(e, Instance.Started)]
                addressed = [e.at for e in events if isinstance(e, Instance.IpAddressReported)]
                if started:
                    figures.running.append((started[0] - start).total_seconds())
                if addressed:
                    figures.with_ip.append((addressed[0] - start).total_seconds())
        finally:
            worker.stop()  # closes the dispatcher and the application
    return figures


def _made(instance: Any) -> bool:
    return instance is not None and instance.vm_uuid is not None


def _addressed(instance: Any) -> bool:
    return instance is not None and instance.ip_address is not None


def wait_for(done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        time.sleep(0.1)

