"""The chat's identity and directory pushes: ``rename`` (announced, presence moved in
place) and ``rooms`` (the busiest public rooms, counted across nodes on Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

from roost.brokers.memory import MemoryBroker
from roost.brokers.redis import RedisBroker
from roost.channels import Limits
from roost.channels.presence import Presence
from roost.chat import create_endpoint
from roost.chat.app import ChatSettings
from roost.client import Client
from roost.pubsub import PubSub
from roost.security import tokens

from support import until

SECRET = "rooms-secret-0123456789"
SETTINGS = ChatSettings(secret=SECRET, private=("staff-*",))


def endpoint(node: str, broker: Any) -> Any:
    return create_endpoint(
        node, broker, limits=Limits(msg_rate=0), settings=SETTINGS, presence_batch=0.05
    )


def names(state: dict[str, Any]) -> set[str]:
    return set(state)


async def test_rename_is_announced_and_moves_presence(local_server: Any) -> None:
    server = await local_server(endpoint("m1", MemoryBroker()))
    async with Client(server.ws_url) as a, Client(server.ws_url) as b:
        seen: dict[str, Any] = {}
        events: list[tuple[str, Any]] = []
        ach = a.channel("rooms:names", {"user": "ana"})
        for event in ("user:renamed", "new:msg", "presence_diff", "presence_state"):
            ach.on(event, lambda p, e=event: events.append((e, p)))
        await ach.join()
        bch = b.channel("rooms:names", {"user": "guest-3588"})
        await bch.join()
        await until(lambda: any(e == "presence_diff" for e, _ in events))
        events.clear()

        reply = await bch.push("rename", {"user": "bob"})
        assert reply.ok and reply.response == {"user": "bob"}
        assert (await bch.push("new:msg", {"body": "bob here"})).ok
        await until(lambda: any(e == "new:msg" for e, _ in events))
        await until(lambda: any(e == "presence_diff" for e, _ in events))
        renamed = [p for e, p in events if e == "user:renamed"]
        assert renamed == [{"from": "guest-3588", "to": "bob", "verified": False}]
        message = next(p for e, p in events if e == "new:msg")
        assert message["user"] == "bob"
        # the renamed notice comes before the first message under the new name
        kinds = [e for e, _ in events if e in ("user:renamed", "new:msg")]
        assert kinds == ["user:renamed", "new:msg"]
        diffs = [p for e, p in events if e == "presence_diff"]
        joins = {k for d in diffs for k in d["joins"]}
        leaves = {k for d in diffs for k in d["leaves"]}
        assert joins == {"bob"} and leaves == {"guest-3588"}
        seen["list"] = await server.endpoint.presence.list("rooms:names")
        assert names(seen["list"]) == {"ana", "bob"}

        # a same-name rename is a no-op; bad names are refused, the channel stays
        assert (await bch.push("rename", {"user": "bob"})).ok
        for bad, reason in [
            ({"user": ""}, "invalid user"),
            ({"user": 5}, "invalid user"),
            ({"user": "x" * 33}, "user name too long"),
            ("bob", "invalid user"),
        ]:
            reply = await bch.push("rename", bad)
            assert reply.status == "error" and reply.response == {"reason": reason}, bad
        assert (await bch.push("new:msg", {"body": "still bob"})).ok


async def test_verified_names_stay_and_guests_cannot_take_them(local_server: Any) -> None:
    server = await local_server(endpoint("m1", MemoryBroker()))
    token = tokens.mint(SECRET, "al")
    async with Client(server.ws_url, params={"token": token}) as al, Client(server.ws_url) as g:
        ach = al.channel("rooms:held", {})
        await ach.join()
        reply = await ach.push("rename", {"user": "other"})
        assert reply.response == {"reason": "a verified name cannot change"}
        gch = g.channel("rooms:held", {"user": "guest"})
        await gch.join()
        reply = await gch.push("rename", {"user": "AL"})
        assert reply.response == {"reason": "name is taken by a verified user"}


async def test_directory_counts_across_nodes_and_hides_private_rooms(
    local_server: Any, redis_server: Any
) -> None:
    servers = [
        await local_server(endpoint(n, RedisBroker(redis_server.url, probe_interval=0.5)))
        for n in ("r1", "r2")
    ]
    staff = tokens.mint(SECRET, "boss", rooms=["staff-x"])
    layout = [  # (node, room, how many)
        (0, "busy", 2),
        (1, "busy", 2),
        (1, "quiet", 1),
        (0, "middle", 2),
    ]
    clients: list[Client] = []
    try:
        for index, room, count in layout:
            for i in range(count):
                c = Client(servers[index].ws_url)
                await c.connect()
                clients.append(c)
                await c.channel(f"rooms:{room}", {"user": f"{room}{index}{i}"}).join()
        boss = Client(servers[0].ws_url, params={"token": staff})
        await boss.connect()
        clients.append(boss)
        await boss.channel("rooms:staff-x", {}).join()
        for _ in range(3):  # private rooms are never listed, however busy
            c = Client(servers[0].ws_url, params={"token": staff})
            await c.connect()
            clients.append(c)
            await c.channel("rooms:staff-x", {}).join()

        async def listed(server: Any) -> Any:
            async with Client(server.ws_url) as c:
                ch = c.channel("rooms:lookout", {"user": "looker"})
                await ch.join()
                reply = await ch.push("rooms", {})
                assert reply.ok, reply
                return reply.response["rooms"]

        expected = [
            {"room": "busy", "online": 4},
            {"room": "middle", "online": 2},
            {"room": "quiet", "online": 1},
        ]

        async def both_agree() -> bool:
            for server in servers:
                got = [r for r in await listed(server) if r["room"] != "lookout"]
                if got != expected:
                    return False
            return True

        for _ in range(100):  # each node re-reads at most every 2 s
            if await both_agree():
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError([await listed(s) for s in servers])
    finally:
        for c in clients:
            await c.close()


async def test_busiest_reads_the_store_once_per_interval() -> None:
    class Counting:
        reads = 0

        async def occupancy(self, prefix: str, scan: int) -> dict[str, int]:
            Counting.reads += 1
            return {"rooms:a": 1, "rooms:b": 3, "rooms:c": 3}

    now = [100.0]
    presence = Presence(
        PubSub("n", MemoryBroker()), Counting(), clock=lambda: now[0], occupancy_ttl=2.0
    )  # type: ignore[arg-type]
    first = await asyncio.gather(*(presence.busiest("rooms:") for _ in range(10)))
    assert first[0] == [("rooms:b", 3), ("rooms:c", 3), ("rooms:a", 1)]
    assert all(f == first[0] for f in first) and Counting.reads == 1
    now[0] += 1.9
    await presence.busiest("rooms:")
    assert Counting.reads == 1
    now[0] += 0.2
    await presence.busiest("rooms:")
    assert Counting.reads == 2
