"""Every row of the protocol's "Server rules", against a real server on a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from roost.brokers.memory import MemoryBroker
from roost.channels import Channel, Endpoint, JoinError, Limits, Reply, Router
from roost.protocol import Encoded
from roost.pubsub import PubSub

from rawws import RawSocket

OK_EMPTY = {"status": "ok", "response": {}}


async def test_heartbeat_is_answered(local_server: Any) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    await ws.send(None, "5", "phoenix", "heartbeat", {})
    assert await ws.recv() == [None, "5", "phoenix", "phx_reply", OK_EMPTY]
    await ws.close()


async def test_unmatched_topic_join_and_push(local_server: Any) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    err = {"status": "error", "response": {"reason": "unmatched topic"}}
    assert await ws.join("nope:1", "1") == ["1", "1", "nope:1", "phx_reply", err]
    await ws.send(None, "2", "rooms:lobby", "new:msg", {"body": "x"})
    assert await ws.recv() == [None, "2", "rooms:lobby", "phx_reply", err]
    await ws.send(None, "3", "rooms:lobby", "phx_leave", {})
    assert await ws.recv() == [None, "3", "rooms:lobby", "phx_reply", OK_EMPTY]
    await ws.close()


async def test_stale_join_ref_is_dropped(local_server: Any) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    assert (await ws.join("echo:a", "1"))[4]["status"] == "ok"
    await ws.send("99", "2", "echo:a", "echo", {"n": 1})  # stale join_ref: no answer
    await ws.send("1", "3", "echo:a", "echo", {"n": 2})
    assert await ws.recv() == [
        "1",
        "3",
        "echo:a",
        "phx_reply",
        {"status": "ok", "response": {"n": 2}},
    ]
    await ws.close()


async def test_too_many_channels(local_server: Any) -> None:
    server = await local_server(max_channels=3)
    ws = await RawSocket.connect(server.ws_url)
    for i in range(3):
        assert (await ws.join(f"echo:{i}", str(i + 1)))[4]["status"] == "ok"
    reply = await ws.join("echo:x", "9")
    assert reply[4] == {"status": "error", "response": {"reason": "too many channels joined"}}
    await ws.close()


async def test_join_crash_is_an_error_reply(local_server: Any) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    reply = await ws.join("echo:a", "1", {"crash": True})
    assert reply[4] == {"status": "error", "response": {"reason": "join crashed"}}
    assert (await ws.join("echo:a", "2"))[4]["status"] == "ok"  # the socket lives on
    await ws.close()


async def test_duplicate_join_closes_old_channel(local_server: Any) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    await ws.join("echo:a", "1")
    await ws.send("2", "2", "echo:a", "phx_join", {})
    assert await ws.recv() == ["1", "1", "echo:a", "phx_close", {}]
    assert (await ws.recv())[:4] == ["2", "2", "echo:a", "phx_reply"]
    await ws.send("2", "3", "echo:a", "echo", {})
    assert (await ws.recv())[4]["status"] == "ok"
    assert server.endpoint.pubsub.subscribers("echo:a") == 1
    await ws.close()


async def test_leave_replies_then_closes(local_server: Any) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    await ws.join("echo:a", "1")
    await ws.send("1", "2", "echo:a", "phx_leave", {})
    assert await ws.recv() == ["1", "2", "echo:a", "phx_reply", OK_EMPTY]
    assert await ws.recv() == ["1", "1", "echo:a", "phx_close", {}]
    assert server.endpoint.pubsub.subscribers("echo:a") == 0
    await ws.send("1", "3", "echo:a", "echo", {})
    assert (await ws.recv())[4]["response"] == {"reason": "unmatched topic"}
    await ws.close()


async def test_handler_crash_errors_the_channel_not_the_socket(
    local_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    await ws.join("echo:a", "1")
    await ws.join("echo:b", "2")
    await ws.send("1", "3", "echo:a", "crash", {})
    assert await ws.recv() == ["1", "1", "echo:a", "phx_error", {}]
    await ws.send("2", "4", "echo:b", "echo", {"still": "here"})
    assert (await ws.recv())[4] == {"status": "ok", "response": {"still": "here"}}
    assert server.endpoint.pubsub.subscribers("echo:a") == 0
    assert "crash requested" in caplog.text
    await ws.close()


@pytest.mark.parametrize("lean", [True, False])
async def test_idle_socket_is_closed(local_server: Any, lean: bool) -> None:
    """On both WebSocket paths (the front's WsConn, aiohttp's route): one idle wheel."""
    server = await local_server(lean=lean, idle_timeout=0.3)
    ws = await RawSocket.connect(server.ws_url)
    assert await ws.expect_closed() == 1001
    await ws.close()


def test_heartbeats_keep_socket_alive() -> None:
    """The idle timer against a clock the test moves (no sleeping): frames push the
    deadline on; silence past it closes with 1001."""
    from roost.server.idle import IdleWheel
    from roost.server.websocket import IdleTimer

    class Loop:
        def __init__(self) -> None:
            self.now = 0.0
            self.timers: list[tuple[float, Any]] = []

        def time(self) -> float:
            return self.now

        def call_at(self, when: float, callback: Any, *args: Any) -> Any:
            self.timers.append((when, lambda: callback(*args)))
            return type("Handle", (), {"cancel": lambda self: None})()

        def run_until(self, t: float) -> None:
            self.now = t
            due = [(w, cb) for w, cb in self.timers if w <= t]
            self.timers = [(w, cb) for w, cb in self.timers if w > t]
            for _, callback in due:
                callback()

    class Wire:
        closed: tuple[int, str] | None = None

        def close(self, code: int, reason: str) -> None:
            self.closed = (code, reason)

        give_up = close  # (the idle close: what WsWire.give_up does is tested elsewhere)

    loop, wire = Loop(), Wire()
    wheel = IdleWheel(0.4, loop)  # ticks of 0.1 s
    timer = IdleTimer(wire, wheel)
    for i in range(1, 7):  # a heartbeat every 0.15 s for 0.9 s: past the timeout, alive
        loop.run_until(0.15 * i)
        timer.touch()
    assert wire.closed is None
    loop.run_until(0.9 + 0.4 - 0.05)  # then silence: not yet
    assert wire.closed is None
    loop.run_until(0.9 + 0.4 + 0.1)  # closed within a tick of the deadline
    assert wire.closed == (1001, "idle timeout")


class StuckTransport:
    """A transport whose peer takes nothing: ``buffered`` bytes wait in the process."""

    def __init__(self, buffered: int) -> None:
        self.buffered = buffered
        self.writes: list[bytes] = []
        self.closing = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if self.buffered:
            self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return 0 if self.aborted else self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True


async def test_a_silent_peer_that_takes_nothing_is_dropped_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 26 (half-open clients, tests/faults/test_half_open.py): a close waits for
    the transport's buffer to be written out, which a peer gone without a FIN never lets
    happen. The idle close (``give_up``) aborts at once when bytes are still waiting;
    any other close aborts ``ABORT_AFTER`` later; with nothing waiting, a plain close."""
    from roost.server import wswire
    from roost.server.wswire import WS_V2, WsWire

    monkeypatch.setattr(wswire, "ABORT_AFTER", 0.05)
    idle_quiet, idle_stuck, closed_stuck = (StuckTransport(n) for n in (0, 5000, 5000))
    wire = WsWire(WS_V2, idle_quiet, 1 << 20)  # type: ignore[arg-type]
    wire.give_up(1001, "idle timeout")
    assert idle_quiet.closing and not idle_quiet.aborted and len(idle_quiet.writes) == 1
    wire = WsWire(WS_V2, idle_stuck, 1 << 20)  # type: ignore[arg-type]
    wire.give_up(1001, "idle timeout")
    assert idle_stuck.aborted
    wire = WsWire(WS_V2, closed_stuck, 1 << 20)  # type: ignore[arg-type]
    wire.close(1008, "policy")
    assert closed_stuck.closing and not closed_stuck.aborted
    await asyncio.sleep(0.2)
    assert closed_stuck.aborted
    assert not idle_quiet.aborted


