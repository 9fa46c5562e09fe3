"""Supabase Realtime's shapes on top of Phoenix Channels (no I/O).

Topics are ``realtime:<name>``; a Broadcast travels as the Phoenix event ``broadcast``
whose payload is the envelope ``{"type": "broadcast", "event", "payload"[, "meta"]}``.
"""

from __future__ import annotations

from typing import Any

PREFIX = "realtime:"
BROADCAST = "broadcast"
PRESENCE = "presence"
ACCESS_TOKEN = "access_token"
SYSTEM = "system"


def envelope(event: str, payload: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``broadcast`` payload realtime-js hands to ``on("broadcast", {event})``."""
    body: dict[str, Any] = {"type": BROADCAST, "event": event, "payload": payload}
    if meta:
        body["meta"] = meta
    return body
