"""The WebSocket wire: pre-built frames written straight to the connection's transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..channels.endpoint import EndpointStats
from ..protocol import V1, V2, ws_bytes
from ..protocol.close import CLOSE_SLOW_CONSUMER, close_frame
from ..pubsub import WireKind

log = logging.getLogger("roost.wire")

ABORT_AFTER = 5.0


class Flusher:
    """Ends a "turn" of the event loop for every wire of a server.

    The first frame a wire gets in a turn is written at once (one broadcast at a time
    costs what a bare ``transport.write`` costs). Frames after it in the same turn — a
    reply and a broadcast, broadcasts to several of a socket's topics — are held and
    written together, one ``transport.write`` (one syscall), when the turn ends. (A
    burst from Redis on one topic arrives already joined: see ``fastlane_run``.)
    """

    __slots__ = ("dirty", "scheduled", "turn")

    def __init__(self) -> None:
        self.dirty: list[WsWire] = []
        self.scheduled = False
        self.turn = object()

    def schedule(self) -> None:
        self.scheduled = True
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        self.turn = object()
        dirty, self.dirty = self.dirty, []
        for wire in dirty:  # once per wire that got more than one frame: kept flat
            pending = wire.pending
            wire.pending = None
            if pending is None or wire.closed:
                continue
            transport = wire.transport
            try:
                if transport.get_write_buffer_size() > wire.max_buffer:
                    wire._slow()
                    continue
                transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
            except Exception as exc:  # this connection is gone; the next wire still gets its share
                wire._failed(exc)


class WsWire:
    """Writes whole WebSocket frames to an asyncio transport, never blocking.

    Frames after the first in one event-loop turn are joined and sent when the turn
    ends (see Flusher). A client that stops reading lets the transport's buffer grow;
    past ``max_buffer`` bytes it is sent a 1013 close and, if it still does not go,
    aborted — the other subscribers never wait for it and the node's memory stays
    bounded.

    Writing never raises. uvloop's ``transport.write`` raises on a connection the peer
    has reset (``RuntimeError`` once the handle is closed, ``ConnectionResetError`` on
    the write that finds the reset); such a wire is marked closed at once (skipped by
    every later write) and its transport aborted, which ends the connection's handler
    and so unsubscribes its channels (see ``_failed``).
    """

    __slots__ = (
        "closed",
        "flusher",
        "kind",
        "max_buffer",
        "pending",
        "stats",
        "transport",
        "turn",
    )

    def __init__(
        self,
        kind: WireKind,
        transport: asyncio.Transport,
        max_buffer: int,
        stats: EndpointStats | None = None,
        flusher: Flusher | None = None,
    ) -> None:
        self.kind = kind
        self.transport = transport
        self.max_buffer = max_buffer
        self.stats = stats
        self.flusher = flusher if flusher is not None else Flusher()
        self.pending: list[bytes] | None = None
        self.turn: object = None
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        flusher = self.flusher
        if self.turn is flusher.turn:  # not the first frame this turn: hold it
            self._hold(data)
            return
        self.turn = flusher.turn
        if not flusher.scheduled:
            flusher.schedule()
        transport = self.transport
        try:
            if transport.get_write_buffer_size() > self.max_buffer:
                self._slow()
                return
            transport.write(data)
        except Exception as exc:
            self._failed(exc)

    def _hold(self, data: bytes) -> None:
        """Keep a frame for the end of this turn (the Flusher writes them joined)."""
        pending = self.pending
        if pending is None:
            self.pending = [data]
            self.flusher.dirty.append(self)
        else:
            pending.append(data)

    def _slow(self) -> None:
        if self.stats is not None:
            self.stats.slow_consumers += 1
        log.warning("slow consumer disconnected buffer=%d", self.transport.get_write_buffer_size())
        self.close(CLOSE_SLOW_CONSUMER, "slow consumer")  # (aborted in ABORT_AFTER at most)

    def _abort(self) -> None:
        # close() waits for the buffer to flush; a client that never reads would keep
        # it forever, so drop the connection and its buffer.
        try:
            self.transport.abort()
        except Exception:  # already gone: nothing left to drop
            log.debug("abort failed", exc_info=True)

    def _failed(self, exc: Exception) -> None:
        """A write raised: the connection is gone. Never write to it again, and drop it.

        Called from the fan-out loops, so it must not raise either. The abort makes the
        connection's handler end (``connection_lost``), which closes its Socket and so
        unsubscribes its channels: the wire leaves every topic's plan.
        """
        self.closed = True
        self.pending = None
        log.info("write failed, connection dropped: %r", exc)
        self._abort()

    def close(self, code: int, reason: str) -> None:
        """Send what is pending, a close frame, and stop writing; the handler then ends.

        The transport closes once its buffer is written out; a peer that takes nothing
        (gone without a FIN, or not reading) would keep it open, its Socket subscribed and
        listed in presence, until TCP gives up (many minutes): so if bytes are still
        waiting here, the connection is aborted ``ABORT_AFTER`` seconds later."""
        if self.closed:
            return
        self.closed = True
        pending, self.pending = self.pending, None
        transport = self.transport
        try:
            if not transport.is_closing():
                if pending is not None and transport.get_write_buffer_size() <= self.max_buffer:
                    transport.write(b"".join(pending))
                transport.write(close_frame(code, reason))
                transport.close()
            if transport.get_write_buffer_size():
                asyncio.get_running_loop().call_later(ABORT_AFTER, self._abort)
        except Exception as exc:
            self._failed(exc)

    def give_up(self, code: int, reason: str) -> None:
        """Close a peer that went silent (the idle timeout): as ``close``, but when it has
        not even taken what was already written (bytes still waiting in this process: the
        kernel's buffer is full and unacknowledged), drop the connection now. Nothing of
        it would reach the peer, the close frame last of all; a half-open client is so
        let go within the idle timeout whatever it was being sent."""
        self.close(code, reason)
        try:
            stuck = self.transport.get_write_buffer_size() > 0
        except Exception:  # already gone
            return
        if stuck:
            self._abort()


def write_all(wires: Sequence[WsWire], data: bytes) -> int:
    """``wire.write(data)`` for every wire, in one loop: the fan-out's hot path.

    The same rules as ``WsWire.write`` (first frame of the turn at once, later ones held
    for the Flusher, slow consumers cut off, a write that raises drops only that
    connection), without a method call per socket. The wires of one server share its
    Flusher; the first wire's is used for all.
    """
    if not wires:
        return 0
    flusher = wires[0].flusher
    turn = flusher.turn
    if not flusher.scheduled:
        flusher.schedule()
    for wire in wires:
        if wire.closed:
            continue
        if wire.turn is turn:
            wire._hold(data)
            continue
        wire.turn = turn
        transport = wire.transport
        try:  # (free in Python 3.11+ unless something raises)
            if transport.get_write_buffer_size() > wire.max_buffer:
                wire._slow()
                continue
            transport.write(data)
        except Exception as exc:  # that connection is gone; the loop goes on
            wire._failed(exc)
    return len(wires)


WS_V1 = WireKind("ws/v1", V1, ws_bytes, stream=True, write_all=write_all)
WS_V2 = WireKind("ws/v2", V2, ws_bytes, stream=True, write_all=write_all)
WS_KINDS = {V1.vsn: WS_V1, V2.vsn: WS_V2}
