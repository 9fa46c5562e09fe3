"""Issue 26, item 3: a presence diff never overtakes the state it follows.

A channel that already keeps a list (phoenix.js's ``Presence`` has had its state for
this join) applies a ``presence_diff`` at once, and a later ``presence_state`` replaces
the list. So when a fresh state is pushed — the store's resync after Redis lost
entries, a second ``track`` — a change made after the state was read but broadcast
before the state was written would be applied, then undone: a leaver stays listed
forever (a ghost), a joiner is missing until it changes again.

The store here is the real Redis one; ``during_list`` runs between the read and the
return of one ``list``: the change it makes is one the state does not hold, and (with
``batch=0``) its diff is broadcast before ``list`` returns. Clients keep their list as
phoenix.js does (``Client``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis

from roost.brokers.memory import MemoryBroker
from roost.brokers.redis.keys import Keys
from roost.brokers.redis.presence import RedisPresenceStore
from roost.channels import Channel, Endpoint, Reply, Router, Socket
from roost.channels.presence import Presence
from roost.protocol import TEXT, V2
from roost.pubsub import PubSub, WireKind
from roost.pubsub.presence import Entry

from support import RedisProcess

KIND = WireKind("test/v2", V2, lambda frame: frame.data)
TOPIC = "room:x"


class Gated(RedisPresenceStore):
    """The Redis store; ``during_list`` runs once, after a list is read from Redis and
    before it is returned."""

    during_list: Callable[[], Awaitable[None]] | None = None

    async def list(self, topic: str) -> list[Entry]:
        entries = await super().list(topic)
        hook, self.during_list = self.during_list, None
        if hook is not None:
            await hook()
        return entries


class Client:
    """A socket's wire, and the presence list phoenix.js keeps from what it reads:
    ``syncState`` makes the list the state; ``syncDiff`` applies joins, then leaves;
    diffs that come before the join's first state wait for it (``pendingDiffs``)."""

    kind = KIND

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []
        self.metas: dict[str, dict[str, Any]] | None = None  # key → phx_refs (None: no state)
        self.pending: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        frame = orjson.loads(data)
        self.frames.append(frame)
        event, payload = frame[3], frame[4]
        if event == "presence_state":
            self.metas = {k: {m["phx_ref"]: m for m in v["metas"]} for k, v in payload.items()}
            pending, self.pending = self.pending, []
            for diff in pending:
                self._apply(diff)
        elif event == "presence_diff":
            if self.metas is None:
                self.pending.append(payload)
            else:
                self._apply(payload)

    def _apply(self, diff: dict[str, Any]) -> None:
        assert self.metas is not None
        for key, value in diff["joins"].items():
            for m in value["metas"]:
                self.metas.setdefault(key, {})[m["phx_ref"]] = m
        for key, value in diff["leaves"].items():
            for m in value["metas"]:
                self.metas.get(key, {}).pop(m["phx_ref"], None)

    def close(self, code: int, reason: str) -> None:
        pass

    def online(self) -> set[str]:
        return {k for k, refs in (self.metas or {}).items() if refs}

    def events(self, name: str) -> list[Any]:
        return [f[4] for f in self.frames if f[3] == name]


class Room(Channel):
    async def join(self, payload: Any) -> Any:
        self.user = payload["user"]
        return {}

    async def after_join(self) -> None:
        await self.track(self.user, {"online_at": "0"})

    async def handle_in(self, event: str, payload: Any, ref: Any) -> Reply | None:
        await self.broadcast(event, payload)
        return Reply.ok()


class Rig:
    def __init__(self, url: str) -> None:
        self.clock = 0.0
        self.store = Gated(url, Keys(), ttl=30.0, timer=lambda: self.clock)
        pubsub = PubSub("unit", MemoryBroker())
        self.presence = Presence(pubsub, self.store, batch=0)
        self.endpoint = Endpoint(
            router=Router().channel("room:*", Room), pubsub=pubsub, presence=self.presence
        )
        self.sockets: dict[str, tuple[Socket, Client]] = {}

    async def join(self, user: str) -> Client:
        client = Client()
        socket = Socket(self.endpoint, client, {})
        self.sockets[user] = (socket, client)
        await send(socket, "phx_join", {"user": user})
        assert client.events("phx_reply")[0]["status"] == "ok"
        return client

    async def leave(self, user: str) -> None:
        await send(self.sockets[user][0], "phx_leave", {})

    @staticmethod
    def presence_state_keys(client: Client) -> set[str]:
        """The keys of the latest state the client was pushed."""
        return set(client.events("presence_state")[-1])

    def channel(self, user: str) -> Channel:
        return self.sockets[user][0].channels[TOPIC]


