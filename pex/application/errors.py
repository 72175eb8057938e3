"""The service layer's own errors: what a command or query refuses besides the domain's
errors (pex.domain.errors), which it lets through."""

from __future__ import annotations


class NotFound(Exception):
    """No such reservation, instance or node (or not the caller's)."""


class VersionConflict(Exception):
    """The caller acted on a version of the reservation that is no longer the current one
    (HTTP If-Match); checked on the version the command saves against, so it is atomic."""

    def __init__(self, expected: int, actual: int):
        self.expected, self.actual = expected, actual
        super().__init__(f"expected version {expected}, the reservation is at version {actual}")


class Contention(Exception):
    """Too many concurrent writers on the same aggregates; the caller may retry later."""


class ProposalInProgress(Exception):
    """A proposal with this reservation id (an idempotency key) is still being answered."""


class ProposalReused(Exception):
    """A reservation id (an idempotency key) already made for another proposal."""


class InvalidQuery(Exception):
    """A query's parameter is out of the range the service allows (`field` names it, `detail` says why)."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}: {detail}")
