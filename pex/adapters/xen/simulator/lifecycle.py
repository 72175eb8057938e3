"""xapi's rules for which VM operation is legal when (xapi_vm_lifecycle.ml), as tables.

`check_operation` raises exactly the error real xapi raises, with the same params:
VM_IS_TEMPLATE for most operations on a template, OTHER_OPERATION_IN_PROGRESS while an
(async) operation holds the VM, VM_BAD_POWER_STATE [vm, expected, actual] otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pex.adapters.xen.simulator.wire import NULL_REF, XapiError

HALTED, PAUSED, RUNNING, SUSPENDED = "Halted", "Paused", "Running", "Suspended"
POWER_STATES = (HALTED, PAUSED, RUNNING, SUSPENDED)

# operation -> power states it is allowed from, in xapi's order (used in the error text)
ALLOWED_POWER_STATES: dict[str, tuple[str, ...]] = {
    "start": (HALTED,),
    "start_on": (HALTED,),
    "provision": (HALTED,),
    "clone": (HALTED,),
    "copy": (HALTED,),
    "set_VCPUs_max": (HALTED,),
    "set_VCPUs_at_startup": (HALTED,),
    "set_memory_limits": (HALTED,),
    "clean_shutdown": (RUNNING,),
    "clean_reboot": (RUNNING,),
    "suspend": (RUNNING,),
    "pause": (RUNNING,),
    "pool_migrate": (RUNNING,),
    "hard_shutdown": (PAUSED, SUSPENDED, RUNNING),
    "shutdown": (PAUSED, SUSPENDED, RUNNING),
    "hard_reboot": (PAUSED, RUNNING),
    "unpause": (PAUSED,),
    "resume": (SUSPENDED,),
    "resume_on": (SUSPENDED,),
    "destroy": (HALTED, SUSPENDED),
}

# What a template still allows (check_template); everything else is VM_IS_TEMPLATE.
TEMPLATE_OPERATIONS = frozenset(
    {"clone", "copy", "provision", "destroy", "set_VCPUs_max", "set_VCPUs_at_startup", "set_memory_limits"}
)

# Operations that run against the domain on its host, so a dead host answers HOST_OFFLINE.
HOST_OPERATIONS = frozenset(
    {"clean_shutdown", "hard_shutdown", "shutdown", "clean_reboot", "hard_reboot", "pause", "unpause",
     "suspend", "pool_migrate"}
)


@dataclass
class Operation:
    """A VM operation whose checks passed; `apply` performs it (under the pool's lock)."""

    vm: str
    name: str
    apply: Callable[[], object]
    # The host whose memory the operation holds meanwhile (VM.scheduled_to_be_resident_on).
    destination: str = NULL_REF
    # Seconds the operation takes by itself (a migration copying memory), on top of latency.
    duration: float = 0.0


def check_operation(vm: str, record: dict, operation: str) -> None:
    if record["is_control_domain"]:
        raise XapiError("OPERATION_NOT_ALLOWED", f"{operation} is not allowed on a control domain")
    if record["is_a_template"] and operation not in TEMPLATE_OPERATIONS:
        raise XapiError("VM_IS_TEMPLATE", vm, operation)
    if record["current_operations"]:
        task, running = next(iter(record["current_operations"].items()))
        raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm, running, task)
    allowed = ALLOWED_POWER_STATES[operation]
    if record["power_state"] not in allowed:
        raise XapiError(
            "VM_BAD_POWER_STATE", vm, ", ".join(s.lower() for s in allowed), record["power_state"].lower()
        )
    if operation == "destroy" and record["is_a_template"] and record["is_default_template"]:
        raise XapiError("OPERATION_NOT_ALLOWED", "default templates cannot be destroyed")


def allowed_operations(record: dict) -> list[str]:
    """The VM record's `allowed_operations`: what `check_operation` would let through now."""
    if record["is_control_domain"] or record["current_operations"]:
        return []
    return sorted(
        op
        for op, states in ALLOWED_POWER_STATES.items()
        if record["power_state"] in states and (not record["is_a_template"] or op in TEMPLATE_OPERATIONS)
    )
