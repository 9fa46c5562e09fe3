"""How the dashboard's socket gets in, whatever the application admits.

The page connects with the auth token ``roost-admin:<secret>`` (phoenix.js's
``authToken``: the ``Sec-WebSocket-Protocol`` header, ``X-Phoenix-AuthToken`` on
long-poll — never the URL, so no access log holds it). With the right secret the socket
is admitted past the application's connect hook (``--require-token``, ``--hook-connect``)
with the assigns ``{"admin": True}`` only: no user, not verified. Any other token goes to
the application's hook as if there were none, so a wrong secret still reaches the join
and its ``unauthorized`` where the application admits anonymous sockets.

The backend's guard (``--hook-join``/``--hook-publish``) never sees ``admin:cluster``:
its join payload holds the secret, and the topic is not the application's.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..channels.contracts import Guard, GuardedSocket, Verdict
from ..channels.endpoint import ConnectHook, ConnectResult
from .channel import TOPIC, AdminSettings

TOKEN_PREFIX = "roost-admin:"


def admit(inner: ConnectHook, settings: AdminSettings) -> ConnectHook:
    """``inner`` (the application's connect hook), with the dashboard's socket let in."""

    async def connect(params: dict[str, str], info: dict[str, Any]) -> ConnectResult:
        token = info.get("auth_token")
        if isinstance(token, str) and token.startswith(TOKEN_PREFIX):
            if settings.admits(token[len(TOKEN_PREFIX) :]):
                return {"admin": True}
            info = {**info, "auth_token": None}  # not the application's token either
        result = inner(params, info)
        if inspect.isawaitable(result):
            result = await result
        return result

    return connect


class SkipAdmin:
    """The application's guard for every topic but ``admin:cluster``."""

    __slots__ = ("inner",)

    def __init__(self, inner: Guard) -> None:
        self.inner = inner

    async def join(self, socket: GuardedSocket, topic: str, payload: Any) -> Verdict:
        if topic == TOPIC:
            return Verdict(True, payload)
        return await self.inner.join(socket, topic, payload)

    async def push(self, socket: GuardedSocket, topic: str, event: str, payload: Any) -> Verdict:
        if topic == TOPIC:
            return Verdict(True, payload)  # the channel refuses it: read only
        return await self.inner.push(socket, topic, event, payload)
