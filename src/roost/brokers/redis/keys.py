"""Redis channel and key names (DESIGN.md: "Redis data model").

A topic's keys and channel carry a Redis Cluster hash tag, so they share one slot and
every script stays single-slot. A Cluster hashes the part of a name between its first
``{`` and the first ``}`` after it, unless that part is empty; so a topic is tagged
``{<topic>}`` — except a topic that is empty or starts with ``}``, whose tag would be
empty: it is named ``~{~}<topic>`` (every such topic in the slot of ``~``). The ``~``
where an ordinary name has ``{`` keeps the two forms apart, so two topics never share a
name, and names already in Redis keep theirs. The prefix, the app name and node names
must hold no brace (their ``{`` would come first and move the tag): refused.
"""

from __future__ import annotations

from dataclasses import dataclass

BRACES = frozenset("{}")
# The tag of topics that cannot be their own (empty, or starting with "}").
ODD_TAG = "~{~}"


def tagged(topic: str) -> str:
    """The part of a topic's names that holds its hash tag (see the module docstring)."""
    if topic and topic[0] != "}":
        return "{" + topic + "}"
    return ODD_TAG + topic


def untagged(part: str) -> str | None:
    """The topic of a ``tagged`` part, or None if it is not one."""
    if part.startswith(ODD_TAG):
        topic = part[len(ODD_TAG) :]
        return topic if not topic or topic[0] == "}" else None
    if len(part) >= 3 and part[0] == "{" and part[-1] == "}" and part[1] != "}":
        return part[1:-1]
    return None


def check_node(node: str) -> str:
    """A node name usable in Redis names: not empty, no brace. Raises ValueError."""
    if not node or BRACES & set(node):
        raise ValueError(
            f"node name {node!r} must be non-empty and must not contain {{ or }} "
            "(Redis Cluster hash tags)"
        )
    return node


@dataclass(frozen=True)
class Keys:
    prefix: str = "roost"
    app: str = "chat"

    def __post_init__(self) -> None:
        for what, value in (("prefix", self.prefix), ("app name", self.app)):
            if BRACES & set(value):
                raise ValueError(
                    f"the Redis {what} {value!r} must not contain {{ or }} "
                    "(Redis Cluster hash tags)"
                )

    @property
    def base(self) -> str:
        return f"{self.prefix}:{self.app}"

    @property
    def global_channel(self) -> str:
        """Every broadcast, every node (``global`` mode, like phoenix_pubsub_redis)."""
        return self.base

    def topic_channel(self, topic: str) -> str:
        """One channel per topic (``topic`` mode), in the topic's slot."""
        return f"{self.base}:t:{tagged(topic)}"

    @property
    def topic_pattern(self) -> str:
        return f"{self.base}:t:*"

    def topic_of(self, channel: str) -> str | None:
        head = f"{self.base}:t:"
        return untagged(channel[len(head) :]) if channel.startswith(head) else None

    def history_stream(self, topic: str) -> str:
        return f"{self.base}:h:{tagged(topic)}"

    def history_meta(self, topic: str) -> str:
        return f"{self.base}:m:{tagged(topic)}"

    def presence_hash(self, topic: str) -> str:
        """The topic's presence entries (phx_ref → entry)."""
        return f"{self.base}:p:{tagged(topic)}"

    def presence_expiries(self, topic: str) -> str:
        """The topic's presence expiries (phx_ref → ms)."""
        return f"{self.base}:pz:{tagged(topic)}"

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
