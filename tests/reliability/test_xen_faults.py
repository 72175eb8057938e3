"""The simulated pool misbehaves while reservations start and end under load: slow XenAPI
calls throughout, failing calls (errors, dropped connections, HTTP 500s, a burst on every
method), and a host that dies while reservations are starting on it and comes back later.

Promises: the timer worker keeps going (the same process, never restarted), every confirmed
reservation still runs its course and ends, no VM is ever made twice, and `pex audit`
passes afterwards."""

from __future__ import annotations

from collections import Counter

import pytest

from pex.domain.node import node_id
from tests.support.clients import Tally, check_acknowledged, vms_starting_soon
from tests.support.reliability import (
    Dispatches,
    Load,
    VmWatch,
    api_server,
    audit_figures,
    run_audit,
    store,
    wait_until_all_over,
    write_figures,
)

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


def test_the_worker_rides_out_xen_faults_under_load_and_the_audit_passes(
        postgres_url, simulator, make_timer_worker, tmp_path):
    tally = Tally()
    injected: list[str] = []
    with api_server(postgres_url, tmp_path, workers=3) as server, VmWatch(simulator) as watch:
        worker = make_timer_worker(postgres_url, simulator.url).start()
        users = [server.register(f"user{n}") for n in range(CLIENTS)]
        try:
            with Load(server, users, tally, vms_starting_soon(4, 8), SEED) as load:
                for at, fault, arguments in FAULTS:
                    load.at(at)
                    getattr(simulator.control, fault)(**arguments)
                    injected.append(f"{at:g} s: {fault} {arguments}")
                load.at(LOAD_SECONDS)
        finally:
            simulator.control.clear_faults()
        outcomes = load.outcomes

        confirmed = tally.confirmed()
        assert confirmed, "no reservation was confirmed under load"
        wait_until_all_over(postgres_url, confirmed, watch, 90, what="every reservation to run its course and end")
        assert worker.running and worker.started == 1  # rode it out: never restarted
        assert "Traceback" not in server.log()

    answers = tally.snapshot()
    status, report = run_audit(postgres_url, tmp_path)
    with store(postgres_url) as app:
        acknowledged, unacknowledged = check_acknowledged(app, answers)
        dispatches = Dispatches.of(app, confirmed)
        node_events = Counter(type(e).__name__ for e in app.events.get(node_id(LOST_HOST)))
    instance_ids, recorded, failures = dispatches.instance_ids, dispatches.recorded, dispatches.failures
    twice = dispatches.twice("Provisioned", "Destroyed")

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
