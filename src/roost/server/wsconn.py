"""A lean WebSocket connection: after the 101, the transport's protocol is a WsConn.

Per connection: the transport and one ``__slots__`` object — the frame reader's state
(it *is* a WsReader), the Socket, its WsWire, and the idle wheel's bookkeeping. No task
while idle: messages go to a small queue and one task per connection runs only while
there are messages to handle (``Socket.handle`` is async and sees them in order).
Past ``MAX_QUEUED`` waiting messages the transport stops reading until they drain.

The write side is the WsWire, unchanged (the fan-out's hot path). Lifecycle:

| state    | event                           | next                                     |
|----------|---------------------------------|------------------------------------------|
| open     | message                         | queued; the handling task runs           |
| open     | ping                            | pong written                             |
| open     | client close                    | close 1000 sent, transport closed        |
| open     | protocol error                  | close with its code (1002/1007/1009)     |
| open     | handler raises CloseSocket / ✗  | close with its code / 1011               |
| any      | connection_lost                 | out of ``endpoint.sockets``, Socket closed |
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from ..channels import CloseSocket, Socket
from ..protocol.close import CLOSE_INTERNAL, CLOSE_NORMAL
from ..protocol.wsread import CLOSE, MESSAGE, PING, WsReader, pong

if TYPE_CHECKING:
    from .idle import IdleWheel
    from .wswire import WsWire

log = logging.getLogger("roost.websocket")

MAX_QUEUED = 32  # messages waiting for the handler before reading pauses
_TASKS: set[asyncio.Task[None]] = set()  # running handler tasks, referenced until done


def busy() -> set[asyncio.Task[None]]:
    """The lean connections' tasks still running: message handlers and Socket closes
    (the drain waits for them, so that a stopping node's users leave before it exits)."""
    return set(_TASKS)


_STOP = -1  # a queued close/error: (``_STOP``, (code, reason))
_PONG = -2  # a queued pong: (``_PONG``, payload)


async def handle_one(
    socket: Socket, wire: WsWire, opcode: int, data: Any, arrived: float | None = None
) -> bool:
    """Let ``socket`` handle one message; False when the connection must end.

    The one place both WebSocket paths (lean and aiohttp) turn a handler's exception
    into a close code: CloseSocket's own, anything else 1011.
    """
    try:
        await socket.handle(opcode, data, arrived)
    except CloseSocket as exc:
        log.info("closing socket code=%d: %s", exc.code, exc.reason)
        wire.close(exc.code, exc.reason[:100])
        return False
    except Exception:
        log.exception("socket handler failed")
        wire.close(CLOSE_INTERNAL, "internal error")
        return False
    return True


class WsConn(WsReader, asyncio.Protocol):
    __slots__ = ("last", "lost", "queue", "socket", "task", "tick", "wheel", "wire")

    def __init__(self, socket: Socket, wire: WsWire, wheel: IdleWheel, max_size: int) -> None:
        super().__init__(max_size)
        self.socket = socket
        self.wire = wire
        self.wheel = wheel
        # (opcode, data, arrival on socket.endpoint.clock): the push deadline counts from it
        self.queue: deque[tuple[int, Any, float]] | None = None
        self.task: asyncio.Task[None] | None = None
        self.lost = False
        self.last = 0.0
        self.tick = 0
        wheel.add(self)

    # -- reading -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        for kind, code, payload in self.feed(data):
            if kind == MESSAGE:
                self.last = self.wheel.loop.time()
                self._queue(code, payload)
            elif kind == PING:  # answered in order with the messages before it
                if self.queue is None:
                    self.wire.write(pong(payload))  # type: ignore[arg-type]
                else:
                    self._queue(_PONG, payload)
            else:
                self.last = self.wheel.loop.time()
                if kind == CLOSE:
                    code, payload = CLOSE_NORMAL, ""  # answered with 1000, as aiohttp does
                if self.queue is None:
                    self.wire.close(code, payload)  # type: ignore[arg-type]
                else:  # after the messages before it
                    self._queue(_STOP, (code, payload))

    def _queue(self, opcode: int, data: Any) -> None:
        queue = self.queue
        arrived = self.socket.endpoint.clock()
        if queue is None:
            queue = self.queue = deque()
            queue.append((opcode, data, arrived))
            task = asyncio.get_running_loop().create_task(self._run(queue))
            self.task = task
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)
            return
        queue.append((opcode, data, arrived))
        if len(queue) == MAX_QUEUED:
            self.wire.transport.pause_reading()

    async def _run(self, queue: deque[tuple[int, Any, float]]) -> None:
        socket, wire = self.socket, self.wire
        try:
            while queue and not wire.closed:
                opcode, data, arrived = queue.popleft()
                if len(queue) == MAX_QUEUED - 1 and not self.lost:
                    wire.transport.resume_reading()
                if opcode < 0:
                    if opcode == _PONG:
                        wire.write(pong(data))
                        continue
                    wire.close(*data)
                    break
                if not await handle_one(socket, wire, opcode, data, arrived):
                    self.done = True  # read nothing more
                    break
        finally:
            queue.clear()
            self.queue = None
            self.task = None
            if self.lost:
                await self._close_socket()

    # -- ending ------------------------------------------------------------------------
    def idle_close(self, code: int, reason: str) -> None:
        self.wire.give_up(code, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.done = True
        self.wire.closed = True
        self.wheel.remove(self)
        self.socket.endpoint.sockets.discard(self.socket)  # type: ignore[attr-defined]
        if self.task is None:  # else the handling task closes the Socket when it ends
            task = asyncio.get_running_loop().create_task(self._close_socket())
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)

    async def _close_socket(self) -> None:
        try:
            await self.socket.close()
        except Exception:
            log.exception("socket close failed")
