"""History and exact recovery: memory broker and real Redis, across nodes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.brokers.redis import RedisBroker
from roost.channels import Limits
from roost.chat import create_endpoint
from roost.client import Client
from roost.pubsub import HistoryPolicy

from support import RedisProcess, until


def make_endpoint(kind: str, node: str, redis: RedisProcess | None, policy: HistoryPolicy) -> Any:
    from roost.brokers.memory import MemoryBroker

    broker: Any = MemoryBroker()
    if kind == "redis":
        assert redis is not None
        broker = RedisBroker(redis.url, probe_interval=0.5)
    endpoint = create_endpoint(node, broker, limits=Limits(msg_rate=0))
    endpoint.history = policy
    return endpoint


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def nodes(kind: str, local_server: Any, request: pytest.FixtureRequest) -> Any:
    redis = request.getfixturevalue("redis_server") if kind == "redis" else None

    async def make(count: int, policy: HistoryPolicy | None = None) -> list[Any]:
        policy = policy or HistoryPolicy()
        if kind == "memory":  # one node: the memory broker is not shared across processes
            return [await local_server(make_endpoint(kind, "m1", None, policy))]
        return [
            await local_server(make_endpoint(kind, f"r{i + 1}", redis, policy))
            for i in range(count)
        ]

    return make


async def send(url: str, room: str, bodies: list[str], user: str = "writer") -> None:
    async with Client(url) as c:
        ch = c.channel(room, {"user": user})
        await ch.join()
        replies = await asyncio.gather(*(ch.push("new:msg", {"body": b}) for b in bodies))
        assert all(r.ok for r in replies), replies


async def test_late_joiner_gets_recent_history(nodes: Any) -> None:
    servers = await nodes(2)
    await send(servers[0].ws_url, "rooms:late", [f"m{i}" for i in range(60)])
    async with Client(servers[-1].ws_url) as c:
        reply = await c.channel("rooms:late", {"user": "late"}).join()
    assert reply["recovered"] is False
    assert [m["body"] for m in reply["history"]] == [f"m{i}" for i in range(10, 60)]
    assert [m["offset"] for m in reply["history"]] == list(range(11, 61))
    assert reply["offset"] == 60 and reply["epoch"]


async def test_every_broadcast_carries_its_offset(nodes: Any) -> None:
    servers = await nodes(2)
    async with Client(servers[-1].ws_url) as c:
        got: list[Any] = []
        ch = c.channel("rooms:off", {"user": "r"})
        ch.on("new:msg", got.append)
        first = await ch.join()
        await send(servers[0].ws_url, "rooms:off", ["a", "b", "c"])
        await until(lambda: len(got) == 3)
    assert [m["offset"] for m in got] == [first["offset"] + i for i in (1, 2, 3)]


async def test_rejoin_with_since_recovers_exactly_what_was_missed(nodes: Any) -> None:
    servers = await nodes(2)
    url = servers[-1].ws_url
    async with Client(url) as c:
        first = await c.channel("rooms:rec", {"user": "r"}).join()
    await send(servers[0].ws_url, "rooms:rec", ["before"])
    async with Client(url) as c:
        seen = await c.channel("rooms:rec", {"user": "r"}).join()
    since = {"offset": seen["offset"], "epoch": seen["epoch"]}
    # The empty room's position (nothing kept for it), then the epoch its first message began.
    assert (first["offset"], seen["offset"]) == (0, 1) and first["epoch"] != seen["epoch"]
    # Disconnected: 200 messages go by.
    await send(servers[0].ws_url, "rooms:rec", [f"m{i}" for i in range(200)])
    policy_ok = HistoryPolicy(max_len=300)
    for s in servers:
        s.endpoint.history = policy_ok
    async with Client(url) as c:
        back = await c.channel("rooms:rec", {"user": "r", "since": since}).join()
    # The stream keeps 100 by default: 200 missed is past the window.
    assert back["recovered"] is False
    assert [m["body"] for m in back["history"]][-1] == "m199"


async def test_recovery_within_the_window(nodes: Any) -> None:
    servers = await nodes(2, HistoryPolicy(max_len=300))
    url = servers[-1].ws_url
    async with Client(url) as c:
        seen = await c.channel("rooms:win", {"user": "r"}).join()
    since = {"offset": seen["offset"], "epoch": seen["epoch"]}
    await send(servers[0].ws_url, "rooms:win", [f"m{i}" for i in range(200)])
    async with Client(url) as c:
        back = await c.channel("rooms:win", {"user": "r", "since": since}).join()
    assert back["recovered"] is True
    assert [m["body"] for m in back["history"]] == [f"m{i}" for i in range(200)]
    assert back["offset"] == since["offset"] + 200
    # Nothing missed: recovered, empty.
    async with Client(url) as c:
        again = await c.channel(
            "rooms:win", {"since": {"offset": back["offset"], "epoch": back["epoch"]}}
        ).join()
    assert again["recovered"] is True and again["history"] == []


async def test_trimmed_past_offset_is_not_recovered(nodes: Any) -> None:
    servers = await nodes(1, HistoryPolicy(max_len=10, recent=5))
    url = servers[0].ws_url
    await send(url, "rooms:trim", [f"a{i}" for i in range(3)])
    async with Client(url) as c:
        seen = await c.channel("rooms:trim").join()
    await send(url, "rooms:trim", [f"b{i}" for i in range(30)])
    since = {"offset": seen["offset"], "epoch": seen["epoch"]}
    async with Client(url) as c:
        back = await c.channel("rooms:trim", {"since": since}).join()
    assert back["recovered"] is False
    assert [m["body"] for m in back["history"]] == [f"b{i}" for i in range(25, 30)]


async def test_wrong_epoch_is_not_recovered(nodes: Any) -> None:
    servers = await nodes(1)
    url = servers[0].ws_url
    await send(url, "rooms:ep", ["x"])
    async with Client(url) as c:
        back = await c.channel("rooms:ep", {"since": {"offset": 0, "epoch": "other"}}).join()
    assert back["recovered"] is False
    assert [m["body"] for m in back["history"]] == ["x"]


@pytest.mark.parametrize(
    "since", [5, "x", {"offset": -1, "epoch": "e"}, {"offset": 1}, {"offset": 1, "epoch": 7}]
)
async def test_invalid_since_is_refused(nodes: Any, since: Any) -> None:
    servers = await nodes(1)
    async with Client(servers[0].ws_url) as c:
        from roost.client import JoinRefused

        with pytest.raises(JoinRefused) as info:
            await c.channel("rooms:bad", {"since": since}).join()
    assert info.value.response == {"reason": "invalid since"}


async def test_dropped_pubsub_message_is_filled_in_order(
    local_server: Any, redis_server: RedisProcess
) -> None:
    """A stored message whose PUBLISH never reached the node (here: published on a
    channel nobody listens to, as a lost Pub/Sub message would be) is filled from the
    stream, in order, when the next one reveals the hole."""
    import os

    import redis.asyncio as aioredis

    from roost.brokers.redis.history import PUBLISH_STORED
    from roost.brokers.redis.keys import Keys

    a = await local_server(make_endpoint("redis", "fa", redis_server, HistoryPolicy()))
    b = await local_server(make_endpoint("redis", "fb", redis_server, HistoryPolicy()))
    keys = Keys()
    async with Client(b.ws_url) as c:
        got: list[str] = []
        ch = c.channel("rooms:fill", {"user": "r"})
        ch.on("new:msg", lambda p: got.append(p["body"]))
        await ch.join()
        await send(a.ws_url, "rooms:fill", ["m0"])
        await until(lambda: got == ["m0"])
        r = aioredis.Redis.from_url(redis_server.url)
        await r.eval(
            PUBLISH_STORED,
            2,
            keys.history_meta("rooms:fill"),
            keys.history_stream("rooms:fill"),
            os.urandom(6).hex(), "lost:channel", "fa", 99, "rooms:fill", "new:msg",
            b'{"body":"m1"}', "", 0, 100, 86_400_000, "", 1 << 20,
        )  # fmt: skip
        await r.aclose()
        await send(a.ws_url, "rooms:fill", [f"m{i}" for i in range(2, 40)])
        await until(lambda: len(got) == 40, what="all 40 messages")
        await asyncio.sleep(0.2)
    assert got == [f"m{i}" for i in range(40)]
    stats = b.endpoint.pubsub.broker.stats
    assert stats.offset_gaps == 1 and stats.filled >= 1  # the fill reads up to the top


async def test_a_redis_that_forgot_the_script_still_stores(
    local_server: Any, redis_server: RedisProcess
) -> None:
    """The history script goes as EVALSHA without asking first; a Redis whose script cache
    is empty (restarted, a promoted replica, SCRIPT FLUSH) answers NOSCRIPT and the
    publisher sends those items again as EVAL, in order."""
    import redis.asyncio as aioredis

    a = await local_server(make_endpoint("redis", "sf", redis_server, HistoryPolicy()))
    r = aioredis.Redis.from_url(redis_server.url)
    await send(a.ws_url, "rooms:flush", ["before"])
    await r.script_flush()
    await send(a.ws_url, "rooms:flush", [f"after{i}" for i in range(5)])
    await r.aclose()
    async with Client(a.ws_url) as c:
        reply = await c.channel("rooms:flush", {"user": "late"}).join()
    assert [m["body"] for m in reply["history"]] == ["before"] + [f"after{i}" for i in range(5)]
    assert [m["offset"] for m in reply["history"]] == list(range(1, 7))


async def test_history_down_refuses_to_send_silently(
    local_server: Any, redis_server: RedisProcess
) -> None:
    a = await local_server(make_endpoint("redis", "da", redis_server, HistoryPolicy()))
    async with Client(a.ws_url) as c:
        ch = c.channel("rooms:down", {"user": "w"})
        await ch.join()
        redis_server.stop()
        reply = await ch.push("new:msg", {"body": "lost?"})
        assert reply.status == "error"
        # The pooled connection breaks under the send: whether Redis got it is not known
        # to the node, so "timeout" (maybe stored) is as honest as "temporarily unavailable".
        assert reply.response in ({"reason": "temporarily unavailable"}, {"reason": "timeout"})


async def test_memory_history_keeps_a_bounded_number_of_rooms() -> None:
    from roost.brokers.memory import MemoryBroker, MemoryHub
    from roost.protocol import Encoded
    from roost.pubsub import Envelope, Position

    hub = MemoryHub(max_topics=3)
    broker = MemoryBroker(hub)
    await broker.start("m", lambda e: None)
    policy = HistoryPolicy()
    first = await broker.publish_stored(Envelope("m", 0, "rooms:0", "e", Encoded.of({})), policy)
    for i in range(1, 5):
        await broker.publish_stored(Envelope("m", 0, f"rooms:{i}", "e", Encoded.of({})), policy)
    assert list(hub.topics) == ["rooms:2", "rooms:3", "rooms:4"]
    assert first.epoch is not None
    # rooms:0 was dropped: a client that saw its offset 1 is told, not given a new room's 1.
    back = await broker.history("rooms:0", Position(0, first.epoch), policy)
    assert back.recovered is False and back.position.epoch != first.epoch
    await broker.stop()


def test_logs_never_show_a_redis_password() -> None:
    from roost.brokers.redis.connection import safe_url as _safe

    assert _safe("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert _safe("redis://h:1/0?password=pw&db=2") == "redis://h:1/0?password=***&db=2"
    assert "pw" not in _safe("rediss://:pw@h")
