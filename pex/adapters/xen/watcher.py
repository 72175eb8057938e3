"""The event watcher: xapi's `event.from` feed turned into PEX-level changes.

Usage, in a monitor thread:

    watcher = dispatcher.watcher(timeout=30.0)
    for change in watcher.changes(stop=stop_event):
        ...  # VmPowerStateChanged, GuestIpReported, HostLivenessChanged, ... (see changes.py)
    watcher.close()

or `watcher.poll()` for one round-trip (blocks up to `timeout` seconds) in a `tick`.

How it works: one session of its own (event.from blocks server-side, and sessions are not
thread-safe) subscribes to vm, vm_guest_metrics, host and host_metrics. The first call uses
token "" and gets every object; later calls pass the returned token and get only objects
changed since, coalesced per object. The watcher keeps the latest snapshot of each object,
derives a small view (per PEX VM: power state, host, IP; per host: live, enabled), and
reports the differences between successive views. That makes it indifferent to how xapi
batches or coalesces events, and makes a resync (token "" again) report exactly what
changed meanwhile.

A token is only good on the xapi that issued it, and xapi does not notice one from
elsewhere: it reads it as some other moment of its own database and, for a moment still
to come, blocks and answers nothing. So the watcher resyncs whenever its token may have
outlived that xapi: on EVENT_FROM_TOKEN_PARSE_FAILURE or EVENTS_LOST, after a transport
error, when the master moved (HOST_IS_SLAVE: it follows to the new master), and whenever its
session was replaced, including the `XenAPI` client's silent re-login after SESSION_INVALID
(sessions die with the xapi that made them: a restart or a new master).
Only VMs tagged with `other_config["pex_instance"]` (and no longer templates) are reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pex.adapters.xen.changes import (
    GuestIpReported,
    HostLivenessChanged,
    HostRemoved,
    VmMigrated,
    VmPowerStateChanged,
    VmRemoved,
    WatcherResynced,
    XenChange,
)
from pex.adapters.xen.errors import XenError, XenTransportError, translated_errors
from pex.adapters.xen.records import INSTANCE_KEY, PowerState, guest_ip
from pex.adapters.xen.session import XenConnection, close_session, drop_session
from pex.domain.pool import DEFAULT_POOL, node_name

log = logging.getLogger(__name__)

SUBSCRIBED_CLASSES = ("vm", "vm_guest_metrics", "host", "host_metrics")
# event.from blocks for `timeout` on the server; the socket must wait a little longer.
SOCKET_MARGIN = 10.0
# Codes after which our token means nothing to xapi any more: start over from "".
RESYNC_CODES = ("EVENT_FROM_TOKEN_PARSE_FAILURE", "EVENTS_LOST", "SESSION_NOT_REGISTERED")


@dataclass(frozen=True)
class _VmView:
    instance_id: str
    power_state: PowerState
    host_uuid: str | None
    host_name: str | None
    ip: str | None


@dataclass(frozen=True)
class _HostView:
    name: str
    live: bool
    enabled: bool


class XenEventWatcher:
    def __init__(self, connection: XenConnection, *, timeout: float = 30.0, retry_delay: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, pool: str = DEFAULT_POOL):
        """`timeout`: how long one poll may block waiting for a change; `retry_delay`: the pause
        in `changes()` after the pool could not be reached. Hosts are named as PEX names the
        nodes of `pool` (pex.domain.pool.node_name)."""
        self.connection = connection
        self.pool = pool
        self.timeout = timeout
        self.retry_delay = retry_delay
        self._sleep = sleep
        self._session: Any = None
        self._session_url = connection.url
        self.token = ""
        self._objects: dict[str, dict[str, dict]] = {cls: {} for cls in SUBSCRIBED_CLASSES}
        self._vms: dict[str, _VmView] | None = None  # None until the first sync
        self._hosts: dict[str, _HostView] = {}
        self._resync_reason: str | None = None

    def poll(self) -> list[XenChange]:
        """One event.from round-trip: the changes since the last poll (possibly none).

        Raises XenTransportError if the pool cannot be reached (the next poll resyncs) and
        XenError for anything else xapi refuses.
        """
        try:
            with translated_errors():
                session = self._ensure_session()
                handle = session.handle
                batch = session.xenapi.event_from(list(SUBSCRIBED_CLASSES), self.token, float(self.timeout))
                if self.token and session.handle != handle:
                    # The client logged in again after SESSION_INVALID: xapi restarted or another
                    # master answers, and our token may count another database's generations
                    # (a token from the future blocks and reports nothing). Start over at once.
                    self._start_over("the session was renewed")
                    batch = session.xenapi.event_from(list(SUBSCRIBED_CLASSES), "", float(self.timeout))
        except XenTransportError:
            self._drop_session(logout=False)
            self._start_over("reconnected after a transport error")
            raise
        except XenError as error:
            if error.code == "HOST_IS_SLAVE":  # the master moved: log in again where it went
                if error.params:
                    self.connection.follow(self._session_url, error.params[0])
                self._drop_session(logout=False)
                self._start_over("the pool master changed")
                return []
            if error.code in RESYNC_CODES:
                self._start_over(f"xapi answered {error.code}")
                return []
            raise
        full_sync = self.token == ""
        if full_sync:
            self._objects = {cls: {} for cls in SUBSCRIBED_CLASSES}
        for event in batch["events"]:
            table = self._objects.setdefault(event["class"], {})
            if event["operation"] == "del":
                table.pop(event["ref"], None)
            elif "snapshot" in event:
                table[event["ref"]] = event["snapshot"]
        self.token = batch["token"]
        changes: list[XenChange] = []
        if full_sync and self._resync_reason is not None:
            changes.append(WatcherResynced(self._resync_reason))
            self._resync_reason = None
        return changes + self._diff()

    def changes(self, stop: threading.Event | None = None) -> Iterator[XenChange]:
        """Poll until `stop` is set (checked between polls, so at most `timeout` late),
        riding out transport errors by waiting `retry_delay` and resyncing."""
        while stop is None or not stop.is_set():
            try:
                batch = self.poll()
            except XenTransportError as error:
                log.warning("event watcher cannot reach the pool: %s", error)
                self._sleep(self.retry_delay)
                continue
            yield from batch

    def close(self) -> None:
        self._drop_session()

    def __enter__(self) -> XenEventWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _ensure_session(self) -> Any:
        if self._session is None:
            self._session = self.connection.open_session(timeout=self.timeout + SOCKET_MARGIN)
            self._session_url = self.connection.url
            if self.token:  # a new session may be on another master, whose generations differ
                self._start_over("logged in again")
        return self._session

    def _drop_session(self, logout: bool = True) -> None:
        session, self._session = self._session, None
        if session is not None:
            (close_session if logout else drop_session)(session)

    def _start_over(self, reason: str) -> None:
        self.token = ""
        if self._vms is not None:
            self._resync_reason = reason

    def _diff(self) -> list[XenChange]:
        hosts, vms = self._host_views(), self._vm_views()
        changes: list[XenChange] = []
        for uuid, host in sorted(hosts.items(), key=lambda h: h[1].name):
            before = self._hosts.get(uuid)
            if before is None or (before.live, before.enabled) != (host.live, host.enabled):
                changes.append(HostLivenessChanged(uuid, host.name, host.live, host.enabled,
                                                   before.live if before else None,
                                                   before.enabled if before else None))
        for uuid, host in sorted(self._hosts.items(), key=lambda h: h[1].name):
            if uuid not in hosts:
                changes.append(HostRemoved(uuid, host.name))
        known = self._vms or {}
        for uuid, vm in sorted(vms.items(), key=lambda v: v[1].instance_id):
            was = known.get(uuid)
            if was is None or was.power_state != vm.power_state:
                changes.append(VmPowerStateChanged(vm.instance_id, uuid, vm.power_state,
                                                   was.power_state if was else None,
                                                   vm.host_uuid, vm.host_name))
            elif vm.host_uuid != was.host_uuid and vm.power_state == PowerState.RUNNING:
                changes.append(VmMigrated(vm.instance_id, uuid, was.host_uuid, vm.host_uuid, vm.host_name))
            if vm.ip and (was is None or was.ip != vm.ip):
                changes.append(GuestIpReported(vm.instance_id, uuid, vm.ip))
        for uuid, vm in known.items():
            if uuid not in vms:
                changes.append(VmRemoved(vm.instance_id, uuid))
        self._hosts, self._vms = hosts, vms
        return changes

    def _host_views(self) -> dict[str, _HostView]:
        metrics = self._objects["host_metrics"]
        views = {}
        for host in self._objects["host"].values():
            host_metrics = metrics.get(host["metrics"])
            if host_metrics is not None:  # liveness unknown until its metrics arrive
                views[host["uuid"]] = _HostView(node_name(self.pool, host["name_label"]), bool(host_metrics["live"]), bool(host["enabled"]))
        return views

    def _vm_views(self) -> dict[str, _VmView]:
        hosts = {ref: (h["uuid"], node_name(self.pool, h["name_label"])) for ref, h in self._objects["host"].items()}
        guest_metrics = self._objects["vm_guest_metrics"]
        views = {}
        for vm in self._objects["vm"].values():
            instance_id = vm["other_config"].get(INSTANCE_KEY)
            if not instance_id or vm["is_a_template"] or vm["is_a_snapshot"] or vm["is_control_domain"]:
                continue
            metrics = guest_metrics.get(vm["guest_metrics"])
            host_uuid, host_name = hosts.get(vm["resident_on"], (None, None))
            views[vm["uuid"]] = _VmView(instance_id, PowerState(vm["power_state"]), host_uuid, host_name,
                                        guest_ip(metrics["networks"]) if metrics else None)
        return views
