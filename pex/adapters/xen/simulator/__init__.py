"""A XAPI pool simulator that the unmodified `XenAPI` client drives over HTTP on loopback.

It speaks xapi's XML-RPC (Status/Value/ErrorDescription envelope, 64-bit ints as strings,
OpaqueRef refs, Async tasks, event.from with tokens), models a pool of hosts, templates, VMs
with xapi's power-state rules, memory admission and disks, and takes fault injection through
a separate control API. See `server.run_simulator` and `server.serve` to start one.
"""

from pex.adapters.xen.simulator.clock import ManualClock, SystemClock
from pex.adapters.xen.simulator.control import SimulatorControl
from pex.adapters.xen.simulator.server import TlsFiles, XapiSimulator, run_simulator, serve
from pex.adapters.xen.simulator.testbed import HostSpec, SimulatorConfig, TemplateSpec, paper_hosts

__all__ = [
    "HostSpec", "ManualClock", "SimulatorConfig", "SimulatorControl", "SystemClock", "TemplateSpec", "TlsFiles",
    "XapiSimulator",
    "paper_hosts", "run_simulator", "serve",
]
