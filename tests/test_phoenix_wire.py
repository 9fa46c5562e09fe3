"""roost beside Phoenix on one Redis (``--redis-wire phoenix``), against the real Erlang
runtime: tests/erlang/phx_peer.escript does on a real redis-server what
phoenix_pubsub_redis 3.x does (term_to_binary + PUBLISH; SUBSCRIBE + binary_to_term and
its handle_info guard), with OTP's own codec. No Phoenix node runs here (no Elixir, no
Hex packages on this machine): the README says so and what this proves."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import roost
import roost.protocol
from roost.client import Client

from erlang_peer import Listener, literal, need_erlang, publish
from support import RedisProcess, ServerProcess, start_server, until

CHANNEL = "phx:Elixir.Chat.PubSub.Adapter"  # phoenix_pubsub_redis 3.x, name: Chat.PubSub
SERVER = "'Elixir.Phoenix.Channel.Server'"


def broadcast(topic: str, event: str, payload: str) -> str:
    return (
        f"#{{'__struct__' => 'Elixir.Phoenix.Socket.Broadcast', topic => <<\"{topic}\">>, "
        f'event => <<"{event}">>, payload => {payload}}}'
    )


def message(node: str, topic: str, event: str, payload: str, mode: str = "except") -> str:
    """The term phoenix_pubsub_redis 3.x publishes for Endpoint.broadcast (or a direct
    broadcast, mode ``only``)."""
    return (
        f'{{3, {mode}, <<"{node}">>, <<"{topic}">>, {broadcast(topic, event, payload)}, {SERVER}}}'
    )


def metrics(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture
def nodes(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Any]:
    need_erlang()
    started: list[ServerProcess] = []

    def make(*names: str, extra: tuple[str, ...] = ()) -> list[ServerProcess]:
        for name in names:
            args = ["--redis", redis_server.url, "--redis-wire", "phoenix"]
            args += ["--phoenix-pubsub", "Chat.PubSub", "--msg-rate", "0", *extra]
            started.append(start_server(*args, node=name, log_dir=tmp_path))
        return started[-len(names) :]

    yield make
    for server in started:
        server.stop()


async def joined(url: str, topic: str, user: str) -> tuple[Client, Any, list[Any]]:
    client = Client(url)
    await client.connect()
    got: list[Any] = []
    ch = client.channel(topic, {"user": user})
    ch.on("new:msg", got.append)
    await ch.join()
    return client, ch, got


async def test_an_erlang_broadcast_reaches_browsers_on_roost(
    nodes: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    (n1,) = nodes("n1")
    client, ch, got = await joined(n1.ws_url, "rooms:lobby", "al")
    blobs: list[Any] = []
    ch.on("blob", blobs.append)
    try:
        # {:binary, data}: a binary broadcast frame, as Phoenix's V2 serializer sends it.
        binary = message("phx1", "rooms:lobby", "blob", "{binary, <<0, 1, 2, 255>>}")
        publish(redis_server.port, CHANNEL, binary, tmp_path)
        await until(lambda: blobs == [b"\x00\x01\x02\xff"], what="the binary broadcast")
        atoms = '#{body => <<"hello from u1">>, user => <<"u1">>}'
        publish(
            redis_server.port, CHANNEL, message("phx1", "rooms:lobby", "new:msg", atoms), tmp_path
        )
        nested = (
            '#{<<"body">> => <<"héllo"/utf8>>, <<"n">> => [1, -7, 4611686018427387905, 2.5, '
            "nil, true, [[]], #{k => v}], 42 => ok}"
        )
        for level in (0, 9):  # :compression_level 0 and 9
            publish(
                redis_server.port,
                CHANNEL,
                message("phx1", "rooms:lobby", "new:msg", nested),
                tmp_path,
                level,
            )
        await until(lambda: len(got) == 3, what="three broadcasts from Erlang")
        assert got[0] == {"body": "hello from u1", "user": "u1"}
        want = {
            "body": "héllo",
            "n": [1, -7, 4611686018427387905, 2.5, None, True, [[]], {"k": "v"}],
            "42": "ok",
        }
        assert got[1] == want and got[2] == want
    finally:
        await client.close()


async def test_a_roost_push_arrives_as_the_exact_term_phoenix_takes(
    nodes: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    (n1,) = nodes("n1")
    sender, ch, _ = await joined(n1.ws_url, "rooms:lobby", "al")
    reader, _, got = await joined(n1.ws_url, "rooms:lobby", "bo")
    try:
        # The chat's payload gets an id, a time and an offset when sent: the bytes are
        # captured on Redis, and erl must decode them into exactly the term built from
        # what a browser received (roost.publish below checks fully known terms).
        capture = await _capture(redis_server, 1)
        reply = await ch.push("new:msg", {"body": "hi from roost ✓"})
        assert reply.ok, reply
        await until(lambda: len(got) == 1, what="the reader's copy")
        raw = await capture
        payload = got[0]
        term = message("n1", "rooms:lobby", "new:msg", literal(_binary_keys(payload)))
        path = tmp_path / "captured.bin"
        path.write_bytes(raw[0])
        assert _erl_accepts(path, term, "phx1") == "true true true"
        assert payload["body"] == "hi from roost ✓" and payload["node"] == "n1"
    finally:
        await sender.close()
        await reader.close()


def _binary_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.encode(): _binary_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_binary_keys(v) for v in value]
    if isinstance(value, str):
        return value.encode()
    return value


async def _capture(redis_server: RedisProcess, count: int) -> asyncio.Future[list[bytes]]:
    """Subscribe to the Phoenix channel now; the future holds the next ``count`` new:msg
    messages' raw bytes, as Redis delivered them."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    while (await pubsub.get_message(timeout=1.0)) is None:
        pass  # the subscribe confirmation

    async def read() -> list[bytes]:
        found: list[bytes] = []
        try:
            while len(found) < count:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10.0)
                if msg is None:
                    raise AssertionError("nothing on the Phoenix channel")
                if b"new:msg" in msg["data"]:
                    found.append(msg["data"])
            return found
        finally:
            await pubsub.aclose()
            await client.aclose()

    return asyncio.ensure_future(read())


