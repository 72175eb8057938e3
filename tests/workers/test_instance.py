"""The Instance aggregate on its own: what is due when, claims and their leases, legal moves,
and replay. Fast: no store, no Xen."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from pex.domain.instance import (
    LEGAL_MOVES,
    IllegalInstanceAction,
    Instance,
    InstanceBusy,
    Status,
    reservation_over,
    reservation_runs,
)
from pex.domain.values import Resources, State
from tests.support import T0

H = timedelta(hours=1)
START, END = T0 + H, T0 + 3 * H
LEASE = timedelta(minutes=2)


def scheduled() -> Instance:
    return Instance(
        reservation_id=uuid4(), user_id="alice", index=0, name="pex-test-0", size="SMALL",
        template="PEX Debian Etch 4.0 Template", per_instance=Resources(1, 768, 10), node="node1",
        start=START, end=END, at=T0,
    )


def started(at=START) -> Instance:
    i = scheduled()
    i.claim_dispatch("w1", "start", at + LEASE, at)
    i.record_started("w1", "node1", "vm-1", at)
    return i


def replayed(i: Instance) -> Instance:
    copy = None
    for event in i.collect_events():
        copy = event.mutate(copy)
    return copy


def test_every_status_has_its_moves():
    assert set(LEGAL_MOVES) == set(Status)


@pytest.mark.parametrize(
    "runs, over, expected",
    [(False, False, None), (True, False, "start"), (False, True, "end"), (True, True, "end")],
)
def test_a_scheduled_instance_starts_when_its_reservation_runs_and_ends_when_it_is_over(runs, over, expected):
    assert scheduled().due_action(START, runs=runs, over=over) == expected


def test_what_is_due_follows_the_users_wishes():
    i = started()
    assert i.due_action(START, True, False) is None
    i.request_reboot("alice", START)
    assert i.due_action(START, True, False) == "reboot"
    i.request_stop("alice", START)
    assert i.due_action(START, True, False) == "stop"
    i.request_delete("alice", START)
    assert i.due_action(START, True, False) == "delete"


def test_the_end_comes_at_the_instance_end_even_if_the_reservation_looks_live():
    assert started().due_action(END, runs=True, over=False) == "end"


def test_reservations_run_when_activated_or_auto_started_inside_their_interval():
    assert reservation_runs(State.ACTIVATED, False, START, END, START)
    assert reservation_runs(State.CONFIRMED, True, START, END, START)
    assert not reservation_runs(State.CONFIRMED, False, START, END, START)
    assert not reservation_runs(State.ACTIVATED, False, START, END, END)
    assert not reservation_runs(State.ACTIVATED, False, START, END, START - H)
    assert reservation_over(State.CANCELLED, END, START) and reservation_over(State.ACTIVATED, END, END)


def test_a_live_claim_keeps_other_workers_out_until_it_lapses():
    i = scheduled()
    i.claim_dispatch("w1", "start", START + LEASE, START)
    assert i.due_action(START, True, False) is None
    with pytest.raises(InstanceBusy):
        i.claim_dispatch("w2", "start", START + LEASE, START + timedelta(seconds=30))
    i.claim_dispatch("w1", "start", START + 2 * LEASE, START + LEASE / 2)  # renewed by its holder
    later = START + 2 * LEASE
    assert i.due_action(later, True, False) == "start"  # lapsed: the worker died
    i.claim_dispatch("w2", "start", later + LEASE, later)
    i.record_started("w1", "node1", "vm-1", later)  # the dead worker's outcome is not recorded
    assert i.status == Status.SCHEDULED
    i.record_started("w2", "node1", "vm-1", later)
    assert (i.status, i.vm_uuid, i.claim) == (Status.RUNNING, "vm-1", None)


def test_a_failure_backs_off_exponentially():
    i = scheduled()
    delays = []
    for n in range(3):
        at = START + n * H
        i.claim_dispatch("w1", "start", at + LEASE, at)
        i.fail_dispatch("w1", "start", "XenCapacityError: HOST_NOT_ENOUGH_FREE_MEMORY", at)
        delays.append(i.retry_at - at)
        assert i.due_action(at, True, False) is None
    assert delays == [timedelta(seconds=5), timedelta(seconds=10), timedelta(seconds=20)]
    assert i.failures == 3 and "HOST_NOT_ENOUGH" in i.last_error


def test_an_instance_cancelled_while_its_vm_was_being_made_is_cleaned_up():
    i = scheduled()
    i.claim_dispatch("w1", "start", START + LEASE, START)
    i.cancel(START)
    i.record_started("w1", "node1", "vm-1", START)  # the create finished after the cancel
    assert i.status == Status.CANCELLED and i.claim is None
    assert i.due_action(START, False, True) == "cleanup"
    i.claim_dispatch("w1", "cleanup", START + LEASE, START)
    i.record_removed("w1", "cleanup", "removed what an interrupted start left", START)
    assert (i.status, i.vm_may_exist) == (Status.CANCELLED, False)
    assert i.due_action(START, False, True) is None


def test_a_guest_that_halts_itself_is_not_restarted_but_a_host_loss_is():
    i = started()
    i.observe_power_state("Halted", START + H)
    assert (i.status, i.wants_running) == (Status.HALTED, False)
    assert i.due_action(START + H, True, False) is None

    j = started()
    j.lose("node1", START + H)
    assert j.status == Status.LOST and j.due_action(START + H, True, False) is None  # the Scheduler's move
    j.observe_power_state("Halted", START + H)  # the host came back rebooted
    assert (j.status, j.wants_running) == (Status.HALTED, True)
    assert j.due_action(START + H, True, False) == "start"


def test_reports_while_a_claim_is_live_or_the_end_is_due_are_not_news():
    i = started()
    i.claim_dispatch("w1", "stop", START + LEASE, START)
    i.observe_power_state("Halted", START)
    assert i.status == Status.RUNNING
    k = started()
    k.observe_power_state("Halted", END)
    k.vanish(END)
    assert k.status == Status.RUNNING


def test_moves_after_a_lost_node():
    i = started()
    i.lose("node1", START + H)
    i.move("node2", START + H)
    assert (i.node, i.status, i.needs_reset) == ("node2", Status.HALTED, True)
    assert i.due_action(START + H, True, False) == "start"
    s = scheduled()
    s.strand("no node has room", T0)
    assert s.status == Status.STRANDED and s.due_action(START, True, False) is None
    s.move("node3", T0)
    assert (s.status, s.node) == (Status.SCHEDULED, "node3")


@pytest.mark.parametrize(
    "request_, instance",
    [("request_stop", scheduled), ("request_reboot", scheduled), ("request_start", scheduled)],
)
def test_users_cannot_act_on_an_instance_that_has_not_started(request_, instance):
    with pytest.raises(IllegalInstanceAction):
        getattr(instance(), request_)("alice", T0)


def test_ip_addresses_and_silent_guests():
    i = started()
    i.check_responsive(timedelta(minutes=5), START + timedelta(minutes=4))
    assert i.responsive
    i.check_responsive(timedelta(minutes=5), START + timedelta(minutes=5))
    assert not i.responsive
    i.report_ip("10.10.0.10", START + timedelta(minutes=6))
    i.report_ip("10.10.0.10", START + timedelta(minutes=7))  # no news
    assert (i.ip_address, i.responsive) == ("10.10.0.10", True)
    i.request_stop("alice", START + H)
    i.claim_dispatch("w1", "stop", START + H + LEASE, START + H)
    i.record_stopped("w1", START + H)
    assert (i.status, i.ip_address) == (Status.HALTED, None)


def test_replay_gives_the_same_instance():
    i = started()
    i.request_reboot("alice", START)
    i.lose("node1", START + H)
    i.move("node2", START + H)
    live = vars(i).copy()
    copy = replayed(i)
    assert {k: v for k, v in vars(copy).items() if not k.startswith("_")} == {
        k: v for k, v in live.items() if not k.startswith("_")
    }
