"""Many Xen pools (issue 15, item 1, and item 2 within one store): the nodes of each pool are
named after it, a reservation's instances all live in one pool, searched in every pool before
its first offer and in its own after, and a sync of one pool leaves the others' nodes alone.
On the service layer in memory, with the pools' inventories as their adapter reports them
(pex.application.ports); tests/workers/test_many_pools.py runs them on simulated XAPI pools."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from pex.application.ports import PoolHost, PoolInventory, PoolTemplate
from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain.catalogue import CATALOGUE_ID, Catalogue
from pex.domain.errors import CatalogueError
from pex.domain.node import node_id
from pex.domain.pool import DEFAULT_POOL, host_name, node_name
from pex.domain.values import Reply, Resources, Terms
from pex.projections.audit import Auditor
from pex.projections.capacity import CapacityTimeline
from pex.settings import Settings, SettingsError
from pex.workers.index import DispatchIndex
from pex.workers.monitors import Monitors
from tests.support import T0

HOUR = timedelta(hours=1)
TEMPLATE = "Debian 12"
# What a host gives guests: one XLARGE (4 CPUs, 3584 MiB) and no second.
HOST = Resources(cpus=4, memory_mb=4096, disk_gb=200)


def inventory(*hosts: str, templates: tuple[str, ...] = (TEMPLATE,), down: tuple[str, ...] = ()) -> PoolInventory:
    return PoolInventory(
        tuple(PoolHost(h, f"uuid-{h}", HOST, h not in down) for h in hosts),
        tuple(PoolTemplate(f"uuid-{t}", t) for t in templates),
    )


def east(*hosts: str, **options) -> PoolInventory:
    """The east pool as its adapter reports it: its hosts under their nodes' names."""
    return inventory(*(node_name("east", h) for h in hosts or ("xen-0", "xen-1", "xen-2", "xen-3", "xen-4")), **options)


def west(*hosts: str, **options) -> PoolInventory:
    return inventory(*(node_name("west", h) for h in hosts or ("xen-0", "xen-1", "xen-2", "xen-3", "xen-4")), **options)


@pytest.fixture
def app():
    clock = ManualClock(T0)
    application = build_application(Settings(database_url="memory:", install_demo_pool=False), clock=clock)
    application.pool_configured = True
    application.install_demo_pool()  # the sizes only: nodes and templates come from the pools
    application.sync_pool(east(), pool="east")
    application.sync_pool(west(), pool="west")
    application.register_template(TEMPLATE)
    yield application
    application.close()


def propose(app, instances: int, start, hours: float = 1, user: str = "alice", size: str = "XLARGE", rid=None):
    terms = Terms(size, TEMPLATE, instances, 0, start, start + timedelta(hours=hours))
    rid = rid or app.initiate_reservation(user)
    return rid, app.submit_proposal(rid, terms)


def pools_of(app, view) -> set[str]:
    return {app._node(a.node).pool for a in view.offer.placement}


def test_a_node_is_named_by_its_pool_and_host_except_in_the_default_pool():
    assert node_name("east", "xen-0") == "east:xen-0"
    assert host_name("east", "east:xen-0") == "xen-0"
    assert node_name(DEFAULT_POOL, "xen-0") == host_name(DEFAULT_POOL, "xen-0") == "xen-0"


def test_hosts_of_the_same_name_in_two_pools_are_two_nodes_each_in_its_pool(app):
    nodes = {n.name: n.pool for n in app.nodes()}
    assert nodes == {**{f"east:xen-{i}": "east" for i in range(5)}, **{f"west:xen-{i}": "west" for i in range(5)}}
    assert app.pools() == ["east", "west"]


def test_two_reservations_that_fill_a_pool_each_are_both_accepted_one_in_each_pool(app):
    start = T0 + 2 * HOUR
    first, answer = propose(app, 5, start)
    assert answer.reply == Reply.ACCEPT
    assert app.confirm(first).reply == Reply.REQUEST_SUCCESS
    second, answer = propose(app, 5, start, user="bob")
    assert answer.reply == Reply.ACCEPT
    assert pools_of(app, app.get_reservation(first)) != pools_of(app, app.get_reservation(second))
    assert all(len(pools_of(app, app.get_reservation(r))) == 1 for r in (first, second))
    # A third finds no pool with room at that hour: it is not placed across the two.
    _, answer = propose(app, 5, start, user="carol")
    assert answer.reply != Reply.ACCEPT


