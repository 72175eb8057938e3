"""The ports of the service layer: what it asks of the world outside, defined here and
implemented outside (the enactment by pex.adapters, the clock by pex.clock or a test).

The application never calls a hypervisor itself: a worker claims an action
(`PexApplication.claim_dispatch`), carries it out through an `Enactment`, and records the
outcome (`record_dispatch`, `fail_dispatch`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID

from pex.domain.values import Resources

Clock = Callable[[], datetime]
"""Returns the time now, tz-aware UTC."""


class EnactmentError(Exception):
    """A failure of the hypervisor an enactment reports (a host down, no capacity, a lost
    connection), as opposed to a bug. Adapters raise subclasses; the worker records either
    kind as a failed dispatch, and logs a traceback only for the other kind."""


@dataclass(frozen=True)
class DispatchJob:
    """What an enactment needs to know to carry out one action for one instance."""

    instance_id: UUID
    action: str
    name: str
    template: str
    node: str
    per_instance: Resources
    vm_uuid: str | None
    # Whether an earlier attempt (a creating action claimed before this one) may have left a VM
    # in the pool: if not, the enactment need not look for one before it makes it.
    vm_may_exist: bool
    needs_reset: bool
    reason: str = ""  # why a VM is removed (end, delete, cleanup)
    # The owner's SSH public keys, for the action that makes the VM (prepare, or a start that
    # finds none): the enactment hands them to the guest (Xen: vm-data/ssh-authorized-keys).
    ssh_authorized_keys: tuple[str, ...] = ()
    # The VM's own password (with PEX_VM_PASSWORD_KEY), for the same actions: vm-data/password.
    # Kept out of repr, so that a logged job never shows it.
    vm_password: str | None = field(default=None, repr=False)
    # For `migrate`: the node to live-migrate the VM to (booked for it there already).
    to_node: str | None = None


@dataclass(frozen=True)
class Enacted:
    """What a start left running: the VM, the host it runs on, and its IP if already known."""

    vm_uuid: str | None = None
    node: str | None = None
    ip_address: str | None = None


@dataclass(frozen=True)
class PoolHost:
    """One host of the pool, as the hypervisor reports it: `guest_capacity` is what it can give
    guests (before the operator's reserve); `available` says it is live and enabled."""

    name: str
    uuid: str
    guest_capacity: Resources
    available: bool


@dataclass(frozen=True)
class PoolTemplate:
    uuid: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class PoolInventory:
    """Everything a pool has that PEX can book: its hosts and its templates."""

    hosts: tuple[PoolHost, ...]
    templates: tuple[PoolTemplate, ...]


class Enactment(Protocol):
    """Carries out dispatch actions on a hypervisor (pex.adapters.xen.enactment.XenEnactment;
    pex.adapters.inmemory.InMemoryEnactment in tests).

    Every action must be safe to repeat: a worker that died may have done it already."""

    def carry_out(self, job: DispatchJob) -> Enacted: ...

    def inventory(self) -> PoolInventory:
        """The pool's hosts and templates now (pex.application.pool's sync_pool reads it)."""
        ...
