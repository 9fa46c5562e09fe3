"""WebSocket close codes roost sends (RFC 6455 §7.4), and the close frame itself.

The one home of these numbers: the socket rules, the WebSocket wire and the
long-poll transport all take them from here (README lists what each one means).
"""

from __future__ import annotations

import struct

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # idle timeout, server stopping, long-poll session expired
CLOSE_INVALID = 1007  # a frame that cannot be answered
CLOSE_POLICY = 1008  # rate-limit abuse
CLOSE_TOO_BIG = 1009  # a frame over max_frame
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012  # graceful drain: the client reconnects to another node
CLOSE_TRY_AGAIN = 1013  # "try again later": sent to a slow consumer
CLOSE_SLOW_CONSUMER = CLOSE_TRY_AGAIN

MAX_REASON = 123  # a control frame's payload is at most 125 bytes: 2 of code, 123 of reason


def close_frame(code: int, reason: str) -> bytes:
    """A complete, unmasked server close frame: the code, then the reason (cut to fit)."""
    body = struct.pack("!H", code) + reason.encode()[:MAX_REASON]
    return bytes([0x88, len(body)]) + body


__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_INVALID",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_RESTART",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN",
    "close_frame",
]
