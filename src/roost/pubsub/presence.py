"""Presence entries and the store protocol (the stores: brokers/memory.py, brokers/redis)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    ref: str
    key: str
    meta: dict[str, Any]  # includes "phx_ref"


# A store tells Presence of changes it made itself: (topic, joins, leaves).
Changed = Callable[[str, list[Entry], list[Entry]], Awaitable[None]]

# A store asks Presence to push a fresh ``presence_state`` to this node's members of
# these topics: it found the shared store had lost entries, so their lists may hold
# users nobody will ever announce leaving (phoenix.js computes the leaves from a new
# state). Returns the topics it could not do now; the store asks again later.
Resync = Callable[[list[str]], Awaitable[list[str]]]


class PresenceStore(Protocol):
    async def start(
        self, node: str, on_change: Changed, on_resync: Resync | None = None
    ) -> None: ...

    async def stop(self) -> None: ...

    async def add(self, topic: str, entry: Entry) -> None: ...

    async def remove(self, topic: str, refs: list[str]) -> list[Entry]:
        """Remove entries; return those this call actually removed (exactly once)."""
        ...

    async def list(self, topic: str) -> list[Entry]: ...

    async def occupancy(self, prefix: str, scan: int) -> dict[str, int]:
        """Topics starting with ``prefix`` that have entries, each with how many live
        entries (connections) it has, on every node. Bounded: at most ``scan`` topics
        with entries are looked at (which ones, past that, is up to the store)."""
        ...


def group(entries: list[Entry]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Entries → ``{key: {"metas": [meta, ...]}}``."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for e in entries:
        out.setdefault(e.key, {"metas": []})["metas"].append(e.meta)
    return out


def new_ref() -> str:
    return secrets.token_urlsafe(9)
