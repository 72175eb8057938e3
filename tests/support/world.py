"""A PEX worker process in a test (`World`): application on a manual clock, timer and dispatch,
carried out either by the in-memory enactment (`build_memory_world`: the service layer and the
workers, no Xen) or against a simulated pool driven through the real XenAPI client, with the
monitors (`build_world`: the protocol, and what Xen reports).

The simulator keeps real time (guests report their IP 20 ms after boot); PEX's clock moves
only when a test says, so reservations hours long run in milliseconds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pex.adapters.inmemory import InMemoryEnactment
from pex.adapters.xen.dispatcher import XenDispatcher
from pex.adapters.xen.enactment import XenEnactment
from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain.pool import DEFAULT_POOL, PoolReserve
from pex.domain.values import Reply, Terms
from pex.settings import Settings, WorkerSettings
from pex.workers.dispatch import Dispatch
from pex.workers.index import DispatchIndex
from pex.workers.monitors import Monitors
from pex.workers.timer import TimerWorker
from tests.support import T0
from tests.support.waiting import eventually
from tests.support.xen import TEMPLATE, make_dispatcher

HOUR = timedelta(hours=1)
GUEST_IP_DELAY = 0.02


@dataclass
class World:
    """One PEX worker process, in a test: application, timer, dispatch and its enactment; on a
    simulated pool also the dispatcher and the monitors."""

    app: Any
    clock: ManualClock
    timer: TimerWorker
    dispatch: Dispatch
    enactment: Any  # InMemoryEnactment, or XenEnactment on the simulator
    simulator: Any = None
    dispatcher: XenDispatcher | None = None
    monitors: Monitors | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def control(self):
        return self.simulator.control

    def reserve(
        self,
        size: str = "SMALL",
        fixed: int = 1,
        start_in: timedelta = HOUR,
        hours: float = 2,
        auto_start: bool = False,
        activate: bool = True,
        user: str = "alice",
    ) -> UUID:
        """A confirmed (and by default activated) reservation; its id."""
        start = self.clock() + start_in
        terms = Terms(size, TEMPLATE, fixed, 0, start, start + timedelta(hours=hours), auto_start=auto_start)
        rid = self.app.initiate_reservation(user)
        outcome = self.app.submit_proposal(rid, terms)
        assert outcome.reply == Reply.ACCEPT, outcome
        assert self.app.confirm(rid).reply == Reply.REQUEST_SUCCESS
        if activate:
            self.app.activate(rid)
        return rid

    def advance(self, delta: timedelta) -> datetime:
        return self.clock.advance(delta)

    def tick(self):
        return self.timer.tick()

    def settle(self, polls: int = 30) -> None:
        """Let the monitors record everything Xen has to say, until a poll brings nothing (the
        in-memory enactment has nothing more to say: it reports all at once)."""
        if self.monitors is None:
            return
        for _ in range(polls):
            if not self.monitors.poll():
                return

    def instances(self, rid: UUID | None = None):
        views = self.app.list_instances()
        return sorted((v for v in views if rid is None or v.reservation_id == rid), key=lambda v: v.name)

    def instance(self, rid: UUID, index: int = 0):
        return self.instances(rid)[index]

    def vms(self) -> list[dict]:
        """PEX's VMs in the pool (half-made ones, still templates, included), as the simulator's
        control lists them (name, host, power_state, pex_instance)."""
        if self.simulator is None:
            return [
                {"name": vm.name, "host": vm.node, "power_state": vm.power_state, "pex_instance": str(vm.instance_id)}
                for vm in self.enactment.vms.values()
            ]
        return [vm for vm in self.control.state()["vms"] if vm["pex_instance"] or vm["name"].startswith("pex-")]

    def events(self, instance_id: UUID) -> list[str]:
        return [type(e).__name__ for e in self.app.events.get(instance_id)]

    def wait_for_ips(self, rid: UUID) -> list:
        def ready():
            self.settle()
            views = self.instances(rid)
            return views if all(v.ip_address for v in views) else None

        return eventually(ready)


def build_world(simulator, database_url: str = "memory:", worker_id: str = "w1", clock: ManualClock | None = None,
                node_grace: timedelta = timedelta(0), pool: bool = False,
                reserve: PoolReserve | None = None, pool_name: str = DEFAULT_POOL) -> World:
    """With `pool`, PEX is pointed at the simulator as at PEX_XEN_URL (or as at the pool
    `pool_name` of PEX_POOLS): no demo pool, the pool's hosts synced as nodes (less
    `reserve`), the paper's template offered, and the monitors syncing again whenever a host
    joins, leaves or is enabled or disabled; the timer and the monitors keep to the pool's
    instances."""
    clock = clock or ManualClock(T0)
    worker = WorkerSettings(xen_url=simulator.url, pool=pool_name) if pool else WorkerSettings()
    app = build_application(Settings(database_url=database_url, worker=worker), clock=clock)
    dispatcher = make_dispatcher(simulator.url, pool=pool_name)
    enactment = XenEnactment(dispatcher)
    app.dispatch_now = dispatch = Dispatch(app, enactment, worker_id, timedelta(minutes=2), pool=pool_name)
    sync = None
    if pool:
        def sync() -> None:
            app.sync_pool(enactment.inventory(), reserve, pool_name)

        sync()
        app.register_template(TEMPLATE)
    index = DispatchIndex(pool=pool_name)
    timer = TimerWorker(app, index, dispatch=dispatch, node_grace=node_grace, threads=4)
    watcher = dispatcher.watcher(timeout=0.05, retry_delay=0.01)
    monitors = Monitors(app, watcher, index, guest_timeout=timedelta(minutes=5), resync_interval=0.0, dispatcher=dispatcher,
                        sync_pool=sync, pool=pool_name, unreachable_after=node_grace.total_seconds())
    world = World(app, clock, timer, dispatch, dispatch.enactment, simulator, dispatcher, monitors)
    world.closers += [timer.close, watcher.close, dispatcher.close, app.close]
    return world


def build_memory_world(database_url: str = "memory:", worker_id: str = "w1", clock: ManualClock | None = None,
                       node_grace: timedelta = timedelta(0), enactment: InMemoryEnactment | None = None) -> World:
    """A worker whose enactment is in memory (several worlds may share one, as workers share a pool)."""
    clock = clock or ManualClock(T0)
    app = build_application(Settings(database_url=database_url), clock=clock)
    enactment = enactment if enactment is not None else InMemoryEnactment()
    app.dispatch_now = dispatch = Dispatch(app, enactment, worker_id, timedelta(minutes=2))
    timer = TimerWorker(app, DispatchIndex(), dispatch=dispatch, node_grace=node_grace, threads=4)
    world = World(app, clock, timer, dispatch, enactment)
    world.closers += [timer.close, app.close]
    return world


def closing_worlds(build: Callable[..., World]) -> Iterator[Callable[..., World]]:
    """The body of a fixture that makes worlds with `build` and closes them all after the test."""
    made: list[World] = []

    def make(**options) -> World:
        world = build(**options)
        made.append(world)
        return world

    yield make
    for world in made:
        for close in world.closers:
            close()
