"""A way into the VM (issue 13, item 6), the guest's side: the owner's SSH public keys are
handed to each VM PEX makes, in its XenStore data under vm-data/ (what cloud-init or a boot
script reads, docs/operations.md), as they stand when the VM first boots. Against the
simulator through the unmodified XenAPI client, and with the in-memory enactment."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import XenAPI

from tests.support.api import PASSWORD
from tests.support.world import HOUR
from tests.support.xen import PASSWORD as XEN_PASSWORD
from tests.support.xen import USERNAME
from tests.test_ssh_keys import REAL_KEYS

LEAD = timedelta(minutes=10)
ED25519, RSA = REAL_KEYS["ssh-ed25519"], REAL_KEYS["ssh-rsa"]


def xenstore_data_of_vms(simulator) -> dict[str, dict[str, str]]:
    """Each PEX VM's xenstore_data, by pex_instance, as a XenAPI client reads it."""
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password(USERNAME, XEN_PASSWORD, "1.2", "pex-tests")
    try:
        api = session.xenapi
        return {r["other_config"]["pex_instance"]: api.VM.get_xenstore_data(ref)
                for ref, r in api.VM.get_all_records().items() if "pex_instance" in r["other_config"]}
    finally:
        session.xenapi.session.logout()


@pytest.mark.xen
def test_the_owners_keys_are_in_each_vms_xenstore_data_when_it_boots(world):
    world.app.register_user("alice", PASSWORD)
    world.app.set_ssh_keys("alice", [ED25519])
    rid = world.reserve(size="SMALL", fixed=2, start_in=HOUR, hours=1)
    world.advance(HOUR - LEAD)
    assert world.tick().dispatched == ["prepare", "prepare"]
    ids = sorted(str(v.id) for v in world.instances(rid))
    assert xenstore_data_of_vms(world.simulator) == {
        i: {"vm-data/ssh-authorized-keys/0": ED25519} for i in ids}

    world.app.set_ssh_keys("alice", [RSA, ED25519])  # changed before the VMs first boot: they get the new ones
    world.advance(LEAD)
    assert world.tick().dispatched == ["start", "start"]
    assert [v.status for v in world.wait_for_ips(rid)] == ["RUNNING", "RUNNING"]
    wanted = {"vm-data/ssh-authorized-keys/0": RSA, "vm-data/ssh-authorized-keys/1": ED25519}
    assert xenstore_data_of_vms(world.simulator) == {i: wanted for i in ids}
    assert all(vm["xenstore_data"] == wanted for vm in world.vms())  # what the simulator shows

    world.app.set_ssh_keys("alice", [])  # a running guest keeps what it booted with
    assert xenstore_data_of_vms(world.simulator) == {i: wanted for i in ids}


@pytest.mark.xen
def test_a_user_without_keys_gets_no_vm_data_and_keeps_the_templates_own(world):
    rid = world.reserve(size="SMALL", fixed=1, start_in=timedelta(seconds=1), hours=1, user="bob")
    world.advance(timedelta(seconds=1))
    assert world.tick().dispatched == ["start"]
    world.wait_for_ips(rid)
    assert list(xenstore_data_of_vms(world.simulator).values()) == [{}]


def test_the_in_memory_enactment_keeps_the_keys_each_vm_booted_with(memory_world):
    world = memory_world
    world.app.register_user("alice", PASSWORD)
    world.app.set_ssh_keys("alice", [ED25519, RSA])
    rid = world.reserve(size="SMALL", fixed=1, start_in=timedelta(seconds=1), hours=1)
    world.advance(timedelta(seconds=1))
    assert world.tick().dispatched == ["start"]
    [view] = world.instances(rid)
    assert world.enactment.vms[view.id].ssh_authorized_keys == (ED25519, RSA)
    # Only the actions that make a VM carry the keys: a stop does not need them.
    world.app.set_ssh_keys("alice", [RSA])
    world.app.stop_instance(view.id)
    assert world.enactment.vms[view.id].ssh_authorized_keys == (ED25519, RSA)
    world.app.start_instance(view.id)  # booted again by PEX: with the keys as they are now
    assert world.enactment.vms[view.id].ssh_authorized_keys == (RSA,)


def test_with_vm_passwords_each_vm_gets_its_own_and_no_event_or_log_line_holds_it(memory_world, caplog):
    world = memory_world
    world.app.vm_password_key = b"k" * 32
    caplog.set_level(logging.DEBUG)
    rid = world.reserve(size="SMALL", fixed=2, start_in=timedelta(seconds=1), hours=1)
    world.advance(timedelta(seconds=1))
    assert world.tick().dispatched == ["start", "start"]
    views = world.instances(rid)
    given = [world.enactment.vms[v.id].vm_password for v in views]
    assert given == [world.app.vm_password(v.id) for v in views] and len(set(given)) == 2
    stored = world.app.recorder.select_notifications(1, 10**6)
    assert all(p.encode() not in n.state for p in given for n in stored)
    assert all(p not in caplog.text for p in given)
    assert all(p not in repr(vm) for p in given for vm in world.enactment.vms.values())


@pytest.mark.xen
def test_with_vm_passwords_the_guest_finds_its_password_in_vm_data(world):
    world.app.vm_password_key = b"k" * 32
    rid = world.reserve(size="SMALL", fixed=1, start_in=timedelta(seconds=1), hours=1)
    world.advance(timedelta(seconds=1))
    assert world.tick().dispatched == ["start"]
    [view] = world.wait_for_ips(rid)
    assert xenstore_data_of_vms(world.simulator) == {str(view.id): {"vm-data/password": world.app.vm_password(view.id)}}
