"""Scenario ``crossnode``: two nodes on one Redis, publishers on n1, subscribers on n2.

n1 broadcasts on one bench topic (the ``bench:*`` channel's ``fire``, paced at fixed
rates, then unpaced for saturation); n2 has N cheap counting clients joined to the
topic plus one latency probe in its own process (``probe``), joined last, so it sees
the latency of the last subscriber of each fan-out. Every payload carries its send
time in µs; the probe pulls the stamps out of the bytes it receives with one C regex
per read (no JSON), and latency is receipt time minus stamp, both on this machine's
wall clock.

Baseline in the same run, each round right before roost's: bare redis-py (asyncio,
hiredis) — a publisher process publishing the same stamped payloads at the same rate
(``redispub``), a subscriber on its own connection in this process (``get_message``),
latency taken the same way. Each rate runs ``rounds`` times, interleaved with the
baseline; the table shows per-round medians (a noisy 2-core machine).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .crosschildren import (
    Child,
    LocalSubscribers,
    SinkSubscribers,
    Subscribers,
    frame_len,
    start_probe,
)
from .crossphases import redis_phase, roost_phase
from .procs import Group, free_port, node_args, wait_http


@dataclass
class Config:
    rates: list[int]
    duration: float = 3.0
    subscribers: int = 100
    saturation: int = 10_000
    rounds: int = 3
    redis_url: str | None = None
    mode: str = "topic"
    out: Path = Path("bench-out")
    sink: bool = True  # batched sink process; False: per-frame asyncio clients in the bench
    sink_interval: float = 0.005


# -- processes -----------------------------------------------------------------------------
def start_node(procs: Group, node: str, redis_url: str, prefix: str, cfg: Config) -> int:
    port = free_port()
    log = cfg.out / f"crossnode-{node}.log"
    proc = procs.popen(
        node,
        node_args(port, node, "--redis", redis_url, "--pubsub-mode", cfg.mode,
                  "--redis-prefix", prefix),
        log,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/healthz")
    if proc.poll() is not None:
        raise RuntimeError(f"node {node} exited; see {log}")
    return port


@dataclass
class Result:
    config: dict[str, Any]
    rates: list[dict[str, Any]] = field(default_factory=list)
    saturation: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "rates": self.rates, "saturation": self.saturation}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


SUMMED = {"sent", "delivered", "received", "lost", "clients_with_loss", "extra", "samples"}


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One dict for several rounds: counts summed, every other number the median."""
    out: dict[str, Any] = {}
    for key, first in rounds[0].items():
        values = [r.get(key) for r in rounds]
        if isinstance(first, dict):
            out[key] = aggregate([v for v in values if isinstance(v, dict)])
        elif isinstance(first, int | float) or first is None:
            nums = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
            if not nums:
                out[key] = None
            elif key in SUMMED:
                out[key] = sum(nums)
            elif key.startswith("max"):
                out[key] = max(nums)
            else:
                out[key] = statistics.median(nums)
        else:
            out[key] = first
    return out


def pair(ours: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    roost, redis = aggregate(ours), aggregate(base)
    return {
        "roost": roost,
        "redis": redis,
        "p99_ratio": _ratio(roost["latency"]["p99_ms"], redis["latency"]["p99_ms"]),
        "rounds": {"roost": ours, "redis": base},
    }


async def measure(cfg: Config, redis_url: str, procs: Group, say: Callable[[str], None]) -> Result:
    from roost.client import Client

    prefix = f"roostbench{os.getpid()}"
    baseline_channel = f"{prefix}:baseline"
    n1 = start_node(procs, "n1", redis_url, prefix, cfg)
    n2 = start_node(procs, "n2", redis_url, prefix, cfg)
    flen = frame_len()
    result = Result(
        {
            "nodes": 2,
            "pubsub_mode": cfg.mode,
            "subscribers": cfg.subscribers,
            "probe_clients": 1,
            "probe": "own process, joined last (the last subscriber of each fan-out)",
            "counting_clients": (
                f"batched sink process, reads every {cfg.sink_interval * 1000:g} ms"
                if cfg.sink
                else "per-frame asyncio protocols in the bench process"
            ),
            "duration_s": cfg.duration,
            "rounds": cfg.rounds,
            "rates": cfg.rates,
            "saturation_messages": cfg.saturation,
            "redis_saturation_messages": cfg.saturation * 5,
            "frame_bytes": flen,
            "redis": "private redis-server" if cfg.redis_url is None else "given URL",
            "aggregate": "per-round medians (counts summed over rounds)",
        }
    )
    subs: Subscribers
    if cfg.sink:
        subs = await SinkSubscribers.start(procs, n2, cfg.subscribers, cfg.sink_interval)
    else:
        subs = await LocalSubscribers.start(n2, cfg.subscribers)
    probe: Child | None = None
    try:
        probe = await start_probe(procs, n2)
        await asyncio.sleep(0.2)
        pids = dict(procs.pids)

        async def base_round(rate: int | None, count: int = 0) -> dict[str, Any]:
            return await redis_phase(
                redis_url, baseline_channel, pids, rate=rate, duration=cfg.duration, count=count
            )

        async with Client(f"ws://127.0.0.1:{n1}/socket") as control:
            ch = control.channel("bench:control")
            await ch.join()

            async def roost_round(rate: int | None, count: int = 0) -> dict[str, Any]:
                assert probe is not None
                return await roost_phase(
                    ch, subs, probe, flen, pids, rate=rate, duration=cfg.duration, count=count
                )

            say("warming up")
            warm = await roost_phase(ch, subs, probe, flen, pids, rate=500, duration=0.5)
            if warm["delivered"] == 0:
                raise RuntimeError(f"nothing crossed from n1 to n2; see {cfg.out}/crossnode-n*.log")
            await redis_phase(redis_url, baseline_channel, pids, rate=500, duration=0.5)
            for rate in cfg.rates:
                ours, base = [], []
                for i in range(cfg.rounds):
                    say(f"{rate} msg/s, round {i + 1}/{cfg.rounds}: bare redis-py, roost n1 -> n2")
                    base.append(await base_round(rate))
                    await asyncio.sleep(0.3)
                    ours.append(await roost_round(rate))
                    await asyncio.sleep(0.3)
                result.rates.append({"rate": rate, **pair(ours, base)})
            ours, base = [], []
            for i in range(cfg.rounds):
                say(f"saturation, round {i + 1}/{cfg.rounds}: bare redis-py, roost n1 -> n2")
                base.append(await base_round(None, cfg.saturation * 5))
                await asyncio.sleep(0.3)
                ours.append(await roost_round(None, cfg.saturation))
                await asyncio.sleep(0.3)
            sat = pair(ours, base)
            sat["messages_ratio"] = _ratio(
                sat["roost"]["messages_per_s"], sat["redis"]["messages_per_s"]
            )
            result.saturation = sat
    finally:
        await subs.close()
        if probe is not None:
            await probe.close()
        await asyncio.sleep(0.1)
    return result


def run(cfg: Config, timeout: float, say: Callable[[str], None] = print) -> Result:
    """Start Redis (unless given) and two nodes, measure, stop everything, whatever happens."""
    procs = Group()
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        redis_url = cfg.redis_url
        if redis_url is None:
            from .redisproc import RedisServer

            server = RedisServer().start()
            procs.add("redis", cast(int, server.pid), server.stop)
            redis_url = server.url
            say(f"private redis-server on {redis_url}")

        async def bounded() -> Result:
            return await asyncio.wait_for(measure(cfg, redis_url, procs, say), timeout)

        return asyncio.run(bounded())
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)
