"""chunnel (PyPI, asyncio): alice on node 1, bob on node 2 join rooms:<name>, see each other
in presence (presence_state/presence_diff), push new:msg and both receive both.

chunnel speaks V1 JSON with ``ref`` as a JSON number (1, 2, ...), sends no heartbeat, and
prints its socket URL on stdout (the result is the last line). A reply with status "error"
becomes a bare ``Exception("Response not ok!")`` (the reason is lost).
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

from chunnel.socket import Socket
from common import (
    STEP_S,
    fail,
    presence_keys,
    room,
    set_stage,
    start_deadline,
    succeed,
    until,
    urls,
)


async def member(url: str, user: str, topic: str) -> dict[str, Any]:
    set_stage(f"{user}: connect {url}")
    socket = Socket(url.rstrip("/") + "/websocket", {"user": user})
    await socket.connect()
    channel = socket.channel(topic, {"user": user})
    set_stage(f"{user}: join {topic}")
    join = asyncio.ensure_future(channel.join())
    transport = socket._transport_task  # ends when the server closes the socket
    await asyncio.wait({join, transport}, timeout=STEP_S, return_when=asyncio.FIRST_COMPLETED)
    if not join.done():
        why = f"the socket closed: {transport.exception()!r}" if transport.done() else "socket open"
        fail(f"{user}: no reply to phx_join (its ref is a JSON number); {why}")
    reply = join.result()
    seen: dict[str, Any] = {"msgs": [], "presence": {}}

    async def pump() -> None:
        while True:
            msg = await channel.receive()
            if msg.event == "new:msg":
                seen["msgs"].append(msg.payload)
            elif msg.event in ("presence_state", "presence_diff"):
                presence_keys(seen["presence"], msg.event, msg.payload)

    seen["task"] = asyncio.ensure_future(pump())
    return {"socket": socket, "channel": channel, "seen": seen, "node": reply["node"]}


async def main() -> None:
    start_deadline()
    url1, url2 = urls()
    topic = f"rooms:{room()}"
    alice = await member(url1, "alice", topic)
    bob = await member(url2, "bob", topic)
    set_stage("presence")
    for who, m in (("alice", alice), ("bob", bob)):
        await until(
            lambda m=m: sorted(m["seen"]["presence"]) == ["alice", "bob"], f"{who} sees alice,bob"
        )
    set_stage("push new:msg")
    for who, m in (("alice", alice), ("bob", bob)):
        sent = await m["channel"].push("new:msg", {"body": f"from {who}"})
        reply = await asyncio.wait_for(sent.response(), STEP_S)
        if not reply or "id" not in reply:
            fail(f"{who}: push reply {reply!r}")
    for who, m in (("alice", alice), ("bob", bob)):
        for body in ("from alice", "from bob"):
            await until(
                lambda m=m, b=body: any(p["body"] == b for p in m["seen"]["msgs"]),
                f"{who} gets {body!r}",
            )
    origins = sorted(p["node"] for p in bob["seen"]["msgs"])
    succeed({"client": "chunnel", "version": version("chunnel"),
             "nodes": [alice["node"], bob["node"]], "origins": origins})  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
