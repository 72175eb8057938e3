"""docs/api.md's examples, run in order against a fresh `pex serve`, every reply checked
against the `# →` comment below its curl (the convention: tests/support/docs.py).

The instances' example waits for the worker to start a VM: its `sleep 70` is a bounded poll
for a running VM here, and its start "a minute from now" is 5 s from now, so that the suite
does not wait a minute (tests.support.docs.SOON, WAIT_FOR_A_RUNNING_VM)."""

from __future__ import annotations

import pytest

from tests.support.docs import ROOT, SOON, WAIT_FOR_A_RUNNING_VM, mismatches, run_document, shell_blocks

pytestmark = [pytest.mark.gunicorn, pytest.mark.xen]


def test_every_example_of_the_api_page_gets_the_reply_it_shows(served):
    blocks = shell_blocks((ROOT / "docs" / "api.md").read_text())
    expected, run = run_document(blocks, served, prelude=SOON + WAIT_FOR_A_RUNNING_VM)
    assert mismatches(expected, run) == []
