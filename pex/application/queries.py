"""Queries on reservations: plain values (pex.application.views), never aggregates."""

from __future__ import annotations

import logging
from typing import Any, TypeVar
from uuid import UUID

from pex.application.core import Core
from pex.application.errors import NotFound
from pex.application.views import ReservationView
from pex.domain.values import State

log = logging.getLogger(__name__)

T = TypeVar("T")

class Queries(Core):
    """Queries on reservations: plain values (pex.application.views), never aggregates."""

    def get_reservation(self, reservation_id: UUID, user_id: str | None = None) -> ReservationView:
        """One reservation; `user_id` restricts it to that user's (others answer NotFound)."""
        reservation = self._reservation(reservation_id)
        if user_id is not None and reservation.user_id != user_id:
            raise NotFound("no such reservation")
        return self._view(reservation)

    def owner_of(self, reservation_id: UUID) -> str:
        """Whose reservation it is: from the commands' index while it is pending or standing, with
        no load (the webhook outbox asks it of every offer and confirmation, mostly to find
        that the user has no webhook), else from the reservation itself; NotFound if none."""
        with self._follow_lock:
            entry = self.index.reservations.get(reservation_id)
        return entry.user_id if entry is not None else self._reservation(reservation_id).user_id

    def list_reservations(self, user_id: str | None = None, state: State | None = None) -> list[ReservationView]:
        """Every reservation (of `user_id`), oldest first. Folds the whole log the first time in a
        process: the API's lists are served from the read models instead."""
        with self._listing.lock:
            self._follow_listing()
            entries = [e for e in self._listing.index.of_user(user_id) if state is None or e.state == state]
        return [self._view(self._reservation(e.id)) for e in entries]

    def reservation_events(self, reservation_id: UUID) -> list[Any]:
        """The stored events of one reservation, oldest first: its history as recorded."""
        self._reservation(reservation_id)
        return list(self.events.get(reservation_id))
