"""The backend hooks as roost sees them: a connect hook wrapper and a Guard for joins
and client pushes (``--hook-connect``, ``--hook-join``, ``--hook-publish``)."""

from __future__ import annotations

import inspect
from typing import Any

from ..channels import ConnectRefused
from ..channels.contracts import GuardedSocket, Verdict
from ..channels.endpoint import ConnectHook, ConnectResult
from .client import UNAVAILABLE, Answer, HookClient

#: Request headers a backend may want to see (never cookies or authorization).
SHOWN_HEADERS = ("User-Agent", "Origin", "X-Forwarded-For", "Accept-Language")


def _client_info(info: dict[str, Any]) -> dict[str, Any]:
    headers = info.get("headers") or {}
    shown = {name: headers.get(name) for name in SHOWN_HEADERS if headers.get(name)}
    return {"peer": info.get("peer"), "transport": info.get("transport"), "headers": shown}


def connect_hook(client: HookClient, url: str, inner: ConnectHook) -> ConnectHook:
    """The application's connect hook first; then the backend decides (and may add to
    or change the assigns)."""

    async def connect(params: dict[str, str], info: dict[str, Any]) -> ConnectResult:
        result = inner(params, info)
        if inspect.isawaitable(result):
            result = await result
        if result is None or result is False:
            return result
        assigns = {} if result is True else dict(result)
        token = params.get("token") or info.get("auth_token")
        shown = {k: v for k, v in params.items() if k != "token"}
        answer = await client.ask(
            "connect",
            url,
            {"params": shown, "token": token, "assigns": assigns, "client": _client_info(info)},
        )
        if answer.data is None:
            if client.policy.fail_open:
                return assigns
            raise ConnectRefused(UNAVAILABLE)
        if not answer.allowed:
            raise ConnectRefused(str(answer.data.get("reason") or "denied"))
        more = answer.data.get("assigns")
        if isinstance(more, dict):
            assigns.update(more)
        return assigns

    return connect


class HttpGuard:
    """Joins (``join_url``) and client pushes (``publish_url``) decided by the backend."""

    def __init__(self, client: HookClient, join_url: str = "", publish_url: str = "") -> None:
        self.client = client
        self.join_url = join_url
        self.publish_url = publish_url

    def _verdict(self, answer: Answer, payload: Any) -> Verdict:
        data = answer.data
        if data is None:
            if self.client.policy.fail_open:
                return Verdict(True, payload)
            return Verdict(False, reason=UNAVAILABLE)
        if data.get("allow") is not True:
            return Verdict(False, reason=data.get("reason") or "denied")
        assigns = data.get("assigns")
        return Verdict(
            True,
            data.get("payload", payload),
            assigns=assigns if isinstance(assigns, dict) else None,
        )

    async def join(self, socket: GuardedSocket, topic: str, payload: Any) -> Verdict:
        if not self.join_url:
            return Verdict(True, payload)
        body = {"user": socket.assigns, "topic": topic, "payload": payload,
                "client": {"peer": socket.peer}}  # fmt: skip
        return self._verdict(await self.client.ask("join", self.join_url, body), payload)

    async def push(self, socket: GuardedSocket, topic: str, event: str, payload: Any) -> Verdict:
        if not self.publish_url:
            return Verdict(True, payload)
        body = {"user": socket.assigns, "topic": topic, "event": event, "payload": payload,
                "client": {"peer": socket.peer}}  # fmt: skip
        return self._verdict(await self.client.ask("publish", self.publish_url, body), payload)
