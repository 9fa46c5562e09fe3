"""``rooms:<name>``: the chat channel of the original example, made strict."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from typing import Any

from ..channels import Channel, JoinError, Reply
from ..channels.channel import parse_since
from ..channels.presence import Presence
from ..pubsub import HistoryUnavailable, Position
from ..pubsub.history import refusal as refusal_reason
from . import validate
from .directory import listing

log = logging.getLogger("roost.chat")


def message_id() -> str:
    """Unique and roughly time-ordered: milliseconds in hex, then 6 random bytes."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


def keyed_id(topic: str, user: str, key: str) -> str:
    """The id of a message sent with an idempotency key: the same on every retry."""
    digest = hashlib.blake2b(f"{topic}\0{user}\0{key}".encode(), digest_size=12).hexdigest()
    return f"k{digest}"


TAKEN = "name is taken by a verified user"


class RoomChannel(Channel):
    """Join with ``{"user": NAME}``; push ``new:msg`` ``{"body": TEXT}``.

    The join reply carries the serving node's name; every member, the sender
    included, receives ``new:msg`` ``{id, user, verified, body, at, node}``.

    Identity: ``verified`` (in messages, ``user:entered`` and presence metas) is true
    only for a socket whose token this node verified (the connect hook's assigns); a
    client cannot set it. Anonymous names are free-form, but a name held by a verified
    member present in the room (on any node: the presence list) is refused to a guest
    with ``name is taken by a verified user`` — at join and for a message's ``user``
    field — comparing ``validate.name_key`` (NFKC, case folding, trimmed), so "AL" or
    "al" in full-width letters do not pass for "al". Nothing is reserved once the token holder
    has left: the mark, not the name, is what vouches. A token holder always gets its
    name; a guest who held it first stays, shown as a guest, until it leaves (its rejoin
    is then refused).
    """

    history_events = frozenset({"new:msg"})
    user: str | None = None

    @property
    def verified(self) -> bool:
        return self.assigns.get("verified") is True

    async def join(self, payload: Any) -> Any:
        try:
            room = validate.room_name(self.topic)
            given = payload.get("user") if isinstance(payload, dict) else None
            if self.verified:
                # The token's name is the only name this socket may use.
                self.user = self.assigns["user"]
                if given is not None and validate.user_name(given) != self.user:
                    raise validate.Invalid("user mismatch")
            else:
                self.user = validate.user_name(given) or validate.user_name(
                    self.assigns.get("user")
                )
            parse_since(payload.get("since") if isinstance(payload, dict) else None)
        except validate.Invalid as exc:
            raise JoinError(exc.reason) from None
        settings = self.socket.endpoint.settings.get("chat")
        if settings is not None and not settings.may_join(room, self.assigns):
            raise JoinError("unauthorized")
        refusal = await self.guest_refusal(self.user)
        if refusal is not None:
            raise JoinError(refusal)
        try:
            # Subscribed before the history read; never an ok without a cursor (the
            # client retries: phoenix.js rejoins).
            reply = await self.recover(payload)
        except JoinError:
            log.warning("history unavailable for %s: join refused", self.topic)
            raise
        reply["node"] = self.node
        return reply

    async def guest_refusal(self, name: str | None) -> str | None:
        """Why a guest may not use ``name`` here (None: it may; token holders always may)."""
        presence = self.socket.endpoint.presence
        if self.verified or name is None or not isinstance(presence, Presence):
            return None
        settings = self.socket.endpoint.settings.get("chat")
        if settings is None or not settings.secret:
            return None  # no token is verified here (nodes share --secret): no name is held
        try:
            present = await presence.list(self.topic)
        except Exception:  # cannot tell who is here: refuse rather than let a guest pass
            log.warning("presence unavailable for %s: guest name not checked", self.topic)
            return "temporarily unavailable"
        key = validate.name_key(name)
        for holder, entry in present.items():
            if validate.name_key(holder) == key and any(
                isinstance(meta, dict) and meta.get("verified") is True
                for meta in entry.get("metas", ())
            ):
                return TAKEN
        return None

    async def after_join(self) -> None:
        name = self.user or "anonymous"
        await self.broadcast("user:entered", {"user": name, "verified": self.verified})
        if self.socket.endpoint.presence is not None:
            await self.track(name, self._meta())

    def _meta(self) -> dict[str, Any]:
        return {
            "online_at": str(int(time.time() * 1000)),
            "node": self.node,
            "verified": self.verified,
        }

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event == "history":
            return await self.page(payload)
        if event == "rename":
            return await self.rename(payload)
        if event == "rooms":
            return await self.directory()
        if event != "new:msg":
            return Reply.error({"reason": "unknown event"})
        try:
            text = validate.body(payload)
            claimed = None if self.user else validate.user_name(payload.get("user"))
            key = validate.message_key(payload)
        except validate.Invalid as exc:
            return Reply.error({"reason": exc.reason})
        refusal = await self.guest_refusal(claimed)
        if refusal is not None:
            return Reply.error({"reason": refusal})
        user = self.user or claimed or "anonymous"
        # With a key, the id and the stored key are the same digest of the sender's name
        # and its key: a retry gets the first copy's id, and nobody can take another
        # sender's key (nor learn it from the id).
        scoped = keyed_id(self.topic, user, key) if key is not None else None
        msg_id = scoped or message_id()
        message = {
            "id": msg_id,
            "user": user,
            "verified": self.verified,
            "body": text,
            "at": int(time.time() * 1000),
            "node": self.node,
        }
        try:
            await self.broadcast("new:msg", message, key=scoped)
        except HistoryUnavailable as exc:
            return Reply.error({"reason": refusal_reason(exc)})
        return Reply.ok({"id": msg_id})

    async def rename(self, payload: Any) -> Reply:
        """``rename`` ``{"user": NEW}``: the room is told ``user:renamed`` ``{from, to,
        verified}`` and the online list moves the connection to the new name (one
        presence diff: the old name's leave, the new one's join); messages from now on
        carry it. A token's name cannot change; a guest may not take a verified
        member's name (as at join)."""
        if self.verified:
            return Reply.error({"reason": "a verified name cannot change"})
        try:
            name = validate.user_name(payload.get("user") if isinstance(payload, dict) else None)
        except validate.Invalid as exc:
            return Reply.error({"reason": exc.reason})
        if name is None:
            return Reply.error({"reason": "invalid user"})
        old = self.user or "anonymous"
        if name == old:
            return Reply.ok({"user": name})
        refusal = await self.guest_refusal(name)
        if refusal is not None:
            return Reply.error({"reason": refusal})
        self.user = name
        await self.broadcast("user:renamed", {"from": old, "to": name, "verified": False})
        presence = self.socket.endpoint.presence
        if presence is not None:  # (batched into one diff: the leave and the join)
            await presence.untrack(self, old)
            await presence.track(self, name, self._meta())
        return Reply.ok({"user": name})

    async def directory(self) -> Reply:
        """``rooms``: the busiest public rooms, ``{"rooms": [{"room", "online"}, ...]}``."""
        presence = self.socket.endpoint.presence
        if not isinstance(presence, Presence):
            return Reply.ok({"rooms": []})
        try:
            rooms = await listing(presence, self.socket.endpoint.settings.get("chat"))
        except Exception:
            log.warning("presence unavailable: no room directory")
            return Reply.error({"reason": "temporarily unavailable"})
        return Reply.ok({"rooms": rooms})


__all__ = ["Position", "RoomChannel", "message_id"]
