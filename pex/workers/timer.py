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

The actions due at a tick are claimed in batches (pex.workers.dispatch: one save per batch),
all of them before the dispatch threads work through the Xen calls: when a thousand
reservations start at once, every start is claimed within moments of the start, not behind
the Xen calls queued ahead of it (the claims are renewed while they wait).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from pex.application.ports import DispatchJob
from pex.workers.dispatch import CLAIM_BATCH, Dispatch, chunks
from pex.workers.index import DispatchIndex
from pex.workers.ticking import tick_until_stopped

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
        dispatch: Dispatch,
        node_grace: timedelta = timedelta(seconds=30),
        threads: int = 4,
    ):
        """`app` is a PexApplication; `dispatch` claims what instances need now and carries it
        out (pex.workers.dispatch.Dispatch: claim, enactment, record) on `threads` threads at
        once (PEX_WORKER_THREADS); `node_grace` is how long a
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
                report.dispatched += self._dispatch_all(batch)
            self.index.follow(self.app)
        for rid in self.index.to_expire(now):
            report.expired += bool(self.app.expire_reservation(rid))
        if not report.idle:
            log.info("tick: %s", report)
        return report

    def _dispatch_all(self, instance_ids: list[UUID]) -> list[str]:
        """Claim the instances' actions, batch by batch, then have the threads carry them out;
        what was done, once all is. Every claim comes first: claiming is a few reads and a
        write per batch, and the threads, busy with Xen's calls, would only slow it down."""
        jobs: list[DispatchJob] = []
        for batch in chunks(instance_ids, CLAIM_BATCH):
            try:
                jobs += self.dispatch.claim(batch)
            except Exception:
                # The store failing, or a race lost too often: the next tick claims them again.
                log.exception("could not claim %d instance(s)", len(batch))
        futures: list[Future[str | None]] = []
        for job in jobs:
            future = self._pool.submit(self._carry_out, job)
            future.add_done_callback(partial(self._dropped, job))
            futures.append(future)
        return [r for r in (f.result() for f in futures) if r is not None]

    def _carry_out(self, job: DispatchJob) -> str | None:
        try:
            return self.dispatch.carry_out(job)
        except Exception:
            # The dispatch records the enactment's failures itself; this is the store failing.
            log.exception("could not dispatch instance %s", job.instance_id)
            return None

    def _dropped(self, job: DispatchJob, future: Future[str | None]) -> None:
        if future.cancelled():  # the worker is closing: the claim lapses
            self.dispatch.drop(job)

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Tick every `interval` seconds until `stop` is set; a failing tick is logged and the
        next one tries again (the store may be briefly unreachable)."""
        tick_until_stopped(self.tick, stop, interval, "timer")

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
