"""Interleavings a review found in the delivery model, each pinned by a test (real
redis-server where Redis is involved; the cursor alone where it is not)."""

from __future__ import annotations

import asyncio
from typing import Any

from roost.brokers.memory import MemoryBroker
from roost.brokers.redis import RedisBroker
from roost.brokers.redis.cursor import Cursors, State
from roost.brokers.redis.stats import BrokerStats
from roost.protocol import Encoded
from roost.pubsub import Envelope, HistoryPolicy, PubSub
from roost.server.longpoll import Listener
from test_cursor import Stream, env, settle

from support import RedisProcess, until

POLICY = HistoryPolicy()


async def test_a_message_of_a_lost_history_is_dropped_not_refilled_forever() -> None:
    stream = Stream()
    got: list[tuple[str | None, int | None]] = []
    cursors = Cursors(stream.read, lambda e: got.append((e.epoch, e.offset)), BrokerStats())
    for i in range(1, 6):
        stream.add(i)
    c = cursors.open("t")
    cursors.positioned(c, "e1", 5)
    stream.fail = 1  # Redis dies as the gap fill reads
    cursors.message(env(7))  # e1:7 after a lost e1:6: queued behind a fill
    await settle()
    cursors.lost()
    stream.epoch, stream.messages = "e2", []  # back empty, new traffic
    stream.add(1)
    stream.add(2)
    cursors.confirmed(c)
    await asyncio.sleep(0.3)
    cursors.message(env(3, "e2"))
    reads = stream.reads
    await asyncio.sleep(0.3)
    await cursors.stop()
    assert ("e2", 3) in got and c.state is State.LIVE
    assert stream.reads - reads <= 1  # no hot loop of fills


async def test_a_resubscribe_while_the_position_is_read_catches_up() -> None:
    stream = Stream()
    got: list[int | None] = []
    cursors = Cursors(stream.read, lambda e: got.append(e.offset), BrokerStats())
    c = cursors.open("t")
    cursors.confirmed(c)  # SUBSCRIBE confirmed; the position is being read (top 0) ...
    cursors.lost()  # ... the subscriber connection is cut,
    stream.add(1)  # a message is stored meanwhile,
    cursors.confirmed(c)  # the reconnect is confirmed before the position reply
    cursors.positioned(c, "e1", 0)
    await settle()
    assert got == [1]


async def test_a_lost_subscription_while_the_position_is_read_detaches() -> None:
    stream = Stream()
    cursors = Cursors(stream.read, lambda e: None, BrokerStats())
    c = cursors.open("t")
    cursors.confirmed(c)
    cursors.lost()
    cursors.positioned(c, "e1", 0)
    assert c.state is State.DETACHED  # the next confirmation catches it up


async def test_a_gap_fill_across_a_redis_restart_settles(redis_server: RedisProcess) -> None:
    a = RedisBroker(redis_server.url, probe_interval=0.5)
    b = RedisBroker(redis_server.url, probe_interval=0.5)
    got: list[tuple[str | None, int | None]] = []
    await a.start("a", lambda envs: got.extend((e.epoch, e.offset) for e in envs))
    await b.start("b", lambda envs: None)

    async def send() -> None:
        await b.publish_stored(Envelope("b", 0, "t", "new:msg", Encoded.of({})), POLICY)

    try:
        await a.subscribe("t")
        for _ in range(3):
            await send()
        await until(lambda: len(got) == 3, what="1..3")
        keys = a.keys  # offset 4 stored, its PUBLISH lost
        await b.connection.redis.hincrby(keys.history_meta("t"), "offset", 1)
        await b.connection.redis.xadd(
            keys.history_stream("t"),
            {"e": "new:msg", "p": b'{"offset":4}', "t": 0, "n": "b", "s": ""},
            id="4-0",
        )
        gate, first, read = asyncio.Event(), [True], a.cursors.read

        async def slow(*args: Any) -> Any:  # the fill's read is held up ...
            if first[0]:
                first[0] = False
                await gate.wait()
            return await read(*args)

        a.cursors.read = slow
        await send()  # e1:5: a gap, a fill in flight
        await until(lambda: a.stats.offset_gaps == 1, what="gap")
        redis_server.restart()  # ... while Redis restarts empty
        await until(lambda: a.stats.reconnects >= 1 and a.stats.subscribed, 20, "resubscribed")
        gate.set()
        await asyncio.sleep(0.5)
        for _ in range(3):
            await until(lambda: b.stats.responsive, 10, "b up")
            await send()
        await until(lambda: a.cursors.topics["t"].state is State.LIVE, 5, "live again")
        gaps = a.stats.offset_gaps
        await asyncio.sleep(0.5)
        assert a.stats.offset_gaps == gaps
        assert [o for e, o in got if e == got[-1][0]][-3:] == [1, 2, 3]
    finally:
        await a.stop()
        await b.stop()


