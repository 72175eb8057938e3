"""Accounts at the door: what a guesser, a squatter, a thief of cookies or a local user can
try, in process (the live versions are in test_accounts_live.py)."""

from __future__ import annotations

import os
import stat
import threading
from datetime import timedelta

import falcon.testing
import pytest
from click.testing import CliRunner

from pex.application.accounts import PasswordChecks, PasswordChecksBusy
from pex.bootstrap import build_application
from pex.http.auth import LoginThrottle
from pex.http.portal.secret import SECRET_FILE, stored_secret
from pex.projections.login_state import CLIENT_ROWS
from pex.settings import HttpSettings, SettingsError, trusted_proxies
from tests.support.api import PASSWORD, basic, cheap_settings, make_api, proposal
from tests.support.portal import make_portal

RESERVATIONS = "/OpenPEX/reservations"


def guess(api, username="alice", password="not the password", **kw):
    return api.client.simulate_get(RESERVATIONS, headers=basic(username, password), **kw)


# --- guessing passwords ----------------------------------------------------------------


def test_a_guesser_from_another_client_never_locks_the_owner_out(api):
    api.user("alice")
    statuses = [guess(api, remote_addr="10.0.0.66").status_code for _ in range(12)]
    assert statuses == [401] * 3 + [429] * 9
    assert guess(api, password=PASSWORD, remote_addr="10.0.0.66").status_code == 429  # the guesser is stopped
    assert guess(api, password=PASSWORD, remote_addr="10.0.0.7").status_code == 200  # the owner is not


