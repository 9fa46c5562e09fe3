"""Plain data: the message a client sends, the frame a server writes, an encoded payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

# Reserved events and topics (phoenix.js: CHANNEL_EVENTS).
PHX_JOIN = "phx_join"
PHX_LEAVE = "phx_leave"
PHX_REPLY = "phx_reply"
PHX_CLOSE = "phx_close"
PHX_ERROR = "phx_error"
HEARTBEAT = "heartbeat"
PHOENIX_TOPIC = "phoenix"

TEXT = 0x1
BINARY = 0x2

Ref: TypeAlias = str | int | float | bool | None
"""A ``ref`` or ``join_ref``: any JSON scalar the client chose (phoenix.js sends strings,
other clients numbers). The server echoes it unchanged, as Phoenix does."""

REF_TYPES = (str, int, float)  # (bool is an int)


def same_ref(a: Ref, b: Ref) -> bool:
    """Phoenix's ``===`` on refs: equal and of one type (``1`` is not ``"1"``, ``1.0`` or
    ``true``; Python alone would say ``1 == 1.0 == True``)."""
    return a == b and type(a) is type(b)


def ref_text(ref: Ref) -> str | None:
    """A ref as binary frames carry it (Phoenix's ``to_string``): text unchanged, a number
    or boolean as its JSON text, null as None (an empty field)."""
    if ref is None or isinstance(ref, str):
        return ref
    return orjson.dumps(ref).decode()


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded Phoenix message.

    ``payload`` is a JSON value, or ``bytes`` when the frame carried a binary payload.
    """

    join_ref: Ref
    ref: Ref
    topic: str
    event: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Frame:
    """What goes on the wire: a WebSocket opcode (TEXT or BINARY) and the message bytes."""

    opcode: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Encoded:
    """A payload encoded once: JSON bytes, or raw bytes for a binary payload."""

    data: bytes
    binary: bool = False

    @classmethod
    def of(cls, value: Any) -> Encoded:
        """Encode a JSON value (or wrap ``bytes`` as a binary payload)."""
        if isinstance(value, Encoded):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return cls(bytes(value), True)
        return cls(orjson.dumps(value), False)

    def value(self) -> Any:
        """Decode back to a Python value (bytes for binary payloads)."""
        return self.data if self.binary else orjson.loads(self.data)


EMPTY = Encoded(b"{}")
