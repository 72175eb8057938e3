"""How PEX's value types are stored inside events and snapshots (JSON, via eventsourcing).

Each value type is stored as a dict of its fields under a stable name. The names are part of
the stored schema: never rename one (docs/events.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from pex.domain.node import NodeAllocation
from pex.domain.reservation import Step
from pex.domain.values import Allocation, Offer, Resources, Size, Terms


class DataclassAsDict(Transcoding):
    def __init__(self, cls: type, name: str, tuple_fields: tuple[str, ...] = ()):
        self.type, self.name, self.tuple_fields = cls, name, tuple_fields

    def encode(self, obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}

    def decode(self, data: dict[str, Any]) -> Any:
        for name in self.tuple_fields:
            if name in data:
                data[name] = tuple(data[name])
        return self.type(**data)


def register_pex_transcodings(transcoder: JSONTranscoder) -> None:
    for transcoding in (
        DataclassAsDict(Resources, "pex_resources"),
        DataclassAsDict(Size, "pex_size"),
        DataclassAsDict(Terms, "pex_terms"),
        DataclassAsDict(Allocation, "pex_allocation"),
        DataclassAsDict(Offer, "pex_offer", ("placement", "changes")),
        DataclassAsDict(NodeAllocation, "pex_node_allocation"),
        DataclassAsDict(Step, "pex_step"),
    ):
        transcoder.register(transcoding)
