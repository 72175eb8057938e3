"""A way into the VM in a real browser: a user pastes their SSH public keys into the
Preferences page (chromium, against `pex serve`), and the API reads back what was saved."""

from __future__ import annotations

import pytest
import requests

from tests.support.browser import logged_in, register_over_api
from tests.support.portal import PASSWORD
from tests.test_ssh_keys import REAL_KEYS

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn, pytest.mark.xen]


def test_a_user_pastes_their_keys_into_the_preferences_page(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    register_over_api(url, "alice")
    context, page = logged_in(browser, url, "alice")

    page.goto(f"{url}/preferences")
    page.get_by_label("Public keys").fill("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB me")
    page.get_by_role("button", name="Save the keys").click()
    expect(page.get_by_text("is not a ssh-ed25519 public key")).to_be_visible()
    shots(page, "15c-preferences-ssh-key-refused")

    page.get_by_label("Public keys").fill(f"{REAL_KEYS['ssh-ed25519']}\n{REAL_KEYS['ssh-rsa']}\n")
    page.get_by_role("button", name="Save the keys").click()
    expect(page.get_by_text("Your new VMs will let in 2 SSH keys.")).to_be_visible()
    shots(page, "15b-preferences-ssh-keys")
    context.close()

    saved = requests.get(f"{url}/OpenPEX/users/alice/ssh-keys", auth=("alice", PASSWORD), timeout=30)
    assert saved.json()["sshKeys"] == [REAL_KEYS["ssh-ed25519"], REAL_KEYS["ssh-rsa"]]
