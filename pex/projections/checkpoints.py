"""Checkpoints: the state of the in-memory projections that every process keeps (the capacity
timeline and the reservation index of PexApplication, the workers' DispatchIndex), saved in
the read-model store with the notification id each reflects, so that a process that starts
loads it and folds only the tail of the log after it, instead of the log from its beginning.

    checkpoints = Checkpoints(store)
    loaded = checkpoints.load("pex.application", SCHEMA, log)   # (position, state) or None
    checkpoints.save("pex.application", SCHEMA, position, state, log)

Each is the recorded position of its read model in the one follower (pex.projections.follower):
the first time the follower asks the model where it is, the model loads its checkpoint.

A checkpoint is what its writer had folded up to `position`, taken under the writer's lock,
so it is never ahead of what it reflects. It is replaced only by one of a later position, so
any number of processes on any number of hosts may save. A state is plain JSON (the
projections say what they keep: `to_state` and `from_state`), compressed.

Loading falls back to None, and the caller to a fold from the start, whenever the checkpoint
cannot be trusted: none saved, no table for them (the store was never prepared), another
schema of the state (an older PEX), undecodable bytes, or a position this log does not have
(the log was replaced while the checkpoint stayed, or the checkpoint was copied from another
store). Each of these is logged.
"""

from __future__ import annotations

import json
import logging
import zlib
from datetime import UTC, datetime
from typing import Any

from pex.projections.store import Store, StoredCheckpoint

log = logging.getLogger(__name__)


class Checkpoints:
    def __init__(self, store: Store):
        self.store = store

    def load(self, name: str, schema: int, recorder: Any) -> tuple[int, dict[str, Any]] | None:
        """The position and state saved under `name`, if it can be trusted on `recorder`'s log.
        A store that cannot be read raises (a passing outage must not cost a fold of the log)."""
        stored = self.store.read_checkpoint(name)  # a store that fails raises: the caller tries again
        if stored is None:
            return None
        if stored.schema != schema:
            log.warning(
                "checkpoint %s has schema %s, this PEX reads %s: folding the log from the start", name, stored.schema, schema
            )
            return None
        try:
            saved = json.loads(zlib.decompress(stored.state))
            mark, state = saved["event"], saved["state"]
        except (zlib.error, ValueError, KeyError, TypeError) as error:
            log.warning("checkpoint %s cannot be decoded (%s): folding the log from the start", name, error)
            return None
        if mark != self._mark(stored.position, recorder):
            log.warning(
                "checkpoint %s is at #%s, which is another event in this log, or none: folding the log from the start",
                name, stored.position,
            )  # fmt: skip
            return None
        return stored.position, state

    @staticmethod
    def _mark(position: int, recorder: Any) -> list[Any] | None:
        """What identifies the event at `position` of the log: its aggregate and version."""
        if position == 0:
            return None
        found = recorder.select_notifications(start=position, limit=1)
        if not found or found[0].id != position:
            return ["missing", position]
        return [str(found[0].originator_id), found[0].originator_version]

    def save(self, name: str, schema: int, position: int, state: dict[str, Any], recorder: Any) -> bool:
        """Save `state` as of `position` of `recorder`'s log; False when a checkpoint at or after
        it is stored."""
        saved = {"event": self._mark(position, recorder), "state": state}
        data = zlib.compress(json.dumps(saved, separators=(",", ":")).encode(), 1)
        return self.store.write_checkpoint(StoredCheckpoint(name, schema, position, data, datetime.now(UTC)))

    def close(self) -> None:
        self.store.close()
