"""Where a reservation stands for the person who made it: its phase.

The protocol's states (State: CONFIRMED, ACTIVATED, ...) say where the negotiation is; they do
not say whether anything runs. A confirmed reservation with auto-start runs at its start
without ever being ACTIVATED, and an ACTIVATED one may not have started yet. The phase is
what a user asks: is it booked, starting, running, over, did it fail? It is worked out from
the state, the agreed terms, the reservation's instances and the time, all passed in: the
API's PEX form (`phase`), the portal and the CLI all show this one function's answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import Enum

from pex.domain.values import State


class Phase(str, Enum):  # noqa: UP042 (as State)
    """A reservation's phase; the value is what the API's PEX form writes."""

    NEGOTIATING = "negotiating"  # no answer from the provider yet
    OFFERED = "offered"  # an offer waits for the user's answer
    NOT_AGREED = "not-agreed"  # the provider refused, or the user walked away
    LAPSED = "lapsed"  # the offer lapsed unconfirmed
    AWAITING_ACTIVATION = "awaiting-activation"  # booked without auto-start: runs only once activated
    BOOKED = "booked"  # booked, and it will start by itself at its start
    STARTING = "starting"  # inside its interval, its VMs are being created
    RUNNING = "running"  # inside its interval, its VMs are up
    STOPPED = "stopped"  # inside its interval, every VM stopped by the user
    FAILED = "failed"  # inside its interval, no VM could be placed or its node is lost
    ENDING = "ending"  # over (or deleted), its VMs are being shut down
    ENDED = "ended"  # over, nothing runs any more
    DELETED = "deleted"  # deleted before it ran (or ended by an administrator)


# What a person reads for each phase: the portal's and the CLI's words.
PHASE_WORDS: dict[Phase, str] = {
    Phase.NEGOTIATING: "Being negotiated",
    Phase.OFFERED: "An offer waits for your answer",
    Phase.NOT_AGREED: "Not agreed",
    Phase.LAPSED: "The offer lapsed",
    Phase.AWAITING_ACTIVATION: "Booked: activate it, or nothing starts",
    Phase.BOOKED: "Booked: starts by itself",
    Phase.STARTING: "Starting",
    Phase.RUNNING: "Running",
    Phase.STOPPED: "Stopped (every VM)",
    Phase.FAILED: "Failed: no VM runs",
    Phase.ENDING: "Ending",
    Phase.ENDED: "Ended",
    Phase.DELETED: "Deleted",
}

# Instance statuses (pex.domain.instance.Status values) by what they mean here.
_GONE = frozenset({"ENDED", "DELETED", "CANCELLED"})
# A FAILED instance never ran (its starts kept failing; they are retried until its end).
_BROKEN = frozenset({"STRANDED", "LOST", "FAILED"})
_WAITING = frozenset({"SCHEDULED"})
_STOPPED = frozenset({"HALTED"})


def runs_by_itself(state: State, auto_start: bool) -> bool:
    """Whether the reservation's VMs start at its start with no activation: activated, or
    confirmed with auto-start. Such a reservation needs (and shows) no Activate."""
    return state == State.ACTIVATED or (state == State.CONFIRMED and auto_start)


def phase_of(
    state: State, auto_start: bool, start: datetime | None, end: datetime | None, now: datetime,
    instance_statuses: Iterable[str] = (),
) -> Phase:
    """The reservation's phase at `now`, from its protocol state, its agreed interval and
    auto-start, and the statuses of its instances (none before it is confirmed)."""
    statuses = [str(s) for s in instance_statuses]
    still_up = [s for s in statuses if s not in _GONE and s not in _WAITING and s != "STRANDED"]
    if state in (State.INITIATED, State.SUBMITTED):
        return Phase.NEGOTIATING
    if state in (State.ACCEPTED, State.COUNTERED):
        return Phase.OFFERED
    if state == State.REJECTED:
        return Phase.NOT_AGREED
    if state == State.CANCELLED:
        return Phase.ENDING if still_up else Phase.DELETED
    if state == State.EXPIRED and not statuses:
        return Phase.LAPSED
    assert start is not None and end is not None  # confirmed: the agreed terms
    if state == State.EXPIRED or now >= end:
        return Phase.ENDING if still_up else Phase.ENDED
    if not runs_by_itself(state, auto_start):
        return Phase.AWAITING_ACTIVATION
    if now < start:
        return Phase.BOOKED
    live = [s for s in statuses if s not in _GONE]
    if not live:
        return Phase.ENDED  # every VM deleted by the user
    if all(s in _BROKEN for s in live):
        return Phase.FAILED
    if any(s in _WAITING for s in live):
        return Phase.STARTING
    if all(s in _STOPPED | _BROKEN for s in live):
        return Phase.STOPPED
    return Phase.RUNNING
