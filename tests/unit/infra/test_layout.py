"""The architecture, checked: no import cycles between afl's modules, a server that imports neither
torch nor Lightning, messages without torch, and every package installed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib
from helpers import ROOT
from helpers.processes import run_fresh

PACKAGES = {"afl": ROOT / "afl", "afl_callbacks": ROOT / "callbacks"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``module`` imports when it runs (at import time or in a function;
    not under ``if TYPE_CHECKING``), each import naming its deepest known module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imports(m, p, known) for m, p in known.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list of modules, first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_imports_inside_functions_and_relative_ones() -> None:
    graph = _graph()
    assert "afl.experiments.run" in graph["afl.experiments.parallel"]  # imported inside a function
    assert "afl_callbacks._checks" in graph["afl_callbacks.delay_lr"]  # from ._checks import ...
    assert "afl.messages" not in graph["afl.sim.executors"]  # only under TYPE_CHECKING


def test_no_import_cycles() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_server_imports_no_client_simulation_or_experiment_code() -> None:
    graph = _graph()
    server = [m for m in graph if m.startswith("afl.server")]
    assert server
    for module in server:
        outside = {n for n in graph[module] if not n.startswith("afl.server")}
        assert outside <= {"afl.registry", "afl.errors", "afl.messages"}, (module, outside)


def test_the_server_and_the_messages_import_neither_torch_nor_lightning() -> None:
    code = (
        "import sys\n"
        "import afl.messages, afl.server.aggregators, afl.server.lr_schedules, afl.server.staleness\n"
        "print(sorted(m for m in ('torch', 'lightning', 'afl_callbacks') if m in sys.modules))\n"
    )
    assert run_fresh(code).strip() == "[]"


def test_every_package_is_installed() -> None:
    """pyproject.toml lists the packages (the folder callbacks/ is installed as afl_callbacks)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert set(config["packages"]) == packages
    assert config["package-dir"] == {"afl_callbacks": "callbacks"}


@pytest.mark.parametrize("name", ["afl_callbacks", "callbacks"])
def test_the_callbacks_import_under_their_name_and_the_old_one_warns(name: str) -> None:
    """``import afl_callbacks`` works anywhere; ``import callbacks`` still works from the checkout for one
    release, with a FutureWarning (shown by default) that names the new import."""
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    import {name} as package\n"
        "print(package.DelayAwareLR.__name__, [f'{w.category.__name__}: {w.message}' for w in caught])\n"
    )
    out = run_fresh(code, cwd=ROOT).strip()
    if name == "afl_callbacks":
        assert out == "DelayAwareLR []"
    else:
        assert out.startswith("DelayAwareLR [") and "FutureWarning: `import callbacks` is deprecated" in out
        assert "use `import afl_callbacks`" in out


def test_pointers_to_documentation_name_files_in_the_repository() -> None:
    """Code and tests cite docs/*.md pages (the design notes themselves live outside the repository, so
    "DESIGN §N" is never a pointer)."""
    import re

    cited = set()
    for folder in ("afl", "callbacks", "tests", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert "DESIGN §" not in text.replace('"DESIGN §', ""), path
            cited.update(re.findall(r"docs/[\w-]+\.md", text))
    assert cited, "the code points at no documentation at all"
    missing = sorted(page for page in cited if not (ROOT / page).is_file())
    assert not missing, missing


def _private_imports(path: Path) -> list[str]:
    """``from afl… import _name`` (or afl_callbacks…) in one module: a private name crossing modules."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
            found += [
                f"{path.name}:{node.lineno}: {node.module}.{a.name}" for a in node.names if a.name[0] == "_"
            ]
    return found


def test_no_private_name_is_imported_across_modules(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("from afl.experiments.compare import _secret\nfrom os import _exit\n")
    assert _private_imports(planted) == ["planted.py:1: afl.experiments.compare._secret"]
    found = [line for path in _modules().values() for line in _private_imports(path)]
    assert not found, "private names imported across modules (make them public, or move them):\n" + "\n".join(
        found
    )


#: Functions of afl/ allowed more than 60 lines (``path:name`` -> why): none today.
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}


def _long_functions(path: Path, limit: int = 60) -> list[str]:
    """The functions (methods and nested functions too) of one module longer than ``limit`` lines, counted
    from ``def`` to their last line, docstring included: ``name (N lines)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append(f"{node.name} ({length} lines)")
    return found


def test_no_function_in_afl_is_longer_than_60_lines(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    planted.write_text(f"def fits():\n{body}\n\ndef too_long():\n{body}    return x0\n")
    assert _long_functions(planted) == ["too_long (61 lines)"]
    found = [
        f"{path.relative_to(ROOT)}:{entry}"
        for path in sorted((ROOT / "afl").rglob("*.py"))
        for entry in _long_functions(path)
        if f"{path.relative_to(ROOT)}:{entry.split()[0]}" not in LONG_FUNCTIONS_ALLOWED
    ]
    assert not found, "functions over 60 lines (split them into named helpers):\n" + "\n".join(found)
