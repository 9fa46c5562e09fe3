"""Security: tokens, room authorization, the Origin check and every per-socket/node limit.

In-process servers (fast) built from ``create_endpoint(settings=, origins=, limits=)``;
subprocesses only where the command line itself is under test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import types
from typing import Any

import aiohttp
import pytest

from roost.brokers.memory import MemoryBroker
from roost.channels import Limits
from roost.chat import ChatSettings, create_endpoint
from roost.security import tokens
from roost.security.origin import OriginPolicy

from rawws import RawSocket
from support import start_server

SECRET = "test-secret-0123456789"


# -- helpers ---------------------------------------------------------------------------


async def handshake(
    port: int, query: str = "vsn=2.0.0", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """A bare WebSocket upgrade request: (status, response headers, body).

    Shows exactly what a refused client sees (status and text) before any upgrade.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"GET /socket/websocket?{query} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(5):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *header_lines = head.strip().split("\r\n")
            response_headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                response_headers[name.strip().lower()] = value.strip()
            status = int(status_line.split()[1])
            body = b""
            if status != 101 and "content-length" in response_headers:
                body = await reader.readexactly(int(response_headers["content-length"]))
        return status, response_headers, body.decode()
    finally:
        writer.close()


def bearer(token: str) -> str:
    """The Phoenix subprotocol form of a token (phoenix.js ``authToken``: no padding)."""
    return "base64url.bearer.phx." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def chat_endpoint(
    settings: ChatSettings | None = None,
    origins: OriginPolicy | None = None,
    **limits: Any,
) -> Any:
    return create_endpoint(
        "sec",
        MemoryBroker(),
        echo=True,
        settings=settings,
        origins=origins,
        limits=Limits(**limits),
    )


def reply_of(frame: Any) -> Any:
    assert isinstance(frame, list) and frame[3] == "phx_reply", frame
    return frame[4]


async def still_served(ws: RawSocket, tag: str) -> None:
    """The bystander gets a reply and its broadcast, as before the other client tripped."""
    await ws.send("1", f"s-{tag}", "rooms:lobby", "new:msg", {"body": f"still here {tag}"})
    assert await reply_and_broadcast(ws, f"s-{tag}", f"still here {tag}") == "bystander"


async def with_bystander(local_server: Any, endpoint: Any) -> tuple[Any, RawSocket]:
    server = await local_server(endpoint)
    bystander = await RawSocket.connect(server.ws_url)
    assert reply_of(await bystander.join("rooms:lobby", "1", {"user": "bystander"}))["status"] == (
        "ok"
    )
    return server, bystander


async def new_msg_user(ws: RawSocket, topic: str, join_ref: str, claim: str) -> str:
    """Push a message claiming ``claim`` as its author; return the author others see."""
    await ws.send(join_ref, "p1", topic, "new:msg", {"body": "who am i", "user": claim})
    return await reply_and_broadcast(ws, "p1", "who am i")


async def reply_and_broadcast(ws: RawSocket, ref: str, body: str) -> str:
    """Wait for both the ok reply to ``ref`` and the ``new:msg`` with ``body`` (any order)."""
    author = None
    replied = False
    while author is None or not replied:
        frame = await ws.recv_until(
            lambda f: f[1] == ref or (f[3] == "new:msg" and f[4].get("body") == body)
        )
        if frame[1] == ref:
            assert frame[4]["status"] == "ok", frame
            replied = True
        else:
            author = str(frame[4]["user"])
    return author


# -- tokens ----------------------------------------------------------------------------


@pytest.fixture
async def token_server(local_server: Any) -> Any:
    settings = ChatSettings(secret=SECRET, require_token=True, private=("ops", "staff-*"))
    return await local_server(chat_endpoint(settings))


def expired_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """A token whose own expiry (claim ``e``) passed an hour ago: minted 'two hours ago'."""
    with monkeypatch.context() as m:
        m.setattr(tokens, "time", types.SimpleNamespace(time=lambda: time.time() - 7200))
        return tokens.mint(SECRET, "al", ttl=3600)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def tampered(token: str) -> str:
    """Al's genuine token with its claims rewritten (admin, private room), signature kept."""
    _, stamp, signature = token.rsplit(".", 2)
    claims = {"u": "admin", "r": ["ops"], "e": int(time.time()) + 3600}
    return f"{b64(json.dumps(claims).encode())}.{stamp}.{signature}"


def bit_flipped(token: str) -> str:
    """The first character of the signature changed (it carries 6 signature bits)."""
    head, _, signature = token.rpartition(".")
    return f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


