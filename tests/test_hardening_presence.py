"""Issue 14, finding 4: presence entries in Redis are signed and size-bounded.

Written by an attacker with write access to Redis (a forged, moved or oversized entry),
an entry is not listed in a joiner's ``presence_state``, not broadcast by a node's
sweep, and is counted in ``/metrics`` (``roost_presence_entries_dropped_total``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from roost.brokers.memory import MemoryBroker
from roost.brokers.redis.keys import Keys
from roost.brokers.redis.presence import RedisPresenceStore
from roost.brokers.redis.presence_codec import MAX_ENTRY_BYTES, EntryCodec, EntryTooLarge
from roost.channels.presence import Presence
from roost.pubsub import PubSub
from roost.pubsub.presence import Entry
from test_ops import metric
from test_presence import Watcher

from support import RedisProcess, ServerProcess, start_server, until

KEY = "s3cret-signing-key"
KEYS = Keys()
TIMEOUT = 1.5  # --presence-timeout: a sweep every 0.5 s
DROPPED = "roost_presence_entries_dropped_total"


@pytest.fixture
def node(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(name: str, signed: bool = True) -> ServerProcess:
        args = ["--redis", redis_server.url, "--presence-timeout", str(TIMEOUT)]
        if signed:
            args += ["--redis-signing-key", KEY]
        server = start_server(*args, "--probe-interval", "0.5", node=name, log_dir=tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(signal.SIGKILL)


def plant(url: str, topic: str, ref: str, value: bytes, expiry_ms: int) -> None:
    """Write an entry straight into Redis, as the store lays it out (hash, zset, registry)."""
    r = redis.Redis.from_url(url)
    try:
        r.hset(f"{KEYS.base}:p:{{{topic}}}", ref, value)
        r.zadd(f"{KEYS.base}:pz:{{{topic}}}", {ref: expiry_ms})
        r.zadd(f"{KEYS.base}:presence", {topic: expiry_ms}, lt=True)
    finally:
        r.close()


def unsigned(key: str, ref: str, **meta: Any) -> bytes:
    return orjson.dumps({"k": key, "n": "p1", "m": {**meta, "phx_ref": ref}})


def stored(url: str, topic: str) -> dict[str, bytes]:
    r = redis.Redis.from_url(url)
    try:
        raw = r.hgetall(f"{KEYS.base}:p:{{{topic}}}")
    finally:
        r.close()
    return {k.decode(): v for k, v in raw.items()}


def now_ms(offset: float = 0.0) -> int:
    return int((time.time() + offset) * 1000)


def mentioned(w: Watcher) -> set[str]:
    """Every key a watcher was ever told about (state, joins, leaves)."""
    keys = set(w.state or {})
    for diff in w.diffs:
        keys |= set(diff["joins"]) | set(diff["leaves"])
    return keys


async def barrier(server: ServerProcess, topic: str, watchers: list[Watcher], name: str) -> None:
    """A join on ``server``: once every watcher saw it, they saw any diff before it."""
    async with Watcher(server.ws_url, topic, name):
        await until(lambda: all(name in w.online() for w in watchers), what=f"{name} seen")


async def planted_are_dropped(
    server: ServerProcess, url: str, topic: str, plant_them: Callable[[], int]
) -> None:
    """With ``al`` in the room, ``plant_them`` writes bad entries (one of them expired,
    under the field ``expired``) and says how many; a joiner's state does not list them,
    the sweep does not broadcast them, and /metrics counts every one."""
    async with Watcher(server.ws_url, topic, "al") as al:
        await until(lambda: al.online() == {"al": 1}, what="al online")
        planted = plant_them()
        async with Watcher(server.ws_url, topic, "bo") as bo:
            await until(lambda: bo.state is not None, what="bo's presence_state")
            assert set(bo.state or {}) == {"al"}
            await until(lambda: "expired" not in stored(url, topic), what="the sweep")
            await until(lambda: metric(server.url, DROPPED) >= planted, what="drops counted")
            await barrier(server, topic, [al, bo], "cy")
            for w in (al, bo):
                assert mentioned(w) <= {"al", "bo", "cy"}, w.diffs


async def test_forged_entries_are_neither_listed_nor_swept_and_are_counted(
    redis_server: RedisProcess, node: Callable[..., ServerProcess]
) -> None:
    p1, url, topic = node("p1"), redis_server.url, "rooms:forged"

    def forge() -> int:
        plant(url, topic, "mal", unsigned("mallory", "mal"), now_ms(3600))  # no signature
        forged = unsigned("eve", "eve")[:-1] + b',"s":"' + b"0" * 64 + b'"}'
        plant(url, topic, "eve", forged, now_ms(3600))  # a signature that is not one
        plant(url, topic, "expired", unsigned("zombie", "expired"), now_ms(-60))
        return 3

    await planted_are_dropped(p1, url, topic, forge)
    assert "presence: dropped entries read from Redis" in p1.log()


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
async def test_a_100_kb_entry_is_dropped(
    redis_server: RedisProcess, node: Callable[..., ServerProcess], signed: bool
) -> None:
    p1, url, topic = node("p1", signed=signed), redis_server.url, "rooms:big"
    # What an unbounded writer stores: signed with the key when there is one.
    writer = EntryCodec(KEY.encode() if signed else None, max_bytes=10**9)

    def big(ref: str) -> bytes:
        meta = {"pad": "x" * 100_000, "phx_ref": ref}
        return writer.encode(topic, "p1", Entry(ref, "big", meta))

    def plant_big() -> int:
        plant(url, topic, "big", big("big"), now_ms(3600))
        plant(url, topic, "expired", big("expired"), now_ms(-60))
        return 2

    await planted_are_dropped(p1, url, topic, plant_big)


async def test_a_signed_entry_moved_to_another_room_or_field_is_dropped(
    redis_server: RedisProcess, node: Callable[..., ServerProcess]
) -> None:
    p1, p2 = node("p1"), node("p2")
    url = redis_server.url
    async with Watcher(p1.ws_url, "rooms:a", "al") as al:
        await until(lambda: al.online() == {"al": 1}, what="al online")
        [(ref, value)] = stored(url, "rooms:a").items()
        plant(url, "rooms:b", ref, value, now_ms(3600))  # the same entry, another room
        plant(url, "rooms:a", "copy", value, now_ms(3600))  # the same room, another field
        async with Watcher(p2.ws_url, "rooms:b", "bo") as bo:
            await until(lambda: bo.state is not None, what="bo's presence_state")
            assert bo.state == {}
        async with Watcher(p2.ws_url, "rooms:a", "cy") as cy:
            await until(lambda: cy.state is not None, what="cy's presence_state")
            assert cy.state is not None
            assert [m["phx_ref"] for m in cy.state["al"]["metas"]] == [ref]
        # Counted per read: a guest's join reads the room's presence twice (the name check
        # of the chat, then presence_state), so each planted entry counts at least once.
        assert metric(p2.url, DROPPED) >= 2
        assert metric(p1.url, DROPPED) == 0


async def test_presence_across_two_signing_nodes(
    redis_server: RedisProcess, node: Callable[..., ServerProcess]
) -> None:
    p1, p2 = node("p1"), node("p2")
    topic = "rooms:ok"
    async with Watcher(p1.ws_url, topic, "al") as al:
        async with Watcher(p2.ws_url, topic, "bo") as bo:
            both = {"al": 1, "bo": 1}
            await until(lambda: al.online() == both and bo.online() == both, what="both")
            values = stored(redis_server.url, topic)
            assert len(values) == 2
            for value in values.values():  # signed, and still JSON
                entry = orjson.loads(value)
                assert set(entry) == {"k", "n", "m", "s"} and len(entry["s"]) == 64
            async with Watcher(p2.ws_url, topic, "late") as late:
                await until(lambda: late.state is not None, what="late's presence_state")
                assert set(late.state or {}) == {"al", "bo"}
        await until(lambda: al.online() == {"al": 1}, what="bo's leave")
    assert metric(p1.url, DROPPED) == 0 and metric(p2.url, DROPPED) == 0


class Chan:
    """A joined channel, as Presence sees one (contracts.PresenceChannel)."""

    topic = "rooms:meta"
    joined = True

    def push(self, event: str, payload: Any) -> None:
        pass


async def test_a_too_large_meta_is_refused_when_tracked(redis_server: RedisProcess) -> None:
    store = RedisPresenceStore(redis_server.url, KEYS, ttl=30.0)  # the bound needs no key
    presence = Presence(PubSub("n", MemoryBroker()), store, batch=0)
    chan: Any = Chan()
    try:
        with pytest.raises(EntryTooLarge, match=f"more than the {MAX_ENTRY_BYTES} allowed"):
            await presence.track(chan, "al", {"pad": "x" * MAX_ENTRY_BYTES})
        assert presence.entries == 0 and stored(redis_server.url, chan.topic) == {}
        await presence.track(chan, "al", {"pad": "x" * 100})  # a normal one still goes
        assert [e.key for e in await store.list(chan.topic)] == ["al"]
        assert store.stats.presence_dropped == 0
    finally:
        await store.stop()
