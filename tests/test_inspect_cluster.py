"""`roost inspect` and `roost cluster`: real Redis, real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from roost.brokers.redis import codec
from roost.client import Client
from roost.protocol import Encoded
from roost.pubsub import Envelope

from support import RedisProcess, ServerProcess, free_port, start_server

pytestmark = pytest.mark.timeout(60)

ANSI = re.compile(r"\x1b\[")


# -- helpers -----------------------------------------------------------------------------
class Inspect:
    """A `roost inspect` subprocess with its stdout/stderr read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: list[str] = []

    @classmethod
    async def start(cls, *args: str, ready: bool = True) -> Inspect:
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "roost", "inspect", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        self = cls(proc)
        if ready:
            await self.err_until(lambda line: "subscribed to" in line)
        return self

    async def err_until(self, pred: Callable[[str], bool], timeout: float = 10.0) -> str:
        assert self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            while line := (await self.proc.stderr.readline()).decode():
                self.stderr.append(line)
                if pred(line):
                    return line
        raise AssertionError(f"inspect ended without the expected line: {self.stderr}")

    async def out_until(self, pred: Callable[[str], bool], timeout: float = 10.0) -> list[str]:
        """Lines of stdout up to and including the first that satisfies ``pred``."""
        assert self.proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while line := (await self.proc.stdout.readline()).decode():
                lines.append(line)
                if pred(line):
                    return lines
        raise AssertionError(f"inspect ended without the expected line: {lines}")

    async def finish(self, timeout: float = 10.0) -> tuple[str, str, int]:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return out.decode(), "".join(self.stderr) + err.decode(), self.proc.returncode

    async def stop(self, sig: int = signal.SIGINT) -> tuple[str, str, int]:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.finish()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def inspect() -> AsyncIterator[Callable[..., Any]]:
    started: list[Inspect] = []

    async def make(*args: str, ready: bool = True) -> Inspect:
        ins = await Inspect.start(*args, ready=ready)
        started.append(ins)
        return ins

    yield make
    for ins in started:
        ins.kill()
        await ins.proc.wait()


async def start_nodes(redis_url: str, mode: str, log_dir: Path) -> list[ServerProcess]:
    args = ("--redis", redis_url, "--pubsub-mode", mode, "--probe-interval", "0.5")
    return list(
        await asyncio.gather(
            *(
                asyncio.to_thread(start_server, *args, node=name, log_dir=log_dir)
                for name in ("n1", "n2")
            )
        )
    )


async def chat_across(ws1: str, ws2: str, body: str) -> None:
    """A client on node 2 listens; one on node 1 pushes; node 2's client gets it."""
    got: asyncio.Queue[Any] = asyncio.Queue()
    async with Client(ws2, {"user": "u2"}) as c2, Client(ws1, {"user": "u1"}) as c1:
        room2 = c2.channel("rooms:lobby", {"user": "u2"})
        room2.on("new:msg", got.put_nowait)
        await room2.join()
        room1 = c1.channel("rooms:lobby", {"user": "u1"})
        await room1.join()
        reply = await room1.push("new:msg", {"body": body})
        assert reply.ok, reply.response
        msg = await asyncio.wait_for(got.get(), 10)
        assert (msg["body"], msg["user"], msg["node"]) == (body, "u1", "n1")


def publish(url: str, channel: str, data: bytes) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.publish(channel, data)
    finally:
        client.close()