def forged_token() -> str:
    """What an attacker can build without the secret: the right shape, a made-up signature."""
    valid = tokens.mint("attacker-guess", "admin", rooms=["ops"])
    body, _, rest = valid.partition(".")
    stamp, _, _ = rest.partition(".")
    return f"{body}.{stamp}.{b64(os.urandom(20))}"


BAD_TOKENS = {
    "forged": (lambda mp: forged_token(), "invalid token"),
    "garbage": (lambda mp: "not-a-token", "invalid token"),
    "tampered": (lambda mp: tampered(tokens.mint(SECRET, "al")), "invalid token"),
    "bit flipped": (lambda mp: bit_flipped(tokens.mint(SECRET, "al")), "invalid token"),
    "wrong secret": (lambda mp: tokens.mint("another-secret", "al"), "invalid token"),
    "expired": (expired_token, "expired token"),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
@pytest.mark.parametrize("how", ["param", "subprotocol"])
async def test_bad_tokens_get_403_before_upgrade(
    token_server: Any, monkeypatch: pytest.MonkeyPatch, kind: str, how: str
) -> None:
    make, reason = BAD_TOKENS[kind]
    token = make(monkeypatch)
    if how == "param":
        status, _, body = await handshake(token_server.port, f"vsn=2.0.0&token={token}")
    else:
        protocols = f"phoenix, {bearer(token)}"
        status, _, body = await handshake(
            token_server.port, headers={"Sec-WebSocket-Protocol": protocols}
        )
    assert (status, body.strip()) == (403, reason)


def test_token_claims_and_mint_arguments() -> None:
    token = tokens.mint(SECRET, "al", ttl=60, rooms=["ops"])
    claims = tokens.verify(SECRET, token)
    assert (claims.user, claims.rooms) == ("al", ("ops",))
    assert time.time() + 55 < claims.expires <= time.time() + 60
    with pytest.raises(tokens.BadToken, match="invalid token"):
        tokens.verify("another-secret", token)
    with pytest.raises(ValueError):
        tokens.mint(SECRET, "al", ttl=0)
    with pytest.raises(ValueError):
        tokens.mint(SECRET, "x" * 33)
    with pytest.raises(ValueError):
        tokens.mint("", "al")


async def test_require_token_refuses_a_socket_without_one(token_server: Any) -> None:
    status, _, body = await handshake(token_server.port)
    assert (status, body.strip()) == (403, "token required")
    status, _, body = await handshake(token_server.port, "vsn=2.0.0&user=al")
    assert (status, body.strip()) == (403, "token required")


@pytest.mark.parametrize("how", ["param", "subprotocol"])
async def test_valid_token_binds_the_user(token_server: Any, how: str) -> None:
    token = tokens.mint(SECRET, "al")
    if how == "param":
        # A `user` connect param next to the token changes nothing.
        ws = await RawSocket.connect(token_server.ws_url, f"vsn=2.0.0&token={token}&user=mallory")
    else:
        ws = await RawSocket.connect(
            token_server.ws_url, "vsn=2.0.0&user=mallory", protocols=("phoenix", bearer(token))
        )
        assert ws.ws.protocol == "phoenix"  # the token is never echoed back as the protocol
    try:
        # Joining as someone else is refused; the token's own name, or none, is fine.
        refused = reply_of(await ws.join("rooms:lobby", "1", {"user": "mallory"}))
        assert refused == {"status": "error", "response": {"reason": "user mismatch"}}
        assert reply_of(await ws.join("rooms:lobby", "2", {"user": "al"}))["status"] == "ok"
        assert reply_of(await ws.join("rooms:other", "3", {}))["status"] == "ok"
        entered = await ws.recv_until(lambda f: f[2] == "rooms:other" and f[3] == "user:entered")
        assert entered[4] == {"user": "al", "verified": True}
        # The `user` field of a message is ignored too: others see the token's name.
        assert await new_msg_user(ws, "rooms:other", "3", "mallory") == "al"
    finally:
        await ws.close()


async def test_anonymous_mode_still_rejects_a_bad_token(local_server: Any) -> None:
    """Without --require-token anyone may connect, but a token, when sent, must be valid."""
    server = await local_server(chat_endpoint(ChatSettings(secret=SECRET)))
    status, _, body = await handshake(server.port, f"vsn=2.0.0&token={tokens.mint('x', 'al')}")
    assert (status, body.strip()) == (403, "invalid token")
    ws = await RawSocket.connect(server.ws_url, "vsn=2.0.0&user=bob")
    try:
        assert reply_of(await ws.join("rooms:lobby", "1", {}))["status"] == "ok"
        assert await new_msg_user(ws, "rooms:lobby", "1", "bob") == "bob"
    finally:
        await ws.close()
    # A server without a secret cannot verify tokens: it refuses them rather than trust them.
    plain = await local_server(chat_endpoint())
    status, _, body = await handshake(plain.port, f"vsn=2.0.0&token={tokens.mint(SECRET, 'al')}")
    assert (status, body.strip()) == (403, "tokens are not enabled on this server")


# -- rooms -----------------------------------------------------------------------------


async def test_room_allow_list(local_server: Any) -> None:
    settings = ChatSettings(rooms=frozenset({"lobby", "ops"}))
    server = await local_server(chat_endpoint(settings))
    ws = await RawSocket.connect(server.ws_url)
    try:
        assert reply_of(await ws.join("rooms:lobby", "1", {"user": "al"}))["status"] == "ok"
        assert reply_of(await ws.join("rooms:ops", "2", {"user": "al"}))["status"] == "ok"
        for n, room in enumerate(["other", "Lobby", "lobby2"]):
            refused = reply_of(await ws.join(f"rooms:{room}", f"x{n}", {"user": "al"}))
            assert refused == {"status": "error", "response": {"reason": "unauthorized"}}
        # A refused join leaves no channel behind: pushing there is "unmatched topic".
        await ws.send("x0", "9", "rooms:other", "new:msg", {"body": "hi"})
        assert reply_of(await ws.recv_until(lambda f: f[1] == "9"))["response"] == {
            "reason": "unmatched topic"
        }
    finally:
        await ws.close()


async def test_private_rooms_only_for_tokens_listing_them(local_server: Any) -> None:
    settings = ChatSettings(secret=SECRET, private=("ops", "staff-*"))
    server = await local_server(chat_endpoint(settings))
    unauthorized = {"status": "error", "response": {"reason": "unauthorized"}}

    async def join_all(query: str, rooms: list[str]) -> dict[str, Any]:
        ws = await RawSocket.connect(server.ws_url, query)
        try:
            return {
                r: reply_of(await ws.join(f"rooms:{r}", str(n), {})) for n, r in enumerate(rooms)
            }
        finally:
            await ws.close()

    rooms = ["ops", "staff-1", "lobby"]
    ops_token = tokens.mint(SECRET, "al", rooms=["ops"])
    got = await join_all(f"vsn=2.0.0&token={ops_token}", rooms)
    assert got["ops"]["status"] == "ok"
    assert got["staff-1"] == unauthorized
    assert got["lobby"]["status"] == "ok"

    staff_token = tokens.mint(SECRET, "bo", rooms=["staff-1"])
    got = await join_all(f"vsn=2.0.0&token={staff_token}", rooms)
    assert (got["ops"], got["staff-1"]["status"]) == (unauthorized, "ok")

    plain_token = tokens.mint(SECRET, "cy")
    got = await join_all(f"vsn=2.0.0&token={plain_token}", rooms)
    assert (got["ops"], got["staff-1"], got["lobby"]["status"]) == (
        unauthorized,
        unauthorized,
        "ok",
    )

    # Anonymous sockets cannot claim private rooms, whatever they send.
    got = await join_all("vsn=2.0.0&user=al&rooms=ops", rooms)
    assert (got["ops"], got["staff-1"], got["lobby"]["status"]) == (
        unauthorized,
        unauthorized,
        "ok",
    )


# -- Origin ----------------------------------------------------------------------------


ALLOWED = ["https://chat.example.org", "*.example.com", "http://localhost:4000"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # non-browser clients send none
        ("SAME", True),  # the request's own host
        ("https://chat.example.org", True),
        ("https://chat.example.org:443", True),
        ("https://a.example.com", True),
        ("http://a.b.example.com:8080", True),  # *.example.com: any scheme and port
        ("http://localhost:4000", True),
        ("https://evil.com", False),
        ("http://chat.example.org", False),  # scheme mismatch
        ("https://example.com", False),  # the wildcard means subdomains only
        ("https://evilexample.com", False),
        ("https://example.com.evil.com", False),
        ("http://localhost:4001", False),
        ("http://127.0.0.1:1", False),  # the own host, another port
        ("null", False),
        ("garbage", False),
    ],
)
async def test_origin_check(local_server: Any, origin: str | None, allowed: bool) -> None:
    server = await local_server(chat_endpoint(origins=OriginPolicy(ALLOWED)))
    headers = {}
    if origin is not None:
        headers["Origin"] = f"http://127.0.0.1:{server.port}" if origin == "SAME" else origin
    status, _, body = await handshake(server.port, headers=headers)
    if allowed:
        assert status == 101
    else:
        assert (status, body.strip()) == (403, "origin not allowed")


