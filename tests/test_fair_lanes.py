"""One client's join flood never costs another user's messages (issue 27, fair lanes).

Two nodes on one real redis-server. A user on node a sends 300 messages at 50/s to
listeners on node a and on node b; each message's latency (sent → received, per listener)
is measured first without a flood (the baseline, same run) and then while 20 sockets from
one address (another process: tests/load/join_flood.py) join 100 rooms each at once and
then churn 10 joins a second each, all within the per-socket limits. Every message must
arrive, and the flood may add no more than a small margin to the p99 (the issue's bar:
another user's p99 ≤ 50 ms on both nodes; before: p50 0.50 s, p99 0.93 s).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from roost.client import Client

from support import ServerProcess, start_server

FLOOD = Path(__file__).parent / "load" / "join_flood.py"
# Seconds the flood may add to another user's p99: the bar (50 ms) for one address's
# flood; a flood from many addresses (no per-address budget: 3,200 joins all admitted) is
# carried by the lanes alone, and on a CI machine running other test files at once it is
# given 150 ms (10-18 ms measured alone).
MARGIN = {"20": 0.050, "0": 0.150}
# the per-client limits on (the other tests turn them off: every client is 127.0.0.1)
LIMITS = ("--conn-rate", "10", "--max-connections-per-ip", "500")


@pytest.fixture(params=["20", "0"], ids=["per-ip-budget", "lanes-only"])
def two_nodes(redis_server: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """``lanes-only``: no per-address join budget (a flood from many addresses looks so):
    the join lane and the publisher's own connection alone keep the others' latency."""
    limits = (*LIMITS, "--join-rate-per-ip", request.param)
    nodes = [
        start_server(
            "--redis", redis_server.url, "--msg-rate", "0", *limits, node=name, log_dir=tmp_path
        )
        for name in ("a", "b")
    ]
    yield nodes, MARGIN[request.param]
    for node in nodes:
        node.stop()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _chat_latencies(a: ServerProcess, b: ServerProcess, count: int) -> dict[str, Any]:
    """``count`` messages at 50/s from a sender on a; latencies at listeners on a and b."""
    room = f"rooms:fair-{time.monotonic_ns()}"
    arrived: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    listeners = []
    for name, node in (("a", a), ("b", b)):
        client = Client(node.ws_url, {"user": f"listen-{name}"})
        await client.connect()
        channel = client.channel(room, {"user": f"listen-{name}"})
        channel.on(
            "new:msg", lambda m, name=name: arrived[name].setdefault(m["body"], time.monotonic())
        )
        await channel.join()
        listeners.append(client)
    sender = Client(a.ws_url, {"user": "sender"})
    await sender.connect()
    ch = sender.channel(room, {"user": "sender"})
    await ch.join()
    sent: dict[str, float] = {}
    replies = []
    for i in range(count):
        body = f"m{i}"
        sent[body] = time.monotonic()
        replies.append(asyncio.ensure_future(ch.push("new:msg", {"body": body})))
        await asyncio.sleep(0.02)
    results = await asyncio.gather(*replies)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(len(v) < count for v in arrived.values()):
        await asyncio.sleep(0.05)
    for client in [*listeners, sender]:
        await client.close()
    out: dict[str, Any] = {"refused": sum(1 for r in results if not r.ok)}
    for name, got in arrived.items():
        lat = [got[b] - sent[b] for b in sent if b in got]
        out[name] = {
            "missing": count - len(lat),
            "p50": statistics.median(lat) if lat else None,
            "p99": _quantile(lat, 0.99) if lat else None,
            "max": max(lat) if lat else None,
        }
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}ms"


async def test_a_join_flood_does_not_delay_other_users_messages(two_nodes: Any) -> None:
    (a, b), margin = two_nodes
    baseline = await _chat_latencies(a, b, 300)
    flood = subprocess.Popen(
        [sys.executable, str(FLOOD), a.ws_url, "20", "100", "10", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await asyncio.sleep(0.2)  # the burst is on its way
        flooded = await _chat_latencies(a, b, 300)
        out, err = await asyncio.to_thread(flood.communicate, timeout=120)
    finally:
        if flood.poll() is None:
            flood.kill()
    flood_figures = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"err": err}
    print(
        "FIGURES join flood:",
        " ".join(
            f"{node}: base p50 {_fmt(baseline[node]['p50'])} p99 {_fmt(baseline[node]['p99'])}"
            f" / flood p50 {_fmt(flooded[node]['p50'])} p99 {_fmt(flooded[node]['p99'])}"
            f" max {_fmt(flooded[node]['max'])}"
            for node in ("a", "b")
        ),
        "flood:", flood_figures,
    )  # fmt: skip
    for node in ("a", "b"):
        assert baseline[node]["missing"] == flooded[node]["missing"] == 0, (baseline, flooded)
        assert flooded[node]["p99"] <= baseline[node]["p99"] + margin, (node, baseline, flooded)
    assert flooded["refused"] == 0
    assert flood_figures.get("attempted", 0) >= 2000, flood_figures


async def test_one_address_joins_draw_on_one_budget_over_its_sockets(local_server: Any) -> None:
    """Three sockets from one address, a budget of 4 joins saved up: the fifth join is
    refused at once ("rate limited"), whichever socket sends it; a rejoin later works."""
    from roost.brokers.memory import MemoryBroker
    from roost.channels import Limits
    from roost.chat import create_endpoint

    limits = Limits(join_rate_per_ip=0.5, join_burst_per_ip=4)
    server = await local_server(create_endpoint("fair", MemoryBroker(), limits=limits))
    clients = [Client(server.ws_url, {"user": f"u{i}"}) for i in range(3)]
    for c in clients:
        await c.connect()
    outcomes = []
    try:
        for i in range(6):
            channel = clients[i % 3].channel(f"rooms:budget{i}", {"user": f"u{i % 3}"})
            try:
                await channel.join(5.0)
                outcomes.append("ok")
            except Exception as exc:
                outcomes.append(getattr(exc, "response", {}).get("reason", repr(exc)))
    finally:
        for c in clients:
            await c.close()
    assert outcomes == ["ok"] * 4 + ["rate limited"] * 2, outcomes
