"""Phoenix's binary frame formats (V2 serializer, ArrayBuffer payloads).

Every length is one byte, so each string field is at most 255 bytes of UTF-8.

    client→server push       0 | join_ref, ref, topic, event sizes | strings | payload
    server→client push       0 | join_ref, topic, event sizes      | strings | payload
    server→client reply      1 | join_ref, ref, topic, status sizes| strings | payload
    server→client broadcast  2 | topic, event sizes                | strings | payload
"""

from __future__ import annotations

from .errors import ProtocolError
from .message import PHX_REPLY, Message

PUSH = 0
REPLY = 1
BROADCAST = 2


def _field(value: str | None, name: str) -> bytes:
    raw = (value or "").encode()
    if len(raw) > 255:
        raise ProtocolError(f"{name} is longer than 255 bytes, too long for a binary frame")
    return raw


def _pack(kind: int, fields: list[bytes], payload: bytes) -> bytes:
    header = bytes([kind, *(len(f) for f in fields)])
    return b"".join((header, *fields, payload))


def _unpack(data: bytes, count: int) -> tuple[list[str], bytes]:
    """Split ``count`` length-prefixed UTF-8 fields (after the kind byte) from the payload."""
    head = 1 + count
    if len(data) < head:
        raise ProtocolError("binary frame shorter than its header")
    sizes = data[1:head]
    end = head + sum(sizes)
    if end > len(data):
        raise ProtocolError("binary frame field lengths run past its end")
    fields: list[str] = []
    pos = head
    for size in sizes:
        try:
            fields.append(data[pos : pos + size].decode())
        except UnicodeDecodeError:
            raise ProtocolError("binary frame field is not UTF-8") from None
        pos += size
    return fields, data[end:]


def _opt(value: str) -> str | None:
    return value or None


# -- server side -------------------------------------------------------------------------


def decode_push(data: bytes) -> Message:
    """Decode a client→server binary push; the payload stays ``bytes``."""
    if not data:
        raise ProtocolError("empty binary frame")
    if data[0] != PUSH:
        raise ProtocolError(f"unknown binary frame kind {data[0]}")
    (join_ref, ref, topic, event), payload = _unpack(data, 4)
    if not topic or not event:
        raise ProtocolError("binary frame without topic or event")
    return Message(_opt(join_ref), _opt(ref), topic, event, payload)


def encode_push(join_ref: str | None, topic: str, event: str, payload: bytes) -> bytes:
    fields = [_field(join_ref, "join_ref"), _field(topic, "topic"), _field(event, "event")]
    return _pack(PUSH, fields, payload)


def encode_reply(
    join_ref: str | None, ref: str | None, topic: str, status: str, payload: bytes
) -> bytes:
    fields = [
        _field(join_ref, "join_ref"),
        _field(ref, "ref"),
        _field(topic, "topic"),
        _field(status, "status"),
    ]
    return _pack(REPLY, fields, payload)


def encode_broadcast(topic: str, event: str, payload: bytes) -> bytes:
    return _pack(BROADCAST, [_field(topic, "topic"), _field(event, "event")], payload)


# -- client side (roost.client, tests) ---------------------------------------------------


def encode_client_push(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: bytes
) -> bytes:
    fields = [
        _field(join_ref, "join_ref"),
        _field(ref, "ref"),
        _field(topic, "topic"),
        _field(event, "event"),
    ]
    return _pack(PUSH, fields, payload)


def decode_server(data: bytes) -> Message:
    """Decode any server→client binary frame; a reply becomes a ``phx_reply`` Message."""
    if not data:
        raise ProtocolError("empty binary frame")
    kind = data[0]
    if kind == PUSH:
        (join_ref, topic, event), payload = _unpack(data, 3)
        return Message(_opt(join_ref), None, topic, event, payload)
    if kind == REPLY:
        (join_ref, ref, topic, status), payload = _unpack(data, 4)
        return Message(
            _opt(join_ref), _opt(ref), topic, PHX_REPLY, {"status": status, "response": payload}
        )
    if kind == BROADCAST:
        (topic, event), payload = _unpack(data, 2)
        return Message(None, None, topic, event, payload)
    raise ProtocolError(f"unknown binary frame kind {kind}")
