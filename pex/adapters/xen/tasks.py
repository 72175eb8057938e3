"""Waiting for xapi's asynchronous tasks: `Async.*` calls answer a task ref at once.

Lifecycle operations go through tasks so that no single HTTP request has to outlive the
socket timeout, however long a guest takes to shut down.
"""

from __future__ import annotations

import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any

import XenAPI

from pex.adapters.xen.errors import XenTaskTimeout

FIRST_POLL = 0.01


def wait_for_task(api: Any, task: str, *, timeout: float, poll_interval: float,
                  sleep: Callable[[float], None] = time.sleep,
                  monotonic: Callable[[], float] = time.monotonic) -> object:
    """The task's result once it succeeded; raises `XenAPI.Failure` with its error_info if it
    failed, `XenTaskTimeout` if it is still pending after `timeout` seconds.

    Polls quickly at first and backs off to `poll_interval`, so fast operations return fast.
    A finished task is destroyed (xapi keeps tasks until someone does).
    """
    deadline = monotonic() + timeout
    delay = min(FIRST_POLL, poll_interval)
    while True:
        status = api.task.get_status(task)
        if status != "pending":
            break
        if monotonic() >= deadline:
            raise XenTaskTimeout(f"task {task} still pending after {timeout:.0f}s")
        sleep(delay)
        delay = min(delay * 2, poll_interval)
    try:
        if status == "success":
            return parse_task_result(api.task.get_result(task))
        raise XenAPI.Failure(api.task.get_error_info(task) or ["TASK_" + str(status).upper()])
    finally:
        try:
            api.task.destroy(task)
        except Exception:  # a leftover task is harmless; xapi garbage-collects old ones
            pass


def parse_task_result(result: str) -> object:
    """task.result is the XML-RPC `<value>` of the result as a string ("" for void)."""
    if not result:
        return None
    (value,), _ = xmlrpc.client.loads(f"<params><param>{result}</param></params>")
    return value
