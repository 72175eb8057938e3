"""A user's SSH public keys over the API (issue 13, item 6): /OpenPEX/users/{username}/ssh-keys,
the owner's (or an administrator's) to read and replace; every malformed key a clear 4xx."""

from __future__ import annotations

import pytest

from tests.test_ssh_keys import REAL_KEYS

PATH = "/OpenPEX/users/{}/ssh-keys"
ED25519, RSA = REAL_KEYS["ssh-ed25519"], REAL_KEYS["ssh-rsa"]


def test_a_user_sets_and_reads_their_keys_and_an_empty_list_clears_them(api):
    assert api.get(PATH.format("alice")).json == {"username": "alice", "sshKeys": []}
    put = api.put(PATH.format("Alice"), json={"sshKeys": [f"  {ED25519}\n", RSA, ED25519]})
    assert put.status_code == 200 and put.json == {"username": "alice", "sshKeys": [ED25519, RSA]}
    got = api.get(PATH.format("alice"))
    assert got.json["sshKeys"] == [ED25519, RSA] and got.headers["ETag"] == put.headers["ETag"]
    assert api.put(PATH.format("alice"), json={"sshKeys": []}).json["sshKeys"] == []


def test_only_the_owner_or_an_administrator_reads_or_sets_them(api):
    api.put(PATH.format("alice"), json={"sshKeys": [ED25519]})
    api.user("bob")
    assert api.get(PATH.format("alice"), user="bob").status_code == 404
    assert api.put(PATH.format("alice"), user="bob", json={"sshKeys": [RSA]}).status_code == 404
    assert api.get(PATH.format("nobody")).status_code == 404
    api.user("root", admin=True)
    assert api.get(PATH.format("alice"), user="root").json["sshKeys"] == [ED25519]
    assert api.put(PATH.format("alice"), user="root", json={"sshKeys": [RSA]}).json["sshKeys"] == [RSA]
    assert api.client.simulate_get(PATH.format("alice")).status_code == 401


@pytest.mark.parametrize("body", [
    {"sshKeys": ["ssh-ed25519 AAAA"]},
    {"sshKeys": ["ssh-dss AAAAB3NzaC1kc3MAAACBAP"]},
    {"sshKeys": [RSA.replace("ssh-rsa", "ssh-ed25519", 1)]},
    {"sshKeys": [ED25519 + " tab\there"]},
])
def test_a_key_that_is_not_an_openssh_public_key_is_422_with_the_reason(api, body):
    reply = api.put(PATH.format("alice"), json=body)
    assert reply.status_code == 422 and reply.headers["Content-Type"] == "application/problem+json"
    assert reply.json["type"] == "/OpenPEX/problems/invalid-account"
    assert [e["pointer"] for e in reply.json["errors"]] == ["/sshKeys"]
    assert api.get(PATH.format("alice")).json["sshKeys"] == []


@pytest.mark.parametrize("body", [
    {}, {"sshKeys": ED25519}, {"sshKeys": [ED25519] * 6}, {"sshKeys": [1]}, {"sshKeys": ["x" * 5000]},
    {"sshKeys": [ED25519], "extra": 1}, [ED25519],
])
def test_a_body_of_the_wrong_shape_is_a_4xx_problem(api, body):
    reply = api.put(PATH.format("alice"), json=body)
    assert 400 <= reply.status_code < 500 and reply.headers["Content-Type"] == "application/problem+json"
    assert api.get(PATH.format("alice")).json["sshKeys"] == []
