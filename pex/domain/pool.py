"""What PEX offers of a Xen pool's hosts: their capacity for guests less the operator's reserve.

A pool is the truth about nodes (pex.application.pool's `sync_pool`): each host becomes a node
named by its name_label. What a node offers is what Xen can give guests on that host (its CPUs;
its memory less the control domain's and Xen's own; its share of the default SR) less a
reserve the operator keeps back, pool-wide or per host (PEX_POOL_RESERVE, pex.settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pex.domain.errors import CatalogueError
from pex.domain.values import Resources

RESOURCE_NAMES = ("cpus", "memory_mb", "disk_gb")


@dataclass(frozen=True)
class PoolReserve:
    """What the operator keeps back on every host (`pool_wide`) or on one (`per_host`, which
    replaces the pool-wide reserve for that host)."""

    pool_wide: Resources = Resources()
    per_host: Mapping[str, Resources] = field(default_factory=dict)

    def on(self, host: str) -> Resources:
        return self.per_host.get(host, self.pool_wide)

    def offered(self, host: str, guest_capacity: Resources) -> Resources:
        """What a node on `host` offers: its guest capacity less the reserve, never below 0."""
        left = guest_capacity - self.on(host)
        return Resources(max(0, left.cpus), max(0, left.memory_mb), max(0, left.disk_gb))

    @classmethod
    def parse(cls, text: str) -> PoolReserve:
        """`memory_mb=512,cpus=1; sim-host-0: memory_mb=2048`: entries separated by `;`, each
        an optional `HOST:` and `name=value` pairs of cpus, memory_mb and disk_gb."""
        pool_wide = Resources()
        per_host: dict[str, Resources] = {}
        for entry in (e.strip() for e in text.split(";")):
            if not entry:
                continue
            host, _, amounts = entry.rpartition(":") if ":" in entry else ("", "", entry)
            values = dict.fromkeys(RESOURCE_NAMES, 0)
            for pair in amounts.replace(",", " ").split():
                name, equals, value = pair.partition("=")
                if not equals or name not in values or not value.isdigit():
                    raise CatalogueError(
                        f"a pool reserve is name=value pairs of {', '.join(RESOURCE_NAMES)}, not {pair!r}")
                values[name] = int(value)
            if host.strip():
                per_host[host.strip()] = Resources(**values)
            else:
                pool_wide = Resources(**values)
        return cls(pool_wide, per_host)
