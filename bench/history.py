"""A long history, written fast: the log a PEX on the embedded default (the paper's five nodes)
would have after months of use, for the cold-start benchmark (bench/coldstart.py).

Every event is made by the domain's own commands, and the steps of all reservations are
played in the order of their times (a heap of due steps), so the log is one that PEX could
have produced: each reservation negotiated some hours before its start, confirmed, its VM
started, given an address and destroyed at the end, the reservation expired; among them
offers that lapsed, reservations cancelled before they started and proposals rejected. The
last few hundred reservations start in the weeks after `now`: their bookings are what a
decision still has to weigh, everything else is past. Nodes are snapshotted every 50 events,
as PexApplication._save does.

The aggregates are saved in batches of a few thousand events, in one transaction each; that
is what makes it fast (tens of thousands of events a second instead of a few hundred through
the application's commands), and a batch interleaves events of many aggregates as the
commits of concurrent processes would.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from pex.domain.catalogue import DEMO_NODES, TABLE_1_SIZES
from pex.domain.instance import Instance, instance_name
from pex.domain.node import Node, node_id
from pex.domain.reservation import Reservation
from pex.domain.values import Allocation, Offer, Terms

# Bump when the history changes: the cached databases are keyed by it.
VERSION = 2

TEMPLATE = "PEX Debian Etch 4.0 Template"
SMALL = next(s for s in TABLE_1_SIZES if s.name == "SMALL")
LANES_PER_NODE = 4  # four SMALL instances fit a node of the testbed (4 CPUs, 4 GB)
WORKER = "history-worker"
EVENTS_PER_RESERVATION = 13.6  # measured on this mix; used to size a history for a target
BATCH_STEPS = 1000  # about 3,000 events
USERS = 40


@dataclass(order=True)
class Step:
    at: datetime
    seq: int
    kind: str = field(compare=False)
    booking: Any = field(compare=False)


@dataclass
class Booking:
    fate: str  # ran, lapsed, cancelled, rejected, future
    user: str
    node: str
    start: datetime
    end: datetime
    auto_start: bool
    reservation: Reservation | None = None
    instance: Instance | None = None


class History:
    def __init__(self, app: Any, now: datetime, seed: int = 11):
        self.app, self.now, self.rng = app, now, random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self.snapshotted: dict[str, int] = {}
        self.steps: list[Step] = []
        self.seq = 0
        self.dirty: dict[UUID, Any] = {}
        self.pending = 0
        self.written = 0

    def schedule(self, at: datetime, kind: str, booking: Booking) -> None:
        self.seq += 1
        heapq.heappush(self.steps, Step(at, self.seq, kind, booking))

    def plan(self, past: int, future: int) -> None:
        """`past` reservations that are over by `now`, and `future` confirmed ones to come."""
        lanes = [(name, lane) for name, _ in DEMO_NODES for lane in range(LANES_PER_NODE)]
        mean_slot = timedelta(hours=2.5)  # 1-3 hours, then up to an hour free
        begin = self.now - mean_slot * (past / len(lanes)) - timedelta(days=2)
        # The pool was set up before anything was reserved on it.
        self.app.install_demo_pool(at=begin - timedelta(days=30))
        self.nodes = {name: self.app.repository.get(node_id(name)) for name, _ in DEMO_NODES}
        self.snapshotted = {name: node.version // 50 for name, node in self.nodes.items()}
        cursors = {lane: begin + timedelta(minutes=self.rng.randint(0, 120)) for lane in lanes}
        for i in range(past):
            lane = lanes[i % len(lanes)]
            start = cursors[lane]
            end = start + timedelta(hours=self.rng.randint(1, 3))
            cursors[lane] = end + timedelta(minutes=self.rng.randint(0, 60))
            roll = self.rng.random()
            fate = "ran" if roll < 0.85 else "lapsed" if roll < 0.92 else "cancelled" if roll < 0.97 else "rejected"
            self._negotiate_before(Booking(fate, f"user{i % USERS}", lane[0], start, end, self.rng.random() < 0.5))
        later = {lane: self.now + timedelta(days=8, minutes=self.rng.randint(0, 120)) for lane in lanes}
        for i in range(future):
            lane = lanes[i % len(lanes)]
            start = later[lane]
            end = start + timedelta(hours=self.rng.randint(1, 3))
            later[lane] = end + timedelta(minutes=self.rng.randint(0, 60))
            booking = Booking("future", f"user{i % USERS}", lane[0], start, end, True)
            self.schedule(self.now - timedelta(minutes=self.rng.randint(10, 7 * 24 * 60)), "negotiate", booking)

    def _negotiate_before(self, booking: Booking) -> None:
        lead = timedelta(minutes=self.rng.randint(30, 3 * 24 * 60))
        self.schedule(booking.start - lead, "negotiate", booking)

    def play(self) -> int:
        """Play every step due by `now`; the number of events written."""
        while self.steps and self.steps[0].at <= self.now:
            step = heapq.heappop(self.steps)
            getattr(self, f"_{step.kind}")(step.at, step.booking)
            if self.pending >= BATCH_STEPS:
                self.flush()
        self.flush()
        return self.written

    def touch(self, *aggregates: Any) -> None:
        for aggregate in aggregates:
            self.dirty[aggregate.id] = aggregate

    def flush(self) -> None:
        aggregates = [a for a in self.dirty.values() if a.pending_events]
        if aggregates:
            self.written += len(self.app.save(*aggregates))
        self.dirty.clear()
        self.pending = 0
        for name, node in self.nodes.items():
            if node.version // 50 > self.snapshotted[name]:
                self.app.take_snapshot(node.id, version=node.version // 50 * 50)
                self.snapshotted[name] = node.version // 50

    def _count(self, *aggregates: Any) -> None:
        self.touch(*aggregates)
        self.pending += 1

    # --- the steps of one reservation ------------------------------------------------------

    def _negotiate(self, at: datetime, b: Booking) -> None:
        hours = Decimal((b.end - b.start).total_seconds() / 3600)
        terms = Terms(SMALL.name, TEMPLATE, 1, 0, b.start, b.end, (SMALL.hourly_price * hours).quantize(Decimal("0.01")), b.auto_start)
        r = b.reservation = Reservation.initiate(b.user, at, UUID(int=self.rng.getrandbits(128), version=4))
        r.submit(terms, SMALL.resources, at)
        if b.fate == "rejected":
            r.reject("no node has room for the proposal", at)
            self._count(r)
            return
        node = self.nodes[b.node]
        valid_until = at + timedelta(minutes=5)
        node.hold(r.id, b.start, b.end, 1, SMALL.resources, valid_until, at)
        r.accept(Offer(terms, SMALL.resources, (Allocation(b.node, 1),)), valid_until, at)
        self._count(r, node)
        if b.fate == "lapsed":
            self.schedule(valid_until + timedelta(seconds=1), "lapse", b)
        else:
            self.schedule(at + timedelta(seconds=self.rng.randint(5, 240)), "confirm", b)

    def _lapse(self, at: datetime, b: Booking) -> None:
        r, node = b.reservation, self.nodes[b.node]
        r.expire_offer(at)
        node.release(r.id, "offer lapsed", at)
        self._count(r, node)

    def _confirm(self, at: datetime, b: Booking) -> None:
        r, node = b.reservation, self.nodes[b.node]
        i = b.instance = Instance(
            reservation_id=r.id, user_id=r.user_id, index=0, name=instance_name(r.id, 0), size=SMALL.name,
            template=TEMPLATE, per_instance=SMALL.resources, node=b.node, start=b.start, end=b.end, at=at,
        )  # fmt: skip
        node.book(r.id, b.start, b.end, 1, SMALL.resources, at)
        r.confirm((i.id,), at)
        self._count(r, node, i)
        if b.fate == "cancelled":
            self.schedule(min(at + timedelta(minutes=self.rng.randint(1, 600)), b.start - timedelta(minutes=1)), "cancel", b)
        elif b.fate != "future":
            if not b.auto_start:
                self.schedule(b.start - timedelta(minutes=self.rng.randint(1, 20)), "activate", b)
            self.schedule(b.start, "start", b)

    def _cancel(self, at: datetime, b: Booking) -> None:
        r, node, i = b.reservation, self.nodes[b.node], b.instance
        r.cancel("deleted by the user", at)
        node.release(r.id, "deleted by the user", at)
        i.cancel(at)
        self._count(r, node, i)

    def _activate(self, at: datetime, b: Booking) -> None:
        b.reservation.activate(at)
        self._count(b.reservation)

    def _start(self, at: datetime, b: Booking) -> None:
        i = b.instance
        i.claim_dispatch(WORKER, "start", at + timedelta(minutes=5), at)
        i.record_started(WORKER, b.node, str(UUID(int=self.rng.getrandbits(128), version=4)), at + timedelta(seconds=self.rng.randint(20, 50)))
        self._count(i)
        self.schedule(at + timedelta(seconds=self.rng.randint(60, 120)), "address", b)
        self.schedule(b.end, "end", b)

    def _address(self, at: datetime, b: Booking) -> None:
        b.instance.report_ip(f"10.0.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}", at)
        self._count(b.instance)

    def _end(self, at: datetime, b: Booking) -> None:
        i = b.instance
        i.claim_dispatch(WORKER, "end", at + timedelta(minutes=5), at)
        i.record_removed(WORKER, "end", "the reservation is over", at + timedelta(seconds=self.rng.randint(3, 15)))
        self._count(i)
        self.schedule(at + timedelta(seconds=self.rng.randint(20, 60)), "expire", b)

    def _expire(self, at: datetime, b: Booking) -> None:
        b.reservation.expire(at)
        self._count(b.reservation)
        b.reservation = b.instance = None  # done: nothing of it is kept


def write_history(app: Any, events: int, now: datetime, future: int = 400) -> int:
    """About `events` events of history ending at `now` into the app's empty store, beginning with
    the demo pool; `future` of the reservations are still to come. Returns the events written."""
    history = History(app, now)
    past = max(0, round((events - future * 7) / EVENTS_PER_RESERVATION))
    history.plan(past, future if events else 0)
    return history.play()
