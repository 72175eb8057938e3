"""The Instance aggregate: one virtual machine of a confirmed reservation.

Instances are created together with the reservation's Confirmed event, one per granted
instance, each on the node its booking is on. What happens to the VM in the hypervisor is
recorded here by the dispatcher's workers and monitors.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from pex.domain.values import Resources


class Instance(Aggregate):
    """A VM that PEX will create at the reservation's start and destroy at its end."""

    class Event(Aggregate.Event):
        at: datetime

    class Scheduled(Aggregate.Created):
        reservation_id: UUID
        user_id: str
        index: int
        name: str
        size: str
        template: str
        per_instance: Resources
        node: str
        start: datetime
        end: datetime
        at: datetime

    class Cancelled(Event):
        """The reservation was deleted before the instance ran."""

        def apply(self, instance: Instance) -> None:
            instance.status = "CANCELLED"

    def __init__(
        self,
        reservation_id: UUID,
        user_id: str,
        index: int,
        name: str,
        size: str,
        template: str,
        per_instance: Resources,
        node: str,
        start: datetime,
        end: datetime,
        at: datetime,
    ):
        self.reservation_id = reservation_id
        self.user_id = user_id
        self.index = index
        self.name = name
        self.size = size
        self.template = template
        self.per_instance = per_instance
        self.node = node
        self.start = start
        self.end = end
        self.status = "SCHEDULED"

    @staticmethod
    def create_id(reservation_id: UUID, index: int, **_: object) -> UUID:
        return instance_id(reservation_id, index)

    def cancel(self, at: datetime) -> None:
        if self.status == "SCHEDULED":
            self.trigger_event(self.Cancelled, at=at)


def instance_id(reservation_id: UUID, index: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"/pex/reservations/{reservation_id}/instances/{index}")


def instance_name(reservation_id: UUID, index: int) -> str:
    return f"pex-{str(reservation_id)[:8]}-{index}"
