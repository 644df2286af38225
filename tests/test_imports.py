"""The package's import graph: no cycle, no import that runs up the layers, no private name taken from another module.

The cycle test counts the imports a module runs when it is imported (module level, including ``from . import x``);
the layer and private-name tests count every import, the deferred ones inside functions too: a deferred import
runs later, but it is a dependency all the same. The layers, lowest first, are :data:`LAYERS`; a module may import
its own part and the parts below it, and :data:`UPWARD` lists the one deferred import allowed to run up, with why.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import rcedetect

ROOT = Path(rcedetect.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, modules: set[str]) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.parse(path.read_text()).body:  # top-level statements only
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add(full if full in modules else base)
    return {m for m in out if m in modules and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def import_graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): module_imports(p, modules) for p in files}


def test_no_import_cycle():
    graph = import_graph()
    assert "rcedetect.detectors.threshold" in graph["rcedetect.detectors"]  # the graph sees package imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


#: the parts of the package, lowest first: each imports only its own part and the parts below it
LAYERS = ("core", "stats", "data", "models", "detectors", "attacks", "evaluation", "training", "reproduce", "report",
          "serve", "commands", "cli", "")  # "": the package's own __init__, the public face
#: (importer, imported) -> why it may run up the layers (deferred, inside the functions that need it)
UPWARD = {
    ("rcedetect.detectors.combiner", "rcedetect.attacks"):
        "the combined detectors (LID, Mahalanobis, KD+BU) fit their logistic regression on adversarial examples of "
        "an attack by name that needs no detector; the attacks see detectors only through View and a term",
}


def every_import(path: Path, modules: set[str]):
    """(module, name or None, deferred) for every import of ``path`` from the package, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "rcedetect":
                    yield a.name, None, id(node) not in top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] != "rcedetect":
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                yield (full, None, id(node) not in top) if full in modules else (base, a.name, id(node) not in top)


def all_imports() -> list[tuple[str, str, str | None]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return [(module_name(p), m, n) for p in files for m, n, _ in every_import(p, modules)]


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_no_import_cycle_counting_deferred_imports():
    graph: dict[str, set[str]] = {}
    for a, b, _ in all_imports():
        graph.setdefault(a, set())
        graph.setdefault(b, set())
        if a != b:
            graph[a].add(b)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_every_part_has_a_layer():
    parts = {part(module_name(p)) for p in ROOT.rglob("*.py")}
    assert parts <= set(LAYERS), f"place {sorted(parts - set(LAYERS))} in LAYERS"


def test_no_import_runs_up_the_layers():
    up = sorted({(a, b) for a, b, _ in all_imports() if LAYERS.index(part(a)) < LAYERS.index(part(b))})
    assert set(up) <= set(UPWARD), [f"{a} -> {b}" for a, b in up if (a, b) not in UPWARD]
    assert set(UPWARD) <= set(up), "an allowed exception no longer happens: remove it from UPWARD"


def test_no_private_name_is_imported_from_another_module():
    taken = sorted({(a, b, n) for a, b, n in all_imports() if n and n.startswith("_") and not n.startswith("__")
                    and a != b})
    assert not taken, [f"{a} takes {n} from {b}" for a, b, n in taken]


def test_the_package_imports_its_modules_where_they_are():
    """Inside the package every import names a module that exists (the earlier paths are for users only)."""
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in files}
    missing = sorted({(a, b) for a, b, _ in all_imports() if b not in modules})
    assert not missing, [f"{a} imports {b}" for a, b in missing]


def test_the_earlier_module_paths_are_gone_and_the_public_modules_stay_attributes():
    """The pre-parts paths (``rcedetect.metrics``, ...) no longer import (see the changelog); the public modules
    named in the package docstring stay reachable as attributes, as the modules where they live."""
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rcedetect.metrics")
    assert rcedetect.checkpoint is importlib.import_module("rcedetect.models.checkpoint")
    assert rcedetect.config is importlib.import_module("rcedetect.training.config")
    with pytest.raises(AttributeError):
        rcedetect.metrics  # noqa: B018
