"""Issue 14, long-poll and request bodies: sessions as Phoenix does them, whole bodies.

- A Redis reader cannot take a long-poll session: no channel name or relayed request
  holds the token, and nothing read from Redis works as one.
- Origin is checked on every GET and POST, not only when the session is created.
- A forged or unknown token is answered 410 at once (only a live owner is waited for).
- A line over ``--max-frame`` closes the session (1009) and the POST answers 413.
- Bodies that arrive in several TCP segments are read whole (long-poll and the API),
  and oversize ones are refused 413 early, chunked ones while reading.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from roost.brokers.memory import MemoryBroker
from roost.channels import Endpoint, Limits
from roost.chat import create_endpoint
from roost.server import build_app
from roost.server import longpoll as longpoll_module

from support import RedisProcess, ServerProcess, free_port, start_server

JOIN = '["1","1","rooms:lp","phx_join",{"user":"lou"}]'
BEAT = '[null,"2","phoenix","heartbeat",{}]'
LONG_WAIT = 3600.0  # what a relay would wait for an owner: the tests must never see it
BOUND = 10.0  # "at once": far below LONG_WAIT, far above any loopback round trip


# -- in-process nodes ------------------------------------------------------------------
class Node:
    def __init__(self, endpoint: Endpoint, **build: Any) -> None:
        self.endpoint = endpoint
        self.app = build_app(endpoint, **build)
        self.port = free_port()
        self.runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=1.0)

    @property
    def lp(self) -> str:
        return f"http://127.0.0.1:{self.port}/socket/longpoll?vsn=2.0.0"

    async def start(self) -> Node:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        manager = self.app[longpoll_module.LONGPOLL_KEY]
        manager.ack_wait = LONG_WAIT  # (the baseline read a module constant: patched too)
        return self


@pytest.fixture
async def node(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setattr(longpoll_module, "ACK_WAIT", LONG_WAIT, raising=False)
    started: list[Node] = []

    async def make(endpoint: Endpoint | None = None, **build: Any) -> Node:
        if endpoint is None:
            endpoint = create_endpoint("local", MemoryBroker(), echo=True)
        build.setdefault("longpoll_window", 1.0)
        started.append(await Node(endpoint, **build).start())
        return started[-1]

    yield make
    for n in started:
        await n.runner.cleanup()


async def call(
    url: str,
    token: str | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One long-poll request (POST when there is a body), answered within BOUND."""
    if token is not None:
        url = f"{url}&token={token}"
    timeout = aiohttp.ClientTimeout(total=BOUND)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        method = "GET" if body is None else "POST"
        data = None if body is None else body.encode()
        async with http.request(method, url, data=data, headers=headers) as resp:
            assert resp.status == 200
            return await resp.json(content_type=None)  # type: ignore[no-any-return]


async def open_session(url: str) -> str:
    opened = await call(url)
    assert opened["status"] == 410 and opened["token"].startswith("lp."), opened
    return str(opened["token"])


async def replies(url: str, token: str, want: int) -> list[Any]:
    got: list[Any] = []
    for _ in range(10):
        polled = await call(url, token)
        assert polled["status"] in (200, 204), polled
        got += [json.loads(m) for m in polled.get("messages", [])]
        if sum(1 for f in got if f[3] == "phx_reply") >= want:
            return got
    raise AssertionError(f"no {want} replies: {got}")


# -- 1. a Redis reader cannot take a session -------------------------------------------
@pytest.fixture(params=[(), ("--secret", "s3cret-for-tests")], ids=["random-key", "secret"])
def two_nodes(request: Any, redis_server: RedisProcess, tmp_path: Path) -> Any:
    args = ["--redis", redis_server.url, "--longpoll-window", "1", "--probe-interval", "0.5"]
    nodes = [start_server(*args, *request.param, node=n, log_dir=tmp_path) for n in ("h1", "h2")]
    yield nodes
    for n in nodes:
        n.stop()


