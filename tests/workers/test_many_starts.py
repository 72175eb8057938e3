"""Many starts due at the same instant: every one is claimed before the dispatch threads work
through the enactment, and two workers ticking at once over them dispatch each exactly once."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from pex.adapters.inmemory import InMemoryEnactment
from pex.application.ports import DispatchJob, Enacted
from pex.clock import ManualClock
from pex.domain.instance import Instance
from pex.domain.values import Resources
from tests.support import T0
from tests.support.world import HOUR
from tests.workers.test_two_workers import tick_together

MANY = 120  # SMALL instances: four to a node


class Watched(InMemoryEnactment):
    """The in-memory pool, noting how many instances were claimed when the first action came,
    and any instance whose action began while another for it was under way."""

    def __init__(self, claimed_so_far=None) -> None:
        super().__init__()
        self.claimed_so_far = claimed_so_far
        self.claimed_at_first: int | None = None
        self.under_way: set = set()
        self.overlaps: list = []
        self.watch_lock = threading.Lock()

    def carry_out(self, job: DispatchJob) -> Enacted:
        with self.watch_lock:
            if self.claimed_at_first is None and self.claimed_so_far is not None:
                self.claimed_at_first = self.claimed_so_far()
            if job.instance_id in self.under_way:
                self.overlaps.append(job.instance_id)
            self.under_way.add(job.instance_id)
        try:
            return super().carry_out(job)
        finally:
            with self.watch_lock:
                self.under_way.discard(job.instance_id)


def many_due(world, count: int = MANY) -> list:
    """`count` auto-start SMALL instances, in one reservation, all starting in an hour."""
    for n in range(count // 4):
        world.app.register_node(f"big{n}", Resources(4, 4096, 200))
    world.reserve(fixed=count, auto_start=True, activate=False, start_in=HOUR)
    instances = [v.id for v in world.instances()]
    assert len(instances) == count
    return instances


def claims(app, instance_ids) -> list[Instance.DispatchClaimed]:
    return [e for iid in instance_ids for e in app.events.get(iid) if isinstance(e, Instance.DispatchClaimed)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pex.sqlite3"
    return request.getfixturevalue("postgres_url")


def test_every_start_due_at_once_is_claimed_before_the_first_vm_is_made(make_memory_world):
    holder: dict = {}
    pool = Watched(lambda: len(claims(holder["world"].app, holder["instances"])))
    world = holder["world"] = make_memory_world(enactment=pool)
    instances = holder["instances"] = many_due(world)

    world.advance(HOUR)
    report = world.tick()

    assert report.dispatched == ["start"] * MANY
    assert pool.claimed_at_first == MANY  # no claim waited behind the actions of others
    assert all(vm.power_state == "Running" for vm in pool.vms.values()) and len(pool.vms) == MANY
    # The claims were saved a batch at a time: far fewer claim instants than claims.
    assert len({e.at for e in claims(world.app, instances)}) < MANY


def test_two_workers_ticking_at_once_over_many_due_starts_dispatch_each_exactly_once(make_memory_world, shared_url):
    clock, pool = ManualClock(T0), Watched()
    one = make_memory_world(database_url=shared_url, worker_id="one", clock=clock, enactment=pool)
    two = make_memory_world(database_url=shared_url, worker_id="two", clock=clock, enactment=pool)
    instances = many_due(one)

    clock.advance(HOUR)
    tick_together(one, two, rounds=2)

    assert sorted(iid for action, iid in pool.actions) == sorted(instances)  # each carried out once
    assert pool.overlaps == []
    assert sorted(pool.vms) == sorted(instances) and all(vm.power_state == "Running" for vm in pool.vms.values())
    for iid in instances:
        counts = Counter(type(e).__name__ for e in one.app.events.get(iid))
        assert (counts["DispatchClaimed"], counts["Started"]) == (1, 1), counts
    by_worker = Counter(e.worker for e in claims(one.app, instances))
    assert sum(by_worker.values()) == MANY