def test_instances_that_fit_only_across_pools_are_countered_within_one(app):
    start = T0 + 2 * HOUR
    for user, count in (("alice", 3), ("bob", 3)):  # 2 left in each pool at that hour
        rid, answer = propose(app, count, start, user=user)
        assert answer.reply == Reply.ACCEPT
        app.confirm(rid)
    rid, answer = propose(app, 4, start, user="carol")
    assert answer.reply == Reply.COUNTER
    view = app.get_reservation(rid)
    assert len(pools_of(app, view)) == 1
    assert view.offer.terms.start != start or view.offer.terms.instances < 4
    for alternative in view.alternatives:
        assert {app._node(a.node).pool for a in alternative.placement} <= pools_of(app, view)


def test_after_its_first_offer_a_reservation_is_answered_in_its_own_pool_only(app):
    start = T0 + 2 * HOUR
    booked = {}
    # East: full the hour after, 2 left at the hour; west: 1 left at the hour, free after.
    for user, count, at in (("alice", 5, start + HOUR), ("bob", 3, start), ("dave", 4, start)):
        rid, answer = propose(app, count, at, user=user)
        assert answer.reply == Reply.ACCEPT
        app.confirm(rid)
        booked[user] = pools_of(app, app.get_reservation(rid))
    assert booked == {"alice": {"east"}, "bob": {"east"}, "dave": {"west"}}
    # 3 fit nowhere at the hour; the nearest start is west's, the hour after.
    rid, answer = propose(app, 3, start, user="carol")
    assert answer.reply == Reply.COUNTER
    view = app.get_reservation(rid)
    assert pools_of(app, view) == {"west"} and view.offer.terms.start == start + HOUR
    # 2 fit at the hour in east only: the answer stays in the reservation's own pool.
    _, answer = propose(app, 2, start, user="carol", rid=rid)
    view = app.get_reservation(rid)
    assert pools_of(app, view) == {"west"}
    assert answer.reply == Reply.COUNTER and view.offer.terms.start != start


def test_a_sync_of_one_pool_leaves_the_other_pools_nodes_alone(app):
    result = app.sync_pool(east("xen-0", "xen-1", "xen-2", "xen-3"), pool="east")  # xen-4 left east
    assert result.lost == ("east:xen-4",)
    available = {n.name for n in app.nodes() if n.available}
    assert "east:xen-4" not in available
    assert {f"west:xen-{i}" for i in range(5)} <= available
    assert not app.sync_pool(west(), pool="west").changed


def test_a_template_must_be_in_every_pool_to_be_offered(app):
    app.sync_pool(east(templates=(TEMPLATE, "Windows 95")), pool="east")
    with pytest.raises(CatalogueError, match="not in every pool.*west"):
        app.register_template("Windows 95")
    app.sync_pool(west(templates=(TEMPLATE, "Windows 95")), pool="west")
    assert app.register_template("uuid-Windows 95") == "Windows 95"


def test_a_window_of_availability_is_in_one_pool(app):
    start = T0 + 2 * HOUR
    for user in ("alice", "bob"):  # 2 left in each pool at that hour
        rid, answer = propose(app, 3, start, user=user)
        app.confirm(rid)
    windows = app.availability("carol", "XLARGE", 3, HOUR, start, start + 2 * HOUR)
    assert windows and all(not (w.start < start + HOUR and w.end > start) for w in windows)
    assert app.availability("carol", "XLARGE", 2, HOUR, start, start)[0].start == start


# --- PEX_POOLS ----------------------------------------------------------------------------

def pools_file(tmp_path, text: str) -> dict[str, str]:
    path = tmp_path / "pools.toml"
    path.write_text(text)
    return {"PEX_POOLS": str(path), "PEX_DATABASE_URL": "sqlite:///var/pex.sqlite3"}


def test_pex_pools_names_each_pool_with_its_master_and_credentials(tmp_path):
    (tmp_path / "west.password").write_text("s3cret west\nignored\n")
    env = pools_file(tmp_path, f"""
[pool.east]
xen_url = "https://east.example:443/"
xen_username = "pex"
xen_password = "s3cret east"
reserve = "memory_mb=512"

[pool.west]
xen_url = "https://west.example/"
xen_password_file = "{tmp_path}/west.password"
xen_members = ["10.0.0.2", "10.0.0.3"]
database_url = "sqlite:///var/pex.sqlite3"
""")
    settings = Settings.from_env({**env, "PEX_WORKER_TICK_SECONDS": "0.5"})
    east_pool, west_pool = settings.pools
    assert (east_pool.pool, east_pool.xen_url, east_pool.xen_username, east_pool.xen_password) == (
        "east", "https://east.example:443/", "pex", "s3cret east")
    assert east_pool.pool_reserve.pool_wide == Resources(0, 512, 0)
    assert (west_pool.pool, west_pool.xen_username, west_pool.xen_password, west_pool.xen_members) == (
        "west", "root", "s3cret west", ("10.0.0.2", "10.0.0.3"))
    assert east_pool.tick == west_pool.tick == 0.5  # the environment's, for every pool
    assert settings.worker == east_pool and settings.pool("west") == west_pool
    with pytest.raises(SettingsError, match="names 2 pools.*--pool"):
        settings.pool(None)
    with pytest.raises(SettingsError, match="no pool 'north'"):
        settings.pool("north")


