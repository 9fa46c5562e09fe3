"""realtime (PyPI, Supabase's Python client, 2.x): alice on node 1, bob on node 2 subscribe to
the channel ``c<random>`` (topic ``realtime:c<random>``) with Supabase's join config
(broadcast self + ack, presence key), track presence and see each other, each sends a
broadcast, and both receive both.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

from common import STEP_S, fail, room, set_stage, start_deadline, succeed, until, urls
from realtime import AsyncRealtimeClient

# What a Supabase project gives its clients when nobody is signed in: roost reads an
# sb_ key (or a legacy JWT claiming role "anon") as "no user token".
ANON_KEY = "sb_publishable_roost-compat"


async def member(url: str, user: str, name: str) -> dict[str, Any]:
    set_stage(f"{user}: connect {url}")
    client = AsyncRealtimeClient(url, ANON_KEY, params={"user": user}, auto_reconnect=False)
    await asyncio.wait_for(client.connect(), STEP_S)
    config = {"config": {"broadcast": {"self": True, "ack": True}, "presence": {"key": user}}}
    channel = client.channel(name, config)  # type: ignore[arg-type]
    msgs: list[Any] = []
    channel.on_broadcast("msg", lambda m: msgs.append(m["payload"]))
    channel.on_presence_sync(lambda: None)
    statuses: list[str] = []
    set_stage(f"{user}: subscribe {channel.topic}")
    await asyncio.wait_for(
        channel.subscribe(
            lambda state, err: statuses.append(f"{state}: {err}" if err else str(state))
        ),
        STEP_S,
    )
    if not statuses or "SUBSCRIBED" not in statuses[0]:
        fail(f"{user}: subscribe: {statuses}")
    set_stage(f"{user}: track")
    await channel.track({"user": user})
    return {"client": client, "channel": channel, "msgs": msgs}


async def main() -> None:
    start_deadline()
    url1, url2 = urls()
    name = room()
    alice = await member(url1, "alice", name)
    bob = await member(url2, "bob", name)
    set_stage("presence")
    for who, m in (("alice", alice), ("bob", bob)):
        await until(
            lambda m=m: sorted(m["channel"].presence_state()) == ["alice", "bob"],
            f"{who} sees alice,bob",
        )
    set_stage("broadcast")
    for who, m in (("alice", alice), ("bob", bob)):
        await m["channel"].send_broadcast("msg", {"body": f"from {who}"})
    for who, m in (("alice", alice), ("bob", bob)):
        for body in ("from alice", "from bob"):
            await until(
                lambda m=m, b=body: any(p.get("body") == b for p in m["msgs"]),
                f"{who} gets {body!r} (self: true)",
            )
    topic = alice["channel"].topic
    for m in (alice, bob):
        await m["client"].close()
    succeed({"client": "realtime", "version": version("realtime"), "topic": topic})


if __name__ == "__main__":
    asyncio.run(main())
