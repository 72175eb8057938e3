"""The portal in process: the real Falcon app with a cookie-keeping client (`Visitor`), and
what the browser tests need from Debian (chromium, libfaketime)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode
from uuid import UUID

import falcon.testing
import pytest

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain.values import Terms
from pex.http.app import create_app
from pex.projections.readmodels import ReadModels
from pex.settings import HttpSettings, PortalSettings
from tests.support import T0
from tests.support.api import cheap_settings

ETCH = "PEX Debian Etch 4.0 Template"
PASSWORD = "correct horse battery"
SECRET = "portal-tests-secret-key-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM = "application/x-www-form-urlencoded"


@dataclass
class Visitor:
    """One browser's worth of state against the in-process app: its cookie, its last page."""

    client: falcon.testing.TestClient
    cookies: dict = field(default_factory=dict)
    page: falcon.testing.Result | None = None

    def _keep(self, result: falcon.testing.Result) -> falcon.testing.Result:
        for name, cookie in result.cookies.items():
            if self.cookies.get(name) != cookie.value:
                self.page = None  # a new session: the tokens of the last page are void
            self.cookies[name] = cookie.value
        return result

    def get(self, path: str, **kw) -> falcon.testing.Result:
        headers = {"Accept": "text/html", **kw.pop("headers", {})}
        self.page = self._keep(self.client.simulate_get(path, cookies=self.cookies, headers=headers, **kw))
        return self.page

    def csrf(self) -> str:
        if self.page is None or not CSRF.search(self.page.text):
            self.get("/preferences")
        return CSRF.search(self.page.text).group(1)

    def post(self, path: str, data: dict | None = None, csrf: bool = True, **kw) -> falcon.testing.Result:
        data = dict(data or {})
        if csrf and "csrf_token" not in data:
            data["csrf_token"] = self.csrf()
        headers = {"Content-Type": FORM, "Accept": "text/html", **kw.pop("headers", {})}
        result = self._keep(
            self.client.simulate_post(path, body=urlencode(data), cookies=self.cookies, headers=headers, **kw)
        )
        if result.status_code != 303:
            self.page = result
        return result

    def follow(self, result: falcon.testing.Result) -> falcon.testing.Result:
        assert result.status_code == 303, (result.status, result.text[:2000])
        return self.get(result.headers["location"])


@dataclass
class PortalTest:
    client: falcon.testing.TestClient
    application: object
    read_models: ReadModels  # what the list pages and the calendar read
    clock: ManualClock

    def visitor(self) -> Visitor:
        return Visitor(self.client)

    def user(self, name: str, admin: bool = False) -> Visitor:
        """A visitor logged in as a new user `name`."""
        self.application.register_user(name, PASSWORD, is_admin=admin)
        v = self.visitor()
        v.get("/login")
        r = v.post("/login", {"username": name, "password": PASSWORD})
        assert r.status_code == 303, r.text
        return v

    def book(self, user: str, size: str, instances: int, start: datetime, hours: float = 2) -> UUID:
        """A confirmed reservation made straight through the application (another user's load)."""
        if self.application.get_user(user) is None:
            self.application.register_user(user, PASSWORD)
        rid = self.application.initiate_reservation(user)
        outcome = self.application.submit_proposal(
            rid, Terms(size, ETCH, instances, 0, start, start + timedelta(hours=hours))
        )
        assert outcome.reply.value == "ACCEPT", outcome
        self.application.confirm(rid)
        return rid

    def close(self) -> None:
        self.read_models.close()
        self.application.close()


def make_portal(database_url: str = "memory:", clock: ManualClock | None = None, **http) -> PortalTest:
    clock = clock or ManualClock(T0)
    application = build_application(cheap_settings(database_url), clock=clock)
    settings = HttpSettings(
        log_requests=False, login_failures_allowed=3, login_lockout_seconds=30, portal=PortalSettings(secret_key=SECRET),
        **http,
    )
    read_models = ReadModels(application)
    app = create_app(application, settings, read_models=read_models)
    return PortalTest(falcon.testing.TestClient(app), application, read_models, clock)


def local(when: datetime | str) -> str:
    """The value of a datetime-local input for `when`, in UTC (a session's default zone)."""
    return when if isinstance(when, str) else when.strftime("%Y-%m-%dT%H:%M")


# --- the browser ---------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# A run at another hour (test_at_any_hour.py) keeps its screenshots apart.
ARTIFACTS = os.environ.get("PEX_PORTAL_ARTIFACTS") or os.path.join(os.path.dirname(__file__), "..", "..", "test-artifacts", "portal")
LIBFAKETIME = f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}/faketime/libfaketimeMT.so.1"


def apt_install(package: str, path: str) -> str:
    """`path`, installing Debian's `package` with apt when it is missing and we are root."""
    if not os.path.exists(path):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(f"{path} is missing and this user cannot install it: apt-get install {package}, or run the tests as root")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
            subprocess.run(install, env=env, check=True, capture_output=True)
    return path
