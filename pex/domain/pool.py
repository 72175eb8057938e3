"""What PEX offers of a Xen pool's hosts: their capacity for guests less the operator's reserve.

A pool is the truth about nodes (pex.application.pool's `sync_pool`): each host becomes a node
named by its name_label. What a node offers is what Xen can give guests on that host (its CPUs;
its memory less the control domain's and Xen's own; its share of the default SR) less a
reserve the operator keeps back, pool-wide or per host (PEX_POOL_RESERVE, pex.settings).
"""

from __future__ import annotations

import re
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


# --- many pools ---------------------------------------------------------------------------
#
# A provider with more hosts than one Xen pool holds (64) runs several (PEX_POOLS, pex.settings).
# A reservation's instances all live in one pool: its worker dispatches them, and a pool is
# what fails as a whole (its master down). Host names are unique within a pool only, so a
# node is named by its pool and host, except in the pool named `default`, whose nodes keep
# their hosts' names: that is every node of a PEX that never named a pool.

DEFAULT_POOL = "default"
POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
NODE_OF_POOL = ":"  # between the pool's name and the host's in the name of a node


def check_pool_name(name: str) -> str:
    if not POOL_NAME.fullmatch(name):
        raise CatalogueError(
            f"a pool's name is 1 to 32 lowercase letters, digits, '-' and '_', starting with a letter or digit, "
            f"not {name!r}")
    return name


def node_name(pool: str, host: str) -> str:
    """The name of the node on `host` (its name_label) of `pool`."""
    return host if pool == DEFAULT_POOL else f"{pool}{NODE_OF_POOL}{host}"


def host_name(pool: str, node: str) -> str:
    """The name_label of the host of `pool` that `node` is on (the inverse of `node_name`)."""
    if pool == DEFAULT_POOL:
        return node
    prefix = f"{pool}{NODE_OF_POOL}"
    return node[len(prefix):] if node.startswith(prefix) else node
