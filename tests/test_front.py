"""The front listener (server/front.py) and the lean WebSocket path (server/wsconn.py).

In-process nodes (``local_server``: the front listener as ``roost serve`` runs it;
``lean=False``: aiohttp's own route) and a raw TCP client sending exact bytes.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
import pytest
from aiohttp import web

from roost.brokers.memory import MemoryBroker
from roost.channels import Limits
from roost.chat import ChatSettings, create_endpoint
from roost.security.origin import OriginPolicy
from roost.server import build_app
from roost.server.front import MAX_HEAD, FrontSite
from wsframes import RawClient, close_payload, frame, upgrade_request

from support import free_port

JOIN = orjson.dumps(["1", "1", "rooms:lobby", "phx_join", {}])


def endpoint(settings: ChatSettings | None = None, **kw: Any) -> Any:
    origins = kw.pop("origins", None)
    return create_endpoint(
        "front", MemoryBroker(), echo=True, settings=settings, origins=origins, limits=Limits(**kw)
    )


async def wait_for(pred: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


async def joined(client: RawClient) -> list[Any]:
    client.send(frame(1, JOIN))
    while True:
        _, payload = await client.recv()
        msg = orjson.loads(payload)
        if msg[1] == "1":
            return list(msg)


# -- the head ------------------------------------------------------------------------


async def test_upgrade_and_first_frame_in_one_segment(local_server: Any) -> None:
    """The join arrives in the same write as the handshake: it is handled, in order."""
    server = await local_server()
    c = await RawClient.open(server.port)
    c.send(upgrade_request() + frame(1, JOIN) + frame(9, b"p"))
    status, headers = await c.head()
    assert status == 101
    assert headers["server"] == "roost"
    assert headers["x-content-type-options"] == "nosniff"
    reply = orjson.loads((await c.recv())[1])
    assert reply[1] == "1" and reply[4]["status"] == "ok"
    frames = [await c.recv() for _ in range(3)]
    assert frames[-1] == (10, b"p")  # the pong after the join's reply and pushes, in order
    c.close()


async def test_phoenix_subprotocol_echoed(local_server: Any) -> None:
    server = await local_server()
    c = await RawClient.open(server.port)
    c.send(upgrade_request("/socket/websocket?vsn=2.0.0", "Sec-WebSocket-Protocol: phoenix"))
    status, headers = await c.head()
    assert status == 101 and headers["sec-websocket-protocol"] == "phoenix"
    c.close()


async def test_oversized_head_is_431(local_server: Any) -> None:
    server = await local_server()
    c = await RawClient.open(server.port)
    c.send(upgrade_request("/socket/websocket?vsn=2.0.0", "X-Big: " + "a" * MAX_HEAD))
    status, _, body = await c.response()
    assert status == 431 and body == b"request header fields too large\n"
    assert await c.closed() == b""


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
        b"GET /socket/websocket HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n\x00bad: name\r\n\r\n",
    ],
)
async def test_garbage_goes_to_aiohttp_which_answers_400(
    local_server: Any, request_bytes: bytes
) -> None:
    server = await local_server()
    c = await RawClient.open(server.port)
    c.send(request_bytes)
    status, _ = await c.head()
    assert status == 400
    c.close()


async def test_other_requests_served_by_aiohttp_with_keep_alive(local_server: Any) -> None:
    """Page, health and an upgrade on a kept-alive connection (aiohttp's route) all work."""
    server = await local_server()
    c = await RawClient.open(server.port)
    for path in ("/healthz", "/readyz", "/healthz"):
        c.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, _ = await c.response()
        assert status == 200 and headers["server"] == "roost"
    await c.upgrade()  # aiohttp's WebSocket route, on the same connection
    assert (await joined(c))[4]["status"] == "ok"
    assert len(server.endpoint.sockets) == 1
    c.close()
    await wait_for(lambda: len(server.endpoint.sockets) == 0)


async def test_non_upgrade_get_of_the_socket_path_is_aiohttps(local_server: Any) -> None:
    server = await local_server()
    c = await RawClient.open(server.port)
    c.send(b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await c.response()
    assert status == 400 and body.startswith(b"No WebSocket UPGRADE hdr")
    c.close()


async def slow_site(head_timeout: float) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(build_app(endpoint()), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await FrontSite(runner, "127.0.0.1", port, head_timeout=head_timeout).start()
    return runner, port


async def test_slowloris_head_is_cut_off_with_408() -> None:
    runner, port = await slow_site(0.3)
    try:
        c = await RawClient.open(port)
        request = upgrade_request()
        c.send(request[:20])
        for byte in request[20:30]:  # trickling: each byte in time, the whole not
            await asyncio.sleep(0.02)
            c.send(bytes((byte,)))
        status, _, body = await c.response()
        assert status == 408 and body == b"request timeout\n"
        assert await c.closed() == b""
        silent = await RawClient.open(port)  # says nothing at all
        assert (await silent.response())[0] == 408
    finally:
        await runner.cleanup()


# -- the handshake ---------------------------------------------------------------------


def refused_case(name: str) -> tuple[Any, list[str], str, int]:
    """(endpoint, extra headers, query, expected status) for one kind of refusal."""
    token_settings = ChatSettings(secret="s" * 20, require_token=True)
    cases: dict[str, tuple[Any, list[str], str, int]] = {
        "rate": (endpoint(conn_rate=0.01, conn_burst=1), [], "vsn=2.0.0", 429),
        "origin": (
            endpoint(origins=OriginPolicy(["http://ok.example"])),
            ["Origin: http://evil.example"],
            "vsn=2.0.0",
            403,
        ),
        "node cap": (endpoint(max_connections=1), [], "vsn=2.0.0", 503),
        "client cap": (endpoint(max_connections_per_ip=1), [], "vsn=2.0.0", 429),
        "vsn": (endpoint(), [], "vsn=9.9.9", 403),
        "connect hook": (endpoint(token_settings), [], "vsn=2.0.0", 403),
        "bad token": (
            endpoint(),
            ["Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx.@@"],
            "vsn=2.0.0",
            403,
        ),
        "ws version": (endpoint(), ["Sec-WebSocket-Version: 12"], "vsn=2.0.0", 400),
    }
    return cases[name]


NEEDS_ONE_OPEN = {"rate", "node cap", "client cap"}


async def refusal(local_server: Any, name: str, lean: bool) -> tuple[int, str | None, bytes]:
    ep, headers, query, _ = refused_case(name)
    server = await local_server(ep, lean=lean)
    first = None
    if name in NEEDS_ONE_OPEN:
        first = await RawClient.open(server.port)
        await first.upgrade()
    c = await RawClient.open(server.port)
    request = upgrade_request(f"/socket/websocket?{query}", *headers)
    if name == "ws version":
        request = request.replace(b"Sec-WebSocket-Version: 13\r\n", b"")
    c.send(request)
    status, got, body = await c.response()
    c.close()
    if first is not None:
        first.close()
    return status, got.get("retry-after"), body


@pytest.mark.parametrize(
    "name",
    ["rate", "origin", "node cap", "client cap", "vsn", "connect hook", "bad token", "ws version"],
)
async def test_every_refusal_is_the_same_on_both_paths(local_server: Any, name: str) -> None:
    lean = await refusal(local_server, name, True)
    assert lean[0] == refused_case(name)[3]
    assert lean == await refusal(local_server, name, False)
    if lean[0] in (429, 503):
        assert lean[1] is not None and int(lean[1]) >= 1


@pytest.mark.parametrize("lean", [True, False])
async def test_a_connect_hook_that_raises_is_500(local_server: Any, lean: bool) -> None:
    ep = endpoint()

    def connect(params: dict[str, str], info: dict[str, Any]) -> Any:
        raise RuntimeError("hook bug")

    ep.connect = connect
    server = await local_server(ep, lean=lean)
    c = await RawClient.open(server.port)
    c.send(upgrade_request())
    assert (await c.response())[0] == 500
    c.close()


@pytest.mark.parametrize("key", ["abc", "", "dG9vIHNob3J0"])
async def test_bad_key_is_400(local_server: Any, key: str) -> None:
    server = await local_server()
    c = await RawClient.open(server.port)
    request = upgrade_request().replace(b"Sec-WebSocket-Key: ", b"X-Old: ")
    c.send(request.replace(b"\r\n\r\n", f"\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()))
    status, _, body = await c.response()
    assert status == 400 and body.startswith(b"Handshake error")
    assert await c.closed() == b""


# -- frames on the lean path -----------------------------------------------------------


async def test_ping_pong_and_fragmented_message(local_server: Any) -> None:
    server = await local_server()
    c = await RawClient.open(server.port)
    await c.upgrade()
    c.send(frame(9, b"hello?"))
    assert await c.recv() == (10, b"hello?")
    heartbeat = orjson.dumps([None, "7", "phoenix", "heartbeat", {}])
    c.send(frame(1, heartbeat[:5], fin=False) + frame(9, b"x") + frame(0, heartbeat[5:]))
    assert await c.recv() == (10, b"x")
    opcode, payload = await c.recv()
    assert opcode == 1 and orjson.loads(payload)[1] == "7"
    c.close()


@pytest.mark.parametrize(
    "data, code",
    [
        (frame(8, close_payload(1000, b"bye")), 1000),
        (frame(8), 1000),
        (frame(8, close_payload(4000)), 1000),
        (frame(8, close_payload(1005)), 1002),
        (frame(8, close_payload(1000, b"\xff")), 1007),
        (frame(1, JOIN, masked=False), 1002),
        (frame(1, JOIN, rsv=4), 1002),
        (frame(5, b"x"), 1002),
        (frame(0, b"x"), 1002),
        (frame(1, b"\xc3\x28"), 1007),
        (frame(1, b"x" * 70_000)[:14], 1009),  # refused from the header alone
        (frame(1, b"not phoenix json"), 1007),
    ],
)
async def test_close_codes(local_server: Any, data: bytes, code: int) -> None:
    server = await local_server()
    c = await RawClient.open(server.port)
    await c.upgrade()
    await wait_for(lambda: len(server.endpoint.sockets) == 1)
    c.send(data)
    assert await c.recv_close() == code
    await wait_for(lambda: len(server.endpoint.sockets) == 0)


async def test_client_resets_mid_handshake_and_mid_frame(local_server: Any) -> None:
    server = await local_server()
    a = await RawClient.open(server.port)
    a.send(upgrade_request()[:30])
    await asyncio.sleep(0.05)
    a.reset()
    b = await RawClient.open(server.port)
    await b.upgrade()
    assert (await joined(b))[4]["status"] == "ok"
    b.send(frame(1, JOIN)[:9])  # half a frame, then gone
    await asyncio.sleep(0.05)
    b.reset()
    await wait_for(lambda: len(server.endpoint.sockets) == 0)
    await wait_for(lambda: server.endpoint.pubsub.subscribers("rooms:lobby") == 0)
    c = await RawClient.open(server.port)  # the node is fine
    await c.upgrade()
    assert (await joined(c))[4]["status"] == "ok"
    c.close()


async def test_many_messages_in_one_read_are_handled_in_order(local_server: Any) -> None:
    """Past the queue bound reading pauses, then resumes; every reply comes, in order."""
    server = await local_server(msg_rate=0)
    c = await RawClient.open(server.port)
    await c.upgrade()
    c.send(
        b"".join(
            frame(1, orjson.dumps([None, str(i), "phoenix", "heartbeat", {}])) for i in range(200)
        )
    )
    refs = [orjson.loads((await c.recv())[1])[1] for _ in range(200)]
    assert refs == [str(i) for i in range(200)]
    c.close()


async def test_reset_with_socket_option(local_server: Any) -> None:
    """A client gone while its message is being handled: the Socket still closes."""
    server = await local_server()
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(upgrade_request() + frame(1, JOIN))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    raw.close()
    await wait_for(lambda: len(server.endpoint.sockets) == 0)
    await wait_for(lambda: server.endpoint.pubsub.subscribers("rooms:lobby") == 0)


async def test_an_idle_joined_connection_has_no_task(local_server: Any) -> None:
    """The lean path keeps no task per idle connection: one runs only while messages wait."""
    from roost.server.wsconn import WsConn

    server = await local_server()
    c = await RawClient.open(server.port)
    await c.upgrade()
    assert (await joined(c))[4]["status"] == "ok"
    (sock,) = list(server.endpoint.sockets)
    conn = sock.wire.transport.get_protocol()
    assert isinstance(conn, WsConn)
    await wait_for(lambda: conn.task is None)
    assert conn.queue is None and conn.buf is None
    c.close()
