"""End to end: `pex serve` as `make run` starts it (2 gunicorn workers, the embedded worker and
its simulated pool; an SQLite file under ./var/, or PostgreSQL), a few negotiations over HTTP,
and then `pex audit` compares the stored read models and the ledger with the log, leaving
nothing uncompared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from pex.bootstrap import build_application
from pex.projections.readmodels import ReadModels
from pex.settings import Settings
from pex.wire import rfc1123
from tests.support.api import ETCH
from tests.support.server import serving
from tests.support.waiting import eventually

pytestmark = pytest.mark.gunicorn

H = timedelta(hours=1)


def figure_7(size: str, fixed: int, start: datetime, hours: float) -> dict:
    return {
        "duration": int(hours * 3600 * 1000), "numInstancesFixed": fixed, "numInstancesOption": 0,
        "startTime": rfc1123(start), "template": ETCH, "type": size,
    }  # fmt: skip


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_after_a_pex_serve_session_pex_audit_compares_the_read_models_and_the_ledger(store, tmp_path, request):
    url = "sqlite:///var/pex.sqlite3" if store == "sqlite" else request.getfixturevalue("postgres_url")
    with serving(
        url, tmp_path, workers=2,
        extra_env={"PEX_XEN_URL": "", "PEX_EMBEDDED_WORKER": "y", "PEX_WORKER_TICK_SECONDS": "0.2"},
    ) as server:  # fmt: skip
        alice, filler = server.session(server.register("alice")), server.session(server.register("filler"))
        base = f"{server.url}/OpenPEX/reservations"
        start = (datetime.now(UTC) + 2 * 24 * H).replace(minute=0, second=0, microsecond=0)

        def post(session, body):
            reply = session.post(base, json=body, timeout=30)
            assert reply.status_code == 201, reply.text
            return reply.json()

        def step(session, rid, reply):
            answer = session.put(f"{base}/{rid}", json={"reply": reply}, timeout=30)
            assert answer.status_code == 200, answer.text
            return answer.json()

        full = post(filler, figure_7("XLARGE", 5, start, 24))
        assert step(filler, full["proposal"]["id"], "CONFIRM")["reply"] == "REQUEST_SUCCESS"
        countered = post(alice, figure_7("SMALL", 2, start, 6))
        assert countered["reply"] == "COUNTER"
        assert step(alice, countered["proposal"]["id"], "ACCEPT")["reply"] == "CONFIRM_REQUEST"
        assert step(alice, countered["proposal"]["id"], "CONFIRM")["reply"] == "REQUEST_SUCCESS"
        walked = post(alice, figure_7("SMALL", 1, start + 30 * H, 1))
        step(alice, walked["proposal"]["id"], "REJECT")

        # Lists from either gunicorn worker: each item is the resource as GET shows it.
        for _ in range(4):
            listed = alice.get(base, timeout=30).json()["reservations"]
            assert len(listed) == 2
            for item in listed:
                assert alice.get(f"{base}/{item['id']}", timeout=30).json() == item
        assert len(alice.get(f"{server.url}/OpenPEX/instances", timeout=30).json()["instances"]) == 2

        # A last write that nobody lists: the embedded worker seals it within a tick or two.
        deleted = post(alice, figure_7("SMALL", 1, start + 40 * H, 1))["proposal"]["id"]
        assert alice.delete(f"{base}/{deleted}", timeout=30).status_code == 200
        watching_url = url if store == "postgres" else f"sqlite:///{tmp_path}/var/pex.sqlite3"
        app = build_application(Settings(database_url=watching_url, create_tables=False, install_demo_pool=False))
        watcher = ReadModels(app, create_tables=False)  # reads positions only; never catches up
        try:
            head = app.recorder.max_notification_id()
            eventually(lambda: min(watcher.positions().values()) >= head, timeout=15, interval=0.1)
        finally:
            watcher.close()
            app.close()

    audit = subprocess.run(
        [sys.executable, "-m", "pex.cli", "audit", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, **server.env},
    )  # fmt: skip
    report = json.loads(audit.stdout)
    assert audit.returncode == 0 and report["ok"], audit.stdout + audit.stderr
    assert report["notes"] == []  # no "could not be read", nothing "not compared", nothing unsealed
    assert {"read models", "ledger"} <= set(report["checked"])
