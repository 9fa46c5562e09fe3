"""Validation of what chat users send: room names, user names, message bodies."""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..pubsub import Position

ROOM_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_NAME = 32
MAX_BODY = 2000  # characters
# ... and bytes as stored (orjson's encoding): any 2,000 printable characters fit (at
# most 4 bytes each in UTF-8), control characters (6-byte escapes each) do not.
MAX_BODY_BYTES = 8192


class Invalid(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def room_name(topic: str) -> str:
    name = topic.partition(":")[2]
    if not ROOM_RE.fullmatch(name):
        raise Invalid("invalid room")
    return name


def user_name(value: Any) -> str | None:
    """A trimmed name of 1-32 characters; None when missing or blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("invalid user")
    name = value.strip()
    if not name:
        return None
    if len(name) > MAX_NAME:
        raise Invalid("user name too long")
    return name


def body(payload: Any) -> str:
    if not isinstance(payload, dict):
        raise Invalid("payload must be an object")
    text = payload.get("body")
    if text is None:
        raise Invalid("empty body")
    if not isinstance(text, str):
        raise Invalid("body must be a string")
    text = text.strip()
    if not text:
        raise Invalid("empty body")
    if len(text) > MAX_BODY or len(orjson.dumps(text)) > MAX_BODY_BYTES:
        raise Invalid("body too long")
    return text


def since(value: Any) -> Position | None:
    """``{"offset": N, "epoch": E}`` from a rejoining client, or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid("invalid since")
    offset, epoch = value.get("offset"), value.get("epoch")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise Invalid("invalid since")
    if not isinstance(epoch, str) or not epoch or len(epoch) > 64:
        raise Invalid("invalid since")
    return Position(offset, epoch)
