"""The operators' commands on the catalogue (sizes, templates) and the pool's nodes, and the
queries that show them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from pex.application.core import Core
from pex.application.errors import NotFound
from pex.application.ports import PoolInventory
from pex.application.views import CatalogueView, NodeView
from pex.domain.catalogue import CATALOGUE_ID, DEMO_NODES, DEMO_TEMPLATES, TABLE_1_SIZES, Catalogue
from pex.domain.errors import CatalogueError
from pex.domain.node import Node, node_id
from pex.domain.pool import DEFAULT_POOL, PoolReserve, host_name
from pex.domain.values import Resources, Size

log = logging.getLogger(__name__)

T = TypeVar("T")

@dataclass(frozen=True)
class PoolSync:
    """What one `sync_pool` changed, node by node."""

    registered: tuple[str, ...] = ()
    resized: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()  # left the pool, or disabled or dead: no new bookings
    returned: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # resizes refused: more is booked than the host now offers

    @property
    def changed(self) -> bool:
        return bool(self.registered or self.resized or self.lost or self.returned)


class Pool(Core):
    """The operators' commands on the catalogue and the nodes, and the queries that show them."""

    # Set by pex.bootstrap when PEX_XEN_URL names a pool: nodes and templates then come from it.
    pool_configured = False

    def catalogue(self) -> CatalogueView:
        """The sizes and templates on offer now (empty until an operator defines some)."""
        c = self._catalogue()
        return CatalogueView(dict(c.sizes), dict(c.templates), c.version, c.unreachable_pools)

    def has_node(self, name: str) -> bool:
        """Whether a node of this name was ever registered (lost or not)."""
        return node_id(name) in self.repository

    def install_demo_pool(self, at: datetime | None = None) -> bool:
        """Set up the paper's sizes, templates and testbed if the store has no catalogue yet;
        with a Xen pool configured, the sizes only (nodes and templates come from the pool)."""
        at = at or self.clock()
        if CATALOGUE_ID in self.repository:
            return False
        catalogue = Catalogue(at=at)
        for size in TABLE_1_SIZES:
            catalogue.define_size(size, at)
        nodes = []
        if not self.pool_configured:
            for name, description in DEMO_TEMPLATES:
                catalogue.register_template(name, description, at)
            nodes = [Node(name=name, capacity=capacity, at=at) for name, capacity in DEMO_NODES
                     if node_id(name) not in self.repository]
        try:
            self.save(catalogue, *nodes)
        except IntegrityError:
            return False  # another process installed it first
        return True

    def define_size(self, size: Size) -> None:
        self._change_catalogue(lambda c, at: c.define_size(size, at))

    def withdraw_size(self, name: str) -> None:
        self._change_catalogue(lambda c, at: c.withdraw_size(name, at))

    def register_template(self, name: str, description: str = "") -> str:
        """Offer a template; with a pool, one of the pool's (by name or uuid, offered by its
        name). Returns the name offered."""
        offered = name

        def change(c: Catalogue, at: datetime) -> None:
            nonlocal offered
            if c.pool_templates is not None:
                offered = c.pool_template(name)
            elif self.pool_configured:
                raise CatalogueError("a Xen pool is configured but was never read: run `pex pool sync` first")
            c.register_template(offered, description, at)

        self._change_catalogue(change)
        return offered

    def sync_pool(self, inventory: PoolInventory, reserve: PoolReserve | None = None, pool: str = DEFAULT_POOL) -> PoolSync:
        """Make the hosts of `pool` its nodes: each host a node, named by the adapter after its
        pool and name_label (pex.domain.pool.node_name), offering its guest capacity less
        `reserve`; a host that is disabled or dead, and a node of the pool whose host left it,
        is marked lost (no new bookings; the Scheduler re-places its future bookings,
        pex.workers.timer); one that is back is returned. Records the pool's hosts and
        templates on the catalogue. Other pools' nodes are not touched. Safe to repeat: a sync
        that finds nothing new records nothing."""
        reserve = reserve or PoolReserve()
        at = self.clock()
        self._change_catalogue(lambda c, at: c.record_pool(
            [h.name for h in inventory.hosts], {t.uuid: t.name for t in inventory.templates}, at, pool))
        registered: list[str] = []
        resized: list[str] = []
        lost: list[str] = []
        returned: list[str] = []
        refused: list[str] = []
        in_pool = set()
        for host in inventory.hosts:
            in_pool.add(host.name)
            capacity = reserve.offered(host_name(pool, host.name), host.guest_capacity)
            if node_id(host.name) not in self.repository:
                if capacity.cpus <= 0 or capacity.memory_mb <= 0:
                    log.warning("host %s offers nothing for guests (%s): not a node", host.name, capacity)
                    continue
                node = Node(name=host.name, capacity=capacity, at=at, pool=pool)
                if not host.available:
                    node.mark_lost(at)
                try:
                    self.save(node)
                    registered.append(host.name)
                except IntegrityError:
                    pass  # another process registered it first; the next sync compares it
                continue
            node = self._node(host.name)
            if node.pool != pool:
                log.error("host %s of pool %s has the name of a node of pool %s: not synced", host.name, pool, node.pool)
                refused.append(host.name)
                continue
            if node.capacity != capacity:
                try:
                    self._change_node(host.name, partial(Node.resize, capacity=capacity))
                    resized.append(host.name)
                except CatalogueError as error:
                    log.warning("host %s: %s", host.name, error)
                    refused.append(host.name)
            if node.available != host.available:
                self._change_node(host.name, Node.mark_returned if host.available else Node.mark_lost)
                (returned if host.available else lost).append(host.name)
        self.follow()
        with self._follow_lock:  # this pool's nodes only: a sync costs its own pool's size
            known = [(name, n.available) for name, n in self.timeline.by_pool.get(pool, {}).items()]
        for name, available in known:
            if name not in in_pool and available:
                self.mark_node_lost(name)
                lost.append(name)
        result = PoolSync(tuple(registered), tuple(resized), tuple(lost), tuple(returned), tuple(refused))
        if result.changed:
            log.info("pool %s synced: %s", pool, result)
        return result

    def record_pool_reachability(self, pool: str, reachable: bool) -> None:
        """Record that `pool`'s master answers again, or has not answered for a while (the
        monitors of its workers say): first offers avoid an unreachable pool meanwhile."""
        if reachable != (pool not in self._catalogue().unreachable_pools):
            self._change_catalogue(lambda c, at: c.record_reachability(pool, reachable, at))

    def withdraw_template(self, name: str) -> None:
        self._change_catalogue(lambda c, at: c.withdraw_template(name, at))

    def register_node(self, name: str, capacity: Resources) -> UUID:
        catalogue = self._catalogue()
        catalogue.check_node_registrable(name)
        if self.pool_configured and catalogue.pool_hosts is None:
            raise CatalogueError("a Xen pool is configured: its hosts become nodes by `pex pool sync`")
        if not name or capacity.cpus <= 0 or capacity.memory_mb <= 0 or capacity.disk_gb < 0:
            raise CatalogueError("a node needs a name and positive CPUs and memory")
        node = Node(name=name, capacity=capacity, at=self.clock())
        try:
            self.save(node)
        except IntegrityError:
            raise CatalogueError(f"node {name!r} is already registered") from None
        return node.id

    def pool_templates(self) -> dict[str, str] | None:
        """The templates of the Xen pool at its last sync (uuid -> name); None without a pool."""
        templates = self._catalogue().pool_templates
        return None if templates is None else dict(templates)

    def resize_node(self, name: str, capacity: Resources) -> None:
        if self._catalogue().pool_hosts is not None:
            raise CatalogueError(f"node {name!r} offers what its Xen host can give guests: set PEX_POOL_RESERVE to keep some back")
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.resize(capacity, at)))

    def mark_node_lost(self, name: str) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.mark_lost(at)))

    def mark_node_returned(self, name: str) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.mark_returned(at)))

    def _change_node(self, name: str, change: Callable[..., None]) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: change(n, at=at)))

    def _save_nodes(self, node: Node, change: Callable[[Node, datetime], None]) -> None:
        change(node, self.clock())
        self._save(node)

    def nodes(self) -> list[NodeView]:
        self.follow()
        with self._follow_lock:
            names = list(self.timeline.nodes)
        views = []
        for name in names:
            node = self._node(name)
            views.append(NodeView(node.name, node.capacity, node.available, node.version, node.drain_from, node.drain_by,
                                  node.pool))
        return views

    def pools(self) -> list[str]:
        """The pools with a node, by name."""
        self.follow()
        with self._follow_lock:
            return self.timeline.pools()

    def node_allocations(self, name: str) -> list[Any]:
        self.follow()
        with self._follow_lock:
            if name not in self.timeline.nodes:
                raise NotFound(f"no node {name!r}")
            return self.timeline.allocations(name, self.clock())
