"""event.from and event.inject: xapi's change feed over the simulated database.

Tokens are "<db generation>,<message generation>", both zero-padded to 20 digits as xapi's
are. The token "" answers at once with every current object as an "add" (the initial sync).
Otherwise the call blocks until some subscribed object changed after the token, or the
timeout passes, and returns one event per changed object carrying its latest snapshot, and
the generation of the newest of them as the next token (the caller's own token if none).

Generations count from the database the master serves (`pool.token_base`): after the
master changes or xapi restarts (`SimulatorControl.switch_master`, `restart_xapi`), a token
issued before is taken at face value as xapi does, so it names some other moment, usually
one in the future: the call then blocks and answers nothing, and the client that keeps
that token misses every change. Noticing is the client's job (PEX resyncs from "").
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from pex.adapters.xen.simulator.database import CLASSES, Change
from pex.adapters.xen.simulator.wire import ConnectionDropped, Int32, XapiError, as_float

if TYPE_CHECKING:
    from pex.adapters.xen.simulator.pool import SimulatedPool

_TOKEN = re.compile(r"(\d+),(\d+)")
_CLASS_NAMES = {cls.lower(): cls for cls in CLASSES}


def format_token(generation: int) -> str:
    return f"{generation:020d},{0:020d}"


class EventCalls:
    xapi_class = "event"
    async_calls = False

    def __init__(self, pool: SimulatedPool):
        self.pool = pool

    def from_(self, session: str, classes: list, token: str, timeout: object) -> dict:
        subscription = _Subscription.parse(classes)
        parsed = _parse_token(token)
        pool = self.pool
        since = None if parsed is None else parsed + pool.token_base
        deadline = time.monotonic() + as_float(timeout, "timeout")
        lineage = pool.token_base
        while True:
            if pool.token_base != lineage:
                raise ConnectionDropped()
            pool.settle()
            changes = [c for c in pool.db.changes_since(since, subscription.classes) if subscription.matches(c)]
            remaining = deadline - time.monotonic()
            if changes or since is None or pool.stopping or remaining <= 0:
                break
            next_report = pool.seconds_until_next_report()
            pool.waiting_event_calls += 1
            try:
                pool.changed.wait(remaining if next_report is None else min(remaining, max(next_report, 0.01)))
            finally:
                pool.waiting_event_calls -= 1
        events: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for change in changes:
            event: dict[str, Any] = {"id": str(change.generation), "timestamp": f"{pool.clock.now():.6f}",
                     "class": change.cls.lower(), "operation": change.operation, "ref": change.ref}
            if change.operation != "del":
                event["snapshot"] = pool.db.view(change.cls, change.ref)
                counts[change.cls.lower()] = counts.get(change.cls.lower(), 0) + 1
            events.append(event)
        if since is None:
            last = pool.db.generation
        else:
            last = max([since, *(c.generation for c in changes)])
        return {"events": events, "valid_ref_counts": {k: Int32(v) for k, v in counts.items()},
                "token": format_token(last - pool.token_base)}

    def inject(self, session: str, cls: str, ref: str) -> str:
        name = _CLASS_NAMES.get(str(cls).lower())
        if name is None:
            raise XapiError("EVENT_SUBSCRIPTION_PARSE_FAILURE", cls)
        self.pool.db.get(name, ref)
        self.pool.db.touch(ref)
        return format_token(self.pool.db.generation - self.pool.token_base)


class _Subscription:
    """What one event.from call asked for: "*", whole classes ("vm"), or single objects ("vm/<ref>")."""

    def __init__(self, classes: set[str] | None, whole: set[str], refs: set[str]):
        self.classes, self.whole, self.refs = classes, whole, refs

    @classmethod
    def parse(cls, subscriptions: object) -> _Subscription:
        if not isinstance(subscriptions, list):
            raise XapiError("EVENT_SUBSCRIPTION_PARSE_FAILURE", subscriptions)
        classes: set[str] = set()
        whole: set[str] = set()
        refs: set[str] = set()
        for subscription in map(str, subscriptions):
            name, _, ref = subscription.partition("/")
            name = name.lower()
            if name == "*" and not ref:
                return cls(None, set(), set())
            if name not in _CLASS_NAMES:
                raise XapiError("EVENT_SUBSCRIPTION_PARSE_FAILURE", subscription)
            classes.add(name)
            if ref:
                refs.add(ref)
            else:
                whole.add(name)
        return cls(classes, whole, refs)

    def matches(self, change: Change) -> bool:
        return self.classes is None or change.cls.lower() in self.whole or change.ref in self.refs


def _parse_token(token: object) -> int | None:
    if token == "":
        return None
    match = _TOKEN.fullmatch(str(token))
    if not match:
        raise XapiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
    return int(match[1])
