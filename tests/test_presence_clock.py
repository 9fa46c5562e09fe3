"""Issue 26, item 1: presence expiry is decided by Redis's clock (``TIME``), not a node's.

Each node's wall clock may be wrong (NTP not running, a VM resumed): if every node
wrote expiries and swept with its own clock, a node running ahead would reap the live
entries of the others and a node running behind would write entries that die early (or,
ahead, entries that outlive their node by the skew). Here stores whose clocks are an hour
off share one real redis-server with an honest one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from roost.brokers.redis.keys import Keys
from roost.brokers.redis.presence import RedisPresenceStore
from roost.pubsub.presence import Entry, new_ref

from support import RedisProcess

KEYS = Keys()
SKEW = 3600.0  # an hour: far past any ttl here
TOPIC = "rooms:skew"


def entry(key: str) -> Entry:
    ref = new_ref()
    return Entry(ref, key, {"online_at": "0", "phx_ref": ref})


@pytest.fixture
async def stores(redis_server: RedisProcess) -> AsyncIterator[Callable[..., RedisPresenceStore]]:
    """Factory: a store whose wall clock is ``skew`` seconds off (never started: the
    test runs its sweeps and refreshes itself)."""
    made: list[RedisPresenceStore] = []

    def make(skew: float = 0.0, ttl: float = 30.0) -> RedisPresenceStore:
        store = RedisPresenceStore(
            redis_server.url, KEYS, ttl=ttl, clock=lambda: time.time() + skew
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.stop()


async def refs(store: RedisPresenceStore) -> set[str]:
    return {e.ref for e in await store.list(TOPIC)}


async def test_a_node_ahead_neither_reaps_nor_hides_the_live_entries_of_others(
    stores: Callable[..., RedisPresenceStore],
) -> None:
    honest, ahead = stores(), stores(skew=SKEW)
    al = entry("al")
    await honest.add(TOPIC, al)
    await ahead.sweep_all()
    assert await refs(honest) == {al.ref}
    assert await refs(ahead) == {al.ref}  # a joiner on the node ahead sees al too
    assert await ahead.occupancy("rooms:", 10) == {TOPIC: 1}
    assert ahead.swept == 0


async def test_a_node_behind_writes_entries_that_live_their_ttl(
    stores: Callable[..., RedisPresenceStore],
) -> None:
    honest, behind = stores(), stores(skew=-SKEW)
    bo = entry("bo")
    await behind.add(TOPIC, bo)
    await behind.refresh_all()
    await honest.sweep_all()
    assert honest.swept == 0
    assert await refs(honest) == {bo.ref}
    assert await refs(behind) == {bo.ref}


async def test_the_entries_of_a_dead_node_ahead_expire_on_time(
    stores: Callable[..., RedisPresenceStore],
) -> None:
    """A node an hour ahead dies (never refreshes): its entry goes after its ttl, not an
    hour later. The wait is a deadline far above the ttl, never a measured time."""
    honest, ahead = stores(ttl=1.0), stores(skew=SKEW, ttl=1.0)
    ghost = entry("ghost")
    await ahead.add(TOPIC, ghost)
    assert await refs(honest) == {ghost.ref}
    deadline = time.monotonic() + 20  # the ttl is 1 s
    while True:
        await honest.sweep_all()
        if honest.swept:
            break
        assert time.monotonic() < deadline, "the dead node's entry was never swept"
        await asyncio.sleep(0.1)
    assert honest.swept == 1
    assert await refs(honest) == set()
    assert await refs(ahead) == set()
