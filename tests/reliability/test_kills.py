"""SIGKILL in the middle of load: gunicorn workers (found as the master's children) and the
timer worker process, each twice, while clients negotiate reservations that start within
seconds and the timer worker creates and destroys their VMs in the simulated pool.

Promises: no acknowledged event is lost (every 2xx a client got is in the store, at the
version and in the state it said), no VM is ever made twice, gunicorn replaces its workers
and clients carry on (they retry what got no answer; nothing answers 5xx but 503), and
`pex audit` passes once every reservation has run and ended. The timer worker is started
again after each kill, as its supervisor would; its claims lapse after 3 s (the lease)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from uuid import UUID

import pytest

from tests.support.clients import Tally, check_acknowledged, vms_starting_soon
from tests.support.reliability import (
    Dispatches,
    Load,
    VmWatch,
    api_server,
    audit_figures,
    children,
    run_audit,
    store,
    wait_for,
    wait_until_all_over,
    write_figures,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.gunicorn, pytest.mark.xen, pytest.mark.timeout(180)]

CLIENTS = 8
LOAD_SECONDS = 13.0
# (seconds into the load, what is killed)
KILLS = ((3.0, "api"), (5.0, "timer"), (8.0, "api"), (10.0, "timer"))
SEED = 11


def taken_over_claims(events: list, killed_marks: set[str]) -> int:
    """How often another worker claimed this instance's dispatch while a killed worker's claim
    (its action cut short, no outcome recorded) still stood on it."""
    instance, count = None, 0
    for event in events:
        before = getattr(instance, "claim", None)
        instance = event.mutate(instance)
        if type(event).__name__ == "DispatchClaimed" and before is not None and before.worker != event.worker:
            count += any(mark in before.worker for mark in killed_marks)
    return count


def test_killed_api_and_timer_workers_lose_no_acknowledged_event_and_make_no_vm_twice(
        postgres_url, simulator, make_timer_worker, tmp_path):
    tally = Tally()
    rng = random.Random(SEED)
    killed: list[dict] = []
    with api_server(postgres_url, tmp_path, workers=3) as server, VmWatch(simulator) as watch:
        worker = make_timer_worker(postgres_url, simulator.url).start()
        users = [server.register(f"user{n}") for n in range(CLIENTS)]
        with Load(server, users, tally, vms_starting_soon(3, 6), SEED) as load:
            for at, what in KILLS:
                load.at(at)
                if what == "api":
                    pid = rng.choice(sorted(children(server.process.pid)))
                    os.kill(pid, signal.SIGKILL)
                    killed.append({"at": at, "what": "gunicorn worker", "pid": pid})
                else:
                    pid = worker.process.pid
                    worker.kill()
                    killed.append({"at": at, "what": "timer worker", "pid": pid})
                    time.sleep(0.5)
                    worker.start()
            load.at(LOAD_SECONDS)
        outcomes = load.outcomes
        last_kill = load.began + KILLS[-1][0]

        # gunicorn replaced the killed workers: three again, none of them a killed one.
        api_pids = {k["pid"] for k in killed if k["what"] == "gunicorn worker"}
        wait_for(lambda: len(children(server.process.pid)) == 3, 30, what="gunicorn to replace its workers")
        assert not children(server.process.pid) & api_pids
        replaced = server.log().count("Booting worker") - 3

        # Every confirmed reservation runs and ends; then no VM of PEX is left in the pool.
        confirmed = tally.confirmed()
        assert confirmed, "no reservation was confirmed under load"
        wait_until_all_over(postgres_url, confirmed, watch, 60, what="every reservation to run and end")
        assert worker.running

    answers = tally.snapshot()
    killed_timers = {f":{k['pid']}:" for k in killed if k["what"] == "timer worker"}
    recovered = [a for a in answers if a.started > last_kill + 2.0]
    status, report = run_audit(postgres_url, tmp_path)
    with store(postgres_url) as app:
        acknowledged, unacknowledged = check_acknowledged(app, answers)
        lost = [r for r in confirmed if "Confirmed" not in {type(e).__name__ for e in app.reservation_events(UUID(r))}]
        dispatches = Dispatches.of(app, confirmed)
    instance_ids, events, recorded, failures = (
        dispatches.instance_ids, dispatches.events, dispatches.recorded, dispatches.failures
    )
    ran = [i for i, names in recorded.items() if names["Provisioned"]]
    taken_over = sum(taken_over_claims(events[i], killed_timers) for i in instance_ids)
    # Why an instance of a confirmed reservation never ran (its reservation lasted 3 to 6 s).
    not_run = Counter(
        "a start failed and its retry came after the end" if recorded[i]["DispatchFailed"]
        else "claimed by a killed timer worker until after the end"
        if any(mark in getattr(e, "worker", "") for e in events[i] for mark in killed_timers)
        else "other"
        for i in instance_ids if not recorded[i]["Provisioned"]
    )
    twice = dispatches.twice("Provisioned", "Started", "Destroyed")

    statuses = tally.statuses()
    write_figures("kills", {
        "clients": CLIENTS, "gunicorn_workers": 3, "load_seconds": LOAD_SECONDS,
        "kills": killed, "gunicorn_workers_replaced": replaced, "timer_workers_started": worker.started,
        "requests": len(answers), "statuses": dict(statuses), "problems": dict(tally.problems()),
        "unanswered_then_retried": sum(a.status is None for a in answers),
        "server_errors_not_503": len(tally.server_errors(allowed=(503,))),
        "requests_after_last_kill": len(recovered),
        "outcomes": dict(outcomes), "confirmed": len(confirmed),
        "acknowledgements_checked": acknowledged, "acknowledgements_not_in_store": len(unacknowledged),
        "lost_confirmations": len(lost),
        "instances": len(instance_ids), "instances_ran": len(ran),
        "instances_not_run": dict(not_run),
        "claims_of_killed_workers_taken_over": taken_over, "dispatch_failures": dict(failures),
        "vm_watch_looks": watch.looks, "most_vms_for_one_instance": max(watch.most.values(), default=0),
        "duplicate_vms": len(watch.duplicates), "instances_provisioned_started_or_destroyed_twice": len(twice),
        "audit_exit_status": status, "audit": audit_figures(report),
    })
    assert unacknowledged == [], unacknowledged[:5]
    assert tally.server_errors(allowed=(503,)) == [], tally.server_errors(allowed=(503,))[:5]
    assert killed and len(killed) == len(KILLS)
    assert recovered and all(a.status is not None and a.status < 500 for a in recovered), \
        [a for a in recovered if a.status is None or a.status >= 500][:5]
    assert lost == []
    assert watch.duplicates == [] and twice == []
    assert status == 0 and report["ok"], report.get("violations")
