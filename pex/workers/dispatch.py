"""The worker's dispatch of instances: claim → carry out through the enactment → record.

The application records the claim (an event with a lease, so two workers never dispatch the
same instance at once) and the outcome; the enactment (pex.application.ports.Enactment: Xen
in production, pex.adapters.inmemory in tests) does the work. A worker killed mid-way leaves a
claim that lapses, and the next one repeats the (idempotent) action.

Many instances due at once (a thousand reservations starting at the same instant) are claimed
in batches, each in one atomic save (`claim`), before the first of them reaches the
enactment: a claim does not wait for the Xen calls queued ahead of it. Until its action is
carried out and recorded, each claim is renewed by the dispatch's one ClaimKeeper thread, in
batches too, so neither a queued claim nor a slow start on Xen is taken over by another
worker. An action starts only while its claim is live by the keeper's own record of it: one
that could not be renewed in time may be another worker's by now, and is left to lapse.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import TypeVar
from uuid import UUID

from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from eventsourcing.utils import retry

from pex.application import PexApplication
from pex.application.ports import DispatchJob, Enactment, EnactmentError
from pex.domain.errors import IllegalMove

log = logging.getLogger(__name__)

# How many claims (or renewals) one save records.
CLAIM_BATCH = 50
# What was carried out is recorded even through a store that fails for a few seconds (SQLite
# busy, a PostgreSQL failover): asked again up to 4 times, 0.6 s apart (eventsourcing's retry,
# as its PostgreSQL recorder's own). Given up, the claim lapses after its lease and the job is
# carried out again (the enactment is idempotent).
RECORD_TRIES, RECORD_WAIT = 5, 0.6

T = TypeVar("T")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class ClaimKeeper:
    """The claims one worker holds and has not yet carried out, renewed every third of the
    lease by one thread (which runs only while there are claims to keep)."""

    def __init__(self, app: PexApplication, worker_id: str, lease: timedelta):
        self.app = app
        self.worker_id = worker_id
        self.lease = lease
        self.period = max(lease.total_seconds() / 3, 0.05)
        self._held: dict[UUID, tuple[str, float]] = {}  # instance -> (action, lease end, monotonic)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, jobs: Sequence[DispatchJob], until: float) -> None:
        """Keep these claims, saved with a lease that ends at `until` (time.monotonic)."""
        with self._lock:
            for job in jobs:
                self._held[job.instance_id] = (job.action, until)
            if self._held and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"claims-{self.worker_id}", daemon=True)
                self._thread.start()

    def release(self, instance_id: UUID) -> None:
        """The claim's action is done (its outcome is being recorded), or given up."""
        with self._lock:
            self._held.pop(instance_id, None)

    def live(self, instance_id: UUID) -> bool:
        """Whether the claim is held and its lease, as last saved, has not run out."""
        with self._lock:
            held = self._held.get(instance_id)
        return held is not None and held[1] > time.monotonic()

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _loop(self) -> None:
        while True:
            time.sleep(self.period)
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
                claims = [(iid, action) for iid, (action, _) in self._held.items()]
            for batch in chunks(claims, CLAIM_BATCH):
                self._renew(batch)

    def _renew(self, batch: Sequence[tuple[UUID, str]]) -> None:
        until = time.monotonic() + self.lease.total_seconds()
        try:
            lost = set(self.app.renew_dispatches(batch, self.worker_id, self.lease))
        except Exception:
            log.warning("could not renew %d claim(s)", len(batch), exc_info=True)
            return
        with self._lock:
            for instance_id, action in batch:
                held = self._held.get(instance_id)
                if held is None or held[0] != action:
                    continue  # carried out meanwhile
                if instance_id in lost:
                    del self._held[instance_id]
                    log.warning("lost the claim on %s of instance %s", action, instance_id)
                else:
                    self._held[instance_id] = (action, until)


class Dispatch:
    """Carries out what instances need now, as `worker_id`, through `enactment`."""

    def __init__(
        self, app: PexApplication, enactment: Enactment, worker_id: str | None = None, lease: timedelta | None = None,
        pool: str | None = None,
    ):
        """`pool`: the one pool `enactment` reaches (pex.domain.pool); None when it reaches every node."""
        self.app = app
        self.pool = pool
        self.enactment = enactment
        self.worker_id = worker_id or default_worker_id()
        self.lease = lease if lease is not None else timedelta(minutes=2)
        self.claims = ClaimKeeper(app, self.worker_id, self.lease)

    def __call__(self, instance_id: UUID) -> str | None:
        """Carry out the action the instance needs now, if any and if no other worker has it.
        Returns what was done ("start", "stop failed", ...) or None."""
        if self.pool is not None and self.app.pool_of_instance(instance_id) != self.pool:
            return None  # another pool's: its own workers carry it out
        until = time.monotonic() + self.lease.total_seconds()
        job = self.app.claim_dispatch(instance_id, self.worker_id, self.lease)
        if job is None:
            return None
        self.claims.hold([job], until)
        return self.carry_out(job)

    def claim(self, instance_ids: Sequence[UUID]) -> list[DispatchJob]:
        """Claim what the instances need now, if no other worker has it, in batches of
        CLAIM_BATCH (one save each): the jobs, to `carry_out` each (or `drop` it). The claims
        are renewed until then."""
        jobs: list[DispatchJob] = []
        for batch in chunks(instance_ids, CLAIM_BATCH):
            until = time.monotonic() + self.lease.total_seconds()
            claimed = self.app.claim_dispatches(batch, self.worker_id, self.lease)
            self.claims.hold(claimed, until)
            jobs += claimed
        return jobs

    def drop(self, job: DispatchJob) -> None:
        """Give a claimed job up without carrying it out: its claim lapses."""
        self.claims.release(job.instance_id)

    def carry_out(self, job: DispatchJob) -> str | None:
        """Carry out a claimed job and record its outcome (None: the claim was lost meanwhile)."""
        if not self.claims.live(job.instance_id):
            log.warning("the claim on %s of instance %s lapsed before its turn; left to lapse", job.action, job.instance_id)
            self.claims.release(job.instance_id)
            return None
        try:
            enacted = self.enactment.carry_out(job)
        except Exception as error:  # any failure: recorded, retried later with backoff
            self.claims.release(job.instance_id)
            if isinstance(error, (EnactmentError, IllegalMove, OSError, TimeoutError)):
                log.warning("dispatch %s of instance %s failed: %s", job.action, job.instance_id, error)
            else:  # a bug, not the hypervisor: with its traceback
                log.exception("dispatch %s of instance %s failed", job.action, job.instance_id)
            reason = f"{type(error).__name__}: {error}"
            self._record(lambda: self.app.record_dispatch_failure(job, reason, self.worker_id))
            return f"{job.action} failed"
        except BaseException:
            self.claims.release(job.instance_id)
            raise
        self.claims.release(job.instance_id)
        self._record(lambda: self.app.record_dispatch(job, enacted, self.worker_id))
        return job.action

    @staticmethod
    def _record(record: Callable[[], object]) -> None:
        """Record what the enactment did: the VM is as it left it, whatever the store says
        (see RECORD_TRIES). Unrecorded, a started VM ran unknown to PEX for the claim's lease."""
        retry((StoreOperationalError, StoreInterfaceError), max_attempts=RECORD_TRIES, wait=RECORD_WAIT)(record)()