async def test_a_joiner_is_released_in_a_quiet_room(redis_server: RedisProcess) -> None:
    """Deliveries made while the broker subscribes are newer than the subscribe position:
    the position must not move back (the joiner would wait for the next message)."""
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    ps = PubSub("a", a)
    await ps.start()
    await b.start("b", lambda envs: None)

    async def send() -> None:
        await b.publish_stored(Envelope("b", 0, "t", "new:msg", Encoded.of({})), POLICY)

    try:
        for _ in range(3):
            await send()
        read = a.reader.catch_up

        async def read_then_traffic(*args: Any) -> Any:  # position 3 read, then 4, 5 queued
            result = await read(*args)
            await send()
            await send()
            await until(lambda: len(a.cursors.topics["t"].queue) == 2, what="queued")
            return result

        a.reader.catch_up = read_then_traffic  # type: ignore[method-assign]
        positioned = a.cursors.positioned

        def crowded(cursor: Any, epoch: Any, top: int) -> None:  # a full batch this turn
            for i in range(254):
                a._emit(Envelope("b", i, "other", "x", Encoded.of({})))
            positioned(cursor, epoch, top)

        a.cursors.positioned = crowded  # type: ignore[method-assign]
        sub = Listener(lambda event, payload: None)
        await ps.subscribe("t", sub, hold=True)
        recovery = await ps.history("t", None, POLICY)
        assert ps.release("t", sub, recovery.position)
        await until(lambda: sub not in ps._held.get("t", {}), 2, "released")
    finally:
        await ps.stop()
        await b.stop()


async def test_sequence_and_gap_state_stay_bounded(redis_server: RedisProcess) -> None:
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    b._seq_limit = 50
    await a.start("a", lambda envs: None)
    await b.start("b", lambda envs: None)
    try:
        for i in range(200):
            topic = f"room{i}"
            await a.subscribe(topic)
            for _ in range(20):  # busy while its last member leaves
                await b.publish(Envelope("b", 0, topic, "x", Encoded.of({})))
            await asyncio.sleep(0.001)
            await a.unsubscribe(topic)
        await asyncio.sleep(0.5)
        assert len(a._last_seen) == 0 and len(a.cursors.topics) == 0
        assert len(b._seq) <= 100
    finally:
        await a.stop()
        await b.stop()


async def test_a_channel_that_ends_while_tracking_leaves_no_presence() -> None:
    from roost.brokers.memory import MemoryPresenceStore
    from roost.channels.presence import Presence

    class Slow(MemoryPresenceStore):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def add(self, topic: str, entry: Any) -> None:
            await self.gate.wait()
            await super().add(topic, entry)

    class Chan:
        topic = "rooms:x"
        joined = True

        def push(self, event: str, payload: Any) -> None:
            pass

    store = Slow()
    presence = Presence(PubSub("n", MemoryBroker()), store, batch=0)
    chan: Any = Chan()
    tracking = asyncio.create_task(presence.track(chan, "al", {}))
    await asyncio.sleep(0)
    chan.joined = False  # crashed (phx_error) during its after_join
    await presence.untrack(chan)
    store.gate.set()
    await tracking
    assert await store.list("rooms:x") == [] and presence.entries == 0
