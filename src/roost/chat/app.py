"""Assemble the chat: router, endpoint and connect hook."""

from __future__ import annotations

from typing import Any

from ..brokers.redis import RedisBroker
from ..brokers.redis.presence import RedisPresenceStore
from ..channels import Endpoint, Limits, Router
from ..channels.presence import Presence
from ..pubsub import Broker, HistoryPolicy, PubSub
from ..pubsub.presence import PresenceStore
from .echo import EchoChannel
from .room import RoomChannel


def connect(params: dict[str, str], info: dict[str, Any]) -> dict[str, Any]:
    """Anonymous mode of the original example: anyone may connect; ``user`` is remembered."""
    return {"user": params.get("user")}


def create_endpoint(
    node: str,
    broker: Broker | None = None,
    *,
    echo: bool = False,
    limits: Limits | None = None,
    history: HistoryPolicy | None = None,
    presence_timeout: float = 30.0,
) -> Endpoint:
    """The chat on ``broker`` (memory when None); presence in the broker's store.

    ``presence_timeout``: how long after a node dies its users are shown as gone.
    """
    router = Router().channel("rooms:*", RoomChannel)
    if echo:
        router.channel("echo:*", EchoChannel)
    pubsub = PubSub(node, broker)
    store: PresenceStore | None = None
    if isinstance(broker, RedisBroker):
        # Entries live ttl; sweeps run every ttl/3: a dead node's users leave
        # within about (1 + 1/3) * ttl = presence_timeout.
        store = RedisPresenceStore(broker.url, broker.keys, ttl=presence_timeout * 0.75)
    return Endpoint(
        router=router,
        pubsub=pubsub,
        connect=connect,
        limits=limits or Limits(),
        history=history or HistoryPolicy(),
        presence=Presence(pubsub, store),
    )
