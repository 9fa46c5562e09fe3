"""An incremental reader of client WebSocket frames (RFC 6455 §5), sans-I/O.

``WsReader.feed(data)`` takes whatever bytes arrived and returns the events they
complete, in order:

- ``(MESSAGE, opcode, data)``: a whole message (fragments joined); TEXT data is the
  decoded ``str``, BINARY data ``bytes``;
- ``(PING, 0, payload)``: answer with ``pong(payload)``;
- ``(CLOSE, code, reason)``: the client's close (code 1005 when it sent none); answer
  with a close frame and end the connection;
- ``(ERROR, code, reason)``: a protocol violation; close with ``code`` and end.

After CLOSE or ERROR the reader ignores everything (``done``). The rules: client
frames must be masked, RSV bits clear, opcodes known (1002); control frames at most
125 bytes and unfragmented (1002); continuation frames only inside a fragmented
message, no new data frame inside one (1002); a message over ``max_size`` bytes is
refused before its payload is buffered (1009); text and close reasons must be UTF-8
(1007); a close code must be one a peer may send (1002). Pongs are ignored.

The reader is small on purpose — an idle connection keeps one: three slots besides
the buffer, which is ``None`` between frames.
"""

from __future__ import annotations

import struct

from .close import CLOSE_INVALID, CLOSE_TOO_BIG
from .message import BINARY, TEXT

MESSAGE = 0
PING = 1
CLOSE = 2
ERROR = 3

CLOSE_PROTOCOL = 1002
CLOSE_NO_STATUS = 1005

CONTINUATION = 0x0
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

NO_LIMIT = 1 << 63
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")

Event = tuple[int, int, "bytes | str"]


def valid_close_code(code: int) -> bool:
    """A code a peer may put in a close frame (RFC 6455 §7.4; 1004-1006, 1015 are reserved)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def unmask(key: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key``, as one big-integer operation."""
    n = len(data)
    if not n:
        return b""
    keys = key * ((n >> 2) + 1)
    x = int.from_bytes(data, "little") ^ int.from_bytes(keys[:n], "little")
    return x.to_bytes(n, "little")


def pong(payload: bytes) -> bytes:
    """The server's (unmasked) pong frame for a ping's payload (at most 125 bytes)."""
    return bytes((0x80 | OP_PONG, len(payload))) + payload


class WsReader:
    """Client frames in, events out. ``max_size``: the largest message (bytes; 0: no limit,
    as aiohttp's ``max_msg_size=0``)."""

    __slots__ = ("buf", "done", "frags", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size if max_size > 0 else NO_LIMIT
        self.buf: bytes | None = None  # bytes not yet a whole frame
        self.frags: list[bytes] | None = None  # a fragmented message: opcode byte, parts...
        self.done = False

    def feed(self, data: bytes) -> list[Event]:
        if self.done:
            return []
        buf = self.buf
        if buf is not None:
            data = buf + data
            self.buf = None
        events: list[Event] = []
        pos = 0
        end = len(data)
        while pos < end:
            if end - pos < 2:
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            if b0 & 0x70:
                return self._error(events, CLOSE_PROTOCOL, "reserved bits set")
            if not b1 & 0x80:
                return self._error(events, CLOSE_PROTOCOL, "unmasked client frame")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            length = b1 & 0x7F
            head = 6
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    return self._error(events, CLOSE_PROTOCOL, "unknown opcode")
                if not fin:
                    return self._error(events, CLOSE_PROTOCOL, "fragmented control frame")
                if length > 125:
                    return self._error(events, CLOSE_PROTOCOL, "control frame too big")
            elif opcode > BINARY:
                return self._error(events, CLOSE_PROTOCOL, "unknown opcode")
            else:
                if length == 126:
                    if end - pos < 4:
                        break
                    length = _U16.unpack_from(data, pos + 2)[0]
                    head = 8
                elif length == 127:
                    if end - pos < 10:
                        break
                    length = _U64.unpack_from(data, pos + 2)[0]
                    head = 14
                frags = self.frags
                if opcode == CONTINUATION:
                    if frags is None:
                        return self._error(events, CLOSE_PROTOCOL, "continuation without start")
                    so_far = sum(len(part) for part in frags) - 1
                elif frags is not None:
                    return self._error(events, CLOSE_PROTOCOL, "data frame inside a message")
                else:
                    so_far = 0
                if so_far + length > self.max_size:
                    return self._error(events, CLOSE_TOO_BIG, "message too big")
            stop = pos + head + length
            if stop > end:
                break
            payload = unmask(data[pos + head - 4 : pos + head], data[pos + head : stop])
            pos = stop
            if opcode >= OP_CLOSE:
                if opcode == OP_PING:
                    events.append((PING, 0, payload))
                elif opcode == OP_CLOSE:
                    return self._close(events, payload)
                continue  # a pong: nothing to do
            if not fin:
                if opcode == CONTINUATION:
                    frags.append(payload)  # type: ignore[union-attr]
                else:
                    self.frags = [bytes((opcode,)), payload]
                continue
            if opcode == CONTINUATION:
                parts = self.frags
                self.frags = None
                assert parts is not None
                opcode = parts[0][0]
                parts[0] = b""
                parts.append(payload)
                payload = b"".join(parts)
            if opcode == TEXT:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    return self._error(events, CLOSE_INVALID, "invalid UTF-8 text")
                events.append((MESSAGE, TEXT, text))
            else:
                events.append((MESSAGE, BINARY, payload))
        if pos < end:
            self.buf = data[pos:] if pos else data
        return events

    def _close(self, events: list[Event], payload: bytes) -> list[Event]:
        self.done = True
        if not payload:
            events.append((CLOSE, CLOSE_NO_STATUS, ""))
            return events
        if len(payload) < 2:
            return self._error(events, CLOSE_PROTOCOL, "close payload of one byte")
        code = _U16.unpack_from(payload)[0]
        if not valid_close_code(code):
            return self._error(events, CLOSE_PROTOCOL, f"invalid close code {code}")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            return self._error(events, CLOSE_INVALID, "invalid UTF-8 close reason")
        events.append((CLOSE, code, reason))
        return events

    def _error(self, events: list[Event], code: int, reason: str) -> list[Event]:
        self.done = True
        self.buf = None
        self.frags = None
        events.append((ERROR, code, reason))
        return events