async def test_unsupported_vsn_is_403(local_server: Any) -> None:
    server = await local_server()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await RawSocket.connect(server.ws_url, "vsn=3.0.0")
    assert info.value.status == 403


async def test_connect_hook_may_refuse(local_server: Any) -> None:
    def connect(params: dict[str, str], info: dict[str, Any]) -> dict[str, Any] | None:
        return None if params.get("token") != "good" else {"user": "ok"}

    endpoint = Endpoint(Router(), PubSub("n", MemoryBroker()), connect=connect)
    server = await local_server(endpoint)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await RawSocket.connect(server.ws_url, "vsn=2.0.0&token=bad")
    assert info.value.status == 403
    ws = await RawSocket.connect(server.ws_url, "vsn=2.0.0&token=good")
    await ws.close()


async def test_v1_client(local_server: Any) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url, "")
    await ws.send_raw('{"topic":"echo:a","event":"phx_join","payload":{},"ref":"1"}')
    reply = await ws.recv()
    assert reply["event"] == "phx_reply" and reply["ref"] == "1"
    assert reply["payload"]["status"] == "ok"
    await ws.send_raw('{"topic":"echo:a","event":"broadcast","payload":{"v":1},"ref":"2"}')
    frames = [await ws.recv(), await ws.recv()]
    assert {"topic": "echo:a", "event": "echo", "payload": {"v": 1}, "ref": None} in frames
    await ws.close()