async def send(socket: Socket, event: str, payload: Any) -> None:
    await socket.handle(TEXT, orjson.dumps(["1", "2", TOPIC, event, payload]).decode())


@pytest.fixture
async def rig(redis_server: RedisProcess) -> AsyncIterator[Rig]:
    rig = Rig(redis_server.url)
    await rig.endpoint.start()
    yield rig
    for socket, _ in rig.sockets.values():
        await socket.close()
    await rig.endpoint.stop()


async def test_a_leave_during_a_fresh_state_read_comes_after_the_state(rig: Rig) -> None:
    al = await rig.join("al")
    await rig.join("bo")
    assert al.online() == {"al", "bo"}

    async def bo_speaks_and_leaves() -> None:
        await send(rig.sockets["bo"][0], "shout", {"last": "words"})
        await rig.leave("bo")

    rig.store.during_list = bo_speaks_and_leaves
    await rig.presence.push_state(rig.channel("al"))  # as a resync or a second track does
    assert rig.store.during_list is None  # (the leave happened inside the read)
    assert "bo" in rig.presence_state_keys(al)
    assert al.online() == {"al"}  # no ghost
    assert al.events("shout") == [{"last": "words"}]  # held back, delivered once


async def test_a_join_during_a_fresh_state_read_is_not_undone_by_the_state(rig: Rig) -> None:
    al = await rig.join("al")
    joined: list[Client] = []

    async def cy_joins() -> None:
        joined.append(await rig.join("cy"))

    rig.store.during_list = cy_joins
    await rig.presence.push_state(rig.channel("al"))
    assert joined and "cy" not in rig.presence_state_keys(al)
    assert al.online() == {"al", "cy"}
    assert joined[0].online() == {"al", "cy"}


async def test_the_stores_resync_after_redis_lost_entries_races_no_leave(
    rig: Rig, redis_server: RedisProcess
) -> None:
    """The real resync path: Redis restarts empty (FLUSHALL), the refresh writes this
    node's entries back, and a ttl later every member gets a fresh state; a member
    leaving while that state is read must not stay listed."""
    al = await rig.join("al")
    await rig.join("bo")
    r = redis.Redis.from_url(redis_server.url)
    try:
        r.flushall()
    finally:
        r.close()
    await rig.store.refresh_all()  # writes al and bo back, a fresh state due a ttl later
    rig.clock += rig.store.ttl
    rig.store.during_list = lambda: rig.leave("bo")
    states = len(al.events("presence_state"))
    await rig.store.resync_due()
    assert len(al.events("presence_state")) == states + 1
    assert "bo" in rig.presence_state_keys(al)
    assert al.online() == {"al"}


class Sub:
    """A plain subscriber that records the events written to it."""

    intercept: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.wire = Client()
        self.ended = False

    def handle_out(self, event: str, payload: Any) -> None:
        pass

    def lost(self) -> None:
        self.ended = True


async def test_pause_keeps_broadcasts_until_the_last_resume() -> None:
    pubsub = PubSub("unit", MemoryBroker())
    await pubsub.start()
    sub, other = Sub(), Sub()
    try:
        await pubsub.subscribe(TOPIC, sub)
        await pubsub.subscribe(TOPIC, other)
        assert pubsub.pause(TOPIC, sub) and pubsub.pause(TOPIC, sub)  # re-entrant
        await pubsub.broadcast(TOPIC, "n", {"i": 1})
        assert sub.wire.events("n") == [] and other.wire.events("n") == [{"i": 1}]
        assert pubsub.resume(TOPIC, sub)
        await pubsub.broadcast(TOPIC, "n", {"i": 2})
        assert sub.wire.events("n") == []  # one pause still open
        assert pubsub.resume(TOPIC, sub)
        assert sub.wire.events("n") == [{"i": 1}, {"i": 2}]  # in order, once
        await pubsub.broadcast(TOPIC, "n", {"i": 3})
        assert sub.wire.events("n") == [{"i": 1}, {"i": 2}, {"i": 3}]
        assert not pubsub.resume(TOPIC, sub)  # not paused
        assert pubsub.subscribers(TOPIC) == 2
        # A subscriber that leaves while paused is gone; its resume does nothing.
        assert pubsub.pause(TOPIC, sub)
        pubsub.unsubscribe(TOPIC, sub)
        assert not pubsub.resume(TOPIC, sub) and pubsub.subscribers(TOPIC) == 1
        assert not pubsub.pause("room:none", sub)
    finally:
        await pubsub.stop()
