"""Quotas: the provider's limits on what one user may take, so that one account cannot take
the whole pool for a year, or keep every node on hold with offers it never confirms.

Four limits, each named as the API and the problem details name it:

duration     the longest reservation (default 14 days). A longer proposal is answered with a
             COUNTER whose duration is cut to the limit: the paper lets the provider replace
             any term of the proposal with one acceptable to it (§3.1), start and price being
             its examples. A flexible proposal whose shortest duration is within the limit
             is ACCEPTed for a duration within it instead.
horizon      how far ahead a reservation may start (default: the negotiation policy's horizon,
             PEX_HORIZON_DAYS, 60 days). A later start is refused, naming the horizon: the
             user asked for a time the provider does not sell yet.
cpu-hours    the CPU-hours one user may have booked or held from now on, over all their
             reservations and offers (default: a quarter of the pool's CPU-hours over the
             next 30 days; 3 600 on the paper's 20-CPU testbed, so the whole pool for an
             hour, or for a week, stays possible). Over it, the COUNTER grants fewer of the
             optional instances; if even the fixed ones do not fit, the proposal is refused.
live-offers  how many offers (ACCEPT or COUNTER, not yet confirmed, declined or lapsed) one
             user may hold at once (default 5). One more is refused until one is confirmed,
             declined or lapses.

Everything here is pure: the user's usage and `now` are arguments; the service layer reads
the usage from its reservation index. The QuotaAccount aggregate makes that reading safe
across processes: every offer is charged to its user's account in the same save as its
holds, so two processes deciding on one user's usage at once write the same version of the
account, and the loser decides again on fresh usage.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from pex.domain.errors import DomainError, InvalidProposal
from pex.domain.values import CopiedByContainers, Terms

DEFAULT_MAX_DURATION = timedelta(days=14)
DEFAULT_MAX_LIVE_OFFERS = 5
# The default CPU-hour quota is this share of the pool's CPU-hours over this window.
POOL_WINDOW = timedelta(days=30)
POOL_SHARE_DIVISOR = 4
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)

# Bounds on what an administrator may set: beyond them a quota no longer limits anything
# the negotiation policy allows (a proposal is at most 366 days, 1000 instances).
MAX_SETTABLE_DAYS = 3660
MAX_SETTABLE_CPU_HOURS = 10**12
MAX_SETTABLE_LIVE_OFFERS = 10**6


class QuotaExceeded(InvalidProposal):
    """A proposal goes over one of the provider's quotas and cannot be countered within it.

    `limit` names the quota ("horizon", "cpu-hours", "live-offers"; see above), `allowed` is
    its value as the API shows it; `field` is the proposal's field that went over ("" when
    no field did: live offers)."""

    def __init__(self, limit: str, allowed: int, field: str, detail: str):
        self.limit, self.allowed = limit, allowed
        super().__init__(field, detail)
        if not field:
            self.args = (detail,)


class TooManyLiveOffers(QuotaExceeded):
    """The user already holds as many live offers as they may: a state to change, not a
    malformed proposal."""


class QuotaError(DomainError):
    """An administrator's quota value is out of range."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}: {detail}")


@dataclass(frozen=True)
class Usage:
    """What one user has from `now` on, their other reservations only (not the one being
    negotiated: its own offer is replaced by the new one)."""

    cpu_seconds: int = 0  # booked or held: CPUs × seconds still to come
    live_offers: int = 0

    @property
    def cpu_hours(self) -> float:
        return self.cpu_seconds / 3600


