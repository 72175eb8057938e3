"""Fixtures for the reliability tests (their parts are tests.support.reliability): a XAPI
simulator served from the test process, timer worker processes, and the figures' summary."""

from __future__ import annotations

import pytest

from tests.support import reliability
from tests.support.reliability import TimerWorker
from tests.support.xen import simulator_fixture

simulator = simulator_fixture(guest_ip_delay=0.05, seed=7)


def pytest_terminal_summary(terminalreporter):
    if reliability._written:
        terminalreporter.section("reliability figures")
        for path in reliability._written:
            terminalreporter.write_line(f"{path.relative_to(reliability.ROOT)}")


@pytest.fixture
def make_timer_worker(tmp_path):
    made: list[TimerWorker] = []

    def make(database_url: str, xapi_url: str, **settings: str) -> TimerWorker:
        worker = TimerWorker(database_url, xapi_url, tmp_path, **settings)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()
