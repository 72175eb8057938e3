"""Shared fixtures: stores of every kind PEX runs on, a manual clock, the PostgreSQL server."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.settings import Settings
from tests.support import T0

settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def postgres():
    from tests.pg import start_postgres

    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres) -> str:
    return postgres.create_database()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    if request.param == "memory":
        return "memory:"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pex.sqlite3"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def app(database_url, clock):
    application = build_application(Settings(database_url=database_url), clock=clock)
    yield application
    application.close()


@pytest.fixture
def memory_app(clock):
    application = build_application(Settings(database_url="memory:"), clock=clock)
    yield application
    application.close()
