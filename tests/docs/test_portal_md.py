"""docs/portal.md shows the browser test's screenshots, and only them: every picture it names is
one that tests/portal/test_browser.py takes (`shots(page, NAME)`, copied to docs/portal/ with
PEX_UPDATE_PORTAL_DOCS=1), every picture the test takes is on the page, and every file in
docs/portal/ is one of them, so that no picture is placed by hand or left behind."""

from __future__ import annotations

import re

from tests.support.docs import ROOT

SHOT = re.compile(r'shots\(\w+, "([\w-]+)"')
IMAGE = re.compile(r"!\[[^\]]*\]\(portal/([\w-]+)\.png\)")


def test_the_portal_page_shows_exactly_the_pictures_the_browser_test_takes():
    taken = SHOT.findall((ROOT / "tests" / "portal" / "test_browser.py").read_text())
    shown = IMAGE.findall((ROOT / "docs" / "portal.md").read_text())
    assert len(taken) == len(set(taken)) >= 15, taken
    assert sorted(shown) == sorted(set(shown)) and set(shown) == set(taken)
    assert {p.stem for p in (ROOT / "docs" / "portal").glob("*.png")} == set(taken)
