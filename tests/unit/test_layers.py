"""Imports go one way: down ``cloudtrail_es.LAYERS``, with no cycle between modules (imports made
only for type checking, or inside functions, count too), and the settings import nothing heavy."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from cloudtrail_es import LAYERS

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "cloudtrail_es"


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, src: Path, known: set[str]) -> set[str]:
    """Every module of ours that ``path`` imports, wherever the import statement stands."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {target for target in found if target in known and target != name}


def import_graph(src: Path) -> dict[str, set[str]]:
    files = {module_name(path, src): path for path in (src / PACKAGE).rglob("*.py")}
    return {name: imported_modules(path, src, set(files)) for name, path in files.items()}


def layer_of(module: str, layers: tuple[str, ...]) -> int:
    """The module's layer index; the package's own top-level modules come above every layer."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in layers:
        return layers.index(parts[1])
    if len(parts) == 2 and parts[1] in layers:  # a sub-package's __init__
        return layers.index(parts[1])
    return len(layers)


def upward_imports(graph: dict[str, set[str]], layers: tuple[str, ...]) -> list[str]:
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if layer_of(target, layers) > layer_of(source, layers))


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (each module lies on a
    cycle with every other module of its group)."""
    reach = {node: reachable(graph, node) for node in graph}
    groups = {tuple(sorted(other for other in reach[node] if node in reach[other])) for node in graph
              if node in reach[node]}
    return sorted(list(group) for group in groups)


def test_every_sub_package_is_a_layer():
    packages = {path.parent.name for path in (SRC / PACKAGE).glob("*/__init__.py")}
    assert packages == set(LAYERS)


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports(import_graph(SRC), LAYERS) == []


def test_no_import_cycle():
    assert cycles(import_graph(SRC)) == []


def test_the_checks_see_upward_imports_and_cycles_wherever_the_import_stands(tmp_path):
    """The checker itself, on a package made for it: a type-only upward import, a cycle through
    an import inside a function, and a relative import."""
    root = tmp_path / PACKAGE
    for package in ("core", "write"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "core" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cloudtrail_es.write import b\n")
    (root / "write" / "b.py").write_text("def f():\n    from . import c\n")
    (root / "write" / "c.py").write_text("from .b import f\n")
    graph = import_graph(tmp_path)
    assert upward_imports(graph, ("core", "write")) == [  # the package's __init__ runs too
        "cloudtrail_es.core.a -> cloudtrail_es.write", "cloudtrail_es.core.a -> cloudtrail_es.write.b"]
    assert cycles(graph) == [["cloudtrail_es.write.b", "cloudtrail_es.write.c"]]


def test_the_settings_import_nothing_heavy():
    """``Settings`` is read at every cold start: it must not pull in the transform, the write path
    or the HTTP and AWS libraries."""
    code = ("import sys; from cloudtrail_es.core.config import Settings; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('cloudtrail_es', 'requests', "
            "'boto3', 'botocore', 'orjson', 'isal')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded, "nothing of ours imported: the check would pass on anything"
    heavy = [m for m in loaded if not m.startswith("cloudtrail_es.core") and m != PACKAGE]
    assert heavy == []
