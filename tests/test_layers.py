"""The layers of design.md section 1, checked on the source: no import circle, no layer breach.

Every module of ``arkor_trio`` is found with ``pkgutil.walk_packages`` and imported (so each
one imports on its own), then its source is read with ``ast``: every ``import`` counts, those
under ``if TYPE_CHECKING:`` and inside functions included, since a circle of type-only imports
still ties the modules together. Only explicit imports are edges (importing ``a.b.c`` also runs
``a/__init__`` and ``a/b/__init__``, which are not edges: the root package is the public facade
above every layer).

The rules:

* no circle in the import graph of the package;
* ``arkor_trio.sse`` (the pure decoder) imports nothing of the package but ``_errors``;
* ``arkor_trio.stream`` (the channel) imports nothing outside ``stream``, ``sse``, ``_errors``
  and ``_groups``: no Arkor names;
* the local backend (``arkor_trio.server``) imports no module of the trainer layer, directly or
  through other modules;
* nothing outside ``arkor_trio.testing`` and ``arkor_trio.cli`` imports ``arkor_trio.testing``,
  and ``import arkor_trio`` does not load it;
* no module imports a private name (``_x``) from a module of another package or sub-package:
  a layer widens its public surface instead.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

import arkor_trio

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

ROOT = "arkor_trio"
#: The trainer layer (design.md section 1), and the layers above it.
TRAINER_LAYER = (
    "arkor_trio.trainer",
    "arkor_trio.notify",
    "arkor_trio.cli",
)
STREAM_MAY_IMPORT = (
    "arkor_trio.stream",
    "arkor_trio.sse",
    "arkor_trio._errors",
    "arkor_trio._groups",
    "arkor_trio._inflate",
)


@attrs.frozen
class Import:
    """One imported module (and, for ``from M import name``, the name) at a source line."""

    importer: str
    target: str
    name: str | None
    line: int

    def __str__(self) -> str:
        what = self.target if self.name is None else f"{self.name} from {self.target}"
        return f"{self.importer}:{self.line} imports {what}"


@cache
def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: name -> (source file, is a package)."""
    found = {ROOT: (Path(arkor_trio.__file__), True)}
    for info in pkgutil.walk_packages(arkor_trio.__path__, f"{ROOT}."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None
        assert spec.origin is not None
        found[info.name] = (Path(spec.origin), info.ispkg)
    return found


def _base(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        assert module is not None
        return module
    package = importer if is_package else importer.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


def parse_imports(
    name: str, source: str, is_package: bool, known: Collection[str]
) -> tuple[Import, ...]:
    """Every import of the package's own modules in ``source`` (module ``name``), wherever it
    stands; ``known`` are the module names (``from package import module`` targets the module).
    """
    tree = ast.parse(source)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(
                Import(name, alias.name, None, node.lineno)
                for alias in node.names
                if alias.name.split(".")[0] == ROOT
            )
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, is_package, node.module, node.level)
            if base.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:  # `from package import module`
                    found.append(Import(name, submodule, alias.name, node.lineno))
                else:
                    found.append(Import(name, base, alias.name, node.lineno))
    return tuple(found)


@cache
def imports_of(name: str) -> tuple[Import, ...]:
    """The imports of the package's own modules in module ``name``."""
    path, is_package = modules()[name]
    return parse_imports(name, path.read_text(encoding="utf-8"), is_package, modules())


def private_imports(found: Iterable[Import], package_of: Callable[[str], str]) -> list[str]:
    """The imports of a private name (``_x``) from a module of another package."""
    return [
        str(i)
        for i in found
        if i.name is not None
        and i.name.startswith("_")
        and not i.name.startswith("__")
        and package_of(i.target) != package_of(i.importer)
    ]


def graph() -> dict[str, set[str]]:
    return {name: {i.target for i in imports_of(name)} for name in modules()}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(f"{prefix}.")


def package_of(name: str) -> str:
    """The package a module belongs to (a package belongs to itself)."""
    return name if modules()[name][1] else name.rpartition(".")[0]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def reachable(start: str, edges: dict[str, set[str]]) -> dict[str, str]:
    """Every module reachable from ``start``, with the module that first imports it."""
    via: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt not in via and nxt != start:
                via[nxt] = node
                todo.append(nxt)
    return via


# --- the checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports(name):
    if name.endswith(".__main__"):
        return  # running it is the CLI's own test; its imports are checked below
    importlib.import_module(name)


SAMPLE = """
from __future__ import annotations
import json
import arkor_trio.sse
from typing import TYPE_CHECKING
from .. import _errors
from .._client import _foo, Bar
from . import _open
if TYPE_CHECKING:
    from ._cursor import CursorStore

def later():
    from ..server import _store
"""


def test_the_parser_finds_every_kind_of_import():
    known = {"arkor_trio._errors", "arkor_trio.stream._open", "arkor_trio.server._store"}
    found = parse_imports("arkor_trio.stream._x", SAMPLE, False, known)
    assert [(i.target, i.name, i.line) for i in found] == [
        ("arkor_trio.sse", None, 4),
        ("arkor_trio._errors", "_errors", 6),
        ("arkor_trio._client", "_foo", 7),
        ("arkor_trio._client", "Bar", 7),
        ("arkor_trio.stream._open", "_open", 8),
        ("arkor_trio.stream._cursor", "CursorStore", 10),
        ("arkor_trio.server._store", "_store", 13),
    ]
    packages = {"arkor_trio._client": "arkor_trio", "arkor_trio.stream._x": "arkor_trio.stream"}
    # A private module imported as a name from within the package is fine; from another, not.
    assert private_imports(found, lambda m: packages.get(m, m.rpartition(".")[0])) == [
        "arkor_trio.stream._x:6 imports _errors from arkor_trio._errors",
        "arkor_trio.stream._x:7 imports _foo from arkor_trio._client",
        "arkor_trio.stream._x:13 imports _store from arkor_trio.server._store",
    ]


def test_circles_are_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert circles(edges) == [["a", "b", "c"], ["e"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_every_kind_of_import():
    """The parser finds relative, type-only and function-level imports (a regression guard)."""
    targets = {i.target for i in imports_of("arkor_trio.stream._open")}
    assert {"arkor_trio.stream._channel", "arkor_trio.sse", "arkor_trio.stream._cursor"} <= targets
    lines = {i.line for i in imports_of("arkor_trio.stream._open") if i.name == "SSEFrame"}
    assert lines, "the TYPE_CHECKING import of SSEFrame was not seen"
    assert len(modules()) > 40


def test_no_import_circle():
    found = circles(graph())
    assert found == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_decoder_imports_only_errors():
    breaches = [str(i) for i in imports_of("arkor_trio.sse") if i.target != "arkor_trio._errors"]
    assert breaches == []


def test_the_channel_imports_no_arkor_names():
    breaches = [
        str(i)
        for name in modules()
        if within(name, "arkor_trio.stream")
        for i in imports_of(name)
        if not any(within(i.target, allowed) for allowed in STREAM_MAY_IMPORT)
    ]
    assert breaches == []


def test_the_server_does_not_import_the_trainer_layer():
    edges = graph()
    breaches = []
    for name in modules():
        if not within(name, "arkor_trio.server"):
            continue
        for target, via in reachable(name, edges).items():
            if any(within(target, layer) for layer in TRAINER_LAYER):
                breaches.append(f"{name} reaches {target} (imported by {via})")
    assert breaches == []


def test_only_testing_and_the_cli_import_testing():
    breaches = [
        str(i)
        for name in modules()
        if not within(name, "arkor_trio.testing") and not within(name, "arkor_trio.cli")
        for i in imports_of(name)
        if within(i.target, "arkor_trio.testing")
    ]
    assert breaches == []


def test_importing_the_package_does_not_load_testing_or_the_server():
    code = (
        "import sys, arkor_trio, arkor_trio.stream\n"
        "print(sorted(m for m in sys.modules if m.startswith(('arkor_trio.testing', "
        "'arkor_trio.server', 'arkor_trio.cli'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_no_private_name_is_imported_across_packages():
    found = [i for name in modules() for i in imports_of(name)]
    assert private_imports(found, package_of) == []


def test_the_layers_above_use_the_channel_through_its_package():
    # arkor_trio.stream exports what the job stream, the feed and the trainer use; nothing
    # outside it imports one of its private modules.
    breaches = [
        str(i)
        for name in modules()
        if not within(name, "arkor_trio.stream")
        for i in imports_of(name)
        if i.target.startswith("arkor_trio.stream._")
    ]
    assert breaches == []
