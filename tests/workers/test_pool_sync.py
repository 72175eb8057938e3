"""The pool is the truth about nodes (issue 13, item 1): pointed at a XAPI pool whose host and
template names PEX did not choose, PEX makes every host a node with what Xen can give guests,
offers only the pool's templates an operator chose, and follows hosts that join, leave, or are
disabled. Against the simulator, through the unmodified XenAPI client."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.adapters.xen.simulator import run_simulator
from pex.adapters.xen.simulator.testbed import named_hosts
from pex.domain.errors import CatalogueError
from pex.domain.pool import PoolReserve
from pex.domain.values import Resources
from tests.support.world import GUEST_IP_DELAY, HOUR, build_world, closing_worlds
from tests.support.xen import TEMPLATE

pytestmark = pytest.mark.xen

SIM_HOSTS = [f"sim-host-{i}" for i in range(5)]
# What a simulated host gives guests: 4 CPUs, 4 GiB (its total less dom0's 752 MiB and Xen's
# 64 MiB), and a fifth of the shared 1 TiB default SR.
GUEST_CAPACITY = Resources(cpus=4, memory_mb=4096, disk_gb=1024 // 5)


@pytest.fixture
def sim_pool():
    with run_simulator(named_hosts("sim-host-{}", 5), guest_ip_delay=GUEST_IP_DELAY, seed=13) as simulator:
        yield simulator


@pytest.fixture
def make_pool_world(sim_pool):
    yield from closing_worlds(lambda **options: build_world(sim_pool, pool=True, **options))


@pytest.fixture
def pool_world(make_pool_world):
    return make_pool_world()


def test_every_host_of_the_pool_is_a_node_named_by_its_name_label_and_no_demo_node_is(pool_world):
    nodes = {n.name: n for n in pool_world.app.nodes()}
    assert sorted(nodes) == SIM_HOSTS
    assert all(n.capacity == GUEST_CAPACITY and n.available for n in nodes.values())
    catalogue = pool_world.app.catalogue()
    assert "SMALL" in catalogue.sizes  # the paper's sizes stay
    assert list(catalogue.templates) == [TEMPLATE]  # only the one the operator chose


def test_the_operators_reserve_is_kept_back_pool_wide_and_per_host(make_pool_world):
    reserve = PoolReserve.parse("memory_mb=512; sim-host-0: cpus=1, memory_mb=1024, disk_gb=4")
    nodes = {n.name: n.capacity for n in make_pool_world(reserve=reserve).app.nodes()}
    assert nodes["sim-host-0"] == Resources(3, 3072, GUEST_CAPACITY.disk_gb - 4)
    assert {nodes[h] for h in SIM_HOSTS[1:]} == {Resources(4, 3584, GUEST_CAPACITY.disk_gb)}


def test_a_second_sync_of_an_unchanged_pool_records_nothing(pool_world):
    enactment = pool_world.app.dispatch_now.enactment
    before = pool_world.app.recorder.max_notification_id()
    result = pool_world.app.sync_pool(enactment.inventory())
    assert not result.changed
    assert pool_world.app.recorder.max_notification_id() == before


def test_a_node_or_template_the_pool_does_not_have_is_refused_with_the_pools_names(pool_world):
    with pytest.raises(CatalogueError, match="no host 'node6'.*sim-host-0"):
        pool_world.app.register_node("node6", Resources(4, 4096, 200))
    with pytest.raises(CatalogueError, match="is a host of the Xen pool"):
        pool_world.app.register_node("sim-host-1", Resources(4, 4096, 200))
    with pytest.raises(CatalogueError, match="no template 'Windows 95'"):
        pool_world.app.register_template("Windows 95")
    with pytest.raises(CatalogueError, match="PEX_POOL_RESERVE"):
        pool_world.app.resize_node("sim-host-1", Resources(2, 1024, 10))
    assert sorted(n.name for n in pool_world.app.nodes()) == SIM_HOSTS


def test_a_template_is_offered_by_the_pools_uuid_under_its_name(pool_world):
    uuid = next(u for u, name in pool_world.app.pool_templates().items() if name == "Ubuntu 24.04 LTS")
    assert pool_world.app.register_template(uuid) == "Ubuntu 24.04 LTS"
    assert sorted(pool_world.app.catalogue().templates) == sorted([TEMPLATE, "Ubuntu 24.04 LTS"])


def test_a_host_that_joins_the_pool_becomes_a_node_when_the_feed_reports_it(pool_world):
    pool_world.settle()
    pool_world.control.add_host("sim-host-5", cpus=8, guest_memory_mb=8192)
    pool_world.settle()
    nodes = {n.name: n for n in pool_world.app.nodes()}
    assert nodes["sim-host-5"].capacity.cpus == 8 and nodes["sim-host-5"].capacity.memory_mb == 8192
    assert nodes["sim-host-5"].available


def test_a_disabled_host_takes_no_new_bookings_and_its_future_bookings_are_re_placed(pool_world):
    rid = pool_world.reserve(size="XLARGE", fixed=1, start_in=HOUR)
    [booked] = [a.node for a in pool_world.app.get_reservation(rid).offer.placement]
    pool_world.settle()
    api = pool_world.dispatcher._api()
    api.host.disable(api.host.get_by_name_label(booked)[0])
    pool_world.settle()
    assert not {n.name: n for n in pool_world.app.nodes()}[booked].available
    pool_world.tick()  # the Scheduler re-places what the lost node held
    [now_on] = [a.node for a in pool_world.app.get_reservation(rid).offer.placement]
    assert now_on != booked and now_on in SIM_HOSTS
    assert pool_world.instance(rid).node == now_on


def test_a_host_that_leaves_the_pool_takes_no_new_bookings_and_its_bookings_move(pool_world):
    rid = pool_world.reserve(size="XLARGE", fixed=2, start_in=HOUR)  # one XLARGE fills a host
    placed = sorted(a.node for a in pool_world.app.get_reservation(rid).offer.placement)
    leaving = next(n for n in placed if n != "sim-host-0")  # the master cannot leave
    pool_world.settle()
    pool_world.control.remove_host(leaving)
    pool_world.settle()
    assert not {n.name: n for n in pool_world.app.nodes()}[leaving].available
    pool_world.tick()
    now_on = sorted(a.node for a in pool_world.app.get_reservation(rid).offer.placement)
    assert leaving not in now_on and len(now_on) == 2
    pool_world.advance(HOUR + timedelta(seconds=1))
    pool_world.tick()
    views = pool_world.wait_for_ips(rid)
    assert [v.status for v in views] == ["RUNNING", "RUNNING"] and sorted(v.node for v in views) == now_on
