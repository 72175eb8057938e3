"""The house rules of pex/ (docs/architecture.md), checked on the source: the layers and the
forbidden imports of .importlinter, no import cycle, and no import of a PEX module inside a
function except in the composition root and the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PEX = ROOT / "pex"
# Where building the system on demand is the job: the composition root and the commands.
MAY_IMPORT_LATE = ("pex/bootstrap.py", "pex/cli/")


def test_the_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(ROOT / ".importlinter")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components of more than one module: each is an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_import_graph_of_pex_has_no_cycle():
    graph = grimp.build_graph("pex", cache_dir=None)
    # A package's __init__ importing its own modules is how a package shows its face, not a cycle.
    edges = {
        module: {
            imported for imported in graph.find_modules_directly_imported_by(module)
            if not (module.startswith(imported + ".") or imported.startswith(module + "."))
        }
        for module in graph.modules
    }
    assert strongly_connected(edges) == []


def late_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and inner.level == 0 and (inner.module or "").split(".")[0] == "pex":
                found.append(f"{path.relative_to(ROOT)}:{inner.lineno} from {inner.module}")
            elif isinstance(inner, ast.Import):
                found += [f"{path.relative_to(ROOT)}:{inner.lineno} import {a.name}" for a in inner.names
                          if a.name.split(".")[0] == "pex"]
    return found


def test_no_pex_module_is_imported_inside_a_function_outside_bootstrap_and_the_cli():
    late = [
        found
        for path in sorted(PEX.rglob("*.py"))
        if not str(path.relative_to(ROOT)).startswith(MAY_IMPORT_LATE)
        for found in late_imports(path)
    ]
    assert late == []


def test_nothing_but_bootstrap_builds_the_application():
    # The tests and the benchmarks too: they build through bootstrap (or tests/support, which calls it).
    sources = [path for tree in ("pex", "tests", "bench") for path in sorted((ROOT / tree).rglob("*.py"))]
    builders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sources
        if str(path.relative_to(ROOT)) != "pex/bootstrap.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "PexApplication"
    ]
    assert builders == []


def test_importing_the_cli_imports_no_part_of_the_system():
    # Every command builds what it needs through bootstrap, when it runs: `pex --help` builds nothing.
    probe = "import sys, pex.cli; print(sorted(m for m in sys.modules if m in ('pex.bootstrap', 'prometheus_client')))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
