"""The ``workers-fanout`` publisher: roost envelopes straight into Redis, pipelined.

What ``roost.publish`` sends (one PUBLISH of an encoded :class:`~roost.pubsub.Envelope`
on the topic's channel), from a process that is not a node, so every worker of the
group receives every message from Redis and the publishing costs the server nothing.
Driven over stdin/stdout: ``pub M`` publishes M messages as fast as Redis takes them
(batches of 100 in one round trip); ``pace M R`` publishes M at R a second, paced as the
bench channel paces a node (the messages due each millisecond in one round trip). Each
answers ``{"sent", "t0", "t1"}`` (wall clock).

Run: ``python -m roost_bench.workerpub URL TOPIC``; it prints ``ready``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import redis.asyncio as aioredis

from roost.brokers.redis import codec
from roost.brokers.redis.keys import Keys
from roost.protocol import Encoded
from roost.pubsub import Envelope

from .channel import pace

BATCH = 100
NODE = "benchpub"
EVENT = "new:msg"
PAYLOAD = {"user": "al", "body": "hello world, from roost", "id": "018c2a"}


async def main(url: str, topic: str) -> None:
    r = aioredis.Redis.from_url(url)
    channel = Keys("roost", "chat").topic_channel(topic)
    payload = Encoded.of(PAYLOAD)
    seq = 0
    await r.ping()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    try:
        while line := await reader.readline():
            cmd, *rest = line.split()
            if cmd not in (b"pub", b"pace"):
                break
            count, sent = int(rest[0]), 0

            async def send(n: int) -> None:
                nonlocal seq
                pipe = r.pipeline(transaction=False)
                for _ in range(n):
                    seq += 1
                    env = Envelope(NODE, seq, topic, EVENT, payload)
                    pipe.publish(channel, codec.encode(env, seq, int(time.time() * 1000)))
                await pipe.execute()

            t0 = time.time()
            if cmd == b"pace":
                rate = float(rest[1])
                sent = await pace(rate, count / rate, send)
            while sent < count:
                await send(min(BATCH, count - sent))
                sent += min(BATCH, count - sent)
            print(orjson.dumps({"sent": sent, "t0": t0, "t1": time.time()}).decode(), flush=True)
    finally:
        await r.aclose()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(sys.argv[1], sys.argv[2]))
