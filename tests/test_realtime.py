"""Supabase Realtime channels (``realtime:*``), on real nodes with raw frames.

The frames are what @supabase/realtime-js 2.x sends and expects (src/RealtimeChannel.ts,
lib/serializer.ts) and what the Supabase server answers (realtime_channel.ex,
v2_serializer.ex). Realtime is enabled through ``ROOST_REALTIME`` (the ``--realtime``
option's environment variable).
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from roost.security import tokens

from rawws import RawSocket
from support import RedisProcess, ServerProcess, start_redis, start_server

SECRET = "realtime-test-secret"
API_KEY = "realtime-test-key"
ARGS = ["--secret", SECRET, "--private-rooms", "ops,staff-*", "--api-key", API_KEY]
ENV = {"ROOST_REALTIME": "1"}


def user_broadcast_push(
    join_ref: str,
    ref: str,
    topic: str,
    event: str,
    payload: bytes,
    *,
    json: bool,
    meta: bytes = b"",
) -> bytes:
    """Kind 3, byte for byte as realtime-js's ``_encodeUserBroadcastPush`` builds it."""
    fields = [join_ref.encode(), ref.encode(), topic.encode(), event.encode(), meta]
    return bytes([3, *map(len, fields), 1 if json else 0]) + b"".join(fields) + payload


def read_user_broadcast(data: bytes) -> tuple[str, str, bytes, int, bytes]:
    """Kind 4 as realtime-js's ``_decodeUserBroadcast`` reads it: (topic, event,
    metadata, encoding, payload)."""
    assert data[0] == 4
    topic_size, event_size, meta_size, encoding = data[1:5]
    pos = 5
    topic = data[pos : pos + topic_size].decode()
    pos += topic_size
    event = data[pos : pos + event_size].decode()
    pos += event_size
    meta = data[pos : pos + meta_size]
    return topic, event, meta, encoding, data[pos + meta_size :]


def config(
    *, self_: bool = False, ack: bool = False, key: str = "", presence: bool = False, **extra: Any
) -> dict[str, Any]:
    """A join payload as realtime-js's ``subscribe()`` builds it."""
    cfg: dict[str, Any] = {
        "broadcast": {"self": self_, "ack": ack},
        "presence": {"key": key, "enabled": presence},
        "postgres_changes": [],
        "private": False,
    }
    cfg.update(extra.pop("cfg", {}))
    return {"config": cfg, **extra}


def is_reply(ref: str) -> Any:
    return lambda f: isinstance(f, list) and f[3] == "phx_reply" and f[1] == ref


def is_event(event: str) -> Any:
    return lambda f: isinstance(f, list) and f[3] == event


def is_broadcast(user_event: str) -> Any:
    return lambda f: isinstance(f, list) and f[3] == "broadcast" and f[4].get("event") == user_event


async def joined(url: str, topic: str, payload: dict[str, Any], ref: str = "1") -> RawSocket:
    sock = await RawSocket.connect(url)
    reply = await sock.join(topic, ref, payload)
    assert reply[4] == {"status": "ok", "response": {"postgres_changes": []}}, reply
    return sock


async def no_frame_among(sock: RawSocket, until: Any, unwanted: Any) -> Any:
    """Read up to the frame ``until`` matches; fail on any ``unwanted`` frame before it."""
    while True:
        frame = await sock.recv()
        assert isinstance(frame, list | bytes), frame
        assert not unwanted(frame), frame
        if until(frame):
            return frame


async def recv_all(sock: RawSocket, *preds: Any) -> list[Any]:
    """Read until each predicate matched a frame (in any order); those frames, in order."""
    found: list[Any] = [None] * len(preds)
    while any(f is None for f in found):
        frame = await sock.recv_until(
            lambda f: any(found[i] is None and p(f) for i, p in enumerate(preds))
        )
        i = next(i for i, p in enumerate(preds) if found[i] is None and p(frame))
        found[i] = frame
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(*ARGS, env=ENV, log_dir=tmp_path_factory.mktemp("rt"))
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    redis: RedisProcess = start_redis()
    log_dir = tmp_path_factory.mktemp("rt2")
    args = [*ARGS, "--redis", redis.url]
    servers = [start_server(*args, node=f"rt{i}", env=ENV, log_dir=log_dir) for i in (1, 2)]
    yield servers
    for s in servers:
        s.stop(signal.SIGKILL)
    redis.stop()