async def test_reading_redis_gives_no_session(
    two_nodes: list[ServerProcess], redis_server: RedisProcess
) -> None:
    h1, h2 = two_nodes
    base1, base2 = (f"{n.url}/socket/longpoll?vsn=2.0.0" for n in (h1, h2))
    spy = aioredis.Redis.from_url(redis_server.url)
    seen: list[bytes] = []
    async with spy.pubsub() as watch:
        await watch.psubscribe("*")

        async def listen() -> None:
            async for message in watch.listen():
                if message["type"] == "pmessage":
                    seen.extend([message["channel"], message["data"]])

        listening = asyncio.ensure_future(listen())
        token = await open_session(base1)
        # Through the other node: relayed to h1 over Redis, both ways.
        assert await call(base2, token, f"{JOIN}\n{BEAT}") == {"status": 200}
        got = await replies(base2, token, 2)
        assert got[0][4]["status"] == "ok" and got[0][4]["response"]["node"] == "h1"
        channels: list[bytes] = await spy.pubsub_channels()
        await asyncio.sleep(0.2)  # (the last relayed answers reach the spy)
        listening.cancel()
    await spy.aclose()
    assert seen, "the spy saw no relayed request"
    everything = b"\n".join([*channels, *seen])
    # Whatever looks like an id in Redis, made into a token, opens nothing.
    # (channel names first: the words most likely to be a session's)
    words = re.findall(rb"[A-Za-z0-9_\-]{16,}", b"\n".join(channels)) + sorted(
        set(re.findall(rb"[A-Za-z0-9_\-]{16,}", everything))
    )
    candidates = list(dict.fromkeys(c for w in words for c in (f"lp.{w.decode()}", w.decode())))
    assert candidates
    for candidate in candidates[:200]:
        for base in (base1, base2):
            # (without "lp." it is a connect param: a new session or 403, never this one)
            assert (await call(base, candidate))["status"] in (403, 410), candidate
            assert (await call(base, candidate, BEAT))["status"] == 410, candidate
    assert token.encode() not in everything
    for server in two_nodes:
        assert "Traceback" not in server.log()


# -- 2. Origin on every request -----------------------------------------------------------
async def test_origin_is_checked_on_every_request(node: Callable[..., Any]) -> None:
    n = await node()
    token = await open_session(n.lp)  # no Origin: a non-browser client, allowed
    evil = {"Origin": "http://evil.example"}
    assert (await call(n.lp, token, headers=evil))["status"] == 403
    assert (await call(n.lp, token, f"{JOIN}\n{BEAT}", headers=evil))["status"] == 403
    assert (await call(n.lp, token, headers={"X-Phoenix-Longpoll-Token": token, **evil})) == {
        "status": 403
    }
    # The session is untouched: its own page (same host) goes on.
    own = {"Origin": f"http://127.0.0.1:{n.port}"}
    assert await call(n.lp, token, f"{JOIN}\n{BEAT}", headers=own) == {"status": 200}


# -- 3. forged or unknown: 410 at once ------------------------------------------------------
async def test_forged_and_unknown_tokens_are_gone_at_once(node: Callable[..., Any]) -> None:
    n = await node()
    token = await open_session(n.lp)
    forged = [
        "lp.nope",
        "lp.",
        token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),  # tampered
        token + "x",
        "lp." + "A" * 600,
        "lp.\u00e9t\u00e9",
        token.rpartition(".")[0] + ".\u00e9" * 10,  # non-ASCII: refused, not a 500
    ]
    for bad in forged:
        assert await call(n.lp, bad) == {"status": 410}, bad
        assert await call(n.lp, bad, BEAT) == {"status": 410}, bad
    # A real token whose session is gone (garbage closed it): gone, at once.
    assert await call(n.lp, token, "not base64 !!") == {"status": 410}
    assert await call(n.lp, token) == {"status": 410}
    assert await call(n.lp, token, BEAT) == {"status": 410}


@pytest.mark.parametrize("key", [None, b"shared-by-both"], ids=["random-keys", "shared-key"])
async def test_other_nodes_session_gone_answered_at_once(
    node: Callable[..., Any], redis_server: RedisProcess, key: bytes | None
) -> None:
    """A token of another node: relayed, and the owner says 410 at once when the session
    is gone or the token was not its own (never the relay's ack wait)."""
    from roost.brokers.redis import RedisBroker

    a, b = [
        await node(
            create_endpoint(name, RedisBroker(redis_server.url, probe_interval=0.5), echo=True),
            longpoll_key=key,
        )
        for name in ("a", "b")
    ]
    token = await open_session(a.lp)
    assert await call(b.lp, token, f"{JOIN}\n{BEAT}") == {"status": 200}
    assert (await replies(b.lp, token, 2))[0][4]["response"]["node"] == "a"
    # Same owner and session, another signature: refused (by b itself when it can check).
    payload = token.split(".")[1]
    assert await call(b.lp, f"lp.{payload}.{'A' * 43}") == {"status": 410}
    assert await call(b.lp, f"lp.{payload}.{'A' * 43}", BEAT) == {"status": 410}
    # The session closes on a; through b its token is gone at once.
    assert await call(a.lp, token, "not base64 !!") == {"status": 410}
    assert await call(b.lp, token) == {"status": 410}
    assert await call(b.lp, token, BEAT) == {"status": 410}


def test_token_expiry_and_forgery() -> None:
    from roost.security.lptoken import SessionTokens, proof
    from roost.security.tokens import BadToken

    now = [time.time()]
    tokens = SessionTokens(b"k", max_age=100, clock=lambda: now[0])
    token = tokens.sign("n1", "sid-1")
    assert tokens.verify(token) == ("n1", "sid-1") == tokens.claimed(token)
    assert SessionTokens(b"k").verify(token) == ("n1", "sid-1")  # shared: any node checks
    with pytest.raises(BadToken):
        SessionTokens(b"other").verify(token)
    with pytest.raises(BadToken):
        SessionTokens(None).verify(token)  # a random key: only its own tokens
    now[0] += 101
    with pytest.raises(BadToken, match="expired"):
        tokens.verify(token)
    assert "sid-1" not in proof(token) and token not in proof(token)


