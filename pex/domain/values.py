"""Value types shared by the aggregates: resources, sizes, the terms under negotiation, offers.

Everything here is immutable and transcodable, because it travels inside stored events.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Self


# Not StrEnum (UP042): it would change what str() and f-strings make of a member ("Reply.ACCEPT"
# becomes "ACCEPT"), a change of behaviour to make on purpose, not as a lint fix.
class Reply(str, Enum):  # noqa: UP042
    """The wire values of the original implementation's negotiation replies."""

    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    COUNTER = "COUNTER"
    CONFIRM = "CONFIRM"
    CONFIRM_REQUEST = "CONFIRM_REQUEST"
    REQUEST_SUCCESS = "REQUEST_SUCCESS"
    REQUEST_FAILED = "REQUEST_FAILED"


class State(str, Enum):  # noqa: UP042 (as Reply)
    """Reservation states of the original implementation, plus CANCELLED."""

    INITIATED = "INITIATED"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    COUNTERED = "COUNTERED"
    REJECTED = "REJECTED"
    CONFIRMED = "CONFIRMED"
    ACTIVATED = "ACTIVATED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


def time_text(when: datetime) -> str:
    """An instant in the texts PEX writes (offer changes, reasons, errors): `2026-08-17 10:00 UTC`,
    with seconds only when it has some. One form for every text (docs/api.md, "Times and
    prices"); the portal finds these in a text and shows them in the reader's zone."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC" if when.second else "%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, order=True)
class Resources:
    """An amount of the three resources a node has and an instance takes."""

    cpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.memory_mb + other.memory_mb, self.disk_gb + other.disk_gb)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpus - other.cpus, self.memory_mb - other.memory_mb, self.disk_gb - other.disk_gb)

    def __mul__(self, n: int) -> Resources:
        return Resources(self.cpus * n, self.memory_mb * n, self.disk_gb * n)

    def fits_in(self, available: Resources) -> bool:
        return self.cpus <= available.cpus and self.memory_mb <= available.memory_mb and self.disk_gb <= available.disk_gb

    def how_many_fit_in(self, available: Resources) -> int:
        """How many copies of self fit in `available` (a zero resource never limits)."""
        # Written out rather than over a zip: placement asks it for every node of the pool.
        n = available.cpus // self.cpus if self.cpus > 0 else None
        if self.memory_mb > 0:
            m = available.memory_mb // self.memory_mb
            n = m if n is None or m < n else n
        if self.disk_gb > 0:
            d = available.disk_gb // self.disk_gb
            n = d if n is None or d < n else n
        return n if n is not None and n > 0 else 0

    @staticmethod
    def peak(a: Resources, b: Resources) -> Resources:
        """The resource-wise maximum of two amounts."""
        return Resources(max(a.cpus, b.cpus), max(a.memory_mb, b.memory_mb), max(a.disk_gb, b.disk_gb))


@dataclass(frozen=True)
class Size:
    """A VM size of the paper's Table 1, with the price an hour the default pricing charges."""

    name: str
    cpus: int
    memory_mb: int
    disk_gb: int
    hourly_price: Decimal = Decimal("0")

    @property
    def resources(self) -> Resources:
        return Resources(self.cpus, self.memory_mb, self.disk_gb)


@dataclass(frozen=True)
class Terms:
    """What the two sides negotiate over: the paper's proposal (Figure 7), plus a price.

    In a user's proposal `price` is the most the user will pay (or None); in the provider's
    offer it is the price quoted. `instances_option` in an offer is what the provider grants.
    `auto_start`: the VMs start at the start by themselves once confirmed (the paper's
    "started automatically"), the default; False waits for the user's activation.

    A proposal may leave the provider some freedom (issue 14, "flexible proposals"):
    `latest_start`, any start from `start` to it will do; `min_duration`, the duration
    (`end - start`) may be cut down to it. None: the start, or the duration, exactly as
    asked. An offer's terms carry no freedom: they are what the provider chose.
    """

    size: str
    template: str
    instances_fixed: int
    instances_option: int
    start: datetime
    end: datetime
    price: Decimal | None = None
    auto_start: bool = True
    latest_start: datetime | None = None
    min_duration: timedelta | None = None

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def flexible(self) -> bool:
        return self.latest_start is not None or self.min_duration is not None

    @property
    def last_start(self) -> datetime:
        """The latest start the terms allow (`start` itself unless `latest_start` says later)."""
        return self.latest_start if self.latest_start is not None else self.start

    @property
    def shortest(self) -> timedelta:
        """The shortest duration the terms allow (the duration itself unless `min_duration`)."""
        return self.min_duration if self.min_duration is not None else self.duration

    def allows(self, chosen: Terms) -> bool:
        """Whether `chosen` lies inside the freedom of these terms: the same size, template,
        instances and start mode, a start in [start, last_start], a duration in [shortest,
        duration]. The price is not compared (a quote is judged against the asked price apart)."""
        return (
            (chosen.size, chosen.template, chosen.instances_fixed, chosen.instances_option, chosen.auto_start)
            == (self.size, self.template, self.instances_fixed, self.instances_option, self.auto_start)
            and self.start <= chosen.start <= self.last_start
            and self.shortest <= chosen.duration <= self.duration
        )

    def firm(self) -> Terms:
        """These terms without their freedom: as an offer states them."""
        return replace(self, latest_start=None, min_duration=None) if self.flexible else self

    @property
    def instances(self) -> int:
        return self.instances_fixed + self.instances_option

    def but(self, **changes: Any) -> Terms:
        return replace(self, **changes)


@dataclass(frozen=True)
class Allocation:
    """Part of an offer's placement: `instances` instances on the node named `node`."""

    node: str
    instances: int


@dataclass(frozen=True)
class Offer:
    """The provider's terms, where they would run, and what differs from the user's proposal."""

    terms: Terms
    per_instance: Resources
    placement: tuple[Allocation, ...]
    changes: tuple[str, ...] = field(default=())

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(a.node for a in self.placement)


class CopiedByContainers:
    """An aggregate whose every attribute is an immutable value (a frozen dataclass, a tuple,
    a string, a time) or a list, dict or set of them: its deep copy is new containers of the
    same values. The aggregate cache hands every command a copy of what it loads
    (pex.application.core), and on a node with many allocations Python's deepcopy cost more
    than the command itself."""

    def __deepcopy__(self, memo: dict) -> Self:
        copied = object.__new__(type(self))
        copied.__dict__.update(
            {name: value.copy() if isinstance(value, (list, dict, set)) else value for name, value in self.__dict__.items()}
        )
        return copied