# -- roost inspect -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["topic", "global"])
async def test_inspect_shows_a_broadcast_through_a_node(
    mode: str, redis_server: RedisProcess, inspect: Any, tmp_path: Path
) -> None:
    as_json = await inspect("--redis", redis_server.url, "--json", "--count", "1",
                            "--event", "new:msg", "--topic", "rooms:*")  # fmt: skip
    human = await inspect("--redis", redis_server.url)
    nodes = await start_nodes(redis_server.url, mode, tmp_path)
    try:
        await chat_across(nodes[0].ws_url, nodes[1].ws_url, "hello from u1")
        out, err, code = await as_json.finish()
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == 1, out
        row = json.loads(lines[0])
        assert (row["node"], row["topic"], row["event"]) == ("n1", "rooms:lobby", "new:msg")
        assert row["payload"]["body"] == "hello from u1"
        assert row["payload"]["user"] == "u1"
        assert isinstance(row["seq"], int) and row["seq"] >= 1
        channel = "roost:chat:t:{rooms:lobby}" if mode == "topic" else "roost:chat"
        assert row["channel"] == channel
        assert row["binary"] is False
        assert 0 <= row["lag_ms"] < 10_000
        assert abs(row["ts"] - time.time() * 1000) < 60_000

        # The human format: one line, the body in it, no colours when not a terminal.
        seen = await human.out_until(lambda line: "hello from u1" in line)
        line = seen[-1]
        for part in ("n1", "rooms:lobby", "new:msg", '"body":"hello from u1"'):
            assert part in line, line
        assert re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line), line
        assert any("user:entered" in earlier for earlier in seen), seen
        assert not any(ANSI.search(x) for x in seen)
        _, err, code = await human.stop(signal.SIGINT)
        assert code == 0
        assert "Traceback" not in err
    finally:
        for node in nodes:
            node.stop()


async def test_inspect_reports_garbage_and_keeps_going(
    redis_server: RedisProcess, inspect: Any
) -> None:
    as_json = await inspect("--redis", redis_server.url, "--json", "--count", "1")
    human = await inspect("--redis", redis_server.url)
    url = redis_server.url
    publish(url, "roost:chat", b"not msgpack \xc1\xff")
    publish(url, "roost:chat", b"\x93\x01\x02\x03")  # msgpack, not an envelope
    publish(url, "roost:chat:t:{rooms:x}", b"")
    env = Envelope("nx", 7, "rooms:x", "blob", Encoded(b"\x00\x01\x02", True))
    publish(url, "roost:chat:t:{rooms:x}", codec.encode(env, 7, int(time.time() * 1000)))

    out, err, code = await as_json.finish()
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == 4, rows
    errors, last = rows[:3], rows[3]
    assert all("error" in r and "not a roost envelope" in r["error"] for r in errors)
    assert [r["channel"] for r in errors] == ["roost:chat"] * 2 + ["roost:chat:t:{rooms:x}"]
    assert errors[0]["size"] == 14 and "not msgpack" in errors[0]["raw"]
    assert (last["node"], last["seq"], last["topic"], last["event"]) == ("nx", 7, "rooms:x", "blob")
    assert last["binary"] is True and last["payload"] == "AAEC"

    lines = await human.out_until(lambda line: "<binary 3 bytes>" in line)
    assert sum("ERROR" in x and "not a roost envelope" in x for x in lines) == 3, lines
    _, err, code = await human.stop(signal.SIGTERM)
    assert code == 0 and "Traceback" not in err


async def test_inspect_checks_signatures(redis_server: RedisProcess, inspect: Any) -> None:
    key = b"s3cret"
    args = ("--redis", redis_server.url, "--redis-signing-key", key.decode())
    as_json = await inspect(*args, "--json", "--count", "3")
    human = await inspect(*args)
    now = int(time.time() * 1000)
    env = Envelope("n1", 1, "rooms:s", "new:msg", Encoded.of({"body": "signed"}))
    mac = codec.sign(key, "n1", "rooms:s", "new:msg", env.payload.data, now)
    forged = codec.sign(b"other", "n1", "rooms:s", "new:msg", env.payload.data, now)
    publish(redis_server.url, "roost:chat", codec.encode(env, 1, now, mac))
    publish(redis_server.url, "roost:chat", codec.encode(env, 2, now, forged))
    publish(redis_server.url, "roost:chat", codec.encode(env, 3, now))
    out, err, code = await as_json.finish()
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["seq"], r["signed"], r["verified"]) for r in rows] == [
        (1, True, True),
        (2, True, False),
        (3, False, False),
    ]
    lines = await human.out_until(lambda line: "#3" in line)
    assert "SIGNATURE" not in lines[0] and "BAD SIGNATURE" in lines[1] and "UNSIGNED" in lines[2]
    await human.stop()


