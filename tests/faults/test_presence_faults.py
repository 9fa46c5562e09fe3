"""Presence that cannot leak: real redis-servers and `roost serve` nodes, under faults.

A dead node's users leave everyone's list within the presence timeout plus one sweep
period, whatever happened to Redis meanwhile (a restart without persistence before or
during the death, more than 1,000 presence rooms), and no presence key of theirs is
left in Redis. A frozen node's users leave and come back; a frozen Redis fails presence
calls fast instead of hanging them; a burst of joins shares a bounded set of connections.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.exceptions import RedisError

from roost.brokers.redis import Keys
from roost.brokers.redis.presence import RedisPresenceStore
from roost.client import Client
from roost.pubsub.presence import Entry, new_ref

from support import RedisProcess, ServerProcess, start_server, until

TIMEOUT = 1.5  # --presence-timeout
SWEEP = TIMEOUT * 0.75 / 3  # entries live 0.75 x timeout; sweeps run every ttl/3
DEADLINE = TIMEOUT + SWEEP + 6  # generous slack for a loaded machine
KEYS = Keys()  # the prefix and app `roost serve` uses by default


class Watcher:
    """A client in a room that keeps the presence list the way phoenix.js does.

    ``Presence.syncState`` makes the list exactly the new state (joins and leaves are
    computed from it), also on a second ``presence_state``; ``syncDiff`` applies joins,
    then leaves; diffs before the first state wait for it.
    """

    def __init__(
        self, server: ServerProcess, topic: str, user: str, *, reconnect: bool = True
    ) -> None:
        self.client = Client(server.ws_url, reconnect=reconnect)
        self.topic = topic
        self.user = user
        self.metas: dict[str, dict[str, dict[str, Any]]] = {}
        self.states: list[dict[str, Any]] = []
        self.diffs: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []

    async def __aenter__(self) -> Watcher:
        await self.client.connect()
        ch = self.client.channel(self.topic, {"user": self.user})
        ch.on("presence_state", self._state)
        ch.on("presence_diff", self._diff)
        await ch.join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.reconnect = False
        await self.client.close()

    def _state(self, state: dict[str, Any]) -> None:
        self.states.append(state)
        self.metas = {k: {m["phx_ref"]: m for m in v["metas"]} for k, v in state.items()}
        pending, self._pending = self._pending, []
        for diff in pending:
            self._apply(diff)

    def _diff(self, diff: dict[str, Any]) -> None:
        self.diffs.append(diff)
        if not self.states:
            self._pending.append(diff)
        else:
            self._apply(diff)

    def _apply(self, diff: dict[str, Any]) -> None:
        for key, value in diff["joins"].items():
            for m in value["metas"]:
                self.metas.setdefault(key, {})[m["phx_ref"]] = m
        for key, value in diff["leaves"].items():
            for m in value["metas"]:
                self.metas.get(key, {}).pop(m["phx_ref"], None)

    def online(self) -> dict[str, int]:
        return {k: len(v) for k, v in sorted(self.metas.items()) if v}

    def left(self) -> set[str]:
        """The phx_refs every presence_diff so far announced leaving."""
        return {m["phx_ref"] for d in self.diffs for v in d["leaves"].values() for m in v["metas"]}

    def refs_of(self, node: str) -> set[str]:
        return {r for v in self.metas.values() for r, m in v.items() if m.get("node") == node}


def stored(url: str) -> dict[str, dict[str, Any]]:
    """Every presence entry in Redis (hashes and expiry zsets): phx_ref → meta (or {})."""
    out: dict[str, dict[str, Any]] = {}
    r = redis.Redis.from_url(url)
    try:
        for key in r.scan_iter(f"{KEYS.base}:pz:*", count=1000):
            for ref in r.zrange(key, 0, -1):
                out.setdefault(ref.decode(), {})
        for key in r.scan_iter(f"{KEYS.base}:p:*", count=1000):
            for ref, value in r.hgetall(key).items():
                out[ref.decode()] = orjson.loads(value)["m"]
    finally:
        r.close()
    return out


def stored_of(url: str, node: str) -> set[str]:
    return {ref for ref, meta in stored(url).items() if meta.get("node") == node}


@pytest.fixture
def node(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Callable[[str], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(name: str) -> ServerProcess:
        args = ["--redis", redis_server.url, "--presence-timeout", str(TIMEOUT)]
        server = start_server(*args, "--probe-interval", "0.5", node=name, log_dir=tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop(signal.SIGKILL)


async def test_node_killed_after_a_redis_restart_is_swept(
    redis_server: RedisProcess, node: Callable[[str], ServerProcess]
) -> None:
    """Redis restarts empty while pb lives; pb writes its entries back; then pb dies."""
    pa, pb = node("pa"), node("pb")
    topic = "rooms:restart"
    async with (
        Watcher(pa, topic, "wa") as wa,
        Watcher(pb, topic, "ub1", reconnect=False),
        Watcher(pb, topic, "ub2", reconnect=False),
    ):
        await until(lambda: wa.online() == {"ub1": 1, "ub2": 1, "wa": 1}, 10, "all on pa")
        doomed = wa.refs_of("pb")
        assert len(doomed) == 2
        redis_server.restart()  # no persistence: every presence key is gone
        await until(lambda: stored_of(redis_server.url, "pb") == doomed, 10, "pb's write-back")
        pb.stop(signal.SIGKILL)
        t0 = time.monotonic()
        await until(lambda: wa.online() == {"wa": 1}, DEADLINE, "pb's users leaving pa's list")
        took = time.monotonic() - t0
        # The sweeper's presence_diff leaves them (a fresh state may have come first:
        # pa wrote its own entries back too, and pushes one a ttl later).
        await until(lambda: doomed <= wa.left(), DEADLINE, "pb's users in presence_diff leaves")
        async with Watcher(pa, topic, "late") as late:
            await until(lambda: late.states, 10, "the newcomer's presence_state")
            assert set(late.states[0]) == {"wa"}
        assert not stored_of(redis_server.url, "pb")
    assert took < TIMEOUT + SWEEP + 3


async def test_sweep_covers_more_than_a_thousand_rooms(
    redis_server: RedisProcess, node: Callable[[str], ServerProcess]
) -> None:
    """1,500 live rooms registered first; a dead node's entries in the rooms after them."""
    pa = node("pa")
    url = redis_server.url
    live = RedisPresenceStore(url, KEYS, ttl=3600.0)  # never expire during the test
    dead = RedisPresenceStore(url, KEYS, ttl=3.0)  # never refreshed: a node that died

    def entry(key: str, node_name: str) -> Entry:
        ref = new_ref()
        return Entry(ref, key, {"online_at": "0", "node": node_name, "phx_ref": ref})

    try:
        async with Watcher(pa, "rooms:big", "wa") as wa:
            await until(lambda: wa.online() == {"wa": 1}, 10, "wa on pa")
            for start in range(0, 1500, 50):
                await asyncio.gather(
                    *(
                        live.add(f"rooms:f{i:04d}", entry(f"f{i}", "live"))
                        for i in range(start, start + 50)
                    )
                )
            await dead.add("rooms:big", entry("ghost", "dead"))
            for i in range(100):
                await dead.add(f"rooms:g{i:03d}", entry(f"g{i}", "dead"))
            async with Watcher(pa, "rooms:big", "late") as late:
                await until(lambda: "ghost" in late.online(), 5, "the dead node's user listed")
                await until(
                    lambda: late.online() == {"late": 1, "wa": 1}, 3.0 + DEADLINE, "ghost's leave"
                )
            await until(lambda: not stored_of(url, "dead"), 5, "every dead entry swept")
            assert len(stored_of(url, "live")) == 1500
    finally:
        await live.stop()
        await dead.stop()


