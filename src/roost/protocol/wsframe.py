"""Server-side WebSocket frame headers (RFC 6455 §5.2), built once and shared.

Server frames are never masked, so the bytes of a frame are the same for every
receiver: the fastlane builds a frame once and writes it to every subscriber.
"""

from __future__ import annotations

import struct

from .message import Frame

_H2 = struct.Struct("!BB")
_H4 = struct.Struct("!BBH")
_H10 = struct.Struct("!BBQ")


def header(opcode: int, length: int) -> bytes:
    """FIN + opcode, unmasked length (7, 16 or 64 bits)."""
    first = 0x80 | opcode
    if length < 126:
        return _H2.pack(first, length)
    if length < 65536:
        return _H4.pack(first, 126, length)
    return _H10.pack(first, 127, length)


def ws_bytes(frame: Frame) -> bytes:
    """The complete WebSocket frame for a message."""
    return header(frame.opcode, len(frame.data)) + frame.data
