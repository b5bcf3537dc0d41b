"""The package's import structure, read from the source with `ast` (nothing is imported).

- No import cycle among asdx modules at module level: a circle makes the import order matter and forces
  imports into function bodies (imports inside functions, and under `if TYPE_CHECKING:`, do not count).
- No module imports another module's private name (`from asdx.x import _name`): a shared part gets a public
  name in one home. Private modules (`asdx._atomic`) are package-internal and may be imported.

`python tests/test_architecture.py` prints what the checks find.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "python"
PACKAGE = "asdx"
COMPILED = ("asdx._C",)  # built by CMake (CMakeLists.txt): a module even where the source tree has no build
# Private imports tolerated while a refactoring removes them: (importing module, imported module, name); an
# entry that is no longer found fails the test, so that this list only shrinks. Empty since issue 21's scoring
# dispatch helper (asdx.kernels.dispatch) and the public gamma entry (asdx.scoring.gamma.fit_sets, check_loc).
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


def package_modules(source: Path = SOURCE) -> dict[str, Path | None]:
    """{dotted name: file} of every module of the package (a package is named by its __init__.py); compiled
    modules map to None."""
    found: dict[str, Path | None] = {name: None for name in COMPILED if (source / PACKAGE).is_dir()}
    for path in sorted((source / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


@dataclass(frozen=True)
class Import:
    source: str          # the importing module
    target: str          # the imported asdx module (a submodule when the name is one, else the module named)
    name: str | None     # the name taken by `from target import name`; None for `import target`
    line: int
    module_level: bool   # runs when the source module is imported


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body, module_level: bool):
    """(statement, runs at import) for every statement, descending into blocks; function bodies run later."""
    for node in body:
        yield node, module_level
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _statements(node.body, False)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, False)
            yield from _statements(node.orelse, module_level)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                yield from _statements(getattr(node, field, None) or [], module_level)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The asdx imports of one module (absolute and relative)."""
    is_package = path.name == "__init__.py"
    found = []
    for node, module_level in _statements(ast.parse(path.read_text(), str(path)).body, True):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    target = alias.name
                    while target not in modules:   # `import asdx.x.y` where y is not a module
                        target = target.rsplit(".", 1)[0]
                    found.append(Import(name, target, None, node.lineno, module_level))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this module
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    found.append(Import(name, submodule, None, node.lineno, module_level))
                else:
                    found.append(Import(name, base, alias.name, node.lineno, module_level))
    return found


def all_imports(source: Path = SOURCE) -> list[Import]:
    modules = package_modules(source)
    return [item for name, path in modules.items() if path is not None
            for item in imports_of(name, path, modules)]


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module in the graph of module-level imports."""
    graph: dict[str, set[str]] = {}
    for item in imports:
        if item.module_level and item.source != item.target:
            graph.setdefault(item.source, set()).add(item.target)
            graph.setdefault(item.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph has ~70 nodes, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def private_imports(imports: list[Import]) -> list[Import]:
    """`from asdx.x import _name` in another module than asdx.x. Dunder names (__version__) are public, and a
    private name that asdx.x binds to a module (asdx._native's `_C`, the compiled module it imports with a
    better error) is a module, which may be imported."""
    modules_bound = {(item.source, item.target.rsplit(".", 1)[-1]) for item in imports if item.name is None}
    return [item for item in imports if item.name is not None and item.name.startswith("_")
            and not (item.name.startswith("__") and item.name.endswith("__")) and item.source != item.target
            and (item.target, item.name) not in modules_bound]


def _describe(item: Import) -> str:
    return f"{item.source} (line {item.line}): from {item.target} import {item.name}"


# ----------------------------------------------------------------------------- the checks

def test_no_import_cycle_at_module_level():
    cycles = import_cycles(all_imports())
    assert not cycles, "import cycles among asdx modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_a_private_name_of_another():
    found = private_imports(all_imports())
    new = [item for item in found if (item.source, item.target, item.name) not in KNOWN_PRIVATE_IMPORTS]
    assert not new, "private names imported across modules:\n" + "\n".join(map(_describe, new))
    gone = KNOWN_PRIVATE_IMPORTS - {(item.source, item.target, item.name) for item in found}
    assert not gone, f"fixed, so remove them from KNOWN_PRIVATE_IMPORTS: {sorted(gone)}"


def imports_of_benchmarks(tests: Path) -> list[str]:
    """'file:line' of every import of the benchmarks/ folder in tests/*.py: the suite tests the package, and a
    benchmark is tested by running it (a test that imports one inverts the layering)."""
    found = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(name == "benchmarks" or name.startswith("benchmarks.") for name in names):
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_test_imports_the_benchmarks(tmp_path):
    assert not imports_of_benchmarks(Path(__file__).resolve().parent)
    (tmp_path / "test_a.py").write_text("def f():\n    from benchmarks.calibration_ae import study\n")
    (tmp_path / "test_b.py").write_text("import os, benchmarks\nimport benchmarks_not\n")
    assert imports_of_benchmarks(tmp_path) == ["test_a.py:2", "test_b.py:1"]

def test_the_checks_see_a_cycle_and_a_private_import(tmp_path):
    """The checks themselves: a planted circle (also through a relative import and a package __init__) and a
    planted private import are found; an import inside a function or under TYPE_CHECKING is no circle."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    files = {"__init__.py": "", "a.py": "from asdx import b\n", "b.py": "import asdx.sub.c\n",
             "sub/__init__.py": "from .c import VALUE\n", "sub/c.py": "from ..a import _hidden\nVALUE = 1\n",
             "d.py": "def f():\n    import asdx.e\n", "e.py": "from typing import TYPE_CHECKING\n"
             "if TYPE_CHECKING:\n    from asdx.d import f\nimport asdx.d\n"}
    for name, text in files.items():
        (package / name).write_text(text)
    imports = all_imports(tmp_path)
    assert import_cycles(imports) == [["asdx.a", "asdx.b", "asdx.sub.c"]]
    assert [(i.source, i.target, i.name) for i in private_imports(imports)] == [("asdx.sub.c", "asdx.a", "_hidden")]


if __name__ == "__main__":  # pragma: no cover - the report for a person
    every = all_imports()
    print(f"{len(package_modules())} modules, {len(every)} asdx imports "
          f"({sum(i.module_level for i in every)} at module level)")
    cycles = import_cycles(every)
    print(f"import cycles at module level: {len(cycles)}")
    for cycle in cycles:
        print("  " + " <-> ".join(cycle))
    private = private_imports(every)
    print(f"private names imported across modules: {len(private)}")
    for item in private:
        print("  " + _describe(item))
    sys.exit(1 if cycles or private else 0)
