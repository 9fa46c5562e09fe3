"""The Endpoint: what every socket of a server shares (router, pubsub, node, limits).

The top of the channel layer: it imports the socket, router and presence; they see it
only through the Protocols of ``contracts.py`` and ``limits.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..pubsub import HistoryPolicy, PubSub
from ..security.clientip import TrustedProxies
from ..security.clientlimit import ClientBuckets
from ..security.origin import OriginPolicy
from .contracts import Guard
from .limits import EndpointStats, Limits
from .presence import Presence
from .router import Router
from .socket import Socket

ConnectResult = dict[str, Any] | None | bool
ConnectHook = Callable[[dict[str, str], dict[str, Any]], ConnectResult | Awaitable[ConnectResult]]


class ConnectRefused(Exception):
    """Raise from a connect hook to refuse with HTTP 403 and this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sockets:
    """The node's open sockets, counted per client (``Socket.peer``) as they come and go.

    Set-like for every transport and reader: ``add``, ``discard``, ``len``, ``in``,
    iteration; ``count(peer)`` is what the per-client cap reads. A socket's ``peer``
    must not change while it is in here.
    """

    __slots__ = ("_all", "_per_peer")

    def __init__(self) -> None:
        self._all: set[Socket] = set()
        self._per_peer: dict[str, int] = {}

    def add(self, socket: Socket) -> None:
        if socket in self._all:
            return
        self._all.add(socket)
        if socket.peer is not None:
            self._per_peer[socket.peer] = self._per_peer.get(socket.peer, 0) + 1

    def discard(self, socket: Socket) -> None:
        if socket not in self._all:
            return
        self._all.discard(socket)
        peer = socket.peer
        if peer is not None:
            left = self._per_peer[peer] - 1
            if left:
                self._per_peer[peer] = left
            else:
                del self._per_peer[peer]

    def count(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Socket]:
        return iter(self._all)

    def __contains__(self, socket: object) -> bool:
        return socket in self._all


def _accept_all(params: dict[str, str], info: dict[str, Any]) -> dict[str, Any]:
    return {}


@dataclass
class Endpoint:
    """The application as the sockets see it.

    ``connect(params, info)`` sees the query parameters and connection info; it
    returns the socket's assigns (a dict), or None/False — or raises ConnectRefused —
    to refuse with HTTP 403.
    """

    router: Router
    pubsub: PubSub
    connect: ConnectHook = _accept_all
    limits: Limits = field(default_factory=Limits)
    history: HistoryPolicy = field(default_factory=HistoryPolicy)
    presence: Presence | None = None
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    #: Whose X-Forwarded-For names the client (``--trusted-proxy``; none by default).
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    settings: dict[str, Any] = field(default_factory=dict)  # the application's own
    sockets: Sockets = field(default_factory=Sockets)
    draining: bool = False
    stats: EndpointStats = field(default_factory=EndpointStats)
    #: Seconds, monotonic: the rate limits' clock (tests pass their own and never sleep).
    clock: Callable[[], float] = time.monotonic
    #: Decides joins and pushes before the channel does (backend hooks; None: nobody).
    guard: Guard | None = None
    #: Each client address's join budget over all its sockets (Limits.join_rate_per_ip).
    join_buckets: ClientBuckets = field(init=False)
    #: The node's join lane: at most Limits.joins_in_flight joins worked on at once.
    join_lane: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.join_buckets = ClientBuckets(
            self.limits.join_rate_per_ip, self.limits.join_burst_per_ip
        )
        self.join_lane = asyncio.Semaphore(max(1, self.limits.joins_in_flight))

    @property
    def node(self) -> str:
        return self.pubsub.node

    async def start(self) -> None:
        await self.pubsub.start()
        if self.presence is not None:
            await self.presence.start()

    async def stop(self) -> None:
        if self.presence is not None:
            await self.presence.stop()
        await self.pubsub.stop()

    async def broadcast(self, topic: str, event: str, payload: Any, *, store: bool = False) -> None:
        """Send ``event`` to every subscriber of ``topic`` on every node, from outside
        a channel (a background task, a start hook). ``store``: keep it in the topic's
        history first (HistoryUnavailable if that fails: then nobody got it)."""
        await self.pubsub.broadcast(topic, event, payload, store=self.history if store else None)

    async def authorize(
        self, params: dict[str, str], info: dict[str, Any]
    ) -> dict[str, Any] | None:
        result = self.connect(params, info)
        if inspect.isawaitable(result):
            result = await result
        if result is None or result is False:
            return None
        if result is True:
            return {}
        return dict(result)


__all__ = ["ConnectHook", "ConnectRefused", "Endpoint", "EndpointStats", "Limits", "Sockets"]
