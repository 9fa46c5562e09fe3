"""Topic patterns → Channel classes (``rooms:*`` matches every ``rooms:`` topic)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .channel import Channel


class Router:
    """Exact topics and trailing-``*`` prefixes, as Phoenix's ``channel "rooms:*"``."""

    def __init__(self) -> None:
        self._exact: dict[str, type[Channel]] = {}
        self._prefixes: list[tuple[str, type[Channel]]] = []

    def channel(self, pattern: str, cls: type[Channel]) -> Router:
        if pattern.endswith("*"):
            if "*" in pattern[:-1]:
                raise ValueError(f"only a trailing * is allowed in a topic pattern: {pattern!r}")
            self._prefixes.append((pattern[:-1], cls))
            self._prefixes.sort(key=lambda item: -len(item[0]))
        else:
            if "*" in pattern:
                raise ValueError(f"only a trailing * is allowed in a topic pattern: {pattern!r}")
            self._exact[pattern] = cls
        return self

    def match(self, topic: str) -> type[Channel] | None:
        cls = self._exact.get(topic)
        if cls is not None:
            return cls
        for prefix, pcls in self._prefixes:
            if topic.startswith(prefix):
                return pcls
        return None
