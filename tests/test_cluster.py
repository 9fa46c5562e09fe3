"""Redis Cluster (issue 16): real 3-master clusters with a replica each, real nodes.

Chat and presence across nodes with rooms on every master (sharded Pub/Sub: each
master holds the SSUBSCRIBEs of its own slots), a dead node's users swept from the
per-slot presence registries, node names and refusals, and a master SIGKILLed
mid-stream while its replica takes over: every acknowledged message reaches every
member connected throughout exactly once, in order (the fault suite's checker).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

import roost
from roost.brokers.redis import RedisBroker
from roost.client import Client
from roost.pubsub import Envelope, HistoryPolicy
from roost.pubsub.presence import Entry, new_ref

from support import RedisCluster, ServerProcess, start_redis_cluster, start_server, until

sys.path.insert(0, str(Path(__file__).resolve().parent / "faults"))

from harness import NODE_ARGS, Member, Publisher, check_delivery, close_all, report, settle

from test_presence import Watcher


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def room_of(
    room: str, urls: tuple[str, str], members: int, publishers: int
) -> tuple[list[Member], list[Publisher]]:
    """Members connected throughout (no failover) and publishers, on both nodes by turns."""
    u1, u2 = urls

    def order(i: int) -> list[str]:
        return [u1, u2] if i % 2 else [u2, u1]

    listeners = [Member(f"{room}-m{i}", order(i), room, failover=False) for i in range(members)]
    pubs = [Publisher(Member(f"{room}-p{i}", order(i), room)) for i in range(publishers)]
    return listeners, pubs


async def start_room(everyone: list[Member], pubs: list[Publisher]) -> Any:
    """Every member joined, the publishers running; returns (stop event, their tasks)."""
    await asyncio.gather(*(m.start() for m in everyone))
    stop = asyncio.Event()
    return stop, [asyncio.create_task(p.run(stop)) for p in pubs]


def in_room(items: list[Any], room: str) -> list[Any]:
    """The members (or publishers) of one room."""
    return [x for x in items if (x.member if isinstance(x, Publisher) else x).room == room]


def master_of(cluster: RedisCluster, topic: str) -> int:
    return master_of_key(cluster, f"roost:chat:t:{{{topic}}}")


def master_of_key(cluster: RedisCluster, key: str) -> int:
    slot = key_slot(key.encode())
    return next(p for p, (lo, hi) in cluster.masters().items() if lo <= slot <= hi)


def rooms_per_master(cluster: RedisCluster, per: int, prefix: str) -> dict[int, list[str]]:
    """``per`` room names on each master (by their slot)."""
    out: dict[int, list[str]] = {port: [] for port in cluster.masters()}
    i = 0
    while any(len(v) < per for v in out.values()):
        room = f"rooms:{prefix}{i}"
        port = master_of(cluster, room)
        if len(out[port]) < per:
            out[port].append(room)
        i += 1
    return out


@pytest.fixture
def rcluster() -> Iterator[RedisCluster]:
    cluster = start_redis_cluster(masters=3, replicas=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nodes(rcluster: RedisCluster, tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(
        *names: str, url: str | None = None, extra: tuple[str, ...] = ()
    ) -> list[ServerProcess]:
        for name in names:
            args = ["--redis", url or rcluster.url, *NODE_ARGS, "--echo", *extra]
            started.append(start_server(*args, node=name, log_dir=tmp_path))
        return started[-len(names) :]

    yield make
    for server in started:
        server.stop()


async def test_chat_and_presence_across_nodes_rooms_on_every_master(
    rcluster: RedisCluster, nodes: Any
) -> None:
    n1, n2, n3 = nodes("n1", "n2", "n3")
    spread = rooms_per_master(rcluster, 2, "c")
    rooms = [room for group in spread.values() for room in group]
    got: dict[str, list[str]] = {room: [] for room in rooms}
    async with Client(n1.ws_url) as sender, Client(n2.ws_url) as reader:
        chans = {}
        for room in rooms:
            ch = reader.channel(room, {"user": "reader"})
            ch.on("new:msg", lambda p, room=room: got[room].append(p["body"]))
            await ch.join()
            chans[room] = sender.channel(room, {"user": "sender"})
            await chans[room].join()
        # Each master holds the sharded subscriptions of its own rooms, nobody else's.
        for port, own in spread.items():
            listed = set(rcluster.cli(port, "PUBSUB", "SHARDCHANNELS", "roost:chat:t:*").split())
            assert {f"roost:chat:t:{{{room}}}" for room in own} <= listed, (port, listed)
            assert all(master_of(rcluster, c[len("roost:chat:t:{") : -1]) == port for c in listed)
        pushes = [chans[r].push("new:msg", {"body": f"{r}/{i}"}) for i in range(30) for r in rooms]
        replies = await asyncio.gather(*pushes)
        assert all(r.ok for r in replies), [r.response for r in replies if not r.ok][:3]
        await until(lambda: all(len(v) >= 30 for v in got.values()), 15, "every room's messages")
        await asyncio.sleep(0.3)
        for room in rooms:
            assert got[room] == [f"{room}/{i}" for i in range(30)], room

    # Presence across nodes, in a room of each master; n3 dies without a goodbye and
    # its users are swept (the per-slot registries) and leave on both survivors.
    presence_rooms = [group[0] for group in spread.values()]
    watchers = []
    for room in presence_rooms:
        watchers += [await Watcher(n1.ws_url, room, "w1").__aenter__()]
        watchers += [await Watcher(n2.ws_url, room, "w2").__aenter__()]
        doomed = await Watcher(n3.ws_url, room, "doomed").__aenter__()
        doomed.client.reconnect = False
    try:
        want = {"doomed": 1, "w1": 1, "w2": 1}
        await until(lambda: all(w.online() == want for w in watchers), 10, "all online")
        n3.proc.kill()
        n3.proc.wait(10)
        await until(
            lambda: all(w.online() == {"w1": 1, "w2": 1} for w in watchers), 15, "doomed leaves"
        )
        await asyncio.sleep(1.5)  # a second sweep by the other survivor would show now
        for w in watchers:
            assert len(w.leaves_of("doomed")) == 1
    finally:
        for w in watchers:
            await w.client.close()
    assert health(n1)["broker"]["connected"] and health(n2)["broker"]["connected"]


async def test_names_refusals_and_roost_publish_on_a_cluster(
    rcluster: RedisCluster, nodes: Any
) -> None:
    (n1,) = nodes("n1")
    # roost.publish finds the cluster and SPUBLISHes (plain PUBLISH reaches no node
    # there): a broadcast and a stored one into a room on each master reach a member.
    rooms = [group[0] for group in rooms_per_master(rcluster, 1, "api").values()]
    got: dict[str, list[Any]] = {room: [] for room in rooms}
    async with Client(n1.ws_url) as member:
        for room in rooms:
            ch = member.channel(room, {"user": "m"})
            ch.on("announce", lambda p, room=room: got[room].append(p["text"]))
            ch.on("new:msg", lambda p, room=room: got[room].append(p["body"]))
            await ch.join()
        offsets = []
        for room in rooms:
            await roost.publish_async(rcluster.url, room, "announce", {"text": f"hi {room}"})
            offsets.append(
                await roost.publish_async(
                    rcluster.url, room, "new:msg", {"user": "py", "body": "kept"}, store=True
                )
            )
        await until(lambda: all(len(v) == 2 for v in got.values()), 10, "both broadcasts")
        assert got == {room: [f"hi {room}", "kept"] for room in rooms}
        assert all(isinstance(o, int) and o >= 1 for o in offsets), offsets
    # The node registry (the dashboard's list) is read from every master: a name whose key
    # lives on another master than n1's is listed beside it.
    owner = master_of_key(rcluster, "roost:chat:node:n1")
    probe = next(
        f"probe{i}"
        for i in range(1000)
        if master_of_key(rcluster, f"roost:chat:node:probe{i}") != owner
    )
    broker = RedisBroker(rcluster.url)
    await broker.start(probe, lambda envs: None)
    try:
        assert {"n1", probe} <= set(await broker.nodes())
    finally:
        await broker.stop()
    # The name's key lives on one master; a twin started through another one is refused.
    other = next(n for n in rcluster.nodes if n.url != rcluster.url)
    twin = start_server("--redis", other.url, node="n1", wait=False)
    try:
        assert twin.proc.wait(20) == 1
        assert "already in use" in twin.log()
    finally:
        twin.stop()
    glob = start_server("--redis", rcluster.url, "--pubsub-mode", "global", node="g", wait=False)
    try:
        assert glob.proc.wait(20) == 1
        assert "global cannot run on a Redis Cluster" in glob.log()
    finally:
        glob.stop()


async def test_wait_replicas_on_a_cluster(rcluster: RedisCluster, nodes: Any) -> None:
    """``--redis-wait-replicas``: WAIT goes to each master's own pipeline. One replica
    per master: with 1 every message is acknowledged; with 2 the sender gets
    ``timeout`` (stored, not known durable), and the message (published) reaches members."""
    (one,) = nodes("w1", extra=("--redis-wait-replicas", "1"))
    (two,) = nodes("w2", extra=("--redis-wait-replicas", "2"))
    rooms = [group[0] for group in rooms_per_master(rcluster, 1, "w").values()]
    members = [Member(f"m{i}", [one.ws_url], room, failover=False) for i, room in enumerate(rooms)]
    acks = [
        Publisher(Member(f"a{i}", [one.ws_url], r, failover=False)) for i, r in enumerate(rooms)
    ]
    refs = [
        Publisher(Member(f"r{i}", [two.ws_url], r, failover=False)) for i, r in enumerate(rooms)
    ]
    everyone = members + [p.member for p in acks + refs]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        await asyncio.gather(*(p.send_many(5) for p in acks))  # each asserts ok
        refused = await asyncio.gather(*(p.send() for p in refs))
        for push in refused:
            assert push.status == "error", push
            assert push.response == {"reason": "timeout"}, push  # stored, not known durable
        await settle(members, acks, timeout=10)
        for member, push in zip(members, refused, strict=True):
            await until(lambda m=member, p=push: p.body in [x.body for x in m.stream], 5, "sent")
        for room in rooms:
            assert check_delivery(in_room(members, room), in_room(acks, room))
    finally:
        await close_all(everyone)
    assert health(two)["broker"]["unreplicated"] >= 1


@pytest.mark.parametrize("wait", [False, True], ids=["async-replication", "wait-replicas-1"])
async def test_master_killed_members_get_every_acked_message(
    rcluster: RedisCluster, nodes: Any, wait: bool
) -> None:
    n1, n2 = nodes("n1", "n2", extra=("--redis-wait-replicas", "1") if wait else ())
    u1, u2 = n1.ws_url, n2.ws_url
    spread = rooms_per_master(rcluster, 1, "f")
    victim = next(iter(spread))
    rooms = [group[0] for group in spread.values()]
    members: list[Member] = []
    pubs: list[Publisher] = []
    for room in rooms:
        listeners, publishers = room_of(room, (u1, u2), 2, 2)
        members += listeners
        pubs += publishers
    everyone = members + [p.member for p in pubs]
    try:
        stop, tasks = await start_room(everyone, pubs)
        await asyncio.sleep(1.0)
        killed = next(n for n in rcluster.nodes if n.port == victim)
        await asyncio.to_thread(killed.stop)  # SIGKILL
        t_kill = time.monotonic()
        await asyncio.to_thread(rcluster.wait_promoted, victim)  # its replica took over
        t_back = time.monotonic()
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        for room in rooms:  # the checker takes one room's members and publishers
            await settle(in_room(everyone, room), in_room(pubs, room), timeout=15)
        verdicts = {r: check_delivery(in_room(everyone, r), in_room(pubs, r)) for r in rooms}
    finally:
        await close_all(everyone)
    victim_room = spread[victim][0]
    victims = in_room(pubs, victim_room)
    after = sum(1 for p in victims for x in p.acked if x.sent_at >= t_back)
    before = sum(1 for p in victims for x in p.acked if x.sent_at < t_kill)
    errors = {room: sum(len(p.with_status("error")) for p in in_room(pubs, room)) for room in rooms}
    for room, verdict in verdicts.items():
        where = "failed-over master" if room == victim_room else "other master"
        took = f"{t_back - t_kill:.1f}s"
        label = f"cluster master killed ({where}{', WAIT 1' if wait else ''})"
        report(label, verdict, errors=errors[room], failover=took)
    if wait:  # acked through the replica's WAIT; the promoted one has none: refused after
        assert before > 0 and after == 0 and errors[victim_room] > 0, (before, after, errors)
    else:
        assert after > 0, "nothing acked on the failed-over master's room: the scenario did not run"
    for room, verdict in verdicts.items():
        assert verdict, f"{room}: {verdict.message()}"
    # One pipeline per master: the rooms of the healthy masters never saw an error
    # (with WAIT a replica late past the WAIT timeout on this busy machine may refuse one).
    if not wait:
        assert all(n == 0 for room, n in errors.items() if room != victim_room), errors
    assert health(n1)["broker"]["connected"] and health(n2)["broker"]["connected"]


async def test_slot_migrated_while_a_room_is_busy(rcluster: RedisCluster, nodes: Any) -> None:
    n1, n2 = nodes("n1", "n2")
    u1, u2 = n1.ws_url, n2.ws_url
    room = "rooms:moving"
    channel = f"roost:chat:t:{{{room}}}"
    source = master_of(rcluster, room)
    target = next(p for p in rcluster.masters() if p != source)
    members, pubs = room_of(room, (u1, u2), 4, 3)
    everyone = members + [p.member for p in pubs]
    try:
        stop, tasks = await start_room(everyone, pubs)
        await asyncio.sleep(1.0)
        slot = key_slot(channel.encode())
        moved = await asyncio.to_thread(rcluster.migrate_slot, slot, source, target)
        t_moved = time.monotonic()
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await settle(everyone, pubs, timeout=15)
        verdict = check_delivery(everyone, pubs)
        # Both nodes' subscriptions followed the slot to its new master.
        listed = rcluster.cli(target, "PUBSUB", "SHARDNUMSUB", channel).split()
        left = rcluster.cli(source, "PUBSUB", "SHARDCHANNELS").split()
    finally:
        await close_all(everyone)
    after = sum(1 for p in pubs for x in p.acked if x.sent_at >= t_moved)
    report("cluster slot migrated", verdict, keys_moved=moved, after=after)
    assert moved >= 2  # the room's stream and meta went with the slot
    assert after > 0, "nothing acked after the migration: the scenario did not run"
    assert verdict, verdict.message()
    assert listed == [channel, "2"] and channel not in left, (listed, left)


async def test_join_burst_on_a_cluster_queues_instead_of_failing(
    rcluster: RedisCluster, nodes: Any
) -> None:
    """300 joins into 60 rooms at once on one node: every one answered ok with a cursor.

    redis-py's cluster client fails a command at once when a master's pool (32) is busy
    (``MaxConnectionsError``); roost's commands queue for a connection up to the command
    deadline instead, as on one Redis (the bench's cluster scenario hit the refusals)."""
    (n1,) = nodes("n1")
    rooms = [f"rooms:cb-{k}" for k in range(60)]
    burst = [Member(f"b{i}", [n1.ws_url], rooms[i % 60], failover=False) for i in range(300)]
    try:
        gate = asyncio.Event()
        joins = [asyncio.create_task(m.start(20.0, gate)) for m in burst]
        await asyncio.wait_for(asyncio.gather(*(m.connected.wait() for m in burst)), 30)
        gate.set()  # 300 joins at once
        results = await asyncio.gather(*joins, return_exceptions=True)
    finally:
        await close_all(burst)
    refused = [
        f"{m.name}: {res!r} {m.joins[:1]}"
        for m, res in zip(burst, results, strict=True)
        if isinstance(res, BaseException) or not m.joins or m.joins[0].status != "ok"
    ]
    assert not refused, f"{len(refused)} of 300 joins not ok: {refused[:3]}"


async def test_topics_that_would_break_the_hash_tag_work_on_a_cluster(
    rcluster: RedisCluster,
) -> None:
    """Issue 26: a topic that is empty or starts with ``}`` would have an empty hash tag
    (``{}...``), its names hashed whole into different slots: the stored publish and
    every presence script failed with CROSSSLOT. Now each one is delivered through its
    sharded channel, kept in its history, and tracked, listed and removed in presence,
    next to a topic with braces inside (its tag is its start, as before)."""
    got: list[Envelope] = []
    broker = RedisBroker(rcluster.url)
    store = broker.presence_store(ttl=30.0)
    await broker.start("tags", got.extend)

    async def changed(topic: str, joins: list[Entry], leaves: list[Entry]) -> None:
        pass

    await store.start("tags", changed)
    try:
        for topic in ["}x", "}", "", "a}b", "{x"]:
            await broker.subscribe(topic)
            offset = await roost.publish_async(
                rcluster.url, topic, "new:msg", {"body": topic}, store=True
            )
            assert offset == 1, topic
            await until(lambda t=topic: any(e.topic == t for e in got), 10, f"{topic!r} delivered")
            recovery = await broker.history(topic, None, HistoryPolicy())
            assert [json.loads(m.payload)["body"] for m in recovery.messages] == [topic]
            ref = new_ref()
            entry = Entry(ref, "al", {"phx_ref": ref})
            await store.add(topic, entry)
            assert [e.ref for e in await store.list(topic)] == [ref], topic
            assert await store.remove(topic, [ref]) == [entry], topic
    finally:
        await store.stop()
        await broker.stop()
