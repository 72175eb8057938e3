"""Fixtures for the API tests: the real Falcon app in process (tests.support.api), the portal
beside it for the account tests that use both (tests.support.portal), and a real gunicorn on
PostgreSQL (tests.support.server)."""

from __future__ import annotations

import pytest

from tests.support.api import make_api
from tests.support.portal import make_portal
from tests.support.server import serving


@pytest.fixture
def api():
    api = make_api()
    yield api
    api.read_models.close()
    api.application.close()
    assert api.contract.violations == [], "responses broke the OpenAPI contract:\n" + "\n".join(api.contract.violations)


@pytest.fixture
def portal():
    p = make_portal()
    yield p
    p.close()


@pytest.fixture
def live_server(postgres_url, tmp_path):
    with serving(postgres_url, tmp_path, workers=2) as server:
        yield server