# -- join ----------------------------------------------------------------------------------


async def test_join_with_a_supabase_config_gets_the_servers_reply(node: ServerProcess) -> None:
    sock = await RawSocket.connect(node.ws_url, "apikey=anything&vsn=2.0.0")
    try:
        payload = config(access_token="sb_publishable_key")
        reply = await sock.join("realtime:room", "1", payload)
        assert reply == [
            "1",
            "1",
            "realtime:room",
            "phx_reply",
            {"status": "ok", "response": {"postgres_changes": []}},
        ]
        nameless = await sock.join("realtime:", "2", config())
        assert nameless[4]["status"] == "error"
        assert nameless[4]["response"]["reason"].startswith("TopicNameRequired")
    finally:
        await sock.close()


async def test_postgres_changes_and_bad_configs_are_refused(node: ServerProcess) -> None:
    sock = await RawSocket.connect(node.ws_url)
    try:
        wanted = [{"event": "*", "schema": "public", "table": "messages"}]
        reply = await sock.join("realtime:pg", "2", config(cfg={"postgres_changes": wanted}))
        assert reply[4]["status"] == "error"
        assert "postgres_changes is not supported" in reply[4]["response"]["reason"]
        for i, bad in enumerate(
            [
                {"config": {"broadcast": {"self": "yes"}}},
                {"config": {"presence": {"key": {"a": 1}}}},
                {"config": "nope"},
                {"config": {"broadcast": {"replay": {"since": 1}}, "private": True}},
            ]
        ):
            reply = await sock.join("realtime:bad", f"b{i}", bad)
            assert reply[4]["status"] == "error", (bad, reply)
            assert reply[4]["response"]["reason"], reply
    finally:
        await sock.close()


# -- broadcast -----------------------------------------------------------------------------


async def test_broadcast_across_two_nodes_with_self_and_ack(two_nodes: list[ServerProcess]) -> None:
    n1, n2 = two_nodes
    topic = "realtime:bc"
    quiet = await joined(n1.ws_url, topic, config())  # self false, ack false
    loud = await joined(n2.ws_url, topic, config(self_=True, ack=True))
    try:
        m1 = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
        await quiet.send("1", "10", topic, "broadcast", m1)
        got = await loud.recv_until(is_broadcast("cursor"))
        assert got == [None, None, topic, "broadcast", m1]

        m2 = {"type": "broadcast", "event": "shout", "payload": {"y": 2}}
        await loud.send("1", "20", topic, "broadcast", m2)
        # ack: the sender's push is answered; self: it gets its own message too.
        await recv_all(loud, is_reply("20"), is_broadcast("shout"))
        # The quiet sender got neither its own message nor a reply (no ack) before m2.
        own = lambda f: is_broadcast("cursor")(f) or is_reply("10")(f)  # noqa: E731
        got = await no_frame_among(quiet, is_broadcast("shout"), own)
        assert got[4] == m2
    finally:
        await quiet.close()
        await loud.close()


async def test_binary_user_broadcast_frames(two_nodes: list[ServerProcess]) -> None:
    """realtime-js 2.x sends every broadcast as a kind-3 frame (JSON or raw payload)."""
    n1, n2 = two_nodes
    topic = "realtime:bin"
    sender = await joined(n1.ws_url, topic, config(ack=True))
    receiver = await joined(n2.ws_url, topic, config())
    try:
        frame = user_broadcast_push(
            "1", "5", topic, "move", b'{"x":3}', json=True, meta=b'{"id":"m1"}'
        )
        await sender.send_raw(frame)
        await sender.recv_until(is_reply("5"))  # ack
        got = await receiver.recv_until(is_broadcast("move"))
        assert got[4] == {
            "type": "broadcast",
            "event": "move",
            "payload": {"x": 3},
            "meta": {"id": "m1"},
        }

        raw = bytes(range(256))
        frame = user_broadcast_push("1", "6", topic, "blob", raw, json=False)
        await sender.send_raw(frame)
        await sender.recv_until(is_reply("6"))
        data = await receiver.recv_until(lambda f: isinstance(f, bytes))
        assert read_user_broadcast(data) == (topic, "blob", b"", 0, raw)

        # A malformed one is answered, not a reason to drop the connection.
        bad = user_broadcast_push("1", "7", topic, "bad", b"{", json=True)
        await sender.send_raw(bad)
        reply = await sender.recv_until(is_reply("7"))
        assert reply[4]["status"] == "error"
    finally:
        await sender.close()
        await receiver.close()


