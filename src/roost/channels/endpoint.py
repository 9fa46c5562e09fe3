"""The Endpoint: what every socket of a server shares (router, pubsub, node, limits)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..pubsub import HistoryPolicy, PubSub
from .router import Router

if TYPE_CHECKING:
    from .presence import Presence
    from .socket import Socket

ConnectResult = dict[str, Any] | None | bool
ConnectHook = Callable[[dict[str, str], dict[str, Any]], ConnectResult | Awaitable[ConnectResult]]


@dataclass
class Limits:
    max_channels: int = 100
    max_frame: int = 64 * 1024
    idle_timeout: float = 60.0
    max_buffer: int = 4 * 1024 * 1024


def _accept_all(params: dict[str, str], info: dict[str, Any]) -> dict[str, Any]:
    return {}


@dataclass
class Endpoint:
    """The application as the sockets see it.

    ``connect(params, info)`` sees the query parameters and connection info; it
    returns the socket's assigns (a dict), or None/False to refuse with HTTP 403.
    """

    router: Router
    pubsub: PubSub
    connect: ConnectHook = _accept_all
    limits: Limits = field(default_factory=Limits)
    history: HistoryPolicy = field(default_factory=HistoryPolicy)
    presence: Presence | None = None
    sockets: set[Socket] = field(default_factory=set)

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
