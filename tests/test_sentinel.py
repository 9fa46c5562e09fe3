"""Redis Sentinel (issue 16): ``redis+sentinel://`` URLs, failover, ``--redis-wait-replicas``.

Real topologies on loopback free ports (tests/support.py ``start_sentinel_topology``):
a master, a replica and three sentinels with a 1 s down-after, nodes on the sentinel
URL, the master SIGKILLed mid-stream. The fault suite's recorder and checker
(tests/faults/harness.py) judge delivery. And, without Sentinel, what a promoted replica
that lacks the last writes does to history: a new epoch, never reused offsets.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from faults.harness import (
    NODE_ARGS,
    Lab,
    Member,
    Publisher,
    check_delivery,
    close_all,
    eventually,
    report,
    settle,
)
from roost.brokers.redis import RedisBroker
from roost.brokers.redis.connection import safe_url
from roost.brokers.redis.history import continues
from roost.brokers.redis.sentinel import parse_sentinel_url
from roost.config import ServeConfig
from roost.protocol import Encoded
from roost.pubsub import Envelope, HistoryPolicy, HistoryUnavailable, Position

from support import (
    RedisProcess,
    SentinelTopology,
    ServerProcess,
    replicas_online,
    start_redis,
    start_sentinel_topology,
    start_server,
)

# -- the URL ------------------------------------------------------------------------------


def test_sentinel_urls_parse_and_bad_ones_say_why() -> None:
    t = parse_sentinel_url("rediss+sentinel://u:p%40ss@a:26379,[::1]:26380,b/mymaster/2")
    assert t.sentinels == (("a", 26379), ("::1", 26380), ("b", 26379))
    assert (t.service, t.db, t.username, t.password, t.tls) == ("mymaster", 2, "u", "p@ss", True)
    assert t.sentinel_auth == {}
    t = parse_sentinel_url("redis+sentinel://h:1/m?sentinel_password=s&sentinel_username=su")
    assert (t.tls, t.db, t.password) == (False, 0, None)
    assert t.sentinel_auth == {"password": "s", "username": "su"}
    for bad, why in [
        ("redis+sentinel://h:1", "names the master"),
        ("redis+sentinel://h:1/m/x", "database"),
        ("redis+sentinel://h:99999/m", "sentinel address"),
        ("redis+sentinel://h:1,:2/m", "sentinel address"),
        ("redis+sentinel://h:1/m?db=2", "unknown"),
        ("redis://h:1/m", "begins with"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_sentinel_url(bad)
    shown = safe_url("redis+sentinel://u:pw@h:1,h:2/m?sentinel_password=spw")
    assert "pw" not in shown.replace("sentinel_password", "") and "spw" not in shown


def test_wait_timeout_must_be_below_the_redis_timeout() -> None:
    with pytest.raises(ValueError, match="--redis-wait-timeout"):
        ServeConfig(redis_wait_replicas=1, redis_wait_timeout=3.0, redis_timeout=3.0)
    assert ServeConfig(redis_wait_replicas=1).redis_wait_timeout == 0.2


def test_which_positions_a_new_epoch_continues() -> None:
    """Positions of the previous epoch up to its base, and empty positions whose first
    history was the previous epoch, continue in the new one; nothing else does."""
    day = 86_400_000
    prev, new = "aaaaaaaa.1000000.n", "bbbbbbbb.2000000.m"
    assert continues(Position(5, prev), prev, 8, new, day) == Position(5, new)
    assert continues(Position(8, prev), prev, 8, new, day) == Position(8, new)
    assert continues(Position(9, prev), prev, 8, new, day) == Position(9, prev)
    assert continues(Position(3, "other"), prev, 8, new, day) == Position(3, "other")
    assert continues(Position(3, prev), None, 0, new, day) == Position(3, prev)
    empty_then = "~aaaaaaaa.999000"  # joined empty on the same Redis, before prev began
    assert continues(Position(4, empty_then), prev, 8, new, day) == Position(4, new)
    assert continues(Position(4, "~cccccccc.999000"), prev, 8, new, day).epoch != new


# -- a promoted replica that lacks writes ----------------------------------------------------


def replica_of(master: RedisProcess, workdir: Path) -> RedisProcess:
    replica = start_redis("--dir", str(workdir), "--replicaof", "127.0.0.1", str(master.port))
    deadline = time.monotonic() + 10
    while not replicas_online(master.port, 1):
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    return replica


def message(i: int) -> Envelope:
    return Envelope("t", 0, "rooms:failover", "new:msg", Encoded.of({"body": f"m{i}"}))


async def chat_checked(nodes: list[ServerProcess], room: str) -> None:
    """Members and publishers on every node chat a little: every message arrives once, in order."""
    members, pubs = crowd([n.ws_url for n in nodes], room)
    everyone = members + [p.member for p in pubs]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        for pub in pubs:
            await pub.send_many(3)
        await settle(everyone, pubs, timeout=10)
        verdict = check_delivery(everyone, pubs)
    finally:
        await close_all(everyone)
    assert verdict, verdict.message()


@pytest.mark.parametrize("wait", [False, True], ids=["async", "wait-replicas-1"])
async def test_a_promoted_replica_that_lacks_writes_starts_a_new_epoch(
    tmp_path: Path, wait: bool
) -> None:
    """The meta hash (epoch, offset) is replicated asynchronously: a promoted replica may
    hold an older offset in the SAME epoch. New messages must not reuse offsets clients
    saw under that epoch: a new epoch begins. Whether a position of the old epoch may
    continue in it depends on what was acknowledged: without WAIT messages 6-8 were
    acknowledged and are lost, so every old position — even one before them — gets
    recovered: false (recovering 3 or 5 from the replica would skip 6-8: a hole); with
    WAIT 1 messages 6-8 were refused (the replica never had them), nothing acknowledged
    is lost, and a client at or before the replica's offset recovers exactly."""
    master = start_redis("--repl-diskless-sync-delay", "0")
    replica = replica_of(master, tmp_path)
    policy = HistoryPolicy()
    a = RedisBroker(master.url, timeout=0.5, wait_replicas=1 if wait else 0)
    b: RedisBroker | None = None
    try:
        await a.start("a", lambda e: None)
        kept = [await a.publish_stored(message(i), policy) for i in range(1, 6)]
        with redis.Redis(port=master.port) as r:
            assert r.wait(1, 2000) == 1  # the replica has offsets 1-5
        with redis.Redis(port=replica.port) as r:
            r.replicaof("NO", "ONE")  # cut off (as by a partition), promoted early
        epoch = kept[0].epoch
        if wait:
            for i in range(6, 9):  # stored on the master, never acknowledged
                with pytest.raises(HistoryUnavailable):
                    await a.publish_stored(message(i), policy)
        else:
            lost = [await a.publish_stored(message(i), policy) for i in range(6, 9)]
            assert [m.offset for m in lost] == [6, 7, 8] and {m.epoch for m in lost} == {epoch}
        master.stop()  # SIGKILL: offsets 6-8 live only in what clients saw
        await a.stop()
        b = RedisBroker(replica.url, timeout=0.5)
        await b.start("b", lambda e: None)
        new = [await b.publish_stored(message(i), policy) for i in range(9, 13)]
        assert all(m.epoch != epoch for m in new), "a promoted replica reused the epoch"
        assert [m.offset for m in new] == [6, 7, 8, 9]
        for seen in (6, 8):  # a client that saw a lost (or refused) message
            back = await b.history("rooms:failover", Position(seen, epoch), policy)
            assert back.recovered is False and back.position.epoch == new[0].epoch
        for seen in (5, 3):  # a client that saw only what the replica had
            back = await b.history("rooms:failover", Position(seen, epoch), policy)
            if not wait:  # acknowledged 6-8 are gone: no recovery may skip them
                assert back.recovered is False and back.position.epoch == new[0].epoch
                continue
            assert back.recovered is True, seen
            assert [m.offset for m in back.messages] == list(range(seen + 1, 10))
            bodies = [json.loads(m.payload)["body"] for m in back.messages]
            assert bodies == [f"m{i}" for i in range(seen + 1, 6)] + ["m9", "m10", "m11", "m12"]
    finally:
        if b is not None:
            await b.stop()
        master.stop()
        replica.stop()


