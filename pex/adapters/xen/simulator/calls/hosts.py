"""host.*: capacity questions and maintenance mode. Liveness is changed by the control API."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pex.adapters.xen.simulator.pool import SimulatedPool


class HostCalls:
    xapi_class = "host"

    def __init__(self, pool: SimulatedPool):
        self.pool = pool

    def compute_free_memory(self, session: str, host: str) -> int:
        self.pool.db.get("host", host)
        return self.pool.free_memory(host)

    def compute_memory_overhead(self, session: str, host: str) -> int:
        return self.pool.db.get("host", host)["memory_overhead"]

    def disable(self, session: str, host: str) -> None:
        self.pool.db.update("host", host, enabled=False)

    def enable(self, session: str, host: str) -> None:
        self.pool.db.update("host", host, enabled=True)
