"""Envelope integrity: with a signing key, forged envelopes in Redis are dropped and counted."""

from __future__ import annotations

import msgpack
import redis.asyncio as aioredis

from roost.brokers.redis import RedisBroker
from roost.protocol import Encoded
from roost.pubsub import Envelope, HistoryPolicy, Position

from support import RedisProcess, until

KEY = b"s3cret-signing-key"


async def test_forged_and_wrong_key_envelopes_are_dropped(redis_server: RedisProcess) -> None:
    sender = RedisBroker(redis_server.url, mode="global", signing_key=KEY)
    impostor = RedisBroker(redis_server.url, mode="global", signing_key=b"not the key")
    receiver = RedisBroker(redis_server.url, mode="global", signing_key=KEY)
    got: list[Envelope] = []
    await sender.start("s", lambda e: None)
    await impostor.start("i", lambda e: None)
    await receiver.start("r", got.extend)
    try:
        # Straight into Redis, well-formed but unsigned, as a process without the key would.
        forged = msgpack.packb(
            [1, "s", 99, "rooms:x", "new:msg", b'{"body":"evil"}', False, None, 1]
        )
        r = aioredis.Redis.from_url(redis_server.url)
        await r.publish("roost:chat", forged)
        await r.aclose()
        await impostor.publish(Envelope("i", 0, "rooms:x", "new:msg", Encoded.of({"b": "fake"})))
        await sender.publish(Envelope("s", 0, "rooms:x", "new:msg", Encoded.of({"b": "real"})))
        await until(lambda: len(got) == 1 and receiver.stats.rejected == 2)
        assert got[0].payload.value() == {"b": "real"}
    finally:
        for b in (sender, impostor, receiver):
            await b.stop()


async def test_signed_history_recovers_and_rejects_tampering(redis_server: RedisProcess) -> None:
    a = RedisBroker(redis_server.url, signing_key=KEY)
    b = RedisBroker(redis_server.url, signing_key=KEY)
    got: list[Envelope] = []
    await a.start("a", lambda e: None)
    await b.start("b", got.extend)
    try:
        await b.subscribe("rooms:h")
        policy = HistoryPolicy()
        first = await a.publish_stored(
            Envelope("a", 0, "rooms:h", "m", Encoded.of({"n": 1})), policy
        )
        await a.publish_stored(Envelope("a", 0, "rooms:h", "m", Encoded.of({"n": 2})), policy)
        await until(lambda: len(got) == 2)
        assert [e.payload.value() for e in got] == [{"n": 1, "offset": 1}, {"n": 2, "offset": 2}]
        assert first.epoch is not None
        since = Position(0, first.epoch)
        ok = await b.history("rooms:h", since, policy)
        assert ok.recovered and [m.offset for m in ok.messages] == [1, 2]
        # Someone with write access rewrites entry 2: recovery refuses to be partial.
        r = aioredis.Redis.from_url(redis_server.url)
        stream = "roost:chat:h:{rooms:h}"
        await r.xdel(stream, "2-0")
        await r.xadd(
            stream, {"e": "m", "p": b'{"n":666,"offset":2}', "t": 1, "n": "a", "s": ""}, id="2-1"
        )
        await r.aclose()
        bad = await b.history("rooms:h", since, policy)
        assert not bad.recovered
        assert all(m.payload != b'{"n":666,"offset":2}' for m in bad.messages)
        assert b.stats.rejected >= 1
    finally:
        await a.stop()
        await b.stop()
