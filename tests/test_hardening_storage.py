"""Issue 14, finding 2: storage is bounded by design.

Reading a room creates nothing (Redis keys, memory rooms); history is capped in bytes
per room and, with the memory broker, in rooms per node — and invented rooms cannot
evict a real one; a chat body is bounded in encoded bytes. The delivery promise holds
across the empty position a join of an empty room now gets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from roost.brokers.memory import MemoryBroker, MemoryHub
from roost.brokers.redis import RedisBroker
from roost.channels import Limits
from roost.chat import create_endpoint
from roost.client import Client
from roost.protocol import Encoded
from roost.pubsub import Envelope, HistoryPolicy, HistoryUnavailable

from support import RedisProcess, until

MAX_BYTES = 20_000


def big() -> HistoryPolicy:
    """A policy capped by bytes only (count well above)."""
    return HistoryPolicy(max_len=1000, max_bytes=MAX_BYTES)


def endpoint(node: str, broker: Any, policy: HistoryPolicy | None = None) -> Any:
    ep = create_endpoint(node, broker, limits=Limits(msg_rate=0, join_rate=1000, join_burst=1000))
    ep.history = policy or HistoryPolicy()
    return ep


async def room_keys(url: str) -> list[bytes]:
    """Every key a room left in Redis (node liveness keys are the node's, not a room's)."""
    r = aioredis.Redis.from_url(url)
    try:
        return sorted([k async for k in r.scan_iter("roost:*") if b":node:" not in k])
    finally:
        await r.aclose()


async def send(url: str, room: str, bodies: list[str]) -> None:
    async with Client(url) as c:
        ch = c.channel(room, {"user": "writer"})
        await ch.join()
        replies = await asyncio.gather(*(ch.push("new:msg", {"body": b}) for b in bodies))
        assert all(r.ok for r in replies), replies


def published(topic: str, payload: dict[str, Any]) -> Envelope:
    return Envelope("n", 0, topic, "new:msg", Encoded.of(payload))


# -- reading creates nothing ----------------------------------------------------------
async def test_joining_invented_rooms_leaves_no_redis_keys(
    local_server: Any, redis_server: RedisProcess
) -> None:
    server = await local_server(endpoint("k1", RedisBroker(redis_server.url)))
    async with Client(server.ws_url) as c:
        for i in range(60):
            ch = c.channel(f"rooms:invented-{i}", {"user": "x"})
            reply = await ch.join()
            assert reply["offset"] == 0 and reply["history"] == []
            await ch.leave()
    # Presence entries go with their members; history keys are never written by a read.
    for _ in range(200):
        if not await room_keys(redis_server.url):
            break
        await asyncio.sleep(0.05)
    assert await room_keys(redis_server.url) == []


async def test_memory_reads_create_no_rooms_and_cannot_evict_a_real_one() -> None:
    hub = MemoryHub(max_topics=20)
    broker = MemoryBroker(hub)
    await broker.start("m", lambda e: None)
    policy = HistoryPolicy()
    for body in ("a", "b"):
        await broker.publish_stored(published("rooms:real", {"body": body}), policy)
    for i in range(10_100):
        back = await broker.history(f"rooms:invented-{i}", None, policy)
        assert back.position.offset == 0 and back.messages == []
    assert list(hub.topics) == ["rooms:real"]
    real = await broker.history("rooms:real", None, policy)
    assert [m.offset for m in real.messages] == [1, 2]
    await broker.stop()


async def test_memory_evicts_idle_rooms_least_recently_written_first() -> None:
    hub = MemoryHub(max_topics=3)
    broker = MemoryBroker(hub)
    await broker.start("m", lambda e: None)
    policy = HistoryPolicy()
    await broker.subscribe("rooms:busy")  # a member on this node: never evicted
    for topic in ("rooms:busy", "rooms:a", "rooms:b", "rooms:c", "rooms:d"):
        await broker.publish_stored(published(topic, {}), policy)
    assert list(hub.topics) == ["rooms:busy", "rooms:c", "rooms:d"]
    await broker.subscribe("rooms:c")
    await broker.subscribe("rooms:d")
    with pytest.raises(HistoryUnavailable):  # every room has members: refused, none dropped
        await broker.publish_stored(published("rooms:e", {}), policy)
    assert list(hub.topics) == ["rooms:busy", "rooms:c", "rooms:d"]
    await broker.stop()


async def test_memory_invented_joins_keep_a_real_rooms_history(local_server: Any) -> None:
    server = await local_server(endpoint("m1", MemoryBroker(MemoryHub(max_topics=50))))
    await send(server.ws_url, "rooms:real", ["kept"])
    async with Client(server.ws_url) as c:
        for i in range(120):
            ch = c.channel(f"rooms:inv{i}", {"user": "x"})
            await ch.join()
            await ch.leave()
        back = await c.channel("rooms:real", {"user": "r"}).join()
    assert [m["body"] for m in back["history"]] == ["kept"]


# -- bytes --------------------------------------------------------------------------------
async def test_redis_history_is_capped_in_bytes(redis_server: RedisProcess) -> None:
    broker = RedisBroker(redis_server.url)
    await broker.start("b1", lambda envs: None)
    try:
        for i in range(200):
            await broker.publish_stored(published("rooms:big", {"body": f"{i:04}" * 250}), big())
        r = aioredis.Redis.from_url(redis_server.url)
        stream = broker.keys.history_stream("rooms:big")
        entries = await r.xrange(stream)
        stored = sum(len(k) + len(v) for _, fields in entries for k, v in fields.items())
        usage = await r.memory_usage(stream, samples=0)
        meta = await r.hgetall(broker.keys.history_meta("rooms:big"))
        await r.aclose()
        assert 10 <= len(entries) < 200 and stored <= MAX_BYTES
        assert int(meta[b"bytes"]) == stored and int(meta[b"offset"]) == 200
        assert usage is not None and usage < 3 * MAX_BYTES, usage
        # The newest are kept, in order; a rejoin past them is told.
        back = await broker.history("rooms:big", None, HistoryPolicy(recent=1000))
        assert [m.offset for m in back.messages] == list(range(201 - len(entries), 201))
    finally:
        await broker.stop()


async def test_memory_history_is_capped_in_bytes() -> None:
    broker = MemoryBroker()
    await broker.start("m", lambda e: None)
    for i in range(200):
        await broker.publish_stored(published("rooms:big", {"body": f"{i:04}" * 250}), big())
    back = await broker.history("rooms:big", None, HistoryPolicy(recent=1000))
    assert 10 <= len(back.messages) < 200
    assert sum(len(m.payload) for m in back.messages) <= MAX_BYTES
    assert back.messages[-1].offset == 200
    await broker.stop()


async def test_a_body_of_control_characters_is_too_long(local_server: Any) -> None:
    server = await local_server(endpoint("v1", MemoryBroker()))
    async with Client(server.ws_url) as c:
        ch = c.channel("rooms:ctl", {"user": "x"})
        await ch.join()
        bad = await ch.push("new:msg", {"body": "\x01" * 2000})
        assert (bad.status, bad.response) == ("error", {"reason": "body too long"})
        # 2,000 characters of the widest printable kind still fit.
        good = await ch.push("new:msg", {"body": "\U0001f600" * 2000})
        assert good.ok, good.response


# -- the delivery promise across an empty position --------------------------------------
@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_first_messages_after_an_empty_join_are_recovered_exactly(
    kind: str, local_server: Any, request: pytest.FixtureRequest
) -> None:
    redis: RedisProcess | None = None
    if kind == "redis":
        redis = request.getfixturevalue("redis_server")
        broker: Any = RedisBroker(redis.url)
    else:
        broker = MemoryBroker()
    server = await local_server(endpoint("e1", broker))
    async with Client(server.ws_url) as c:
        first = await c.channel("rooms:fresh", {"user": "r"}).join()
    assert first["offset"] == 0
    if redis is not None:
        assert not [k for k in await room_keys(redis.url) if b":h:" in k or b":m:" in k]
    else:
        assert list(broker.hub.topics) == []
    await send(server.ws_url, "rooms:fresh", [f"m{i}" for i in range(5)])
    since = {"offset": first["offset"], "epoch": first["epoch"]}
    async with Client(server.ws_url) as c:
        back = await c.channel("rooms:fresh", {"user": "r", "since": since}).join()
    assert back["recovered"] is True
    assert [m["body"] for m in back["history"]] == [f"m{i}" for i in range(5)]
    assert [m["offset"] for m in back["history"]] == [1, 2, 3, 4, 5]
    # A cursor advanced by the pushes it got (offset 2 of the empty position) too.
    async with Client(server.ws_url) as c:
        part = await c.channel(
            "rooms:fresh", {"user": "r", "since": {"offset": 2, "epoch": first["epoch"]}}
        ).join()
    assert part["recovered"] is True and [m["offset"] for m in part["history"]] == [3, 4, 5]


def test_an_empty_position_recovers_only_from_the_first_history_after_it() -> None:
    from roost.pubsub.history import (
        Position,
        StoredMessage,
        empty_epoch,
        new_epoch,
        recover_from,
    )

    policy = HistoryPolicy(max_age=60)
    read = empty_epoch("gen1", 1_000_000)
    window = [StoredMessage(i, "new:msg", b"{}", 1_000_500) for i in (1, 2, 3)]

    def recovered(epoch: str, since_offset: int = 0) -> bool:
        back = recover_from(
            Position(since_offset, read), Position(3, epoch), window, policy, 1_001_000
        )
        return back.recovered

    assert recovered(new_epoch("gen1", 1_000_000, "x"))  # begun at the read: the next one
    assert recovered(new_epoch("gen1", 1_059_999, "x"), since_offset=2)
    assert not recovered(new_epoch("gen2", 1_000_100, "x"))  # another Redis / an eviction
    assert not recovered(new_epoch("gen1", 1_060_000, "x"))  # an earlier one may have expired
    assert not recovered(new_epoch("gen1", 999_999, "x"))  # older than the read
    assert not recovered("0123456789ab")  # an epoch of the old format
    # Still empty: nothing was missed, unless the cursor had seen messages.
    still = Position(0, empty_epoch("gen1", 1_000_200))
    assert recover_from(Position(0, read), still, [], policy, 1_001_000).recovered
    assert not recover_from(Position(2, read), still, [], policy, 1_001_000).recovered


async def test_an_empty_position_does_not_recover_across_a_lost_history(
    local_server: Any, redis_server: RedisProcess
) -> None:
    server = await local_server(endpoint("e2", RedisBroker(redis_server.url, probe_interval=0.2)))
    async with Client(server.ws_url) as c:
        first = await c.channel("rooms:lost", {"user": "r"}).join()
    await send(server.ws_url, "rooms:lost", ["a", "b", "c"])
    redis_server.restart()  # no persistence: the history is gone, a new epoch will begin
    for _ in range(100):
        try:
            await send(server.ws_url, "rooms:lost", ["x", "y", "z", "w"])
            break
        except Exception:
            await asyncio.sleep(0.1)
    since = {"offset": 3, "epoch": first["epoch"]}  # saw a, b, c after the empty join
    async with Client(server.ws_url) as c:
        back = await c.channel("rooms:lost", {"user": "r", "since": since}).join()
    assert back["recovered"] is False  # not w alone, as if x, y, z were a, b, c
    assert [m["body"] for m in back["history"]] == ["x", "y", "z", "w"]


async def test_members_of_an_empty_room_get_its_first_messages_exactly_once(
    local_server: Any, redis_server: RedisProcess
) -> None:
    a = await local_server(endpoint("c1", RedisBroker(redis_server.url)))
    b = await local_server(endpoint("c2", RedisBroker(redis_server.url)))
    clients = [Client(s.ws_url) for s in (a, b, b, a)]
    got: list[list[int]] = [[] for _ in clients]
    try:
        for i, c in enumerate(clients):
            await c.connect()
            ch = c.channel("rooms:first", {"user": f"u{i}"})
            ch.on("new:msg", lambda p, seen=got[i]: seen.append(p["offset"]))
            reply = await ch.join()
            assert reply["offset"] == 0
        # Nothing stored yet: only presence (the members) is in Redis for the room.
        assert all(b":h:" not in k and b":m:" not in k for k in await room_keys(redis_server.url))
        await asyncio.gather(
            send(a.ws_url, "rooms:first", [f"a{i}" for i in range(30)]),
            send(b.ws_url, "rooms:first", [f"b{i}" for i in range(30)]),
        )
        await until(lambda: all(len(g) >= 60 for g in got), what="60 messages each")
        await asyncio.sleep(0.2)
    finally:
        for c in clients:
            await c.close()
    for seen in got:
        assert seen == list(range(1, 61))
