"""`make bench`: run the benchmarks and write docs/performance.md.

    python -m bench                 every benchmark
    python -m bench placement http  only those named (the other sections of the page are kept)
    python -m bench --quick         smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, machine

BENCHMARKS = ("placement", "pools", "http", "audit", "worker", "scheduling", "policies", "coldstart", "starts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    started = time.perf_counter()
    sections = []
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as missing:
            if missing.name != f"bench.{name}":
                raise
            print(f"[bench] {name}: not written yet, skipped", file=sys.stderr)
            continue
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        t = time.perf_counter()
        section = module.run(quick=args.quick)
        print(section.markdown())
        print(f"[bench] {name} took {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        sections.append(section)
    header = (
        "# Performance\n\n"
        "Every figure is measured against a baseline run in the same process and the same run, so the\n"
        "ratio is what survives a noisy, shared machine; absolute times vary from run to run.\n\n"
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- Machine: {machine()}\n"
        f"- Command: `make bench` (this page is written by `python -m bench`; total {time.perf_counter() - started:.0f} s)\n\n"
    )
    body = [s.markdown() for s in sections]
    page = Path(args.output)
    if args.names and page.exists():
        # The header says when the whole page was measured: a partial run keeps it.
        header = page.read_text().split("\n## ", 1)[0].rstrip("\n") + "\n\n"
        body = merged(page, sections)
    with open(args.output, "w") as out:
        out.write(header + "\n".join(body))
    print(f"[bench] wrote {args.output}", file=sys.stderr)
    return 0


def merged(page: Path, sections: list) -> list[str]:
    """The page's sections with those just run replaced (by title) and new ones appended: a
    run of some benchmarks keeps the figures of the others."""
    fresh = {s.title: s.markdown() for s in sections}
    kept = []
    if page.exists():
        for chunk in page.read_text().split("\n## ")[1:]:
            title = chunk.split("\n", 1)[0].strip()
            kept.append(fresh.pop(title, "## " + chunk.rstrip("\n") + "\n"))
    return kept + list(fresh.values())


if __name__ == "__main__":
    sys.exit(main())
