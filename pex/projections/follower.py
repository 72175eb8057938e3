"""The one log follower: it reads the notification log once per batch, decodes each event once,
and hands it to every read model of the process that has not seen it.

    follower = Follower(app.recorder, app.mapper)        # one per process (PexApplication's)
    follower.register(model)                             # anything with position() and fold()
    follower.follow()                                    # every model, to the head of the log
    follower.follow(model)                               # only `model` (and what it needs)

A read model (`ReadModel`) says where it is (`position()`: the last notification id it
folded) and folds a batch (`fold(batch)`: the `Recorded` events after its position, in log
order, then it records the batch's last id as its position). Each keeps its own position
where it belongs: the persisted views (pex.projections.readmodels) in their tracking rows, in
the same transaction as the rows they write; the in-process models (the capacity timeline
and the pending reservation index of the application, the listings' index, the workers'
dispatch index) in memory, saved with their start-up checkpoint (pex.projections.checkpoints).

A batch starts at the lowest position of the models asked to follow, so a model that is
behind (rebuilt, reset, or loaded from no checkpoint because its schema changed) is brought
up from its own position, and the models already past an event are not given it again: the
others are never refolded. A model's position is read afresh for every batch (and the first
read may load its checkpoint), so a model may also move on its own between calls (another
process folded the persisted views, and their tracking rows moved).

Which models follow when is the caller's choice: a command folds only what it decides on
(`follow(decisions)`, cheap: an in-memory apply per event), a query of the persisted views
folds those, the worker's tick folds everything; the events last decoded are kept (up to
KEPT_DECODED), so the models that follow the same events a moment apart, from wherever each
is, decode them once. Thread-safe: each model folds under its own lock (a command waits for
the timeline, never for a transaction of the persisted views), and skips what it has already
seen.

The auditor (pex.projections.audit) does not follow through here, by design: it checks the
read models against a replay of its own, and must not trust what it checks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import Notification

BATCH_SIZE = 1000
# How many decoded events a follower keeps for the models that follow the same events a moment
# apart from another position (a worker's timer, views and outbox each follow on their own).
KEPT_DECODED = 4 * BATCH_SIZE


class ReadModelError(Exception):
    """A read model cannot go on: an event cannot be decoded, or a view was asked for by a wrong name."""


@dataclass(frozen=True)
class Recorded:
    """One event of the log, decoded once, with the notification that carried it."""

    notification: Notification
    event: Any

    @property
    def id(self) -> int:
        return self.notification.id


class ReadModel(Protocol):
    """What the follower feeds: a fold of the log that knows where it is."""

    name: str

    def position(self) -> int:
        """The last notification id folded (0: none)."""
        ...

    def fold(self, batch: Sequence[Recorded]) -> bool:
        """Fold the events of `batch` after its position (under its own lock: it may be folding
        in another thread too), and move its position to the batch's last; False when it could
        not (another process moved it meanwhile), and the follower asks its position again."""
        ...


class Follower:
    def __init__(self, recorder: Any, mapper: Any, batch_size: int = BATCH_SIZE):
        self.recorder = recorder
        self.mapper = mapper  # looked up at every decode: a test may count them
        self.batch_size = batch_size
        self.models: list[ReadModel] = []
        self._lock = threading.Lock()  # of the events decoded
        # The last KEPT_DECODED decoded, by notification id, the first decoded first (an
        # OrderedDict: a dict's first item, after many were deleted before it, is found by a scan).
        self._decoded: OrderedDict[int, Recorded] = OrderedDict()

    def register(self, *models: ReadModel) -> None:
        """Have `follow()` (without arguments) feed `models` too; registering twice is harmless."""
        for model in models:
            if not any(m is model for m in self.models):
                self.models.append(model)

    def follow(self, *models: ReadModel) -> int:
        """Bring `models` (default: every registered one) to the head of the log, a batch at a
        time; return the lowest position they reached."""
        chosen = list(models) if models else list(self.models)
        if not chosen:
            return 0
        while True:
            positions = [m.position() for m in chosen]
            start = min(positions)
            # A model may ask for smaller batches (the persisted views: one transaction each).
            limit = min(getattr(m, "batch_size", self.batch_size) for m in chosen)
            batch = self._read(start, limit)
            if not batch:
                return start
            last = batch[-1].id
            behind = False
            for model, position in zip(chosen, positions, strict=True):
                if position < last and not model.fold(batch):
                    behind = True  # another writer moved it meanwhile: ask it again
            if len(batch) < limit and not behind:
                return last

    def _read(self, start: int, limit: int) -> list[Recorded]:
        notifications = self.recorder.select_notifications(start=start, limit=limit, inclusive_of_start=False)
        with self._lock:
            batch = [self._known(n) or Recorded(n, self._decode(n)) for n in notifications]
            decoded = self._decoded
            for recorded in batch:
                decoded[recorded.id] = recorded
            while len(decoded) > KEPT_DECODED:
                decoded.popitem(last=False)
        return batch

    def _known(self, notification: Notification) -> Recorded | None:
        # Only the very same record: a log rewritten under the process (an operator, a forger
        # the auditor must catch) is decoded afresh.
        known = self._decoded.get(notification.id)
        return known if known is not None and known.notification == notification else None

    def _decode(self, notification: Notification) -> Any:
        try:
            return self.mapper.to_domain_event(notification)
        except Exception as error:
            raise ReadModelError(
                f"the read models stop at event #{notification.id} ({notification.topic}, "
                f"{notification.originator_id} v{notification.originator_version}): it cannot be decoded: {error}"
            ) from error


def after(batch: Sequence[Recorded], position: int) -> list[Recorded]:
    """The events of `batch` a model at `position` has not folded yet."""
    return [r for r in batch if r.id > position]
