"""Accessibility checks of a page in the browser tests: Deque's axe-core, the engine behind
most accessibility checkers, run in the page by Playwright.

axe-core comes from PyPI inside axe-playwright-python (pinned in constraints.txt), which
bundles axe-core's own axe.min.js; its SHA-256 is pinned here too, so an upgrade that changes
the engine is a deliberate edit, not a surprise. The script is injected with Playwright's
evaluate (the DevTools protocol), which the portal's Content-Security-Policy does not apply to.

A violation of impact "serious" or "critical" fails the test; "minor" and "moderate" ones
are reported with the results, not failed on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from axe_playwright_python.base import AXE_FILE_PATH

AXE_VERSION = "4.12.1"
AXE_SHA256 = "84494fec757e4710dc751c8d7a636e457f4532f08f85c86dc9070133fbff53bc"
FAILING_IMPACTS = ("serious", "critical")
# The rules axe runs: the WCAG 2.0, 2.1 and 2.2 A and AA rules, and its best practices.
RUN_ONLY = {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]}


@dataclass(frozen=True)
class Violation:
    rule: str
    impact: str
    help: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.rule} ({self.impact}): {self.help} at {', '.join(self.targets[:5])}"


def axe_script() -> str:
    data = Path(AXE_FILE_PATH).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != AXE_SHA256:
        raise AssertionError(f"{AXE_FILE_PATH} is not the pinned axe-core {AXE_VERSION} (sha256 {digest})")
    return data.decode("utf-8")


def audit(page) -> list[Violation]:
    """Every violation axe finds on the page as it is now."""
    page.evaluate(axe_script())
    version = page.evaluate("axe.version")
    assert version == AXE_VERSION, version
    results = page.evaluate(f"axe.run(document, {json.dumps({'runOnly': RUN_ONLY, 'resultTypes': ['violations']})})")
    return [
        Violation(v["id"], v["impact"] or "minor", v["help"], tuple(" ".join(map(str, n["target"])) for n in v["nodes"]))
        for v in results["violations"]
    ]


def serious(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.impact in FAILING_IMPACTS]
