"""Fixtures for the docs' examples: `pex serve` as `make run` runs it, in a fresh directory."""

from __future__ import annotations

import pytest

from tests.support.docs import docs_server


@pytest.fixture
def served(tmp_path):
    with docs_server(tmp_path) as server:
        yield server
