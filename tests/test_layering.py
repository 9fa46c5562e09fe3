"""Imports point one way (docs/DESIGN.md, "The layers").

Every module of ``src/roost`` is parsed with ``ast``; every import counts as an arrow:
module-level, function-local and ``if TYPE_CHECKING:`` ones alike (relative imports
resolved). Two rules:

- no import circle between modules;
- between the parts of the package, arrows only run down the ranks in ``RANKS``.
  Parts of the same rank do not import each other (channels and brokers both stand
  on pubsub and know nothing of each other; server and chat neither), and the pairs
  in ``NEVER`` are refused whatever their ranks.

A new top-level module or subpackage must be given a rank here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "roost"

#: The rank of each part of the package (its first name under ``roost``). An import
#: from one part to another must go to a lower rank.
RANKS: dict[str, float] = {
    # sans-I/O and leaf helpers: import nothing of roost
    "protocol": 0,
    "security": 0,
    "cli_support": 0,
    # the node-local registry and the Broker protocol
    "pubsub": 1,
    # both stand on pubsub (and protocol); they never see each other
    "channels": 2,
    # roost.Application: channels + presence + hooks, what `roost serve MODULE:NAME` runs;
    # the chat is one (it stands on it)
    "application": 2.5,
    "brokers": 2,
    # applications, transports and tools on top
    "server": 3,
    "hooks": 3,  # backend hooks: an HTTP client deciding connects, joins, pushes
    "chat": 3,
    "realtime": 3,  # Supabase Realtime-compatible channels: beside the chat, not on it
    "client": 3,
    "cluster": 3,
    "inspector": 3,
    "inspect_phoenix": 3.5,  # roost inspect --wire phoenix: an Inspector of its own
    "publisher": 3,
    # every option of roost serve, with defaults read from where they are used
    "config": 4,
    "terminal": 4,  # roost chat, the terminal chat (on the client)
    # what roost serve builds from its options (broker, application, aiohttp app)
    "assemble": 4.5,
    # the supervisor of roost serve --workers: starts nodes (server's sibling view, fd limit)
    "workers": 4,
    # what composes them
    "cli": 5,
    "__init__": 5,  # the package itself: roost.publish() lazily imports the publisher
    "__main__": 6,
}

#: Arrows refused even though they run down (architecture whiteboard's "never").
NEVER: dict[tuple[str, str], str] = {
    ("chat", "brokers"): "the app sees only the Channel API (and the Broker protocol)",
    ("server", "brokers"): "the server knows brokers by the Broker protocol only",
}

#: Known exceptions, each with the reason it is still here. Keep this empty.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Arrow:
    source: str  # module that imports
    target: str  # module imported
    line: int

    def __str__(self) -> str:
        path = module_path(self.source).relative_to(SRC.parent)
        return f"{path}:{self.line}: {self.source} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> Path:
    base = SRC.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def part_of(module: str) -> str:
    """``roost.channels.socket`` → ``channels``; ``roost`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def arrows_of(name: str, path: Path, modules: set[str]) -> Iterator[Arrow]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = known(alias.name, modules)
                if target is not None:
                    yield Arrow(name, target, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            for alias in node.names:
                # ``from pkg import mod`` names a module; ``from pkg import Name`` the package
                target = known(f"{origin}.{alias.name}", modules) or known(origin, modules)
                if target is not None:
                    yield Arrow(name, target, node.lineno)


def known(dotted: str, modules: set[str]) -> str | None:
    """The roost module ``dotted`` names (or None: not ours)."""
    if dotted == ROOT or dotted.startswith(ROOT + "."):
        return dotted if dotted in modules else None
    return None


def import_graph() -> list[Arrow]:
    modules = all_modules()
    names = set(modules)
    return [
        arrow
        for name, path in modules.items()
        for arrow in arrows_of(name, path, names)
        if arrow.target != arrow.source
    ]


def circles(arrows: list[Arrow]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a in arrows:
        graph.setdefault(a.source, set()).add(a.target)
        graph.setdefault(a.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_part_has_a_rank() -> None:
    unranked = sorted({part_of(m) for m in all_modules()} - set(RANKS))
    assert not unranked, f"give these parts of src/roost a rank in RANKS: {unranked}"


def test_no_import_circles() -> None:
    arrows = import_graph()
    found = circles(arrows)
    lines = []
    for component in found:
        members = set(component)
        lines.append("circle: " + ", ".join(component))
        lines += [f"    {a}" for a in arrows if a.source in members and a.target in members]
    assert not found, "modules that import each other in a loop:\n" + "\n".join(lines)


def test_imports_point_down() -> None:
    wrong = []
    for a in import_graph():
        src, dst = part_of(a.source), part_of(a.target)
        if src == dst or (a.source, a.target) in ALLOWED:
            continue
        if (src, dst) in NEVER:
            wrong.append(f"{a}  [{src} must never import {dst}: {NEVER[(src, dst)]}]")
        elif src in RANKS and dst in RANKS and RANKS[dst] >= RANKS[src]:
            wrong.append(
                f"{a}  [{src} (rank {RANKS[src]}) may only import lower ranks; "
                f"{dst} is rank {RANKS[dst]}]"
            )
    assert not wrong, "imports that run up or across the layers:\n" + "\n".join(wrong)


def test_allowed_exceptions_still_exist() -> None:
    """An exception that is gone must leave ``ALLOWED`` too."""
    present = {(a.source, a.target) for a in import_graph()}
    stale = sorted(set(ALLOWED) - present)
    assert not stale, f"remove from ALLOWED (the import is gone): {stale}"


def test_the_checker_sees_each_kind_of_import(tmp_path: Path) -> None:
    """TYPE_CHECKING, function-local and relative imports are all arrows."""
    modules = {"roost.a", "roost.a.b", "roost.a.c", "roost.d", "roost.e"}
    source = tmp_path / "b.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import c\n"
        "if TYPE_CHECKING:\n"
        "    from ..d import Thing\n"
        "def f():\n"
        "    import roost.e\n"
    )
    targets = {a.target for a in arrows_of("roost.a.b", source, modules)}
    assert targets == {"roost.a.c", "roost.d", "roost.e"}
    looped = [Arrow("roost.a", "roost.d", 1), Arrow("roost.d", "roost.a", 1)]
    assert circles(looped) == [["roost.a", "roost.d"]]
