"""`pex worker`, `pex xen-sim` and the embedded default that `pex serve` starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from pex.bootstrap import build_application, build_worker_process, start_embedded
from pex.cli import main
from pex.domain.values import Reply, Terms
from pex.projections.readmodels import ReadModels
from pex.settings import Settings, WorkerSettings
from tests.support.waiting import eventually
from tests.support.xen import TEMPLATE, make_dispatcher

pytestmark = pytest.mark.xen


def test_worker_once_runs_against_a_simulated_pool_when_no_pool_is_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("PEX_DATABASE_URL", f"sqlite:///{tmp_path}/pex.sqlite3")
    monkeypatch.delenv("PEX_XEN_URL", raising=False)
    result = CliRunner().invoke(main, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "tick:" in result.output


def negotiate(app, user: str = "alice", hours_from_now: float = 2) -> object:
    start = datetime.now(UTC) + timedelta(hours=hours_from_now)
    rid = app.initiate_reservation(user)
    assert app.submit_proposal(rid, Terms("SMALL", TEMPLATE, 1, 0, start, start + timedelta(hours=1))).reply == Reply.ACCEPT
    return rid


def test_worker_once_brings_the_read_models_and_the_ledger_up_to_the_head_of_the_log(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    monkeypatch.setenv("PEX_DATABASE_URL", url)
    monkeypatch.delenv("PEX_XEN_URL", raising=False)
    app = build_application(Settings(database_url=url))
    try:
        rid = negotiate(app)
        head = app.recorder.max_notification_id()

        result = CliRunner().invoke(main, ["worker", "--once"])

        assert result.exit_code == 0, result.output
        assert "read models and ledger at #" in result.output
        read_models = ReadModels(app, create_tables=False)
        try:
            assert min(read_models.positions().values()) >= head
            assert [r.id for r in read_models.reservations(fresh=False)] == [rid]
        finally:
            read_models.close()
    finally:
        app.close()


def test_a_running_worker_keeps_the_read_models_and_the_ledger_current_while_nobody_reads(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/pex.sqlite3")
    worker = build_worker_process(settings, WorkerSettings(tick=0.05, simulated_guest_ip_delay=0.05)).start()
    app = build_application(replace(settings, create_tables=False, install_demo_pool=False))
    read_models = ReadModels(app, create_tables=False)  # only looks: fresh=False never catches up
    try:
        for n in range(3):
            rid = negotiate(app, hours_from_now=n + 2)
            head = app.recorder.max_notification_id()
            eventually(lambda: min(read_models.positions().values()) >= head, timeout=10)  # noqa: B023 (awaited here)
            assert rid in [r.id for r in read_models.reservations(fresh=False)]
    finally:
        read_models.close()
        app.close()
        worker.stop()


def test_worker_settings_come_from_the_environment():
    settings = WorkerSettings.from_env({"PEX_XEN_URL": "https://pool:443/", "PEX_XEN_PASSWORD": "s3cret",
                                        "PEX_DISPATCH_LEASE_SECONDS": "60", "PEX_EMBEDDED_WORKER": "auto"})
    assert (settings.xen_url, settings.xen_username, settings.lease) == ("https://pool:443/", "root", timedelta(seconds=60))
    assert not settings.simulated and not settings.embedded_enabled
    assert WorkerSettings.from_env({}).embedded_enabled
    assert not WorkerSettings.from_env({"PEX_EMBEDDED_WORKER": "n"}).embedded_enabled


def test_no_embedded_worker_when_a_real_pool_is_configured(tmp_path):
    handle = start_embedded(Settings(database_url=f"sqlite:///{tmp_path}/pex.sqlite3"),
                            WorkerSettings(xen_url="https://pool.example:443/"))
    assert not handle.running
    handle.stop()


@pytest.mark.slow
def test_the_embedded_worker_runs_reservations_on_its_simulated_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("PEX_WORKER_TICK_SECONDS", "0.1")
    monkeypatch.setenv("PEX_SIM_GUEST_IP_DELAY_SECONDS", "0.05")
    monkeypatch.delenv("PEX_XEN_URL", raising=False)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/pex.sqlite3")
    handle = start_embedded(settings, WorkerSettings.from_env())
    app = build_application(settings)
    try:
        assert handle.running
        now = datetime.now(UTC)
        rid = app.initiate_reservation("alice")
        terms = Terms("SMALL", TEMPLATE, 2, 0, now + timedelta(seconds=1), now + timedelta(hours=1), auto_start=True)
        assert app.submit_proposal(rid, terms).reply == Reply.ACCEPT
        app.confirm(rid)
        views = eventually(
            lambda: [v for v in app.list_instances() if v.status == "RUNNING" and v.ip_address] or None, timeout=20
        )
        assert views
    finally:
        app.close()
        handle.stop()
    assert not handle.running and [p.returncode for p in handle.processes] == [0]


def stop_process(process: subprocess.Popen, within: float = 10) -> int:
    """SIGTERM, then SIGKILL if it is still there after `within` s: never SIGINT, which a test
    run as a background job (`nohup make test &`) passes on ignored to what it starts."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@pytest.fixture(params=["sigint-default", "sigint-ignored"])
def xen_sim(request):
    """`pex xen-sim` on a free loopback port, as a shell starts it in the foreground or in the
    background (SIGINT ignored); stopped by the finalizer whatever the test did."""
    ignore_sigint = request.param == "sigint-ignored"
    process = subprocess.Popen(
        [sys.executable, "-m", "pex.cli", "xen-sim", "--bind", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PEX_LOG_LEVEL": "WARNING"},
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
    )
    request.addfinalizer(lambda: stop_process(process))
    line = process.stderr.readline()
    assert "XAPI simulator: " in line, line
    return process, line.split("XAPI simulator: ")[1].split(" ")[0]


@pytest.mark.slow
def test_xen_sim_serves_the_papers_testbed(xen_sim):
    process, url = xen_sim
    dispatcher = make_dispatcher(url)
    try:
        assert [h.name for h in dispatcher.hosts()] == [f"node{i}" for i in range(1, 6)]
    finally:
        dispatcher.close()
    assert stop_process(process) == 0  # SIGTERM is a clean stop, not a kill


def test_a_worker_stops_with_its_parent(tmp_path):
    """The embedded worker exits by itself if the process that started it dies."""
    script = (
        "import subprocess, sys, os\n"
        "p = subprocess.Popen([sys.executable, '-m', 'pex.workers', '--exit-with-parent', str(os.getpid())])\n"
        "print(p.pid, flush=True)\n"
    )
    env = {**os.environ, "PEX_DATABASE_URL": f"sqlite:///{tmp_path}/pex.sqlite3", "PEX_LOG_LEVEL": "WARNING"}
    env.pop("PEX_XEN_URL", None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=30)
    child = int(out.stdout.strip())

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        # A zombie waiting for init to reap it is gone too.
        with open(f"/proc/{child}/stat") as stat:
            return stat.read().split()[2] == "Z"

    assert eventually(gone, timeout=20, interval=0.2)
    time.sleep(0)
