"""The V1 serializer: JSON object frames ``{"topic","event","payload","ref"}``.

Spoken by phoenix.js 1.2 and by clients that send no ``vsn``. It has no binary payloads:
a binary WebSocket frame is read as JSON text, as Phoenix's V1 serializer does (it ignores
the opcode; phx-events sends its frames as binary). What it writes is always text.
"""

from __future__ import annotations

from typing import cast

import orjson

from .errors import ProtocolError
from .message import PHX_REPLY, TEXT, Encoded, Frame, Message, Ref
from .serializer import check_fields

_dumps = orjson.dumps


class V1Serializer:
    vsn = "1.0.0"

    def decode(self, opcode: int, data: bytes | str) -> Message:
        # Either opcode: a binary frame holds the same JSON (not UTF-8: "not valid JSON").
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProtocolError("frame is not valid JSON") from None
        if not isinstance(value, dict):
            raise ProtocolError("V1 frame must be a JSON object")
        topic, event, ref = value.get("topic"), value.get("event"), value.get("ref")
        join_ref = value.get("join_ref")
        check_fields(value, join_ref, ref, topic, event)
        if "payload" not in value:
            raise ProtocolError("V1 frame has no payload", join_ref=join_ref, ref=ref, topic=topic)
        return Message(join_ref, ref, cast(str, topic), cast(str, event), value["payload"])

    @staticmethod
    def _frame(topic: str, event: str, payload: bytes, ref: Ref) -> Frame:
        return Frame(
            TEXT,
            b'{"topic":'
            + _dumps(topic)
            + b',"event":'
            + _dumps(event)
            + b',"payload":'
            + payload
            + b',"ref":'
            + _dumps(ref)
            + b"}",
        )

    def push(
        self,
        join_ref: Ref,
        topic: str,
        event: str,
        payload: Encoded,
        ref: Ref = None,
    ) -> Frame | None:
        if payload.binary:
            return None
        return self._frame(topic, event, payload.data, ref)

    def reply(
        self, join_ref: Ref, ref: Ref, topic: str, status: str, response: Encoded
    ) -> Frame | None:
        if response.binary:
            return None
        body = b'{"status":' + _dumps(status) + b',"response":' + response.data + b"}"
        return self._frame(topic, PHX_REPLY, body, ref)

    def broadcast(self, topic: str, event: str, payload: Encoded) -> Frame | None:
        if payload.binary:
            return None
        return self._frame(topic, event, payload.data, None)

    def encode_client(
        self, join_ref: Ref, ref: Ref, topic: str, event: str, payload: Encoded
    ) -> Frame:
        if payload.binary:
            raise ProtocolError("binary payloads need the V2 serializer")
        head = _dumps({"topic": topic, "event": event, "ref": ref, "join_ref": join_ref})
        return Frame(TEXT, head[:-1] + b',"payload":' + payload.data + b"}")

    def decode_server(self, opcode: int, data: bytes | str) -> Message:
        msg = self.decode(opcode, data)
        if msg.event == PHX_REPLY and not isinstance(msg.payload, dict):
            raise ProtocolError("phx_reply payload must be an object")
        return msg


V1 = V1Serializer()
