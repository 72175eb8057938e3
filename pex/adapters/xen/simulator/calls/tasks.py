"""task.*: reading goes through the generic getters; destroying is explicit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pex.adapters.xen.simulator.pool import SimulatedPool


class TaskCalls:
    xapi_class = "task"
    async_calls = False

    def __init__(self, pool: SimulatedPool):
        self.pool = pool

    def destroy(self, session: str, task: str) -> None:
        self.pool.db.get("task", task)
        self.pool.db.delete("task", task)