def test_a_lockout_ends_and_doubles_with_every_further_failure(api):
    api.user("alice")
    for _ in range(3):
        guess(api)
    first = guess(api)
    assert first.status_code == 429 and int(first.headers["Retry-After"]) == 31
    api.clock.advance(timedelta(seconds=31))
    assert guess(api).status_code == 401  # the fourth failure: locked for 60 s now
    assert int(guess(api).headers["Retry-After"]) == 61
    api.clock.advance(timedelta(seconds=61))
    assert guess(api, password=PASSWORD).status_code == 200  # and a success clears the count
    assert [guess(api).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_spraying_many_usernames_from_one_client_is_throttled_too():
    api = make_api(HttpSettings(login_failures_allowed=3, login_lockout_seconds=30, login_client_failures_allowed=10))
    api.user("alice")
    statuses = [guess(api, username=f"user{n}", remote_addr="10.0.0.66").status_code for n in range(15)]
    assert statuses == [401] * 10 + [429] * 5
    assert guess(api, password=PASSWORD, remote_addr="10.0.0.66").status_code == 429
    assert guess(api, password=PASSWORD, remote_addr="10.0.0.7").status_code == 200
    api.application.close()


def test_failed_login_counters_are_bounded_per_client_and_forgotten():
    api = make_api(HttpSettings(login_failures_allowed=3, login_lockout_seconds=30, login_client_failures_allowed=10_000))
    state = api.application.login_state
    for n in range(CLIENT_ROWS * 3):
        assert guess(api, username=f"user{n}", remote_addr="10.0.0.66").status_code == 401
    guess(api, remote_addr="10.0.0.67")
    assert state.counters("10.0.0.66") == CLIENT_ROWS + 1  # the newest names, and the client's total
    api.clock.advance(timedelta(seconds=LoginThrottle.FORGET_SECONDS + 1))
    guess(api, remote_addr="10.0.0.68")  # any failure purges what is forgotten
    assert state.counters() == 2 and state.counters("10.0.0.66") == 0
    api.application.close()


def test_garbage_usernames_share_one_counter(api):
    for n in range(20):
        guess(api, username=f"not a name {n} " + "x" * 500, remote_addr="10.0.0.66")
    assert api.application.login_state.counters("10.0.0.66") == 2


def test_forwarded_addresses_count_only_from_a_trusted_proxy():
    api = make_api(HttpSettings(login_failures_allowed=3, login_lockout_seconds=30, trusted_proxies=trusted_proxies("10.0.0.1")))
    api.user("alice")
    via_proxy = {"remote_addr": "10.0.0.1"}
    for _ in range(3):
        api.client.simulate_get(RESERVATIONS, headers={**basic("alice", "wrong!!!"), "X-Forwarded-For": "10.9.0.66"}, **via_proxy)
    assert api.client.simulate_get(
        RESERVATIONS, headers={**basic("alice"), "X-Forwarded-For": "10.9.0.66"}, **via_proxy
    ).status_code == 429
    owner = {**basic("alice"), "X-Forwarded-For": "10.9.0.7"}
    assert api.client.simulate_get(RESERVATIONS, headers=owner, **via_proxy).status_code == 200
    # a client that is not a proxy cannot choose its address: each header is ignored
    spoofed = [
        api.client.simulate_get(
            RESERVATIONS, headers={**basic("alice", "wrong!!!"), "X-Forwarded-For": f"10.8.0.{n}"}, remote_addr="10.0.0.99"
        ).status_code
        for n in range(5)
    ]
    assert spoofed == [401, 401, 401, 429, 429]
    api.application.close()


def test_the_client_behind_a_chain_of_trusted_proxies_is_the_first_untrusted_hop():
    from pex.http.auth import ClientAddress

    def Req(remote, **headers):
        return falcon.testing.create_req(remote_addr=remote, headers={k.replace("_", "-"): v for k, v in headers.items()})

    door = ClientAddress(trusted_proxies("10.0.0.0/24, ::1"))
    assert door.client(Req("10.0.0.1", X_Forwarded_For="10.9.9.9, 10.1.1.1, 10.0.0.2")) == "10.1.1.1"
    assert door.client(Req("10.0.0.1", X_Forwarded_For="10.1.1.1:5678, 10.0.0.2")) == "10.1.1.1"
    assert door.client(Req("10.0.0.1", X_Forwarded_For="garbage")) == "10.0.0.1"
    assert door.client(Req("10.0.0.1")) == "10.0.0.1"
    assert door.client(Req("10.5.0.1", X_Forwarded_For="10.1.1.1")) == "10.5.0.1"  # not a proxy of ours
    # the header the proxy does not write is the client's own: never read
    assert door.client(Req("10.0.0.1", Forwarded="for=10.7.7.7", X_Forwarded_For="10.1.1.1")) == "10.1.1.1"
    rfc7239 = ClientAddress(trusted_proxies("10.0.0.0/24, ::1"), "Forwarded")
    assert rfc7239.client(Req("::1", Forwarded='for=10.0.0.3, for="[2001:db8::5]:80";proto=https')) == "2001:db8::5"
    assert rfc7239.client(Req("::1", Forwarded='for=10.1.1.1, for="_hidden"')) == "::1"
    assert rfc7239.client(Req("::1", X_Forwarded_For="10.1.1.1")) == "::1"
    for env in ({"PEX_TRUSTED_PROXIES": "10.0.0.0/33"}, {"PEX_FORWARDED_HEADER": "X-Real-IP"}):
        with pytest.raises(SettingsError):
            HttpSettings.from_env(env)


def test_the_portal_and_the_api_count_the_same_failures():
    portal = make_portal()
    portal.application.register_user("alice", PASSWORD)
    for _ in range(3):
        assert portal.client.simulate_get(RESERVATIONS, headers=basic("alice", "wrong!!!")).status_code == 401
    v = portal.visitor()
    v.get("/login")
    assert v.post("/login", {"username": "Alice", "password": PASSWORD}).status_code == 429
    portal.close()


# --- the cost of a password check ------------------------------------------------------


def test_password_checks_beyond_the_line_are_refused_at_once():
    checks = PasswordChecks(running=1, waiting=1, wait=30)
    running, release = threading.Event(), threading.Event()

    def hold():
        running.set()
        release.wait(30)

    holder = threading.Thread(target=checks.run, args=(hold,))
    holder.start()
    assert running.wait(30)
    waiter = threading.Thread(target=checks.run, args=(lambda: None,))  # waits its turn
    waiter.start()
    while checks.in_line < 2:
        threading.Event().wait(0.01)
    with pytest.raises(PasswordChecksBusy):
        checks.run(lambda: None)
    release.set()
    holder.join(30)
    waiter.join(30)
    assert not holder.is_alive() and not waiter.is_alive()


def test_password_checks_run_at_background_priority():
    checks = PasswordChecks(running=1, waiting=0, wait=1)
    assert checks.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())) == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # the caller's is its own
    checks.close()


def test_anonymous_logins_beyond_the_line_get_503_while_remembered_users_pass(api, monkeypatch):
    api.user("alice")
    assert api.get(RESERVATIONS).status_code == 200  # alice's check is remembered
    verify, entered, release = api.application._verify, threading.Semaphore(0), threading.Event()

    def slow_verify(password_hash, password):
        entered.release()
        release.wait(30)
        return verify(password_hash, password)

    monkeypatch.setattr(api.application, "_verify", slow_verify)
    answers = []
    anonymous = [
        threading.Thread(target=lambda n=n: answers.append(guess(api, username=f"nobody{n}", remote_addr=f"10.0.1.{n}")))
        for n in range(3)
    ]
    anonymous[0].start()
    assert entered.acquire(timeout=30)  # one check runs
    for t in anonymous[1:]:
        t.start()
    while api.application.password_checks.in_line < 3:
        threading.Event().wait(0.01)
    busy = guess(api, username="nobody9", remote_addr="10.0.1.9")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert busy.json["type"] == "/OpenPEX/problems/password-checks-busy"
    assert api.get(RESERVATIONS).status_code == 200  # never waits for argon2
    release.set()
    for t in anonymous:
        t.join(30)
    assert sorted(a.status_code for a in answers) == [401, 401, 401]


