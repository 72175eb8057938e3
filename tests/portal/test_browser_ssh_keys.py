"""A way into the VM in a real browser: a user pastes their SSH public keys into the
Preferences page (chromium, against `pex serve`), and the API reads back what was saved."""

from __future__ import annotations

import pytest
import requests

from tests.support.portal import PASSWORD
from tests.test_ssh_keys import REAL_KEYS

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn, pytest.mark.xen]


def test_a_user_pastes_their_keys_into_the_preferences_page(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    registered = requests.post(f"{url}/OpenPEX/users", json={"username": "alice", "password": PASSWORD}, timeout=30)
    assert registered.status_code == 201
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{url}/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Welcome, alice")).to_be_visible()

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
