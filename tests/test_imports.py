"""The pack's own import graph: no import cycles, no imports of another module's private names.

Every ``import`` statement of the pack's Python files (``gpen/``, ``nodes/``, ``bench/``, ``docs/``,
``tests/`` and the root ``__init__.py``), also those inside functions, is read with ``ast`` and
resolved to the pack's modules (relative imports included; the repository root is the top
package, as ComfyUI loads it). Function-level imports count: deferring an import hides a cycle,
it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP_FOLDERS = ("gpen", "nodes", "bench", "docs", "tests")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def pack_modules() -> dict[str, Path]:
    """Module name -> file, for every Python file of the pack (the root package is '')."""
    files = [REPO / "__init__.py"] + [p for top in TOP_FOLDERS for p in sorted((REPO / top).rglob("*.py"))]
    return {_module_name(p): p for p in files if ".venv" not in p.parts and ".cache" not in p.parts}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute (pack-relative) module an ``ImportFrom`` names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import of the file that targets the pack."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.append((alias.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, is_package, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                if sub in modules:  # "from package import submodule"
                    found.append((sub, None, node.lineno))
                elif target in modules:
                    found.append((target, alias.name, node.lineno))
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = pack_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        for target, imported, line in imports_of(name, path, modules):
            if target != name:
                graph[name].add(target)
            if imported and imported.startswith("_") and not imported.startswith("__") and target != name:
                private.append(f"{path.relative_to(REPO)}:{line} imports {imported} from {target or 'the pack root'}")
    return graph, private


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_checker_finds_a_cycle_and_resolves_relative_imports():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    node = ast.parse("from ..errors import X").body[0]
    assert _resolve("gpen.faces.detect", False, node) == "gpen.errors"
    assert _resolve("gpen.faces", True, ast.parse("from .align import X").body[0]) == "gpen.faces.align"
    assert _resolve("nodes.face_restore", False, ast.parse("from ..gpen import X").body[0]) == "gpen"
    modules = pack_modules()
    assert "gpen.model.network" in modules and "nodes.face_restore" in modules and "" in modules
    # the graph sees imports made inside functions (gpen.faces.networks creates the detector lazily)
    graph, _ = _graph()
    assert "gpen.faces.detect" in graph["gpen.faces.networks"]


def test_no_import_cycles():
    graph, _ = _graph()
    assert find_cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    _, private = _graph()
    assert private == []


MAX_TOP_MODULES = 9  # gpen/'s top holds what every part uses; the parts are packages
MAX_LINES = 500


def test_gpen_top_holds_at_most_nine_modules():
    top = sorted(p.name for p in (REPO / "gpen").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, f"gpen/ top holds {len(top)} modules: {top}; group them into packages"


def test_no_module_over_500_lines():
    files = [p for top in ("gpen", "nodes") for p in sorted((REPO / top).rglob("*.py"))]
    assert len(files) > 20  # the walk found the pack
    long = {p.relative_to(REPO).as_posix(): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they hold): {long}"