async def test_node_killed_during_a_redis_outage_leaves_through_a_fresh_state(
    redis_server: RedisProcess, node: Callable[[str], ServerProcess]
) -> None:
    """pb dies while Redis is down; Redis comes back empty: nobody could ever sweep pb."""
    pa, pb = node("pa"), node("pb")
    topic = "rooms:outage"
    async with Watcher(pa, topic, "wa") as wa, Watcher(pb, topic, "ub", reconnect=False):
        await until(lambda: wa.online() == {"ub": 1, "wa": 1}, 10, "all on pa")
        redis_server.stop()
        pb.stop(signal.SIGKILL)
        await asyncio.sleep(0.5)
        redis_server.start()
        states = len(wa.states)
        await until(lambda: wa.online() == {"wa": 1}, DEADLINE + TIMEOUT, "ub leaving pa's list")
        assert len(wa.states) > states  # a fresh presence_state did it
        async with Watcher(pa, topic, "late") as late:
            await until(lambda: late.states, 10, "the newcomer's presence_state")
            assert set(late.states[0]) == {"wa"}
        assert not stored_of(redis_server.url, "pb")


async def test_frozen_node_leaves_and_comes_back(
    redis_server: RedisProcess, node: Callable[[str], ServerProcess]
) -> None:
    pa, pb = node("pa"), node("pb")
    topic = "rooms:frozen"
    async with Watcher(pa, topic, "wa") as wa, Watcher(pb, topic, "ub"):
        await until(lambda: wa.online() == {"ub": 1, "wa": 1}, 10, "all on pa")
        os.kill(pb.proc.pid, signal.SIGSTOP)
        try:
            await until(lambda: wa.online() == {"wa": 1}, DEADLINE, "frozen pb's user leaving")
        finally:
            os.kill(pb.proc.pid, signal.SIGCONT)
        await until(lambda: wa.online() == {"ub": 1, "wa": 1}, 10, "pb's user back on pa")
        async with Watcher(pa, topic, "late") as late:
            await until(lambda: late.online() == {"late": 1, "ub": 1, "wa": 1}, 10, "late's list")


