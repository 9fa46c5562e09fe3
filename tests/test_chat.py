"""The chat channel end to end with roost.client, and the terminal chat CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

from roost.client import Client


async def test_join_entered_and_message(local_server: Any) -> None:
    server = await local_server()
    async with Client(server.ws_url, {"user": "al"}) as a, Client(server.ws_url) as b:
        got_a: list[Any] = []
        got_b: list[Any] = []
        room_b = b.channel("rooms:lobby", {"user": "bo"})
        room_b.on("new:msg", got_b.append)
        room_b.on("user:entered", got_b.append)
        joined = await room_b.join()
        assert joined["history"] == [] and joined["node"] == "local"
        assert joined["offset"] == 0 and joined["recovered"] is False
        room_a = a.channel("rooms:lobby", {})  # name from the connect param
        room_a.on("new:msg", got_a.append)
        await room_a.join()
        reply = await room_a.push("new:msg", {"body": "  hello  ", "user": "mallory"})
        assert reply.ok
        await _until(lambda: len(got_a) == 1 and len(got_b) == 3)
        assert got_b[:2] == [{"user": "bo", "verified": False}, {"user": "al", "verified": False}]
        msg = got_b[2]
        assert got_a[0] == msg
        assert msg["id"] == reply.response["id"]
        assert (msg["user"], msg["body"], msg["node"]) == ("al", "hello", "local")
        assert abs(msg["at"] - time.time() * 1000) < 60_000


async def test_payload_user_used_only_when_none_bound(local_server: Any) -> None:
    server = await local_server()
    async with Client(server.ws_url) as c:
        got: list[Any] = []
        room = c.channel("rooms:x")
        room.on("new:msg", got.append)
        room.on("user:entered", got.append)
        await room.join()
        await room.push("new:msg", {"body": "a", "user": "carol"})
        await room.push("new:msg", {"body": "b"})
        await _until(lambda: len(got) == 3)
        assert [m["user"] for m in got] == ["anonymous", "carol", "anonymous"]


async def test_messages_arrive_in_order(local_server: Any) -> None:
    server = await local_server(msg_rate=0)
    async with Client(server.ws_url) as a, Client(server.ws_url) as b:
        got: list[str] = []
        rb = b.channel("rooms:order")
        rb.on("new:msg", lambda p: got.append(p["body"]))
        await rb.join()
        ra = a.channel("rooms:order", {"user": "a"})
        await ra.join()
        await asyncio.gather(*(ra.push("new:msg", {"body": str(i)}) for i in range(200)))
        await _until(lambda: len(got) == 200)
        assert got == [str(i) for i in range(200)]


async def test_client_reconnects_and_rejoins(local_server: Any) -> None:
    from roost.brokers.memory import MemoryBroker
    from roost.chat import create_endpoint

    server = await local_server()
    port = server.port
    async with Client(server.ws_url, {"user": "al"}) as c:
        got: list[Any] = []
        room = c.channel("rooms:re", {"user": "al"})
        room.on("new:msg", got.append)
        await room.join()
        await server.stop()
        await _until(lambda: not c.connected)
        server2 = type(server)(create_endpoint("second", MemoryBroker()))
        server2.port = port
        await server2.start()
        try:
            # the jittered backoff: at worst one 30 s window after the server is back
            await _until(lambda: room.state == "joined" and c.connected, timeout=35)
            assert room.join_response["node"] == "second"
            assert (await room.push("new:msg", {"body": "back"})).ok
            await _until(lambda: len(got) == 1)
        finally:
            await server2.stop()


def test_cli_chat_send_reaches_another_terminal(roost_server: Any) -> None:
    listener = subprocess.Popen(
        [sys.executable, "-m", "roost", "chat", "--url", roost_server.ws_url, "--user", "bo"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        seen = [listener.stdout.readline() for _ in range(2)]
        assert any("joined rooms:lobby" in line for line in seen), seen
        sent = subprocess.run(
            [
                sys.executable,
                "-m",
                "roost",
                "chat",
                "--url",
                roost_server.ws_url,
                "--user",
                "al",
                "--send",
                "hi from al",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sent.returncode == 0, sent.stderr
        lines = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = listener.stdout.readline()
            lines.append(line)
            if "[al] hi from al" in line:
                break
        assert "[al] hi from al\n" in lines, lines
    finally:
        listener.terminate()
        listener.wait(10)


def test_cli_chat_reports_refused_join(roost_server: Any) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "roost",
            "chat",
            "--url",
            roost_server.ws_url,
            "--room",
            "bad room",
            "--send",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "invalid room" in out.stderr


def test_cli_chat_reports_unreachable_server() -> None:
    from support import free_port

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "roost",
            "chat",
            "--url",
            f"ws://127.0.0.1:{free_port()}/socket",
            "--send",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "cannot connect" in out.stderr


def test_serve_stops_promptly_and_closes_sockets(tmp_path: Any) -> None:
    from support import start_server

    server = start_server(log_dir=tmp_path)

    async def watch() -> int | None:
        async with Client(server.ws_url, reconnect=False) as c:
            await c.channel("rooms:lobby").join()
            closed = asyncio.Event()
            c.on_close.append(lambda code: closed.set())
            t0 = time.monotonic()
            server.proc.terminate()
            await asyncio.wait_for(closed.wait(), 10)
            assert time.monotonic() - t0 < 8
            return c.close_code

    assert asyncio.run(watch()) == 1012
    assert server.proc.wait(10) == 0


async def _until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
