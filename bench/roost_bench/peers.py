"""Scenario ``peers``: the fanout workload on roost, the raw limit and the peers, one run.

Workload (scenario 1's): one room, N subscribers (cheap counting clients, the same
for every server), a trigger that broadcasts M small chat messages; deliveries/s =
N x M / time from the trigger to the last byte. Every server runs alone on the
machine while measured, each with a private redis-server where it uses one:

- **raw limit**: a bare asyncio server writing one pre-encoded frame per transport;
- **roost**: one node, memory broker; **roost + Redis**: one node, ``--redis``
  (topic mode), like for like with the peers below, which all go through Redis;
- **python-socketio** + AsyncRedisManager on aiohttp;
- **Node socket.io** + @socket.io/redis-adapter;
- **Django Channels** + channels_redis, RedisPubSubChannelLayer and the core
  RedisChannelLayer, on uvicorn;
- **broadcaster** (Redis) + Starlette on uvicorn, one subscription per socket.

The peers' servers live in ``bench/peers/`` at the repository root and are installed by
``roost-bench peers --setup`` into ``bench/peers/.venv`` (Python, exact pins) and
``bench/peers/node/node_modules`` (``npm ci``), never into roost's environment. A peer
that is not installed or does not start is reported as skipped, with the reason.

Clients: roost and the raw limit speak Phoenix v2 JSON; socket.io peers Engine.IO 4
over WebSocket (:class:`EioClient`: handshake ``40``, ``join`` with an ack, pings
answered, then bytes counted); Django Channels and broadcaster plain WebSocket text
(the server sends ``{"joined":true}`` once subscribed). Each server's frame size is
learnt from one calibration message (every client must get the same bytes).

M is chosen per server from a warm-up round so that a round takes about ``round_s``
seconds (between ``min_messages`` and ``messages``): the slowest peers would otherwise
take minutes per round.

``cross_node`` (scenario 2's shape): every system that goes through Redis runs as two
instances on the same private Redis (roost: two ``python -m roost_bench.node --redis`` nodes,
topic mode; a peer: two server processes on different ports); the subscribers join
instance 2, the trigger fires on instance 1, and deliveries are counted on instance 2.
The raw limit and roost's memory broker have no second node and are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .eioclient import open_and_join
from .harness import (
    CpuMeter,
    Tally,
    close_clients,
    machine,
    raise_nofile,
    sigterm_as_interrupt,
    wait_delivered,
)
from .loadclient import CountingClient
from .peerlatency import latency_phase
from .peerservers import Running, start_pair, start_system
from .peersetup import node_ready, python_ready, setup
from .peersystems import IDLE, Config, System, default_peers_dir, label_for, systems_for
from .procs import Group


async def _round(
    run: Running, clients: Sequence[CountingClient], tally: Tally, flen: int, m: int,
    meter_pids: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    for c in clients:
        c.received = 0
    tally.reset()
    await asyncio.sleep(0.2)
    meter = CpuMeter(meter_pids)
    t0 = time.perf_counter()
    tally.last = t0
    await run.fire(m)
    t_fired = time.perf_counter()
    complete = await wait_delivered(clients, tally, m * flen, idle=IDLE, cap=300)
    elapsed = tally.last - t0
    cpu = meter.stop()
    delivered = sum(min(c.received // flen, m) for c in clients)
    expected = m * len(clients)
    return {
        "messages": m,
        "elapsed_s": elapsed,
        "fire_s": t_fired - t0,
        "delivered": delivered,
        "lost": expected - delivered,
        "complete": complete,
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else None,
        "cpu": cpu,
    }


async def calibrate(run: Running, clients: Sequence[CountingClient], tally: Tally) -> int:
    """Bytes one broadcast frame takes: fire one message, every client must get the same."""
    for c in clients:
        c.received = 0
    tally.reset()
    await run.fire(1)
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        if all(c.received for c in clients) and time.perf_counter() - tally.last > 0.3:
            break
        await asyncio.sleep(0.01)
    sizes = {c.received for c in clients}
    if len(sizes) != 1 or 0 in sizes:
        raise RuntimeError(f"calibration: clients got unequal or no bytes ({sorted(sizes)[:5]})")
    return sizes.pop()


async def measure_system(
    system: System, cfg: Config, peers: Path, redis_url: str | None, group: Group,
    say: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    if redis_url is not None and system.redis:
        await asyncio.to_thread(_flush, redis_url)
    url = redis_url if system.redis else None
    if cfg.cross_node:
        run, names = await start_pair(system, cfg, peers, url, group)
    else:
        run, names = await start_system(system, cfg, peers, url, group), [system.key]
    tally = Tally()
    clients: list[CountingClient] = []
    try:
        t0 = time.perf_counter()
        clients = await open_and_join(system, run.port, cfg.clients, tally)
        join_s = time.perf_counter() - t0
        await asyncio.sleep(0.3)
        flen = await calibrate(run, clients, tally)
        pids = dict(run.pids)
        if system.redis and "redis" in group.pids:
            pids["redis"] = group.pids["redis"]
        warm = await _round(run, clients, tally, flen, cfg.min_messages, pids)
        rate = warm["deliveries_per_s"] or 0
        m = int(rate * cfg.round_s / cfg.clients)
        m = max(cfg.min_messages, min(cfg.messages, m))
        say(
            f"{system.key}: {cfg.clients} clients joined in {join_s:.1f} s; frame {flen} B; "
            f"warm-up {rate:,.0f}/s -> {m} messages per round"
        )
        rounds = []
        for i in range(cfg.rounds):
            r = await _round(run, clients, tally, flen, m, pids)
            rounds.append(r)
            n1 = r["cpu"].get("server n1")
            say(
                f"{system.key} round {i + 1}/{cfg.rounds}: {r['deliveries_per_s'] or 0:,.0f} "
                f"deliveries/s (server CPU {r['cpu'].get('server', 0):.0%}"
                + ("" if n1 is None else f", instance 1 {n1:.0%}")
                + f", client {r['cpu'].get('bench client', 0):.0%})"
                + ("" if r["complete"] else f", LOST {r['lost']}")
            )
            await asyncio.sleep(0.2)
        latency = None
        if cfg.latency_s > 0 and run.paced is not None:
            latency = await latency_phase(run, clients, tally, cfg.latency_rate, cfg.latency_s)
            lat = latency["all_subscribers_ms"]
            say(
                f"{system.key} latency at {cfg.latency_rate:g} msg/s: every subscriber had a "
                f"message after p50 {lat['p50'] or 0:.2f} ms, max {lat['max'] or 0:.2f} ms "
                f"(lost {latency['lost']})"
            )
    finally:
        close_clients(clients)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.close(), 5)
        await asyncio.sleep(0.3)
        for name in names:
            group.stop(name)
    rates = [r["deliveries_per_s"] for r in rounds if r["deliveries_per_s"]]
    cpu_keys = rounds[0]["cpu"].keys()
    return {
        "system": system.key,
        "label": label_for(system, cfg),
        "status": "ok",
        "clients": cfg.clients,
        "frame_bytes": flen,
        "messages_per_round": m,
        "rates": rates,
        "median": statistics.median(rates) if rates else None,
        "best": max(rates) if rates else None,
        "lost": sum(r["lost"] for r in rounds),
        "cpu": {
            k: statistics.median([r["cpu"][k] for r in rounds if k in r["cpu"]]) for k in cpu_keys
        },
        "join_s": join_s,
        "rounds": rounds,
        "latency": latency,
    }


def _flush(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    try:
        r.flushall()
    finally:
        r.close()


def _skipped(system: System, reason: str) -> dict[str, Any]:
    return {"system": system.key, "label": system.label, "status": "skipped", "reason": reason}


def run(
    cfg: Config, timeout: float, do_setup: bool, say: Callable[[str], None] = print
) -> dict[str, Any]:
    peers = cfg.peers_dir or default_peers_dir()
    systems = systems_for(cfg)
    failures: dict[str, str | None] = {"python": None, "node": None}
    if do_setup:
        failures = setup(peers, say)
    if failures["python"] is None:
        failures["python"] = python_ready(peers)
    if failures["node"] is None:
        failures["node"] = node_ready(peers)
    raise_nofile()
    group = Group()
    results: list[dict[str, Any]] = []
    with sigterm_as_interrupt():
        try:
            redis_url = cfg.redis_url
            if redis_url is None and any(s.redis for s in systems):
                from .redisproc import RedisServer

                server = RedisServer().start()
                group.add("redis", server.pid or 0, server.stop)
                redis_url = server.url
                say(f"private redis-server on {redis_url}")

            async def main() -> None:
                for s in systems:
                    why = failures.get(s.needs) if s.needs else None
                    if why:
                        say(f"{s.key}: skipped ({why})")
                        results.append(_skipped(s, why))
                        continue
                    try:
                        results.append(await measure_system(s, cfg, peers, redis_url, group, say))
                    except (RuntimeError, OSError, TimeoutError, aiohttp.ClientError) as exc:
                        say(f"{s.key}: failed ({exc})")
                        results.append(_skipped(s, f"failed: {exc}"))

            async def bounded() -> None:
                await asyncio.wait_for(main(), timeout)

            asyncio.run(bounded())
        finally:
            group.stop_all()
    return {
        "scenario": "peers",
        "config": {
            "clients": cfg.clients,
            "cross_node": cfg.cross_node,
            "layout": (
                "two instances per system on one Redis: subscribers on instance 2, "
                "trigger on instance 1"
                if cfg.cross_node
                else "one instance per system"
            ),
            "rooms": 1,
            "max_messages_per_round": cfg.messages,
            "min_messages_per_round": cfg.min_messages,
            "target_round_s": cfg.round_s,
            "rounds": cfg.rounds,
            "latency_rate": cfg.latency_rate,
            "latency_s": cfg.latency_s,
            "redis": "private redis-server" if cfg.redis_url is None else "given URL",
            "aggregate": "median of the rounds",
        },
        "machine": machine(),
        "versions": versions(peers),
        "systems": results,
        "ratios": ratios(results),
    }


def versions(peers: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (peers / "requirements.txt").read_text().splitlines():
            if "==" in line and not line.startswith(("#", " ")):
                # "name==1.2.3 ; marker \" in the hashed lock: the version is the first word
                name, ver = line.split("==", 1)
                out[name.strip()] = ver.replace(";", " ").split()[0]
    with contextlib.suppress(OSError, ValueError):
        import json

        deps = json.loads((peers / "node" / "package.json").read_text())["dependencies"]
        out.update({f"npm:{k}": v for k, v in deps.items()})
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    from importlib.metadata import version

    out["roost"] = version("roost")
    out["aiohttp (roost)"] = version("aiohttp")
    return out


TARGETS = {"raw": 0.85, "python-socketio": 5.0, "node-socketio": 1.2}


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["system"]: r for r in results if r.get("status") == "ok"}
    out: dict[str, Any] = {}
    for ours in ("roost", "roost-redis"):
        if ours not in by:
            continue
        mine = by[ours]["median"]
        row: dict[str, Any] = {}
        for key, r in by.items():
            if key != ours and r["median"]:
                ratio = mine / r["median"]
                row[key] = {"ratio": ratio}
                if key in TARGETS:
                    row[key]["target"] = TARGETS[key]
                    row[key]["met"] = ratio >= TARGETS[key]
        out[ours] = row
    return out
