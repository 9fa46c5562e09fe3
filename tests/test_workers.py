"""``roost serve --workers N``: N real worker processes on one port and a real Redis.

Each test starts its own redis-server and ``roost serve --workers 2`` (a supervisor and
two workers), talks to the port with raw WebSocket clients and plain HTTP, and kills
or signals the processes by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rawws import RawSocket
from support import (
    ROOT,
    ServerProcess,
    free_port,
    start_server,
    until,
    wait_http,
    worker_pids,
)

CLIENTS = 24  # each lands on w1 or w2 by the kernel's hash: all on one is 2 ** -23


def start_group(redis_url: str, *args: str, node: str = "box") -> ServerProcess:
    server = start_server(
        "--workers", "2", "--redis", redis_url, "--drain-window", "1", *args, node=node
    )  # fmt: skip
    wait_http(f"{server.url}/readyz", proc=server.proc)  # every worker up
    return server


def http(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except OSError:  # reset: it was queued on a worker that died (SO_REUSEPORT), or refused
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


async def join_many(server: ServerProcess, topic: str, count: int) -> list[tuple[RawSocket, str]]:
    """``count`` clients joined to ``topic``, each with the worker that answered its join."""
    joined = []
    for i in range(count):
        ws = await RawSocket.connect(server.ws_url)
        reply = await ws.join(topic, "1", {"user": f"u{i}"})
        assert reply[3] == "phx_reply" and reply[4]["status"] == "ok", reply
        joined.append((ws, reply[4]["response"]["node"]))
    return joined


async def close_all(joined: list[tuple[RawSocket, str]]) -> None:
    for ws, _ in joined:
        await ws.close()


async def test_two_workers_serve_the_chat_on_one_port(redis_server: Any) -> None:
    server = start_group(redis_server.url)
    try:
        joined = await join_many(server, "rooms:lobby", CLIENTS)
        on = Counter(node for _, node in joined)
        assert set(on) == {"box-w1", "box-w2"}, on  # both workers took connections
        sender = next(ws for ws, node in joined if node == "box-w1")
        await sender.send("1", "2", "rooms:lobby", "new:msg", {"body": "to every worker"})
        for ws, _ in joined:  # everyone, on either worker, gets it exactly once
            frame = await ws.recv_until(lambda f: f[3] == "new:msg")
            assert frame[4]["body"] == "to every worker"
        for ws, _ in joined:
            with pytest.raises(TimeoutError):
                await ws.recv_until(lambda f: f[3] == "new:msg", timeout=0.3)

        # One /metrics for the group: each worker's own series, the group's counts.
        status, text = http(f"{server.url}/metrics")
        assert status == 200
        for node, count in on.items():
            assert f'roost_connections{{node="{node}"}} {float(count)}' in text
        assert 'roost_workers{node="box"} 2.0' in text
        assert 'roost_workers_answering{node="box"} 2.0' in text
        assert text.count("# TYPE roost_connections gauge") == 1
        status, ready = http(f"{server.url}/readyz")
        assert status == 200 and set(ready["workers"]) == {"w1", "w2"}
        await close_all(joined)
    finally:
        assert server.stop(timeout=25) == 0


async def test_a_crashed_worker_is_restarted_under_its_name(redis_server: Any) -> None:
    server = start_group(redis_server.url)
    try:
        joined = await join_many(server, "rooms:crash", CLIENTS)
        before = worker_pids(server)
        assert set(before) == {1, 2}
        os.kill(before[1], signal.SIGKILL)
        # Not ready while w1 is down or starting; ready again once it is back.
        await until(lambda: http(f"{server.url}/readyz")[0] == 503, 10, "readyz 503")
        await until(lambda: http(f"{server.url}/readyz")[0] == 200, 20, "readyz 200 again")
        after = worker_pids(server)
        assert after[2] == before[2] and after[1] != before[1]
        assert "worker w1 (pid" in server.log() and "SIGKILL; restarting in" in server.log()
        assert "taken over from the worker before this one" in server.log()

        # The survivors are untouched, and new clients reach the new w1 too.
        survivors = [(ws, node) for ws, node in joined if node == "box-w2"]
        newcomers = await join_many(server, "rooms:crash", CLIENTS)
        assert "box-w1" in {node for _, node in newcomers}
        await newcomers[0][0].send("1", "2", "rooms:crash", "new:msg", {"body": "after"})
        for ws, _ in survivors + newcomers:
            frame = await ws.recv_until(lambda f: f[3] == "new:msg")
            assert frame[4]["body"] == "after"
        await close_all(joined + newcomers)
    finally:
        assert server.stop(timeout=25) == 0


async def test_sigterm_drains_every_worker_and_exits(redis_server: Any) -> None:
    server = start_group(redis_server.url, "--drain-window", "1")
    joined = await join_many(server, "rooms:bye", CLIENTS)
    pids = worker_pids(server)
    server.proc.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(ws.expect_closed(10) for ws, _ in joined))
    assert set(codes) == {1012}  # each worker drained its own clients: "server restart"
    assert server.proc.wait(15) == 0
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert "stopped with code 0" in server.log()
    await close_all(joined)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_workers_die_with_a_killed_supervisor(redis_server: Any) -> None:
    server = start_group(redis_server.url)
    pids = worker_pids(server)
    server.proc.kill()
    server.proc.wait(5)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in pids.values()):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.1)
    with pytest.raises(OSError):  # nobody serves the port any more
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


async def test_shared_socket_mode_serves_the_chat(redis_server: Any) -> None:
    server = start_group(redis_server.url, "--worker-socket", "shared")
    try:
        assert "socket=shared" in server.log()
        joined = await join_many(server, "rooms:shared", 4)
        await joined[0][0].send("1", "2", "rooms:shared", "new:msg", {"body": "one socket"})
        for ws, _ in joined:
            frame = await ws.recv_until(lambda f: f[3] == "new:msg")
            assert frame[4]["body"] == "one socket"
        status, ready = http(f"{server.url}/readyz")
        assert status == 200 and set(ready["workers"]) == {"w1", "w2"}
        await close_all(joined)
    finally:
        assert server.stop(timeout=25) == 0


def _serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    return subprocess.run(
        [sys.executable, "-m", "roost", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_workers_need_redis_and_a_number() -> None:
    done = _serve("--workers", "2", "--port", str(free_port()))
    assert done.returncode == 2
    assert "--workers 2 needs --redis URL" in done.stderr
    for bad in ("0", "two", "-1"):
        done = _serve("--workers", bad, "--port", str(free_port()))
        assert done.returncode == 2 and "--workers must be a number" in done.stderr, done.stderr


def test_a_worker_that_cannot_start_stops_the_group(redis_server: Any) -> None:
    """The port is held by someone else (no SO_REUSEPORT): no restart loop, an exit code."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(
            "--workers", "2", "--redis", redis_server.url, "--port", str(port),
            "--host", "127.0.0.1",
        )  # fmt: skip
    assert done.returncode != 0
    assert "could not start" in done.stderr or "Address already in use" in done.stderr


def _low_file_limit() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (260, 260))


async def test_a_node_refuses_past_its_file_limit_with_503() -> None:
    """A node that can hold 60 sockets (file limit 260 - 200 reserved) says so, and the 61st
    client gets a 503 it can act on, not a connection dropped at accept()."""
    import aiohttp

    port = free_port()
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"roost-fd-{port}.log"
    env = {**os.environ, "ROOST_CONN_RATE": "0", "ROOST_MAX_CONNECTIONS_PER_IP": "0"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "serve", "--port", str(port), "--node", "fd"],
            stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_low_file_limit,
        )  # fmt: skip
    server = ServerProcess(port, proc, log_path)
    sockets: list[RawSocket] = []
    try:
        wait_http(f"{server.url}/healthz", proc=proc)
        assert "this process can hold 60 connections (the file limit; file limit 260)" in (
            server.log()
        )
        assert "--max-connections lowered to 60" in server.log()
        for _ in range(60):
            sockets.append(await RawSocket.connect(server.ws_url))
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await RawSocket.connect(server.ws_url)
        assert refused.value.status == 503
    finally:
        for ws in sockets:
            await ws.close()
        server.stop()
