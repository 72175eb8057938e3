"""The simulated pool misbehaves while reservations start and end under load: slow XenAPI
calls throughout, failing calls (errors, dropped connections, HTTP 500s, a burst on every
method), and a host that dies while reservations are starting on it and comes back later.

Promises: the timer worker keeps going (the same process, never restarted), every confirmed
reservation still runs its course and ends, no VM is ever made twice, and `pex audit`
passes afterwards."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from uuid import UUID

import pytest

from pex.domain.node import node_id
from pex.domain.values import State
from tests.reliability.clients import Negotiator, Tally, check_acknowledged, proposal, seeded, whole_seconds_from_now
from tests.support.reliability import VmWatch, api_server, audit_figures, run_audit, store, wait_for, write_figures

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.gunicorn, pytest.mark.xen, pytest.mark.timeout(180)]

CLIENTS = 6
LOAD_SECONDS = 13.0
SEED = 3
LOST_HOST = "node2"
# (seconds into the load, fault, keyword arguments for SimulatorControl)
FAULTS = (
    (0.0, "set_latency", {"method": "VM.clone", "seconds": 0.15}),
    (0.0, "set_latency", {"method": "VM.start_on", "seconds": 0.1}),
    (0.0, "set_latency", {"method": "VM.hard_shutdown", "seconds": 0.1}),
    (2.0, "fail_next", {"method": "VM.start_on", "error": ["INTERNAL_ERROR", "injected"], "times": 3}),
    (2.0, "fail_next", {"method": "VM.provision", "error": ["SR_BACKEND_FAILURE_44", "", "injected"], "times": 2}),
    (2.0, "drop_connection", {"method": "VM.clone", "times": 2}),
    (2.0, "http_error", {"method": "VM.destroy", "times": 2}),
    (4.0, "fail_host", {"host": LOST_HOST}),
    (9.0, "recover_host", {"host": LOST_HOST}),
    (11.0, "fail_next", {"method": "*", "error": ["INTERNAL_ERROR", "injected burst"], "times": 6}),
)


def starts_soon(offer: dict, within: float = 10.0) -> bool:
    return parsedate_to_datetime(offer["startTime"]) <= datetime.now(UTC) + timedelta(seconds=within)


def test_the_worker_rides_out_xen_faults_under_load_and_the_audit_passes(
        postgres_url, simulator, make_timer_worker, tmp_path):
    tally = Tally()
    stop = threading.Event()
    injected: list[str] = []
    with api_server(postgres_url, tmp_path, workers=3) as server, VmWatch(simulator) as watch:
        worker = make_timer_worker(postgres_url, simulator.url).start()
        users = [server.register(f"user{n}") for n in range(CLIENTS)]
        outcomes: Counter = Counter()

        def load(auth) -> None:
            rng = seeded(auth[0], SEED)
            client = Negotiator(server.url, auth, tally, give_up=stop)
            try:
                while not stop.is_set():
                    start = whole_seconds_from_now(rng.uniform(2, 5))
                    body = proposal(rng.choice(("SMALL", "SMALL", "MEDIUM")), rng.randint(1, 2), start,
                                    rng.randint(4, 8), auto_start=True)
                    client.negotiate(body, take_counter=starts_soon)
                    client.send("GET", "/OpenPEX/instances", "GET instances")
                    time.sleep(0.1)
            finally:
                outcomes.update(client.outcomes)
                client.close()

        threads = [threading.Thread(target=load, args=(auth,), name=f"load-{auth[0]}") for auth in users]
        began = time.monotonic()
        try:
            for thread in threads:
                thread.start()
            for at, fault, arguments in FAULTS:
                time.sleep(max(0.0, began + at - time.monotonic()))
                getattr(simulator.control, fault)(**arguments)
                injected.append(f"{at:g} s: {fault} {arguments}")
            time.sleep(max(0.0, began + LOAD_SECONDS - time.monotonic()))
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
            simulator.control.clear_faults()

        confirmed = tally.confirmed()
        assert confirmed, "no reservation was confirmed under load"
        with store(postgres_url) as app:
            def all_over() -> bool:
                states = {app.get_reservation(UUID(r)).state for r in confirmed}
                return states == {State.EXPIRED} and watch.pex_vms() == []

            wait_for(all_over, 90, interval=0.5, what="every reservation to run its course and end")
        assert worker.running and worker.started == 1  # rode it out: never restarted
        assert "Traceback" not in server.log()

    answers = tally.snapshot()
    status, report = run_audit(postgres_url, tmp_path)
    with store(postgres_url) as app:
        acknowledged, unacknowledged = check_acknowledged(app, answers)
        instance_ids = [i for r in confirmed for i in app.get_reservation(UUID(r)).instance_ids]
        events = {i: list(app.events.get(i)) for i in instance_ids}
        node_events = Counter(type(e).__name__ for e in app.events.get(node_id(LOST_HOST)))
    recorded = {i: Counter(type(e).__name__ for e in events[i]) for i in instance_ids}
    failures = Counter(e.error.split(":")[0][:60] for i in instance_ids for e in events[i]
                       if type(e).__name__ == "DispatchFailed")
    twice = [i for i, names in recorded.items() if max(names["Provisioned"], names["Destroyed"]) > 1]

    write_figures("xen_faults", {
        "clients": CLIENTS, "load_seconds": LOAD_SECONDS, "faults": injected,
        "requests": len(answers), "statuses": dict(tally.statuses()), "problems": dict(tally.problems()),
        "server_errors_not_503": len(tally.server_errors(allowed=(503,))),
        "outcomes": dict(outcomes), "confirmed": len(confirmed),
        "acknowledgements_checked": acknowledged, "acknowledgements_not_in_store": len(unacknowledged),
        "instances": len(instance_ids), "instances_ran": sum(bool(n["Provisioned"]) for n in recorded.values()),
        "instances_lost": sum(bool(n["Lost"]) for n in recorded.values()),
        "instances_moved": sum(bool(n["Moved"]) for n in recorded.values()),
        "instances_stranded": sum(bool(n["Stranded"]) for n in recorded.values()),
        "lost_node_events": dict(node_events),
        "dispatch_failures": dict(failures), "timer_worker_restarts": worker.started - 1,
        "vm_watch_looks": watch.looks, "duplicate_vms": len(watch.duplicates),
        "instances_provisioned_or_destroyed_twice": len(twice),
        "audit_exit_status": status, "audit": audit_figures(report),
    })
    assert unacknowledged == [], unacknowledged[:5]
    assert tally.server_errors(allowed=(503,)) == [], tally.server_errors(allowed=(503,))[:5]
    assert watch.duplicates == [] and twice == []
    assert failures, "the injected faults reached no dispatch"
    assert status == 0 and report["ok"], report.get("violations")
