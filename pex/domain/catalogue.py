"""The Catalogue aggregate: the VM sizes (paper Table 1) and templates an operator offers,
and the quotas that bound what one user may take (pex.domain.quotas).

There is one catalogue per store. Sizes and templates are data an operator changes with
commands (`pex admin`, the admin API); a reservation copies the resources of its size when
it is proposed, so a later change of a size never changes an agreed reservation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from pex.domain.errors import CatalogueError, InvalidProposal
from pex.domain.pool import DEFAULT_POOL
from pex.domain.quotas import Quotas
from pex.domain.values import CopiedByContainers, Resources, Size

CATALOGUE_ID = uuid5(NAMESPACE_URL, "/pex/catalogue")

# The paper's Table 1, with the default flat price per instance-hour.
TABLE_1_SIZES = (
    Size("SMALL", cpus=1, memory_mb=768, disk_gb=10, hourly_price=Decimal("0.05")),
    Size("MEDIUM", cpus=2, memory_mb=1536, disk_gb=20, hourly_price=Decimal("0.10")),
    Size("LARGE", cpus=3, memory_mb=2560, disk_gb=40, hourly_price=Decimal("0.15")),
    Size("XLARGE", cpus=4, memory_mb=3584, disk_gb=60, hourly_price=Decimal("0.20")),
)

DEMO_TEMPLATES = (
    ("PEX Debian Etch 4.0 Template", "Debian GNU/Linux 4.0 (the paper's template)"),
    ("Debian Bookworm 12", "Debian GNU/Linux 12"),
    ("Ubuntu 24.04 LTS", "Ubuntu Server 24.04"),
)

# The paper's testbed (§3.3): 5 nodes of 2 dual-core Xeons with 4 GB for guests each,
# so exactly one XLARGE fits a node. Disk comes from the shared 1 TB storage node.
DEMO_NODES = tuple((f"node{i}", Resources(cpus=4, memory_mb=4096, disk_gb=200)) for i in range(1, 6))


class Catalogue(CopiedByContainers, Aggregate):
    """Sizes and templates on offer."""

    class Event(Aggregate.Event):
        at: datetime

    class Opened(Aggregate.Created):
        at: datetime

    class SizeDefined(Event):
        size: Size

        def apply(self, c: Catalogue) -> None:
            c.sizes[self.size.name] = self.size

    class SizeWithdrawn(Event):
        name: str

        def apply(self, c: Catalogue) -> None:
            c.sizes.pop(self.name, None)

    class TemplateRegistered(Event):
        name: str
        description: str

        def apply(self, c: Catalogue) -> None:
            c.templates[self.name] = self.description

    class TemplateWithdrawn(Event):
        name: str

        def apply(self, c: Catalogue) -> None:
            c.templates.pop(self.name, None)

    class QuotasChanged(Event):
        """An administrator set the quotas; `quotas` is the whole set in force from `at`."""

        quotas: Quotas
        by: str

        def apply(self, c: Catalogue) -> None:
            c.quotas = self.quotas

    class UserQuotasSet(Event):
        """An administrator gave `user_id` quotas of their own (`quotas`), or took them away
        (None: the user is back under the quotas everyone has)."""

        user_id: str
        quotas: Quotas | None
        by: str

        def apply(self, c: Catalogue) -> None:
            if self.quotas is None:
                c.user_quotas.pop(self.user_id, None)
            else:
                c.user_quotas[self.user_id] = self.quotas

    class PoolSynced(Event):
        """PEX read one of its Xen pools (`pool`): the hosts it has, by the names of their nodes
        (pex.domain.pool.node_name), and its templates (uuid -> name), the ones an operator may
        offer. From the first, nodes and templates come from the pools only."""

        hosts: list[str]
        templates: dict[str, str]
        pool: str = DEFAULT_POOL  # recorded since PEX_POOLS; before it, the one pool

        def apply(self, c: Catalogue) -> None:
            pools = c.synced_pools()
            pools[self.pool] = {"hosts": sorted(self.hosts), "templates": dict(self.templates)}
            c.pools = pools
            c.pool_hosts = tuple(sorted(h for p in pools.values() for h in p["hosts"]))
            c.pool_templates = {u: n for p in pools.values() for u, n in p["templates"].items()}

    class PoolUnreachable(Event):
        """The workers of `pool` could not reach its master for a while (its monitors say):
        a reservation's first offer is made in the other pools while it lasts."""

        pool: str

        def apply(self, c: Catalogue) -> None:
            c.unreachable_pools = tuple(sorted({*c.unreachable_pools, self.pool}))

    class PoolReachable(Event):
        """The master of `pool` answers again."""

        pool: str

        def apply(self, c: Catalogue) -> None:
            c.unreachable_pools = tuple(p for p in c.unreachable_pools if p != self.pool)

    # The pools whose master the workers cannot reach (a class default: older snapshots have none).
    unreachable_pools: tuple[str, ...] = ()
    # None: no pool was ever synced (a class default, so older snapshots read as None too).
    pool_hosts: tuple[str, ...] | None = None  # every pool's, by node name
    pool_templates: dict[str, str] | None = None  # every pool's, uuid -> name
    # Each pool's own, by name: {"hosts": [...], "templates": {uuid: name}}. None in snapshots
    # taken before pools were named, whose one pool `pool_hosts` and `pool_templates` hold.
    pools: dict[str, dict] | None = None

    def __init__(self, at: datetime):
        self.sizes: dict[str, Size] = {}
        self.templates: dict[str, str] = {}
        self.quotas = Quotas()  # the defaults, until an administrator sets them
        self.user_quotas: dict[str, Quotas] = {}  # the few users an administrator set apart

    @staticmethod
    def create_id(**_: object) -> UUID:
        return CATALOGUE_ID

    def size(self, name: str) -> Size:
        return size_named(self.sizes, name)

    def check_template(self, name: str) -> None:
        check_template(self.templates, name)

    def define_size(self, size: Size, at: datetime) -> None:
        if not size.name or size.cpus < 0 or size.memory_mb < 0 or size.disk_gb < 0 or size.hourly_price < 0:
            raise CatalogueError("a size needs a name and non-negative resources and price")
        if size.cpus == size.memory_mb == size.disk_gb == 0:
            raise CatalogueError("a size must take some resource")
        if self.sizes.get(size.name) != size:
            self.trigger_event(self.SizeDefined, size=size, at=at)

    def withdraw_size(self, name: str, at: datetime) -> None:
        if name not in self.sizes:
            raise CatalogueError(f"no size {name!r}")
        self.trigger_event(self.SizeWithdrawn, name=name, at=at)

    def register_template(self, name: str, description: str, at: datetime) -> None:
        if not name.strip():
            raise CatalogueError("a template needs a name")
        if self.templates.get(name) != description:
            self.trigger_event(self.TemplateRegistered, name=name, description=description, at=at)

    def synced_pools(self) -> dict[str, dict]:
        """Each pool's hosts and templates at its last sync (a copy), by the pool's name."""
        if self.pools is not None:
            return {name: {"hosts": list(p["hosts"]), "templates": dict(p["templates"])} for name, p in self.pools.items()}
        if self.pool_hosts is None:
            return {}
        return {DEFAULT_POOL: {"hosts": list(self.pool_hosts), "templates": dict(self.pool_templates or {})}}

    def record_pool(self, hosts: list[str], templates: dict[str, str], at: datetime, pool: str = DEFAULT_POOL) -> None:
        synced = self.synced_pools().get(pool)
        if synced is None or (sorted(hosts), templates) != (synced["hosts"], synced["templates"]):
            self.trigger_event(self.PoolSynced, hosts=sorted(hosts), templates=dict(templates), pool=pool, at=at)

    def record_reachability(self, pool: str, reachable: bool, at: datetime) -> None:
        """Say whether `pool`'s master answers; records only a change."""
        if reachable and pool in self.unreachable_pools:
            self.trigger_event(self.PoolReachable, pool=pool, at=at)
        elif not reachable and pool not in self.unreachable_pools:
            self.trigger_event(self.PoolUnreachable, pool=pool, at=at)

    def pool_template(self, name_or_uuid: str) -> str:
        """The name of the pools' template with this name or uuid (refused if one has none):
        a reservation may be placed in any pool, so each must have what it offers."""
        pools = self.synced_pools()
        names = {n for p in pools.values() for n in p["templates"].values()}
        name = (self.pool_templates or {}).get(name_or_uuid, name_or_uuid)
        if name not in names:
            offered = ", ".join(sorted(names)) or "none"
            raise CatalogueError(f"the Xen pool has no template {name_or_uuid!r} (its templates: {offered})")
        lacking = sorted(pool for pool, p in pools.items() if name not in p["templates"].values())
        if lacking:
            raise CatalogueError(
                f"template {name!r} is not in every pool (not in {', '.join(lacking)}): a reservation may be placed "
                "in any pool, so each must have it, by that name")
        return name

    def check_node_registrable(self, name: str) -> None:
        """With a pool synced, nodes are its hosts, made by the sync: none is registered by hand."""
        if self.pool_hosts is None:
            return
        if name in self.pool_hosts:
            raise CatalogueError(f"node {name!r} is a host of the Xen pool: `pex pool sync` keeps it")
        raise CatalogueError(
            f"the Xen pool has no host {name!r} (its hosts: {', '.join(self.pool_hosts) or 'none'}); "
            "nodes come from the pool (`pex pool sync`)")

    def withdraw_template(self, name: str, at: datetime) -> None:
        if name not in self.templates:
            raise CatalogueError(f"no template {name!r}")
        self.trigger_event(self.TemplateWithdrawn, name=name, at=at)

    def set_quotas(self, quotas: Quotas, by: str, at: datetime) -> None:
        if quotas != self.quotas:
            self.trigger_event(self.QuotasChanged, quotas=quotas, by=by, at=at)

    def quotas_for(self, user_id: str) -> Quotas:
        return self.user_quotas.get(user_id, self.quotas)

    def set_user_quotas(self, user_id: str, quotas: Quotas | None, by: str, at: datetime) -> None:
        if self.user_quotas.get(user_id) != quotas:
            self.trigger_event(self.UserQuotasSet, user_id=user_id, quotas=quotas, by=by, at=at)


# The catalogue's rules for a proposal's size and template, shared by the aggregate and the
# plain view of it that the service layer hands to the edges (pex.application.views).
def size_named(sizes: Mapping[str, Size], name: str) -> Size:
    try:
        return sizes[name]
    except KeyError:
        raise InvalidProposal("type", f"unknown size {name!r}; sizes are {', '.join(sorted(sizes))}") from None


def check_template(templates: Mapping[str, str], name: str) -> None:
    if name not in templates:
        raise InvalidProposal("template", f"unknown template {name!r}")
