"""Plain data: the message a client sends, the frame a server writes, an encoded payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded Phoenix message.

    ``payload`` is a JSON value, or ``bytes`` when the frame carried a binary payload.
    """

    join_ref: str | None
    ref: str | None
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
