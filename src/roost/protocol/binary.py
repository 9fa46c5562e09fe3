"""Phoenix's binary frame formats (V2 serializer, ArrayBuffer payloads).

Every length is one byte, so each string field is at most 255 bytes of UTF-8.

    client→server push       0 | join_ref, ref, topic, event sizes | strings | payload
    server→client push       0 | join_ref, topic, event sizes      | strings | payload
    server→client reply      1 | join_ref, ref, topic, status sizes| strings | payload
    server→client broadcast  2 | topic, event sizes                | strings | payload

Supabase Realtime's V2 serializer (realtime-js 2.x, lib/serializer.ts) adds two kinds
for its ``broadcast`` event, whose user payload is JSON (encoding 1) or raw (0):

    client→server user-broadcast push  3 | join_ref, ref, topic, user_event, metadata
                                          sizes | encoding | strings | user payload
    server→client user-broadcast       4 | topic, user_event, metadata sizes | encoding
                                          | strings | user payload

``metadata`` is empty or a JSON object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ProtocolError
from .message import PHX_REPLY, Message

PUSH = 0
REPLY = 1
BROADCAST = 2
USER_BROADCAST_PUSH = 3
USER_BROADCAST = 4
#: the user payload's encoding in kinds 3 and 4
RAW, JSON = 0, 1
#: the event a user-broadcast push arrives as (Supabase Realtime's ``broadcast``)
USER_BROADCAST_EVENT = "broadcast"


@dataclass(frozen=True, slots=True)
class UserBroadcast:
    """The payload of a decoded user-broadcast push (kind 3): the user's event, its
    payload bytes as sent (JSON text when ``json``), and the metadata object."""

    event: str
    payload: bytes
    json: bool
    meta: dict[str, Any]

    def value(self) -> Any:
        """The user payload: the JSON value, or the bytes of a raw one."""
        return orjson.loads(self.payload) if self.json else self.payload


def _field(value: str | None, name: str) -> bytes:
    raw = (value or "").encode()
    if len(raw) > 255:
        raise ProtocolError(f"{name} is longer than 255 bytes, too long for a binary frame")
    return raw


def _pack(kind: int, fields: list[bytes], payload: bytes) -> bytes:
    header = bytes([kind, *(len(f) for f in fields)])
    return b"".join((header, *fields, payload))


def _unpack(data: bytes, count: int, extra: int = 0) -> tuple[list[str], bytes]:
    """Split ``count`` length-prefixed UTF-8 fields (after the kind byte and the size
    bytes, then ``extra`` header bytes) from the payload."""
    head = 1 + count + extra
    if len(data) < head:
        raise ProtocolError("binary frame shorter than its header")
    sizes = data[1 : 1 + count]
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
        if data[0] == USER_BROADCAST_PUSH:
            return decode_user_broadcast_push(data)
        raise ProtocolError(f"unknown binary frame kind {data[0]}")
    (join_ref, ref, topic, event), payload = _unpack(data, 4)
    if not topic or not event:
        raise ProtocolError("binary frame without topic or event")
    return Message(_opt(join_ref), _opt(ref), topic, event, payload)


def decode_user_broadcast_push(data: bytes) -> Message:
    """Kind 3 → a ``broadcast`` Message whose payload is a ``UserBroadcast``.

    A bad encoding byte, metadata or JSON payload is answered (error reply) when the
    header named the topic and ref; a frame too short for its header closes (1007).
    """
    (join_ref, ref, topic, event, meta_text), payload = _unpack(data, 5, extra=1)
    if not topic:
        raise ProtocolError("binary frame without topic")
    addr = {"join_ref": _opt(join_ref), "ref": _opt(ref), "topic": topic}
    encoding = data[6]
    if encoding not in (RAW, JSON):
        raise ProtocolError(f"unknown user payload encoding {encoding}", **addr)
    if not event:
        raise ProtocolError("user broadcast without an event", **addr)
    meta: Any = {}
    try:
        if meta_text:
            meta = orjson.loads(meta_text)
        if encoding == JSON:
            orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ProtocolError("user broadcast metadata or payload is not JSON", **addr) from None
    if not isinstance(meta, dict):
        raise ProtocolError("user broadcast metadata must be a JSON object", **addr)
    body = UserBroadcast(event, payload, encoding == JSON, meta)
    return Message(_opt(join_ref), _opt(ref), topic, USER_BROADCAST_EVENT, body)


def encode_user_broadcast(
    topic: str, event: str, payload: bytes, *, json: bool, meta: bytes = b""
) -> bytes:
    """Kind 4 (server → client); ``meta`` is empty or a JSON object's bytes."""
    if len(meta) > 255:
        raise ProtocolError("metadata is longer than 255 bytes, too long for a binary frame")
    fields = [_field(topic, "topic"), _field(event, "event"), meta]
    header = bytes([USER_BROADCAST, *(len(f) for f in fields), JSON if json else RAW])
    return b"".join((header, *fields, payload))


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
    if kind == USER_BROADCAST:
        # As realtime-js decodes it: a ``broadcast`` of {type, event, payload[, meta]}.
        (topic, event, meta_text), user = _unpack(data, 3, extra=1)
        encoding = data[4]
        try:
            body: dict[str, Any] = {
                "type": USER_BROADCAST_EVENT,
                "event": event,
                "payload": orjson.loads(user) if encoding == JSON else user,
            }
            if meta_text:
                body["meta"] = orjson.loads(meta_text)
        except orjson.JSONDecodeError:
            raise ProtocolError("user broadcast metadata or payload is not JSON") from None
        return Message(None, None, topic, USER_BROADCAST_EVENT, body)
    raise ProtocolError(f"unknown binary frame kind {kind}")
