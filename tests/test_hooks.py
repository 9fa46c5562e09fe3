"""Backend hooks against a real small backend (tests/hookbackend.py, its own process):
connect, join and publish decided by it, signed requests, reused connections, a slow and
a failing backend under both failure policies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from roost.client import Client
from roost.client.client import JoinRefused
from roost.hooks import verify
from roost.security.hooksign import sign

from support import ROOT, ServerProcess, free_port, start_server, until, wait_http

SECRET = "hook-secret-for-tests"


class Backend:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "hookbackend.py"), str(self.port), SECRET],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                self.log()
                break
            except OSError:
                assert time.monotonic() < deadline, "the hook backend did not start"
                time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def log(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url("log"), timeout=2) as resp:
            return list(json.loads(resp.read()))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.stop()


def node(backend: Backend, *extra: str, prefix: str = "") -> ServerProcess:
    server = start_server(
        "--hook-connect", backend.url(prefix + "connect"),
        "--hook-join", backend.url(prefix + "join"),
        "--hook-publish", backend.url(prefix + "publish"),
        "--hook-secret", SECRET,
        *extra,
        node=f"hooks{prefix.strip('/')}",
    )  # fmt: skip
    wait_http(f"{server.url}/healthz", proc=server.proc)
    return server


async def test_the_backend_decides_connect_join_and_publish(backend: Backend) -> None:
    server = node(backend)
    try:
        with pytest.raises(Exception, match="403"):  # connect denied: "banned"
            async with Client(server.ws_url, {"user": "mallory"}) as c:
                await c.connect()
        async with (
            Client(server.ws_url, {"user": "al"}) as al,
            Client(server.ws_url, {"user": "vip"}) as vip,
        ):
            with pytest.raises(JoinRefused) as refused:
                await al.channel("rooms:staff", {}).join()
            assert refused.value.response == {"reason": "members only"}
            await vip.channel("rooms:staff", {}).join()  # the connect hook's assigns: role vip

            loud = await al.channel("rooms:loud", {"user": "al"}).join()  # payload rewritten
            assert loud is not None
            got: list[Any] = []
            lobby_vip = vip.channel("rooms:lobby", {"user": "vip"})
            lobby_vip.on("new:msg", got.append)
            await lobby_vip.join()
            lobby = al.channel("rooms:lobby", {"user": "al"})
            await lobby.join()
            denied = await lobby.push("new:msg", {"body": "buy spam now"})
            assert not denied.ok and denied.response == {"reason": "no spam", "rule": 7}
            ok = await lobby.push("new:msg", {"body": "darn it"})
            assert ok.ok
            await until(lambda: got, 5, "the rewritten message")
            assert [m["body"] for m in got] == ["d**n it"]  # the spam never went out

            loud_channel = vip.channel("rooms:loud", {"user": "vip"})
            seen: list[Any] = []
            loud_channel.on("user:entered", seen.append)
            await loud_channel.join()
            await until(lambda: seen, 5, "entered in rooms:loud")
            assert seen[0]["user"] == "VIP"  # the join payload the channel saw was rewritten

        log = backend.log()
        assert log and all(entry["signed"] for entry in log)
        hooks = {entry["hook"] for entry in log}
        assert hooks == {"connect", "join", "publish"}
        connect = next(e["body"] for e in log if e["hook"] == "connect")
        assert connect["node"] == "hooks" and connect["client"]["peer"] == "127.0.0.1"
        assert connect["client"]["transport"] == "websocket"
        publish = next(e["body"] for e in log if e["hook"] == "publish")
        assert publish["user"]["user"] == "al" and publish["topic"] == "rooms:lobby"
        assert publish["event"] == "new:msg"
        # Connections to the backend are kept alive and reused.
        ports = {e["port"] for e in log}
        assert len(ports) < len(log) / 2, (len(ports), len(log))
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'roost_hook_decisions_total{node="hooks",result="deny"}' in text
    finally:
        server.stop()


@pytest.mark.parametrize("prefix", ["slow/", "fail/", "garbage/"])
async def test_no_answer_fails_closed_by_default(backend: Backend, prefix: str) -> None:
    server = node(backend, "--hook-timeout", "0.3", "--hook-retries", "2", prefix=prefix)
    try:
        with pytest.raises(Exception, match="403"):
            async with Client(server.ws_url, {"user": "al"}) as c:
                await c.connect()
        attempts = [e for e in backend.log() if e["path"] == f"/{prefix}connect"]
        # Retried on timeouts and 5xx (3 attempts); a 200 that is no decision is final.
        assert len(attempts) == (1 if prefix == "garbage/" else 3), attempts
        assert "connect hook" in server.log() and "policy: fail closed" in server.log()
    finally:
        server.stop()


async def test_no_answer_fails_open_when_asked(backend: Backend) -> None:
    server = node(
        backend, "--hook-timeout", "0.3", "--hook-retries", "0", "--hook-failure", "open",
        prefix="fail/",
    )  # fmt: skip
    try:
        async with Client(server.ws_url, {"user": "al"}) as c:
            room = c.channel("rooms:lobby", {"user": "al"})
            await room.join()
            assert (await room.push("new:msg", {"body": "spam is fine now"})).ok
    finally:
        server.stop()


def test_hooks_need_a_secret() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "roost", "serve", "--hook-join", "http://127.0.0.1:1/join",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "backend hooks need --hook-secret" in done.stderr


def test_signatures_bind_body_key_and_time() -> None:
    body = b'{"hook":"join"}'
    header = sign(b"k", body, now=1000)
    assert verify(b"k", header, body, now=1000)
    assert verify(b"k", header, body, now=1200)
    assert not verify(b"k", header, body + b" ", now=1000)  # another body
    assert not verify(b"other", header, body, now=1000)  # another key
    assert not verify(b"k", header, body, now=1000 + 301)  # a replay, too late
    assert not verify(b"k", "garbage", body, now=1000)
    assert not verify(b"k", "t=x,v1=00", body, now=1000)
