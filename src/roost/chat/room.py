"""``rooms:<name>``: the chat channel of the original example, made strict."""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..channels import Channel, JoinError, Reply
from . import validate


def message_id() -> str:
    """Unique and roughly time-ordered: milliseconds in hex, then 6 random bytes."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


class RoomChannel(Channel):
    """Join with ``{"user": NAME}``; push ``new:msg`` ``{"body": TEXT}``.

    The join reply carries the serving node's name; every member, the sender
    included, receives ``new:msg`` ``{id, user, body, at, node}``.
    """

    user: str | None = None

    async def join(self, payload: Any) -> Any:
        try:
            validate.room_name(self.topic)
            given = payload.get("user") if isinstance(payload, dict) else None
            self.user = validate.user_name(given) or validate.user_name(self.assigns.get("user"))
        except validate.Invalid as exc:
            raise JoinError(exc.reason) from None
        return {"history": [], "node": self.node}

    async def after_join(self) -> None:
        await self.broadcast("user:entered", {"user": self.user or "anonymous"})

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event != "new:msg":
            return Reply.error({"reason": "unknown event"})
        try:
            text = validate.body(payload)
            user = self.user or validate.user_name(payload.get("user")) or "anonymous"
        except validate.Invalid as exc:
            return Reply.error({"reason": exc.reason})
        msg_id = message_id()
        await self.broadcast(
            "new:msg",
            {
                "id": msg_id,
                "user": user,
                "body": text,
                "at": int(time.time() * 1000),
                "node": self.node,
            },
        )
        return Reply.ok({"id": msg_id})
