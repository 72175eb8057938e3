"""A way into the VM (issue 13, item 6), the account's side: a user's SSH public keys are
checked before anything is recorded, kept as one event, and read back as they were set."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain.user import (
    MAX_SSH_KEYS,
    SSH_KEY_TYPES,
    AccountError,
    User,
    normalized_ssh_key,
    normalized_ssh_keys,
)  # fmt: skip
from tests.support import T0
from tests.support.api import PASSWORD, cheap_settings


def openssh_line(private_key, comment: str = "") -> str:
    line = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode()} {comment}".strip()


REAL_KEYS = {
    "ssh-ed25519": openssh_line(ed25519.Ed25519PrivateKey.generate(), "alice@laptop"),
    "ssh-rsa": openssh_line(rsa.generate_private_key(public_exponent=65537, key_size=2048), "alice@desktop"),
    "ecdsa-sha2-nistp256": openssh_line(ec.generate_private_key(ec.SECP256R1())),
    "ecdsa-sha2-nistp384": openssh_line(ec.generate_private_key(ec.SECP384R1())),
    "ecdsa-sha2-nistp521": openssh_line(ec.generate_private_key(ec.SECP521R1())),
}


def key_line(key_type: str, body: bytes, comment: str = "", named: str | None = None) -> str:
    """A key line whose blob names `named` (by default its own type), as RFC 4253 lays it out."""
    name = (named or key_type).encode()
    blob = struct.pack(">I", len(name)) + name + body
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}".strip()


comments = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@pytest.mark.parametrize("key_type", sorted(REAL_KEYS))
def test_the_keys_ssh_keygen_and_cryptography_write_are_taken_as_they_are(key_type):
    assert key_type in SSH_KEY_TYPES
    assert normalized_ssh_key(REAL_KEYS[key_type]) == REAL_KEYS[key_type]


@given(st.sampled_from(sorted(SSH_KEY_TYPES)), st.binary(min_size=1, max_size=600), comments,
       st.sampled_from([" ", "  ", "\t"]))
def test_a_well_formed_key_is_normalized_once_and_for_all(key_type, body, comment, gap):
    line = key_line(key_type, body, comment)
    spaced = f"  {line.replace(' ', gap)}\n"
    normalized = normalized_ssh_key(spaced)
    assert normalized == line and normalized_ssh_key(normalized) == normalized


@given(st.sampled_from(sorted(SSH_KEY_TYPES)), st.sampled_from(sorted(SSH_KEY_TYPES)), st.binary(min_size=1, max_size=64))
def test_a_key_whose_data_names_another_type_is_refused(claimed, named, body):
    line = key_line(claimed, body, named=named)
    if claimed == named:
        assert normalized_ssh_key(line)
    else:
        with pytest.raises(AccountError, match="is not a"):
            normalized_ssh_key(line)


@pytest.mark.parametrize(("line", "says"), [
    ("", "TYPE BASE64"),
    ("ssh-ed25519", "TYPE BASE64"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "key type is one of"),
    ('from="10.0.0.1" ' + REAL_KEYS["ssh-ed25519"], "key type is one of"),
    ("ssh-ed25519 not*base64", "not base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "not a ssh-ed25519"),  # the name and nothing after it
    ("ssh-ed25519 AAAA", "not a ssh-ed25519"),
    (REAL_KEYS["ssh-ed25519"] + " caf\u00e9", "printable ASCII"),
    (REAL_KEYS["ssh-ed25519"] + " a\x00b", "printable ASCII"),
    (REAL_KEYS["ssh-ed25519"] + " " + "x" * 257, "printable ASCII"),
    ("ssh-rsa " + "A" * 5000, "at most 4096 bytes"),
    (42, "each key is a string"),
])
def test_what_is_not_an_openssh_public_key_is_refused_with_a_reason(line, says):
    with pytest.raises(AccountError, match=says) as refused:
        normalized_ssh_key(line)
    assert refused.value.field == "sshKeys"


def test_a_user_has_a_few_keys_at_most_and_a_repeated_one_counts_once():
    keys = list(REAL_KEYS.values())
    assert normalized_ssh_keys(keys[:3] + keys[:2]) == tuple(keys[:3])
    assert normalized_ssh_keys(keys) == tuple(keys)
    with pytest.raises(AccountError, match=f"at most {MAX_SSH_KEYS} keys"):
        normalized_ssh_keys(keys + [key_line("ssh-ed25519", b"x")])
    with pytest.raises(AccountError, match="a list"):
        normalized_ssh_keys(REAL_KEYS["ssh-rsa"])


@pytest.fixture
def app():
    application = build_application(cheap_settings(), clock=ManualClock(T0))
    application.register_user("alice", PASSWORD)
    yield application
    application.close()


def test_the_keys_are_one_event_on_the_account_and_setting_them_again_records_nothing(app):
    keys = [REAL_KEYS["ssh-ed25519"], REAL_KEYS["ssh-rsa"]]
    assert app.set_ssh_keys("alice", keys).ssh_keys == tuple(keys)
    app.set_ssh_keys("Alice", keys)  # the same keys, by the name in another case
    events = app.events.get(User.create_id("alice"))
    assert [type(e).__name__ for e in events] == ["Registered", "SshKeysSet"]
    assert app.ssh_keys_of("alice") == tuple(keys) and app.get_user("alice").ssh_keys == tuple(keys)
    assert app.set_ssh_keys("alice", []).ssh_keys == () and app.ssh_keys_of("alice") == ()


def test_refused_keys_record_nothing_and_an_unknown_user_has_none(app):
    with pytest.raises(AccountError):
        app.set_ssh_keys("alice", [REAL_KEYS["ssh-rsa"], "ssh-rsa AAAA"])
    assert [type(e).__name__ for e in app.events.get(User.create_id("alice"))] == ["Registered"]
    assert app.ssh_keys_of("nobody") == () and app.ssh_keys_of("not a name!") == ()


def test_pex_users_ssh_keys_shows_and_replaces_them(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pex.cli import main

    monkeypatch.setenv("PEX_DATABASE_URL", f"sqlite:///{tmp_path}/pex.sqlite3")
    monkeypatch.setenv("PEX_PASSWORD_PROFILE", "cheapest")
    runner = CliRunner()
    assert runner.invoke(main, ["users", "add", "alice", "--password-stdin"], input=PASSWORD + "\n").exit_code == 0
    assert runner.invoke(main, ["users", "ssh-keys", "alice"]).stdout == ""
    keys = f"{REAL_KEYS['ssh-ed25519']}\n\n{REAL_KEYS['ssh-rsa']}\n"
    replaced = runner.invoke(main, ["users", "ssh-keys", "alice", "--set", "-"], input=keys)
    assert replaced.exit_code == 0 and replaced.stdout.splitlines() == [REAL_KEYS["ssh-ed25519"], REAL_KEYS["ssh-rsa"]]
    assert runner.invoke(main, ["users", "ssh-keys", "Alice"]).stdout == replaced.stdout
    refused = runner.invoke(main, ["users", "ssh-keys", "alice", "--set", "-"], input="ssh-rsa AAAA\n")
    assert refused.exit_code == 1 and "sshKeys" in refused.output
    assert runner.invoke(main, ["users", "ssh-keys", "alice"]).stdout == replaced.stdout
    assert runner.invoke(main, ["users", "ssh-keys", "nobody"]).exit_code == 1