# -- presence ------------------------------------------------------------------------------


async def test_presence_track_and_untrack_seen_across_nodes(
    two_nodes: list[ServerProcess],
) -> None:
    n1, n2 = two_nodes
    topic = "realtime:pres"
    al = await RawSocket.connect(n1.ws_url)
    bo = await RawSocket.connect(n2.ws_url)
    try:
        assert (await al.join(topic, "1", config(key="al", presence=True)))[4]["status"] == "ok"
        assert (await al.recv_until(is_event("presence_state")))[4] == {}
        assert (await bo.join(topic, "1", config(presence=True)))[4]["status"] == "ok"
        await bo.recv_until(is_event("presence_state"))

        track = {"type": "presence", "event": "track", "payload": {"status": "online"}}
        await al.send("1", "2", topic, "presence", track)
        assert (await al.recv_until(is_reply("2")))[4] == {"status": "ok", "response": {}}
        diff = await bo.recv_until(lambda f: is_event("presence_diff")(f) and f[4]["joins"])
        (meta,) = diff[4]["joins"]["al"]["metas"]
        assert meta["status"] == "online" and meta["phx_ref"]

        # bo joined without a key: it tracks under a generated id, as the server does.
        await bo.send("1", "3", topic, "presence", track)
        await bo.recv_until(is_reply("3"))
        diff = await al.recv_until(
            lambda f: is_event("presence_diff")(f) and set(f[4]["joins"]) - {"al"}
        )
        (key,) = set(diff[4]["joins"]) - {"al"}
        uuid.UUID(key)

        await al.send("1", "4", topic, "presence", {"type": "presence", "event": "untrack"})
        await al.recv_until(is_reply("4"))
        diff = await bo.recv_until(lambda f: is_event("presence_diff")(f) and f[4]["leaves"])
        assert list(diff[4]["leaves"]) == ["al"]

        bad = {"type": "presence", "event": "track", "payload": [1]}
        await al.send("1", "5", topic, "presence", bad)
        reply = await al.recv_until(is_reply("5"))
        assert reply[4]["status"] == "error"
    finally:
        await al.close()
        await bo.close()


# -- access tokens and private channels ----------------------------------------------------


async def test_access_token_in_join_and_pushes(node: ServerProcess) -> None:
    topic = "realtime:tok"
    sock = await RawSocket.connect(node.ws_url)
    try:
        reply = await sock.join(topic, "1", config(access_token="not-a-token"))
        assert reply[4]["status"] == "error"
        assert reply[4]["response"]["reason"] == "InvalidJWTToken: invalid token"

        good = tokens.mint(SECRET, "al", ttl=600)
        assert (await sock.join(topic, "2", config(access_token=good, ack=True)))[4][
            "status"
        ] == "ok"
        fresh = tokens.mint(SECRET, "al", ttl=900)
        await sock.send("2", "3", topic, "access_token", {"access_token": fresh})
        # Accepted without a reply; the channel still works.
        await sock.send("2", "4", topic, "broadcast", {"type": "broadcast", "event": "e"})
        await no_frame_among(sock, is_reply("4"), is_reply("3"))

        await sock.send("2", "5", topic, "access_token", {"access_token": "forged"})
        system = await sock.recv_until(is_event("system"))
        assert system[4] == {
            "extension": "system",
            "status": "error",
            "message": "InvalidJWTToken: invalid token",
            "channel": "tok",
        }
        await sock.recv_until(is_event("phx_error"))
    finally:
        await sock.close()


async def test_token_expiry_ends_the_channel(node: ServerProcess) -> None:
    topic = "realtime:exp"
    sock = await RawSocket.connect(node.ws_url)
    try:
        short = tokens.mint(SECRET, "al", ttl=1)
        assert (await sock.join(topic, "1", config(access_token=short)))[4]["status"] == "ok"
        system = await sock.recv_until(is_event("system"), timeout=10)
        assert system[4]["message"] == "InvalidJWTToken: expired token"
        await sock.recv_until(is_event("phx_error"))
        # The client's rejoin with the same token is refused.
        reply = await sock.join(topic, "2", config(access_token=short))
        assert reply[4]["response"]["reason"] == "InvalidJWTToken: expired token"
    finally:
        await sock.close()