async def test_a_read_on_a_promoted_replica_begins_the_new_epoch(tmp_path: Path) -> None:
    """A join read on the promoted replica before anything is written there must not
    answer from the old epoch: the replica's offset is older than what clients saw
    (messages 4-5, acknowledged without WAIT, are lost). The read begins the new epoch
    itself; the next publish stays in it and does not reuse the old epoch's offsets."""
    master = start_redis("--repl-diskless-sync-delay", "0")
    replica = replica_of(master, tmp_path)
    policy = HistoryPolicy()
    a = RedisBroker(master.url, timeout=0.5)
    b: RedisBroker | None = None
    try:
        await a.start("a", lambda e: None)
        kept = [await a.publish_stored(message(i), policy) for i in range(1, 4)]
        with redis.Redis(port=master.port) as r:
            assert r.wait(1, 2000) == 1
        with redis.Redis(port=replica.port) as r:
            r.replicaof("NO", "ONE")
        for i in (4, 5):
            await a.publish_stored(message(i), policy)
        master.stop()
        await a.stop()
        b = RedisBroker(replica.url, timeout=0.5)
        await b.start("b", lambda e: None)
        epoch = kept[0].epoch
        for seen in (1, 3, 5):
            back = await b.history("rooms:failover", Position(seen, epoch), policy)
            assert back.recovered is False and back.position.epoch != epoch, seen
        read_epoch = back.position.epoch
        after = await b.publish_stored(message(6), policy)
        assert (after.offset, after.epoch) == (4, read_epoch)
    finally:
        if b is not None:
            await b.stop()
        master.stop()
        replica.stop()