def test_without_pex_pools_there_is_one_pool_named_default():
    settings = Settings.from_env({"PEX_XEN_URL": "https://pool.example/"})
    assert [p.pool for p in settings.pools] == [DEFAULT_POOL]
    assert settings.pool(None) == settings.worker


@pytest.mark.parametrize(("text", "error"), [
    ("[pool.east]\nxen_username = 'root'\n", r"\[pool.east\]: set xen_url"),
    ("[pool.East]\nxen_url = 'https://e/'\n", "lowercase letters"),
    ("[pool.east]\nxen_url = 'https://e/'\nxen_pasword = 'x'\n", "unknown xen_pasword"),
    ("[pool.east]\nxen_url = 'https://e/'\nxen_password = 'x'\nxen_password_file = '/p'\n", "not both"),
    ("[pool.east]\nxen_url = 'https://e/'\nxen_password_file = '/nonexistent/pw'\n", "cannot read xen_password_file"),
    ("[pool.east]\nxen_url = 'https://e/'\ndatabase_url = 'postgresql://db2/pex'\n", "not supported yet"),
    ("[pool.east]\nxen_url = 'https://e/'\nxen_ignore_ssl = 'yes'\n", "true or false"),
    ("[pool.east]\nxen_url = 'https://e/'\nxen_members = '10.0.0.2'\n", "list of strings"),
    ("[pools.east]\nxen_url = 'https://e/'\n", r"\[pool.NAME\] tables"),
    ("[pool.east\n", "is not TOML"),
])
def test_a_pools_file_that_is_not_as_documented_is_refused_saying_what_is_wrong(tmp_path, text, error):
    with pytest.raises(SettingsError, match=error):
        Settings.from_env(pools_file(tmp_path, text))


def test_pex_pools_and_pex_xen_url_together_are_refused(tmp_path):
    env = pools_file(tmp_path, "[pool.default]\nxen_url = 'https://pool.example/'\n")
    with pytest.raises(SettingsError, match="unset PEX_XEN_URL"):
        Settings.from_env({**env, "PEX_XEN_URL": "https://pool.example/"})
    assert [p.pool for p in Settings.from_env(env).pools] == [DEFAULT_POOL]


def test_a_pools_file_that_cannot_be_read_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="cannot read"):
        Settings.from_env({"PEX_POOLS": str(tmp_path / "missing.toml")})


def test_the_audit_finds_a_reservation_booked_in_two_pools(app):
    start = T0 + 2 * HOUR
    rid, answer = propose(app, 2, start)
    app.confirm(rid)
    assert Auditor(app).run().ok
    # As a bug would: a third instance's booking in the other pool, in the same save as the others.
    view = app.get_reservation(rid)
    (home,) = pools_of(app, view)
    other = next(n for n in app.nodes() if n.pool != home)
    node = app._node(other.name)
    node.book(rid, start, start + HOUR, 1, view.offer.per_instance, app.clock())
    app.save(node)
    report = Auditor(app).run()
    assert any("is booked in the pools east, west: its instances live in one" in v.message
               for v in report.by_promise()["bookings"])


def test_of_the_pools_where_a_proposal_fits_the_one_with_the_least_room_takes_it(app):
    start = T0 + 2 * HOUR
    homes = []
    for user, count in (("alice", 2), ("bob", 4), ("dave", 1)):  # east 3 left, west 1, then dave
        rid, answer = propose(app, count, start, user=user)
        assert answer.reply == Reply.ACCEPT
        homes.append(pools_of(app, app.get_reservation(rid)))
    assert homes == [{"east"}, {"west"}, {"west"}]  # dave fits both: best fit, not the first by name


