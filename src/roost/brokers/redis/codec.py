"""The Redis envelope: msgpack, versioned, payload carried as already-encoded bytes.

Wire layout (a msgpack array, version 1):

    [1, node, seq, topic, event, payload, binary, exclude, ts_ms]
    [2, node, seq, topic, event, payload, binary, exclude, ts_ms, offset, epoch]

Version 2 is a broadcast kept in history, packed by the history Lua script.

``payload`` is the JSON (or raw binary) bytes exactly as subscribers will receive
them, so a receiving node forwards them without parsing. ``seq`` is the origin
node's sequence number for the channel the envelope travels on (one counter per
topic in ``topic`` mode, one for all in ``global`` mode): a receiver that sees it
jump has missed messages. ``ts_ms`` is the origin's wall clock, for delivery lag.
"""

from __future__ import annotations

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
class Wire:
    """An envelope as it travels, with the fields only the broker needs."""

    envelope: Envelope
    ts_ms: int


def encode(env: Envelope, seq: int, ts_ms: int) -> bytes:
    data: bytes = _packb(
        [
            VERSION,
            env.node,
            seq,
            env.topic,
            env.event,
            env.payload.data,
            env.payload.binary,
            env.exclude,
            ts_ms,
        ],
        use_bin_type=True,
    )
    return data


def decode(data: bytes) -> Wire:
    try:
        fields = _unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise EnvelopeError(f"not msgpack: {exc}") from None
    if not isinstance(fields, list) or not fields:
        raise EnvelopeError("envelope is not a msgpack array")
    offset: Any = None
    epoch: Any = None
    if fields[0] == VERSION and len(fields) == 9:
        _, node, seq, topic, event, payload, binary, exclude, ts_ms = fields
    elif fields[0] == STORED and len(fields) == 11:
        _, node, seq, topic, event, payload, binary, exclude, ts_ms, offset, epoch = fields
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
    env = Envelope(node, seq, topic, event, Encoded(payload, binary), exclude, offset, epoch)
    return Wire(env, ts_ms)
