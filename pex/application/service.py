"""The service layer: PexApplication, an eventsourcing Application whose methods are PEX's
commands and queries, grouped by what they serve (pex.application.negotiation, .pool,
.quotas, .instances, .accounts, .queries) on the shared core (pex.application.core).
Everything that changes state goes through here. Only pex.bootstrap builds one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from eventsourcing.utils import Environment

from pex.application.accounts import Accounts
from pex.application.availability import Availability
from pex.application.core import Decisions, Listing
from pex.application.drain import Drains
from pex.application.instances import Instances
from pex.application.negotiation import Negotiation
from pex.application.pool import Pool
from pex.application.queries import Queries
from pex.application.quotas import QuotaCommands
from pex.application.release import EarlyRelease
from pex.clock import system_clock
from pex.domain.negotiation import NegotiationPolicy, Negotiator, evaluate
from pex.domain.pricing import DEFAULT_CURRENCY, FlatRatePricing, PricingPolicy
from pex.projections.capacity import CapacityTimeline
from pex.projections.checkpoints import Checkpoints
from pex.projections.follower import Follower
from pex.projections.reservations import ReservationIndex
from pex.settings import PasswordSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class PexApplication(Negotiation, Pool, QuotaCommands, Drains, Instances, Accounts, Queries, Availability, EarlyRelease):
    """PEX's commands and queries on one event store (see the modules of pex.application)."""

    # Pinned, on this class itself (eventsourcing names every subclass after itself): it
    # names the tables and the env prefix.
    name = "pex"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Callable[[], datetime] = system_clock,
        pricing: PricingPolicy | None = None,
        policy: NegotiationPolicy | None = None,
        negotiator: Negotiator = evaluate,
        currency: str = DEFAULT_CURRENCY,
        passwords: PasswordSettings | None = None,
        credit: bool = False,
    ):
        self._reads = threading.local()  # before anything can save (Core.save reads it)
        super().__init__(env, passwords)
        self.clock = clock
        self.pricing = pricing or FlatRatePricing()
        self.currency = currency  # every price's: the edges show it beside each (PEX_CURRENCY)
        self.credit_enforced = credit  # PEX_CREDIT: confirmations charged to the user's credit
        self.policy = policy or NegotiationPolicy()
        self.negotiator = negotiator  # the provider's strategy; pex.simulation compares others
        self.timeline = CapacityTimeline()
        self.index = ReservationIndex(pending_only=True)
        # The process's one log follower: the commands' models, the listings', and whatever
        # else the process keeps (the workers' dispatch index, the persisted views) follow it.
        self.follower = Follower(self.recorder, self.mapper)
        self.decisions = Decisions(self)
        self._listing = Listing()
        self.follower.register(self.decisions)
        self._checkpoints: Checkpoints | None = None
        self._resumed = False
        self._saved_position = 0
        self._follow_lock = threading.RLock()
        self._follows_begun = 0
        self._placement_lock = threading.Lock()
        self._attempt = threading.local()
        self.repository.current = self._reads_are_current

    def construct_env(self, name: str, env=None) -> Environment:
        """The store's settings as pex.bootstrap gives them, and nothing else: eventsourcing
        would lay the whole process environment beneath them, so that a stray variable could
        change the store without ever passing through pex.settings."""
        given = dict(type(self).env)
        if type(self).is_snapshotting_enabled or type(self).snapshotting_intervals:
            given["IS_SNAPSHOTTING_ENABLED"] = "y"
        given.update(env or {})
        return Environment(name, given)
