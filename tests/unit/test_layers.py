"""The layers of ``daemon/`` as its package docstrings state them: imports point down, never up, never round.

Reads every module's imports with ``ast`` (nothing is imported), including imports inside functions; only
``if TYPE_CHECKING:`` blocks are skipped, since they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.paths import REPO

# Each layer and the layers it may import; everything else is an import pointing the wrong way.
FOUNDATION = {"foundation"}
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),  # daemon.config, daemon.vocabulary
    "audio": FOUNDATION,
    "frontend": FOUNDATION,
    "speech": FOUNDATION | {"audio"},
    "model": FOUNDATION | {"audio", "frontend", "speech"},
    "core": FOUNDATION | {"audio", "speech"},
    "protocols": FOUNDATION | {"audio", "speech", "core"},
    "app": FOUNDATION | {"audio", "frontend", "speech", "model", "core", "protocols"},
    "commands": FOUNDATION | {"audio", "frontend", "speech", "model", "core", "protocols", "app", "quantize"},
    "entry": {"commands"},  # daemon/__init__.py, daemon/__main__.py
}
NEVER_IN_DAEMON = ("torch", "torchaudio", "transformers")  # the box has no torch; conversion happens offline


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted (``from a import b`` gives ``a.b`` when a is a package of ours)
    line: int

    def __str__(self) -> str:
        return f"{self.module.replace('.', '/')}.py:{self.line} imports {self.target}"


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "daemon":
        return parts[0]
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "entry"
    if parts[1] in ("config", "vocabulary"):
        return "foundation"
    return parts[1]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_in(module: str, source: str, known: set[str], is_package: bool = False) -> Iterator[Import]:
    """Imports that run, with ``from pkg import name`` resolved to ``pkg.name`` where that is one of ours."""
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    yield from visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name, child.lineno)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([child.module] if child.module else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    yield Import(module, full if full in known else base, child.lineno)
            yield from visit(child)

    yield from visit(ast.parse(source))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_imports() -> list[Import]:
    files = sorted((REPO / "daemon").rglob("*.py"))
    known = {module_name(f) for f in [*files, *(REPO / "quantize").rglob("*.py")]}
    return [
        imp for f in files for imp in imports_in(module_name(f), f.read_text(), known, f.name == "__init__.py")
    ]


def upward(imports: list[Import]) -> list[Import]:
    wrong = []
    for imp in imports:
        src, dst = layer(imp.module), layer(imp.target)
        ours = imp.target.split(".")[0] in ("daemon", "quantize")
        if ours and src != dst and dst not in ALLOWED[src]:
            wrong.append(imp)
    return wrong


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), over imports between our modules."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target.startswith("daemon.") and imp.target != imp.module:
            graph.setdefault(imp.module, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in list(graph):
        if node not in index:
            connect(node)
    return found


def _package_rules_documented(package: Path) -> bool:
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    return "May import" in doc or package.name == "daemon"


def test_every_layer_is_a_package_that_says_what_it_may_import() -> None:
    packages = [p for p in (REPO / "daemon").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert {p.name for p in packages} == set(ALLOWED) - {"foundation", "entry"}
    undocumented = [p.name for p in packages if not _package_rules_documented(p)]
    assert not undocumented, f"__init__.py without a 'May import' line: {undocumented}"
    loose = {p.stem for p in (REPO / "daemon").glob("*.py")} - {"__init__", "__main__", "config", "vocabulary"}
    assert not loose, f"modules outside any layer: {sorted(loose)}"


def test_imports_point_down() -> None:
    wrong = upward(all_imports())
    assert not wrong, "imports that point up a layer:\n" + "\n".join(map(str, wrong))


def test_the_daemon_never_imports_torch() -> None:
    heavy = [imp for imp in all_imports() if imp.target.split(".")[0] in NEVER_IN_DAEMON]
    assert not heavy, "\n".join(map(str, heavy))


def test_no_import_cycles() -> None:
    assert not cycles(all_imports())


@pytest.mark.parametrize(
    ("module", "source", "wrong"),
    [
        ("daemon.core.pipeline", "from daemon.model.engine import Engine\n", True),
        ("daemon.core.pipeline", "def f():\n    import daemon.app.service\n", True),
        ("daemon.audio.wav", "from daemon.config import Settings\n", False),
        ("daemon.model.engine", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import daemon.app\n", False),
        ("daemon.protocols.mqtt", "import quantize.convert\n", True),
        ("daemon.commands.say", "from quantize import demo\n", False),
    ],
)
def test_the_check_itself(module: str, source: str, wrong: bool) -> None:
    """The rule catches what it should (a test that could never fail would prove nothing)."""
    imports = list(imports_in(module, source, {"daemon.model.engine", "daemon.app.service", "quantize.demo"}))
    assert bool(upward(imports)) == wrong


def test_a_cycle_is_found() -> None:
    loop = [Import("daemon.app.a", "daemon.app.b", 1), Import("daemon.app.b", "daemon.app.a", 1)]
    assert cycles(loop) == [["daemon.app.a", "daemon.app.b"]]
