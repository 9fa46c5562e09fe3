"""Exactly once across the client's retry (issue 26): ``new:msg`` with an idempotency ``key``.

A push answered ``timeout`` may have been stored; a client that sends it again with the same
key gets the first copy's id and ``ok``, and the room sees it once — on the same node or
another, on the memory broker and on Redis — while the first copy is kept in the history.
Without a key a retry is a new message (the documented guarantee: at most once per send).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import test_history
from roost.client import Client
from roost.pubsub import HistoryPolicy

from support import until

KEY = "k7Hq2vYb9xW3mN5p"
# The history tests' fixtures: every test here on the memory broker and on Redis.
kind = test_history.kind
nodes = test_history.nodes


class Listener:
    def __init__(self, url: str, room: str) -> None:
        self.url, self.room = url, room
        self.got: list[dict[str, Any]] = []

    async def __aenter__(self) -> Listener:
        self.client = Client(self.url)
        await self.client.connect()
        ch = self.client.channel(self.room, {"user": "listener"})
        ch.on("new:msg", self.got.append)
        await ch.join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


async def _push(url: str, room: str, payload: dict[str, Any], user: str = "writer") -> Any:
    async with Client(url) as c:
        ch = c.channel(room, {"user": user})
        await ch.join()
        return await ch.push("new:msg", payload)


async def test_a_retry_with_the_same_key_is_stored_once(nodes: Any) -> None:
    servers = await nodes(2)
    first_url, retry_url = servers[0].ws_url, servers[-1].ws_url
    async with Listener(first_url, "rooms:idem") as near, Listener(retry_url, "rooms:idem") as far:
        one = await _push(first_url, "rooms:idem", {"body": "once", "key": KEY})
        again = await _push(retry_url, "rooms:idem", {"body": "once", "key": KEY})
        other = await _push(retry_url, "rooms:idem", {"body": "no key"})
        await until(lambda: len(near.got) >= 2 and len(far.got) >= 2, 5)
        await asyncio.sleep(0.3)  # a second copy would have come by now
    assert one.ok and again.ok and other.ok
    assert one.response["id"] == again.response["id"]
    assert one.response["id"].startswith("k")
    for listener in (near, far):
        bodies = [m["body"] for m in listener.got]
        assert bodies == ["once", "no key"], bodies
    # the history holds it once too
    async with Client(first_url) as c:
        reply = await c.channel("rooms:idem", {"user": "late"}).join()
    assert [m["body"] for m in reply["history"]] == ["once", "no key"]


async def test_keys_are_per_sender_and_per_room(nodes: Any) -> None:
    (server,) = await nodes(1)
    a = await _push(server.ws_url, "rooms:idem2", {"body": "a", "key": KEY}, user="ann")
    b = await _push(server.ws_url, "rooms:idem2", {"body": "b", "key": KEY}, user="bob")
    c = await _push(server.ws_url, "rooms:idem3", {"body": "c", "key": KEY}, user="ann")
    assert a.ok and b.ok and c.ok
    assert len({a.response["id"], b.response["id"], c.response["id"]}) == 3
    async with Client(server.ws_url) as cl:
        reply = await cl.channel("rooms:idem2", {"user": "late"}).join()
    assert [m["body"] for m in reply["history"]] == ["a", "b"]


async def test_a_key_is_forgotten_with_its_message(nodes: Any) -> None:
    """Past the history window (here 3 messages) the key is free again: a new copy."""
    (server,) = await nodes(1, HistoryPolicy(max_len=3))
    first = await _push(server.ws_url, "rooms:idem4", {"body": "x", "key": KEY})
    for i in range(3):
        assert (await _push(server.ws_url, "rooms:idem4", {"body": f"n{i}"})).ok
    again = await _push(server.ws_url, "rooms:idem4", {"body": "x", "key": KEY})
    assert first.ok and again.ok and first.response["id"] == again.response["id"]
    async with Client(server.ws_url) as cl:
        reply = await cl.channel("rooms:idem4", {"user": "late"}).join()
    assert [m["body"] for m in reply["history"]] == ["n1", "n2", "x"]


@pytest.mark.parametrize("bad", ["short", "x" * 65, "has space!", 12345, ["k" * 10]])
async def test_a_bad_key_is_refused(nodes: Any, bad: Any) -> None:
    (server,) = await nodes(1)
    reply = await _push(server.ws_url, "rooms:idem5", {"body": "x", "key": bad})
    assert not reply.ok and reply.response == {"reason": "invalid key"}
