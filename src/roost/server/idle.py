"""Idle timeout for lean WebSocket connections: one coarse timing wheel per server.

A connection that sent no message for ``timeout`` seconds is closed with 1001 "idle
timeout" (``WsWire.give_up``: dropped at once if it has not even taken what was written,
as a client gone without a FIN has not).

Instead of a loop timer per connection (≈ 0.5 KB each on uvloop), every connection sits
in one bucket of a dict keyed by the tick its deadline falls in; one loop timer per
non-empty bucket. A message only stores the time it arrived (``last``);
when a bucket fires each connection in it is either closed or moved to the bucket of
its new deadline. So a connection costs a set entry, nothing walks all connections,
and at rest the loop wakes at most once a tick. A close happens up to one tick
(``timeout / 4``, at most 1 s) after the deadline.

``loop`` (anything with ``time()`` and ``call_at()``) is the running loop unless a
test passes its own clock. Both WebSocket paths (``wsconn.WsConn`` and the aiohttp
route's ``websocket.IdleTimer``) use the app's one wheel (``IDLE_KEY``).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

from aiohttp import web

from ..protocol.close import CLOSE_GOING_AWAY


class Idler(Protocol):
    """What the wheel needs of a connection: its last message time, its bucket, its wire."""

    last: float
    tick: int

    def idle_close(self, code: int, reason: str) -> None: ...


IDLE_KEY: web.AppKey[IdleWheel] = web.AppKey("idle_wheel")


class IdleWheel:
    __slots__ = ("_loop", "buckets", "step", "timeout")

    def __init__(self, timeout: float, loop: Any = None) -> None:
        self._loop = loop
        self.timeout = timeout
        self.step = min(1.0, timeout / 4) if timeout > 0 else 1.0
        self.buckets: dict[int, set[Any]] = {}

    @property
    def loop(self) -> Any:
        """The clock: the loop running when first asked (or the test's)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def add(self, conn: Idler) -> None:
        """Start watching ``conn`` from now (sets ``conn.last``)."""
        conn.last = self.loop.time()
        self._place(conn, conn.last + self.timeout)

    def _place(self, conn: Idler, deadline: float) -> None:
        tick = math.ceil(deadline / self.step)
        conn.tick = tick
        bucket = self.buckets.get(tick)
        if bucket is None:
            self.buckets[tick] = {conn}
            self.loop.call_at(tick * self.step, self._fire, tick)
        else:
            bucket.add(conn)

    def remove(self, conn: Idler) -> None:
        bucket = self.buckets.get(conn.tick)
        if bucket is not None:
            bucket.discard(conn)

    def _fire(self, tick: int) -> None:
        bucket = self.buckets.pop(tick, None)
        if not bucket:
            return
        now = self.loop.time()
        timeout = self.timeout
        for conn in bucket:
            deadline = conn.last + timeout
            if now >= deadline:
                conn.tick = 0
                conn.idle_close(CLOSE_GOING_AWAY, "idle timeout")
            else:
                self._place(conn, deadline)