def test_a_first_proposal_is_evaluated_in_three_pools_at_most_those_with_the_most_room(app):
    for pool in ("north", "south"):
        app.sync_pool(inventory(*(node_name(pool, f"xen-{i}") for i in range(5))), pool=pool)
    start = T0 + 2 * HOUR
    # Best fit: east takes 5, north 4, south 3, and west 4 (south has 2 left): 0, 1, 2 and 1 left.
    for user, pool_room in (("alice", 5), ("bob", 4), ("dave", 3), ("erin", 4)):
        rid, answer = propose(app, pool_room, start, user=user)
        assert answer.reply == Reply.ACCEPT
        app.confirm(rid)
    left = {p: sum(1 for n in app.nodes() if n.pool == p) - sum(
        r.instances for r in app.list_reservations() if pools_of(app, r) == {p}) for p in app.pools()}
    assert left == {"east": 0, "north": 1, "south": 2, "west": 1}
    searched = []
    negotiator = app.negotiator

    def spying(terms, size, view, *args, **kwargs):
        searched.append({app.timeline.nodes[n].pool for n in view.node_names()})
        return negotiator(terms, size, view, *args, **kwargs)

    app.negotiator = spying
    _, answer = propose(app, 4, start, user="frank")  # fits nowhere at that hour
    assert answer.reply == Reply.COUNTER
    by_room = sorted(left, key=lambda p: -left[p])
    assert searched[:3] == [{p} for p in by_room[:3]]  # (re-packing may ask again, in those pools only)
    assert all(len(pools) == 1 and pools <= set(by_room[:3]) for pools in searched)


def test_what_an_earlier_pex_stored_reads_as_the_pool_default():
    """docs/events.md: `pool` is new in Node.Registered and Catalogue.PoolSynced, and in the
    start-up checkpoints of the timeline and of the workers' index; what was stored without it
    (every store of a PEX before PEX_POOLS) reads as the one pool, `default`."""
    app = build_application(Settings(database_url="memory:", install_demo_pool=False), clock=ManualClock(T0))
    app.pool_configured = True
    app.install_demo_pool()
    app.sync_pool(inventory("xen-0", "xen-1"))

    def as_stored_before_pools(aggregate_id, kind):
        stored = next(s for s in app.recorder.select_events(aggregate_id) if s.topic.endswith(kind))
        state = json.loads(stored.state)
        assert state.pop("pool") == DEFAULT_POOL  # today's shape records it
        return app.mapper.to_domain_event(replace(stored, state=json.dumps(state).encode()))

    registered = as_stored_before_pools(node_id("xen-0"), "Node.Registered")
    assert registered.pool == DEFAULT_POOL and registered.mutate(None).pool == DEFAULT_POOL
    synced = as_stored_before_pools(CATALOGUE_ID, "Catalogue.PoolSynced")
    assert synced.pool == DEFAULT_POOL
    catalogue = Catalogue(at=T0)  # as a snapshot from before pools were named holds it
    catalogue.pool_hosts, catalogue.pool_templates = ("xen-0",), {"uuid-x": TEMPLATE}
    assert catalogue.synced_pools() == {DEFAULT_POOL: {"hosts": ["xen-0"], "templates": {"uuid-x": TEMPLATE}}}
    assert catalogue.pool_template(TEMPLATE) == TEMPLATE

    app.follow()
    with app._follow_lock:
        state = app.timeline.to_state()
    for node in state["nodes"]:
        assert node.pop("pool") == DEFAULT_POOL
    timeline = CapacityTimeline.from_state(state, position=1)
    assert timeline.pools() == [DEFAULT_POOL] and timeline.of_pool(DEFAULT_POOL) is timeline

    index = DispatchIndex()
    index.follow(app)
    saved = index.to_state()
    saved["nodes"] = [entry[:5] for entry in saved["nodes"]]  # no pool: saved before pools
    loaded = DispatchIndex(pool=DEFAULT_POOL)
    loaded._load(saved, lambda iid, version: None)
    assert {n.pool for n in loaded.nodes.values()} == {DEFAULT_POOL} and len(loaded.nodes) == 2
    app.close()


