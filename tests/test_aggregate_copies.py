"""The aggregate cache hands every command its own copy of what it loads; the aggregates that
say so (CopiedByContainers) are copied as new containers of the same values. That is a full
copy only while every attribute is an immutable value or a container of them: checked here on
aggregates as a negotiation leaves them, and on the instances it made."""

from __future__ import annotations

import contextlib
import copy
from datetime import timedelta
from uuid import uuid4

from pex.application.core import mutated
from pex.domain.catalogue import CATALOGUE_ID
from pex.domain.node import node_id
from pex.domain.quotas import quota_account_id
from pex.domain.user import user_id
from pex.domain.values import CopiedByContainers, Terms
from tests.test_ssh_keys import REAL_KEYS

H = timedelta(hours=1)


def test_a_copy_shares_no_container_with_the_cached_aggregate_and_holds_only_values(memory_app, clock):
    memory_app.register_user("alice", "a-long-password-1")
    memory_app.set_ssh_keys("alice", [REAL_KEYS["ssh-ed25519"]])
    memory_app.set_webhook("alice", "https://hooks.example.org/pex")
    memory_app.grant_credit("alice", "100.00", by="root")
    memory_app.credit_enforced = True  # so that the confirmation is charged: the user's charges
    start = clock() + H
    proposed = memory_app.propose("alice", Terms("SMALL", "PEX Debian Etch 4.0 Template", 2, 0, start, start + 2 * H))
    confirmed = memory_app.respond(proposed.outcome.reservation.id, "CONFIRM")
    node = proposed.outcome.reservation.offer.placement[0].node
    ids = [proposed.outcome.reservation.id, node_id(node), quota_account_id("alice"), CATALOGUE_ID, user_id("alice"),
           *confirmed.reservation.instance_ids]
    assert len(ids) == 7
    assert memory_app.repository.get(user_id("alice")).charges
    for aggregate_id in ids:
        cached = memory_app.repository.get(aggregate_id, deepcopy_from_cache=False)
        assert isinstance(cached, CopiedByContainers)
        copied = copy.deepcopy(cached)
        assert copied.__dict__ == cached.__dict__ and type(copied) is type(cached)
        for name, value in cached.__dict__.items():
            if isinstance(value, (list, dict, set)):
                assert copied.__dict__[name] is not value, name
                for item in (value.values() if isinstance(value, dict) else value):
                    hash(item)  # an immutable value (a frozen dataclass, a tuple…): shared safely
            else:
                hash(value)


def test_a_command_changing_its_copy_leaves_the_cache_as_the_store_has_it(memory_app, clock):
    start = clock() + H
    proposed = memory_app.propose("alice", Terms("SMALL", "PEX Debian Etch 4.0 Template", 1, 0, start, start + H))
    node = proposed.outcome.reservation.offer.placement[0].node
    mine = memory_app.repository.get(node_id(node))
    mine.release(proposed.outcome.reservation.id, "never saved", clock())
    assert str(proposed.outcome.reservation.id) in memory_app.repository.get(node_id(node)).allocations


def test_many_aggregates_loaded_in_one_query_are_as_each_loaded_alone(app, clock):
    start = clock() + H
    confirmed = []
    for user in ("alice", "bob"):
        proposed = app.propose(user, Terms("SMALL", "PEX Debian Etch 4.0 Template", 2, 0, start, start + 2 * H))
        confirmed.append(app.respond(proposed.outcome.reservation.id, "CONFIRM").reservation)
    instance_ids = [i for r in confirmed for i in r.instance_ids]
    reservation_ids = [r.id for r in confirmed]
    for aggregate_id in [*instance_ids, *reservation_ids]:
        with contextlib.suppress(KeyError):  # as in a process that never loaded them
            app.repository.cache.get(aggregate_id, evict=True)
    missing = uuid4()

    def alone(aggregate_id):  # built from the store, apart from the cache
        return app.repository.get(aggregate_id, version=2**31).__dict__

    cold = app.repository.get_many([*instance_ids, *reservation_ids, missing])
    assert missing not in cold and set(cold) == {*instance_ids, *reservation_ids}
    assert all(cold[i].__dict__ == alone(i) for i in cold)

    # Cached now, then changed by a command (the cache is not updated by a save: it is brought
    # up to date at the next load, as after another process's save).
    app.activate(reservation_ids[0])
    clock.advance(H)  # the start: every instance's start is claimed (the other reservation starts by itself)
    claimed = app.claim_dispatches(instance_ids, "worker-1", timedelta(minutes=2))
    assert {job.instance_id for job in claimed} == set(instance_ids)
    warm = app.repository.get_many([*instance_ids, *reservation_ids])
    assert all(warm[i].version > cold[i].version for i in [*instance_ids, reservation_ids[0]])
    assert all(warm[i].__dict__ == alone(i) for i in warm)
    # Each caller is given a copy: changing one leaves the cache as the store has it.
    warm[instance_ids[0]].node = "changed by its caller"
    assert app.repository.get_many([instance_ids[0]])[instance_ids[0]].node == cold[instance_ids[0]].node


def test_a_snapshot_taken_at_a_save_is_the_aggregate_as_its_events_make_it(app, clock):
    # Saves snapshot what they saved as it stands; the snapshot must be what a replay of
    # every event gives (a node, the user's quota account and the catalogue, each at an
    # interval of versions), or a process loading from it would decide on another state.
    start = clock() + H
    nodes = set()
    for i in range(app.node_snapshot_interval):
        at = start + i * H
        proposed = app.propose("alice", Terms("SMALL", "PEX Debian Etch 4.0 Template", 1, 0, at, at + H))
        app.respond(proposed.outcome.reservation.id, "CONFIRM")
        nodes.update(a.node for a in proposed.outcome.reservation.offer.placement)
    for i in range(app.node_snapshot_interval):
        app.register_template(f"template {i}")
    snapshotted = 0
    for aggregate_id in (*map(node_id, nodes), quota_account_id("alice"), CATALOGUE_ID):
        for snapshot in app.snapshots.get(aggregate_id):
            replayed = mutated(None, app.events.get(aggregate_id, lte=snapshot.originator_version))
            assert snapshot.mutate(None).__dict__ == replayed.__dict__
            snapshotted += 1
    assert snapshotted >= 3
