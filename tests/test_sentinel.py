"""Redis Sentinel (issue 16): ``redis+sentinel://`` URLs, failover, ``--redis-wait-replicas``.

Real topologies on loopback free ports (tests/support.py ``start_sentinel_topology``):
a master, a replica and three sentinels with a 1 s down-after, nodes on the sentinel
URL, the master SIGKILLed mid-stream. The fault suite's recorder and checker
(tests/faults/harness.py) judge delivery. And, without Sentinel, what a promoted replica
that lacks the last writes does to history: a new epoch, never reused offsets.
"""

from __future__ import annotations

import json
import time

import redis

from roost.brokers.redis import RedisBroker
from roost.protocol import Encoded
from roost.pubsub import Envelope, HistoryPolicy, Position

from support import RedisProcess, start_redis


def replica_of(master: RedisProcess) -> RedisProcess:
    replica = start_redis("--replicaof", "127.0.0.1", str(master.port))
    with redis.Redis(port=replica.port) as r:
        deadline = time.monotonic() + 10
        while r.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
    return replica


def message(i: int) -> Envelope:
    return Envelope("t", 0, "rooms:failover", "new:msg", Encoded.of({"body": f"m{i}"}))


async def test_a_promoted_replica_that_lacks_writes_starts_a_new_epoch() -> None:
    """The meta hash (epoch, offset) is replicated asynchronously: a promoted replica may
    hold an older offset in the SAME epoch. New messages must not reuse offsets clients
    saw under that epoch; a client past the replica's offset gets recovered: false, a
    client at or before it recovers exactly (what it missed, the new messages)."""
    master = start_redis()
    replica = replica_of(master)
    policy = HistoryPolicy()
    a = RedisBroker(master.url, timeout=0.5)
    b: RedisBroker | None = None
    try:
        await a.start("a", lambda e: None)
        kept = [await a.publish_stored(message(i), policy) for i in range(1, 6)]
        with redis.Redis(port=master.port) as r:
            assert r.wait(1, 2000) == 1  # the replica has offsets 1-5
        with redis.Redis(port=replica.port) as r:
            r.replicaof("NO", "ONE")  # cut off (as by a partition), promoted early
        lost = [await a.publish_stored(message(i), policy) for i in range(6, 9)]
        epoch = kept[0].epoch
        assert [m.offset for m in lost] == [6, 7, 8] and {m.epoch for m in lost} == {epoch}
        master.stop()  # SIGKILL: offsets 6-8 live only in what clients saw
        await a.stop()
        b = RedisBroker(replica.url, timeout=0.5)
        await b.start("b", lambda e: None)
        new = [await b.publish_stored(message(i), policy) for i in range(9, 13)]
        assert all(m.epoch != epoch for m in new), "a promoted replica reused the epoch"
        assert [m.offset for m in new] == [6, 7, 8, 9]
        for seen in (6, 8):  # a client that saw a lost message
            back = await b.history("rooms:failover", Position(seen, epoch), policy)
            assert back.recovered is False and back.position.epoch == new[0].epoch
        for seen in (5, 3):  # a client that saw only what the replica had: exact
            back = await b.history("rooms:failover", Position(seen, epoch), policy)
            assert back.recovered is True, seen
            assert [m.offset for m in back.messages] == list(range(seen + 1, 10))
            bodies = [json.loads(m.payload)["body"] for m in back.messages]
            assert bodies == [f"m{i}" for i in range(seen + 1, 6)] + ["m9", "m10", "m11", "m12"]
    finally:
        if b is not None:
            await b.stop()
        master.stop()
        replica.stop()
