"""Fixtures for the portal: the real Falcon app in process with a cookie-keeping client, and,
for the browser tests, a real gunicorn and Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import falcon.testing
import pytest

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain.values import Terms
from pex.http.app import create_app
from pex.http.portal.settings import PortalSettings
from pex.projections.readmodels import ReadModels
from pex.settings import HttpSettings, Settings
from tests.conftest import T0

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
        from urllib.parse import urlencode

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
    application = build_application(
        Settings(database_url=database_url, extra_env={"PEX_PASSWORD_PROFILE": "cheapest"}), clock=clock
    )
    settings = HttpSettings(log_requests=False, login_failures_allowed=3, login_lockout_seconds=30, **http)
    read_models = ReadModels(application)
    app = create_app(application, settings, read_models=read_models, portal_settings=PortalSettings(secret_key=SECRET))
    return PortalTest(falcon.testing.TestClient(app), application, read_models, clock)


@pytest.fixture
def portal():
    p = make_portal()
    yield p
    p.close()


@pytest.fixture
def portal_and_worker(tmp_path):
    """The portal as `pex serve` runs it (no dispatcher in its process: a button records the
    user's request) and, on the same SQLite store and manual clock, a worker that carries the
    requests out: tests.workers' World, a timer and monitors driving a simulated Xen pool
    (the paper's testbed, node1..node5) through the real XenAPI client."""
    from pex.adapters.xen.simulator import run_simulator
    from tests.workers.conftest import GUEST_IP_DELAY, build_world

    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    with run_simulator(hosts=5, guest_ip_delay=GUEST_IP_DELAY, seed=11) as simulator:
        portal = make_portal(database_url=url)
        world = build_world(simulator, database_url=url, worker_id="portal-test-worker", clock=portal.clock)
        try:
            yield portal, world
        finally:
            for close in world.closers:
                close()
            portal.close()


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


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium (Playwright cannot download its own browsers here)."""
    return apt_install("chromium", CHROMIUM)


@pytest.fixture(scope="session")
def libfaketime_path() -> str:
    """Debian's libfaketime, which makes a process and its children see another wall clock."""
    return apt_install("libfaketime", LIBFAKETIME)


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    # Under libfaketime (test_at_any_hour.py) chromium fails to load a page: the browser and
    # Playwright's driver keep the real clock. The pages' script counts relative times only.
    faked = {name: os.environ.pop(name) for name in ("LD_PRELOAD", "FAKETIME") if "FAKETIME" in os.environ and name in os.environ}
    try:
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS,
                                             env=dict(os.environ))
    finally:
        os.environ.update(faked)
    try:
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def live_portal(tmp_path):
    """A real gunicorn (pex serve) on loopback over an SQLite file, the portal at its root, and
    the worker `pex serve` embeds, with its simulated Xen pool (pinned here, whatever the
    caller's environment says: no PEX_XEN_URL, a tick a second, guests' IPs 2 s after boot)."""
    from tests.http.conftest import start_server, stop_server

    server = start_server(
        f"sqlite:///{tmp_path}/pex.sqlite3",
        tmp_path,
        workers=2,
        extra_env={"PEX_SECRET_KEY": SECRET, "PEX_COOKIE_SECURE": "auto", "PEX_LOG_REQUESTS": "0",
                   "PEX_XEN_URL": "", "PEX_EMBEDDED_WORKER": "y", "PEX_WORKER_TICK_SECONDS": "1",
                   "PEX_SIM_GUEST_IP_DELAY_SECONDS": "2"},
    )
    yield server
    stop_server(server)
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture
def shots(request):
    """shots(page, name): a full-page screenshot in test-artifacts/portal/, and a copy in
    docs/portal/ when PEX_UPDATE_PORTAL_DOCS=1 (to refresh the pictures in docs/portal.md)."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "portal")
    update_docs = os.environ.get("PEX_UPDATE_PORTAL_DOCS") == "1"
    taken = []

    def shot(page, name: str, full_page: bool = True) -> str:
        path = os.path.join(ARTIFACTS, f"{name}.png")
        page.screenshot(path=path, full_page=full_page)
        if update_docs:
            os.makedirs(docs, exist_ok=True)
            shutil.copyfile(path, os.path.join(docs, f"{name}.png"))
        taken.append(path)
        return path

    return shot