async def test_frozen_redis_fails_presence_calls_fast(redis_server: RedisProcess) -> None:
    store = RedisPresenceStore(redis_server.url, KEYS, ttl=TIMEOUT * 0.75)
    ref = new_ref()
    await store.add("rooms:ice", Entry(ref, "al", {"phx_ref": ref}))
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        calls = {
            "add": lambda: store.add("rooms:ice", Entry("x", "bo", {"phx_ref": "x"})),
            "list": lambda: store.list("rooms:ice"),
            "remove": lambda: store.remove("rooms:ice", [ref]),
            "refresh": store.refresh_all,
            "sweep": store.sweep_all,
        }
        for name, call in calls.items():
            t0 = time.monotonic()
            with pytest.raises(RedisError):  # not a hang (asyncio's TimeoutError)
                await asyncio.wait_for(call(), 8)
            assert time.monotonic() - t0 < 4, name
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        await store.stop()


async def test_a_burst_of_joins_shares_a_bounded_pool(redis_server: RedisProcess) -> None:
    """250 joins at once (track + presence_state each): the pool keeps what it opened."""
    store = RedisPresenceStore(redis_server.url, KEYS, ttl=30.0)
    probe = redis.Redis.from_url(redis_server.url)

    async def join(i: int) -> None:
        ref = new_ref()
        await store.list("rooms:burst")
        await store.add("rooms:burst", Entry(ref, f"u{i}", {"phx_ref": ref, "online_at": "0"}))

    try:
        await asyncio.gather(*(join(i) for i in range(250)))
        assert len(await store.list("rooms:burst")) == 250
        opened = len(probe.client_list()) - 1  # the probe itself
    finally:
        probe.close()
        await store.stop()
    assert opened <= 64, opened
