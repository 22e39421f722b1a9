"""The library's shape, read from its source with ``ast`` (nothing is imported):

- no import circle between ``gradcamo`` modules. Every import counts: at the top, inside
  ``if TYPE_CHECKING:`` and inside functions, since a circle that only type checking or a
  late import closes still ties the modules together;
- a module over ``LONG_MODULE_LINES`` lines says why it stays one module. The convention:
  its docstring holds a sentence that begins ``One module because`` and names what keeps
  the module together (the long parts are one concern, or splitting would scatter what
  they share).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

LIB = REPO / "workflow" / "lib"
PACKAGE = "gradcamo"
LONG_MODULE_LINES = 400
WHY_ONE_MODULE = "One module because"


def library_modules() -> dict[str, Path]:
    """Dotted name → file of every module of the package, subpackages included."""
    modules = {}
    for path in sorted((LIB / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` (at ``path``) imports, wherever in the file.

    ``from a import b`` counts as importing ``a.b`` where that is a module, else ``a``;
    relative imports are resolved against the importing module's package.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # ``import gradcamo.a.b`` names the module itself; keep the longest known prefix
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = library_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_sees_circles_and_the_parser_sees_every_kind_of_import(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "import gradcamo.a\n"
        "if TYPE_CHECKING:\n"
        "    from gradcamo.b import X\n"
        "def f():\n"
        "    from gradcamo import c\n"
        "    from . import d\n"
    )
    known = {"gradcamo", "gradcamo.a", "gradcamo.b", "gradcamo.c", "gradcamo.d", "gradcamo.m"}
    assert imported_modules("gradcamo.m", module, known) == {
        "gradcamo.a",
        "gradcamo.b",
        "gradcamo.c",
        "gradcamo.d",
    }


def test_no_import_circle_between_library_modules():
    graph = import_graph()
    # the parser reads the library: resume imports the settings, training the resume state
    assert "gradcamo.train_settings" in graph["gradcamo.resume"]
    assert "gradcamo.resume" in graph["gradcamo.training"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_long_module_says_why_it_stays_one_module():
    unexplained = []
    for name, path in library_modules().items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > LONG_MODULE_LINES and WHY_ONE_MODULE not in " ".join(
            (ast.get_docstring(ast.parse(text)) or "").split()
        ):
            unexplained.append(f"{name} ({lines} lines)")
    assert not unexplained, (
        f"over {LONG_MODULE_LINES} lines without a docstring sentence beginning {WHY_ONE_MODULE!r} "
        f"(split the module, or say why it is one): {', '.join(unexplained)}"
    )
