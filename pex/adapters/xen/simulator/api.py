"""How one XAPI call is executed: the whole surface the HTTP layer sees is `XapiApi.call`.

It resolves the wire name (`VM.start_on`, the alternative `VM_start_on`, `Async.VM.start_on`),
logs in or checks the session, checks the arity, applies injected failures and latency, and
runs the handler under the pool's lock; `Async.*` calls run it in a task and answer the task
ref at once. Handlers that change a domain return an `Operation`: its checks have passed,
and while injected latency runs the VM is marked busy in `current_operations` (so concurrent
calls get OTHER_OPERATION_IN_PROGRESS) before the change is applied. For other calls latency
only delays the answer.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time

from pex.adapters.xen.simulator.calls import CALL_FAMILIES, generic_method
from pex.adapters.xen.simulator.calls.generic import ApiMethod
from pex.adapters.xen.simulator.database import CLASSES
from pex.adapters.xen.simulator.lifecycle import Operation
from pex.adapters.xen.simulator.pool import SimulatedPool
from pex.adapters.xen.simulator.record_defaults import new_record
from pex.adapters.xen.simulator.wire import NULL_REF, XapiError, task_result

log = logging.getLogger(__name__)

LOGIN = "session.login_with_password"


class XapiApi:
    def __init__(self, pool: SimulatedPool):
        self.pool = pool
        self._methods: dict[tuple[str, str], ApiMethod] = {}
        for family in CALL_FAMILIES:
            calls = family(pool)
            for name, handler in inspect.getmembers(calls, inspect.ismethod):
                if not name.startswith("_"):
                    self._methods[(family.xapi_class, name.rstrip("_"))] = ApiMethod(
                        handler, len(inspect.signature(handler).parameters), getattr(family, "async_calls", True))

    def call(self, wire_name: str, params: tuple, host: str | None = None) -> object:
        """Run one API call as xapi would; raises XapiError for every API failure.

        `host` is the host that received the call (None: the master, whoever it is).
        """
        if host is not None:
            with self.pool.lock:
                if host != self.pool.master:
                    self.as_member(wire_name, params)
        if fault_name(wire_name) == LOGIN and not wire_name.startswith("Async"):
            return self.login(*params)
        is_async, name, method = self.resolve(wire_name)
        session = params[0] if params else None
        with self.pool.lock:
            if session not in self.pool.sessions:
                raise XapiError("SESSION_INVALID", session)
        if len(params) != method.arity:
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", wire_name, method.arity, len(params))
        if is_async:
            return self._start_task(name, method, params)
        return self.execute(name, method, params, task=None)

    def resolve(self, wire_name: str) -> tuple[bool, str, ApiMethod]:
        """(is_async, "Class.msg", method) for a wire name, or MESSAGE_METHOD_UNKNOWN."""
        is_async = wire_name.startswith(("Async.", "Async_"))
        cls, msg = split_method_name(wire_name[6:] if is_async else wire_name)
        method = self._methods.get((cls, msg)) if cls else None
        if method is None and cls in CLASSES:
            method = generic_method(self.pool, cls, msg)
        # Getters, setters, session, task and event calls have no Async variant.
        if method is None or (is_async and not (method.can_be_async and _has_async_variant(msg))):
            raise XapiError("MESSAGE_METHOD_UNKNOWN", wire_name)
        return is_async, f"{cls}.{msg}", method

    def as_member(self, wire_name: str, params: tuple) -> None:
        """What a pool member answers (xapi_session.ml, session_check.ml): logins and calls
        with a session of the master are HOST_IS_SLAVE [master address]; an unknown session
        is SESSION_INVALID, as the master would say."""
        if fault_name(wire_name) != LOGIN:
            session = params[0] if params else None
            if session not in self.pool.sessions:
                raise XapiError("SESSION_INVALID", session)
        raise XapiError("HOST_IS_SLAVE", self.pool.master_address())

    def login(self, *params: object) -> str:
        if not 2 <= len(params) <= 4:  # version and originator are optional
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", LOGIN, 4, len(params))
        faults, config = self.pool.faults, self.pool.config
        injected = faults.take_failure(LOGIN)
        if injected:
            raise XapiError(*injected)
        master_address = faults.take_login_redirect()
        if master_address is not None:
            raise XapiError("HOST_IS_SLAVE", master_address)
        username, password = params[0], params[1]
        if username != config.username or password != config.password:
            raise XapiError("SESSION_AUTHENTICATION_FAILED", username, "Authentication failure")
        with self.pool.lock:
            ref = f"OpaqueRef:{self.pool.new_uuid()}"
            self.pool.sessions[ref] = {"username": username, "originator": params[3] if len(params) > 3 else "",
                                       "created": self.pool.now()}
            return ref

    def execute(self, name: str, method: ApiMethod, params: tuple, task: str | None) -> object:
        pool = self.pool
        injected = pool.faults.take_failure(name)
        if injected:
            raise XapiError(*injected)
        latency = pool.faults.latency(name)
        marker = task or f"OpaqueRef:{pool.new_uuid()}"
        with pool.lock:
            pool.settle()
            result = method.handler(*params)
            if isinstance(result, Operation):
                latency += result.duration
                if not latency:
                    return result.apply()
                self._begin(result, marker)
        if latency:
            time.sleep(latency)
        if not isinstance(result, Operation):
            return result
        with pool.lock:
            self._end(result, marker)
            pool.settle()
            return result.apply()

    def _begin(self, operation: Operation, marker: str) -> None:
        pool = self.pool
        record = pool.db.get("VM", operation.vm)
        pool.db.update("VM", operation.vm, current_operations={**record["current_operations"], marker: operation.name},
                       scheduled_to_be_resident_on=operation.destination)
        pool.refresh_allowed_operations(operation.vm)
        pool.refresh_host_metrics(operation.destination)

    def _end(self, operation: Operation, marker: str) -> None:
        pool = self.pool
        if not pool.db.exists("VM", operation.vm):
            return
        record = pool.db.get("VM", operation.vm)
        remaining = {k: v for k, v in record["current_operations"].items() if k != marker}
        pool.db.update("VM", operation.vm, current_operations=remaining,
                       scheduled_to_be_resident_on=NULL_REF)
        pool.refresh_allowed_operations(operation.vm)
        pool.refresh_host_metrics(operation.destination)

    def _start_task(self, name: str, method: ApiMethod, params: tuple) -> str:
        pool = self.pool
        with pool.lock:
            task = pool.db.create("task", new_record(
                "task", uuid=pool.new_uuid(), name_label=f"Async.{name}", created=pool.now(), resident_on=pool.master))
        threading.Thread(target=self._run_task, args=(task, name, method, params), name=f"xapi Async.{name}",
                         daemon=True).start()
        return task

    def _run_task(self, task: str, name: str, method: ApiMethod, params: tuple) -> None:
        try:
            outcome: dict = {"status": "success", "result": task_result(self.execute(name, method, params, task))}
        except XapiError as error:
            outcome = {"status": "failure", "error_info": error.description}
        except Exception as error:  # the simulator's own bug: report it as xapi would
            log.exception("task %s failed", name)
            outcome = {"status": "failure", "error_info": ["INTERNAL_ERROR", str(error)]}
        with self.pool.lock:
            if self.pool.db.exists("task", task):  # the client may have destroyed it already
                self.pool.db.update("task", task, progress=1.0, finished=self.pool.now(), **outcome)


def split_method_name(name: str) -> tuple[str, str]:
    """("VM", "start") for "VM.start" and for the alternative wire name "VM_start"."""
    if "." in name:
        cls, _, msg = name.partition(".")
        return cls, msg
    for cls in sorted((*CLASSES, "session", "event"), key=len, reverse=True):  # longest first
        if name.startswith(cls + "_"):
            return cls, name[len(cls) + 1:]
    return "", name


def fault_name(wire_name: str) -> str:
    """The name faults are registered under: "Async.VM.start_on" and "VM_start_on" are "VM.start_on"."""
    name = wire_name[6:] if wire_name.startswith(("Async.", "Async_")) else wire_name
    cls, msg = split_method_name(name)
    return f"{cls}.{msg}" if cls else name


def _has_async_variant(msg: str) -> bool:
    return not msg.startswith(("get_", "set_", "add_to_", "remove_from_"))
