"""The portal's side of a way into the VM (issue 13, item 6): the Preferences page sets the
user's SSH public keys, one a line, behind the portal's CSRF check like every other form; the
instances page shows the owner each VM's password, when PEX gives VMs one."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from tests.support import T0
from tests.test_ssh_keys import REAL_KEYS

ED25519, RSA = REAL_KEYS["ssh-ed25519"], REAL_KEYS["ssh-rsa"]


def test_a_user_pastes_keys_one_a_line_and_sees_them_on_the_preferences_page(portal):
    v = portal.user("alice")
    saved = v.post("/preferences/ssh-keys", {"ssh_keys": f"{ED25519}\r\n\r\n  {RSA}  \r\n"})
    assert saved.status_code == 303 and saved.headers["location"] == "/preferences"
    page = v.follow(saved)
    assert "Your new VMs will let in 2 SSH keys." in page.text
    assert html.escape(f"{ED25519}\n{RSA}") in page.text
    assert portal.application.ssh_keys_of("alice") == (ED25519, RSA)
    cleared = v.follow(v.post("/preferences/ssh-keys", {"ssh_keys": ""}))
    assert "no SSH key of yours" in cleared.text and portal.application.ssh_keys_of("alice") == ()


def test_a_malformed_key_is_shown_again_beside_its_reason_and_nothing_changes(portal):
    v = portal.user("alice")
    v.post("/preferences/ssh-keys", {"ssh_keys": ED25519})
    typed = f"{RSA}\nssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB"
    refused = v.post("/preferences/ssh-keys", {"ssh_keys": typed})
    assert refused.status_code == 422
    assert 'aria-invalid="true"' in refused.text and "is not a ssh-ed25519 public key" in refused.text
    assert html.escape(typed) in refused.text
    assert portal.application.ssh_keys_of("alice") == (ED25519,)


def test_the_form_needs_a_login_and_its_csrf_token(portal):
    v = portal.user("alice")
    forged = v.post("/preferences/ssh-keys", {"ssh_keys": RSA}, csrf=False)
    assert forged.status_code == 403 and portal.application.ssh_keys_of("alice") == ()
    stranger = portal.visitor()
    assert "ssh_keys" not in stranger.get("/preferences").text  # the time zone form alone
    r = stranger.post("/preferences/ssh-keys", {"ssh_keys": RSA})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert portal.application.ssh_keys_of("alice") == ()


def test_with_vm_passwords_the_instances_page_shows_each_vm_its_own_behind_a_click(portal):
    v = portal.user("alice")
    rid = portal.book("alice", "SMALL", 2, T0 + timedelta(hours=1))
    ids = portal.application.get_reservation(rid).instance_ids
    assert "vm-password" not in v.get("/instances").text  # off unless the operator sets the key
    portal.application.vm_password_key = b"k" * 32
    page = v.get("/instances").text
    for instance_id in ids:
        row = re.search(rf'<tr data-instance="{instance_id}">(.*?)</tr>', page, re.S).group(1)
        assert f"<summary>Password</summary><code>{portal.application.vm_password(instance_id)}</code>" in row
    bob = portal.user("bob")
    portal.book("bob", "SMALL", 1, T0 + timedelta(hours=1))
    bobs = bob.get("/instances").text
    assert bobs.count("<summary>Password</summary>") == 1  # his own VM's, none of alice's
    assert not any(portal.application.vm_password(i) in bobs for i in ids)
