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

from roost.protocol import V2, Encoded, ws_bytes

from .loadclient import close_all, join_frame, open_clients, wait_bytes
from .procs import free_port, roost_node, spawn, terminate, wait_port

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
    from roost.client import Client

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
        terminate(proc)


async def run_raw(clients_n: int, messages: int, rounds: int) -> FanoutResult:
    port = free_port()
    proc = spawn(["-m", "roost_bench.rawserver", str(port), broadcast_frame().hex()])
    try:
        wait_port(port)
        async with aiohttp.ClientSession() as session:

            async def fire(n: int) -> None:
                async with session.get(f"http://127.0.0.1:{port}/fire?count={n}") as resp:
                    await resp.read()

            return await _measure(port, clients_n, messages, rounds, fire, "raw limit")
    finally:
        terminate(proc)


async def run(clients: list[int], messages: int, rounds: int) -> list[FanoutResult]:
    results = []
    for n in clients:
        results.append(await run_raw(n, messages, rounds))
        results.append(await run_roost(n, messages, rounds))
    return results


def measure(clients: list[int], messages: int, rounds: int) -> list[dict[str, Any]]:
    """Raw limit and roost for each subscriber count: one row each, with roost / raw."""
    results = asyncio.run(run(clients, messages, rounds))
    return [
        {"raw": raw.as_dict(), "roost": roost.as_dict(), "ratio": roost.median / raw.median}
        for raw, roost in zip(results[::2], results[1::2], strict=True)
    ]


TARGET = 0.85  # roost / raw limit at 1,000 subscribers (issue 8)


def table(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['raw']['clients']:>6} subscribers  raw {r['raw']['median']:>10,.0f}/s  "
        f"roost {r['roost']['median']:>10,.0f}/s  roost/raw {r['ratio']:.2f}"
        for r in rows
    ]


def plot(rows: list[dict[str, Any]], path: Any) -> bool:
    """Bars: roost beside the raw limit for each subscriber count."""
    from .harness import pyplot

    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['raw']['clients']:,} subscribers" for r in rows]
    xs = list(range(len(rows)))
    raw = [r["raw"]["median"] for r in rows]
    ours = [r["roost"]["median"] for r in rows]
    ax.bar([x - 0.2 for x in xs], raw, width=0.4, label="raw limit", color="tab:gray")
    ax.bar([x + 0.2 for x in xs], ours, width=0.4, label="roost", color="tab:orange")
    for x, r in zip(xs, rows, strict=True):
        ax.annotate(f"{r['ratio']:.2f} x", (x + 0.2, r["roost"]["median"]), ha="center",
                    va="bottom", fontsize=9)  # fmt: skip
    ax.set_xticks(xs, labels)
    ax.set_ylabel("deliveries/s (median of rounds)")
    ax.set_title("fan-out: one node, one room, one pre-encoded frame per subscriber")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