def _erl_accepts(path: Path, term: str, node: str) -> str:
    """binary_to_term in erl: is it exactly ``term``, would phoenix_pubsub_redis's
    handle_info on node ``node`` deliver it, could Phoenix.Channel.Server fastlane it?"""
    from erlang_peer import erl

    out = erl(
        f'{{ok, B}} = file:read_file("{path}"), T = binary_to_term(B), '
        f"Want = {term}, "
        f'Accepts = case T of {{3, except, N, Tp, _, D}} when N =/= <<"{node}">>, '
        "is_binary(Tp), is_atom(D) -> true; _ -> false end, "
        "Fast = case T of {3, _, _, Tp2, #{'__struct__' := 'Elixir.Phoenix.Socket.Broadcast', "
        "topic := Tp2, event := E, payload := P}, 'Elixir.Phoenix.Channel.Server'} "
        "when is_binary(E), is_map(P) -> true; _ -> false end, "
        'io:format("~p ~p ~p", [T =:= Want, Accepts, Fast])'
    )
    return out.strip()


async def test_roost_publish_pushes_into_phoenix_channels(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    need_erlang()
    payload = {"body": "deploy at 5", "tags": ["ops", 1, 2.5, None, False], "meta": {"a": 1}}
    as_binaries = literal(_binary_keys(payload))
    as_atoms = (
        '#{body => <<"deploy at 5">>, tags => [<<"ops">>, 1, 2.5, nil, false], meta => #{a => 1}}'
    )
    wanted = [
        message("svc", "rooms:ops", "announce", as_binaries),
        message("svc", "rooms:ops", "announce", as_atoms),
        message("svc", "rooms:ops", "announce", as_binaries),
        message("svc", "rooms:bin", "blob", "{binary, <<0, 1, 2, 255>>}"),
    ]
    listener = Listener(redis_server.port, CHANNEL, "phx1", wanted, tmp_path)
    common = {"wire": "phoenix", "node": "svc"}
    await roost.publish_async(redis_server.url, "rooms:ops", "announce", payload, **common)
    await roost.publish_async(
        redis_server.url, "rooms:ops", "announce", payload, atom_keys=True, **common
    )
    await roost.publish_async(
        redis_server.url, "rooms:ops", "announce", payload, compressed=9, **common
    )
    await roost.publish_async(redis_server.url, "rooms:bin", "blob", b"\x00\x01\x02\xff", **common)
    out = listener.result()
    assert out.count("match") == 4, out
    with pytest.raises(ValueError, match="JSON object"):
        await roost.publish_async(redis_server.url, "rooms:ops", "x", [1, 2], **common)
    with pytest.raises(ValueError, match="no history"):
        await roost.publish_async(redis_server.url, "rooms:ops", "x", {}, store=True, **common)
    # The CLI equivalent.
    listener = Listener(redis_server.port, CHANNEL, "phx1", [wanted[1]], tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "roost", "publish", "--redis", redis_server.url, "--wire",
         "phoenix", "--node", "svc", "--atom-keys", "rooms:ops", "announce", json.dumps(payload)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert listener.result().count("match") == 1


async def test_roost_and_phoenix_nodes_share_a_room_with_except_and_only(
    nodes: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    n1, n2 = nodes("n1", "n2")
    a, ch_a, got_a = await joined(n1.ws_url, "rooms:lobby", "al")
    b, _, got_b = await joined(n2.ws_url, "rooms:lobby", "bo")
    try:
        # roost to roost over Phoenix's wire: exactly once each, the sender's own echo
        # on Redis skipped by node name (:except).
        for i in range(5):
            reply = await ch_a.push("new:msg", {"body": f"m{i}"})
            assert reply.ok, reply
        await until(lambda: len(got_b) == 5 and len(got_a) == 5, what="five on each node")
        assert [m["body"] for m in got_b] == [f"m{i}" for i in range(5)]
        assert [m["body"] for m in got_a] == [f"m{i}" for i in range(5)]
        # Phoenix's own semantics: {:except, "n1"} is n1's broadcast (n1 skips it);
        # {:only, "n1"} is a direct broadcast to n1; then one for everyone, which comes
        # after them on the one Redis connection each node reads.
        port = redis_server.port
        publish(
            port, CHANNEL, message("n1", "rooms:lobby", "new:msg", '#{body => <<"x1">>}'), tmp_path
        )
        publish(
            port,
            CHANNEL,
            message("n1", "rooms:lobby", "new:msg", '#{body => <<"o1">>}', mode="only"),
            tmp_path,
        )
        publish(
            port,
            CHANNEL,
            message("phx1", "rooms:lobby", "new:msg", '#{body => <<"all">>}'),
            tmp_path,
        )
        await until(lambda: len(got_a) == 7 and len(got_b) == 7, what="the marker on each node")
        assert [m["body"] for m in got_a[5:]] == ["o1", "all"]
        assert [m["body"] for m in got_b[5:]] == ["x1", "all"]
        text = metrics(n2)
        assert metric(text, "roost_broadcasts_received") >= 7
    finally:
        await a.close()
        await b.close()


ARTICLE = """%{
  __struct__: Phoenix.Socket.Broadcast,
  event: "new:msg",
  payload: %{body: "hello from u1", user: "u1"},
  topic: "rooms:lobby"
}

%{
  __struct__: Phoenix.Socket.Broadcast,
  event: "new:msg",
  payload: %{body: "hello from u2", user: "u2"},
  topic: "rooms:lobby"
}

"""


def test_inspect_prints_what_the_articles_redis_print_prints(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    need_erlang()
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "inspect", "--wire", "phoenix", "--redis",
         redis_server.url, "--phoenix-pubsub", "Chat.PubSub", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "subscribed to phx:Elixir.Chat.PubSub.Adapter" in line, line
        for user in ("u1", "u2"):
            payload = f'#{{body => <<"hello from {user}">>, user => <<"{user}">>}}'
            publish(
                redis_server.port,
                CHANNEL,
                message(f"n{user[1]}", "rooms:lobby", "new:msg", payload),
                tmp_path,
            )
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out == ARTICLE
    # --json, and an error line for bytes that are not a message.
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "inspect", "--wire", "phoenix", "--redis",
         redis_server.url, "--json", "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert "subscribed" in proc.stderr.readline()
        publish(redis_server.port, CHANNEL, '<<"junk">>', tmp_path)
        payload = '#{body => <<"hi">>, n => 1}'
        publish(redis_server.port, CHANNEL, message("n1", "rooms:a", "new:msg", payload), tmp_path)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    error, shown = (json.loads(line) for line in out.splitlines())
    assert error["error"].startswith("not a Phoenix message")
    assert shown["vsn"] == 3 and shown["mode"] == "except" and shown["node"] == "n1"
    assert (shown["topic"], shown["event"]) == ("rooms:a", "new:msg")
    assert shown["payload"] == {"body": "hi", "n": 1}
    assert shown["dispatcher"] == "Phoenix.Channel.Server"


async def test_the_articles_2_1_messages_are_read_too(
    nodes: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    legacy = "phx:Elixir.Chat.PubSub"  # phoenix_pubsub_redis 2.1.x: the PubSub's own name
    (n1,) = nodes("n1", extra=("--phoenix-channel", legacy))
    client, _, got = await joined(n1.ws_url, "rooms:lobby", "al")
    try:
        ref = literal(bytes(range(24)))  # :crypto.strong_rand_bytes(24), the node_ref
        payload = '#{body => <<"hello from u1">>, user => <<"u1">>}'
        term = (
            f'{{1, {ref}, {SERVER}, 1, none, <<"rooms:lobby">>, '
            f"{broadcast('rooms:lobby', 'new:msg', payload)}}}"
        )
        publish(redis_server.port, legacy, term, tmp_path)
        await until(lambda: got == [{"body": "hello from u1", "user": "u1"}], what="2.1 message")
    finally:
        await client.close()


async def test_hostile_bytes_on_the_phoenix_channel_cost_nothing(
    nodes: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    import redis.asyncio as aioredis

    (n1,) = nodes("n1")
    client, _, got = await joined(n1.ws_url, "rooms:lobby", "al")
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        hostile = [
            b"not a term",
            b"\x83" + b"l\x00\x00\x00\x01" * 100_000 + b"j" * 100_001,  # nested 100k deep
            b"\x83l\xff\xff\xff\xff" + b"a\x01" * 10,  # a 4-billion-element list
            b"\x83l\x00\x00\x01\x2c"
            + b"".join(b"w" + bytes([len(n)]) + n for n in (f"x{i}".encode() for i in range(300)))
            + b"j",  # 300 new atoms
            b"\x83P\x7f\xff\xff\xff" + b"\x78\x9c" + b"\x00" * 64,  # a 2 GiB declared size
        ]
        for data in hostile:
            await r.publish(CHANNEL, data)
        # Not channel broadcasts: a Phoenix.Tracker-like message with a pid, a non-map payload.
        publish(
            redis_server.port,
            CHANNEL,
            '{3, except, <<"phx1">>, <<"phx_presence:x">>, {pub, heartbeat, self()}, '
            "'Elixir.Phoenix.PubSub'}",
            tmp_path,
        )
        payload = '#{body => <<"still here">>}'
        publish(
            redis_server.port, CHANNEL, message("phx1", "rooms:lobby", "new:msg", payload), tmp_path
        )
        await until(lambda: got == [{"body": "still here"}], what="the good message")
        text = metrics(n1)
        assert metric(text, "roost_phoenix_skipped") == 1
        health = json.loads(urllib.request.urlopen(f"{n1.url}/healthz", timeout=5).read())
        assert health["broker"]["invalid"] == len(hostile), health
    finally:
        await r.aclose()
        await client.close()


def test_phoenix_wire_refuses_what_it_cannot_carry(redis_server: RedisProcess) -> None:
    for args, reason in (
        (["--redis-wire", "phoenix"], "needs --redis"),
        (
            ["--redis-wire", "phoenix", "--redis", redis_server.url, "--redis-signing-key", "k"],
            "no signature",
        ),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "roost", "serve", "--port", "0", *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode != 0 and reason in done.stderr, done.stderr


def test_payloads_become_the_json_phoenix_would_write() -> None:
    from roost.brokers.redis import phoenix_codec as wire
    from roost.protocol.etf import Atom

    data = wire.payload_of({Atom("a"): [2**70, Atom("ok"), None, 1.5], 7: b"x", b"k": {}}).data
    assert json.loads(data) == {"a": [2**70, "ok", None, 1.5], "7": "x", "k": {}}
    assert wire.payload_of((Atom("binary"), b"\x00\xff")).binary
    for bad in (
        [1],
        {b"k": (1, 2)},
        {b"k": b"\xff"},
        {b"k": {Atom("__struct__"): Atom("Elixir.DateTime")}},
        {(1,): 1},
    ):
        with pytest.raises(wire.WireError):
            wire.payload_of(bad)
    with pytest.raises(wire.WireError, match="JSON object"):
        wire.encode_broadcast("n1", "t", "e", roost.protocol.Encoded(b"[1,2]"))
