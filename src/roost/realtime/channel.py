"""``realtime:<name>``: a Supabase Realtime-compatible channel (Broadcast, Presence).

Join with realtime-js's payload (see ``joinconfig``); the ok reply is
``{"postgres_changes": []}``, what the Supabase server answers a channel without
Postgres changes. Then:

- ``broadcast`` ``{"type": "broadcast", "event", "payload"}`` goes to every member of
  the topic on every node, the sender only with ``config.broadcast.self``; it is
  answered (ok) only with ``config.broadcast.ack``. The binary user-broadcast push
  (kind 3) is the same with a JSON payload (members get the JSON form, which
  realtime-js decodes to the same message); a raw payload reaches V2 WebSocket members
  as a user-broadcast frame (kind 4).
- ``presence`` ``track``/``untrack`` (see ``presence.PresenceAdapter``).
- ``access_token`` ``{"access_token"}`` swaps the channel's token; a bad or expired
  one, or the token's expiry, ends the channel: a ``system`` message
  ``{"extension": "system", "status": "error", "message", "channel"}`` then
  ``phx_error`` (the client rejoins with its current token, or stays refused).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

import orjson

from ..channels import Channel, JoinError, Reply
from ..protocol import BINARY, V2, Encoded, Frame
from ..protocol import binary as wire_binary
from ..protocol import realtime as shapes
from ..security.rooms import SETTINGS_KEY, RoomPolicy
from . import auth, joinconfig
from .presence import PresenceAdapter

log = logging.getLogger("roost.realtime")

#: The pubsub event of a raw (binary) user broadcast: its payload is the kind-4 frame.
RAW = "phx_user_broadcast"


class RealtimeChannel(Channel):
    intercept: ClassVar[frozenset[str]] = frozenset({RAW})
    #: seconds since the epoch, as token expiries are (tests pass their own)
    wall: ClassVar[Callable[[], float]] = time.time

    config: joinconfig.JoinConfig
    room: str
    token: str | None = None
    expires: float | None = None
    _expiry: asyncio.TimerHandle | None = None
    _presence: PresenceAdapter | None = None

    @property
    def policy(self) -> RoomPolicy | None:
        policy: RoomPolicy | None = self.socket.endpoint.settings.get(SETTINGS_KEY)
        return policy

    async def join(self, payload: Any) -> Any:
        room = self.topic[len(shapes.PREFIX) :]
        if not room:
            raise JoinError("TopicNameRequired: You must provide a topic name")
        try:
            self.config = joinconfig.parse(payload)
            identity = auth.identify(self.policy, self.config.access_token, self.socket.assigns)
            auth.authorize(self.policy, room, identity.assigns, self.config.private)
        except joinconfig.Invalid as exc:
            raise JoinError(exc.reason) from None
        self.room = room
        self._adopt(self.config.access_token, identity)
        self._presence = PresenceAdapter(self, self.config.presence_key)
        return {"postgres_changes": []}

    async def after_join(self) -> None:
        self._schedule()
        if self.config.presence_enabled and self._presence is not None:
            await self._presence.push_state()

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event == shapes.BROADCAST:
            return await self._broadcast(payload)
        if event == shapes.PRESENCE and self._presence is not None:
            return await self._presence.handle(payload)
        if event == shapes.ACCESS_TOKEN:
            await self._access_token(payload)
            return None
        return Reply.error({"reason": "unknown event"})

    def handle_out(self, event: str, payload: Encoded) -> None:
        if event != RAW:
            self.push(event, payload)
            return
        # A raw user broadcast: only a V2 WebSocket carries it (as the server drops it
        # for V1 clients); long-poll packs binary frames as nothing.
        kind = self.wire.kind
        user_broadcast = payload.data[:1] == bytes([wire_binary.USER_BROADCAST])
        if payload.binary and user_broadcast and kind.serializer.vsn == V2.vsn:
            data = kind.pack(Frame(BINARY, payload.data))
            if data:
                self.wire.write(data)

    async def terminate(self, reason: str) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # -- broadcast -----------------------------------------------------------------------
    async def _broadcast(self, payload: Any) -> Reply | None:
        event: str
        body: Any
        if isinstance(payload, wire_binary.UserBroadcast):
            if payload.json:
                event = shapes.BROADCAST
                body = shapes.envelope(
                    payload.event, orjson.Fragment(payload.payload), payload.meta or None
                )
            else:
                meta = orjson.dumps(payload.meta) if payload.meta else b""
                frame = wire_binary.encode_user_broadcast(
                    self.topic, payload.event, payload.payload, json=False, meta=meta
                )
                event, body = RAW, Encoded(frame, True)
        elif isinstance(payload, dict) and isinstance(payload.get("event"), str):
            event, body = shapes.BROADCAST, payload  # relayed as sent, as the server does
        else:
            return Reply.error({"reason": "broadcast needs {type, event, payload}"})
        if not self.config.self_broadcast:
            await self.broadcast_from(event, body)
        else:
            await self.broadcast(event, body)
        return Reply.ok() if self.config.ack else None

    # -- access tokens -------------------------------------------------------------------
    def _adopt(self, token: str | None, identity: auth.Identity) -> None:
        assigns = self.assigns
        assigns.clear()
        assigns.update(identity.assigns)
        self.token = token
        self.expires = identity.expires

    async def _access_token(self, payload: Any) -> None:
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or token == self.token:
            return  # none, or the same: nothing changes (the server does nothing either)
        if token.startswith(auth.API_KEY_PREFIX):
            return
        try:
            identity = auth.identify(self.policy, token, self.socket.assigns)
            auth.authorize(self.policy, self.room, identity.assigns, self.config.private)
        except joinconfig.Invalid as exc:
            await self._shut_down(exc.reason)
            return
        self._adopt(token, identity)
        self._schedule()

    def _schedule(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.expires is not None:
            delay = max(0.0, self.expires - type(self).wall())
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if self.joined:
            self.socket.spawn(self._shut_down("InvalidJWTToken: expired token"))

    async def _shut_down(self, message: str) -> None:
        """The server's ``shutdown_response``: a ``system`` error, then the channel ends."""
        if not self.joined:
            return
        log.info("realtime channel %s ended: %s", self.topic, message)
        self.push(
            shapes.SYSTEM,
            {"extension": "system", "status": "error", "message": message, "channel": self.room},
        )
        await self.socket.crash(self)
