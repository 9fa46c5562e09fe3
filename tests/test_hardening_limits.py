"""Issue 14, finding 1 and two small ones: no single client can lock out a node.

- New connections (WebSocket upgrades and long-poll sessions alike) are rate-limited per
  client address (429 + Retry-After), and a client's open connections are capped, so one
  client cannot fill ``--max-connections``; the client is the peer, or behind a trusted
  proxy the right-most untrusted X-Forwarded-For entry.
- A subprotocol token that is not base64url UTF-8 is refused (403), not ignored.
- Every HTML response carries the page's security headers, every response nosniff.

In-process servers with an injected clock (nothing here waits for a bucket to refill).
A second client address is real: 127.0.0.2 on the loopback interface.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from roost.brokers.memory import MemoryBroker
from roost.channels import Limits, Socket
from roost.chat import create_endpoint
from roost.cli import main
from roost.config import ServeConfig
from roost.security.clientip import TrustedProxies, client_key, parse_address
from roost.security.clientlimit import ClientBuckets, retry_after
from test_security import handshake, reply_of

from rawws import RawSocket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def endpoint_with(clock: Clock, proxies: tuple[str, ...] = (), **limits: Any) -> Any:
    endpoint = create_endpoint("lim", MemoryBroker(), echo=True, limits=Limits(**limits))
    endpoint.clock = clock
    if proxies:
        endpoint.proxies = TrustedProxies(proxies)
    return endpoint


@contextlib.asynccontextmanager
async def from_other_address(ws_url: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A WebSocket from 127.0.0.2: a second client as far as the server can tell."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.ws_connect(f"{ws_url}/websocket?vsn=2.0.0") as ws,
    ):
        yield ws


async def new_sessions(url: str, count: int) -> list[tuple[int, str | None]]:
    """``count`` long-poll GETs without a session token: (body status, Retry-After) each."""
    answers = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            async with http.get(f"{url}/socket/longpoll", params={"vsn": "2.0.0"}) as resp:
                assert resp.status == 200
                body = await resp.json(content_type=None)
                answers.append((body["status"], resp.headers.get("Retry-After")))
    return answers


# -- finding 1: the flood, end to end ------------------------------------------------------


async def test_a_longpoll_session_flood_cannot_lock_out_the_node(local_server: Any) -> None:
    """Measured on b8deb52: every token-less GET made a session; the node then answered
    every WebSocket with 503. Now the flooding client gets 429 after its burst."""
    clock = Clock()
    server = await local_server(endpoint_with(clock, max_connections=80))
    answers = await new_sessions(server.url, 120)
    # Another client is served: the node is not full.
    async with from_other_address(server.ws_url) as ws:
        await ws.send_json(["1", "1", "rooms:lobby", "phx_join", {"user": "other"}])
        reply = await asyncio.wait_for(ws.receive_json(), 5)
        assert reply[4]["status"] == "ok", reply
    created = [a for a in answers if a[0] == 410]
    refused = [a for a in answers if a[0] != 410]
    assert len(created) == Limits().conn_burst, answers[:3]
    # The status in the body is 500, which phoenix.js retries with backoff (it throws on
    # a 429); the Retry-After header is admission's.
    assert refused and all(a == (500, "1") for a in refused), refused[:3]
    # The flooding client's bucket refills with time (the endpoint's clock): one more.
    clock.now += 1 / Limits().conn_rate
    assert [status for status, _ in await new_sessions(server.url, 2)] == [410, 500]


async def test_longpoll_sessions_count_against_the_client_cap(local_server: Any) -> None:
    endpoint = endpoint_with(Clock(), conn_rate=0, max_connections_per_ip=3)
    server = await local_server(endpoint)
    answers = await new_sessions(server.url, 5)
    assert [status for status, _ in answers[:3]] == [410] * 3, answers
    assert answers[3][1] == "5" and answers[3][0] == 500, answers
    assert endpoint.sockets.count("127.0.0.1") == 3


async def test_websocket_upgrades_are_rate_limited_per_client(local_server: Any) -> None:
    clock = Clock()
    server = await local_server(endpoint_with(clock, conn_rate=2, conn_burst=3))
    kept = [await RawSocket.connect(server.ws_url) for _ in range(3)]
    status, headers, body = await handshake(server.port)
    assert (status, body.strip(), headers["retry-after"]) == (429, "too many new connections", "1")
    clock.now += 0.5  # 2/s: one token back
    more = await RawSocket.connect(server.ws_url)
    assert (await handshake(server.port))[0] == 429
    # Another address has its own bucket.
    async with from_other_address(server.ws_url):
        pass
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
        assert 'roost_connections_throttled_total{node="' in (text := await resp.text())
        assert any(
            line.startswith("roost_connections_throttled_total") and line.endswith(" 2.0")
            for line in text.splitlines()
        ), text
    for ws in (*kept, more):
        await ws.close()


async def test_one_client_cannot_fill_max_connections(local_server: Any) -> None:
    clock = Clock()
    endpoint = endpoint_with(clock, max_connections=10, max_connections_per_ip=3)
    server = await local_server(endpoint)
    mine = [await RawSocket.connect(server.ws_url) for _ in range(3)]
    status, headers, body = await handshake(server.port)
    assert (status, body.strip(), headers["retry-after"]) == (
        429,
        "too many connections from this address",
        "5",
    )
    assert endpoint.sockets.count("127.0.0.1") == 3
    async with from_other_address(server.ws_url):
        assert endpoint.sockets.count("127.0.0.2") == 1
    # A place frees up when one of the client's sockets goes.
    await mine.pop().close()
    await wait_for(lambda: endpoint.sockets.count("127.0.0.1") == 2)
    mine.append(await RawSocket.connect(server.ws_url))
    for ws in mine:
        await ws.close()
    await wait_for(lambda: len(endpoint.sockets) == 0)
    assert endpoint.sockets.count("127.0.0.1") == 0


async def test_behind_a_trusted_proxy_the_forwarded_client_counts(local_server: Any) -> None:
    clock = Clock()
    endpoint = endpoint_with(clock, ("127.0.0.1/32",), max_connections_per_ip=2)
    seen: list[Any] = []
    connect = endpoint.connect
    endpoint.connect = lambda params, info: seen.append(info["peer"]) or connect(params, info)
    server = await local_server(endpoint)

    def via(xff: str) -> dict[str, str]:
        return {"X-Forwarded-For": xff}

    a = [await RawSocket.connect(server.ws_url, headers=via("203.0.113.7")) for _ in range(2)]
    assert seen == ["203.0.113.7"] * 2
    # The client forging entries to the left of what the proxy appended gains nothing.
    assert (await handshake(server.port, headers=via("198.51.100.1, 203.0.113.7")))[0] == 429
    # Another forwarded client, and a chain of trusted proxies, are their own clients.
    b = await RawSocket.connect(server.ws_url, headers=via("203.0.113.8"))
    c = await RawSocket.connect(server.ws_url, headers=via("203.0.113.9, 127.0.0.1"))
    assert endpoint.sockets.count("203.0.113.9") == 1
    for ws in (*a, b, c):
        await ws.close()


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(local_server: Any) -> None:
    endpoint = endpoint_with(Clock(), max_connections_per_ip=1)
    server = await local_server(endpoint)
    ws = await RawSocket.connect(server.ws_url, headers={"X-Forwarded-For": "203.0.113.7"})
    assert endpoint.sockets.count("127.0.0.1") == 1
    headers = {"X-Forwarded-For": "203.0.113.8"}
    assert (await handshake(server.port, headers=headers))[0] == 429
    await ws.close()


async def wait_for(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


# -- the pieces --------------------------------------------------------------------------


def test_client_address_rules() -> None:
    none = TrustedProxies()
    assert str(none.client("192.0.2.1", ["203.0.113.7"])) == "192.0.2.1"
    proxies = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
    assert str(proxies.client("192.0.2.1", ["203.0.113.7"])) == "203.0.113.7"
    assert str(proxies.client("192.0.2.1", ["1.1.1.1, 203.0.113.7", "10.1.1.1"])) == ("203.0.113.7")
    assert str(proxies.client("192.0.2.1", [])) == "192.0.2.1"
    assert str(proxies.client("192.0.2.1", ["10.2.2.2"])) == "10.2.2.2"  # all trusted
    assert str(proxies.client("192.0.2.1", ["junk, 10.2.2.2"])) == "10.2.2.2"
    assert str(proxies.client("192.0.2.1", ["[2001:db8::1]:443"])) == "2001:db8::1"
    assert str(proxies.client("198.51.100.1", ["203.0.113.7"])) == "198.51.100.1"
    assert proxies.client(None, ["203.0.113.7"]) is None
    assert str(parse_address("::ffff:192.0.2.9")) == "192.0.2.9"
    assert parse_address("not-an-ip") is None
    v6 = parse_address("2001:db8:1:2:3:4:5:6")
    assert v6 is not None and client_key(v6) == "2001:db8:1:2::/64"
    v4 = parse_address("192.0.2.9:5000")
    assert v4 is not None and client_key(v4) == "192.0.2.9"
    with pytest.raises(ValueError, match="--trusted-proxy"):
        TrustedProxies(["10.0.0.0/33"])


def test_client_buckets_refill_and_stay_bounded() -> None:
    buckets = ClientBuckets(rate=10, burst=5, max_clients=1000)
    assert [buckets.take("a", 0.0) for _ in range(5)] == [0.0] * 5
    assert buckets.take("a", 0.0) == pytest.approx(0.1)
    assert retry_after(0.1) == "1" and retry_after(2.01) == "3"
    assert buckets.take("a", 0.1) == 0.0
    # Many addresses: idle buckets are dropped once full again (burst/rate = 0.5 s)...
    for i in range(900):
        buckets.take(f"c{i}", 1.0)
    assert len(buckets) == 900 and "a" not in buckets.buckets  # "a" was full again at 1.0
    buckets.take("late", 1.6)
    assert len(buckets) == 1
    # ... and the table never grows past max_clients, however fast addresses come.
    for i in range(5000):
        buckets.take(f"d{i}", 2.0)
    assert len(buckets) == 1000
    assert ClientBuckets(rate=0, burst=0).take("x", 0.0) == 0.0  # 0: unlimited


def test_sockets_count_per_client() -> None:
    endpoint = endpoint_with(Clock())

    class Wire:
        kind = type("K", (), {"serializer": None})()

    sockets = [Socket(endpoint, Wire(), {}, peer) for peer in ("a", "a", "b", None)]  # type: ignore[arg-type]
    for s in sockets:
        endpoint.sockets.add(s)
    endpoint.sockets.add(sockets[0])  # twice: once
    assert len(endpoint.sockets) == 4 and sockets[3] in endpoint.sockets
    assert (endpoint.sockets.count("a"), endpoint.sockets.count("b")) == (2, 1)
    for s in sockets:
        endpoint.sockets.discard(s)
    endpoint.sockets.discard(sockets[0])
    assert len(endpoint.sockets) == 0 and list(endpoint.sockets) == []
    assert endpoint.sockets.count("a") == 0


def test_options_reach_the_limits_and_bad_cidrs_are_usage_errors() -> None:
    cfg = ServeConfig(
        conn_rate=3, conn_burst=4, max_connections_per_ip=5, trusted_proxies=("10.0.0.0/8,::1",)
    )
    limits = cfg.limits()
    assert (limits.conn_rate, limits.conn_burst, limits.max_connections_per_ip) == (3, 4, 5)
    assert len(cfg.proxies().networks) == 2
    out = CliRunner().invoke(main, ["serve", "--trusted-proxy", "nonsense"])
    assert out.exit_code == 2 and "--trusted-proxy" in out.output, out.output


# -- small ones ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["!!!", "a+b/", "Y", base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("=")],
    ids=["not-base64", "not-url-alphabet", "bad-length", "not-utf8"],
)
async def test_a_token_that_does_not_decode_is_refused(local_server: Any, raw: str) -> None:
    """Measured on b8deb52: such a token counted as none, and an anonymous node said 101."""
    server = await local_server()
    protocols = f"phoenix, base64url.bearer.phx.{raw}"
    status, _, body = await handshake(server.port, headers={"Sec-WebSocket-Protocol": protocols})
    assert (status, body.strip()) == (403, "bad token encoding")
    # Without a token the anonymous node admits; a decodable one goes to the connect hook.
    status, _, _ = await handshake(server.port, headers={"Sec-WebSocket-Protocol": "phoenix"})
    assert status == 101
    good = "base64url.bearer.phx." + base64.urlsafe_b64encode(b"t").decode().rstrip("=")
    status, _, body = await handshake(server.port, headers={"Sec-WebSocket-Protocol": good})
    assert status == 403 and body.strip() != "bad token encoding", body


async def test_every_html_response_has_the_page_headers(local_server: Any) -> None:
    """Measured on b8deb52: /static/index.html came without CSP or nosniff (frameable)."""
    server = await local_server()
    async with aiohttp.ClientSession() as http:
        for path in ("/static/index.html", "/", "/rooms/lobby"):
            async with http.get(server.url + path) as resp:
                assert resp.status == 200 and resp.content_type == "text/html", path
                csp = resp.headers.get("Content-Security-Policy", "")
                assert "frame-ancestors 'none'" in csp, path
                assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
                assert resp.headers.get("Referrer-Policy") == "no-referrer", path
                assert resp.headers.get("X-Frame-Options") == "DENY", path
        async with http.get(server.url + "/static/roost.js") as resp:
            assert resp.status == 200
            assert resp.headers.get("X-Content-Type-Options") == "nosniff"
            assert "Content-Security-Policy" not in resp.headers


async def test_join_reply_still_flows_under_the_limits(local_server: Any) -> None:
    """The limits do not touch an admitted socket: joins and replies as before."""
    server = await local_server(endpoint_with(Clock(), max_connections_per_ip=1))
    ws = await RawSocket.connect(server.ws_url)
    assert reply_of(await ws.join("rooms:lobby", "1", {"user": "al"}))["status"] == "ok"
    await ws.close()