# -- 4. --max-frame per line ----------------------------------------------------------------
async def test_a_line_over_max_frame_closes_the_session(node: Callable[..., Any]) -> None:
    limits = Limits(max_frame=1024)
    n = await node(create_endpoint("local", MemoryBroker(), echo=True, limits=limits))
    token = await open_session(n.lp)
    assert await call(n.lp, token, f"{JOIN}\n{BEAT}") == {"status": 200}
    pad = 1024 - len('[null,"3","phoenix","heartbeat",{"p":""}]')
    exact = f'[null,"3","phoenix","heartbeat",{{"p":"{"x" * pad}"}}]'
    assert len(exact.encode()) == 1024
    assert await call(n.lp, token, exact) == {"status": 200}  # at the limit: fine
    big = f'["1","4","rooms:lp","new:msg",{{"body":"{"x" * 2000}"}}]'
    assert await call(n.lp, token, big) == {"status": 413}
    assert await call(n.lp, token) == {"status": 410}  # closed
    # A binary line counts decoded, as its frame.
    token = await open_session(n.lp)
    line = base64.b64encode(b"\x00" * 1025).decode()
    assert await call(n.lp, token, line) == {"status": 413}
    assert await call(n.lp, token) == {"status": 410}


# -- 5. whole bodies ------------------------------------------------------------------------
async def raw_request(
    port: int, head: str, parts: list[bytes], pause: float = 0.05
) -> tuple[int, dict[str, Any]]:
    """Headers, then the body in ``parts`` with pauses (separate TCP segments)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        await writer.drain()
        for part in parts:
            await asyncio.sleep(pause)
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break  # refused early: the answer is already there
        # Read the answer by its Content-Length: after an early 413 the server may
        # linger over the unsent rest of the body before it closes.
        header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        length = re.search(rb"(?i)content-length: *(\d+)", header)
        assert length is not None, header
        body = await asyncio.wait_for(reader.readexactly(int(length[1])), BOUND)
    finally:
        writer.close()
    return int(header.split()[1]), json.loads(body)


def chunked(parts: list[bytes]) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]


def head(path: str, length: int | None, extra: str = "") -> str:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{size}\r\n{extra}\r\n"


def thirds(body: bytes) -> list[bytes]:
    k = len(body) // 3
    return [body[:k], body[k : 2 * k], body[2 * k :]]


async def test_longpoll_body_in_segments_is_read_whole(node: Callable[..., Any]) -> None:
    n = await node()
    token = await open_session(n.lp)
    path = f"/socket/longpoll?vsn=2.0.0&token={token}"
    body = f"{JOIN}\n{BEAT}".encode()
    assert await raw_request(n.port, head(path, len(body)), thirds(body)) == (200, {"status": 200})
    got = await replies(n.lp, token, 2)
    assert [f[4]["status"] for f in got if f[3] == "phx_reply"] == ["ok", "ok"]
    beats = f"{BEAT}\n{BEAT}".encode()
    assert await raw_request(n.port, head(path, None), chunked(thirds(beats))) == (
        200,
        {"status": 200},
    )
    # Over 1 MiB: refused from Content-Length (no body sent), or while reading chunks.
    big = longpoll_module.MAX_BODY + 1
    assert await raw_request(n.port, head(path, big), []) == (200, {"status": 413})
    chunks = chunked([b"A" * 65536] * (big // 65536 + 1))
    assert await raw_request(n.port, head(path, None), chunks, pause=0) == (200, {"status": 413})


async def test_api_body_in_segments_is_read_whole(node: Callable[..., Any]) -> None:
    n = await node(api_key="k3y")
    auth = "Authorization: Bearer k3y\r\nContent-Type: application/json\r\n"
    body = json.dumps({"topic": "rooms:api", "event": "new:msg", "payload": {"b": "x" * 50}})
    raw = body.encode()
    assert await raw_request(n.port, head("/api/broadcast", len(raw), auth), thirds(raw)) == (
        202,
        {"ok": True},
    )
    got = await raw_request(n.port, head("/api/broadcast", None, auth), chunked(thirds(raw)))
    assert got == (202, {"ok": True})
    too_big = 64 * 1024 + 1
    status, answer = await raw_request(n.port, head("/api/broadcast", too_big, auth), [])
    assert status == 413, answer
    chunks = chunked([b" " * 16384] * 5)
    status, answer = await raw_request(n.port, head("/api/broadcast", None, auth), chunks)
    assert status == 413, answer
