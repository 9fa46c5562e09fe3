"""A room member in a process of its own, for a network namespace (test_half_open.py).

    ip netns exec NS python ghost_client.py URL ROOM NAME HEARTBEAT

Connects with ``roost.client.Client`` (reconnect on, heartbeat every HEARTBEAT seconds),
joins ROOM as NAME and prints one JSON line per event, with ``time.monotonic()`` (the
machine's clock, shared with the test): ``open``, ``close`` (its code), every frame of
the room in arrival order (``frame``: event, ref, payload) and, for each join reply, a
``join`` line with the ``since`` the join sent. Before every rejoin the channel's payload
carries ``since`` = the last position seen (the reply's offset or a later live message's),
as the chat's JavaScript does, so a rejoin after a silent cut recovers what was missed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from roost.client import Client
from roost.protocol import Message


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"ev": kind, "t": time.monotonic(), **fields}), flush=True)


async def main(url: str, room: str, name: str, heartbeat: float) -> None:
    client = Client(url, {"user": name}, heartbeat=heartbeat, reconnect=True)
    payload: dict[str, Any] = {"user": name}
    channel = client.channel(room, payload)

    def on_frame(msg: Message) -> None:
        if msg.topic != room:
            return
        body = msg.payload if isinstance(msg.payload, dict) else {}
        if msg.event == "phx_reply" and msg.ref is not None and msg.ref == channel.join_ref:
            emit("join", since=payload.get("since"), reply=body)
            response = body.get("response")
            if body.get("status") == "ok" and isinstance(response, dict):
                payload["since"] = {"epoch": response["epoch"], "offset": response["offset"]}
            return
        emit("frame", event=msg.event, ref=msg.ref, payload=body)
        offset = body.get("offset")
        if msg.event == "new:msg" and msg.ref is None and isinstance(offset, int):
            since = payload.get("since")
            if since is not None:
                payload["since"] = {"epoch": since["epoch"], "offset": offset}

    client.on_message.append(on_frame)
    client.on_open.append(lambda: emit("open"))
    client.on_close.append(lambda code: emit("close", code=code))
    await client.connect(5.0)
    await channel.join(5.0)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
