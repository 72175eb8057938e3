"""Fixtures for the Xen adapter tests: a simulated pool on loopback, clients of it, and
helpers to wait for asynchronous outcomes without fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import XenAPI

from pex.adapters.xen.dispatcher import XenDispatcher
from pex.adapters.xen.watcher import XenEventWatcher
from tests.support import waiting
from tests.support.xen import PASSWORD, USERNAME, simulator_fixture
from tests.support.xen import make_dispatcher as dispatcher_for

GUEST_IP_DELAY = 0.05

simulator = simulator_fixture(guest_ip_delay=GUEST_IP_DELAY, seed=7)


@pytest.fixture
def make_dispatcher(simulator):
    made: list[XenDispatcher] = []

    def make(**options) -> XenDispatcher:
        dispatcher = dispatcher_for(options.pop("url", simulator.url), **{"poll_interval": 0.02, **options})
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


@pytest.fixture
def dispatcher(make_dispatcher) -> XenDispatcher:
    return make_dispatcher()


@pytest.fixture
def xenapi(simulator):
    """The raw client, logged in: `xenapi.VM.get_all()` etc."""
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password(USERNAME, PASSWORD, "1.2", "pex-tests")
    yield session.xenapi
    if session.handle:
        session.xenapi.session.logout()


@pytest.fixture
def watcher(dispatcher):
    with dispatcher.watcher(timeout=0.5, retry_delay=0.01) as w:
        yield w


@pytest.fixture
def eventually() -> Callable[..., object]:
    return waiting.eventually


@pytest.fixture
def watch_for():
    """Poll a watcher until a change satisfying `predicate` shows up; returns all changes seen."""

    def watch(watcher: XenEventWatcher, predicate: Callable[[object], bool], timeout: float = 5.0) -> list:
        seen: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen += watcher.poll()
            if any(predicate(change) for change in seen):
                return seen
        raise AssertionError(f"no matching change within {timeout}s; saw {seen}")

    return watch
