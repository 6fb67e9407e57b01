"""The layers of docs/architecture.md, held against the code's imports.

Every import of every Python file of the project counts, wherever it stands: at module
level, inside a function, under `if TYPE_CHECKING:`. An import inside a function still
runs, so a circle closed there is a circle all the same, only a later one.

- the roles import nothing from labctl (nor from bench or tests): they are pyinfra
  deploys any caller can use, given the host data of roles/contract.py;
- labctl takes from the roles only that contract;
- bench takes nothing from tests (what both use lives in testbed/);
- no module imports itself back through others: the imports form no circle.

The stand-ins (tests/standins) are programs of their own, standing in for Consul,
consul-template and registrator, and are not read here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

# A folder whose files import each other as top-level modules: bench's scripts, run as
# `python bench/x.py`.
SOURCE_ROOTS = ("bench",)
SKIPPED = {".venv", ".git", ".lab", "__pycache__"}
# Programs of their own (see above).
STANDALONE = Path("tests/standins")


def module_name(path: Path, root: Path) -> str:
    """The dotted name a file is imported by, from the deepest source root holding it."""
    relative = path.relative_to(root)
    for source_root in SOURCE_ROOTS:
        if relative.is_relative_to(source_root):
            relative = relative.relative_to(source_root)
            break
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    """Every Python file of the project, by module name."""
    return {
        module_name(path, root): path
        for path in sorted(root.rglob("*.py"))
        if not SKIPPED & set(path.relative_to(root).parts)
        and not path.relative_to(root).is_relative_to(STANDALONE)
    }


def _imported_names(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool):
    """The dotted names an import statement may load (a module, or a name in one)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    yield base
    yield from (f"{base}.{alias.name}" for alias in node.names)


def imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports, anywhere in its file. Importing
    `a.b.c` also runs the packages `a` and `a.b` first: they count too."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for dotted in _imported_names(node, name, path.name == "__init__.py"):
                parts = dotted.split(".")
                for end in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:end])
                    if prefix in modules and prefix != name:
                        targets.add(prefix)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def edges(graph: dict[str, set[str]], source: str, target: str) -> Iterator[str]:
    """'a -> b' for every import from the `source` package into the `target` package."""
    for name, targets in sorted(graph.items()):
        if name == source or name.startswith(f"{source}."):
            for imported in sorted(targets):
                if imported == target or imported.startswith(f"{target}."):
                    yield f"{name} -> {imported}"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return imports(project_modules(PROJECT_ROOT))


def test_the_project_is_read_whole(graph):
    # A rule over a graph that misses the project's parts would pass for nothing.
    for module in ("labctl.cli", "roles.contract", "roles.consul", "deploy", "inventory",
                   "lb_events", "testbed.traffic", "tests.unit.test_layers"):  # fmt: skip
        assert module in graph, module
    assert "labctl.spec" in graph["labctl.cli"]


def test_the_roles_import_nothing_from_labctl_bench_or_tests(graph):
    bench = [module_name(path, PROJECT_ROOT) for path in (PROJECT_ROOT / "bench").glob("*.py")]
    others = ("labctl", "tests", "testbed", *bench)
    assert [e for other in others for e in edges(graph, "roles", other)] == []


def test_labctl_takes_only_the_contract_from_the_roles(graph):
    # Importing roles.contract runs the package roles (an __init__ that imports nothing).
    allowed = (" -> roles", " -> roles.contract")
    assert [e for e in edges(graph, "labctl", "roles") if not e.endswith(allowed)] == []


def test_labctl_takes_nothing_from_tests_testbed_or_bench(graph):
    bench = [module_name(path, PROJECT_ROOT) for path in (PROJECT_ROOT / "bench").glob("*.py")]
    others = ("tests", "testbed", *bench)
    assert [e for other in others for e in edges(graph, "labctl", other)] == []


def test_the_contract_imports_nothing_of_the_project(graph):
    assert graph["roles.contract"] == set()


def test_bench_takes_nothing_from_tests(graph):
    bench = [module_name(path, PROJECT_ROOT) for path in (PROJECT_ROOT / "bench").glob("*.py")]
    assert [e for name in sorted(bench) for e in edges(graph, name, "tests")] == []


def test_testbed_takes_nothing_from_tests_or_bench(graph):
    # What the bench and the tests share: taking from either would bring tests/ back
    # into the bench's imports.
    bench = [module_name(path, PROJECT_ROOT) for path in (PROJECT_ROOT / "bench").glob("*.py")]
    assert [e for other in ("tests", *bench) for e in edges(graph, "testbed", other)] == []


def test_no_circle_of_imports(graph):
    assert circles(graph) == []


# --- the reading itself, on a tree of its own ----------------------------------------


def write(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return imports(project_modules(root))


def test_a_circle_closed_inside_a_function_is_found(tmp_path):
    graph = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "def thing():\n    from pkg import a\n    return a\n",
        "pkg/c.py": "import pkg.a\n",
    })  # fmt: skip
    assert circles(graph) == [["pkg.a", "pkg.b"]]


def test_a_circle_under_type_checking_and_through_relative_imports_is_found(tmp_path):
    graph = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/models.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from .checks import Rule\n",
        "pkg/checks.py": "from . import models\n",
    })  # fmt: skip
    assert circles(graph) == [["pkg.checks", "pkg.models"]]


def test_an_import_between_packages_is_named(tmp_path):
    graph = write(tmp_path, {"roles/r.py": "from labctl.spec import X\n", "labctl/spec.py": ""})
    assert list(edges(graph, "roles", "labctl")) == ["roles.r -> labctl.spec"]
