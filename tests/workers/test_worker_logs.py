"""The worker logs as the servers do (docs/operations.md): JSON lines on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.api import CHEAP


def test_the_worker_writes_one_json_object_a_line(tmp_path):
    env = {**os.environ, **CHEAP, "PEX_DATABASE_URL": f"sqlite:///{tmp_path}/pex.sqlite3"}
    done = subprocess.run(
        [sys.executable, "-m", "pex.cli", "worker", "--once"], env=env, cwd=tmp_path,
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines, "the worker said nothing"
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records), records
    assert any(r["logger"].startswith("pex.") for r in records)