# -- WAIT on plain Redis ----------------------------------------------------------------------


async def test_wait_replicas_on_plain_redis(tmp_path: Path) -> None:
    """``--redis-wait-replicas 1`` without Sentinel: with a replica a message is
    acknowledged; without one the sender gets ``timeout`` (maybe stored) — and the
    message, stored on the master and published, still reaches the members."""
    master = start_redis("--repl-diskless-sync-delay", "0")
    lab = Lab(tmp_path)
    try:
        node = start_server(
            "--redis", master.url, *NODE_ARGS, "--redis-wait-replicas", "1",
            node="w1", log_dir=tmp_path,
        )  # fmt: skip
        lab.nodes.append(node)
        member = Member("m", [node.ws_url], "rooms:wait", failover=False)
        pub = Publisher(Member("p", [node.ws_url], "rooms:wait", failover=False))
        try:
            await member.start()
            await pub.member.start()
            refused = await pub.send()
            assert refused.status == "error", refused
            assert refused.response == {"reason": "timeout"}  # stored, not known durable
            assert await eventually(lambda: len(member.stream) == 1, 5)
            assert member.stream[0].body == refused.body  # sent, though not acknowledged
            replica = replica_of(master, tmp_path)
            try:
                await pub.send_many(3)
            finally:
                replica.stop()
            await settle([member], [pub], timeout=5)
            assert check_delivery([member], [pub])
        finally:
            await close_all([member, pub])
    finally:
        lab.close()
        master.stop()


# -- a real topology: master + replica + 3 sentinels, two nodes on the sentinel URL ----------


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def topology(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SentinelTopology]:
    """Master, replicas (1, or the test's parameter) and three sentinels."""
    topology = start_sentinel_topology(tmp_path, replicas=getattr(request, "param", 1))
    try:
        yield topology
    finally:
        topology.stop()


def sentinel_nodes(lab: Lab, topology: SentinelTopology, *extra: str) -> list[str]:
    urls = []
    for name in ("s1", "s2"):
        node = start_server(
            "--redis", topology.url(), *NODE_ARGS, *extra, node=name, log_dir=lab.tmp
        )
        lab.nodes.append(node)
        urls.append(node.ws_url)
    return urls


async def failed_over(topology: SentinelTopology, old: int, timeout: float = 20.0) -> int:
    """Wait until the sentinels name a new master; its port."""
    deadline = time.monotonic() + timeout
    while (port := await asyncio.to_thread(topology.master_port)) == old:
        assert time.monotonic() < deadline, "the sentinels did not fail over"
        await asyncio.sleep(0.1)
    return port


