"""What the tests share, defined once: the test clock's epoch, waiting, the simulated Xen pool,
PEX in process (API, portal, a worker's world), the live servers and processes.

conftest.py files only register fixtures built from these; test modules import from here."""

from __future__ import annotations

from datetime import UTC, datetime

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday morning
