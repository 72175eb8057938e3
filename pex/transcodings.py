"""How PEX's value types are stored inside events and snapshots (JSON, via eventsourcing).

Each value type is stored as a dict of its fields under a stable name. The names are part of
the stored schema: never rename one (docs/events.md).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from pex.domain.node import NodeAllocation
from pex.domain.quotas import Quotas
from pex.domain.reservation import Step
from pex.domain.values import Allocation, Offer, Resources, Size, Terms


class DataclassAsDict(Transcoding):
    """`optional_fields` are left out while None, so that a value without them is stored as
    before they existed (and an older PEX's dict, without them, reads as None)."""

    def __init__(
        self, cls: type, name: str, tuple_fields: tuple[str, ...] = (), optional_fields: tuple[str, ...] = ()
    ):
        self.type, self.name, self.tuple_fields, self.optional_fields = cls, name, tuple_fields, optional_fields

    def encode(self, obj: Any) -> dict[str, Any]:
        return {
            f.name: value
            for f in dataclasses.fields(obj)
            if (value := getattr(obj, f.name)) is not None or f.name not in self.optional_fields
        }

    def decode(self, data: dict[str, Any]) -> Any:
        for name in self.tuple_fields:
            if name in data:
                data[name] = tuple(data[name])
        return self.type(**data)


class QuotasAsDict(Transcoding):
    """Quotas with their spans in whole seconds (None: the default in force)."""

    type, name = Quotas, "pex_quotas"

    def encode(self, obj: Quotas) -> dict[str, Any]:
        return {
            "max_duration_seconds": int(obj.max_duration.total_seconds()),
            "horizon_seconds": None if obj.horizon is None else int(obj.horizon.total_seconds()),
            "max_cpu_hours": obj.max_cpu_hours,
            "max_live_offers": obj.max_live_offers,
        }

    def decode(self, data: dict[str, Any]) -> Quotas:
        horizon = data["horizon_seconds"]
        return Quotas(
            max_duration=timedelta(seconds=data["max_duration_seconds"]),
            horizon=None if horizon is None else timedelta(seconds=horizon),
            max_cpu_hours=data["max_cpu_hours"],
            max_live_offers=data["max_live_offers"],
        )


class TimedeltaAsMicroseconds(Transcoding):
    """A span (a flexible proposal's shortest duration) as whole microseconds."""

    type, name = timedelta, "pex_timedelta"

    def encode(self, obj: timedelta) -> int:
        return obj // timedelta(microseconds=1)

    def decode(self, data: int) -> timedelta:
        return timedelta(microseconds=data)


def register_pex_transcodings(transcoder: JSONTranscoder) -> None:
    for transcoding in (
        DataclassAsDict(Resources, "pex_resources"),
        DataclassAsDict(Size, "pex_size"),
        DataclassAsDict(Terms, "pex_terms", optional_fields=("latest_start", "min_duration")),
        DataclassAsDict(Allocation, "pex_allocation"),
        DataclassAsDict(Offer, "pex_offer", ("placement", "changes")),
        DataclassAsDict(NodeAllocation, "pex_node_allocation"),
        DataclassAsDict(Step, "pex_step"),
        QuotasAsDict(),
        TimedeltaAsMicroseconds(),
    ):
        transcoder.register(transcoding)
