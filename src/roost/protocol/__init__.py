"""Sans-I/O Phoenix Channels protocol: serializers, frame formats, messages.

Pure functions over bytes: no asyncio, no sockets.
"""

from .errors import ProtocolError
from .json_v1 import V1
from .json_v2 import V2
from .message import (
    BINARY,
    EMPTY,
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    TEXT,
    Encoded,
    Frame,
    Message,
    Ref,
    same_ref,
)
from .serializer import Serializer
from .vsn import for_vsn
from .wsframe import ws_bytes

__all__ = [
    "BINARY",
    "EMPTY",
    "HEARTBEAT",
    "PHOENIX_TOPIC",
    "PHX_CLOSE",
    "PHX_ERROR",
    "PHX_JOIN",
    "PHX_LEAVE",
    "PHX_REPLY",
    "TEXT",
    "V1",
    "V2",
    "Encoded",
    "Frame",
    "Message",
    "ProtocolError",
    "Ref",
    "Serializer",
    "for_vsn",
    "same_ref",
    "ws_bytes",
]
