"""The workers' settings, read from the environment (PEX_XEN_* and PEX_WORKER_* variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from pex.settings import FALSE, TRUE, SettingsError, env_flag, env_number


@dataclass(frozen=True)
class WorkerSettings:
    # The pool master's XAPI endpoint; None runs an in-process simulated pool (the paper's testbed).
    xen_url: str | None = None
    xen_username: str = "root"
    xen_password: str = ""
    xen_ignore_ssl: bool = False
    xen_timeout: float = 30.0  # one XAPI request
    xen_task_timeout: float = 600.0  # one asynchronous XAPI task (a start, a shutdown)
    worker_id: str | None = None  # default: host:pid:random
    tick: float = 1.0  # seconds between timer ticks
    threads: int = 4  # dispatches running at once
    lease: timedelta = timedelta(minutes=2)  # a dispatch claim, renewed while it runs
    node_grace: timedelta = timedelta(seconds=30)  # a lost node's instances move after this
    guest_timeout: timedelta = timedelta(minutes=5)  # a guest silent this long is unresponsive
    resync: float = 60.0  # seconds between full comparisons of Xen and PEX
    watch_timeout: float = 10.0  # how long one event.from may block
    embedded: str = "auto"  # run a worker inside `pex serve`: auto (when no PEX_XEN_URL), y, n
    simulated_guest_ip_delay: float = 2.0  # the in-process simulator's boot-to-IP delay

    @property
    def simulated(self) -> bool:
        return not self.xen_url

    @property
    def embedded_enabled(self) -> bool:
        return self.embedded == "y" or (self.embedded == "auto" and self.simulated)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            return env_number(env, name, default)

        embedded = (env.get("PEX_EMBEDDED_WORKER") or "auto").lower()
        if embedded in TRUE:
            embedded = "y"
        elif embedded in FALSE:
            embedded = "n"
        elif embedded != "auto":
            raise SettingsError(f"PEX_EMBEDDED_WORKER must be auto, y or n, not {embedded!r}")
        return cls(
            xen_url=env.get("PEX_XEN_URL") or None,
            xen_username=env.get("PEX_XEN_USERNAME") or "root",
            xen_password=env.get("PEX_XEN_PASSWORD", ""),
            xen_ignore_ssl=env_flag(env, "PEX_XEN_IGNORE_SSL", False),
            xen_timeout=number("PEX_XEN_TIMEOUT_SECONDS", 30.0),
            xen_task_timeout=number("PEX_XEN_TASK_TIMEOUT_SECONDS", 600.0),
            worker_id=env.get("PEX_WORKER_ID") or None,
            tick=number("PEX_WORKER_TICK_SECONDS", 1.0),
            threads=max(1, int(number("PEX_WORKER_THREADS", 4))),
            lease=timedelta(seconds=number("PEX_DISPATCH_LEASE_SECONDS", 120)),
            node_grace=timedelta(seconds=number("PEX_NODE_GRACE_SECONDS", 30)),
            guest_timeout=timedelta(seconds=number("PEX_GUEST_TIMEOUT_SECONDS", 300)),
            resync=number("PEX_RESYNC_SECONDS", 60),
            watch_timeout=number("PEX_WATCH_TIMEOUT_SECONDS", 10),
            embedded=embedded,
            simulated_guest_ip_delay=number("PEX_SIM_GUEST_IP_DELAY_SECONDS", 2.0),
        )
