"""What the simulator has been told to do wrong next.

Methods are named as in the API ("VM.start_on"); a fault on a method also hits its Async
variant (inside the task, where real xapi would report it). "*" matches every method.
Thread-safe: the control API writes here while request threads read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class _Countdown:
    remaining: int
    payload: Any = None  # a failure's description (list[str]) or a redirect's host (str)


class FaultPlan:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, list[_Countdown]] = {}
        self._latency: dict[str, float] = {}
        self._drops: dict[str, _Countdown] = {}
        self._http_errors: dict[str, _Countdown] = {}
        self._login_redirects: list[_Countdown] = []
        self._silent_guests: set[str] = set()
        self._migration_failures: list[tuple[str, _Countdown]] = []  # (VM selector, countdown of a message)

    # -- written by the control API ------------------------------------------------------

    def fail_next(self, method: str, error: list[str], times: int = 1) -> None:
        with self._lock:
            self._failures.setdefault(method, []).append(_Countdown(times, [str(e) for e in error]))

    def set_latency(self, method: str, seconds: float) -> None:
        with self._lock:
            if seconds > 0:
                self._latency[method] = seconds
            else:
                self._latency.pop(method, None)

    def drop_next(self, method: str, times: int) -> None:
        with self._lock:
            self._drops[method] = _Countdown(times)

    def http_error_next(self, method: str, times: int) -> None:
        with self._lock:
            self._http_errors[method] = _Countdown(times)

    def redirect_next_login(self, master_address: str, times: int) -> None:
        with self._lock:
            self._login_redirects.append(_Countdown(times, master_address))

    def silence_guest(self, selector: str) -> None:
        with self._lock:
            self._silent_guests.add(selector)

    def unsilence_guest(self, selector: str) -> None:
        with self._lock:
            self._silent_guests.discard(selector)

    def fail_next_migration(self, selector: str, message: str, times: int) -> None:
        with self._lock:
            self._migration_failures.append((selector, _Countdown(times, message)))

    def clear(self) -> None:
        with self._lock:
            self._migration_failures.clear()
            self._failures.clear()
            self._latency.clear()
            self._drops.clear()
            self._http_errors.clear()
            self._login_redirects.clear()
            self._silent_guests.clear()

    # -- read by the request path ----------------------------------------------------------

    def take_failure(self, method: str) -> list[str] | None:
        with self._lock:
            for key in (method, "*"):
                queue = self._failures.get(key)
                if queue:
                    head = queue[0]
                    head.remaining -= 1
                    if head.remaining <= 0:
                        queue.pop(0)
                    return list(head.payload)
            return None

    def latency(self, method: str) -> float:
        with self._lock:
            return self._latency.get(method, self._latency.get("*", 0.0))

    def take_drop(self, method: str) -> bool:
        return self._take(self._drops, method)

    def take_http_error(self, method: str) -> bool:
        return self._take(self._http_errors, method)

    def take_login_redirect(self) -> str | None:
        with self._lock:
            if not self._login_redirects:
                return None
            head = self._login_redirects[0]
            head.remaining -= 1
            if head.remaining <= 0:
                self._login_redirects.pop(0)
            return str(head.payload)

    def take_migration_failure(self, *identities: str) -> str | None:
        """The message a migration of the VM known by `identities` must fail with, if any."""
        with self._lock:
            for index, (selector, countdown) in enumerate(self._migration_failures):
                if selector == "*" or selector in identities:
                    countdown.remaining -= 1
                    if countdown.remaining <= 0:
                        del self._migration_failures[index]
                    return str(countdown.payload)
            return None

    def guest_silenced(self, *identities: str) -> bool:
        """True if the guest agent of a VM known by any of `identities` must never report."""
        with self._lock:
            return "*" in self._silent_guests or any(i in self._silent_guests for i in identities)

    def _take(self, table: dict[str, _Countdown], method: str) -> bool:
        with self._lock:
            for key in (method, "*"):
                countdown = table.get(key)
                if countdown and countdown.remaining > 0:
                    countdown.remaining -= 1
                    if countdown.remaining == 0:
                        del table[key]
                    return True
            return False
