"""session.* beyond login (which the pool handles before any session exists)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pex.adapters.xen.simulator.pool import SimulatedPool


class SessionCalls:
    xapi_class = "session"
    async_calls = False

    def __init__(self, pool: SimulatedPool):
        self.pool = pool

    def logout(self, session: str) -> None:
        self.pool.sessions.pop(session, None)

    def get_this_host(self, session: str, self_: str) -> str:
        return self.pool.master
