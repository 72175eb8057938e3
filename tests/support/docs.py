"""Running the docs' examples: the shell blocks of a Markdown file, in order, in one bash, with
each `curl` recorded, and the replies checked against the `# →` comments that follow them.

The convention (README.md's tour and docs/api.md say it to the reader too):

- every ```sh block of the part of the file that is run is executed, in order, in one shell,
  so that a variable set in one block (`ID=$(curl ... | rid)`) serves the next ones; a line
  `make run` is the server itself, which the test starts;
- a comment `# → STATUS "field": value, "field": value: prose` after a curl (on its line, or
  on the comment lines below it) is what that curl must get: the status, then each field with
  that value somewhere in the JSON reply (at any depth: a bare array's items, a proposal's
  fields); the prose after the fields is not checked;
- a curl with no such comment must get a 2xx;
- a block fenced ```sh no-run is shown, not run (a deployment's command, for other hosts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pex.settings import DEFAULT_DATABASE_URL
from tests.support.portal import apt_install
from tests.support.server import serving

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", re.M | re.S)
CURL = re.compile(r"(?:^|(?<=[\s(;|]))curl\b")
ARROW = "→"
STATUS = re.compile(r"\s*(\d{3})\b")
PAIR = re.compile(r'\s*,?\s*"(\w+)":\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|true|false|null)')

# Records every curl of the examples (its arguments, status and output) and prints the output
# as curl would; a failed connection is an error of the example, not a reply.
PRELUDE = r'''
set -e -o pipefail
curl() {
  local n out rc=0
  n=$(( $(cat "$DOCS_CALLS/count") + 1 )); echo "$n" > "$DOCS_CALLS/count"
  printf '%s\n' "$*" > "$DOCS_CALLS/$n.args"
  out=$(command curl -sS --max-time 30 -w '\n%{http_code}' "$@") || rc=$?
  printf '%s' "${out%$'\n'*}" > "$DOCS_CALLS/$n.out"; printf '%s %s' "${out##*$'\n'}" "$rc" > "$DOCS_CALLS/$n.status"
  printf '%s\n' "${out%$'\n'*}"
  return $rc
}
echo 0 > "$DOCS_CALLS/count"
'''


@dataclass
class Expectation:
    line: str  # the curl's first line, to name it
    status: int | None = None  # None: any 2xx
    fields: dict = field(default_factory=dict)


def section(text: str, start: str | None = None, end: str | None = None) -> str:
    if start is not None:
        text = text[text.index(start):]
    if end is not None:
        text = text[:text.index(end)]
    return text


def shell_blocks(markdown: str) -> list[str]:
    """The ```sh blocks, without the `make run` lines (the test runs the server)."""
    blocks = []
    for language, info, body in FENCE.findall(markdown):
        if language == "sh" and "no-run" not in info:
            lines = [line for line in body.splitlines() if not re.match(r"\s*make run\b", line)]
            if any(line.strip() for line in lines):
                blocks.append("\n".join(lines))
    return blocks


def _expected(comment: str, into: Expectation) -> None:
    rest = comment.split(ARROW, 1)[1]
    status = STATUS.match(rest)
    if status:
        into.status = int(status.group(1))
        rest = rest[status.end():]
    while pair := PAIR.match(rest):
        into.fields[pair.group(1)] = json.loads(pair.group(2))
        rest = rest[pair.end():]


def expectations(blocks: list[str]) -> list[Expectation]:
    """One per curl in the blocks, in the order they run."""
    found: list[Expectation] = []
    for block in blocks:
        for line in block.splitlines():
            stripped = line.strip()
            code, comment = (("", stripped) if stripped.startswith("#") else
                             (re.split(r"\s{2,}#\s", line, maxsplit=1) + [""])[:2])
            found += [Expectation(line.strip()) for _ in CURL.finditer(code)]
            if ARROW in comment:
                assert found, f"an expectation before any curl: {line}"
                _expected(comment, found[-1])
    return found


def _json(output: str):
    if output.startswith("HTTP/"):  # curl -i: the headers, a blank line, the body
        output = re.split(r"\r?\n\r?\n", output, maxsplit=1)[-1]
    try:
        return json.loads(output)
    except ValueError:
        return None


def _has(document, name: str, value) -> bool:
    if isinstance(document, dict):
        if name in document and document[name] == value:
            return True
        return any(_has(v, name, value) for v in document.values())
    if isinstance(document, list):
        return any(_has(v, name, value) for v in document)
    return False


@dataclass
class Run:
    returncode: int
    stderr: str
    calls: list[tuple[str, int, int, str]]  # arguments, HTTP status, curl's exit status, output


def run_blocks(blocks: list[str], cwd: Path, env: dict, prelude: str = "", timeout: float = 300) -> Run:
    calls_dir = cwd / "calls"
    calls_dir.mkdir()
    script = cwd / "examples.sh"
    script.write_text(PRELUDE + prelude + "\n" + "\n".join(blocks) + "\n")
    result = subprocess.run(["bash", str(script)], cwd=cwd, env={**env, "DOCS_CALLS": str(calls_dir)},
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    calls = []
    for n in range(1, int((calls_dir / "count").read_text()) + 1):
        status, rc = (calls_dir / f"{n}.status").read_text().split()
        calls.append(((calls_dir / f"{n}.args").read_text().strip(), int(status), int(rc),
                      (calls_dir / f"{n}.out").read_text()))
    return Run(result.returncode, result.stderr, calls)


def mismatches(expected: list[Expectation], run: Run) -> list[str]:
    """What differs between the documented replies and the ones the examples got."""
    problems = []
    for n, (want, call) in enumerate(zip(expected, run.calls, strict=False), 1):  # counts compared below
        args, status, rc, output = call
        where = f"curl #{n} ({want.line[:90]}): got {status}"
        if rc != 0:
            problems.append(f"{where}, curl exited {rc}")
        elif want.status is None and not 200 <= status < 300:
            problems.append(f"{where}, wanted a 2xx: {output[:400]}")
        elif want.status is not None and status != want.status:
            problems.append(f"{where}, wanted {want.status}: {output[:400]}")
        else:
            document = _json(output)
            for name, value in want.fields.items():
                if not _has(document, name, value):
                    problems.append(f'{where}, no "{name}": {json.dumps(value)} in {output[:600]}')
    if len(run.calls) != len(expected):
        problems.append(f"the examples hold {len(expected)} curls, {len(run.calls)} ran")
    if run.returncode != 0:
        problems.append(f"the examples' shell exited {run.returncode}:\n{run.stderr[-3000:]}")
    return problems


def shell_env(**extra: str) -> dict:
    """The environment of a reader's shell: none of PEX's settings (the CLI's defaults, as
    beside `make run`), C dates, and a `python3` (the test's, should the machine have none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEX_") and k not in ("LD_PRELOAD", "FAKETIME")}
    path = os.pathsep.join(filter(None, [env.get("PATH"), str(Path(sys.executable).parent)]))
    return {**env, "LC_ALL": "C", "PATH": path, **extra}


# --- the server the examples talk to -------------------------------------------------------

DOCS_URL = "http://127.0.0.1:8080"  # where the docs say `make run` serves

# The reader's `sleep N` while the worker starts VMs: a bounded poll of the instances instead,
# back as soon as one runs with an IP (at most N seconds, as the docs say).
WAIT_FOR_A_RUNNING_VM = r'''
sleep() {
  local deadline=$(( SECONDS + ${1%.*} ))
  until command curl -sS -u "$AUTH" -H 'Accept: application/vnd.pex+json' "$PEX/instances" | python3 -c '
import json, sys
sys.exit(not any(i["status"] == "RUNNING" and i["ipAddress"] for i in json.load(sys.stdin)["instances"]))'; do
    (( SECONDS < deadline )) || return 0
    command sleep 0.2
  done
}
'''

# "A reservation that starts a minute or two from now": 5 seconds from now in the test, so
# that the worker starts it without the suite waiting minutes; every other date is the docs'.
SOON = r'''
date() {
  local args=() arg
  for arg in "$@"; do
    case $arg in '+2 minutes'|'+1 minute') arg='+5 seconds';; esac
    args+=("$arg")
  done
  command date "${args[@]}"
}
'''


@contextmanager
def docs_server(directory: Path):
    """`pex serve` as `make run` runs it (the embedded default: an SQLite file under var/, the
    demo pool, the embedded worker against the simulated pool), in `directory`, on a free
    loopback port; `.venv` there is the test's, so that `.venv/bin/pex` is the CLI beside it.

    Tuned only for time: the worker ticks every 0.2 s and guests report their IP after 0.2 s.
    The examples need Debian's curl, installed here when it is missing (as root)."""
    apt_install("curl", "/usr/bin/curl")
    (directory / ".venv").symlink_to(Path(sys.executable).parent.parent)
    with serving(
        DEFAULT_DATABASE_URL, directory, workers=2,
        extra_env={"PEX_XEN_URL": "", "PEX_EMBEDDED_WORKER": "auto", "PEX_WORKER_TICK_SECONDS": "0.2",
                   "PEX_SIM_GUEST_IP_DELAY_SECONDS": "0.2", "PEX_LOG_REQUESTS": "0"},
    ) as server:
        yield server


def run_document(blocks: list[str], server, prelude: str = "") -> tuple[list[Expectation], Run]:
    """The blocks run against `server` (its URL where the docs say 127.0.0.1:8080)."""
    blocks = [block.replace(DOCS_URL, server.url) for block in blocks]
    run = run_blocks(blocks, Path(server.cwd), shell_env(), prelude=prelude)
    return expectations(blocks), run
