"""The serializer interface and the field checks shared by the JSON serializers.

The choice of serializer by the client's ``vsn`` lives in ``vsn.py``, which knows them all."""

from __future__ import annotations

from typing import Any, Protocol

from .errors import ProtocolError
from .message import Encoded, Frame, Message


class Serializer(Protocol):
    """Turns bytes into Messages and Messages into Frames, both directions, no I/O.

    Server side: ``decode`` (client frames) and ``push``/``reply``/``broadcast``.
    Client side: ``encode_client`` and ``decode_server``. An encoder returns None
    when this serializer cannot carry the payload (binary over V1).
    """

    vsn: str

    def decode(self, opcode: int, data: bytes | str) -> Message: ...

    def push(
        self,
        join_ref: str | None,
        topic: str,
        event: str,
        payload: Encoded,
        ref: str | None = None,
    ) -> Frame | None:
        """A server push; ``ref`` is set only for ``phx_close`` (Phoenix sends the join ref)."""
        ...

    def reply(
        self, join_ref: str | None, ref: str | None, topic: str, status: str, response: Encoded
    ) -> Frame | None: ...

    def broadcast(self, topic: str, event: str, payload: Encoded) -> Frame | None: ...

    def encode_client(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Encoded
    ) -> Frame: ...

    def decode_server(self, opcode: int, data: bytes | str) -> Message: ...


def check_fields(obj: Any, join_ref: Any, ref: Any, topic: Any, event: Any) -> None:
    """Validate the types of a decoded message's fields (shared by V1 and V2)."""
    addr = {
        "join_ref": join_ref if isinstance(join_ref, str) else None,
        "ref": ref if isinstance(ref, str) else None,
        "topic": topic if isinstance(topic, str) else None,
    }
    if not isinstance(topic, str) or not topic:
        raise ProtocolError("topic must be a non-empty string", **addr)
    if not isinstance(event, str) or not event:
        raise ProtocolError("event must be a non-empty string", **addr)
    if join_ref is not None and not isinstance(join_ref, str):
        raise ProtocolError("join_ref must be a string or null", **addr)
    if ref is not None and not isinstance(ref, str):
        raise ProtocolError("ref must be a string or null", **addr)
