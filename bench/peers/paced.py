"""The paced, stamped trigger of the Python peers: ``GET /fire?rate=R&duration=D``.

The same shape as roost's bench channel (bench/roost_bench/channel.py): R messages a
second for D seconds, the messages due at each 1 ms tick sent together, each payload
stamped with its send time in µs since the epoch (16 digits), so the bench can read
every message's latency out of the bytes its clients receive.
"""

import asyncio
import time

BODY = "hello world, from roost"
TICK = 0.001


def stamped() -> dict:
    return {"ts": time.time_ns() // 1000, "user": "bench", "body": BODY}


async def pace(rate: float, duration: float, send) -> int:
    """Await ``send(payload)`` for each message, on the loop clock; return how many."""
    total = round(rate * duration)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent = 0
    while sent < total:
        due = min(total, int((loop.time() - t0) * rate) + 1) - sent
        for _ in range(due):
            await send(stamped())
        sent += max(due, 0)
        await asyncio.sleep(TICK)
    return sent