async def test_inspect_waits_for_redis(inspect: Any) -> None:
    port = free_port()
    ins = await inspect("--redis", f"redis://127.0.0.1:{port}", ready=False)
    line = await ins.err_until(lambda line: "cannot reach Redis" in line)
    assert f"127.0.0.1:{port}" in line and "retrying in" in line
    redis_proc = RedisProcess(port, []).start()
    try:
        await ins.err_until(lambda line: "subscribed to" in line)
        env = Envelope("n9", 1, "rooms:late", "new:msg", Encoded.of({"body": "late"}))
        publish(redis_proc.url, "roost:chat", codec.encode(env, 1, int(time.time() * 1000)))
        lines = await ins.out_until(lambda line: "late" in line)
        assert "n9" in lines[-1] and "rooms:late" in lines[-1]
        _, err, code = await ins.stop(signal.SIGINT)
        assert code == 0 and "Traceback" not in err
    finally:
        redis_proc.stop()


# -- roost cluster -----------------------------------------------------------------------
def two_free_ports() -> int:
    for _ in range(50):
        base = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise RuntimeError("no two consecutive free ports")


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_cluster_starts_nodes_that_chat_and_stops_them_all(tmp_path: Path) -> None:
    base = two_free_ports()
    out_path, err_path = tmp_path / "cluster.out", tmp_path / "cluster.err"
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "NODE")}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "cluster", "--nodes", "2", "--base-port", str(base)],
            stdout=out, stderr=err, env=env,
        )  # fmt: skip
    try:
        await wait_for(
            lambda: "Ctrl-C stops everything" in out_path.read_text() or proc.poll() is not None,
            30,
            "the cluster to start",
        )
        text = out_path.read_text()
        assert proc.poll() is None, err_path.read_text()
        assert f"n1  http://127.0.0.1:{base}/" in text
        assert f"n2  http://127.0.0.1:{base + 1}/" in text
        found = re.search(r"redis-server at redis://127\.0\.0\.1:(\d+)", text)
        assert found, text
        redis_port = int(found.group(1))
        assert health(base)["node"] == "n1"
        assert health(base + 1)["node"] == "n2"
        kids = children_of(proc.pid)
        assert len(kids) == 3, kids  # redis-server and two nodes

        ws = "ws://127.0.0.1:{}/socket"
        await chat_across(ws.format(base), ws.format(base + 1), "across the cluster")

        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        text = out_path.read_text()
        assert "SIGINT, stopping everything" in text and "stopped" in text
        assert not [pid for pid in kids if alive(pid)], "orphans left behind"
        for port in (base, base + 1, redis_port):
            assert not port_open(port), f"port {port} still open"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_cluster_stops_the_rest_when_a_node_dies(tmp_path: Path) -> None:
    base = two_free_ports()
    out_path = tmp_path / "cluster.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "cluster", "--nodes", "2", "--base-port", str(base)],
            stdout=out, stderr=subprocess.PIPE,
        )  # fmt: skip
    try:
        await wait_for(
            lambda: "Ctrl-C stops everything" in out_path.read_text() or proc.poll() is not None,
            30,
            "the cluster to start",
        )
        kids = children_of(proc.pid)
        n2 = int(re.findall(r"n2  http\S+ +ws\S+ +\(pid (\d+)\)", out_path.read_text())[0])
        assert n2 in kids
        os.kill(n2, signal.SIGKILL)
        _, err = await asyncio.to_thread(proc.communicate, None, 20)
        assert proc.returncode == 1
        assert "n2" in err.decode() and "exited unexpectedly with signal SIGKILL" in err.decode()
        assert not [pid for pid in kids if alive(pid)], "orphans left behind"
        assert not port_open(base)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_cluster_without_redis_server_says_how_to_get_one(tmp_path: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir}
    base = str(two_free_ports())
    result = subprocess.run(
        [sys.executable, "-m", "roost", "cluster", "--nodes", "2", "--base-port", base],
        capture_output=True, text=True, env=env, timeout=20, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert "redis-server" in result.stderr
    assert "apt-get install redis-server" in result.stderr
    assert "--redis" in result.stderr
    assert "Traceback" not in result.stderr
