"""Scale-out through Redis: real redis-server, real `roost serve` processes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.client import Client

from support import RedisProcess, ServerProcess, free_port, start_server, until

JS = Path(__file__).resolve().parent / "js"


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.fixture
def cluster(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(count: int, mode: str = "topic", *extra: str) -> list[ServerProcess]:
        for _ in range(count):
            name = f"n{len(started) + 1}"
            args = ["--redis", redis_server.url, "--pubsub-mode", mode, "--echo"]
            args += ["--probe-interval", "0.5", "--msg-rate", "0", *extra]
            started.append(start_server(*args, node=name, log_dir=tmp_path))
        return started[-count:]

    yield make
    for server in started:
        server.stop()


@pytest.mark.parametrize("mode", ["topic", "global"])
async def test_exactly_once_in_order_across_three_nodes(cluster: Any, mode: str) -> None:
    n1, n2, n3 = cluster(3, mode)
    topic = "rooms:order"
    async with (
        Client(n2.ws_url) as r2,
        Client(n3.ws_url) as r3,
        Client(n1.ws_url) as pa,
        Client(n2.ws_url) as pb,
    ):
        got: dict[str, list[tuple[str, str]]] = {"n2": [], "n3": []}
        for name, client in (("n2", r2), ("n3", r3)):
            ch = client.channel(topic, {"user": f"reader-{name}"})
            ch.on("new:msg", lambda p, name=name: got[name].append((p["user"], p["body"])))
            await ch.join()
        a = pa.channel(topic, {"user": "A"})
        b = pb.channel(topic, {"user": "B"})
        await a.join()
        await b.join()
        sends = [a.push("new:msg", {"body": str(i)}, timeout=30) for i in range(1000)]
        sends += [b.push("new:msg", {"body": str(i)}, timeout=30) for i in range(500)]
        replies = await asyncio.gather(*sends)
        assert all(r.ok for r in replies)
        await until(lambda: all(len(v) >= 1500 for v in got.values()), 20, "1500 messages")
        await asyncio.sleep(0.3)  # anything extra (a duplicate) would arrive now
        for messages in got.values():
            assert len(messages) == 1500
            assert [b for u, b in messages if u == "A"] == [str(i) for i in range(1000)]
            assert [b for u, b in messages if u == "B"] == [str(i) for i in range(500)]
    assert health(n3)["broker"]["gaps"] == 0


async def test_broadcast_from_skips_only_the_sender(cluster: Any) -> None:
    n1, n2 = cluster(2)
    async with Client(n1.ws_url) as a, Client(n1.ws_url) as b, Client(n2.ws_url) as c:
        got: dict[str, list[Any]] = {"a": [], "b": [], "c": []}
        chans = {}
        for name, client in (("a", a), ("b", b), ("c", c)):
            ch = client.channel("echo:from")
            ch.on("echo", got[name].append)
            await ch.join()
            chans[name] = ch
        assert (await chans["a"].push("broadcast_from", {"x": 1})).ok
        assert (await chans["a"].push("broadcast", {"x": 2})).ok
        await until(lambda: len(got["b"]) == 2 and len(got["c"]) == 2 and len(got["a"]) == 1)
        assert got["a"] == [{"x": 2}]
        assert got["b"] == got["c"] == [{"x": 1}, {"x": 2}]


async def test_topic_mode_node_without_members_receives_nothing(cluster: Any) -> None:
    n1, n2, n3 = cluster(3, "topic")
    async with Client(n1.ws_url) as c1, Client(n2.ws_url) as c2, Client(n3.ws_url) as c3:
        await c1.channel("rooms:x").join()
        got2: list[Any] = []
        ch2 = c2.channel("rooms:x")
        ch2.on("new:msg", got2.append)
        await ch2.join()
        await c3.channel("rooms:y").join()
        before = health(n3)["broker"]["received"]
        sender = c1.channel("rooms:x")
        await sender.join()
        for i in range(100):
            await sender.push("new:msg", {"body": f"m{i}"})
        await until(lambda: len(got2) == 100)
        assert health(n2)["broker"]["received"] >= 100
        assert health(n3)["broker"]["received"] == before == 0


async def test_global_mode_every_node_receives_everything(cluster: Any) -> None:
    n1, _n2 = cluster(2, "global")
    async with Client(n1.ws_url) as c1:
        room = c1.channel("rooms:only-on-n1")
        await room.join()
        for i in range(20):
            await room.push("new:msg", {"body": f"m{i}"})
    await until(lambda: health(_n2)["broker"]["received"] >= 21)  # 20 + user:entered


def test_duplicate_node_name_is_refused(cluster: Any, redis_server: RedisProcess) -> None:
    cluster(1)  # n1
    twin = start_server("--redis", redis_server.url, node="n1", wait=False)
    try:
        assert twin.proc.wait(20) == 1
        assert "already in use" in twin.log()
    finally:
        twin.stop()


async def test_node_started_before_redis_joins_when_redis_starts(tmp_path: Path) -> None:
    redis = RedisProcess(free_port(), [])
    early = start_server("--redis", redis.url, "--echo", node="early", log_dir=tmp_path, wait=False)
    late: ServerProcess | None = None
    try:
        await until(lambda: "unreachable" in early.log(), 15, "the retry message")
        assert early.proc.poll() is None
        redis.start()
        from support import wait_http

        await asyncio.to_thread(wait_http, f"{early.url}/healthz", 20.0, early.proc)
        late = start_server("--redis", redis.url, "--echo", node="late", log_dir=tmp_path)
        async with Client(early.ws_url) as a, Client(late.ws_url) as b:
            got: list[Any] = []
            cb = b.channel("echo:boot")
            cb.on("echo", got.append)
            await cb.join()
            ca = a.channel("echo:boot")
            await ca.join()
            await ca.push("broadcast", {"hello": "from early"})
            await until(lambda: got == [{"hello": "from early"}])
    finally:
        early.stop()
        if late is not None:
            late.stop()
        redis.stop()


async def test_redis_restart_mid_stream(cluster: Any, redis_server: RedisProcess) -> None:
    n1, n2 = cluster(2)
    async with Client(n1.ws_url) as pub, Client(n1.ws_url) as local, Client(n2.ws_url) as remote:
        got_local: list[int] = []
        got_remote: list[int] = []
        lc = local.channel("echo:stream")
        lc.on("echo", lambda p: got_local.append(p["i"]))
        await lc.join()
        rc = remote.channel("echo:stream")
        rc.on("echo", lambda p: got_remote.append(p["i"]))
        await rc.join()
        pc = pub.channel("echo:stream")
        await pc.join()
        counter = 0

        async def send(n: int) -> None:
            nonlocal counter
            for _ in range(n):
                assert (await pc.push("broadcast", {"i": counter})).ok
                counter += 1
                await asyncio.sleep(0.005)

        await send(20)
        await until(lambda: len(got_remote) == 20)
        redis_server.stop()
        outage_start = counter
        await send(30)  # during the outage: local delivery goes on
        await until(lambda: got_local[-1] == counter - 1, what="local delivery during the outage")
        assert not [i for i in got_remote if i >= outage_start]
        redis_server.start()
        await until(lambda: health(n2)["broker"]["connected"], 20, "n2 resubscribed")
        await until(lambda: health(n1)["broker"]["connected"], 20, "n1 resubscribed")
        before = counter
        await send(20)
        await until(lambda: got_remote and got_remote[-1] == counter - 1, 20, "cross-node resumes")
        assert [i for i in got_remote if i >= before] == list(range(before, counter))
        assert got_local == list(range(counter))  # local never lost anything
    stats = health(n2)["broker"]
    assert stats["reconnects"] >= 1
    # Unstored broadcasts made during the outage are retried by n1's publisher once Redis
    # is back; those published before n2 resubscribed are lost to n2 — and counted.
    assert got_remote == sorted(set(got_remote))  # in order, none twice
    assert len(got_remote) + stats["missed"] == counter
    assert n1.proc.poll() is None and n2.proc.poll() is None


async def test_liveness_probe_restarts_a_silent_subscription(redis_server: RedisProcess) -> None:
    from roost.brokers.redis import RedisBroker
    from roost.protocol import Encoded
    from roost.pubsub import Envelope

    sender = RedisBroker(redis_server.url, mode="global", probe_interval=0.2)
    receiver = RedisBroker(redis_server.url, mode="global", probe_interval=0.2)
    got: list[Envelope] = []
    await sender.start("s", lambda e: None)
    await receiver.start("r", got.extend)
    try:
        # Unsubscribe everything behind the broker's back: the connection stays up
        # but nothing arrives any more (a silent stall).
        assert receiver.link.conn is not None
        await receiver.link.conn.send_command("UNSUBSCRIBE")
        await until(lambda: receiver.stats.probe_restarts >= 1, 10, "a probe restart")
        await until(lambda: receiver.stats.connected, 10, "resubscribed")
        await sender.publish(Envelope("s", 0, "t", "e", Encoded.of({"after": "stall"})))
        await until(lambda: len(got) == 1, 5, "delivery after the restart")
        assert got[0].payload.value() == {"after": "stall"}
    finally:
        await sender.stop()
        await receiver.stop()


async def test_garbage_on_a_channel_is_counted_not_fatal(cluster: Any, redis_server: Any) -> None:
    import redis.asyncio as aioredis

    (n1,) = cluster(1, "global")
    r = aioredis.Redis.from_url(redis_server.url)
    await r.publish("roost:chat", b"\x93not an envelope")
    await r.publish("roost:chat", b"")
    await r.aclose()
    await until(lambda: health(n1)["broker"]["invalid"] == 2)
    assert n1.proc.poll() is None


@pytest.mark.parametrize("client", ["1.8", "1.2"])
def test_phoenix_js_across_two_nodes(cluster: Any, client: str) -> None:
    node = shutil.which("node")
    assert node, "node is required (scripts/test installs nodejs)"
    n1, n2 = cluster(2)
    out = subprocess.run(
        [node, str(JS / "crossnode.mjs"), n1.ws_url, n2.ws_url, client],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["nodes"] == ["n1", "n2"]
    assert sorted(result["origins"]) == ["n1", "n2"]
