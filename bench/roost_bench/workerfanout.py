"""Scenario ``workers-fanout``: one room, N subscribers, ``roost serve --workers 1`` vs ``2``.

A private redis-server; for each worker count W a fresh ``roost serve --workers W
--redis URL --echo`` (limits off, as in ``workers``; W = 1 is a plain node, no
supervisor) and N subscribers of ``echo:fanout`` in ``client_procs`` batched sink
processes (:mod:`.sink`), which the kernel spreads over the workers. A publisher process
(:mod:`.workerpub`) sends ``messages`` roost envelopes a round straight into Redis, as
``roost.publish`` does, so every worker gets every message from Redis and fans it out
to its own subscribers. A round ends when every subscriber has every frame (counted in
bytes: every frame of a run has the same size) or nothing moved for 3 s (what is missing
is lost).

The baseline is the same run with one worker (the ratios 2 / 1). With ``raw``, also one
process writing each frame to each transport (:mod:`.rawserver`) to the same sinks — no
limit here: frame by frame into sockets read every 5 ms, the kernel's receive queues fill
with one small buffer per frame and collapsing them costs more than the writes (see
docs/BENCHMARKS.md).

Two kinds of rounds: **burst** (``messages`` published as fast as Redis takes them: a
worker reads many from Redis at once and joins the frames of one read into one write per
subscriber) and **paced** (``rate`` a second: about one frame per write).

Reported per configuration (median of ``rounds``): deliveries/s (first publish to the last
byte counted), and CPU-seconds per million deliveries of the workers (summed), the
supervisor, Redis and the load processes (sinks, publisher, this one) — the load runs on
the same cores as the server, so its CPU is counted too. Then the ratios 2 / 1 worker.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from roost.protocol import V2, Encoded, ws_bytes

from . import workergroup as wg
from .crosschildren import Child
from .harness import cpu_seconds, machine, sigterm_as_interrupt
from .procs import Group, free_port, wait_port
from .redisproc import RedisServer, private_redis
from .workerpub import EVENT, PAYLOAD

TOPIC = "echo:fanout"
Fire = Callable[[int, float], Coroutine[Any, Any, float]]  # M at R/s (0: burst); its start


@dataclass
class Config:
    subscribers: int = 1000
    workers: tuple[int, ...] = (1, 2)
    messages: int = 10_000  # a burst round
    rate: float = 200.0  # a paced round: msg/s (0: no paced rounds)
    paced_seconds: float = 5.0
    rounds: int = 5
    client_procs: int = 2
    raw: bool = False
    out: Path = Path("bench-out")


def frame() -> bytes:
    return ws_bytes(V2.broadcast(TOPIC, EVENT, Encoded.of(PAYLOAD)))


async def start_sinks(group: Group, port: int, counts: list[int], tag: str) -> list[Child]:
    sinks = []
    for k, count in enumerate(counts):
        sinks.append(
            await Child.start(
                group,
                f"{tag}-sink{k + 1}",
                "roost_bench.sink",
                "127.0.0.1",
                str(port),
                TOPIC,
                str(count),
            )
        )
    return sinks


async def one_round(
    sinks: list[Child], fire: Fire, pids: dict[str, int], n: int, m: int, rate: float = 0.0
) -> dict[str, Any]:
    flen = len(frame())
    for s in sinks:
        if await s.command("reset") != b"ok":
            raise RuntimeError("a sink did not reset")
    pids = {**pids, "bench": 0}
    servers = [p for k, p in pids.items() if k.startswith("w") or k == "raw"]
    k0 = [kernel_counts(p) for p in servers]
    c0 = {k: cpu_seconds(p or None) for k, p in pids.items()}
    t0 = await fire(m, rate)
    cap = max(60.0, n * m / 200_000)
    answers = await asyncio.gather(
        *(s.command(f"report {m * flen} {cap}", cap + 10) for s in sinks)
    )
    c1 = {k: cpu_seconds(p or None) for k, p in pids.items()}
    k1 = [kernel_counts(p) for p in servers]
    user, system, writes = (sum(b[i] - a[i] for a, b in zip(k0, k1, strict=True)) for i in range(3))
    reports = [orjson.loads(a) for a in answers]
    counts = [c for r in reports for c in r["counts"]]
    delivered = sum(c // flen for c in counts)
    window = max(r["last_change"] for r in reports) - t0
    cpu = {k: round(c1[k] - c0[k], 3) for k in pids}
    per_m = 1e6 / delivered if delivered else float("nan")
    workers = sum(v for k, v in cpu.items() if k.startswith("w") or k == "raw")
    load = sum(v for k, v in cpu.items() if "sink" in k or k in ("publisher", "bench"))
    return {
        "messages": m,
        "expected": n * m,
        "delivered": delivered,
        "lost": n * m - delivered,
        "window_s": window,
        "deliveries_per_s": delivered / window if window > 0 else None,
        "cpu_s": cpu,
        "server_per_delivery": {
            "writes": writes / delivered if delivered else None,
            "user_us": user * per_m,
            "sys_us": system * per_m,
        },
        "cpu_s_per_m": {
            "server": workers * per_m,
            "supervisor": cpu.get("supervisor", 0.0) * per_m,
            "redis": cpu.get("redis", 0.0) * per_m,
            "load": load * per_m,
        },
    }


def summary(done: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "deliveries_per_s": statistics.median(r["deliveries_per_s"] or 0 for r in done),
        "cpu_s_per_m": {
            k: statistics.median(r["cpu_s_per_m"][k] for r in done) for k in done[0]["cpu_s_per_m"]
        },
        "server_per_delivery": {
            k: statistics.median(r["server_per_delivery"][k] or 0 for r in done)
            for k in done[0]["server_per_delivery"]
        },
        "lost": sum(r["lost"] for r in done),
        "rounds": done,
    }


def kernel_counts(pid: int) -> tuple[float, float, int]:
    """User and system CPU seconds and write syscalls (/proc/PID/stat, /proc/PID/io)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        io = Path(f"/proc/{pid}/io").read_text()
        syscw = int(io.split("syscw:", 1)[1].split()[0])
        return int(fields[11]) / tick, int(fields[12]) / tick, syscw
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0, 0


