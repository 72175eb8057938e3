"""The operator's pool commands and the API, pointed at a pool whose names PEX did not choose:
`pex init` and `pex pool sync` make its hosts the nodes, `pex admin template` offers one of its
templates, and whatever the pool does not have is refused (a message and a non-zero exit; a
problem+json 409 on the API)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pex.adapters.xen.enactment import XenEnactment
from pex.adapters.xen.simulator import run_simulator
from pex.adapters.xen.simulator.testbed import named_hosts
from pex.cli import main
from pex.settings import WorkerSettings
from tests.support.api import make_api
from tests.support.xen import PASSWORD, TEMPLATE, USERNAME, make_dispatcher

pytestmark = pytest.mark.xen


@pytest.fixture
def sim_pool():
    with run_simulator(named_hosts("sim-host-{}", 5), seed=17) as simulator:
        yield simulator


@pytest.fixture
def pex(sim_pool, tmp_path):
    env = {"PEX_DATABASE_URL": f"sqlite:///{tmp_path}/pex.sqlite3", "PEX_XEN_URL": sim_pool.url,
           "PEX_XEN_USERNAME": USERNAME, "PEX_XEN_PASSWORD": PASSWORD, "PEX_POOL_RESERVE": "memory_mb=256"}

    def run(*args: str, **extra: str):
        result = CliRunner().invoke(main, list(args), env={**env, **extra}, catch_exceptions=False)
        return result.exit_code, result.output

    return run


def test_init_and_pool_sync_make_the_pools_hosts_the_nodes_less_the_reserve(pex):
    code, out = pex("init")
    assert code == 0, out
    assert "nodes registered: sim-host-0, sim-host-1, sim-host-2, sim-host-3, sim-host-4" in out
    code, out = pex("nodes")
    assert code == 0 and "node1" not in out
    assert out.count("4 CPUs · 3840 MB · 204 GB") == 5, out
    code, out = pex("pool", "sync")
    assert code == 0 and "registered" not in out  # nothing new
    assert TEMPLATE in out and "offer one with" in out


def test_an_operator_offers_a_template_of_the_pool_by_name_or_uuid_and_no_other(pex, sim_pool):
    assert pex("init")[0] == 0
    code, out = pex("admin", "template", "Windows 95")
    assert code == 1 and "the Xen pool has no template 'Windows 95'" in out and TEMPLATE in out
    uuid = next(t.uuid for t in XenEnactment(make_dispatcher(sim_pool.url)).inventory().templates
                if t.name == "Ubuntu 24.04 LTS")
    code, out = pex("admin", "template", uuid)
    assert code == 0 and "template 'Ubuntu 24.04 LTS' registered" in out
    assert pex("admin", "template", TEMPLATE)[0] == 0


def test_a_node_the_pool_does_not_have_is_refused(pex):
    assert pex("init")[0] == 0
    code, out = pex("admin", "node", "node6", "--cpus", "4", "--memory-mb", "4096", "--disk-gb", "200")
    assert code == 1 and "the Xen pool has no host 'node6'" in out and "sim-host-0" in out


def test_pool_sync_without_a_pool_says_what_to_set(pex):
    code, out = pex("pool", "sync", PEX_XEN_URL="")
    assert code == 1 and "set PEX_XEN_URL" in out


def test_the_api_refuses_a_node_or_template_the_pool_does_not_have_with_a_problem(sim_pool):
    api = make_api(worker=WorkerSettings(xen_url=sim_pool.url))
    application = api.application
    application.sync_pool(XenEnactment(make_dispatcher(sim_pool.url)).inventory())
    api.user("root", admin=True)
    node6 = api.post("/OpenPEX/nodes", user="root", json={"name": "node6", "cpus": 4, "memoryMb": 4096, "diskGb": 200})
    assert node6.status_code == 409 and node6.headers["content-type"].startswith("application/problem+json")
    assert "the Xen pool has no host 'node6'" in node6.json["detail"]
    template = api.post("/OpenPEX/templates", user="root", json={"name": "Windows 95"})
    assert template.status_code == 409 and "no template 'Windows 95'" in template.json["detail"]
    offered = api.post("/OpenPEX/templates", user="root", json={"name": TEMPLATE})
    assert offered.status_code in (200, 201), offered.text
