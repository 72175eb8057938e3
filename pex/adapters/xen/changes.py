"""The changes the event watcher reports, in PEX's terms (instance ids, UUIDs, host names).

Each is an immutable value; `XenChange` is their union. The first batch after a watcher
starts describes the current state (every PEX VM's power state and IP, every host's
liveness) with `previous` fields set to None.
"""

from __future__ import annotations

from dataclasses import dataclass

from pex.adapters.xen.records import PowerState


@dataclass(frozen=True)
class VmPowerStateChanged:
    """A PEX VM's power state, first seen or changed (e.g. Running -> Halted after a crash)."""

    instance_id: str
    vm_uuid: str
    power_state: PowerState
    previous: PowerState | None
    host_uuid: str | None
    host_name: str | None


@dataclass(frozen=True)
class VmMigrated:
    """A running PEX VM now runs on another host."""

    instance_id: str
    vm_uuid: str
    from_host_uuid: str | None
    host_uuid: str | None
    host_name: str | None


@dataclass(frozen=True)
class GuestIpReported:
    """The guest agent reported the VM's IPv4 address (again after every boot)."""

    instance_id: str
    vm_uuid: str
    ip: str


@dataclass(frozen=True)
class VmRemoved:
    """The PEX VM no longer exists in the pool."""

    instance_id: str
    vm_uuid: str


@dataclass(frozen=True)
class HostLivenessChanged:
    """A host was first seen, or died, came back, or was disabled/enabled."""

    host_uuid: str
    host_name: str
    live: bool
    enabled: bool
    previous_live: bool | None
    previous_enabled: bool | None

    @property
    def available(self) -> bool:
        return self.live and self.enabled

    @property
    def lost(self) -> bool:
        """The host was alive and now is not: its VMs are lost (still "Running" in xapi)."""
        return self.previous_live is True and not self.live


@dataclass(frozen=True)
class HostRemoved:
    """The host left the pool (ejected, or forgotten after it died)."""

    host_uuid: str
    host_name: str


@dataclass(frozen=True)
class WatcherResynced:
    """The watcher lost its place (reconnect, rejected token) and re-read everything; the
    changes that follow are the differences it found. Events in between may be missed."""

    reason: str


XenChange = (VmPowerStateChanged | VmMigrated | GuestIpReported | VmRemoved | HostLivenessChanged | HostRemoved
             | WatcherResynced)
