"""Issue 14, finding 5: anonymous identities that cannot pass as verified ones.

Without ``--require-token`` anyone may pick a name. The server marks every chat message,
``user:entered`` event and presence meta with ``verified`` (true only for a socket whose
token the node verified, never taken from what a client sends), and refuses an anonymous
name that a verified member present in the room holds — compared after NFKC,
case folding and trimming, on every node of the cluster.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.brokers.memory import MemoryBroker
from roost.chat import ChatSettings, create_endpoint, validate
from roost.security import tokens

from rawws import RawSocket
from support import RedisProcess, ServerProcess, start_redis, start_server

SECRET = "identity-secret-0123456789"
TAKEN = {"reason": "name is taken by a verified user"}


def token(user: str) -> str:
    return tokens.mint(SECRET, user)


def reply_of(frame: Any) -> Any:
    assert isinstance(frame, list) and frame[3] == "phx_reply", frame
    return frame[4]


async def join(ws: RawSocket, topic: str, ref: str, payload: Any = None) -> Any:
    return reply_of(await ws.join(topic, ref, payload))


async def tracked(ws: RawSocket, topic: str, key: str) -> list[dict[str, Any]]:
    """Wait for the presence_diff that lists ``key`` joining; return its metas."""
    frame = await ws.recv_until(
        lambda f: f[2] == topic and f[3] == "presence_diff" and key in f[4]["joins"]
    )
    return list(frame[4]["joins"][key]["metas"])


# -- two nodes sharing a Redis, both with the secret -------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    redis: RedisProcess = start_redis()
    logs: Path = tmp_path_factory.mktemp("identity-logs")
    args = ["--redis", redis.url, "--secret", SECRET]
    nodes = [start_server(*args, node=f"id{i}", log_dir=logs) for i in (1, 2)]
    yield nodes
    for node in nodes:
        node.stop(signal.SIGKILL)
    redis.stop()


# names that look like "al" once trimmed, case-folded and NFKC-normalised (full-width
# letters, a ligature-free compatibility form, a zero-width space)
LOOK_ALIKES = ["al", "AL", " Al ", "\uff41\uff4c", "\uff21l", "a\u200bl"]


async def test_anonymous_join_with_a_present_verified_name_is_refused_on_every_node(
    cluster: list[ServerProcess],
) -> None:
    n1, n2 = cluster
    topic = "rooms:held"
    al = await RawSocket.connect(n1.ws_url, f"vsn=2.0.0&token={token('al')}")
    others: list[RawSocket] = []
    try:
        assert (await join(al, topic, "1", {"user": "al"}))["status"] == "ok"
        await tracked(al, topic, "al")  # al's entry is in the shared store now
        for node in (n2, n1):  # the other node reads it from Redis; al's own node too
            ws = await RawSocket.connect(node.ws_url)
            others.append(ws)
            for i, name in enumerate(LOOK_ALIKES):
                refused = await join(ws, topic, f"r{i}", {"user": name})
                assert refused == {"status": "error", "response": TAKEN}, name
            assert (await join(ws, topic, "ok", {"user": "bo"}))["status"] == "ok"
        # the name given as a connect param is the same claim
        by_param = await RawSocket.connect(n2.ws_url, "vsn=2.0.0&user=AL")
        others.append(by_param)
        assert await join(by_param, topic, "1", {}) == {"status": "error", "response": TAKEN}
        # an anonymous socket that joined without a name cannot sign messages as al either
        nameless = await RawSocket.connect(n2.ws_url)
        others.append(nameless)
        assert (await join(nameless, topic, "1", {}))["status"] == "ok"
        await nameless.send("1", "m1", topic, "new:msg", {"body": "i am al", "user": "\uff21L"})
        frame = await nameless.recv_until(lambda f: f[1] == "m1")
        assert frame[4] == {"status": "error", "response": TAKEN}
        await nameless.send("1", "m2", topic, "new:msg", {"body": "i am cy", "user": "cy"})
        frame = await nameless.recv_until(lambda f: f[1] == "m2")
        assert frame[4]["status"] == "ok"
    finally:
        await al.close()
        for ws in others:
            await ws.close()
    # once al has left, the name is free again (it is held by presence, not reserved)
    later = await RawSocket.connect(n2.ws_url)
    try:
        replies: list[Any] = []

        async def try_join() -> None:
            replies.append(await join(later, topic, str(len(replies)), {"user": "al"}))

        await try_join()
        while replies[-1]["status"] != "ok":
            await asyncio.sleep(0.02)  # al's leave is on its way to the store
            await try_join()
            assert len(replies) < 500, replies[-1]
    finally:
        await later.close()


# -- the verified flag, set by the server --------------------------------------------------------


@pytest.fixture
async def anonymous_node(local_server: Any) -> Any:
    """A node with a secret but without --require-token: tokens and guests side by side."""
    endpoint = create_endpoint("v", MemoryBroker(), settings=ChatSettings(secret=SECRET))
    return await local_server(endpoint)


async def test_verified_flag_only_for_token_users_and_never_from_the_client(
    anonymous_node: Any,
) -> None:
    topic = "rooms:flags"
    al = await RawSocket.connect(anonymous_node.ws_url, f"vsn=2.0.0&token={token('al')}")
    # everything a guest can send that says "verified": a connect param, the join
    # payload, the message payload
    bo = await RawSocket.connect(anonymous_node.ws_url, "vsn=2.0.0&user=bo&verified=true")
    try:
        assert (await join(al, topic, "1", {"user": "al", "verified": False}))["status"] == "ok"
        entered_al = await al.recv_until(lambda f: f[3] == "user:entered")
        assert entered_al[4] == {"user": "al", "verified": True}
        assert [m["verified"] for m in await tracked(al, topic, "al")] == [True]

        assert (await join(bo, topic, "1", {"user": "bo", "verified": True}))["status"] == "ok"
        entered_bo = await al.recv_until(lambda f: f[3] == "user:entered")
        assert entered_bo[4] == {"user": "bo", "verified": False}
        bo_metas = await tracked(al, topic, "bo")
        assert [m["verified"] for m in bo_metas] == [False]
        state = await bo.recv_until(lambda f: f[3] == "presence_state")
        assert [m["verified"] for m in state[4]["al"]["metas"]] == [True]

        await bo.send("1", "m", topic, "new:msg", {"body": "from bo", "verified": True})
        await al.send("1", "m", topic, "new:msg", {"body": "from al", "verified": False})
        for ws in (al, bo):
            got = {}
            while len(got) < 2:
                frame = await ws.recv_until(lambda f: f[3] == "new:msg")
                got[frame[4]["user"]] = frame[4]["verified"]
            assert got == {"al": True, "bo": False}
        # the join reply's history carries the flag too (it is the stored payload)
        late = await RawSocket.connect(anonymous_node.ws_url)
        try:
            history = (await join(late, topic, "1", {}))["response"]["history"]
            assert {m["user"]: m["verified"] for m in history} == {"al": True, "bo": False}
        finally:
            await late.close()
    finally:
        await al.close()
        await bo.close()


async def test_a_verified_user_takes_a_name_a_guest_holds(anonymous_node: Any) -> None:
    """The guest who had the name first stays, marked as a guest; the token holder gets
    the name with the mark, and the next anonymous join with that name is refused."""
    topic = "rooms:first"
    guest = await RawSocket.connect(anonymous_node.ws_url)
    cy = await RawSocket.connect(anonymous_node.ws_url, f"vsn=2.0.0&token={token('cy')}")
    again = await RawSocket.connect(anonymous_node.ws_url)
    try:
        assert (await join(guest, topic, "1", {"user": "cy"}))["status"] == "ok"
        assert (await join(cy, topic, "1", {}))["status"] == "ok"
        state = await cy.recv_until(lambda f: f[3] == "presence_state")
        assert [m["verified"] for m in state[4]["cy"]["metas"]] == [False]
        # (the guest's own join and cy's may come in one batched diff)
        metas = await tracked(guest, topic, "cy")
        if len(metas) == 1:
            metas += await tracked(guest, topic, "cy")
        assert sorted(m["verified"] for m in metas) == [False, True]
        await guest.send("1", "m", topic, "new:msg", {"body": "still a guest"})
        frame = await cy.recv_until(lambda f: f[3] == "new:msg")
        assert (frame[4]["user"], frame[4]["verified"]) == ("cy", False)
        refused = await join(again, topic, "1", {"user": "Cy"})
        assert refused == {"status": "error", "response": TAKEN}
    finally:
        for ws in (guest, cy, again):
            await ws.close()


# -- name rules ----------------------------------------------------------------------------------


def test_name_key_folds_look_alikes() -> None:
    keys = {validate.name_key(name) for name in LOOK_ALIKES}
    assert keys == {"al"}
    assert validate.name_key("Straße") == validate.name_key("STRASSE")
    assert validate.name_key("a  l") == validate.name_key("a\u00a0l") == "a l"
    assert validate.name_key("al") != validate.name_key("al2")


@pytest.mark.parametrize("name", ["al\u202e", "\u2066al", "a\x00l", "a\nl", "al\u200f"])
def test_names_with_control_or_bidi_characters_are_refused(name: str) -> None:
    with pytest.raises(validate.Invalid, match="invalid user"):
        validate.user_name(name)