async def test_cross_site_origin_refused_by_default_and_served_once_allowed(
    local_server: Any,
) -> None:
    default = await local_server(chat_endpoint())
    status, _, _ = await handshake(default.port, headers={"Origin": "https://evil.com"})
    assert status == 403
    anything = await local_server(chat_endpoint(origins=OriginPolicy(["*"])))
    status, _, _ = await handshake(anything.port, headers={"Origin": "https://evil.com"})
    assert status == 101
    # An allowed cross-site page gets a working socket.
    ws = await RawSocket.connect(anything.ws_url, headers={"Origin": "https://evil.com"})
    assert reply_of(await ws.join("rooms:lobby", "1", {}))["status"] == "ok"
    await ws.close()


# -- limits (each trips with its documented answer; a bystander stays served) ---------------


async def test_max_frame_closes_1009(local_server: Any) -> None:
    _, bystander = served = await with_bystander(local_server, chat_endpoint(max_frame=1024))
    ws = await RawSocket.connect(served[0].ws_url)
    await ws.send("1", "1", "echo:x", "phx_join", {})
    await ws.recv()
    await ws.send("1", "2", "echo:x", "echo", {"pad": "x" * 900})  # under: fine
    assert reply_of(await ws.recv())["status"] == "ok"
    await ws.send("1", "3", "echo:x", "echo", {"pad": "x" * 1100})
    assert await ws.expect_closed() == 1009
    await ws.close()
    await still_served(bystander, "frame")
    await bystander.close()


