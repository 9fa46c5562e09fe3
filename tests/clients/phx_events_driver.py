"""phx-events (PyPI, asyncio, listen-only): alice joins rooms:<name> on node 1 through
phx-events; bob, a raw V1 JSON WebSocket client on node 2, joins and pushes new:msg; alice
must see bob in presence and receive bob's message.

phx-events has no API to push events (it only subscribes), so the sending side is raw frames.
It sends its V1 JSON (``orjson.dumps`` → bytes) as *binary* WebSocket frames, its join's
``ref`` is null and its join payload is always ``{}`` (the user name goes in the socket URL
params), and it builds incoming messages with ``make_message(**message)``, so any key beyond
topic/event/payload/ref (e.g. ``join_ref``) raises TypeError in its receive loop. It pins
websockets ~= 9.1, so it runs in its own virtualenv.
"""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version
from typing import Any
from urllib.parse import urlencode

import websockets
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
from phx_events.client import PHXChannelsClient
from phx_events.phx_messages import Event, Topic


async def main() -> None:
    start_deadline()
    url1, url2 = urls()
    topic = Topic(f"rooms:{room()}")
    seen: dict[str, Any] = {"msgs": [], "presence": {}, "joined": None}
    query = urlencode({"user": "alice", "vsn": "1.0.0"})
    alice = PHXChannelsClient(f"{url1.rstrip('/')}/websocket?{query}")

    async def on_msg(message: Any, _client: Any) -> None:
        seen["msgs"].append(message.payload)

    async def on_presence(message: Any, _client: Any) -> None:
        presence_keys(seen["presence"], str(message.event), message.payload)

    alice.register_event_handler(Event("new:msg"), [on_msg])
    alice.register_event_handler(Event("presence_state"), [on_presence])
    alice.register_event_handler(Event("presence_diff"), [on_presence])
    registered = alice.register_topic_subscription(topic)
    set_stage(f"alice (phx-events): join {topic}")
    task = asyncio.ensure_future(alice.start_processing())
    waiter = asyncio.ensure_future(registered.wait())
    done, _ = await asyncio.wait(
        {task, waiter}, timeout=STEP_S, return_when=asyncio.FIRST_COMPLETED
    )
    if task in done:
        fail(f"phx-events stopped before its join reply: {task.exception()!r}")
    if waiter not in done:
        fail("phx-events: no reply to phx_join (it sends V1 JSON in binary frames)")
    result = alice._topic_registration_status[topic].result
    if result is None or result.result_message.payload.get("status") != "ok":
        fail(f"phx-events join refused: {result}")
    node1 = result.result_message.payload["response"]["node"]

    set_stage(f"bob (raw V1 frames): join {topic} on node 2")
    bob = await websockets.connect(f"{url2.rstrip('/')}/websocket?{urlencode({'vsn': '1.0.0'})}")
    await bob.send(
        json.dumps({"topic": topic, "event": "phx_join", "payload": {"user": "bob"}, "ref": "1"})
    )
    while True:
        reply = json.loads(await asyncio.wait_for(bob.recv(), STEP_S))
        if reply["event"] == "phx_reply" and reply["ref"] == "1":
            break
    if reply["payload"]["status"] != "ok":
        fail(f"bob's join: {reply}")
    set_stage("presence")
    await until(
        lambda: sorted(seen["presence"]) == ["alice", "bob"], "alice (phx-events) sees alice,bob"
    )
    set_stage("bob pushes new:msg")
    await bob.send(
        json.dumps(
            {"topic": topic, "event": "new:msg", "payload": {"body": "from bob"}, "ref": "2"}
        )
    )
    await until(
        lambda: any(p["body"] == "from bob" for p in seen["msgs"]), "alice gets bob's message"
    )
    if task.done():
        fail(f"phx-events receive loop ended: {task.exception()!r}")
    await bob.close()
    succeed({"client": "phx-events", "version": version("phx-events"),
             "nodes": [node1, reply["payload"]["response"]["node"]],
             "origins": [p["node"] for p in seen["msgs"]]})  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
