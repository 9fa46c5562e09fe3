"""Assemble the chat: router, endpoint and connect hook."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..application import Application
from ..channels import ConnectRefused, Endpoint, Limits
from ..channels.endpoint import ConnectHook
from ..pubsub import Broker, HistoryPolicy
from ..security import tokens
from ..security.origin import OriginPolicy
from ..security.rooms import SETTINGS_KEY
from .echo import EchoChannel
from .room import RoomChannel

STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class ChatSettings:
    """Who may connect and join.

    ``secret``: verifies tokens (``roost token``); ``require_token``: refuse sockets
    without a valid one (else the original example's anonymous mode, where a token,
    when given, must still be valid). ``rooms``: an allow-list of room names (None:
    any). ``private``: room name patterns (``ops``, ``staff-*``) only users whose token
    lists the room may join.
    """

    secret: str = ""
    require_token: bool = False
    rooms: frozenset[str] | None = None
    private: tuple[str, ...] = ()

    def is_private(self, room: str) -> bool:
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.private)

    def may_join(self, room: str, assigns: dict[str, Any]) -> bool:
        if self.is_private(room):
            return bool(assigns.get("verified")) and room in assigns.get("rooms", ())
        return self.rooms is None or room in self.rooms


def make_connect(settings: ChatSettings) -> ConnectHook:
    def connect(params: dict[str, str], info: dict[str, Any]) -> dict[str, Any]:
        token = params.get("token") or info.get("auth_token")
        if not token:
            if settings.require_token:
                raise ConnectRefused("token required")
            user = params.get("user")
            return {"user": user} if user is not None else {}
        if not settings.secret:
            raise ConnectRefused("tokens are not enabled on this server")
        try:
            claims = tokens.verify(settings.secret, token)
        except tokens.BadToken as exc:
            raise ConnectRefused(exc.reason) from None
        return {"user": claims.user, "verified": True, "rooms": claims.rooms}

    return connect


def create_endpoint(
    node: str,
    broker: Broker,
    *,
    echo: bool = False,
    limits: Limits | None = None,
    history: HistoryPolicy | None = None,
    presence_timeout: float = 30.0,
    presence_batch: float = 0.05,
    settings: ChatSettings | None = None,
    origins: OriginPolicy | None = None,
) -> Endpoint:
    """The chat on ``broker`` (the caller picks it: MemoryBroker, RedisBroker);
    presence in the broker's store.

    ``presence_timeout``: how long after a node dies its users are shown as gone.
    """
    return application(settings or ChatSettings(), echo=echo).endpoint(
        node,
        broker,
        limits=limits,
        history=history,
        presence_timeout=presence_timeout,
        presence_batch=presence_batch,
        origins=origins,
    )


def application(settings: ChatSettings | None = None, *, echo: bool = False) -> Application:
    """The chat as an Application: ``rooms:*`` (and ``echo:*``), its connect hook, its
    room policy (also read by other channel families and the REST API), its page."""
    settings = settings or ChatSettings()
    app = Application(
        connect=make_connect(settings),
        settings={"chat": settings, SETTINGS_KEY: settings},
        static=STATIC,
    )
    app.router.channel("rooms:*", RoomChannel)
    if echo:
        app.router.channel("echo:*", EchoChannel)
    return app
