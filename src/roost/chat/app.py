"""Assemble the chat: router, endpoint and connect hook."""

from __future__ import annotations

from typing import Any

from ..channels import Endpoint, Limits, Router
from ..pubsub import Broker, PubSub
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
) -> Endpoint:
    router = Router().channel("rooms:*", RoomChannel)
    if echo:
        router.channel("echo:*", EchoChannel)
    return Endpoint(
        router=router,
        pubsub=PubSub(node, broker),
        connect=connect,
        limits=limits or Limits(),
    )
