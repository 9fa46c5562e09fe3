"""phxsocket (PyPI): alice on node 1, bob on node 2 join rooms:<name>, see each other in
presence (presence_state/presence_diff), push new:msg and both receive both.

phxsocket speaks V1 JSON with ``ref`` as a JSON number (0, 1, 2, ...) and no join_ref.
Its ``wait_for_response`` has no timeout, so the driver waits on the reply event itself.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import phxsocket
from common import fail, presence_keys, room, set_stage, start_deadline, succeed, urls, wait_for


def member(url: str, user: str, topic: str) -> dict[str, Any]:
    set_stage(f"{user}: connect {url}")
    client = phxsocket.Client(url.rstrip("/") + "/websocket", {"user": user})
    closed: list[bool] = []
    client.on_close = lambda _c: closed.append(True)
    client.connect()
    channel = client.channel(topic, {"user": user})
    seen: dict[str, Any] = {"msgs": [], "presence": {}}

    def on_message(_socket: Any, event: str, payload: Any) -> None:
        if event == "new:msg":
            seen["msgs"].append(payload)
        elif event in ("presence_state", "presence_diff"):
            presence_keys(seen["presence"], event, payload)

    channel.on_message = on_message
    set_stage(f"{user}: join {topic}")
    try:
        join = client.push(topic, phxsocket.channel.ChannelEvents.JOIN, {"user": user}, reply=True)
    except phxsocket.client.SocketClosedError:
        fail(
            f"{user}: the server closed the socket before the join; phxsocket's first frame is "
            'a heartbeat with "ref": 0 (a JSON number)'
        )
    wait_for(lambda: join.event.is_set() or closed, f"{user}: the join reply")
    if not join.event.is_set():
        why = "the server closed the socket" if closed else "socket still open"
        fail(f"{user}: no reply to phx_join (its ref is a JSON number); {why}")
    if join.message.get("status") != "ok":
        fail(f"{user}: join refused: {join.message}")
    return {
        "client": client,
        "channel": channel,
        "seen": seen,
        "node": join.message["response"]["node"],
    }


def main() -> None:
    start_deadline()
    url1, url2 = urls()
    topic = f"rooms:{room()}"
    alice = member(url1, "alice", topic)
    bob = member(url2, "bob", topic)
    set_stage("presence")
    for who, m in (("alice", alice), ("bob", bob)):
        wait_for(
            lambda m=m: sorted(m["seen"]["presence"]) == ["alice", "bob"], f"{who} sees alice,bob"
        )
    set_stage("push new:msg")
    for who, m in (("alice", alice), ("bob", bob)):
        push = m["channel"].push("new:msg", {"body": f"from {who}"}, reply=True)
        if not push.event.wait(5) or push.message.get("status") != "ok":
            fail(f"{who}: push new:msg reply: {push.message}")
    for who, m in (("alice", alice), ("bob", bob)):
        for body in ("from alice", "from bob"):
            wait_for(
                lambda m=m, b=body: any(p["body"] == b for p in m["seen"]["msgs"]),
                f"{who} gets {body!r}",
            )
    origins = sorted(p["node"] for p in bob["seen"]["msgs"])
    for m in (alice, bob):
        m["client"].close()
    succeed({"client": "phxsocket", "version": version("phxsocket"),
             "nodes": [alice["node"], bob["node"]], "origins": origins})  # fmt: skip


if __name__ == "__main__":
    main()
