"""The ``crossnode`` subscribers on n2: the probe and sink child processes, or local clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time

import orjson

from roost.protocol import V2, ws_bytes

from .channel import now_us, stamped
from .loadclient import CountingClient, close_all, join_frame, open_clients, wait_bytes
from .procs import Group

TOPIC = "bench:crossnode"
EVENT = "new:msg"
WS_PATH = "/socket/websocket?vsn=2.0.0"
IDLE = 3.0  # a phase ends when nothing arrived for this long (what is missing is lost)


def frame_len() -> int:
    """Bytes of one stamped broadcast frame (the same for every message of a run)."""
    return len(ws_bytes(V2.broadcast(TOPIC, EVENT, stamped(now_us()))))


class Child:
    """A helper process driven over its stdin/stdout, one line per command and answer."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc

    @classmethod
    async def start(cls, procs: Group, name: str, module: str, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,  # a probe's report is one line: every latency of a round
        )  # fmt: skip
        procs.add(name, proc.pid, lambda: _kill(proc.pid))
        child = cls(name, proc)
        if await child._line(60) != b"ready":
            raise RuntimeError(f"the {name} process did not get ready")
        return child

    async def _line(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the {self.name} process exited")
        return line.strip()

    async def command(self, cmd: str, timeout: float = 30) -> bytes:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line(timeout)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                await asyncio.wait_for(self.proc.wait(), 2)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def start_probe(procs: Group, port: int) -> Child:
    """The latency probe process (``roost_bench.probe``), joined to the bench topic."""
    return await Child.start(procs, "probe", "roost_bench.probe", "127.0.0.1", str(port), TOPIC)


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


class Progress:
    """Polls the clients' byte counters; remembers when the total last moved."""

    def __init__(self, clients: list[CountingClient]) -> None:
        self.clients = clients
        self.total = 0
        self.last_change = time.time()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.last_change = time.time()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            total = sum(c.received for c in self.clients)
            if total != self.total:
                self.total = total
                self.last_change = time.time()
            await asyncio.sleep(0.002)

    async def finish(self, target: int, cap: float) -> None:
        """Until every client got ``target`` bytes, nothing moved for IDLE s, or ``cap`` s."""
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            if all(c.received >= target for c in self.clients):
                break
            if time.time() - self.last_change > IDLE:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.003)  # one more poll, so last_change is current
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Subscribers:
    """The counting subscribers on n2: ``reset`` before a phase, ``finish`` after it."""

    pid: int | None = None

    async def reset(self) -> None:
        raise NotImplementedError

    async def finish(self, target: int, cap: float) -> tuple[list[int], float]:
        """Bytes per client and the wall time the total last moved."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class LocalSubscribers(Subscribers):
    """Per-frame asyncio clients in the bench process (each frame wakes the loop)."""

    def __init__(self, clients: list[CountingClient]) -> None:
        self.clients = clients
        self.progress: Progress | None = None

    @classmethod
    async def start(cls, port: int, count: int) -> LocalSubscribers:
        clients = await open_clients("127.0.0.1", port, WS_PATH, count)
        join = join_frame(TOPIC)
        for c in clients:
            c.send(join)
        if not await wait_bytes(clients, 1, 30):
            close_all(clients)
            raise RuntimeError("not every subscriber got its join reply")
        return cls(clients)

    async def reset(self) -> None:
        for c in self.clients:
            c.received = 0
        self.progress = Progress(self.clients)
        self.progress.start()

    async def finish(self, target: int, cap: float) -> tuple[list[int], float]:
        assert self.progress is not None
        await self.progress.finish(target, cap)
        return [c.received for c in self.clients], self.progress.last_change

    async def close(self) -> None:
        close_all(self.clients)


class SinkSubscribers(Subscribers):
    """The batched sink (``roost_bench.sink``) in its own process."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.pid = child.proc.pid

    @classmethod
    async def start(cls, procs: Group, port: int, count: int, interval: float) -> SinkSubscribers:
        child = await Child.start(
            procs, "clients", "roost_bench.sink", "127.0.0.1", str(port), TOPIC, str(count),
            "--interval", str(interval),
        )  # fmt: skip
        return cls(child)

    async def reset(self) -> None:
        if await self.child.command("reset") != b"ok":
            raise RuntimeError("the sink did not reset")

    async def finish(self, target: int, cap: float) -> tuple[list[int], float]:
        report = orjson.loads(await self.child.command(f"report {target} {cap}", cap + 10))
        return list(report["counts"]), float(report["last_change"])

    async def close(self) -> None:
        await self.child.close()
