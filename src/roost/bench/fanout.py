"""Scenario ``fanout``: one node, one room, N subscribers; deliveries per second.

Baseline in the same run: the raw limit (``rawserver``), a bare asyncio server writing
one pre-encoded frame to each transport, measured with the same clients.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..protocol import V2, Encoded, ws_bytes
from .loadclient import close_all, join_frame, open_clients, wait_bytes
from .procs import free_port, roost_node, spawn, stop, wait_port

TOPIC = "bench:fanout"
PAYLOAD = {"user": "al", "body": "hello world, from roost", "id": "018c2a"}


def broadcast_frame() -> bytes:
    return ws_bytes(V2.broadcast(TOPIC, "new:msg", Encoded.of(PAYLOAD)))


@dataclass
class FanoutResult:
    server: str
    clients: int
    messages: int
    rates: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "clients": self.clients,
            "messages": self.messages,
            "rates": self.rates,
            "median": self.median,
            "best": self.best,
        }


async def _measure(
    port: int, clients_n: int, messages: int, rounds: int, fire: Any, server: str
) -> FanoutResult:
    frame_len = len(broadcast_frame())
    clients = await open_clients("127.0.0.1", port, "/socket/websocket?vsn=2.0.0", clients_n)
    result = FanoutResult(server, clients_n, messages)
    try:
        join = join_frame(TOPIC)
        for c in clients:
            c.send(join)
        if not await wait_bytes(clients, 1, 30):
            raise RuntimeError("not every client got its join reply")
        await asyncio.sleep(0.2)
        for _ in range(rounds):
            for c in clients:
                c.received = 0
            t0 = time.perf_counter()
            await fire(messages)
            if not await wait_bytes(clients, messages * frame_len, 120):
                raise RuntimeError("deliveries missing")
            elapsed = time.perf_counter() - t0
            result.rates.append(clients_n * messages / elapsed)
            await asyncio.sleep(0.2)
    finally:
        close_all(clients)
        await asyncio.sleep(0.2)
    return result


async def run_roost(clients_n: int, messages: int, rounds: int) -> FanoutResult:
    from ..client import Client

    port = free_port()
    proc = roost_node(port, "bench")
    try:
        async with Client(f"ws://127.0.0.1:{port}/socket") as control:
            ch = control.channel("bench:control")
            await ch.join()

            async def fire(n: int) -> None:
                reply = await ch.push(
                    "fire",
                    {"topic": TOPIC, "event": "new:msg", "payload": PAYLOAD, "count": n},
                    timeout=120,
                )
                assert reply.ok, reply

            return await _measure(port, clients_n, messages, rounds, fire, "roost")
    finally:
        stop(proc)


async def run_raw(clients_n: int, messages: int, rounds: int) -> FanoutResult:
    port = free_port()
    proc = spawn(["-m", "roost.bench.rawserver", str(port), broadcast_frame().hex()])
    try:
        wait_port(port)
        async with aiohttp.ClientSession() as session:

            async def fire(n: int) -> None:
                async with session.get(f"http://127.0.0.1:{port}/fire?count={n}") as resp:
                    await resp.read()

            return await _measure(port, clients_n, messages, rounds, fire, "raw limit")
    finally:
        stop(proc)


async def run(clients: list[int], messages: int, rounds: int) -> list[FanoutResult]:
    results = []
    for n in clients:
        results.append(await run_raw(n, messages, rounds))
        results.append(await run_roost(n, messages, rounds))
    return results
