"""A socket reset mid-broadcast touches no one else (issue 12, finding 2).

Under uvloop (what ``roost serve`` runs on) ``transport.write`` raises on a connection
the peer has reset. Such a subscriber must not stop the room's fan-out: every other
subscriber gets every message, the rest of a batch from Redis still goes out, the
sender's push is answered ``ok`` (no ``phx_error``), and the dead sockets leave.

The end-to-end test runs real ``roost serve`` nodes (memory broker and Redis broker):
ten victims and the sender read everything while thirty other members of the room
reset their TCP connections (SO_LINGER 0, then close: an RST) in the middle of a
burst of pushes. The unit tests give ``write_all``, ``WsWire.write``, ``Flusher.flush``
and ``WsWire.close`` a transport whose ``write`` raises.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from roost.server.wswire import WS_V2, Flusher, WsWire, write_all

from support import RedisProcess, ServerProcess, start_redis, start_server

TOPIC = "rooms:reset"
VICTIMS = 10
RESETTERS = 30
MESSAGES = 300
PER_RESET = MESSAGES // RESETTERS  # pushes sent between two resets
SIDE_ROOMS = 4  # rooms each resetter is in besides TOPIC
BACKLOG = 30  # pushes the sender may have sent and not yet seen answered


# -- end to end: real nodes, real resets ----------------------------------------------------


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def masked_text(payload: bytes) -> bytes:
    """One client→server text frame (FIN, masked; short payloads only)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def resetter(port: int, n: int) -> socket.socket:
    """A raw socket that upgrades and joins the room (its join answered), then reads nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    # Other rooms first, as a user in several rooms: when the socket goes, its channels
    # end in join order, so the room under test is left last (a wider window).
    topics = [f"rooms:side{k}" for k in range(SIDE_ROOMS)] + [TOPIC]
    for k, topic in enumerate(topics):
        frame = [str(k), str(k), topic, "phx_join", {"user": f"r{n}"}]
        sock.sendall(masked_text(orjson.dumps(frame)))
    data = b""
    done = f'"{TOPIC}","phx_reply",'.encode()
    while done not in data:  # the last join answered: every channel is subscribed
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data
    assert data.count(b'"phx_reply",{"status":"ok"') == len(topics), data
    return sock


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Member:
    """A client in the room that reads everything: the ``new:msg`` bodies, replies, errors."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.bodies: list[str] = []
        self.replies: dict[str, str] = {}
        self.errors: list[Any] = []
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            _join_ref, ref, _topic, event, payload = orjson.loads(msg.data)
            if event == "new:msg":
                self.bodies.append(payload["body"])
            elif event == "phx_reply" and ref is not None and ref.startswith("m"):
                self.replies[ref] = payload["status"]
            elif event in ("phx_error", "phx_close"):
                self.errors.append(event)


async def join(session: aiohttp.ClientSession, server: ServerProcess, user: str) -> Member:
    ws = await session.ws_connect(f"{server.ws_url}/websocket?vsn=2.0.0", max_msg_size=0)
    await ws.send_str(orjson.dumps(["1", "j", TOPIC, "phx_join", {"user": user}]).decode())
    async with asyncio.timeout(5):
        while True:
            frame = orjson.loads((await ws.receive()).data)
            if frame[1] == "j":
                assert frame[4]["status"] == "ok", frame
                return Member(ws)


