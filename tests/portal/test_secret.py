"""The portal's secret: from PEX_SECRET_KEY, or made once and kept in the var directory."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from pex.http.portal.secret import SECRET_FILE, portal_secret, stored_secret
from pex.settings import PortalSettings, Settings, SettingsError


def test_the_secret_comes_from_the_environment_when_set(tmp_path):
    settings = Settings.from_env({"PEX_SECRET_KEY": "k" * 40, "PEX_VAR_DIR": str(tmp_path)}).http.portal
    assert portal_secret(settings) == "k" * 40 and not (tmp_path / SECRET_FILE).exists()


def test_without_one_a_secret_is_made_once_and_kept_private(tmp_path):
    with ThreadPoolExecutor(8) as pool:  # workers starting together all get the same secret
        secrets = set(pool.map(lambda _: stored_secret(str(tmp_path)), range(16)))
    assert len(secrets) == 1 and len(secrets.pop()) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / SECRET_FILE).st_mode) == 0o600
    assert os.listdir(tmp_path) == [SECRET_FILE]
    assert portal_secret(PortalSettings.from_env({"PEX_VAR_DIR": str(tmp_path)})) == stored_secret(str(tmp_path))


@pytest.mark.parametrize("env", [{"PEX_SECRET_KEY": "short"}, {"PEX_COOKIE_SECURE": "maybe"}, {"PEX_SESSION_HOURS": "0"}])
def test_bad_settings_are_refused(env, tmp_path):
    with pytest.raises(SettingsError):
        Settings.from_env({"PEX_VAR_DIR": str(tmp_path), **env})
