"""What the pieces of the channel layer need of each other, as Protocols.

A Channel sees its socket as a ``ChannelSocket`` and the endpoint as a
``ChannelEndpoint``; Presence sees a channel as a ``PresenceChannel``. These are
structural: ``Socket``, ``Endpoint``, ``Channel`` and ``Presence`` satisfy them without
naming them. Because this module imports nothing of the package above the lifecycle
table and the replies, ``channel.py`` and ``presence.py`` stand below ``socket.py``
and ``endpoint.py``, and every import in the package points down:

    lifecycle, reply < contracts < channel, presence < router < limits < socket < endpoint
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocol import Encoded, Ref
from ..pubsub import HistoryPolicy, PubSub, Subscriber, Wire
from .lifecycle import ChannelEvent
from .reply import Reply


class PresenceChannel(Subscriber, Protocol):
    """What Presence needs of a channel: its topic, whether it is joined, a push; and
    the subscriber it is (its broadcasts are paused while a state is read for it)."""

    @property
    def topic(self) -> str: ...

    @property
    def joined(self) -> bool: ...

    def push(self, event: str, payload: Any) -> None: ...


class ChannelPresence(Protocol):
    """What a channel and its socket call on the endpoint's Presence."""

    async def push_state(self, channel: PresenceChannel) -> None: ...

    async def track(self, channel: PresenceChannel, key: str, meta: dict[str, Any]) -> str: ...

    async def untrack(self, channel: PresenceChannel, key: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """A guard's answer: ``allowed`` (else ``reason``, the error reply's response), the
    payload to go on with (rewritten or as it came), assigns to merge (None: none)."""

    allowed: bool
    payload: Any = None
    reason: Any = None
    assigns: dict[str, Any] | None = None


class GuardedSocket(Protocol):
    """What a guard may read of the socket it decides for."""

    @property
    def assigns(self) -> dict[str, Any]: ...

    @property
    def peer(self) -> str | None: ...


class Guard(Protocol):
    """Decides joins and client pushes before the channel sees them (``--hook-join``,
    ``--hook-publish``: an application's backend asked over HTTP, see roost.hooks)."""

    async def join(self, socket: GuardedSocket, topic: str, payload: Any) -> Verdict: ...

    async def push(
        self, socket: GuardedSocket, topic: str, event: str, payload: Any
    ) -> Verdict: ...


class ChannelEndpoint(Protocol):
    """What a channel needs of the endpoint: pubsub, node name, history, presence."""

    @property
    def pubsub(self) -> PubSub: ...

    @property
    def node(self) -> str: ...

    @property
    def history(self) -> HistoryPolicy: ...

    @property
    def presence(self) -> ChannelPresence | None: ...

    @property
    def settings(self) -> dict[str, Any]: ...


class ChannelSocket(Protocol):
    """What a channel needs of its socket (``Socket`` is the one implementation)."""

    @property
    def wire(self) -> Wire: ...

    @property
    def assigns(self) -> dict[str, Any]: ...

    @property
    def endpoint(self) -> ChannelEndpoint: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...

    async def crash(self, channel: Any, event: ChannelEvent = ...) -> None: ...

    def push(
        self,
        join_ref: Ref,
        topic: str,
        event: str,
        payload: Encoded,
        ref: Ref = None,
    ) -> None: ...

    def reply(self, join_ref: Ref, ref: Ref, topic: str, reply: Reply) -> None: ...
