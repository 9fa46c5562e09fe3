"""The Endpoint: what every socket of a server shares (router, pubsub, node, limits)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..pubsub import HistoryPolicy, PubSub
from ..security.origin import OriginPolicy
from .router import Router

if TYPE_CHECKING:
    from .presence import Presence
    from .socket import Socket

ConnectResult = dict[str, Any] | None | bool
ConnectHook = Callable[[dict[str, str], dict[str, Any]], ConnectResult | Awaitable[ConnectResult]]


@dataclass
class Limits:
    """Per-socket and per-node limits; every one is answered clearly (README: Security)."""

    max_channels: int = 100  # joins beyond: error "too many channels joined"
    max_frame: int = 64 * 1024  # bigger frames: close 1009
    idle_timeout: float = 60.0  # nothing received for this long: close 1001
    max_buffer: int = 1024 * 1024  # unsent bytes to a slow client: past it, close 1013
    msg_rate: float = 50.0  # pushes per second (0: unlimited); excess: "rate limited"
    msg_burst: float = 100.0
    join_rate: float = 10.0  # joins per second; excess: "rate limited"
    join_burst: float = 100.0
    abuse_limit: int = 200  # rate-limited pushes in a row: close 1008
    max_connections: int = 25_000  # per node; beyond: HTTP 503 before the upgrade


@dataclass
class EndpointStats:
    """Counters the sockets bump (plain ints: read by /metrics at scrape time)."""

    joins: int = 0
    leaves: int = 0
    heartbeats: int = 0
    pushes: int = 0
    replies_out: int = 0
    pushes_out: int = 0
    rate_limited: int = 0
    slow_consumers: int = 0
    connections_total: int = 0
    refused: int = 0


class ConnectRefused(Exception):
    """Raise from a connect hook to refuse with HTTP 403 and this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
    settings: dict[str, Any] = field(default_factory=dict)  # the application's own
    sockets: set[Socket] = field(default_factory=set)
    draining: bool = False
    stats: EndpointStats = field(default_factory=EndpointStats)

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
