"""Many pools as an operator runs them (issue 15, item 1): PEX_POOLS names two simulated XAPI
pools whose hosts have the same names; `pex pool sync` makes all ten nodes, `pex worker --pool
NAME` runs each pool's workers, and `pex serve` negotiates across both. Two reservations of
5 XLARGE for the same seconds, asked over HTTP, are both accepted, one in each pool, their VMs
run in their own pool and stop at the end, and `pex audit` passes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from pex.adapters.xen.simulator import run_simulator
from pex.adapters.xen.simulator.testbed import named_hosts
from tests.support.server import start_server, stop_server
from tests.support.waiting import eventually
from tests.support.xen import PASSWORD, TEMPLATE, USERNAME
from tests.workers.test_commands import stop_process
from tests.workers.test_real_pool_end_to_end import book, pex

pytestmark = [pytest.mark.xen, pytest.mark.slow]

HOSTS = [f"xen-{i}" for i in range(5)]


@pytest.fixture
def two_pools():
    with run_simulator(named_hosts("xen-{}", 5), guest_ip_delay=0.2, seed=41) as east, \
            run_simulator(named_hosts("xen-{}", 5), guest_ip_delay=0.2, seed=42) as west:
        yield {"east": east, "west": west}


def pex_vms(simulator) -> dict[str, str]:
    """The pool's PEX VMs: instance id -> host."""
    return {vm["pex_instance"]: vm["host"] for vm in simulator.control.state()["vms"] if vm["pex_instance"]}


def test_two_pools_each_run_one_of_two_reservations_that_fill_a_pool(two_pools, tmp_path):
    (tmp_path / "west.password").write_text(PASSWORD + "\n")
    (tmp_path / "pools.toml").write_text(f"""
[pool.east]
xen_url = "{two_pools['east'].url}"
xen_username = "{USERNAME}"
xen_password = "{PASSWORD}"

[pool.west]
xen_url = "{two_pools['west'].url}"
xen_username = "{USERNAME}"
xen_password_file = "{tmp_path / 'west.password'}"
""")
    pools_env = {"PEX_POOLS": str(tmp_path / "pools.toml"), "PEX_EMBEDDED_WORKER": "n"}
    database_url = f"sqlite:///{tmp_path}/pex.sqlite3"
    env = {**os.environ, **pools_env, "PEX_DATABASE_URL": database_url, "PEX_WORKER_TICK_SECONDS": "0.1",
           "PEX_WATCH_TIMEOUT_SECONDS": "0.5", "PEX_RESYNC_SECONDS": "1"}
    server = start_server(database_url, tmp_path, workers=1, extra_env=pools_env)
    workers: list[subprocess.Popen] = []
    try:
        synced = pex(env, tmp_path, "pool", "sync")
        for pool in ("east", "west"):
            assert f"pool {pool}: nodes registered: {', '.join(f'{pool}:{h}' for h in HOSTS)}" in synced
        listed = pex(env, tmp_path, "nodes").splitlines()
        assert listed[0].split()[:2] == ["NODE", "POOL"]
        assert sum(1 for line in listed if line.split()[:2] == ["west:xen-3", "west"]) == 1
        pex(env, tmp_path, "admin", "template", TEMPLATE)
        pex(env, tmp_path, "users", "add", "root", "--admin", "--password-stdin", stdin="root-password-1\n")
        refused = subprocess.run([sys.executable, "-m", "pex.cli", "worker", "--once"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, check=False)
        assert refused.returncode != 0 and "names 2 pools (east, west): name the one to work on with --pool" in refused.stderr
        for pool in ("east", "west"):
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "pex.cli", "worker", "--pool", pool], env=env, cwd=tmp_path,
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"worker-{pool}.log", "wb")))
        root = server.session(("root", "root-password-1"))
        nodes = root.get(f"{server.url}/OpenPEX/nodes", timeout=10).json()["nodes"]
        assert sorted((n["pool"], n["name"]) for n in nodes) == [(p, f"{p}:{h}") for p in ("east", "west") for h in HOSTS]

        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
        reservations = {}
        for user in ("alice", "bob"):
            server.register(user)
            session = server.session((user, "correct horse battery"))
            reservations[user] = (session, book(session, server.url, "XLARGE", 5, start))

        def running(user):
            session, rid = reservations[user]
            listed = session.get(f"{server.url}/OpenPEX/instances", timeout=10).json()["instances"]
            return listed if len(listed) == 5 and all(i["status"] == "RUNNING" and i["ipAddress"] for i in listed) else None

        instances = {u: eventually(lambda u=u: running(u), timeout=60, interval=0.2, what=f"{u}'s 5 instances RUNNING")
                     for u in reservations}
        homes = {u: {i["node"].partition(":")[0] for i in listed} for u, listed in instances.items()}
        assert sorted(map(tuple, homes.values())) == [("east",), ("west",)]  # one pool each, not the same
        for user, listed in instances.items():
            (pool,) = homes[user]
            assert pex_vms(two_pools[pool]) == {i["id"]: i["node"].partition(":")[2] for i in listed}

        eventually(lambda: not any(pex_vms(sim) for sim in two_pools.values()), timeout=60, interval=0.2,
                   what="every VM gone after the end")
        audited = subprocess.run([sys.executable, "-m", "pex.cli", "audit"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, check=False)
        assert audited.returncode == 0, audited.stdout + audited.stderr
    finally:
        for worker in workers:
            stop_process(worker, within=30)
        stop_server(server)
