"""The timer worker: the paper's Event Queue with delayed events, as a loop around `tick(now)`.

Nothing is scheduled in memory. Every tick follows the event log and asks, for each
instance that is not over, what should be true now (pex.domain.instance.Instance.due_action):
at a confirmed reservation's start (once activated, or at once with auto-start) its VMs are
created and started on their booked nodes; at its end they are shut down and destroyed, and
the reservation is marked EXPIRED; lapsed offers are expired; the instances of a node lost
for longer than the grace period are re-placed by the Scheduler; what has to leave a drained
node is re-placed, and its running VMs live-migrated (the dispatch action `migrate`). A start that comes late,
because no worker ran, happens at the first tick while the reservation is still live.

`tick` is safe to run twice, and in several processes at once: every action is claimed on
its Instance (an event with a lease), so exactly one worker carries it out; a worker killed
at any point leaves at most a claim that lapses, and the action is done again, idempotently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pex.workers.index import DispatchIndex

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    """What one tick did (for logs and tests)."""

    offers_expired: int = 0
    moved: int = 0
    stranded: int = 0
    dispatched: list[str] = field(default_factory=list)
    expired: int = 0

    @property
    def idle(self) -> bool:
        return not (self.offers_expired or self.moved or self.stranded or self.dispatched or self.expired)


class TimerWorker:
    def __init__(
        self,
        app: Any,
        index: DispatchIndex | None = None,
        *,
        dispatch: Callable[[UUID], str | None],
        node_grace: timedelta = timedelta(seconds=30),
        threads: int = 4,
    ):
        """`app` is a PexApplication; `dispatch` carries out what one instance needs now
        (pex.workers.dispatch.Dispatch: claim, enactment, record); `node_grace` is how long a
        node must stay lost before its instances are re-placed (a blip should not move VMs)."""
        self.app = app
        self.dispatch = dispatch
        self.index = index or DispatchIndex()
        self.node_grace = node_grace
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="dispatch")

    def tick(self, now: datetime | None = None) -> TickReport:
        now = now or self.app.clock()
        report = TickReport()
        self.index.follow(self.app)
        report.offers_expired = self.app.expire_offers()
        displaced = self.index.displaced(now, self.node_grace)
        if displaced:
            report.moved, report.stranded = self.app.replace_instances(displaced)
            self.index.follow(self.app)
        drained = self.index.undecided_drains(now)
        if drained:  # what must leave a drained node and has no way out yet (pex.application.drain)
            report.moved += sum(len(self.app.move_off(name)) for name in drained)
            self.index.follow(self.app)
        due = self.index.due(now)
        if due:
            # What frees a host goes first: after a backlog, the next reservation's VM must not
            # reach Xen before the previous one on the same host is gone (Xen would refuse it).
            # Preparing VMs for later starts comes last: it must not hold up one that is due now.
            freeing = [iid for iid, action in due if action not in ("start", "prepare")]
            starting = [iid for iid, action in due if action == "start"]
            preparing = [iid for iid, action in due if action == "prepare"]
            for batch in (freeing, starting, preparing):
                results = self._pool.map(self._dispatch, batch)
                report.dispatched += [r for r in results if r is not None]
            self.index.follow(self.app)
        for rid in self.index.to_expire(now):
            report.expired += bool(self.app.expire_reservation(rid))
        if not report.idle:
            log.info("tick: %s", report)
        return report

    def _dispatch(self, instance_id: Any) -> str | None:
        try:
            return self.dispatch(instance_id)
        except Exception:
            # The dispatch records the enactment's failures itself; this is the store failing.
            log.exception("could not dispatch instance %s", instance_id)
            return None

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Tick every `interval` seconds until `stop` is set; a failing tick is logged and the
        next one tries again (the store may be briefly unreachable)."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                if stop.is_set():
                    return
                log.exception("timer tick failed")
            stop.wait(interval)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
