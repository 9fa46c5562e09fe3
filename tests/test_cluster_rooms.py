"""Issue 20 on a Redis Cluster: history paging (one script on the room's slot) and the
room directory (every slot's presence registry) with rooms on every master."""

from __future__ import annotations

import asyncio
from typing import Any

import test_cluster
from roost.client import Client
from test_cluster import rooms_per_master

from support import RedisCluster

# test_cluster's fixtures: a 3-master cluster with a replica each, and nodes on it
rcluster = test_cluster.rcluster
nodes = test_cluster.nodes

SENT = 120  # a join brings the latest 50 (the default --history-size keeps 100)


async def test_paging_and_directory_on_a_cluster(rcluster: RedisCluster, nodes: Any) -> None:
    n1, n2 = nodes("n1", "n2", extra=("--history-size", "200"))
    rooms = [group[0] for group in rooms_per_master(rcluster, 1, "paged").values()]
    async with Client(n1.ws_url) as writer:
        for room in rooms:
            ch = writer.channel(room, {"user": "writer"})
            await ch.join()
            replies = await asyncio.gather(
                *(ch.push("new:msg", {"body": f"{room}/{i}"}) for i in range(1, SENT + 1))
            )
            assert all(r.ok for r in replies)
            await ch.leave()

    members: list[Client] = []
    try:
        # room i gets i + 1 members, on both nodes by turns
        for i, room in enumerate(rooms):
            for j in range(i + 1):
                c = Client((n1, n2)[j % 2].ws_url)
                await c.connect()
                members.append(c)
                await c.channel(room, {"user": f"m{j}"}).join()

        async with Client(n2.ws_url) as reader:
            for room in rooms:
                ch = reader.channel(room, {"user": "reader"})
                joined = await ch.join()
                seen = [m["offset"] for m in joined["history"]]
                while True:
                    reply = await ch.push(
                        "history", {"before": seen[0], "limit": 40, "epoch": joined["epoch"]}
                    )
                    assert reply.ok, reply
                    seen = [m["offset"] for m in reply.response["history"]] + seen
                    if reply.response["beginning"]:
                        break
                assert seen == list(range(1, SENT + 1)), room
                await ch.leave()

            lookout = reader.channel("rooms:lookout", {"user": "lookout"})
            await lookout.join()
            want = [
                {"room": room.removeprefix("rooms:"), "online": i + 1}
                for i, room in reversed(list(enumerate(rooms)))
            ]
            for _ in range(50):  # a node re-reads presence every 2 s at most
                reply = await lookout.push("rooms", {})
                assert reply.ok, reply
                got = [r for r in reply.response["rooms"] if r["room"] != "lookout"]
                if got == want:
                    break
                await asyncio.sleep(0.2)
            assert got == want
    finally:
        for c in members:
            await c.close()
    for server in (n1, n2):
        assert "Traceback" not in server.log()
