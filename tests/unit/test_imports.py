"""The import contract: which layer may import which, and no import cycles among the project's modules.

Every module's imports are read with `ast`, those inside function bodies included: an import put off into a
function is still a dependency, and hiding one there is how the layers and the cycles went unseen before.
The rules (STYLE.md, "Imports tell the truth"):

- the core (`coldstart.*`) never imports `trainers`, `tuning` or `serve`; `coldstart.cli` is the one face on
  top that may reach up, each inside the command that needs it;
- `serve` never imports `trainers` or `tuning`;
- `tests` and `benchmarks` do not import each other (what both need lives in `coldstart.testing` or
  `trainers.testing`); a benchmark's own test may import the benchmark it tests;
- no cycle among the project's modules.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("coldstart", "trainers", "tuning", "serve", "benchmarks", "tests")

pytestmark = pytest.mark.timeout(30)  # reading about 200 files takes about a second


class Import(NamedTuple):
    importer: str
    target: str  # the project module imported, e.g. `coldstart.models.mf`
    line: int
    deferred: bool  # inside a function body

    def __str__(self) -> str:
        where = "inside a function" if self.deferred else "at top level"
        return f"{self.importer} imports {self.target} (line {self.line}, {where})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _named_modules(node: ast.AST, name: str, modules: dict[str, Path]) -> list[str]:
    """The project modules that an import statement in module `name` loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:  # relative: `.` is this module's package (or the package itself, for an __init__)
        package = name.split(".") if modules[name].name == "__init__.py" else name.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    # `from package import module` loads the submodule; `from module import name` loads the module.
    found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    return found if len(found) == len(node.names) else [base, *found]


def _owner(dotted: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that `dotted` names or lies in, or None if it is not the project's.

    A package's `__init__` counts only where it is named (`from coldstart.models import is_artifact`): Python
    also runs the parents' `__init__` for every submodule it imports, and those edges would put each package
    in a cycle with its own submodules."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


@functools.cache
def _imports() -> list[Import]:
    modules = _modules()
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))

        def visit(node: ast.AST, deferred: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for dotted in _named_modules(child, name, modules):
                        target = _owner(dotted, modules)
                        if target is not None and target != name:
                            found.append(Import(name, target, child.lineno, deferred))
                inside = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(child, inside)

        visit(tree, False)
    return found


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _broken(importers: tuple[str, ...], targets: tuple[str, ...], exempt: tuple[str, ...] = ()) -> str:
    """Each import from `importers` (less `exempt`) of `targets`, a line each; empty when there is none."""
    return "\n".join(str(i) for i in _imports()
                     if _in(i.importer, *importers) and not _in(i.importer, *exempt) and _in(i.target, *targets))


def test_the_reading_sees_imports_at_top_level_and_inside_functions():
    """A guard on the reader itself: the CLI's deferred imports of the layers above are found."""
    cli = [i for i in _imports() if i.importer == "coldstart.cli"]
    assert any(not i.deferred for i in cli) and any(i.deferred and _in(i.target, "trainers") for i in cli)
    assert len({i.importer for i in _imports()}) > 100


def test_the_core_does_not_import_the_layers_above_it():
    broken = _broken(("coldstart",), ("trainers", "tuning", "serve"), exempt=("coldstart.cli",))
    assert not broken, "the core reaches up:\n" + broken


def test_serve_does_not_import_training_or_tuning():
    broken = _broken(("serve",), ("trainers", "tuning"))
    assert not broken, "serving reaches into training:\n" + broken


def _tests_its_own_benchmark(i) -> bool:
    """A benchmark's own test (tests/unit/test_exposure_benchmark.py for benchmarks/exposure.py) imports it."""
    return i.target.split(".")[1:2] != [] and i.importer.rsplit(".", 1)[-1].startswith(f"test_{i.target.split('.')[1]}")


def test_tests_and_benchmarks_do_not_import_each_other():
    """Benchmarks never import tests; a test imports a benchmark only to test that benchmark's own code."""
    broken = "\n".join(filter(None, [
        "\n".join(str(i) for i in _imports() if _in(i.importer, "tests") and _in(i.target, "benchmarks")
                  and not _tests_its_own_benchmark(i)),
        _broken(("benchmarks",), ("tests",))]))
    assert not broken, "what tests and benchmarks share belongs in coldstart.testing or trainers.testing:\n" + broken


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle in the graph, as the path of modules that closes it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in state and (cycle := walk(start)):
            return cycle
    return None


def test_no_import_cycles_among_project_modules():
    """Imports inside functions count: deferring one half of a cycle hides it, it does not break it."""
    edges: dict[str, set[str]] = {}
    for i in _imports():
        edges.setdefault(i.importer, set()).add(i.target)
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(
        str(i) for a, b in zip(cycle, cycle[1:]) for i in _imports() if (i.importer, i.target) == (a, b))