def cpu_seconds(cpus: int, instances: int, start: datetime, end: datetime, now: datetime) -> int:
    """CPUs × whole seconds of [start, end) that are still to come at `now`."""
    remaining = end - max(start, now)
    return max(0, cpus * instances * (remaining // SECOND))


@dataclass(frozen=True)
class Quotas:
    """The limits in force. A field left at None takes its default, which depends on the pool
    (cpu-hours) or the negotiation policy (horizon)."""

    max_duration: timedelta = DEFAULT_MAX_DURATION
    horizon: timedelta | None = None
    max_cpu_hours: int | None = None
    max_live_offers: int = DEFAULT_MAX_LIVE_OFFERS

    def __post_init__(self) -> None:
        day = timedelta(days=1)
        if not HOUR <= self.max_duration <= MAX_SETTABLE_DAYS * day:
            raise QuotaError("maxDurationHours", f"between 1 hour and {MAX_SETTABLE_DAYS} days")
        if self.horizon is not None and not timedelta(0) <= self.horizon <= MAX_SETTABLE_DAYS * day:
            raise QuotaError("horizonDays", f"between 0 and {MAX_SETTABLE_DAYS} days")
        if self.max_cpu_hours is not None and not 0 <= self.max_cpu_hours <= MAX_SETTABLE_CPU_HOURS:
            raise QuotaError("maxCpuHours", f"between 0 and {MAX_SETTABLE_CPU_HOURS}")
        if not 0 <= self.max_live_offers <= MAX_SETTABLE_LIVE_OFFERS:
            raise QuotaError("maxLiveOffers", f"between 0 and {MAX_SETTABLE_LIVE_OFFERS}")

    def but(self, **changes: object) -> Quotas:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Quotas(**values)

    # --- the values in force -----------------------------------------------------------

    def horizon_in_force(self, policy_horizon: timedelta) -> timedelta:
        return self.horizon if self.horizon is not None else policy_horizon

    def cpu_hours_in_force(self, pool_cpus: int) -> int:
        if self.max_cpu_hours is not None:
            return self.max_cpu_hours
        return pool_cpus * (POOL_WINDOW // HOUR) // POOL_SHARE_DIVISOR

    # --- the checks ----------------------------------------------------------------------

    def check_live_offers(self, usage: Usage) -> None:
        if usage.live_offers >= self.max_live_offers:
            raise TooManyLiveOffers(
                "live-offers", self.max_live_offers, "",
                f"you hold {usage.live_offers} live offers, the most one user may; confirm or decline one, "
                "or wait for one to lapse",
            )

    def check_horizon(self, terms: Terms, at: datetime, policy_horizon: timedelta) -> None:
        horizon = self.horizon_in_force(policy_horizon)
        if terms.start > at + horizon:
            raise QuotaExceeded(
                "horizon", horizon.days, "startTime", f"reservations open at most {_span(horizon)} ahead",
            )

    def limit(
        self, terms: Terms, cpus: int, usage: Usage, pool_cpus: int, at: datetime, policy_horizon: timedelta
    ) -> Terms:
        """The user's terms cut to fit every quota: the duration to the longest reservation,
        then the optional instances to the CPU-hours left. The terms unchanged when they fit.
        Raises QuotaExceeded when no cut fits (the start beyond the horizon, too many live
        offers, or the fixed instances alone over the CPU-hours left).

        A flexible proposal's shortest duration is cut with the duration; over the CPU-hours,
        its duration is cut (not below its shortest) before its optional instances are, and
        whatever the provider then chooses inside the cut terms is within every quota.

        `cpus` is what one instance of the size takes; the terms start at or after `at`
        (pex.domain.negotiation.check_terms), so a later start offered in a COUNTER costs the
        same CPU-hours as the start asked for."""
        self.check_horizon(terms, at, policy_horizon)
        self.check_live_offers(usage)
        if terms.duration > self.max_duration:
            terms = terms.but(end=terms.start + self.max_duration)
            if terms.min_duration is not None and terms.min_duration > self.max_duration:
                terms = terms.but(min_duration=self.max_duration)
        each = cpu_seconds(cpus, 1, terms.start, terms.end, at)
        if each == 0 or (self.max_cpu_hours is None and pool_cpus == 0):
            return terms  # no CPU asked for; or no node takes reservations, which the negotiation says
        allowed = self.cpu_hours_in_force(pool_cpus)
        left = max(0, allowed * 3600 - usage.cpu_seconds)
        fitting = left // each
        least = max(terms.instances_fixed, 1)
        if fitting < terms.instances and terms.min_duration is not None:
            # A flexible proposal keeps its instances for a shorter duration, if it allows one:
            # all of them, or else only those it needs.
            for instances in (terms.instances, least):
                enough = timedelta(seconds=left // (cpus * instances))
                if terms.min_duration <= enough < terms.duration:
                    return terms.but(end=terms.start + enough, instances_option=instances - terms.instances_fixed)
        if fitting < least:
            raise QuotaExceeded(
                "cpu-hours", allowed, "numInstancesFixed",
                f"{least} instance{'s' * (least != 1)} of {cpus} CPUs for {_span(terms.duration)} take "
                f"{least * each / 3600:g} CPU-hours; you have {usage.cpu_hours:g} booked or held of the "
                f"{allowed} one user may",
            )
        if fitting < terms.instances:
            terms = terms.but(instances_option=fitting - terms.instances_fixed)
        return terms


    def limit_extension(
        self, terms: Terms, asked_end: datetime, cpus: int, usage: Usage, pool_cpus: int, at: datetime
    ) -> tuple[datetime, tuple[str, ...]]:
        """The end asked for an extension of the agreed `terms`, cut to fit every quota (the
        longest reservation, then the CPU-hours left beside the user's other reservations,
        `usage`), with what was cut, in words. Raises QuotaExceeded when no later end fits
        (or the user holds as many live offers as they may)."""
        self.check_live_offers(usage)
        cut: list[str] = []
        end = asked_end
        if end - terms.start > self.max_duration:
            end = terms.start + self.max_duration
            cut.append(f"extended to {_span(self.max_duration)} in all, the longest reservation one user may have")
        if end <= terms.end:
            raise QuotaExceeded(
                "duration", int(self.max_duration // HOUR), "endTime",
                f"a reservation lasts at most {_span(self.max_duration)}; this one already does",
            )
        each = cpu_seconds(cpus, terms.instances, terms.end, terms.end + SECOND, at)  # a second of all of them
        if each == 0 or (self.max_cpu_hours is None and pool_cpus == 0):
            return end, tuple(cut)
        allowed = self.cpu_hours_in_force(pool_cpus)
        own = cpu_seconds(cpus, terms.instances, terms.start, terms.end, at)
        left = max(0, allowed * 3600 - usage.cpu_seconds - own)
        most = terms.end + SECOND * (left // each)
        if most <= terms.end:
            raise QuotaExceeded(
                "cpu-hours", allowed, "endTime",
                f"this reservation and your others take {(usage.cpu_seconds + own) / 3600:g} CPU-hours of the "
                f"{allowed} one user may; none are left to extend it",
            )
        if most < end:
            end = most
            cut.append(f"extended as far as your {allowed} CPU-hours allow")
        return end, tuple(cut)


def _span(span: timedelta) -> str:
    days, rest = divmod(span, timedelta(days=1))
    hours = rest // HOUR
    parts = [f"{days} day{'s' * (days != 1)}"] if days else []
    if hours or not parts:
        parts.append(f"{hours} hour{'s' * (hours != 1)}")
    return " ".join(parts)


def quota_account_id(user_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/pex/quota-accounts/{user_id}")


class QuotaAccount(CopiedByContainers, Aggregate):
    """One user's quota decisions: each offer the provider made them, with what it took and
    what they had before. Its version is what serializes the decisions on one user's usage;
    what a user holds now is read from the reservations (pex.projections.reservations)."""

    class Event(Aggregate.Event):
        at: datetime

    class Opened(Aggregate.Created):
        user_id: str
        at: datetime

    class OfferCharged(Event):
        """An offer for `reservation_id` was made within the quotas: it takes `cpu_seconds`
        (CPUs × seconds from `at` on) beside `usage_cpu_seconds` and `usage_live_offers` of
        the user's other reservations."""

        reservation_id: UUID
        cpu_seconds: int
        usage_cpu_seconds: int
        usage_live_offers: int

        def apply(self, account: QuotaAccount) -> None:
            account.offers_charged += 1

    def __init__(self, user_id: str, at: datetime):
        self.user_id = user_id
        self.offers_charged = 0

    @staticmethod
    def create_id(user_id: str, **_: object) -> UUID:
        return quota_account_id(user_id)

    @classmethod
    def open(cls, user_id: str, at: datetime) -> QuotaAccount:
        return cls._create(cls.Opened, id=quota_account_id(user_id), user_id=user_id, at=at)

    def charge(self, reservation_id: UUID, cpu_seconds_taken: int, usage: Usage, at: datetime) -> None:
        self.trigger_event(
            self.OfferCharged, reservation_id=reservation_id, cpu_seconds=cpu_seconds_taken,
            usage_cpu_seconds=usage.cpu_seconds, usage_live_offers=usage.live_offers, at=at,
        )