async def test_max_channels(local_server: Any) -> None:
    server, bystander = await with_bystander(local_server, chat_endpoint(max_channels=3))
    ws = await RawSocket.connect(server.ws_url)
    for n in range(3):
        assert reply_of(await ws.join(f"echo:{n}", f"j{n}"))["status"] == "ok"
    too_many = {"status": "error", "response": {"reason": "too many channels joined"}}
    assert reply_of(await ws.join("echo:3", "j3")) == too_many
    assert reply_of(await ws.join("rooms:lobby", "j4", {})) == too_many
    # Rejoining a joined topic replaces it (not an extra channel); leaving frees a slot.
    assert reply_of(await ws.join("echo:0", "j5"))["status"] == "ok"
    await ws.send("j1", "l1", "echo:1", "phx_leave", {})
    await ws.recv_until(lambda f: f[1] == "l1")
    assert reply_of(await ws.join("echo:3", "j6"))["status"] == "ok"
    await ws.send("j6", "e1", "echo:3", "echo", {"ok": 1})
    assert reply_of(await ws.recv_until(lambda f: f[1] == "e1")) == {
        "status": "ok",
        "response": {"ok": 1},
    }
    await ws.close()
    await still_served(bystander, "channels")
    await bystander.close()


class Clock:
    """The endpoint's rate-limit clock, moved by the test (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_message_rate_then_abuse_closes_1008(local_server: Any) -> None:
    endpoint = chat_endpoint(msg_rate=5, msg_burst=5, abuse_limit=20)
    endpoint.clock = clock = Clock()
    server, bystander = await with_bystander(local_server, endpoint)
    ws = await RawSocket.connect(server.ws_url)
    assert reply_of(await ws.join("echo:r", "1"))["status"] == "ok"
    for n in range(8):  # pipelined: far faster than 5/s
        await ws.send("1", f"a{n}", "echo:r", "echo", {"n": n})
    replies = [reply_of(await ws.recv_until(lambda f, n=n: f[1] == f"a{n}")) for n in range(8)]
    assert [r["status"] for r in replies] == ["ok"] * 5 + ["error"] * 3
    assert replies[-1]["response"] == {"reason": "rate limited"}
    # Heartbeats are never limited.
    await ws.send(None, "hb", "phoenix", "heartbeat", {})
    assert reply_of(await ws.recv_until(lambda f: f[1] == "hb"))["status"] == "ok"
    # Within the rate again, pushes pass (and the abuse count starts over).
    clock.now += 0.25
    await ws.send("1", "b", "echo:r", "echo", {})
    assert reply_of(await ws.recv_until(lambda f: f[1] == "b"))["status"] == "ok"
    # Persistent abuse: 20 limited pushes in a row close the socket with 1008.
    for n in range(40):
        await ws.send("1", f"c{n}", "echo:r", "echo", {"n": n})
    limited = 0
    while True:
        frame = await ws.recv()
        if not isinstance(frame, list):
            break
        if frame[3] == "phx_reply" and frame[4]["status"] == "error":
            assert frame[4]["response"] == {"reason": "rate limited"}
            limited += 1
    assert ws.ws.close_code == 1008
    assert 15 <= limited < 20
    await ws.close()
    await still_served(bystander, "rate")
    await bystander.close()


async def test_join_rate(local_server: Any) -> None:
    endpoint = chat_endpoint(join_rate=2, join_burst=3)
    endpoint.clock = clock = Clock()
    server, bystander = await with_bystander(local_server, endpoint)
    ws = await RawSocket.connect(server.ws_url)
    for n in range(5):
        await ws.send(f"j{n}", f"j{n}", f"echo:{n}", "phx_join", {})
    replies = [reply_of(await ws.recv_until(lambda f, n=n: f[1] == f"j{n}")) for n in range(5)]
    assert [r["status"] for r in replies] == ["ok", "ok", "ok", "error", "error"]
    assert replies[3]["response"] == {"reason": "rate limited"}
    # Pushes have their own bucket: a joined channel still works.
    await ws.send("j0", "e", "echo:0", "echo", {"x": 1})
    assert reply_of(await ws.recv_until(lambda f: f[1] == "e"))["status"] == "ok"
    clock.now += 0.6  # 2/s: a join is allowed again
    assert reply_of(await ws.join("echo:9", "j9"))["status"] == "ok"
    await ws.close()
    await still_served(bystander, "joins")
    await bystander.close()


async def test_max_connections_503(local_server: Any) -> None:
    server, bystander = await with_bystander(local_server, chat_endpoint(max_connections=3))
    a = await RawSocket.connect(server.ws_url)
    b = await RawSocket.connect(server.ws_url)
    status, headers, body = await handshake(server.port)
    assert (status, body.strip(), headers.get("retry-after")) == (503, "too many connections", "5")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await RawSocket.connect(server.ws_url)
    assert info.value.status == 503
    await still_served(bystander, "conns")
    # A place frees up when a socket goes.
    await a.close()
    deadline = time.monotonic() + 5
    while len(server.endpoint.sockets) > 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    c = await RawSocket.connect(server.ws_url)
    assert reply_of(await c.join("rooms:lobby", "1", {}))["status"] == "ok"
    for ws in (b, c, bystander):
        await ws.close()


async def test_idle_timeout_closes_1001(local_server: Any) -> None:
    server, bystander = await with_bystander(local_server, chat_endpoint(idle_timeout=0.3))
    ws = await RawSocket.connect(server.ws_url)
    assert await ws.expect_closed(3) == 1001
    await ws.close()
    await bystander.close()


# -- the command line ------------------------------------------------------------------


def roost(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "ROOST_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "roost", *args],
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_token_command_needs_the_secret() -> None:
    done = roost("token", "--user", "al")
    assert done.returncode != 0
    assert "ROOST_SECRET" in done.stderr
    assert done.stdout == ""
    done = roost("token", "--user", "x" * 33, env={"ROOST_SECRET": SECRET})
    assert done.returncode != 0 and "1-32" in done.stderr
    done = roost("serve", "--require-token", "--port", "0")
    assert done.returncode != 0 and "secret" in done.stderr


async def test_cli_token_works_on_a_require_token_node(tmp_path: Any) -> None:
    """`roost token` output, used on `roost serve --require-token --rooms ... --private-rooms`."""
    done = roost(
        "token", "--user", "al", "--ttl", "600", "--rooms", "ops", env={"ROOST_SECRET": SECRET}
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    claims = tokens.verify(SECRET, token)
    assert (claims.user, claims.rooms) == ("al", ("ops",))
    server = start_server(
        "--require-token", "--rooms", "lobby", "--private-rooms", "ops",
        "--allowed-origin", "https://*.example.com", "--max-connections", "5",
        env={"ROOST_SECRET": SECRET}, log_dir=tmp_path,
    )  # fmt: skip
    try:
        status, _, body = await handshake(server.port)
        assert (status, body.strip()) == (403, "token required")
        status, _, _ = await handshake(server.port, headers={"Origin": "https://evil.com"})
        assert status == 403
        ws = await RawSocket.connect(
            server.ws_url, f"vsn=2.0.0&token={token}", headers={"Origin": "https://x.example.com"}
        )
        try:
            assert reply_of(await ws.join("rooms:lobby", "1", {}))["status"] == "ok"
            assert reply_of(await ws.join("rooms:ops", "2", {}))["status"] == "ok"
            assert reply_of(await ws.join("rooms:other", "3", {}))["response"] == {
                "reason": "unauthorized"
            }
            assert await new_msg_user(ws, "rooms:ops", "2", "mallory") == "al"
        finally:
            await ws.close()
        assert "Traceback" not in server.log()
    finally:
        server.stop()
