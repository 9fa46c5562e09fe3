"""The serializer interface and the field checks shared by the JSON serializers.

The choice of serializer by the client's ``vsn`` lives in ``vsn.py``, which knows them all."""

from __future__ import annotations

from typing import Any, Protocol

from .errors import ProtocolError
from .message import REF_TYPES, Encoded, Frame, Message, Ref


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
        join_ref: Ref,
        topic: str,
        event: str,
        payload: Encoded,
        ref: Ref = None,
    ) -> Frame | None:
        """A server push; ``ref`` is set only for ``phx_close`` (Phoenix sends the join ref)."""
        ...

    def reply(
        self, join_ref: Ref, ref: Ref, topic: str, status: str, response: Encoded
    ) -> Frame | None: ...

    def broadcast(self, topic: str, event: str, payload: Encoded) -> Frame | None: ...

    def encode_client(
        self, join_ref: Ref, ref: Ref, topic: str, event: str, payload: Encoded
    ) -> Frame: ...

    def decode_server(self, opcode: int, data: bytes | str) -> Message: ...


_NOT_A_REF = "{} must be a string, number, boolean or null"


def is_ref(value: Any) -> bool:
    """A JSON scalar: what a client may use as a ref or join_ref (Phoenix echoes any)."""
    return value is None or isinstance(value, REF_TYPES)


def check_fields(obj: Any, join_ref: Any, ref: Any, topic: Any, event: Any) -> None:
    """Validate the types of a decoded message's fields (shared by V1 and V2).

    Refs may be any JSON scalar (string, number, boolean, null), echoed unchanged;
    an array or object is refused (no client sends one, and a ref is compared and
    echoed as one value)."""
    if (
        isinstance(topic, str)
        and topic
        and isinstance(event, str)
        and event
        and (join_ref is None or isinstance(join_ref, REF_TYPES))
        and (ref is None or isinstance(ref, REF_TYPES))
    ):
        return
    if not isinstance(topic, str) or not topic:
        reason = "topic must be a non-empty string"
    elif not isinstance(event, str) or not event:
        reason = "event must be a non-empty string"
    else:
        reason = _NOT_A_REF.format("join_ref" if not is_ref(join_ref) else "ref")
    raise ProtocolError(
        reason,
        join_ref=join_ref if is_ref(join_ref) else None,
        ref=ref if is_ref(ref) else None,
        topic=topic if isinstance(topic, str) else None,
    )