async def rounds(
    cfg: Config, sinks: list[Child], fire: Fire, pids: dict[str, int], say: Callable[[str], None],
    label: str, paced: bool,
) -> dict[str, Any]:  # fmt: skip
    n = cfg.subscribers
    await one_round(sinks, fire, pids, n, min(200, cfg.messages))  # warm-up
    phases = [("burst", cfg.messages, 0.0)]
    if paced and cfg.rate > 0:
        phases.append(("paced", max(1, round(cfg.rate * cfg.paced_seconds)), cfg.rate))
    out: dict[str, Any] = {"label": label}
    for phase, m, rate in phases:
        done = []
        for i in range(cfg.rounds):
            how = f"at {rate:g}/s" if rate else "as fast as they go"
            say(f"{label}: {phase} round {i + 1}/{cfg.rounds}, {m} messages {how}")
            done.append(await one_round(sinks, fire, pids, n, m, rate))
            await asyncio.sleep(0.3)
        out[phase] = {"messages": m, "rate": rate or None, **summary(done)}
    split: Counter[str] = Counter()
    for s in sinks:
        split.update(orjson.loads(await s.command("nodes")))
    out["split"] = {wg.short(k) if k != "?" else "raw": v for k, v in sorted(split.items())}
    return out


async def run_raw(cfg: Config, group: Group, say: Callable[[str], None]) -> dict[str, Any]:
    port = free_port()
    args = [sys.executable, "-m", "roost_bench.rawserver", str(port), frame().hex()]
    proc = group.popen("raw", args)
    wait_port(port)
    sinks = await start_sinks(group, port, wg_shares(cfg), "raw")

    async def fire(m: int, rate: float) -> float:
        t0 = time.time()
        url = f"http://127.0.0.1:{port}/fire?count={m}"
        await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=120).read())
        return t0

    pids = {"raw": proc.pid, **{f"sink{k + 1}": s.proc.pid for k, s in enumerate(sinks)}}
    try:
        return await rounds(cfg, sinks, fire, pids, say, "raw limit (1 process)", paced=False)
    finally:
        for s in sinks:
            await s.close()
            group.forget(s.name)
        group.stop("raw")


