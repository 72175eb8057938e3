"""The worker's dispatch of one instance: claim → carry out through the enactment → record.

The application records the claim (an event with a lease, so two workers never dispatch the
same instance at once) and the outcome; the enactment (pex.application.ports.Enactment: Xen
in production, pex.adapters.inmemory in tests) does the work. While an action runs, a thread
renews the claim, so a slow start on Xen is not taken over by another worker; a worker killed
mid-way leaves a claim that lapses, and the next one repeats the (idempotent) action.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from uuid import UUID

from pex.application import PexApplication
from pex.application.ports import Enactment, EnactmentError
from pex.domain.errors import IllegalMove

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatch:
    """Carries out what instances need now, as `worker_id`, through `enactment`."""

    def __init__(
        self, app: PexApplication, enactment: Enactment, worker_id: str | None = None, lease: timedelta | None = None
    ):
        self.app = app
        self.enactment = enactment
        self.worker_id = worker_id or default_worker_id()
        self.lease = lease if lease is not None else timedelta(minutes=2)

    def __call__(self, instance_id: UUID) -> str | None:
        """Carry out the action the instance needs now, if any and if no other worker has it.
        Returns what was done ("start", "stop failed", ...) or None."""
        job = self.app.claim_dispatch(instance_id, self.worker_id, self.lease)
        if job is None:
            return None
        try:
            with self._renewing_claim(instance_id, job.action):
                enacted = self.enactment.carry_out(job)
        except Exception as error:  # any failure: recorded, retried later with backoff
            if isinstance(error, (EnactmentError, IllegalMove, OSError, TimeoutError)):
                log.warning("dispatch %s of instance %s failed: %s", job.action, instance_id, error)
            else:  # a bug, not the hypervisor: with its traceback
                log.exception("dispatch %s of instance %s failed", job.action, instance_id)
            self.app.record_dispatch_failure(job, f"{type(error).__name__}: {error}", self.worker_id)
            return f"{job.action} failed"
        self.app.record_dispatch(job, enacted, self.worker_id)
        return job.action

    @contextmanager
    def _renewing_claim(self, instance_id: UUID, action: str) -> Iterator[None]:
        stop = threading.Event()
        period = max(self.lease.total_seconds() / 3, 0.05)

        def loop() -> None:
            while not stop.wait(period):
                try:
                    self.app.renew_dispatch(instance_id, self.worker_id, action, self.lease)
                except Exception:
                    log.warning("could not renew the claim on instance %s", instance_id, exc_info=True)

        thread = threading.Thread(target=loop, name=f"lease-{instance_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
