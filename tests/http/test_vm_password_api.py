"""The original's per-VM password (vmPassword), an option (PEX_VM_PASSWORD_KEY): derived from
the key and the instance id, handed to the guest as vm-data/password, and shown to the
instance's owner alone, never to an administrator reading it, never kept anywhere."""

from __future__ import annotations

from uuid import uuid4

import pytest

from pex.application.instances import vm_password
from pex.bootstrap import build_application
from pex.settings import Settings, SettingsError
from tests.support.api import cheap_settings

KEY = "k" * 32


@pytest.fixture
def booked(api):
    """alice's confirmed reservation of 2 instances; the instances' ids."""
    created = api.propose(fixed=2).json
    api.step(created["proposal"]["id"], "CONFIRM", proposal_body=created["proposal"])
    return [i["id"] for i in api.get("/OpenPEX/instances").json["instances"]]


def test_without_the_key_no_instance_has_a_password(api, booked):
    assert all("vmPassword" not in api.get(f"/OpenPEX/instances/{i}").json for i in booked)


def test_the_owner_alone_sees_each_vms_own_password(api, booked):
    api.application.vm_password_key = KEY.encode()
    mine = [api.get(f"/OpenPEX/instances/{i}").json["vmPassword"] for i in booked]
    assert len(set(mine)) == 2 and all(len(p) == 26 for p in mine)
    assert [i["vmPassword"] for i in api.get("/OpenPEX/instances").json["instances"]] == mine
    assert mine == [api.get(f"/OpenPEX/instances/{i}").json["vmPassword"] for i in booked]  # the same each time

    api.user("root", admin=True)
    assert all("vmPassword" not in api.get(f"/OpenPEX/instances/{i}", user="root").json for i in booked)
    assert all("vmPassword" not in i for i in api.get("/OpenPEX/instances", user="root").json["instances"])
    assert api.get(f"/OpenPEX/instances/{booked[0]}", user="bob").status_code == 404
    # The original's form (its client's VMInstance) is left as it was.
    assert "vmPassword" not in api.client.simulate_get(f"/OpenPEX/instances/{booked[0]}", headers=api.user("alice")).json


def test_the_password_is_in_no_event_and_no_reply_but_the_owners(api, booked):
    api.application.vm_password_key = KEY.encode()
    password = api.get(f"/OpenPEX/instances/{booked[0]}").json["vmPassword"]
    recorded = api.application.recorder.select_notifications(1, 10**6)
    assert recorded and all(password.encode() not in n.state for n in recorded)


def test_a_different_key_or_instance_gives_a_different_password():
    one, other = uuid4(), uuid4()
    assert vm_password(KEY.encode(), one) == vm_password(KEY.encode(), one)
    assert vm_password(KEY.encode(), one) != vm_password(KEY.encode(), other)
    assert vm_password(KEY.encode(), one) != vm_password(("x" * 32).encode(), one)


def test_the_key_is_read_from_the_environment_checked_and_never_shown():
    assert Settings.from_env({}).vm_password_key is None
    settings = Settings.from_env({"PEX_VM_PASSWORD_KEY": KEY})
    assert settings.vm_password_key == KEY and KEY not in repr(settings)
    with pytest.raises(SettingsError, match="at least 32"):
        Settings.from_env({"PEX_VM_PASSWORD_KEY": "short"})
    app = build_application(cheap_settings(vm_password_key=KEY))
    try:
        assert app.vm_password_key == KEY.encode()
    finally:
        app.close()
