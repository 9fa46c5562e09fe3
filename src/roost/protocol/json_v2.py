"""The V2 serializer: JSON array frames ``[join_ref, ref, topic, event, payload]``, and
binary frames for ``bytes`` payloads.

Refs are any JSON scalar, echoed as they came. A binary frame carries them as text:
a number or boolean as its JSON text (Phoenix's ``to_string``), null as empty."""

from __future__ import annotations

import orjson

from . import binary
from .errors import ProtocolError
from .message import BINARY, PHX_REPLY, TEXT, Encoded, Frame, Message, Ref, ref_text
from .serializer import check_fields

_dumps = orjson.dumps


def _reply_json(status: str, response: Encoded) -> bytes:
    return b'{"status":' + _dumps(status) + b',"response":' + response.data + b"}"


class V2Serializer:
    vsn = "2.0.0"

    # -- server side -----------------------------------------------------------------
    def decode(self, opcode: int, data: bytes | str) -> Message:
        if opcode == BINARY:
            if isinstance(data, str):
                data = data.encode()
            return binary.decode_push(data)
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProtocolError("frame is not valid JSON") from None
        if not isinstance(value, list):
            raise ProtocolError("V2 frame must be a JSON array")
        if len(value) != 5:
            raise ProtocolError(f"V2 frame must have 5 elements, got {len(value)}")
        join_ref, ref, topic, event, payload = value
        check_fields(value, join_ref, ref, topic, event)
        return Message(join_ref, ref, topic, event, payload)

    def push(
        self,
        join_ref: Ref,
        topic: str,
        event: str,
        payload: Encoded,
        ref: Ref = None,
    ) -> Frame:
        if payload.binary:
            return Frame(BINARY, binary.encode_push(ref_text(join_ref), topic, event, payload.data))
        return Frame(
            TEXT,
            b"["
            + _dumps(join_ref)
            + b","
            + _dumps(ref)
            + b","
            + _dumps(topic)
            + b","
            + _dumps(event)
            + b","
            + payload.data
            + b"]",
        )

    def reply(self, join_ref: Ref, ref: Ref, topic: str, status: str, response: Encoded) -> Frame:
        if response.binary:
            return Frame(
                BINARY,
                binary.encode_reply(
                    ref_text(join_ref), ref_text(ref), topic, status, response.data
                ),
            )
        return Frame(
            TEXT,
            b"["
            + _dumps(join_ref)
            + b","
            + _dumps(ref)
            + b","
            + _dumps(topic)
            + b',"phx_reply",'
            + _reply_json(status, response)
            + b"]",
        )

    def broadcast(self, topic: str, event: str, payload: Encoded) -> Frame:
        if payload.binary:
            return Frame(BINARY, binary.encode_broadcast(topic, event, payload.data))
        return Frame(
            TEXT,
            b"[null,null," + _dumps(topic) + b"," + _dumps(event) + b"," + payload.data + b"]",
        )

    # -- client side -----------------------------------------------------------------
    def encode_client(
        self, join_ref: Ref, ref: Ref, topic: str, event: str, payload: Encoded
    ) -> Frame:
        if payload.binary:
            return Frame(
                BINARY,
                binary.encode_client_push(
                    ref_text(join_ref), ref_text(ref), topic, event, payload.data
                ),
            )
        head = _dumps([join_ref, ref, topic, event])
        return Frame(TEXT, head[:-1] + b"," + payload.data + b"]")

    def decode_server(self, opcode: int, data: bytes | str) -> Message:
        if opcode == BINARY:
            if isinstance(data, str):
                data = data.encode()
            return binary.decode_server(data)
        msg = self.decode(TEXT, data)
        if msg.event == PHX_REPLY and not isinstance(msg.payload, dict):
            raise ProtocolError("phx_reply payload must be an object")
        return msg


V2 = V2Serializer()