async def run_workers(
    cfg: Config, workers: int, redis: RedisServer, group: Group, say: Callable[[str], None]
) -> dict[str, Any]:
    port = free_port()
    log = cfg.out / f"workers-fanout-w{workers}.log"
    server = wg.start(group, port, workers, redis.url, log, "--echo")
    sinks = await start_sinks(group, port, wg_shares(cfg), f"w{workers}")
    pub = await Child.start(group, "publisher", "roost_bench.workerpub", redis.url, TOPIC)

    async def fire(m: int, rate: float) -> float:
        cmd = f"pace {m} {rate}" if rate else f"pub {m}"
        return float(orjson.loads(await pub.command(cmd, 120 + m / (rate or 1000)))["t0"])

    pids = dict(wg.worker_pids(log, workers, server))
    if workers > 1:
        pids["supervisor"] = server
    pids["redis"] = cast(int, redis.pid)
    pids["publisher"] = pub.proc.pid
    pids.update({f"sink{k + 1}": s.proc.pid for k, s in enumerate(sinks)})
    try:
        return await rounds(
            cfg, sinks, fire, pids, say, f"roost serve --workers {workers}", paced=True
        )
    finally:
        await pub.close()
        group.forget("publisher")
        for s in sinks:
            await s.close()
            group.forget(s.name)
        group.stop("server")


def wg_shares(cfg: Config) -> list[int]:
    n, k = cfg.subscribers, cfg.client_procs
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run(cfg: Config, timeout: float, say: Callable[[str], None] = print) -> dict[str, Any]:
    group = Group()
    cfg.out.mkdir(parents=True, exist_ok=True)
    with sigterm_as_interrupt():
        try:
            redis = private_redis(group)

            async def measure() -> dict[str, Any]:
                out: dict[str, Any] = {}
                if cfg.raw:
                    out["raw"] = await run_raw(cfg, group, say)
                for w in cfg.workers:
                    out[f"w{w}"] = await run_workers(cfg, w, redis, group, say)
                return out

            async def bounded() -> dict[str, Any]:
                return await asyncio.wait_for(measure(), timeout)

            configs = asyncio.run(bounded())
        finally:
            group.stop_all()
    ratios: dict[str, Any] = {}
    one, two = configs.get("w1"), configs.get("w2")
    for phase in ("burst", "paced"):
        if one and two and phase in one and phase in two:
            a, b = one[phase], two[phase]
            ratios[phase] = {
                "deliveries_per_s_2_over_1": _ratio(b["deliveries_per_s"], a["deliveries_per_s"]),
                "server_cpu_s_per_m_2_over_1": _ratio(
                    b["cpu_s_per_m"]["server"], a["cpu_s_per_m"]["server"]
                ),
            }
    return {
        "scenario": "workers-fanout",
        "config": {
            "subscribers": cfg.subscribers,
            "workers": list(cfg.workers),
            "messages_per_round": cfg.messages,
            "paced_rate": cfg.rate,
            "paced_messages": round(cfg.rate * cfg.paced_seconds),
            "rounds": cfg.rounds,
            "client_procs": cfg.client_procs,
            "topic": TOPIC,
            "frame_bytes": len(frame()),
            "publisher": "envelopes PUBLISHed into Redis by a separate process (roost.publish's "
            "path): burst = pipelined batches of 100 as fast as Redis takes them; paced = "
            "the messages due each ms in one round trip",
            "raw": "one process writing one pre-encoded frame per subscriber per message, "
            "yielding between messages (no coalescing): the per-frame write limit",
            "load_note": "sinks, publisher and bench share the machine's cores with the server; "
            "their CPU is reported as 'load'",
        },
        "machine": machine(),
        "configs": configs,
        "ratios": ratios,
    }
