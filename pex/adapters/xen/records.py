"""Plain values the Xen adapter returns: hosts, templates, VMs and their power states.

They carry UUIDs, never OpaqueRefs: refs are only valid for a session, UUIDs forever.
Sizes are converted from xapi's byte strings to PEX's units (MiB, GiB).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MiB = 1024**2
GiB = 1024**3

# The other_config key that ties a Xen VM (and its disks) to a PEX instance.
INSTANCE_KEY = "pex_instance"


class PowerState(StrEnum):
    HALTED = "Halted"
    PAUSED = "Paused"
    RUNNING = "Running"
    SUSPENDED = "Suspended"


@dataclass(frozen=True)
class XenHost:
    uuid: str
    name: str
    address: str
    cpus: int
    memory_total_mb: int
    memory_free_mb: int
    live: bool
    enabled: bool

    @property
    def available(self) -> bool:
        """Can take VMs: alive and not in maintenance mode."""
        return self.live and self.enabled


@dataclass(frozen=True)
class XenTemplate:
    uuid: str
    name: str
    description: str
    vcpus: int
    memory_mb: int


@dataclass(frozen=True)
class XenVm:
    instance_id: str
    uuid: str
    name: str
    power_state: PowerState
    host_uuid: str | None
    host_name: str | None
    vcpus: int
    memory_mb: int
    ip: str | None


def guest_ip(networks: dict[str, str]) -> str | None:
    """The first IPv4 address the guest agent reported in VM_guest_metrics.networks."""
    for key in ("0/ip", "0/ipv4/0"):
        if networks.get(key):
            return networks[key]
    for key in sorted(networks):
        if key.endswith("/ip") or "/ipv4/" in key:
            return networks[key]
    return None
