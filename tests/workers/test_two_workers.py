"""Two workers at once on one store (each its own application, connections and dispatch, on
one pool: here one in-memory enactment): every action is claimed by exactly one of them, so
each VM is made once and removed once."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from pex.adapters.inmemory import InMemoryEnactment
from pex.clock import ManualClock
from pex.domain.instance import Instance
from pex.domain.values import State
from tests.support import T0
from tests.support.world import HOUR


def tick_together(*worlds, rounds: int = 3) -> None:
    """Both workers tick at the same instant, a few times."""
    for _ in range(rounds):
        barrier = threading.Barrier(len(worlds))
        errors: list[BaseException] = []

        def run(world) -> None:
            try:
                barrier.wait()  # noqa: B023 (the threads are joined in this round)
                world.tick()
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)  # noqa: B023 (as above)

        threads = [threading.Thread(target=run, args=(w,)) for w in worlds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors


def event_counts(app, instance_id) -> Counter:
    return Counter(type(e).__name__ for e in app.events.get(instance_id))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pex.sqlite3"
    return request.getfixturevalue("postgres_url")


def test_two_workers_make_and_remove_each_vm_exactly_once(make_memory_world, shared_url):
    clock, pool = ManualClock(T0), InMemoryEnactment()
    one = make_memory_world(database_url=shared_url, worker_id="one", clock=clock, enactment=pool)
    two = make_memory_world(database_url=shared_url, worker_id="two", clock=clock, enactment=pool)
    reservations = [one.reserve(fixed=2), two.reserve(size="MEDIUM", fixed=3), one.reserve(size="XLARGE", fixed=1)]
    instances = [v.id for v in one.instances()]
    assert len(instances) == 6

    clock.advance(HOUR)
    tick_together(one, two)

    vms = one.vms()
    assert sorted(vm["pex_instance"] for vm in vms) == sorted(map(str, instances))  # one each, no duplicate
    assert all(vm["power_state"] == "Running" for vm in vms)
    for iid in instances:
        counts = event_counts(one.app, iid)
        assert (counts["Provisioned"], counts["Started"], counts["DispatchClaimed"]) == (1, 1, 1), counts
    claimed_by = Counter(e.worker for iid in instances for e in one.app.events.get(iid) if isinstance(e, Instance.DispatchClaimed))
    assert sum(claimed_by.values()) == 6
    assert sorted(action for action, _ in pool.actions) == ["start"] * 6  # each carried out once

    clock.advance(2 * HOUR)
    tick_together(one, two)
    assert one.vms() == []
    for iid in instances:
        assert event_counts(one.app, iid)["Destroyed"] == 1
    for rid in reservations:
        assert one.app.get_reservation(rid).state == State.EXPIRED
        assert [type(e).__name__ for e in one.app.reservation_events(rid)].count("Expired") == 1