async def test_private_channels_need_the_tokens_room(node: ServerProcess) -> None:
    sock = await RawSocket.connect(node.ws_url)
    try:
        private = {"cfg": {"private": True}}
        reply = await sock.join("realtime:ops", "1", config(**private))
        assert reply[4]["status"] == "error"
        assert reply[4]["response"]["reason"].startswith("Unauthorized")
        # Saying "public" does not open a private room either.
        reply = await sock.join("realtime:staff-a", "2", config())
        assert reply[4]["response"]["reason"].startswith("Unauthorized")
        other = tokens.mint(SECRET, "al", rooms=["staff-a"])
        reply = await sock.join("realtime:ops", "3", config(access_token=other, **private))
        assert reply[4]["response"]["reason"].startswith("Unauthorized")
        # private: true on a room the server keeps public is refused (anybody could read).
        member = tokens.mint(SECRET, "al", rooms=["ops"])
        reply = await sock.join("realtime:lobby", "4", config(access_token=member, **private))
        assert "not a private channel" in reply[4]["response"]["reason"]

        reply = await sock.join("realtime:ops", "5", config(access_token=member, **private))
        assert reply[4]["status"] == "ok"
        # A new token without the room takes it away.
        await sock.send("5", "6", "realtime:ops", "access_token", {"access_token": other})
        system = await sock.recv_until(is_event("system"))
        assert system[4]["message"].startswith("Unauthorized")
    finally:
        await sock.close()


# -- REST ----------------------------------------------------------------------------------


async def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/api/broadcast", data=orjson.dumps(body), headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_rest_messages_shape(two_nodes: list[ServerProcess]) -> None:
    n1, n2 = two_nodes
    sub = await joined(n2.ws_url, "realtime:news", config())
    member = tokens.mint(SECRET, "al", rooms=["ops"])
    ops = await joined(
        n2.ws_url, "realtime:ops", config(access_token=member, cfg={"private": True})
    )
    try:
        # realtime-js's REST fallback: apikey header, the user's token as the bearer.
        headers = {"apikey": API_KEY, "Authorization": f"Bearer {member}"}
        body = {
            "messages": [
                {"topic": "news", "event": "flash", "payload": {"n": 1}, "private": False},
                {"topic": "ops", "event": "alert", "payload": {"n": 2}, "private": True},
            ]
        }
        status, _ = await post(n1.url, body, headers)
        assert status == 202
        got = await sub.recv_until(is_broadcast("flash"))
        assert got[4] == {"type": "broadcast", "event": "flash", "payload": {"n": 1}}
        got = await ops.recv_until(is_broadcast("alert"))
        assert got[4]["payload"] == {"n": 2}

        # private is respected: never delivered to the other audience.
        for wrong in ({"topic": "ops", "private": False}, {"topic": "news", "private": True}):
            msg = {"event": "x", "payload": {}, **wrong}
            status, answer = await post(n1.url, {"messages": [msg]}, headers)
            assert status == 400 and "channel on this server" in answer["error"], answer
        for bad in ([], [{"topic": "news", "event": "x", "payload": 1}], "x"):
            status, _ = await post(n1.url, {"messages": bad}, headers)
            assert status == 400
        status, _ = await post(n1.url, body, {"apikey": "wrong"})
        assert status == 401

        # roost's own shape still works, with the bearer key.
        old = {"topic": "realtime:news", "event": "broadcast", "payload": {"event": "old"}}
        status, _ = await post(n1.url, old, {"Authorization": f"Bearer {API_KEY}"})
        assert status == 202
        await sub.recv_until(is_broadcast("old"))
    finally:
        await sub.close()
        await ops.close()


async def test_presence_state_only_when_enabled(node: ServerProcess) -> None:
    """Without ``presence.enabled`` no ``presence_state`` is pushed at the join (the
    server's ``presence_enabled?``); the first track pushes it."""
    topic = "realtime:quiet"
    sock = await joined(node.ws_url, topic, config(ack=True))
    try:
        await sock.send("1", "2", topic, "broadcast", {"type": "broadcast", "event": "e"})
        await no_frame_among(sock, is_reply("2"), is_event("presence_state"))
        track = {"type": "presence", "event": "track", "payload": {}}
        await sock.send("1", "3", topic, "presence", track)
        await sock.recv_until(is_event("presence_state"))
        await sock.recv_until(is_reply("3"))
    finally:
        await sock.close()


