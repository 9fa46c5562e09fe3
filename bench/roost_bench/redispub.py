"""The baseline's publisher: bare redis-py (asyncio, hiredis), timestamped messages.

``python -m roost_bench.redispub URL CHANNEL --rate R --duration D`` publishes R
messages/s for D seconds, paced exactly as the bench channel paces a node (the
messages due at each tick go in one pipelined round trip); ``--count M`` publishes M
as fast as it can, pipelined in batches. Each message is the same stamped payload a
node broadcasts. Prints ``{"sent": N, "elapsed": S}`` as JSON when done.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
import redis.asyncio as aioredis

from .channel import now_us, pace, stamped

BATCH = 100


async def main(url: str, channel: str, rate: float, duration: float, count: int) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        await r.ping()

        async def send(n: int) -> None:
            pipe = r.pipeline(transaction=False)
            for _ in range(n):
                pipe.publish(channel, stamped(now_us()).data)
            await pipe.execute()

        t0 = time.perf_counter()
        if count:
            sent = 0
            while sent < count:
                n = min(BATCH, count - sent)
                await send(n)
                sent += n
        else:
            sent = await pace(rate, duration, send)
        elapsed = time.perf_counter() - t0
    finally:
        await r.aclose()
    sys.stdout.write(orjson.dumps({"sent": sent, "elapsed": elapsed}).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("channel")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--count", type=int, default=0)
    a = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(a.url, a.channel, a.rate, a.duration, a.count))
