"""The failed-login counters and the portal sessions, the same in every store (memory,
SQLite, PostgreSQL), and shared by every application on one store (as gunicorn's workers are)."""

from __future__ import annotations

import threading

from pex.bootstrap import build_application
from pex.projections.login_state import CLIENT_TOTAL, USER_SESSIONS
from tests.support.api import cheap_settings

NOW = 1_800_000_000.0


def two_applications(database_url):
    first = build_application(cheap_settings(database_url))
    if database_url == "memory:":
        return first, first
    return first, build_application(cheap_settings(database_url, create_tables=False))


def test_failures_count_once_each_whichever_application_records_them(database_url):
    one, other = two_applications(database_url)
    states = [one.login_state, other.login_state]

    def fail(n: int) -> None:
        for i in range(10):
            states[(n + i) % 2].count_failure("alice", "10.0.0.1", NOW, NOW - 3600)

    threads = [threading.Thread(target=fail, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = one.login_state.count_failure("alice", "10.0.0.1", NOW, NOW - 3600)
    assert (counts.user, counts.client) == (41, 41)
    other.login_state.block("alice", "10.0.0.1", NOW + 30)
    assert one.login_state.blocked_until("alice", "10.0.0.1") == NOW + 30
    assert one.login_state.blocked_until("bob", "10.0.0.1") == 0
    other.login_state.block(CLIENT_TOTAL, "10.0.0.1", NOW + 90)
    assert one.login_state.blocked_until("bob", "10.0.0.1") == NOW + 90  # the client's total blocks every name
    one.login_state.clear("alice", "10.0.0.1")
    assert other.login_state.counters("10.0.0.1") == 1
    counts = one.login_state.count_failure("bob", "10.0.0.1", NOW + 7200, NOW + 3600)
    assert (counts.user, counts.client) == (1, 1)  # an old count starts afresh
    assert other.login_state.blocked_until("bob", "10.0.0.1") == 0
    for app in {one, other}:
        app.close()


def test_old_counters_go_and_a_client_keeps_only_its_newest(database_url):
    app, _ = two_applications(database_url)
    state = app.login_state
    for n in range(30):
        state.count_failure(f"user{n}", "10.0.0.1", NOW + n, NOW - 3600)
    state.count_failure("alice", "10.0.0.2", NOW, NOW - 3600)
    state.forget(NOW - 3600, client="10.0.0.1", keep=10)
    assert state.counters("10.0.0.1") == 11 and state.counters("10.0.0.2") == 2
    assert state.count_failure("user29", "10.0.0.1", NOW + 30, NOW - 3600).user == 2  # the newest stayed
    state.forget(NOW + 25, keep=3)  # older than NOW + 25 goes; then only the newest 3 in all
    assert state.counters() == 3
    state.forget(NOW + 3600)
    assert state.counters() == 0
    app.close()


def test_sessions_are_shared_and_bounded(database_url):
    one, other = two_applications(database_url)
    for n in range(USER_SESSIONS + 3):
        one.login_state.open_session(f"sid{n}", "alice", 0, NOW + 100 + n, NOW)
    other.login_state.open_session("bob's", "bob", 2, NOW + 100, NOW)
    assert one.login_state.sessions() == USER_SESSIONS + 1
    assert other.login_state.session("sid0") is None  # the oldest went
    record = other.login_state.session(f"sid{USER_SESSIONS + 2}")
    assert (record.username, record.password_version, record.expires) == ("alice", 0, NOW + 100 + USER_SESSIONS + 2)
    one.login_state.close_session("bob's")
    assert other.login_state.session("bob's") is None
    other.login_state.open_session("late", "carol", 0, NOW + 10_000, NOW + 5000)  # the expired go
    assert one.login_state.sessions() == 1
    one.login_state.open_session("again", "alice", 0, NOW + 20_000, NOW + 5000)
    other.login_state.close_sessions_of("alice")
    assert one.login_state.sessions() == 1
    for app in {one, other}:
        app.close()
