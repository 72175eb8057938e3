"""The XAPI calls the simulator answers, one module per family of classes.

Each family is a class whose `xapi_class` names the API class and whose public methods are
its messages (a trailing underscore is dropped: `from_` is `event.from`). Every method takes
the session ref first, as on the wire, and runs under the pool's lock. Field getters and map
updates that need no semantics come from `generic_method`.
"""

from pex.adapters.xen.simulator.calls.events import EventCalls
from pex.adapters.xen.simulator.calls.generic import generic_method
from pex.adapters.xen.simulator.calls.hosts import HostCalls
from pex.adapters.xen.simulator.calls.sessions import SessionCalls
from pex.adapters.xen.simulator.calls.storage import VdiCalls, VifCalls
from pex.adapters.xen.simulator.calls.tasks import TaskCalls
from pex.adapters.xen.simulator.calls.vms import VmCalls

CALL_FAMILIES = (SessionCalls, HostCalls, VmCalls, VdiCalls, VifCalls, TaskCalls, EventCalls)

__all__ = ["CALL_FAMILIES", "generic_method"]
