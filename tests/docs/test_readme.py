"""README.md's tour, run as printed against a fresh `pex serve`, every reply checked against
the `# →` comment below its curl (the convention: tests/support/docs.py); and its Python
snippet, run as printed.

The tour's auto-start example starts "two minutes from now" and `sleep 130`s: here it starts
5 s from now and the sleep is a bounded poll for a running VM (at most the 130 s printed), so
that the suite does not wait two minutes (tests.support.docs.SOON, WAIT_FOR_A_RUNNING_VM)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from pex.bootstrap import build_application
from pex.domain import Reply, State, Terms
from pex.settings import Settings
from tests.support.docs import ROOT, SOON, WAIT_FOR_A_RUNNING_VM, mismatches, run_document, section, shell_blocks

README = (ROOT / "README.md").read_text()
TOUR = section(README, "## A five-minute tour", "## Where to read on")
ETCH = "PEX Debian Etch 4.0 Template"


@pytest.mark.gunicorn
@pytest.mark.xen
def test_the_tour_gets_the_replies_it_shows(served):
    expected, run = run_document(shell_blocks(TOUR), served, prelude=SOON + WAIT_FOR_A_RUNNING_VM)
    assert mismatches(expected, run) == []


def python_snippet() -> str:
    (snippet,) = re.findall(r"^```python\n(.*?)^```", TOUR, re.M | re.S)
    return snippet


def run_snippet(tmp_path, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEX_")}
    return subprocess.run([sys.executable, "-c", python_snippet()], cwd=tmp_path, env={**env, "PEX_DATABASE_URL": url},
                          capture_output=True, text=True, timeout=120)


def alices(url: str) -> list:
    app = build_application(Settings(database_url=url))
    try:
        return app.list_reservations("alice")
    finally:
        app.close()


def test_the_python_snippet_books_on_an_empty_pool(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    result = run_snippet(tmp_path, url)
    assert result.returncode == 0, result.stderr
    assert [r.state for r in alices(url)] == [State.CONFIRMED]


def test_the_python_snippet_books_when_the_pool_is_full_then(tmp_path):
    """The pool is taken from before the snippet's start to after its end: the provider
    counters with a later start, and the snippet accepts it before confirming."""
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    app = build_application(Settings(database_url=url))
    try:
        start = datetime.now(UTC) + timedelta(minutes=30)
        rid = app.initiate_reservation("bob")
        assert app.submit_proposal(rid, Terms("XLARGE", ETCH, 5, 0, start, start + timedelta(hours=4))).reply == Reply.ACCEPT
        assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    finally:
        app.close()
    result = run_snippet(tmp_path, url)
    assert result.returncode == 0, result.stderr
    assert "COUNTER" in result.stdout
    assert [r.state for r in alices(url)] == [State.CONFIRMED]