def test_the_instances_of_a_lost_node_move_within_their_pool_or_nowhere(app):
    start = T0 + 2 * HOUR
    alice, _ = propose(app, 2, start)
    app.confirm(alice)
    bob, _ = propose(app, 2, start, user="bob")  # east again: the least room that fits
    app.confirm(bob)
    assert pools_of(app, app.get_reservation(alice)) == pools_of(app, app.get_reservation(bob)) == {"east"}

    def nodes_of(rid):
        return sorted(app.get_instance(i).node for i in app.get_reservation(rid).instance_ids)

    lost = nodes_of(alice)[0]
    app.mark_node_lost(lost)
    assert app.replace_instances(app.get_reservation(alice).instance_ids, "host down") == (1, 0)
    assert all(node.startswith("east:") and node != lost for node in nodes_of(alice))  # east had one free
    # East is full now; west is empty: an instance of a lost east node is stranded, not sent west.
    app.mark_node_lost(nodes_of(bob)[0])
    assert app.replace_instances(app.get_reservation(bob).instance_ids, "host down") == (0, 1)
    assert {app.get_instance(i).status for i in app.get_reservation(bob).instance_ids} == {"SCHEDULED", "STRANDED"}
    assert all(node.startswith("east:") for node in nodes_of(bob))


def test_an_extension_moves_instances_within_their_pool_only(app):
    start = T0 + 2 * HOUR
    alice, _ = propose(app, 1, start)
    app.confirm(alice)
    carol, answer = propose(app, 5, start + HOUR, user="carol")  # east, every node, from alice's end on
    app.confirm(carol)
    assert pools_of(app, app.get_reservation(alice)) == pools_of(app, app.get_reservation(carol)) == {"east"}
    # West is free all along; but alice's instance may only move within east, which is full.
    outcome = app.extend(alice, start + 2 * HOUR)
    view = app.get_reservation(alice)
    assert outcome.reply != Reply.ACCEPT
    assert view.extension is None or all(app._node(a.node).pool == "east" for a in view.extension.placement)


def test_a_drained_hosts_bookings_move_within_their_pool_only(app):
    start = T0 + 2 * HOUR
    alice, _ = propose(app, 1, start)
    app.confirm(alice)
    bob, _ = propose(app, 4, start, user="bob")  # east again (4 left there): east is full at that hour
    app.confirm(bob)
    assert pools_of(app, app.get_reservation(alice)) == pools_of(app, app.get_reservation(bob)) == {"east"}
    drained = app.get_instance(app.get_reservation(alice).instance_ids[0]).node
    drain = app.drain_node(drained, T0, by="root")
    assert not drain.moved and [leaving.reason for leaving in drain.stuck]  # west had room: not an option
    assert app.get_instance(app.get_reservation(alice).instance_ids[0]).node == drained
    app.undrain_node(drained, by="root")
    app.cancel(bob, "make room")  # now east has room: the drain moves alice within east
    drain = app.drain_node(drained, T0, by="root")
    assert [leaving.moved_to.partition(":")[0] for leaving in drain.moved] == ["east"]


def test_a_first_offer_avoids_a_pool_whose_master_does_not_answer(app):
    start = T0 + 2 * HOUR
    first, answer = propose(app, 1, start)
    assert pools_of(app, app.get_reservation(first)) == {"east"}  # best fit: east, west alike
    app.record_pool_reachability("east", False)
    rid, answer = propose(app, 1, start, user="bob")
    assert answer.reply == Reply.ACCEPT and pools_of(app, app.get_reservation(rid)) == {"west"}
    assert app.confirm(first).reply == Reply.REQUEST_SUCCESS  # what east had offered still stands
    app.record_pool_reachability("west", False)  # every pool: then none is avoided
    rid, answer = propose(app, 1, start, user="carol")
    assert answer.reply == Reply.ACCEPT and pools_of(app, app.get_reservation(rid)) == {"east"}
    app.record_pool_reachability("east", True)
    app.record_pool_reachability("west", True)
    version = app.catalogue().version
    app.record_pool_reachability("west", True)  # already so: nothing recorded
    assert app.catalogue().version == version


def test_a_pool_is_recorded_unreachable_only_after_its_master_is_silent_for_the_grace(app):
    monitors = Monitors(app, watcher=None, pool="east", unreachable_after=30.0)
    monitors.unanswered(now=100.0)
    monitors.unanswered(now=129.0)
    assert app.catalogue().unreachable_pools == ()  # a blip is not an outage
    monitors.unanswered(now=130.0)
    assert app.catalogue().unreachable_pools == ("east",)
    version = app.catalogue().version
    monitors.unanswered(now=200.0)
    assert app.catalogue().version == version  # recorded once
    monitors.answered()
    assert app.catalogue().unreachable_pools == ()
    # A worker that starts while its pool is marked unreachable clears it at its first answer.
    app.record_pool_reachability("east", False)
    Monitors(app, watcher=None, pool="east").answered()
    assert app.catalogue().unreachable_pools == ()