def crowd(urls: list[str], room: str) -> tuple[list[Member], list[Publisher]]:
    """Members and publishers spread over both nodes; members never move."""
    u1, u2 = urls
    members = [
        Member(f"m{i}", [u1, u2] if i % 2 else [u2, u1], room, failover=False) for i in range(4)
    ]
    pubs = [
        Publisher(Member(name, order, room, failover=False))
        for name, order in (("p1", [u1, u2]), ("p2", [u2, u1]))
    ]
    return members, pubs


# WAIT 1 with two replicas: after the failover the new master keeps one (a lone replica
# promoted leaves none, and then every stored publish is refused, as it should be).
@pytest.mark.parametrize(
    ("topology", "wait"),
    [(1, False), (2, True)],
    ids=["async-replication", "wait-replicas-1"],
    indirect=["topology"],
)
async def test_failover_mid_stream(lab: Lab, topology: SentinelTopology, wait: bool) -> None:
    """The master SIGKILLed while publishers send: the sentinels promote the replica,
    both nodes reconnect to it, resubscribe and catch every topic up from its cursor.
    Members connected throughout get every acknowledged message exactly once, in order
    (with WAIT: guaranteed; without: nothing duplicated or reordered, and on loopback
    the replica is in step, so nothing is missing either — reported, not promised).
    A member that left before the kill rejoins after it with ``since``: exactly what
    it missed, or recovered: false with a new epoch — never partial."""
    extra = ("--redis-wait-replicas", "1") if wait else ()
    urls = sentinel_nodes(lab, topology, *extra)
    members, pubs = crowd(urls, "rooms:failover")
    everyone = members + [p.member for p in pubs]
    away = members[0]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop)) for p in pubs]
        await asyncio.sleep(0.7)
        assert away.client is not None
        await away.client.close()  # gone before the kill; rejoins after it with since
        await asyncio.sleep(0.3)
        old = topology.master.port
        t_kill = time.monotonic()
        topology.master.stop()  # SIGKILL
        await failed_over(topology, old)
        t_new = time.monotonic()
        assert await eventually(
            lambda: all(any(p.sent_at > t_new for p in pub.acked) for pub in pubs), 15
        ), "no message acknowledged after the failover"
        await away.start()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await settle(everyone, pubs, timeout=10)
        verdict = check_delivery(everyone, pubs)
    finally:
        await close_all(everyone)
    after = sum(1 for pub in pubs for p in pub.acked if p.sent_at > t_new)
    refused = sum(len(p.with_status("error")) + len(p.with_status("lost")) for p in pubs)
    report(
        f"sentinel failover ({'WAIT 1' if wait else 'async'})",
        verdict,
        failover_s=round(t_new - t_kill, 2),
        refused=refused,
        acked_after=after,
        rejoin_recovered=away.joins[-1].response.get("recovered"),
    )
    assert away.joins[-1].since is not None and away.joins[-1].status == "ok"
    if wait:
        assert verdict, verdict.message()
    else:  # lost writes would show as missing; nothing else may go wrong
        assert verdict.duplicated == verdict.reordered == verdict.early_joins == 0, (
            verdict.message()
        )
        assert not any(m.problems for m in everyone), verdict.message()


