"""What the simulated pool is made of: hosts, templates, storage, credentials.

The default is the OpenPEX paper's testbed (§3.3): five hosts with 4 CPUs and 4 GiB of
memory for guests each (so exactly one 3.5 GiB XLARGE fits a host), a shared storage node,
and the templates PEX's demo catalogue offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class HostSpec:
    """One physical host. Its memory_total is what guests get plus what Xen and dom0 keep."""

    name: str
    cpus: int = 4
    guest_memory_mb: int = 4096
    dom0_memory_mb: int = 752
    xen_overhead_mb: int = 64
    address: str = "127.0.0.1"

    @property
    def memory_total_bytes(self) -> int:
        return (self.guest_memory_mb + self.dom0_memory_mb + self.xen_overhead_mb) * MiB


@dataclass(frozen=True)
class TemplateSpec:
    """A VM template with one system disk, described in other_config["disks"] as xapi does."""

    name: str
    description: str = ""
    memory_mb: int = 256
    vcpus: int = 1
    disk_gb: int = 4
    # Default templates ship with xapi and cannot be destroyed; custom ones (PEX's) can.
    is_default: bool = True


PAPER_TEMPLATES = (
    TemplateSpec("PEX Debian Etch 4.0 Template", "Debian GNU/Linux 4.0 (the paper's template)", is_default=False),
    TemplateSpec("Debian Bookworm 12", "Debian GNU/Linux 12", memory_mb=512, disk_gb=8),
    TemplateSpec("Ubuntu 24.04 LTS", "Ubuntu Server 24.04", memory_mb=1024, disk_gb=10),
)


def paper_hosts(count: int = 5) -> tuple[HostSpec, ...]:
    # Members get distinct loopback addresses so that HOST_IS_SLAVE can name a real master.
    return tuple(HostSpec(f"node{i}", address=f"127.0.0.{i}") for i in range(1, count + 1))


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes a simulated pool; the first host is the pool master."""

    hosts: Sequence[HostSpec] = field(default_factory=paper_hosts)
    templates: Sequence[TemplateSpec] = PAPER_TEMPLATES
    username: str = "root"
    password: str = "xenroot"
    # Seconds (on the simulator's clock) between a guest's boot and its IP in VM_guest_metrics.
    guest_ip_delay: float = 2.0
    seed: int = 0
    pool_name: str = "PEX pool"
    storage_gb: int = 1024
    network_name: str = "Pool-wide network associated with eth0"
    # Per-VM memory xapi adds on top of memory_dynamic_max at start; 0 keeps PEX's sums exact.
    vm_memory_overhead_mb: int = 0
    # Real seconds one VM.pool_migrate takes (copying the guest's memory); the VM stays busy
    # and keeps its memory reserved on the destination meanwhile.
    migration_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ValueError("a pool needs at least one host")
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError("host names must be unique")


def config_for(hosts: int | Sequence[HostSpec] = 5, **options: object) -> SimulatorConfig:
    """A config from a host count (paper hosts) or explicit host specs, plus any other field."""
    specs = paper_hosts(hosts) if isinstance(hosts, int) else tuple(hosts)
    return SimulatorConfig(hosts=specs, **options)  # type: ignore[arg-type]