def test_one_users_burst_of_identical_credentials_costs_one_check_and_no_503(api, monkeypatch):
    """A script's thread pool sends the same credentials on eight connections at once: they
    share one argon2 check, so the burst never fills the line of password checks."""
    api.user("alice")
    verify, entered, release, checks = api.application._verify, threading.Semaphore(0), threading.Event(), []

    def slow_verify(password_hash, password):
        checks.append(password)
        entered.release()
        release.wait(30)
        return verify(password_hash, password)

    monkeypatch.setattr(api.application, "_verify", slow_verify)
    answers = []
    burst = [threading.Thread(target=lambda: answers.append(api.get(RESERVATIONS))) for _ in range(8)]
    burst[0].start()
    assert entered.acquire(timeout=30)  # the first one's check runs
    for t in burst[1:]:
        t.start()
    threading.Event().wait(0.2)  # the others arrive while it runs
    release.set()
    for t in burst:
        t.join(30)
    assert sorted(a.status_code for a in answers) == [200] * 8
    assert len(checks) < 8  # (exactly one, unless a thread was late to arrive)


def test_an_unknown_username_costs_the_same_check_as_a_wrong_password(api, monkeypatch):
    api.user("alice")
    hashes = []
    verify = api.application._verify
    monkeypatch.setattr(api.application, "_verify", lambda h, p: hashes.append(h) or verify(h, p))
    assert guess(api, username="alice").status_code == 401
    assert guess(api, username="nobody").status_code == 401
    real, dummy = hashes
    assert real.rsplit("$", 2)[0] == dummy.rsplit("$", 2)[0]  # same algorithm and parameters


# --- usernames --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice\n", "alice\r\n", "\nalice", "al ice", "alice\x00"])
def test_a_username_with_a_trailing_newline_or_space_is_refused(api, name):
    r = api.client.simulate_post("/OpenPEX/users", json={"username": name, "password": PASSWORD})
    assert r.status_code in (400, 422), r.text
    assert api.application.get_user("alice") is None


def test_usernames_ignore_case_for_registration_and_login(api):
    assert api.client.simulate_post("/OpenPEX/users", json={"username": "Alice", "password": PASSWORD}).status_code == 201
    again = api.client.simulate_post("/OpenPEX/users", json={"username": "alice", "password": "another password"})
    assert again.status_code == 409 and again.json["type"] == "/OpenPEX/problems/username-taken"
    me = api.client.simulate_get("/OpenPEX/users/ALICE", headers=basic("aLiCe"))
    assert me.status_code == 200 and me.json["username"] == "Alice"  # kept as first written
    rid = api.client.simulate_post(RESERVATIONS, headers=basic("ALICE"), json=proposal()).json["proposal"]["id"]
    assert api.client.simulate_get(f"{RESERVATIONS}/{rid}", headers=basic("alice")).status_code == 200


@pytest.mark.parametrize("name", ["root", "ROOT", "admin", "Admin", "administrator", "system", "pex", "OpenPEX", "ad.min", "sys_admin"])
def test_reserved_names_cannot_be_taken_by_registering(api, name):
    r = api.client.simulate_post("/OpenPEX/users", json={"username": name, "password": PASSWORD})
    assert r.status_code == 422 and r.json["errors"][0]["detail"] == "this name is reserved; choose another"


def test_reserved_names_are_refused_on_the_portal_too(portal):
    v = portal.visitor()
    v.get("/register")
    r = v.post("/register", {"username": "Admin", "password": PASSWORD, "confirm": PASSWORD})
    assert r.status_code == 422 and "reserved" in r.text
    assert portal.application.get_user("admin") is None


