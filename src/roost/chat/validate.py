"""Validation of what chat users send: room names, user names, message bodies."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import orjson

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


# Characters that reorder or hide the text around them: bidi embeddings, overrides,
# isolates and marks. A name holding one could show as another name.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
SPACES = re.compile(r"\s+")


def user_name(value: Any) -> str | None:
    """A trimmed name of 1-32 characters; None when missing or blank.

    Control characters (newlines included) and bidi controls are refused: they would
    let a name display as another one.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("invalid user")
    name = value.strip()
    if not name:
        return None
    if len(name) > MAX_NAME:
        raise Invalid("user name too long")
    if any(ch in BIDI_CONTROLS or unicodedata.category(ch) == "Cc" for ch in name):
        raise Invalid("invalid user")
    return name


def name_key(name: str) -> str:
    """What a name is compared by: two names with one key are the same name to readers.

    NFKC (full-width and other compatibility forms become their plain letters), case
    folding, NFKC again (folding can denormalise), invisible format characters (zero
    width spaces and joiners, soft hyphens) dropped, runs of white space made one space,
    then trimmed. Look-alikes from other scripts (a Cyrillic "a", U+0430) are not folded: the
    verified mark, not the name, tells a token holder from a guest.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    visible = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")
    return SPACES.sub(" ", visible).strip()


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


KEY_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")


def message_key(payload: Any) -> str | None:
    """``new:msg``'s optional ``key``: the sender's idempotency key (roost.js sends a
    random one per message and the same one on a retry); 8 to 64 of ``[A-Za-z0-9_-]``."""
    value = payload.get("key") if isinstance(payload, dict) else None
    if value is None:
        return None
    if not isinstance(value, str) or KEY_RE.fullmatch(value) is None:
        raise Invalid("invalid key")
    return value
