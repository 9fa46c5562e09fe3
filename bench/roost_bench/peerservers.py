"""Starting one system of the ``peers`` scenario (or two instances of it) and firing it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from roost.protocol import V2, Encoded, ws_bytes

from .harness import (
    start_roost,
)
from .peersystems import EVENT, PAYLOAD, TOPIC, Config, System
from .procs import Group, free_port, wait_http, wait_port

Fire = Callable[[int], Awaitable[None]]
Paced = Callable[[float, float], Awaitable[int]]


@dataclass
class Running:
    port: int
    pids: dict[str, int]
    fire: Fire
    close: Callable[[], Awaitable[None]]
    #: ``paced(rate, duration)``: stamped messages at a fixed rate; returns how many.
    paced: Paced | None = None


def roost_frame() -> bytes:
    return ws_bytes(V2.broadcast(TOPIC, EVENT, Encoded.of(PAYLOAD)))


async def _http_fire(port: int) -> tuple[Fire, Paced, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))

    async def get(query: str) -> None:
        async with session.get(f"http://127.0.0.1:{port}/fire?{query}") as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"fire: HTTP {resp.status} {body[:100]!r}")

    async def fire(n: int) -> None:
        await get(f"count={n}")

    async def paced(rate: float, duration: float) -> int:
        await get(f"rate={rate}&duration={duration}")
        return round(rate * duration)

    return fire, paced, session.close


async def start_system(
    system: System, cfg: Config, peers: Path, redis_url: str | None, group: Group,
    name: str | None = None,
) -> Running:  # fmt: skip
    """Start one instance of ``system``, known to ``group`` as ``name`` (default its key)."""
    name = name or system.key
    port = free_port()
    log = cfg.out / f"peers-{name}.log"
    if system.key in ("roost", "roost-redis"):
        extra = ["--redis", str(redis_url), "--pubsub-mode", "topic"] if system.redis else []
        start_roost(group, port, name, log, *extra)
        from roost.client import Client

        client = Client(f"ws://127.0.0.1:{port}/socket")
        await client.connect()
        ch = client.channel("bench:control")
        await ch.join()

        async def fire_push(n: int) -> None:
            payload = {"topic": TOPIC, "event": EVENT, "payload": PAYLOAD, "count": n}
            reply = await ch.push("fire", payload, timeout=600)
            if not reply.ok:
                raise RuntimeError(f"fire refused: {reply.response}")

        async def paced_push(rate: float, duration: float) -> int:
            payload = {"topic": TOPIC, "event": EVENT, "stamp": True}
            payload.update(rate=rate, duration=duration)
            reply = await ch.push("fire", payload, timeout=600)
            if not reply.ok:
                raise RuntimeError(f"fire refused: {reply.response}")
            return int(reply.response["sent"])

        pids = {"server": group.pids[name]}
        return Running(port, pids, fire_push, client.close, paced_push)

    py = str(peers / ".venv" / "bin" / "python")
    assert redis_url is not None or system.key == "raw"
    args: list[str]
    if system.key == "raw":
        args = [sys.executable, "-m", "roost_bench.rawserver", str(port), roost_frame().hex()]
    elif system.key == "python-socketio":
        args = [py, str(peers / "socketio_server.py"), str(port), str(redis_url)]
    elif system.key == "node-socketio":
        args = ["node", str(peers / "node" / "server.js"), str(port), str(redis_url)]
    elif system.key.startswith("channels-"):
        layer = system.key.removeprefix("channels-")
        args = [py, str(peers / "channels_server.py"), str(port), str(redis_url), "--layer", layer]
    elif system.key == "broadcaster":
        args = [py, str(peers / "broadcaster_server.py"), str(port), str(redis_url)]
    else:
        raise ValueError(system.key)
    proc = group.popen(name, args, log, cwd=peers if system.needs else None)
    try:
        if system.key == "raw":
            await asyncio.to_thread(wait_port, port, 30)
        else:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 60)
    except TimeoutError:
        raise RuntimeError(f"did not start: {_tail(log)}") from None
    if proc.poll() is not None:
        raise RuntimeError(f"exited with {proc.returncode}: {_tail(log)}")
    fire, paced, close = await _http_fire(port)
    return Running(port, {"server": proc.pid}, fire, close, None if system.key == "raw" else paced)


async def start_pair(
    system: System, cfg: Config, peers: Path, redis_url: str | None, group: Group
) -> tuple[Running, list[str]]:
    """Two instances on one Redis: the subscribers' port is instance 2's, the trigger
    instance 1's; CPU is metered on both (``server`` is instance 2, which delivers)."""
    n1 = await start_system(system, cfg, peers, redis_url, group, f"{system.key}-n1")
    try:
        n2 = await start_system(system, cfg, peers, redis_url, group, f"{system.key}-n2")
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(n1.close(), 5)
        raise

    async def close() -> None:
        for r in (n1, n2):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.close(), 5)

    pids = {"server": n2.pids["server"], "server n1": n1.pids["server"]}
    pair = Running(n2.port, pids, n1.fire, close, n1.paced)
    return pair, [f"{system.key}-n1", f"{system.key}-n2"]


def _tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "(no output)"
    return "(no log)"