@pytest.fixture(params=["memory", "redis"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    redis: RedisProcess | None = None
    args = ["--msg-rate", "0", "--join-rate", "0"]
    if request.param == "redis":
        redis = start_redis()
        args += ["--redis", redis.url]
    server = start_server(*args, node=f"reset-{request.param}", log_dir=tmp_path)
    try:
        yield server
    finally:
        server.stop()
        if redis is not None:
            redis.stop()


async def test_resets_mid_broadcast_reach_no_one_else(node: ServerProcess) -> None:
    expected = [f"m{i}" for i in range(MESSAGES)]
    sockets: list[socket.socket] = []
    async with aiohttp.ClientSession() as session:
        try:
            # Members join in turn (a topic's plan keeps join order): the sender, then
            # three resetters before each victim, so dead wires come before live ones.
            sender = await join(session, node, "sender")
            victims = []
            for n in range(VICTIMS):
                for k in range(RESETTERS // VICTIMS):
                    r = n * (RESETTERS // VICTIMS) + k
                    sockets.append(await asyncio.to_thread(resetter, node.port, r))
                victims.append(await join(session, node, f"v{n}"))
            assert health(node)["sockets"] == VICTIMS + 1 + RESETTERS

            # The burst: pushes sent without waiting for replies (at most BACKLOG ahead of
            # the answers), and after every PER_RESET of them one member resets while the
            # node is frozen for a moment (SIGSTOP: a stall, as under CPU starvation). The
            # node wakes to the reset and to broadcasts still to send (pushes queued; with
            # Redis, messages read back) in the same loop turn: its channel is still
            # subscribed when they go out, and the dead transport's write raises.
            t0 = time.monotonic()
            for i in range(MESSAGES):
                frame = ["1", f"m{i}", TOPIC, "new:msg", {"body": f"m{i}"}]
                await sender.ws.send_str(orjson.dumps(frame).decode())
                if i % PER_RESET == PER_RESET - 1:
                    node.proc.send_signal(signal.SIGSTOP)
                    try:
                        reset(sockets.pop(0))
                        await asyncio.sleep(0.005)  # the RST and the pushes reach the node
                    finally:
                        node.proc.send_signal(signal.SIGCONT)
                    async with asyncio.timeout(10):
                        while len(sender.replies) < i - BACKLOG and not sender.errors:
                            await asyncio.sleep(0.001)

            members = [*victims, sender]
            deadline = time.monotonic() + 10
            while any(len(m.bodies) < MESSAGES for m in members) or len(sender.replies) < MESSAGES:
                if time.monotonic() > deadline or sender.errors:
                    break
                await asyncio.sleep(0.02)
            elapsed = time.monotonic() - t0
            got = [len(m.bodies) for m in members]
            print(f"{node.args}: members got {got} of {MESSAGES} in {elapsed:.2f}s")
            for n, member in enumerate(members):
                assert member.bodies == expected, (
                    f"member {n} got {len(member.bodies)} of {MESSAGES} (all: {got})"
                )
            assert sender.errors == [], sender.errors
            assert sender.replies == {f"m{i}": "ok" for i in range(MESSAGES)}, (
                f"{sum(s == 'ok' for s in sender.replies.values())} of {MESSAGES} replies ok"
            )

            # The reset sockets are gone (their channels unsubscribed); the others stay.
            deadline = time.monotonic() + 5
            while (count := health(node)["sockets"]) != VICTIMS + 1:
                assert time.monotonic() < deadline, f"{count} sockets, {VICTIMS + 1} expected"
                await asyncio.sleep(0.05)
            # The room still works for everyone left, and no one was disconnected.
            await sender.ws.send_str(
                orjson.dumps(["1", "mlast", TOPIC, "new:msg", {"body": "last"}]).decode()
            )
            deadline = time.monotonic() + 5
            while any(m.bodies[-1] != "last" for m in members):
                assert time.monotonic() < deadline, [m.bodies[-1] for m in members]
                await asyncio.sleep(0.02)
            assert all(m.errors == [] and not m.task.done() for m in members)
            log = node.log()
            assert "Traceback" not in log, log
            print(f"{log.count('write failed')} writes to reset connections failed")
        finally:
            for sock in sockets:
                sock.close()


# -- unit: a transport whose write raises ----------------------------------------------------


class FakeTransport:
    """Records what is written; ``fail`` makes ``write`` raise as uvloop's does when closed."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.data = bytearray()
        self.aborted = False
        self.closing = False

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError(
                "unable to perform operation on <TCPTransport>; the handler is closed"
            )
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closing = True


def wires(flusher: Flusher, *fails: bool) -> tuple[list[WsWire], list[FakeTransport]]:
    transports = [FakeTransport(fail) for fail in fails]
    made = [WsWire(WS_V2, t, 1 << 20, None, flusher) for t in transports]
    return made, transports


async def test_write_all_skips_a_wire_whose_write_raises() -> None:
    flusher = Flusher()
    ws, ts = wires(flusher, False, True, False, True, False)
    assert write_all(ws, b"one") == 5  # no exception
    assert [bytes(t.data) for t in ts] == [b"one", b"", b"one", b"", b"one"]
    assert [w.closed for w in ws] == [False, True, False, True, False]
    assert [t.aborted for t in ts] == [False, True, False, True, False]  # the connection goes
    write_all(ws, b"two")  # same turn: held for the flusher; the dead wires are skipped
    await asyncio.sleep(0)  # the turn ends: the Flusher writes
    assert [bytes(t.data) for t in ts] == [b"onetwo", b"", b"onetwo", b"", b"onetwo"]
    assert not flusher.dirty


async def test_flush_goes_on_past_a_wire_whose_write_raises() -> None:
    flusher = Flusher()
    ws, ts = wires(flusher, False, False, False)
    write_all(ws, b"a")
    write_all(ws, b"b")  # held
    ts[1].fail = True  # the connection is reset between the two writes
    flusher.flush()  # no exception
    assert [bytes(t.data) for t in ts] == [b"ab", b"a", b"ab"]
    assert [w.closed for w in ws] == [False, True, False]
    assert ts[1].aborted
    write_all(ws, b"c")
    flusher.flush()
    assert [bytes(t.data) for t in ts] == [b"abc", b"a", b"abc"]


async def test_wire_write_and_close_never_raise() -> None:
    flusher = Flusher()
    (good, bad), (tg, tb) = wires(flusher, False, True)
    bad.write(b"x")  # first frame of the turn: written at once, raises inside
    good.write(b"x")
    assert bad.closed and tb.aborted and not good.closed
    bad.write(b"y")  # a closed wire is skipped
    assert tb.data == b"" and tg.data == b"x"

    (held,), (th,) = wires(flusher, False)
    held.write(b"1")
    held.write(b"2")  # held for the end of the turn
    th.fail = True
    held.close(1000, "bye")  # writing the held frames and the close frame raises inside
    assert held.closed and th.aborted and held.pending is None
    flusher.flush()  # nothing left to write for it


async def test_plan_fan_out_survives_a_raising_wire() -> None:
    """The PubSub path the nodes use: one broadcast and a run, through a topic's Plan."""
    from roost.protocol import Encoded
    from roost.pubsub.envelope import Envelope
    from roost.pubsub.fanout import Plan

    class Sub:
        intercept: frozenset[str] = frozenset()

        def __init__(self, wire: WsWire) -> None:
            self.wire = wire

        def handle_out(self, event: str, payload: Encoded) -> None:
            raise AssertionError("not intercepting")

    flusher = Flusher()
    ws, ts = wires(flusher, False, True, False)
    plan = Plan({Sub(w): None for w in ws})
    plan.broadcast(TOPIC, "new:msg", Encoded.of({"body": "one"}))
    flusher.flush()
    envs = [
        Envelope("n", seq, TOPIC, "new:msg", Encoded.of({"body": b}))
        for seq, b in enumerate(("two", "three"))
    ]
    plan.broadcast_run(TOPIC, envs)
    flusher.flush()
    for t in (ts[0], ts[2]):
        assert t.data.count(b'"new:msg"') == 3
    assert ts[1].data == b"" and ws[1].closed and ts[1].aborted
