"""Presence entries and their stores (the memory one here; Redis in brokers/redis)."""

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


def group(entries: list[Entry]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Entries → ``{key: {"metas": [meta, ...]}}``."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for e in entries:
        out.setdefault(e.key, {"metas": []})["metas"].append(e.meta)
    return out


def new_ref() -> str:
    return secrets.token_urlsafe(9)


class MemoryPresenceStore:
    """One node's presences (the memory broker)."""

    def __init__(self) -> None:
        self._topics: dict[str, dict[str, Entry]] = {}

    async def start(self, node: str, on_change: Changed, on_resync: Resync | None = None) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def add(self, topic: str, entry: Entry) -> None:
        self._topics.setdefault(topic, {})[entry.ref] = entry

    async def remove(self, topic: str, refs: list[str]) -> list[Entry]:
        entries = self._topics.get(topic, {})
        removed = [entries.pop(ref) for ref in refs if ref in entries]
        if not entries:
            self._topics.pop(topic, None)
        return removed

    async def list(self, topic: str) -> list[Entry]:
        return list(self._topics.get(topic, {}).values())
