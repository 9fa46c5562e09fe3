"""The output side of one connection, as channels and the fastlane see it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..protocol import Encoded, Frame, Serializer


class WireKind:
    """A serializer plus a framing (WebSocket, long-poll): one per kind of connection.

    Connections of the same kind receive byte-identical broadcasts, so the fastlane
    encodes each broadcast once per kind in use and shares the bytes.
    """

    __slots__ = ("name", "pack", "serializer", "stream", "write_all")

    def __init__(
        self,
        name: str,
        serializer: Serializer,
        pack: Callable[[Frame], bytes],
        *,
        stream: bool = False,
        write_all: Callable[[Sequence[Any], bytes], int] | None = None,
    ) -> None:
        self.name = name
        self.serializer = serializer
        self.pack = pack
        #: True when packed frames may be joined into one write (a byte stream such as
        #: a WebSocket); False when each write is one message (long-poll).
        self.stream = stream
        #: Writes the same bytes to many wires of this kind in one loop (the fan-out's
        #: hot path); None: the fastlane calls each wire's ``write``.
        self.write_all = write_all

    def broadcast(self, topic: str, event: str, payload: Encoded) -> bytes | None:
        frame = self.serializer.broadcast(topic, event, payload)
        return None if frame is None else self.pack(frame)

    def __repr__(self) -> str:
        return f"WireKind({self.name})"


class Wire(Protocol):
    """Where a connection's bytes go. ``write`` never blocks and never raises."""

    kind: WireKind

    def write(self, data: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class Subscriber(Protocol):
    """What the registry holds: a joined channel, seen from the fastlane."""

    wire: Wire

    @property
    def intercept(self) -> frozenset[str]: ...

    def handle_out(self, event: str, payload: Encoded) -> None: ...

    def lost(self) -> None:
        """This node lost the topic's continuity (messages gone from the history before
        they could be delivered): the subscriber was removed and must end (a channel
        crashes with ``phx_error``; its client rejoins and recovers)."""
        ...
