"""The embedded broker: one node on its own, or several nodes in one process (tests).

With no hub a node is alone and ``publish`` has nothing to do: PubSub already
delivers locally. Brokers sharing a ``MemoryHub`` deliver to each other, which is how
tests run several nodes in one process without Redis. History lives in a ring
buffer per topic; its epoch is new every time the process starts (and for a room
dropped to keep the number of rooms bounded).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace

from ..protocol import Encoded
from ..pubsub.broker import Broker, Deliver, Lost
from ..pubsub.envelope import Envelope
from ..pubsub.history import (
    HistoryPolicy,
    Position,
    Recovery,
    StoredMessage,
    recover_from,
    with_offset,
)
from ..pubsub.presence import Changed, Entry, PresenceStore, Resync


@dataclass
class _Topic:
    offset: int = 0
    messages: deque[StoredMessage] = field(default_factory=deque)
    # New with every history: a process start, or the room dropped and begun again.
    epoch: str = field(default_factory=lambda: os.urandom(6).hex())


class MemoryHub:
    """Shared state of in-process nodes. History keeps at most ``max_topics`` rooms,
    the least recently written dropped first (memory stays bounded whatever room names
    clients invent)."""

    def __init__(self, max_topics: int = 10_000) -> None:
        self.brokers: list[MemoryBroker] = []
        self.topics: OrderedDict[str, _Topic] = OrderedDict()
        self.max_topics = max_topics


class MemoryBroker(Broker):
    delivers_stored = False  # PubSub delivers stored messages locally itself

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self.shared = hub is not None
        self.node = ""
        self._deliver: Deliver | None = None
        self.topics: set[str] = set()

    async def start(self, node: str, deliver: Deliver, lost: Lost | None = None) -> None:
        self.node = node
        self._deliver = deliver
        self.hub.brokers.append(self)

    def presence_store(self, ttl: float) -> PresenceStore:
        """Presence on this node only (``ttl``: nothing expires; entries are removed)."""
        return MemoryPresenceStore()

    async def stop(self) -> None:
        if self in self.hub.brokers:
            self.hub.brokers.remove(self)
        self._deliver = None

    async def publish(self, envelope: Envelope) -> None:
        if not self.shared:
            return
        for other in self.hub.brokers:
            if other is not self and other._deliver is not None and envelope.topic in other.topics:
                other._deliver((envelope,))

    async def subscribe(self, topic: str) -> Position | None:
        self.topics.add(topic)
        return None

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)

    # -- history -----------------------------------------------------------------------
    async def publish_stored(self, envelope: Envelope, policy: HistoryPolicy) -> Envelope:
        """Store and publish; return the envelope with its offset (PubSub delivers it)."""
        topics = self.hub.topics
        state = topics.get(envelope.topic)
        if state is None:
            state = topics[envelope.topic] = _Topic()
            while len(topics) > self.hub.max_topics:
                # A dropped room's epoch effectively changes: its offsets restart.
                topics.popitem(last=False)
        else:
            topics.move_to_end(envelope.topic)
        state.offset += 1
        payload = with_offset(envelope.payload.data, state.offset)
        now = int(time.time() * 1000)
        state.messages.append(StoredMessage(state.offset, envelope.event, payload, now))
        _trim(state, policy, now)
        stored = replace(envelope, payload=Encoded(payload), offset=state.offset, epoch=state.epoch)
        await self.publish(stored)
        return stored

    async def history(self, topic: str, since: Position | None, policy: HistoryPolicy) -> Recovery:
        state = self.hub.topics.get(topic)
        if state is None:  # remembered from the first read on, so the epoch holds
            state = self.hub.topics[topic] = _Topic()
            while len(self.hub.topics) > self.hub.max_topics:
                self.hub.topics.popitem(last=False)
        now = int(time.time() * 1000)
        return recover_from(
            since, Position(state.offset, state.epoch), list(state.messages), policy, now
        )


def _trim(state: _Topic, policy: HistoryPolicy, now_ms: int) -> None:
    while len(state.messages) > policy.max_len:
        state.messages.popleft()
    while state.messages and now_ms - state.messages[0].ts_ms > policy.max_age_ms:
        state.messages.popleft()


class MemoryPresenceStore:
    """One node's presences: the memory broker's presence store."""

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
