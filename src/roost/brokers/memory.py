"""The embedded broker: one node on its own, or several nodes in one process (tests).

With no hub a node is alone and ``publish`` has nothing to do: PubSub already
delivers locally. Brokers sharing a ``MemoryHub`` deliver to each other, which is how
tests run several nodes in one process without Redis. History lives in a ring
buffer per topic, capped by count, age and bytes (``HistoryPolicy``).

Only a stored broadcast creates a topic's history: reading one that has none answers
with an empty position and keeps nothing, so invented room names cost nothing. At
most ``max_rooms`` topics keep history; a new one evicts the least recently written
topic that no node of the hub is subscribed to (an idle room), and when every one
has subscribers the publish is refused (``HistoryUnavailable``: the client's push
gets ``temporarily unavailable``). An eviction starts a new generation of the hub,
so empty positions read before it recover nothing after it (``pubsub.history``).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from ..protocol import Encoded
from ..pubsub.broker import Broker, Deliver, Lost
from ..pubsub.envelope import Envelope
from ..pubsub.history import (
    HistoryPolicy,
    HistoryUnavailable,
    Page,
    Position,
    Recovery,
    StoredMessage,
    empty_epoch,
    new_epoch,
    page_of,
    recover_from,
    with_offset,
)
from ..pubsub.presence import Changed, Entry, PresenceStore, Resync


def _nonce(size: int = 4) -> str:
    return os.urandom(size).hex()


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Topic:
    epoch: str  # begun by the topic's first stored broadcast
    offset: int = 0
    size: int = 0  # bytes of the stored messages (events and payloads)
    messages: deque[StoredMessage] = field(default_factory=deque)
    #: idempotency key → offset of its message, oldest first, only while it is kept
    keys: dict[str, int] = field(default_factory=dict)


class MemoryHub:
    """Shared state of in-process nodes: the topics with history, least recently
    written first. ``max_topics`` overrides the policy's ``max_rooms``."""

    def __init__(self, max_topics: int | None = None) -> None:
        self.brokers: list[MemoryBroker] = []
        self.topics: OrderedDict[str, _Topic] = OrderedDict()
        self.max_topics = max_topics
        self.generation = _nonce()  # new at every eviction
        self.evicted = 0

    def subscribed(self, topic: str) -> bool:
        return any(topic in broker.topics for broker in self.brokers)

    def written(self, topic: str, policy: HistoryPolicy) -> _Topic:
        """The topic's history, begun (room made for it) if it has none."""
        state = self.topics.get(topic)
        if state is not None:
            self.topics.move_to_end(topic)
            return state
        limit = self.max_topics if self.max_topics is not None else policy.max_rooms
        if len(self.topics) >= limit:
            idle = next(self._idle(), None)
            if idle is None:
                raise HistoryUnavailable(f"{limit} rooms with history, none idle")
            # Its offsets restart in a new epoch; empty positions read before are stale.
            del self.topics[idle]
            self.evicted += 1
            self.generation = _nonce()
        state = self.topics[topic] = _Topic(new_epoch(self.generation, _now_ms(), _nonce(6)))
        return state

    def _idle(self) -> Iterator[str]:
        return (topic for topic in self.topics if not self.subscribed(topic))


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

    async def nodes(self) -> list[str]:
        """The nodes on this broker's hub (one node alone: itself)."""
        return sorted(broker.node for broker in self.hub.brokers)

    async def subscribe(self, topic: str) -> Position | None:
        self.topics.add(topic)
        return None

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)

    # -- history -----------------------------------------------------------------------
    async def publish_stored(
        self, envelope: Envelope, policy: HistoryPolicy, key: str | None = None
    ) -> Envelope:
        """Store and publish; return the envelope with its offset (PubSub delivers it)."""
        state = self.hub.written(envelope.topic, policy)
        first = state.keys.get(key) if key is not None else None
        if first is not None and state.messages and first >= state.messages[0].offset:
            # a retry of a message still kept: the first copy, not a second
            return replace(envelope, offset=first, epoch=state.epoch, duplicate=True)
        state.offset += 1
        payload = with_offset(envelope.payload.data, state.offset)
        now = _now_ms()
        stored = StoredMessage(state.offset, envelope.event, payload, now)
        state.messages.append(stored)
        state.size += _size(stored)
        _trim(state, policy, now)
        if key is not None:
            state.keys[key] = state.offset
        if state.keys:  # keys of messages no longer kept go with them
            oldest = state.messages[0].offset if state.messages else state.offset + 1
            while state.keys and next(iter(state.keys.values())) < oldest:
                del state.keys[next(iter(state.keys))]
        out = replace(envelope, payload=Encoded(payload), offset=state.offset, epoch=state.epoch)
        await self.publish(out)
        return out

    async def history(self, topic: str, since: Position | None, policy: HistoryPolicy) -> Recovery:
        now = _now_ms()
        state = self.hub.topics.get(topic)  # none: an empty position, nothing kept
        if state is None:
            return recover_from(
                since, Position(0, empty_epoch(self.hub.generation, now)), [], policy, now
            )
        return recover_from(
            since, Position(state.offset, state.epoch), list(state.messages), policy, now
        )

    async def page(
        self, topic: str, before: int, limit: int, epoch: str, policy: HistoryPolicy
    ) -> Page:
        now = _now_ms()
        state = self.hub.topics.get(topic)
        if state is None:
            current = Position(0, empty_epoch(self.hub.generation, now))
            return page_of(epoch, before, limit, current, [], policy, now)
        current = Position(state.offset, state.epoch)
        return page_of(epoch, before, limit, current, list(state.messages), policy, now)


def _size(m: StoredMessage) -> int:
    return len(m.event) + len(m.payload)


def _trim(state: _Topic, policy: HistoryPolicy, now_ms: int) -> None:
    """Oldest first, while over the count or the bytes (the newest stays), or too old."""
    messages = state.messages
    while len(messages) > 1 and (len(messages) > policy.max_len or state.size > policy.max_bytes):
        state.size -= _size(messages.popleft())
    while messages and now_ms - messages[0].ts_ms > policy.max_age_ms:
        state.size -= _size(messages.popleft())


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

    async def occupancy(self, prefix: str, scan: int) -> dict[str, int]:
        found: dict[str, int] = {}
        for topic, entries in self._topics.items():
            if len(found) >= scan:
                break
            if topic.startswith(prefix):
                found[topic] = len(entries)
        return found
