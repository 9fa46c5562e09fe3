"""The broker interface: what carries broadcasts between nodes.

A broker is small on purpose. PubSub calls ``start`` with a delivery callback, then
``publish`` for every broadcast (``publish_stored`` for those kept in history), and
``subscribe``/``unsubscribe`` when a topic gains
its first or loses its last local subscriber (brokers that route everything to every
node may ignore those). The broker calls ``deliver(envelopes)`` with the envelopes
from *another* node, in the order they came; PubSub itself delivers a node's own
broadcasts locally. A broker hands over together what it received together (one read
from Redis): PubSub then writes each subscriber's share of the batch at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .envelope import Envelope
from .history import HistoryPolicy, Position, Recovery

Deliver = Callable[[Sequence[Envelope]], None]
#: The broker can no longer deliver ``topic`` in order here (stored broadcasts left the
#: history before they could be delivered): every local subscriber of it must go.
Lost = Callable[[str], None]


class Broker(Protocol):
    #: True when the broker delivers stored (history) broadcasts back to this node
    #: itself, in offset order; False when PubSub delivers them locally.
    delivers_stored: bool

    async def start(self, node: str, deliver: Deliver, lost: Lost | None = None) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, envelope: Envelope) -> None: ...

    async def subscribe(self, topic: str) -> Position | None:
        """Return once envelopes for ``topic`` published from now on will be delivered.

        A broker that ``delivers_stored`` returns the topic's position at that moment:
        every stored broadcast after it will be delivered, exactly once, in order.
        Raises HistoryUnavailable when it cannot subscribe (nothing is left behind).
        """
        ...

    async def unsubscribe(self, topic: str) -> None: ...

    async def publish_stored(self, envelope: Envelope, policy: HistoryPolicy) -> Envelope:
        """Append to the topic's history and publish; return the envelope with its offset.

        Raises HistoryUnavailable when it could not be stored (nothing was published).
        """
        ...

    async def history(self, topic: str, since: Position | None, policy: HistoryPolicy) -> Recovery:
        """Everything after ``since``, or the latest messages (see ``recover_from``)."""
        ...
