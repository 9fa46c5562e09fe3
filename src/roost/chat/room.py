"""``rooms:<name>``: the chat channel of the original example, made strict."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import orjson

from ..channels import Channel, JoinError, Reply
from ..pubsub import HistoryUnavailable, Position, Recovery
from . import validate

log = logging.getLogger("roost.chat")


def message_id() -> str:
    """Unique and roughly time-ordered: milliseconds in hex, then 6 random bytes."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


class RoomChannel(Channel):
    """Join with ``{"user": NAME}``; push ``new:msg`` ``{"body": TEXT}``.

    The join reply carries the serving node's name; every member, the sender
    included, receives ``new:msg`` ``{id, user, body, at, node}``.
    """

    history_events = frozenset({"new:msg"})
    user: str | None = None

    async def join(self, payload: Any) -> Any:
        try:
            room = validate.room_name(self.topic)
            given = payload.get("user") if isinstance(payload, dict) else None
            if self.assigns.get("verified"):
                # The token's name is the only name this socket may use.
                self.user = self.assigns["user"]
                if given is not None and validate.user_name(given) != self.user:
                    raise validate.Invalid("user mismatch")
            else:
                self.user = validate.user_name(given) or validate.user_name(
                    self.assigns.get("user")
                )
            since = validate.since(payload.get("since") if isinstance(payload, dict) else None)
        except validate.Invalid as exc:
            raise JoinError(exc.reason) from None
        settings = self.socket.endpoint.settings.get("chat")
        if settings is not None and not settings.may_join(room, self.assigns):
            raise JoinError("unauthorized")
        try:
            await self.subscribe()  # before reading history: no message falls in between
            recovery = await self.history(since)
        except HistoryUnavailable:
            # Never an ok without a cursor: the client retries (phoenix.js rejoins).
            log.warning("history unavailable for %s: join refused", self.topic)
            raise JoinError("temporarily unavailable") from None
        return join_reply(recovery, self.node)

    async def after_join(self) -> None:
        name = self.user or "anonymous"
        await self.broadcast("user:entered", {"user": name})
        if self.socket.endpoint.presence is not None:
            await self.track(name, {"online_at": str(int(time.time() * 1000)), "node": self.node})

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event != "new:msg":
            return Reply.error({"reason": "unknown event"})
        try:
            text = validate.body(payload)
            user = self.user or validate.user_name(payload.get("user")) or "anonymous"
        except validate.Invalid as exc:
            return Reply.error({"reason": exc.reason})
        msg_id = message_id()
        message = {
            "id": msg_id,
            "user": user,
            "body": text,
            "at": int(time.time() * 1000),
            "node": self.node,
        }
        try:
            await self.broadcast("new:msg", message)
        except HistoryUnavailable:
            return Reply.error({"reason": "temporarily unavailable"})
        return Reply.ok({"id": msg_id})


def join_reply(recovery: Recovery, node: str) -> dict[str, Any]:
    """``{history, offset, epoch, recovered, node}``; stored payloads are embedded as is."""
    return {
        "history": [orjson.Fragment(m.payload) for m in recovery.messages],
        "offset": recovery.position.offset,
        "epoch": recovery.position.epoch,
        "recovered": recovery.recovered,
        "node": node,
    }


__all__ = ["Position", "RoomChannel", "join_reply", "message_id"]
