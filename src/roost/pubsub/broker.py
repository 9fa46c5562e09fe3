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

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from .envelope import Envelope
from .history import HistoryPolicy, HistoryUnavailable, Page, Position, Recovery
from .presence import PresenceStore

Deliver = Callable[[Sequence[Envelope]], None]
#: The broker can no longer deliver ``topic`` in order here (stored broadcasts left the
#: history before they could be delivered): every local subscriber of it must go.
Lost = Callable[[str], None]
#: A metrics hook: one observation, in seconds.
Timing = Callable[[float], None]
#: One of a broker's own counters for ``/metrics``: (metric name, help text, value).
Counter = tuple[str, str, float]


class Broker(Protocol):
    """What PubSub (and the server's probes, and an application's presence) may ask of
    a broker. The methods under "optional" have defaults fit for a broker on one node:
    a broker that subclasses ``Broker`` explicitly inherits them."""

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

    async def publish_stored(
        self, envelope: Envelope, policy: HistoryPolicy, key: str | None = None
    ) -> Envelope:
        """Append to the topic's history and publish; return the envelope with its offset.

        ``key``: an idempotency key. When a message with the same key is still in the
        topic's history (same epoch), nothing is stored or published again: the first
        copy's position comes back, marked ``duplicate``. Raises HistoryUnavailable when
        it could not be stored (nothing was published).
        """
        ...

    async def history(self, topic: str, since: Position | None, policy: HistoryPolicy) -> Recovery:
        """Everything after ``since``, or the latest messages (see ``recover_from``)."""
        ...

    async def page(
        self, topic: str, before: int, limit: int, epoch: str, policy: HistoryPolicy
    ) -> Page:
        """Up to ``limit`` stored messages before offset ``before``, oldest first, if
        ``epoch`` is still the topic's (see ``history.page_of``); the position and the
        messages read together. Raises HistoryUnavailable when it cannot read (the
        default: a broker that keeps no history to page through)."""
        raise HistoryUnavailable("this broker does not page history")

    # -- optional: the defaults suit a broker with no connection and no shared state --
    @property
    def connected(self) -> bool:
        """Ready to carry broadcasts (``/readyz``, ``roost_broker_connected``)."""
        return True

    def health(self) -> dict[str, Any] | None:
        """The broker's state for ``/healthz`` (None: nothing to tell)."""
        return None

    def counters(self) -> Iterable[Counter]:
        """The broker's own counters, read at every ``/metrics`` scrape."""
        return ()

    def observe(self, publish: Timing | None, lag: Timing | None) -> None:
        """Metrics hooks: ``publish`` gets each publish round trip, ``lag`` each
        origin-to-here delivery lag (seconds). A broker that times neither ignores them."""
        return None

    async def nodes(self) -> list[str]:
        """The node names registered on this broker (the Redis node registry), this
        node's among them; a broker that knows of no registry answers none."""
        return []

    def presence_store(self, ttl: float) -> PresenceStore:
        """The presence store that goes with this broker: shared by every node on it,
        its entries living ``ttl`` seconds unless refreshed (a node-local broker's
        store keeps them until they are removed)."""
        raise NotImplementedError
