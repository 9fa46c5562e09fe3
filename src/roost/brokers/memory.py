"""The embedded broker: one node on its own, or several nodes in one process (tests).

With no hub a node is alone and ``publish`` has nothing to do: PubSub already
delivers locally. Brokers sharing a ``MemoryHub`` deliver to each other, which is how
tests run several nodes in one process without Redis.
"""

from __future__ import annotations

from ..pubsub.broker import Deliver
from ..pubsub.envelope import Envelope


class MemoryHub:
    def __init__(self) -> None:
        self.brokers: list[MemoryBroker] = []


class MemoryBroker:
    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub
        self.node = ""
        self._deliver: Deliver | None = None
        self.topics: set[str] = set()

    async def start(self, node: str, deliver: Deliver) -> None:
        self.node = node
        self._deliver = deliver
        if self.hub is not None:
            self.hub.brokers.append(self)

    async def stop(self) -> None:
        if self.hub is not None and self in self.hub.brokers:
            self.hub.brokers.remove(self)
        self._deliver = None

    async def publish(self, envelope: Envelope) -> None:
        if self.hub is None:
            return
        for other in self.hub.brokers:
            if other is not self and other._deliver is not None and envelope.topic in other.topics:
                other._deliver(envelope)

    async def subscribe(self, topic: str) -> None:
        self.topics.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)
