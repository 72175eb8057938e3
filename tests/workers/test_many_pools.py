"""Two Xen pools on one store (issue 15, items 1 to 3 as far as one store goes): two simulated
XAPI pools whose hosts have the same names, each with its own worker (timer, dispatch and
monitors keep to their pool's instances), driven through the unmodified XenAPI client. Two
reservations of 5 XLARGE for the same hour are both accepted, one in each pool, and their VMs
run in their own pool; with one pool's master unreachable, the other pool's reservations
still start, and the lost pool's start by themselves once it answers again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.adapters.xen.errors import XenTransportError
from pex.adapters.xen.simulator import run_simulator
from pex.adapters.xen.simulator.testbed import named_hosts
from pex.clock import ManualClock
from pex.domain.values import Reply, Terms
from pex.projections.audit import Auditor
from tests.support import T0
from tests.support.waiting import eventually
from tests.support.world import GUEST_IP_DELAY, HOUR, build_world, closing_worlds
from tests.support.xen import TEMPLATE

pytestmark = pytest.mark.xen

HOSTS = [f"xen-{i}" for i in range(5)]  # in both pools: a host's name says nothing of its pool


@pytest.fixture
def east_pool():
    with run_simulator(named_hosts("xen-{}", 5), guest_ip_delay=GUEST_IP_DELAY, seed=31) as simulator:
        yield simulator


@pytest.fixture
def west_pool():
    with run_simulator(named_hosts("xen-{}", 5), guest_ip_delay=GUEST_IP_DELAY, seed=32) as simulator:
        yield simulator


@pytest.fixture
def pools(east_pool, west_pool, tmp_path):
    """The east and the west pool's workers, each a process of its own on one SQLite store."""
    database_url = f"sqlite:///{tmp_path}/pex.sqlite3"
    clock = ManualClock(T0)
    for make in closing_worlds(build_world):
        east = make(simulator=east_pool, database_url=database_url, clock=clock, pool=True, pool_name="east",
                    worker_id="east-1")
        west = make(simulator=west_pool, database_url=database_url, clock=clock, pool=True, pool_name="west",
                    worker_id="west-1")
        yield east, west


def reserve(world, instances: int, start, user: str) -> tuple:
    terms = Terms("XLARGE", TEMPLATE, instances, 0, start, start + HOUR, auto_start=True)
    rid = world.app.initiate_reservation(user)
    answer = world.app.submit_proposal(rid, terms)
    if answer.reply == Reply.ACCEPT:
        assert world.app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    return rid, answer.reply


def pex_vms(simulator) -> dict[str, tuple[str, str]]:
    """The pool's PEX VMs: instance id -> (host, power state)."""
    return {vm["pex_instance"]: (vm["host"], vm["power_state"])
            for vm in simulator.control.state()["vms"] if vm["pex_instance"]}


def run_until_running(world, rid) -> None:
    def running():
        world.tick()
        world.settle()
        views = world.instances(rid)
        return views if views and all(v.status == "RUNNING" and v.ip_address for v in views) else None

    eventually(running)


def test_the_same_host_names_in_two_pools_are_ten_nodes(pools):
    east, west = pools
    west.app.follow()
    assert sorted(n.name for n in west.app.nodes()) == [f"{p}:{h}" for p in ("east", "west") for h in HOSTS]


def test_two_reservations_of_5_xlarge_for_one_hour_are_accepted_one_in_each_pool_and_run_there(
        pools, east_pool, west_pool):
    east, west = pools
    start = T0 + HOUR
    first, reply = reserve(east, 5, start, "alice")
    assert reply == Reply.ACCEPT
    second, reply = reserve(west, 5, start, "bob")  # asked of the other pool's process: any will do
    assert reply == Reply.ACCEPT
    third, reply = reserve(east, 5, start, "carol")
    assert reply != Reply.ACCEPT  # both pools are full for that hour

    east.advance(HOUR)
    run_until_running(east, first)
    run_until_running(west, second)
    in_east, in_west = pex_vms(east_pool), pex_vms(west_pool)
    assert set(in_east) == {str(v.id) for v in east.instances(first)}
    assert set(in_west) == {str(v.id) for v in west.instances(second)}
    assert sorted(host for host, _ in in_east.values()) == HOSTS == sorted(host for host, _ in in_west.values())
    # Each pool's monitors compared only their own pool's VMs, by the names of their nodes:
    # none was reported vanished, nor moved to another host.
    for world in (east, west):
        world.monitors.resync()
        world.settle()
    assert {v.node for v in east.instances(first)} == {f"east:{h}" for h in HOSTS}
    assert {v.node for v in west.instances(second)} == {f"west:{h}" for h in HOSTS}
    assert all(v.status == "RUNNING" for v in east.instances(first) + west.instances(second))
    assert Auditor(east.app).run().ok


def test_with_one_pools_master_unreachable_the_other_pool_runs_and_the_lost_one_catches_up(
        pools, east_pool, west_pool):
    east, west = pools
    start = T0 + HOUR
    first, _ = reserve(east, 5, start, "alice")
    second, _ = reserve(west, 5, start, "bob")
    assert {v.node.partition(":")[0] for v in east.instances(first)} == {"east"}
    east_pool.control.drop_connection("*", times=10**6)  # the east master stops answering

    with pytest.raises(XenTransportError):
        east.monitors.step()  # unanswered (for longer than the test's grace, 0 s): east is unreachable
    assert east.app.catalogue().unreachable_pools == ("east",)

    east.advance(HOUR)
    east.tick()  # its dispatches fail, and are retried later
    run_until_running(west, second)
    assert pex_vms(west_pool) and not pex_vms(east_pool)
    # A reservation made while east is down is still negotiated, in west (east would have been
    # the best fit: both are free then), and west's still run.
    later, reply = reserve(west, 5, start + 2 * HOUR, "carol")
    assert reply == Reply.ACCEPT and {v.node.partition(":")[0] for v in west.instances(later)} == {"west"}

    east_pool.control.clear_faults()  # east answers again: its instances start by themselves

    def caught_up():
        east.advance(timedelta(minutes=1))  # past the retry's backoff
        east.tick()
        east.settle()
        views = east.instances(first)
        return views if all(v.status == "RUNNING" for v in views) else None

    eventually(caught_up)
    assert len(pex_vms(east_pool)) == 5
    east.monitors.step()  # it answers: reachable again, and first offers may go there again
    assert east.app.catalogue().unreachable_pools == ()
    again, reply = reserve(west, 5, start + 4 * HOUR, "dave")
    assert reply == Reply.ACCEPT and {v.node.partition(":")[0] for v in west.instances(again)} == {"east"}
