"""The Redis envelope: msgpack, versioned, payload carried as already-encoded bytes.

Wire layout (a msgpack array, version 1):

    [1, node, seq, topic, event, payload, binary, exclude, ts_ms]
    [2, node, seq, topic, event, payload, binary, exclude, ts_ms, offset, epoch]

Version 2 is a broadcast kept in history, packed by the history Lua script. With a
signing key, each envelope carries one more field: an HMAC (``sign``).

``payload`` is the JSON (or raw binary) bytes exactly as subscribers will receive
them, so a receiving node forwards them without parsing. ``seq`` is the origin
node's sequence number for the channel the envelope travels on (one counter per
topic in ``topic`` mode, one for all in ``global`` mode): a receiver that sees it
jump has missed messages. ``ts_ms`` is the origin's wall clock, for delivery lag.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from ...protocol import Encoded
from ...pubsub import Envelope

VERSION = 1
STORED = 2  # written by the history Lua script: the 9 fields, then offset and epoch
_packb = msgpack.packb
_unpackb = msgpack.unpackb


class EnvelopeError(ValueError):
    """Bytes on a roost channel that are not an envelope this version understands."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """An envelope as it travelled, with the fields only the broker needs (time, MAC)."""

    envelope: Envelope
    ts_ms: int
    mac: str | None = None


def digest(key: bytes, parts: Iterable[bytes]) -> str:
    """HMAC-SHA256 (hex) over ``parts``, each prefixed with its length (unambiguous)."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(4, "big"))
        mac.update(part)
    return mac.hexdigest()


def subkey(key: bytes, purpose: str) -> bytes:
    """A key derived from the signing key for one other use (presence entries): a MAC
    made for one kind of data can never pass as one of another."""
    return hmac.new(key, b"roost subkey: " + purpose.encode(), hashlib.sha256).digest()


def sign(key: bytes, node: str, topic: str, event: str, payload: bytes, ts_ms: int) -> str:
    """HMAC-SHA256 (hex) over the origin node, topic, event, payload and time.

    For stored messages ``payload`` is the one *before* the offset was spliced in.
    """
    parts = (node.encode(), topic.encode(), event.encode(), payload, str(ts_ms).encode())
    return digest(key, parts)


def unsplice(payload: bytes, offset: int) -> bytes:
    """The payload as signed: without the ``"offset"`` history added."""
    tail = b',"offset":%d}' % offset
    if payload.endswith(tail):
        return payload[: -len(tail)] + b"}"
    if payload == b'{"offset":%d}' % offset:
        return b"{}"
    return payload


def verify(key: bytes, wire: Decoded) -> bool:
    env = wire.envelope
    if wire.mac is None:
        return False
    payload = env.payload.data
    if env.offset is not None:
        payload = unsplice(payload, env.offset)
    want = sign(key, env.node, env.topic, env.event, payload, wire.ts_ms)
    return hmac.compare_digest(want, wire.mac)


def encode(env: Envelope, seq: int, ts_ms: int, mac: str | None = None) -> bytes:
    fields: list[Any] = [
        VERSION,
        env.node,
        seq,
        env.topic,
        env.event,
        env.payload.data,
        env.payload.binary,
        env.exclude,
        ts_ms,
    ]
    if mac is not None:
        fields.append(mac)
    data: bytes = _packb(fields, use_bin_type=True)
    return data


def decode(data: bytes) -> Decoded:
    try:
        fields = _unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise EnvelopeError(f"not msgpack: {exc}") from None
    if not isinstance(fields, list) or not fields:
        raise EnvelopeError("envelope is not a msgpack array")
    offset: Any = None
    epoch: Any = None
    mac: Any = None
    if fields[0] == VERSION and len(fields) in (9, 10):
        _, node, seq, topic, event, payload, binary, exclude, ts_ms = fields[:9]
        mac = fields[9] if len(fields) == 10 else None
    elif fields[0] == STORED and len(fields) in (11, 12):
        _, node, seq, topic, event, payload, binary, exclude, ts_ms, offset, epoch = fields[:11]
        mac = (fields[11] or None) if len(fields) == 12 else None
        if isinstance(payload, str):  # Lua's cmsgpack packs strings as str
            payload = payload.encode()
        exclude = exclude or None
        if not isinstance(offset, int) or not isinstance(epoch, str):
            raise EnvelopeError("stored envelope without offset/epoch")
    elif fields[0] in (VERSION, STORED):
        raise EnvelopeError("envelope has the wrong number of fields")
    else:
        raise EnvelopeError(f"unknown envelope version {fields[0]!r}")
    if not (
        isinstance(node, str)
        and isinstance(seq, int)
        and isinstance(topic, str)
        and isinstance(event, str)
        and isinstance(payload, bytes)
        and isinstance(binary, bool)
        and (exclude is None or isinstance(exclude, str))
        and isinstance(ts_ms, int)
    ):
        raise EnvelopeError("envelope field of the wrong type")
    if mac is not None and not isinstance(mac, str):
        raise EnvelopeError("envelope signature of the wrong type")
    env = Envelope(node, seq, topic, event, Encoded(payload, binary), exclude, offset, epoch)
    return Decoded(env, ts_ms, mac)
