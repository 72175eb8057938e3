"""The operators' commands on the catalogue (sizes, templates) and the pool's nodes, and the
queries that show them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from pex.application.core import Core
from pex.application.errors import NotFound
from pex.application.views import CatalogueView, NodeView
from pex.domain.catalogue import CATALOGUE_ID, DEMO_NODES, DEMO_TEMPLATES, TABLE_1_SIZES, Catalogue
from pex.domain.errors import CatalogueError
from pex.domain.node import Node, node_id
from pex.domain.values import Resources, Size

log = logging.getLogger(__name__)

T = TypeVar("T")

class Pool(Core):
    """The operators' commands on the catalogue and the nodes, and the queries that show them."""

    def catalogue(self) -> CatalogueView:
        """The sizes and templates on offer now (empty until an operator defines some)."""
        c = self._catalogue()
        return CatalogueView(dict(c.sizes), dict(c.templates), c.version)

    def has_node(self, name: str) -> bool:
        """Whether a node of this name was ever registered (lost or not)."""
        return node_id(name) in self.repository

    def install_demo_pool(self, at: datetime | None = None) -> bool:
        """Set up the paper's sizes, templates and testbed if the store has no catalogue yet."""
        at = at or self.clock()
        if CATALOGUE_ID in self.repository:
            return False
        catalogue = Catalogue(at=at)
        for size in TABLE_1_SIZES:
            catalogue.define_size(size, at)
        for name, description in DEMO_TEMPLATES:
            catalogue.register_template(name, description, at)
        nodes = [Node(name=name, capacity=capacity, at=at) for name, capacity in DEMO_NODES if node_id(name) not in self.repository]
        try:
            self.save(catalogue, *nodes)
        except IntegrityError:
            return False  # another process installed it first
        return True

    def define_size(self, size: Size) -> None:
        self._change_catalogue(lambda c, at: c.define_size(size, at))

    def withdraw_size(self, name: str) -> None:
        self._change_catalogue(lambda c, at: c.withdraw_size(name, at))

    def register_template(self, name: str, description: str = "") -> None:
        self._change_catalogue(lambda c, at: c.register_template(name, description, at))

    def withdraw_template(self, name: str) -> None:
        self._change_catalogue(lambda c, at: c.withdraw_template(name, at))

    def register_node(self, name: str, capacity: Resources) -> UUID:
        if not name or capacity.cpus <= 0 or capacity.memory_mb <= 0 or capacity.disk_gb < 0:
            raise CatalogueError("a node needs a name and positive CPUs and memory")
        node = Node(name=name, capacity=capacity, at=self.clock())
        try:
            self.save(node)
        except IntegrityError:
            raise CatalogueError(f"node {name!r} is already registered") from None
        return node.id

    def resize_node(self, name: str, capacity: Resources) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.resize(capacity, at)))

    def mark_node_lost(self, name: str) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.mark_lost(at)))

    def mark_node_returned(self, name: str) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.mark_returned(at)))

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
            views.append(NodeView(node.name, node.capacity, node.available, node.version))
        return views

    def node_allocations(self, name: str) -> list[Any]:
        self.follow()
        with self._follow_lock:
            if name not in self.timeline.nodes:
                raise NotFound(f"no node {name!r}")
            return self.timeline.allocations(name, self.clock())