async def test_failover_to_a_replica_missing_acked_writes(
    lab: Lab, topology: SentinelTopology
) -> None:
    """Without WAIT an acknowledged message can be lost: the replica is cut off, the
    master acknowledges messages (members receive them), then dies and the replica is
    promoted without them. Its new messages reuse none of those offsets in the old
    epoch: members connected throughout get every message sent after the failover
    (the old code dropped them as duplicates of the lost offsets), and a rejoin with
    the position of a lost message is recovered: false with a new epoch."""
    urls = sentinel_nodes(lab, topology)
    members, pubs = crowd(urls, "rooms:cutoff")
    everyone = members + [p.member for p in pubs]
    replica = topology.replicas[0]
    assert replica.proc is not None
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        for pub in pubs:
            await pub.send_many(5)
        await settle(everyone, pubs, timeout=10)
        # Cut the replica off: frozen, its link killed (what the kernel buffered is all
        # it will have), then acknowledged messages it never gets.
        replica.proc.send_signal(signal.SIGSTOP)
        with redis.Redis(port=topology.master.port) as r:
            r.client_kill_filter(_type="replica")
        before = sum(len(pub.acked) for pub in pubs)
        for pub in pubs:
            await pub.send_many(3)
        await settle(everyone, pubs, timeout=10)
        lost = sum(len(pub.acked) for pub in pubs) - before
        seen = Position(int(members[0].offset or 0), str(members[0].epoch))
        old = topology.master.port
        topology.master.stop()
        replica.proc.send_signal(signal.SIGCONT)
        await failed_over(topology, old)
        t_new = time.monotonic()
        for pub in pubs:  # errors while the nodes find the new master: send again
            while sum(1 for p in pub.acked if p.sent_at > t_new) < 5:
                if (await pub.send()).status != "ok":
                    await asyncio.sleep(0.1)
        await settle(everyone, pubs, timeout=10)
        verdict = check_delivery(everyone, pubs)
        rejoin = Member("r", urls, "rooms:cutoff", failover=False)
        rejoin.epoch, rejoin.offset = seen.epoch, seen.offset
        everyone.append(rejoin)
        reply = await rejoin.start()
    finally:
        await close_all(everyone)
    report("sentinel failover, replica cut off", verdict, lost_acked=lost)
    assert verdict, verdict.message()
    assert reply["recovered"] is False and reply["epoch"] != seen.epoch, reply


async def test_credentials_for_the_master_and_for_the_sentinels(tmp_path: Path) -> None:
    """The URL's password is the master's (and replicas'); the sentinels' own comes as
    ``sentinel_password``. Two nodes chat through such a topology; no log shows either."""
    topology = start_sentinel_topology(
        tmp_path,
        redis_args=("--requirepass", "m-secret", "--masterauth", "m-secret"),
        sentinel_conf="sentinel auth-pass mymaster m-secret\nrequirepass s-secret\n",
        sentinel_password="s-secret",
    )
    lab = Lab(tmp_path)
    url = topology.url(auth=":m-secret@") + "?sentinel_password=s-secret"
    try:
        nodes = [
            start_server("--redis", url, *NODE_ARGS, node=name, log_dir=tmp_path)
            for name in ("c1", "c2")
        ]
        lab.nodes.extend(nodes)
        await chat_checked(nodes, "rooms:auth")
        logs = lab.logs(200)
        assert "redis broker up" in logs and "secret" not in logs
    finally:
        lab.close()
        topology.stop()


async def test_tls_to_the_sentinels_and_the_master(tmp_path: Path) -> None:
    """``rediss+sentinel://`` with --redis-ca/--redis-cert/--redis-key: the sentinels and
    the master are both reached over TLS (with the client certificate), and two nodes
    chat through it."""
    from test_redis_tls_acl import make_certs

    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    topology = start_sentinel_topology(tmp_path, tls_dir=certs)
    lab = Lab(tmp_path)
    tls = ("--redis-ca", str(certs / "ca.pem"), "--redis-cert", str(certs / "client.pem"),
           "--redis-key", str(certs / "client.key"))  # fmt: skip
    try:
        nodes = [
            start_server(
                "--redis",
                topology.url("rediss+sentinel"),
                *tls,
                *NODE_ARGS,
                node=name,
                log_dir=tmp_path,
            )
            for name in ("t1", "t2")
        ]
        lab.nodes.extend(nodes)
        await chat_checked(nodes, "rooms:tls")
    finally:
        lab.close()
        topology.stop()


async def test_inspect_through_sentinel(tmp_path: Path, topology: SentinelTopology) -> None:
    """`roost inspect --redis redis+sentinel://…` finds the master and shows a message."""
    lab = Lab(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roost", "inspect", "--redis", topology.url(), "--json",
        "--count", "1", "--event", "new:msg",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(10):
            while b"subscribed to" not in await proc.stderr.readline():
                pass
        node = start_server("--redis", topology.url(), *NODE_ARGS, node="i1", log_dir=tmp_path)
        lab.nodes.append(node)
        pub = Publisher(Member("p", [node.ws_url], "rooms:inspect", failover=False))
        try:
            await pub.member.start()
            await pub.send_many(1)
        finally:
            await close_all([pub])
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err
        assert json.loads(out)["payload"]["body"] == pub.pushes[0].body
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        lab.close()