def test_realtime_is_off_by_default(tmp_path: Path) -> None:
    server = start_server("--api-key", API_KEY, log_dir=tmp_path)
    try:

        async def check() -> None:
            sock = await RawSocket.connect(server.ws_url)
            try:
                reply = await sock.join("realtime:room", "1", config())
                assert reply[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
            finally:
                await sock.close()
            msg = {"topic": "room", "event": "e", "payload": {}}
            status, answer = await post(server.url, {"messages": [msg]}, {"apikey": API_KEY})
            assert status == 400 and "--realtime" in answer["error"]

        asyncio.run(check())
    finally:
        server.stop()


async def test_a_user_broadcast_frame_is_answered_not_closed(node: ServerProcess) -> None:
    """Kind 3 was an unknown binary kind: the connection was closed with 1007 and the
    message lost. Now it is a push like any other (here: to a topic not joined)."""
    sock = await RawSocket.connect(node.ws_url)
    try:
        frame = user_broadcast_push("1", "9", "realtime:nowhere", "e", b"{}", json=True)
        await sock.send_raw(frame)
        reply = await sock.recv_until(is_reply("9"))
        assert reply[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
    finally:
        await sock.close()


def test_user_broadcast_frames_are_checked() -> None:
    """Every length of kinds 3 and 4 is checked against the frame (sans I/O)."""
    from roost.protocol import ProtocolError, binary

    good = user_broadcast_push("1", "2", "realtime:t", "ev", b"[1]", json=True, meta=b"{}")
    msg = binary.decode_push(good)
    assert (msg.join_ref, msg.ref, msg.topic, msg.event) == ("1", "2", "realtime:t", "broadcast")
    assert msg.payload == binary.UserBroadcast("ev", b"[1]", True, {})
    for cut in range(1, 7):  # shorter than the header, or than its fields: unanswerable
        with pytest.raises(ProtocolError) as info:
            binary.decode_push(good[:cut])
        assert not info.value.answerable
    with pytest.raises(ProtocolError):
        binary.decode_push(good[:12])  # the fields run past its end
    answerable = [
        good[:6] + b"\x07" + good[7:],  # an unknown payload encoding
        user_broadcast_push("1", "2", "realtime:t", "", b"{}", json=True),  # no event
        user_broadcast_push("1", "2", "realtime:t", "e", b"{}", json=True, meta=b"[1]"),
        user_broadcast_push("1", "2", "realtime:t", "e", b"{", json=True),
    ]
    for frame in answerable:
        with pytest.raises(ProtocolError) as info:
            binary.decode_push(frame)
        assert info.value.answerable, frame
    out = binary.encode_user_broadcast("realtime:t", "ev", b"\x00\x01", json=False, meta=b'{"a":1}')
    assert read_user_broadcast(out) == ("realtime:t", "ev", b'{"a":1}', 0, b"\x00\x01")
    decoded = binary.decode_server(out)
    assert decoded.payload == {
        "type": "broadcast",
        "event": "ev",
        "payload": b"\x00\x01",
        "meta": {"a": 1},
    }
    with pytest.raises(ProtocolError):
        binary.decode_server(out[:3])


def test_supabase_api_keys_stand_for_no_user() -> None:
    """What Supabase clients send when nobody is signed in (an ``sb_`` key, or a legacy
    anon JWT) is "no user token"; any other JWT must be a roost token (refused)."""
    import base64 as b64
    import json as js

    from roost.realtime.auth import is_api_key

    def jwt(claims: dict[str, object]) -> str:
        def part(obj: object) -> str:
            return b64.urlsafe_b64encode(js.dumps(obj).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"

    assert is_api_key("sb_publishable_abc")
    assert is_api_key(jwt({"role": "anon", "iss": "supabase"}))
    assert not is_api_key(jwt({"role": "authenticated", "sub": "al"}))
    assert not is_api_key(jwt({"role": "service_role"}))
    assert not is_api_key("eyJ.not-base64!.x")
    assert not is_api_key("forged")