class Shouting(Channel):
    intercept = frozenset({"say"})

    async def join(self, payload: Any) -> Any:
        return {}

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event == "say":
            await self.broadcast("say", payload)
        elif event == "say_from":
            await self.broadcast_from("said", payload)
        elif event == "refuse":
            raise JoinError("no")
        return Reply.ok()

    def handle_out(self, event: str, payload: Encoded) -> None:
        value = payload.value()
        self.push(event, {"text": value["text"].upper()})


class Private(Channel):
    async def join(self, payload: Any) -> Any:
        raise JoinError("unauthorized")


async def test_intercept_broadcast_from_and_join_error(local_server: Any) -> None:
    router = Router().channel("shout:*", Shouting).channel("private:*", Private)
    server = await local_server(Endpoint(router, PubSub("n", MemoryBroker()), limits=Limits()))
    a = await RawSocket.connect(server.ws_url)
    b = await RawSocket.connect(server.ws_url)
    await a.join("shout:x", "1")
    await b.join("shout:x", "1")
    await a.send("1", "2", "shout:x", "say", {"text": "hi"})
    assert await b.recv() == ["1", None, "shout:x", "say", {"text": "HI"}]
    await a.send("1", "3", "shout:x", "say_from", {"text": "only b"})
    assert await b.recv() == [None, None, "shout:x", "said", {"text": "only b"}]
    frames = [await a.recv(), await a.recv(), await a.recv()]
    assert all(f[3] != "said" for f in frames)
    refused = await a.join("private:1", "9")
    assert refused[4] == {"status": "error", "response": {"reason": "unauthorized"}}
    await a.close()
    await b.close()


async def test_binary_push_and_reply(local_server: Any) -> None:
    from roost.protocol import binary

    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    await ws.join("echo:a", "1")
    await ws.send_raw(binary.encode_client_push("1", "2", "echo:a", "bin", b"\x01\x02\x03"))
    frame = await ws.recv()
    assert frame == bytes([1, 1, 1, 6, 2]) + b"12echo:aok" + b"\x03\x02\x01"
    await ws.close()


async def test_socket_close_terminates_channels(local_server: Any) -> None:
    server = await local_server()
    ws = await RawSocket.connect(server.ws_url)
    await ws.join("echo:a", "1")
    assert server.endpoint.pubsub.subscribers("echo:a") == 1
    await ws.close()
    for _ in range(50):
        if server.endpoint.pubsub.subscribers("echo:a") == 0:
            break
        await asyncio.sleep(0.02)
    assert server.endpoint.pubsub.subscribers("echo:a") == 0


async def test_a_raising_client_callback_does_not_silence_the_client(local_server: Any) -> None:
    """roost.client: an ``on_message`` callback that raises is logged; the client goes on
    reading and heartbeating (it used to end the read loop silently: no more heartbeats,
    the node closed it as idle, the client never knew — a half-open client of its own)."""
    from roost.client import Client

    server = await local_server(idle_timeout=0.6)
    client = Client(server.ws_url, {"user": "cb"}, heartbeat=0.2)

    def boom(msg: Any) -> None:
        raise RuntimeError("callback bug")

    client.on_message.append(boom)
    await client.connect(5.0)
    try:
        channel = client.channel("rooms:lobby", {"user": "cb"})
        await channel.join(5.0)
        await asyncio.sleep(1.5)  # past the idle timeout: alive only if it heartbeats
        assert client.connected and client.close_code is None
        assert (await channel.push("ping", {}, 5.0)).status in {"ok", "error"}
    finally:
        await client.close()
