"""docs/api.md's receiver check ("Users are told"), run as written against what the notifier
signs (pex.workers.webhooks.signature): it accepts PEX's signature, and refuses another
secret, an altered body, and a timestamp too old."""

from __future__ import annotations

import re
import time

from pex.workers.webhooks import signature
from tests.support.docs import ROOT


def docs_verify():
    text = (ROOT / "docs" / "api.md").read_text()
    [block] = [b for b in re.findall(r"^```python\n(.*?)^```", text, re.M | re.S) if "def verify" in b]
    namespace: dict = {}
    exec(compile(block, "docs/api.md", "exec"), namespace)
    return namespace["verify"]


def test_the_documented_check_accepts_what_pex_signs_and_nothing_else():
    verify = docs_verify()
    secret, body = "whsec_example", b'{"id":"offer.lapsing:r:t","type":"offer.lapsing"}'
    now = str(int(time.time()))
    headers = {"X-PEX-Timestamp": now, "X-PEX-Signature": signature(secret, now, body)}
    assert verify(secret, headers, body)
    assert not verify("whsec_other", headers, body)
    assert not verify(secret, headers, body + b" ")
    old = str(int(time.time()) - 3600)
    assert not verify(secret, {"X-PEX-Timestamp": old, "X-PEX-Signature": signature(secret, old, body)}, body)
    assert not verify(secret, {"X-PEX-Signature": signature(secret, "", body)}, body)