def test_the_operator_may_create_a_reserved_name(tmp_path, monkeypatch):
    from pex.cli import main

    monkeypatch.setenv("PEX_DATABASE_URL", f"sqlite:///{tmp_path}/pex.sqlite3")
    monkeypatch.setenv("PEX_PASSWORD_PROFILE", "cheapest")
    result = CliRunner().invoke(main, ["users", "add", "admin", "--admin", "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


# --- files ------------------------------------------------------------------------------


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_sqlite_store_and_its_journals_are_private(tmp_path):
    var = tmp_path / "var"
    application = build_application(cheap_settings(f"sqlite:///{var}/pex.sqlite3"))
    application.register_user("alice", PASSWORD)
    files = sorted(p.name for p in var.iterdir())
    assert files == ["pex.sqlite3", "pex.sqlite3-shm", "pex.sqlite3-wal"]
    assert {name: mode(var / name) for name in files} == {name: 0o600 for name in files}
    assert mode(var) == 0o700
    application.close()


def test_an_sqlite_store_others_could_read_is_made_private(tmp_path, caplog):
    path = tmp_path / "pex.sqlite3"
    application = build_application(cheap_settings(f"sqlite:///{path}"))
    application.close()
    os.chmod(path, 0o644)
    application = build_application(cheap_settings(f"sqlite:///{path}"))
    assert mode(path) == 0o600 and "others could read the password hashes" in caplog.text
    application.close()


def test_the_portal_secret_is_made_private_in_a_private_directory(tmp_path):
    var = tmp_path / "var"
    stored_secret(str(var))
    assert mode(var) == 0o700 and mode(var / SECRET_FILE) == 0o600


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660], ids=oct)
def test_a_portal_secret_others_may_read_or_write_is_refused(tmp_path, loose):
    stored_secret(str(tmp_path))
    os.chmod(tmp_path / SECRET_FILE, loose)
    with pytest.raises(SettingsError, match="others may read or change"):
        stored_secret(str(tmp_path))


def test_a_portal_secret_another_user_owns_is_refused(tmp_path):
    stored_secret(str(tmp_path))
    with pytest.raises(SettingsError, match="owned by uid"):
        stored_secret(str(tmp_path), uid=os.geteuid() + 1)


# --- sessions and remembered checks -------------------------------------------------------


def test_a_copied_session_cookie_is_worthless_after_logout(portal):
    v = portal.user("alice")
    copy = dict(v.cookies)
    assert v.post("/logout").status_code == 303
    thief = portal.visitor()
    thief.cookies = copy
    r = thief.get("/reservations")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_a_password_change_ends_every_session_and_remembered_check(portal):
    phone, laptop = portal.user("alice"), portal.visitor()
    laptop.get("/login")
    assert laptop.post("/login", {"username": "alice", "password": PASSWORD}).status_code == 303
    assert portal.client.simulate_get(RESERVATIONS, headers=basic("alice")).status_code == 200  # remembered
    portal.application.set_password("alice", "a brand new password")
    for visitor in (phone, laptop):
        assert visitor.get("/reservations").status_code == 303
    assert portal.client.simulate_get(RESERVATIONS, headers=basic("alice")).status_code == 401
    assert portal.client.simulate_get(RESERVATIONS, headers=basic("alice", "a brand new password")).status_code == 200
    assert portal.application.login_state.sessions() == 0


def test_sessions_per_user_are_bounded(portal):
    from pex.projections.login_state import USER_SESSIONS

    portal.application.register_user("alice", PASSWORD)
    for _ in range(USER_SESSIONS + 5):
        v = portal.visitor()
        v.get("/login")
        assert v.post("/login", {"username": "alice", "password": PASSWORD}).status_code == 303
    assert portal.application.login_state.sessions() == USER_SESSIONS


def test_pex_users_set_password_ends_the_old_password(tmp_path, monkeypatch):
    from pex.cli import main
    from pex.cli.common import build

    monkeypatch.setenv("PEX_DATABASE_URL", f"sqlite:///{tmp_path}/pex.sqlite3")
    monkeypatch.setenv("PEX_PASSWORD_PROFILE", "cheapest")
    assert CliRunner().invoke(main, ["users", "add", "eve", "--password-stdin"], input=PASSWORD + "\n").exit_code == 0
    result = CliRunner().invoke(main, ["users", "set-password", "eve", "--password-stdin"], input="eve's new secret\n")
    assert result.exit_code == 0, result.output
    application = build()
    assert application.authenticate("eve", PASSWORD) is None
    assert application.authenticate("eve", "eve's new secret").password_version == 1
    application.close()


def test_an_account_registered_with_capitals_before_names_ignored_case_is_still_found(api):
    from pex.domain.user import User, legacy_user_id
    from tests.support import T0

    password_hash = api.application.password_hasher.hash(PASSWORD)
    bob = User._create(User.Registered, id=legacy_user_id("Bob"), username="Bob", password_hash=password_hash, is_admin=False, at=T0)
    api.application.save(bob)
    assert api.application.authenticate("Bob", PASSWORD).username == "Bob"
    assert api.client.simulate_get(RESERVATIONS, headers=basic("Bob")).status_code == 200
    api.application.set_password("Bob", "bob's new password")
    assert api.application.authenticate("Bob", "bob's new password").password_version == 1
