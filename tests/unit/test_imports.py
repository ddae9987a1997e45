"""No import cycle in ``src/conveyor``, and every module imports on its own.

(a) Each module is imported on its own, in a process where no conveyor module was loaded yet (a
child forked from a fresh interpreter), so a module that only works when something else happened
to be imported first is caught. (b) The module-level import graph is
built from the source (imports inside functions and under ``if TYPE_CHECKING:`` are ignored,
as they do not run at import time) and must have no cycle.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import conveyor

ROOT = Path(conveyor.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    _module_name(p): p
    for p in sorted(ROOT.rglob("*.py"))
    # Migration scripts are loaded by alembic, not imported as conveyor modules.
    if "migrations" not in p.parts
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: not in functions, not TYPE_CHECKING-only."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            pending.extend(node.body)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    # A package's own name is its first level; a module's is its parent.
    keep = len(base) - node.level + (1 if is_package else 0)
    return ".".join(base[:keep] + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of conveyor it imports at import time``.

    ``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``.
    The implicit import of a parent package is not an edge (every tool draws it that way).
    """
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for node in _top_level_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(name, path.name == "__init__.py", node)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                    for a in node.names
                ]
            edges.update(t for t in targets if t in MODULES and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_dag() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_graph_sees_real_edges() -> None:
    # The test is only worth something if the graph is not empty.
    graph = import_graph()
    assert "conveyor.errors" in graph["conveyor.runner.worker"]
    assert "conveyor.processors.base" in graph["conveyor.processors.registry"]


def test_no_import_cycle_in_conveyor() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


_FORK_EACH = r"""
import importlib, json, os, sys, traceback
preload, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in preload:  # third-party libraries only: they cannot hide an order bug of ours
    try:
        importlib.import_module(name)
    except Exception:
        pass
assert not [m for m in sys.modules if m == "conveyor" or m.startswith("conveyor.")]
failed, running, pending = {}, {}, list(modules)
while pending or running:
    while pending and len(running) < max(2, os.cpu_count() or 1):
        module = pending.pop()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                importlib.import_module(module)
                code = 0
            except BaseException:
                os.write(write, traceback.format_exc()[-2000:].encode())
                code = 1
            os._exit(code)
        os.close(write)
        running[pid] = (module, read)
    pid, status = os.wait()
    module, read = running.pop(pid)
    with os.fdopen(read, "rb") as fh:  # at most 2000 bytes: it never filled the pipe
        err = fh.read().decode()
    if status:
        failed[module] = err or f"status {status}"
print(json.dumps(failed))
"""


def _third_party() -> list[str]:
    names: set[str] = set()
    for path in MODULES.values():
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif node.module and not node.level:
                names.add(node.module.split(".")[0])
    return sorted(n for n in names if n != "conveyor" and n not in sys.stdlib_module_names)


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    # One forked child per module, from a parent that has loaded no conveyor module: each
    # import starts from an empty conveyor namespace, at a fork's cost instead of a whole
    # interpreter start (~60 modules x 0.4 s otherwise).
    modules = sorted(m for m in MODULES if m != "conveyor.__main__")  # __main__ runs the CLI
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_EACH, json.dumps(_third_party()), json.dumps(modules)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    failed = json.loads(proc.stdout)
    assert not failed, failed


def test_a_broken_import_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken_mod.py").write_text("import conveyor\nraise ImportError('boom')\n")
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_EACH, "[]", json.dumps(["conveyor.errors", "broken_mod"])],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ,
             "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert list(json.loads(proc.stdout)) == ["broken_mod"]


def _all_imports(module: str) -> set[str]:
    """Every conveyor module ``module`` imports, at any depth (functions included)."""
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                         for a in node.names)
    return {m for m in found if m.startswith("conveyor")}


def test_the_registry_knows_no_builtin_and_no_builtin_knows_the_registry() -> None:
    # Not even inside a function: that was an 11-module cycle hidden from the graph above.
    builtins = {"archive", "auto", "image", "media", "noop", "pdf", "probe", "table"}
    modules = {f"conveyor.processors.{name}" for name in builtins}
    for module in ("conveyor.processors.registry", "conveyor.processors.base"):
        assert not _all_imports(module) & (modules | {"conveyor.processors.builtin"}), module
    for module in modules:
        assert "conveyor.processors.registry" not in _all_imports(module), module
