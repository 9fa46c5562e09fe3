"""RSS per idle joined connection of ``roost serve``, and where it goes (issue 17).

``python -m roost_bench.memprobe [--tracemalloc]`` starts ``roost serve`` (uvloop, memory
broker, no rate or per-client limits, idle timeout 1 h) from whatever ``roost`` this Python
imports (set PYTHONPATH to compare trees), opens raw clients that upgrade and join
``rooms:lobby-<k % 20>`` with vsn 2.0.0, and reads the node's VmRSS at 200, 2,200 and 4,200
joined clients: RSS per connection = the differences / 2,000 (and / 4,000 overall). With
``--tracemalloc`` the node runs under ``tracemalloc.start(10)`` and the Python heap it
gained per connection between 200 and 4,200 clients is printed by file and by line.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import orjson

from .harness import raise_nofile, rss_kb
from .procs import free_port, wait_http

ROOMS = 20
STEPS = (200, 2200, 4200)
SERVE = [
    "serve", "--log-level", "warning", "--idle-timeout", "3600", "--max-connections", "100000",
    "--max-connections-per-ip", "0", "--conn-rate", "0", "--join-rate", "0", "--msg-rate", "0",
    "--join-rate-per-ip", "0",
    "--node", "memprobe",
]  # fmt: skip

# The node under tracemalloc: SIGUSR1 dumps a snapshot to $SNAP.<n> (then $SNAP.<n>.done).
TRACED = r"""
import os, signal, sys, tracemalloc
tracemalloc.start(10)
out, n = os.environ["SNAP"], [0]
def dump(*_):
    n[0] += 1
    tracemalloc.take_snapshot().dump(f"{out}.{n[0]}")
    open(f"{out}.{n[0]}.done", "w").close()
signal.signal(signal.SIGUSR1, dump)
from roost.cli import main
sys.argv = ["roost", *sys.argv[1:]]
main()
"""


def masked_text(payload: bytes) -> bytes:
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert len(body) < 126
    return bytes((0x81, 0x80 | len(body))) + key + body


class JoinClient(asyncio.Protocol):
    """Upgrade, join one room, then only read (and drop) what comes."""

    def __init__(self, k: int, joined: asyncio.Future[None]) -> None:
        self.k = k
        self.joined = joined
        self.buf = b""
        self.state = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if self.state == 2:
            return
        self.buf += data
        if self.state == 0 and b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                self.joined.set_exception(ConnectionError(head[:80].decode(errors="replace")))
                return
            self.state = 1
            join = ["1", "1", f"rooms:lobby-{self.k % ROOMS}", "phx_join", {}]
            self.transport.write(masked_text(orjson.dumps(join)))
        if self.state == 1 and b'"phx_reply"' in self.buf:
            self.state = 2
            self.buf = b""
            self.joined.set_result(None)


async def open_clients(port: int, first: int, n: int, keep: list[Any]) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(100)

    async def one(k: int) -> None:
        async with gate:
            joined: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: JoinClient(k, joined), "127.0.0.1", port
            )
            await asyncio.wait_for(joined, 30)
            keep.append(transport)

    await asyncio.gather(*(one(first + i) for i in range(n)))


def snapshot(pid: int, prefix: str, i: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR1)
    while not os.path.exists(f"{prefix}.{i}.done"):
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(f"{prefix}.{i}")


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> None:
    for key in ("filename", "lineno"):
        stats = after.compare_to(before, key)
        size = sum(s.size_diff for s in stats) / n
        blocks = sum(s.count_diff for s in stats) / n
        print(f"tracemalloc by {key}: {size:,.0f} B / {blocks:.1f} blocks per connection")
        for s in stats[:20]:
            if s.size_diff < 8 * n:
                continue
            frame = s.traceback[0]
            where = frame.filename.split("site-packages/")[-1].split("/src/")[-1]
            line = f":{frame.lineno}" if key == "lineno" else ""
            print(f"  {s.size_diff / n:7,.0f} B {s.count_diff / n:5.2f} blocks  {where}{line}")


async def run(traced: bool) -> None:
    raise_nofile()
    port = free_port()
    args = [*SERVE, "--port", str(port)]
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "snap")
        if traced:
            env = dict(os.environ, SNAP=prefix)
            command = [sys.executable, "-c", TRACED, *args]
        else:
            env = dict(os.environ)
            command = [sys.executable, "-m", "roost", *args]
        proc = subprocess.Popen(command, env=env)
        keep: list[Any] = []
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
            rss: list[int] = []
            snaps: list[tracemalloc.Snapshot] = []
            opened = 0
            for step in STEPS:
                started = time.perf_counter()
                await open_clients(port, opened, step - opened, keep)
                took = time.perf_counter() - started
                if opened:
                    print(f"{step - opened} clients upgraded and joined in {took:.2f} s")
                opened = step
                await asyncio.sleep(1)
                rss.append(rss_kb(proc.pid))
                if traced and step in (STEPS[0], STEPS[-1]):
                    snaps.append(snapshot(proc.pid, prefix, len(snaps) + 1))
            per = [(rss[i + 1] - rss[i]) / (STEPS[i + 1] - STEPS[i]) for i in range(len(STEPS) - 1)]
            overall = (rss[-1] - rss[0]) / (STEPS[-1] - STEPS[0])
            print(f"node RSS at {STEPS} clients: {rss} KiB")
            steps = ", ".join(f"{p:.2f}" for p in per)
            print(
                f"RSS per idle joined connection: {steps} KiB per step, {overall:.2f} KiB overall"
            )
            if traced:
                report(snaps[0], snaps[1], STEPS[-1] - STEPS[0])
        finally:
            for transport in keep:
                transport.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def main() -> None:
    asyncio.run(run("--tracemalloc" in sys.argv[1:]))


if __name__ == "__main__":
    main()
