"""Supabase Realtime's ``presence`` pushes mapped onto roost's Presence.

    {"type": "presence", "event": "track", "payload": {...}}   → track (or update)
    {"type": "presence", "event": "untrack"}                   → untrack

Each channel tracks under its join's ``config.presence.key``; the metas are the
tracked payload plus ``phx_ref``, and changes reach every node as the Phoenix
``presence_state``/``presence_diff`` realtime-js syncs from.
"""

from __future__ import annotations

from typing import Any

from ..channels import Channel, Reply
from ..channels.presence import Presence


class PresenceAdapter:
    """One channel's presence: its key, what it tracked, whether it got the state."""

    __slots__ = ("channel", "key", "meta", "state_sent")

    def __init__(self, channel: Channel, key: str) -> None:
        self.channel = channel
        self.key = key
        self.meta: dict[str, Any] | None = None  # what is tracked now (None: nothing)
        self.state_sent = False

    @property
    def presence(self) -> Presence | None:
        presence = self.channel.socket.endpoint.presence
        return presence if isinstance(presence, Presence) else None

    async def push_state(self) -> None:
        """``presence_state`` to this client, once (at the join, or before its first track)."""
        presence = self.presence
        if presence is not None and not self.state_sent:
            self.state_sent = True
            await presence.push_state(self.channel)

    async def handle(self, payload: Any) -> Reply:
        presence = self.presence
        if presence is None:
            return Reply.error({"reason": "presence is not enabled on this server"})
        event = payload.get("event") if isinstance(payload, dict) else None
        if not isinstance(event, str):
            return Reply.error({"reason": "presence needs an event: track or untrack"})
        event = event.lower()
        if event == "track":
            return await self._track(presence, payload.get("payload", {}))
        if event == "untrack":
            if self.meta is not None:
                self.meta = None
                await presence.untrack(self.channel, self.key)
            return Reply.ok()
        return Reply.error({"reason": f"unknown presence event {event!r}"})

    async def _track(self, presence: Presence, meta: Any) -> Reply:
        if not isinstance(meta, dict):
            return Reply.error({"reason": "Presence track payload must be a map"})
        if meta == self.meta:
            return Reply.ok()  # no change: no diff (as the server does)
        await self.push_state()
        try:
            if self.meta is None or await presence.update(self.channel, self.key, meta) is None:
                await presence.track(self.channel, self.key, meta)
        except ValueError:
            return Reply.error({"reason": "Track message size exceeded"})
        self.meta = meta
        return Reply.ok()
