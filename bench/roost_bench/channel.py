"""``bench:*``: the server side of the benchmarks (served by :mod:`roost_bench.node`).

Subscribers join ``bench:<room>`` (nothing is broadcast on join). A push ``fire``
broadcasts through the node's PubSub (the same path the chat takes) in one of two modes:

- **count** ``{"topic", "event", "payload", "count"}``: ``count`` broadcasts as fast as
  the node goes, yielding to the event loop between broadcasts (with ``"seconds"``: stop
  after that long even if fewer were sent — a saturating load for a bounded time);
- **paced** ``{"topic", "event", "rate", "duration"}``: ``rate`` broadcasts per second
  for ``duration`` seconds, paced on the loop clock, the messages due at each tick
  sent in one batch so that high rates are reachable.

With ``"topics": [...]`` the broadcasts go round-robin over those topics instead of
``topic`` (message ``i`` into ``topics[i % len(topics)]``), so one push loads many rooms.
With ``"stamp": true`` each message's payload is :func:`stamped` with its send time
(wall clock, µs) and encoded once, as the chat encodes each message once; receivers
extract the stamp with :data:`STAMP_RE` without parsing JSON. The reply carries how
many were sent and the server-side time taken.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from roost.channels import Channel, Reply
from roost.protocol import Encoded

STAMP_BODY = "hello world, from roost"
# 16 digits: µs since the epoch until the year 2286, so every stamped frame of a run
# has the same size (counting clients divide bytes by it) and a match is never partial.
STAMP_RE = re.compile(rb'"ts":(\d{16})')
TICK = 0.001


def stamped(t_us: int) -> Encoded:
    """The payload of one timestamped message, encoded once."""
    return Encoded(orjson.dumps({"ts": t_us, "user": "bench", "body": STAMP_BODY}))


def now_us() -> int:
    return time.time_ns() // 1000


async def pace(rate: float, duration: float, send: Callable[[int], Awaitable[None]]) -> int:
    """Call ``send(n)`` once per tick with the ``n`` messages due; return the total sent.

    ``rate * duration`` messages in all, on the loop clock: if the loop falls behind,
    the next tick sends everything that became due meanwhile.
    """
    total = round(rate * duration)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent = 0
    while sent < total:
        due = min(total, int((loop.time() - t0) * rate) + 1) - sent
        if due > 0:
            await send(due)
            sent += due
        await asyncio.sleep(TICK)
    return sent


class BenchChannel(Channel):
    async def join(self, payload: Any) -> Any:
        return {"node": self.node}

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event != "fire" or not isinstance(payload, dict):
            return Reply.error({"reason": "unknown event"})
        topics = [str(t) for t in payload.get("topics") or [payload.get("topic", self.topic)]]
        rr = itertools.cycle(topics)
        ev = str(payload.get("event", "new:msg"))
        stamp = bool(payload.get("stamp", False))
        fixed = Encoded.of(payload.get("payload", {}))
        broadcast = self.socket.endpoint.pubsub.broadcast
        t0 = time.perf_counter()
        if "rate" in payload:

            async def send(n: int) -> None:
                for _ in range(n):
                    await broadcast(next(rr), ev, stamped(now_us()) if stamp else fixed)

            count = await pace(float(payload["rate"]), float(payload.get("duration", 1)), send)
        else:
            limit = int(payload.get("count", 1))
            until = t0 + float(payload.get("seconds", math.inf))
            count = 0
            while count < limit and time.perf_counter() < until:
                await broadcast(next(rr), ev, stamped(now_us()) if stamp else fixed)
                count += 1
                await asyncio.sleep(0)
        elapsed = time.perf_counter() - t0
        return Reply.ok({"elapsed": elapsed, "count": count, "sent": count})
