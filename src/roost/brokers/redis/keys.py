"""Redis channel and key names (DESIGN.md: "Redis data model")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "roost"
    app: str = "chat"

    @property
    def base(self) -> str:
        return f"{self.prefix}:{self.app}"

    @property
    def global_channel(self) -> str:
        """Every broadcast, every node (``global`` mode, like phoenix_pubsub_redis)."""
        return self.base

    def topic_channel(self, topic: str) -> str:
        """One channel per topic (``topic`` mode); ``{topic}`` is a Cluster hash tag."""
        return f"{self.base}:t:{{{topic}}}"

    @property
    def topic_pattern(self) -> str:
        return f"{self.base}:t:*"

    def topic_of(self, channel: str) -> str | None:
        head = f"{self.base}:t:{{"
        if channel.startswith(head) and channel.endswith("}"):
            return channel[len(head) : -1]
        return None

    def history_stream(self, topic: str) -> str:
        return f"{self.base}:h:{{{topic}}}"

    def history_meta(self, topic: str) -> str:
        return f"{self.base}:m:{{{topic}}}"

    def history_keys(self, topic: str) -> str:
        """The idempotency keys of the topic's stored messages (a zset scored by offset)."""
        return f"{self.base}:i:{{{topic}}}"

    def probe_channel(self, node: str) -> str:
        return f"{self.base}:probe:{node}"

    def node_key(self, node: str) -> str:
        return f"{self.base}:node:{node}"

    @property
    def node_pattern(self) -> str:
        """A SCAN pattern for every node key (the prefix's glob characters escaped)."""
        return "".join("\\" + c if c in "*?[]\\" else c for c in self.base) + ":node:*"

    def node_of(self, key: str) -> str | None:
        head = f"{self.base}:node:"
        return key[len(head) :] if key.startswith(head) else None
