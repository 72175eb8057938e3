"""The tests' own house rules: shared helpers live in tests/support/, once; a conftest.py only
registers fixtures; no test reaches into another package's conftest."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"


def modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(TESTS.rglob("*.py"))}


def is_fixture(node: ast.AST) -> bool:
    def name(decorator: ast.AST) -> str:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return ast.unparse(target)

    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
        name(d) in ("pytest.fixture", "fixture") for d in node.decorator_list
    )


def test_no_test_module_imports_from_a_conftest():
    imports = []
    for path, module in modules().items():
        for node in ast.walk(module):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            imports += [f"{path.relative_to(TESTS)}:{node.lineno} {name}" for name in names
                        if name == "conftest" or name.endswith(".conftest")]
    assert imports == []


def test_a_conftest_only_registers_fixtures_and_hooks():
    helpers = []
    for path, module in modules().items():
        if path.name != "conftest.py":
            continue
        for node in module.body:
            if isinstance(node, ast.ClassDef):
                helpers.append(f"{path.relative_to(TESTS)}: class {node.name}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not (
                is_fixture(node) or node.name.startswith("pytest_")
            ):
                helpers.append(f"{path.relative_to(TESTS)}: def {node.name}")
    assert helpers == []


def test_the_shared_helpers_are_defined_once_in_tests_support():
    definitions: Counter = Counter()
    launches = []
    for path, module in modules().items():
        for node in ast.walk(module):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_fixture(node):
                definitions[node.name, path.is_relative_to(SUPPORT)] += 1
            if (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("run_simulator")
                    and path.name == "conftest.py"):
                launches.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert definitions["wait_for", False] == 0  # the reliability tests' name for eventually
    for helper in ("eventually", "build_world", "build_memory_world", "closing_worlds", "make_api", "make_portal", "start_server", "stop_server",
                   "make_dispatcher", "simulator_fixture"):
        assert (definitions[helper, True], definitions[helper, False]) == (1, 0), helper
    assert launches == [], "a conftest launches its own simulator instead of tests.support.xen's fixture"
