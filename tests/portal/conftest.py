"""Fixtures for the portal: the real Falcon app in process with a cookie-keeping client, and,
for the browser tests, a real gunicorn and Debian's chromium driven by Playwright
(tests.support.portal)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.support import accessibility
from tests.support.portal import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LIBFAKETIME, SECRET, apt_install, make_portal
from tests.support.server import serving
from tests.support.world import GUEST_IP_DELAY, build_world
from tests.support.xen import simulator_fixture

simulator = simulator_fixture(guest_ip_delay=GUEST_IP_DELAY, seed=11)


@pytest.fixture
def portal():
    p = make_portal()
    yield p
    p.close()


@pytest.fixture
def portal_and_worker(tmp_path, simulator):
    """The portal as `pex serve` runs it (no dispatcher in its process: a button records the
    user's request) and, on the same SQLite store and manual clock, a worker that carries the
    requests out: tests.workers' World, a timer and monitors driving a simulated Xen pool
    (the paper's testbed, node1..node5) through the real XenAPI client."""
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    portal = make_portal(database_url=url)
    world = build_world(simulator, database_url=url, worker_id="portal-test-worker", clock=portal.clock)
    try:
        yield portal, world
    finally:
        for close in world.closers:
            close()
        portal.close()


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
    with serving(
        f"sqlite:///{tmp_path}/pex.sqlite3",
        tmp_path,
        workers=2,
        extra_env={"PEX_SECRET_KEY": SECRET, "PEX_COOKIE_SECURE": "auto", "PEX_LOG_REQUESTS": "0",
                   "PEX_XEN_URL": "", "PEX_EMBEDDED_WORKER": "y", "PEX_WORKER_TICK_SECONDS": "1",
                   "PEX_SIM_GUEST_IP_DELAY_SECONDS": "2"},
    ) as server:
        yield server


@pytest.fixture
def shots(request):
    """shots(page, name): a full-page screenshot in test-artifacts/portal/, and a copy in
    docs/portal/ when PEX_UPDATE_PORTAL_DOCS=1 (to refresh the pictures in docs/portal.md);
    and an accessibility check of the page by axe-core (tests.support.accessibility), every
    finding written to test-artifacts/portal/accessibility.json. The test fails at its end if
    any page had a serious or critical violation (audit=False for a page whose scripts are off:
    axe runs as a script)."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "portal")
    update_docs = os.environ.get("PEX_UPDATE_PORTAL_DOCS") == "1"
    taken = []
    findings: dict[str, list] = {}

    def shot(page, name: str, full_page: bool = True, audit: bool = True) -> str:
        path = os.path.join(ARTIFACTS, f"{name}.png")
        page.screenshot(path=path, full_page=full_page)
        if update_docs:
            os.makedirs(docs, exist_ok=True)
            shutil.copyfile(path, os.path.join(docs, f"{name}.png"))
        taken.append(path)
        if audit:
            findings[name] = accessibility.audit(page)
        return path

    yield shot
    with open(os.path.join(ARTIFACTS, "accessibility.json"), "w") as report:
        json.dump({name: [str(v) for v in found] for name, found in findings.items()}, report, indent=1)
    failing = [f"{name}: {v}" for name, found in findings.items() for v in accessibility.serious(found)]
    assert not failing, "serious accessibility violations (axe-core):\n" + "\n".join(failing)
