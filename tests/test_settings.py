"""The settings are one tree read once from the environment (pex.settings), and nothing below
the entry points reads the environment again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from argon2 import profiles

from pex.bootstrap import build_application, persistence_env, postgres_session_attrs
from pex.settings import PasswordSettings, PortalSettings, Settings, SettingsError


def test_every_part_of_the_tree_is_read_in_one_call():
    settings = Settings.from_env({
        "PEX_PASSWORD_PROFILE": "cheapest", "PEX_PASSWORD_CHECKS": "3", "PEX_PASSWORD_CHECK_WAIT_SECONDS": "2",
        "PEX_SECRET_KEY": "k" * 20, "PEX_COOKIE_SECURE": "on", "PEX_SESSION_HOURS": "1.5", "PEX_VAR_DIR": "/srv/pex",
        "PROMETHEUS_MULTIPROC_DIR": "/run/pex-metrics", "PEX_LOG_LEVEL": "debug",
    })  # fmt: skip
    assert settings.passwords == PasswordSettings(profile="cheapest", checks=3, checks_waiting=2, check_wait_seconds=2.0)
    assert settings.http.portal == PortalSettings(
        secret_key="k" * 20, var_dir="/srv/pex", cookie_secure=True, session_hours=1.5
    )
    assert settings.http.metrics_dir == "/run/pex-metrics"
    assert settings.worker.log_level == "DEBUG"
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    "env", [{"PEX_PASSWORD_PROFILE": "fastest"}, {"PEX_PASSWORD_CHECKS": "0"}, {"PEX_PASSWORD_CHECKS_WAITING": "-1"}]
)
def test_password_settings_it_cannot_use_are_refused_when_read(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_the_application_reads_only_the_settings_it_is_given(monkeypatch):
    # Variables that eventsourcing, or an older PEX, would have read from the environment.
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.sqlite")
    monkeypatch.setenv("SQLITE_DBNAME", "/nonexistent/pex.sqlite3")
    monkeypatch.setenv("PEX_PASSWORD_PROFILE", "cheapest")
    monkeypatch.setenv("PEX_PASSWORD_CHECKS", "7")
    application = build_application(Settings(database_url="memory:", passwords=PasswordSettings(checks=2)))
    try:
        assert type(application.factory).__module__ == "eventsourcing.popo"
        assert application.password_checks.running == 2
        assert application.password_hasher.memory_cost == profiles.RFC_9106_LOW_MEMORY.memory_cost  # not the cheapest
    finally:
        application.close()


def test_re_packing_is_on_unless_turned_off_and_its_margin_is_read():
    assert Settings.from_env({}).repack is True
    settings = Settings.from_env({"PEX_REPACK": "off", "PEX_REPACK_MARGIN_SECONDS": "0"})
    assert (settings.repack, settings.repack_margin) == (False, timedelta(0))
    app = build_application(Settings(database_url="memory:", repack=False, repack_margin=timedelta(minutes=3)))
    assert (app.repack, app.repack_margin) == (False, timedelta(minutes=3))
    app.close()
    with pytest.raises(SettingsError):
        Settings.from_env({"PEX_REPACK": "sometimes"})
    with pytest.raises(SettingsError):
        Settings.from_env({"PEX_REPACK_MARGIN_SECONDS": "-1"})


def test_the_webhooks_settings_are_read_with_the_rest_and_bad_ones_refused():
    from datetime import timedelta

    from pex.settings import WebhookSettings

    settings = Settings.from_env({
        "PEX_WEBHOOK_ALLOW_PRIVATE": "on", "PEX_WEBHOOK_LAPSE_LEAD_SECONDS": "120", "PEX_WEBHOOK_ENDING_LEAD_SECONDS": "600",
        "PEX_WEBHOOK_TIMEOUT_SECONDS": "2.5", "PEX_WEBHOOK_ATTEMPTS": "3", "PEX_WEBHOOK_LOG_SIZE": "10",
    })  # fmt: skip
    assert settings.webhooks == WebhookSettings(
        allow_private=True, lapse_lead=timedelta(minutes=2), ending_lead=timedelta(minutes=10), timeout=2.5,
        attempts=3, log_size=10,
    )
    assert Settings.from_env({}).webhooks == WebhookSettings() and not WebhookSettings().allow_private
    for bad in ({"PEX_WEBHOOK_ALLOW_PRIVATE": "maybe"}, {"PEX_WEBHOOK_ATTEMPTS": "0"}, {"PEX_WEBHOOK_TIMEOUT_SECONDS": "-1"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)


@pytest.mark.parametrize(
    "url, hosts, ports, user, password, attrs",
    [
        ("postgresql://pex:s%40cret@db:5433/pex", "db", "5433", "pex", "s@cret", None),
        ("postgresql://pex@db/pex", "db", "5432", "pex", "", None),
        # A primary and its standby: PEX writes only to whichever of them takes writes.
        ("postgresql://pex@db1:5432,db2:5433/pex", "db1,db2", "5432,5433", "pex", "", "read-write"),
        ("postgresql://pex@db1,[::1]:6000/pex?target_session_attrs=primary", "db1,::1", "5432,6000", "pex", "", "primary"),
        ("postgresql:///pex?host=/run/postgresql", "/run/postgresql", "5432", "pex", "", None),
    ],
)
def test_a_postgresql_url_names_one_server_or_a_primary_and_its_standbys(url, hosts, ports, user, password, attrs):
    env = persistence_env(url)
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == (
        hosts, ports, user, password
    )
    assert env["POSTGRES_DBNAME"] == "pex" and postgres_session_attrs(url) == attrs


def test_a_postgresql_url_with_a_port_that_is_no_number_is_refused():
    with pytest.raises(SettingsError, match="host:port"):
        persistence_env("postgresql://pex@db1:5432,db2:five/pex")
