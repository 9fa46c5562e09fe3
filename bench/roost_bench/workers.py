"""Scenario ``workers``: idle joined clients over ``roost serve --workers N``, then a storm.

A private redis-server and ``roost serve --workers W --redis URL --echo`` (limits off:
``--max-connections 200000 --join-rate 0 --msg-rate 0 --conn-rate 0
--max-connections-per-ip 0 --idle-timeout 3600``). The clients live in several client
processes (:mod:`.fleet`, each with its own loopback source addresses 127.0.0.2, .3...,
so that no address runs out of ephemeral ports), driven over stdin/stdout. They join
``echo:idle<k>`` (``room_size`` a room; a join is one Redis subscription per new room
on a worker) or, with ``channel="rooms"``, the chat's ``rooms:idle<k>`` (also a history
read, presence and ``user:entered`` through Redis).

Measured:

- **RSS per connection**: VmRSS of every worker after a warm-up, after the upgrades, and
  after every client joined its room (``room_size`` clients a room); the sum of the
  workers' deltas / clients, and each worker's delta / its clients;
- **upgrades/s and joins/s** over all client processes (first start to last answer);
  every join reply is checked ok, and the group's /metrics must count every channel;
- **CPU at rest** of each process (workers, supervisor, Redis, the clients) over
  ``rest`` seconds, then over as long with a Phoenix heartbeat every ``heartbeat`` s
  per client, spread evenly;
- **the split**: how many clients the kernel gave each worker (SO_REUSEPORT);
- **the storm** (``storm``): SIGKILL one worker with every client joined; the supervisor
  starts it again, its clients see their connection end and reconnect at once with
  phoenix.js's back-off and rejoin. Reported: the time from the kill until every client
  is joined again, failed attempts, when the worker was ready again (supervisor log),
  and the split afterwards;
- **the balance** (``balance_timeout`` > 0): after the storm, the split every second until
  every worker is within 20 % of the mean again (roost's ``--worker-balance``): when, and
  how many sockets the workers closed for it.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from . import workergroup as wg
from .crosschildren import Child
from .harness import CpuMeter, machine, rss_kb, sigterm_as_interrupt
from .procs import Group, free_port
from .redisproc import private_redis
from .workerstorm import channels_counted, storm

PORTS_PER_IP = 20_000  # of the 28k ephemeral ports of an address
WARMUP = 100


@dataclass
class Config:
    clients: int = 100_000
    workers: int = 2
    client_procs: int = 4
    room_size: int = 10
    channel: str = "echo"  # echo: --echo's channel; rooms: the chat (presence, user:entered)
    rest: float = 10.0
    heartbeat: float = 30.0  # 0: no heartbeat phase
    concurrency: int = 200  # handshakes in flight per client process
    join_concurrency: int = 0  # joins in flight per client process (0: every join at once)
    storm: bool = True
    storm_timeout: float = 120.0
    balance_timeout: float = 300.0  # after the storm: until the split is even again (0: skip)
    out: Path = Path("bench-out")


def shares(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


def source_ips(counts: list[int]) -> list[list[str]]:
    """Each client process's own addresses, 127.0.0.2 upwards."""
    out, nxt = [], 2
    for c in counts:
        k = max(1, math.ceil(c / PORTS_PER_IP))
        if nxt + k > 255:
            raise ValueError("more clients than 127.0.0.2-254 have ports for")
        out.append([f"127.0.0.{nxt + i}" for i in range(k)])
        nxt += k
    return out


class Run:
    """The processes of one run and the readings the phases share."""

    def __init__(self, cfg: Config, n: int, group: Group, say: Callable[[str], None]) -> None:
        self.cfg, self.n, self.group, self.say = cfg, n, group, say
        self.port = free_port()
        self.log = cfg.out / "workers-server.log"
        self.children: list[Child] = []
        self.counts = shares(n, cfg.client_procs)
        self.server_pid = 0
        self.redis_pid = 0

    def workers(self) -> dict[str, int]:
        return wg.worker_pids(self.log, self.cfg.workers, self.server_pid)

    def pids(self) -> dict[str, int]:
        out = dict(self.workers())
        if self.cfg.workers > 1:
            out["supervisor"] = self.server_pid
        out["redis"] = self.redis_pid
        for k, child in enumerate(self.children):
            out[f"clients{k + 1}"] = child.proc.pid
        return out

    def rss(self) -> dict[str, int]:
        return {name: rss_kb(pid) for name, pid in self.workers().items()}

    async def each(self, cmd: str, timeout: float = 330) -> list[dict[str, Any]]:
        answers = await asyncio.gather(*(c.command(cmd, timeout) for c in self.children))
        return [orjson.loads(a) for a in answers]

    async def split(self) -> dict[str, int]:
        """Clients joined on each worker (every worker named, 0 included)."""
        total: Counter[str] = Counter({w: 0 for w in self.workers()})
        for st in await self.each("status"):
            total.update({wg.short(k): v for k, v in st["by_node"].items()})
        return dict(
            sorted(total.items(), key=lambda kv: int(kv[0][1:]) if kv[0][1:].isdigit() else 0)
        )

    async def start(self, redis_url: str) -> None:
        extra = ("--echo",) if self.cfg.channel == "echo" else ()
        self.server_pid = wg.start(self.group, self.port, self.cfg.workers, redis_url, self.log,
                                   *extra)  # fmt: skip
        ips = source_ips(self.counts)
        first = 0
        for k, (count, addrs) in enumerate(zip(self.counts, ips, strict=True)):
            self.children.append(
                await Child.start(
                    self.group,
                    f"clients{k + 1}",
                    "roost_bench.fleet",
                    str(self.port),
                    "--ips",
                    ",".join(addrs),
                    "--first",
                    str(first),
                    "--count",
                    str(count),
                    "--room-size",
                    str(self.cfg.room_size),
                    "--channel",
                    self.cfg.channel,
                )
            )
            first += count


def _rate(n: int, answers: list[dict[str, Any]]) -> tuple[float, float]:
    t0 = min(a["t0"] for a in answers)
    t1 = max(a["t1"] for a in answers)
    return t1 - t0, (n / (t1 - t0) if t1 > t0 else math.nan)


async def measure(run: Run, redis_url: str) -> dict[str, Any]:
    cfg, n, say = run.cfg, run.n, run.say
    await run.start(redis_url)
    say(f"roost serve --workers {cfg.workers} on :{run.port}, workers {run.workers()}; "
        f"{len(run.children)} client processes {run.counts}")  # fmt: skip
    await run.children[0].command(f"warm {WARMUP}", 60)
    await asyncio.sleep(1.5)
    rss_before = run.rss()

    say(f"opening {n:,} WebSocket connections")
    meter = CpuMeter(run.pids())
    opened = await run.each(f"open {cfg.concurrency}")
    cpu_connect = meter.stop()
    if sum(a["opened"] for a in opened) != n:
        raise RuntimeError(f"not every connection opened: {opened}")
    connect_s, connects_per_s = _rate(n, opened)
    await asyncio.sleep(1.0)
    rss_connected = run.rss()

    say(f"joining {n:,} clients to {math.ceil(n / cfg.room_size):,} {cfg.channel} rooms")
    meter = CpuMeter(run.pids())
    joins = await run.each(f"join {cfg.join_concurrency}")
    cpu_join = meter.stop()
    refused = sum(a["refused"] for a in joins)
    why: Counter[str] = Counter()
    for a in joins:
        why.update(a["reasons"])
    if sum(a["joined"] for a in joins) != n:
        raise RuntimeError(
            f"{sum(a['joined'] for a in joins):,} of {n:,} clients joined; {refused:,} joins "
            f"failed ({dict(why)}) (try --join-concurrency)"
        )
    join_s, joins_per_s = _rate(n, joins)
    await asyncio.sleep(1.5)
    rss_joined = run.rss()
    rss_clients = {f"clients{k + 1}": rss_kb(c.proc.pid) for k, c in enumerate(run.children)}
    split = await run.split()
    seen = await channels_counted(run, n)
    counted = sum(seen.get("roost_channels_joined", {}).values())

    say(f"at rest for {cfg.rest:g} s")
    meter = CpuMeter(run.pids())
    await asyncio.sleep(cfg.rest)
    cpu_rest = meter.stop()

    cpu_hb, hb_sent = None, 0
    if cfg.heartbeat > 0:
        rate = n / cfg.heartbeat
        say(f"heartbeats for {cfg.rest:g} s: every client each {cfg.heartbeat:g} s ({rate:,.0f}/s)")
        meter = CpuMeter(run.pids())
        sent = await _heartbeats(run, rate)
        cpu_hb = meter.stop()
        hb_sent = sum(a["sent"] for a in sent)
    rss_rest = run.rss()

    per_worker = {}
    for w, kb in rss_joined.items():
        on = split.get(w, 0)
        per_worker[w] = {
            "clients": on,
            "rss_kib_before": rss_before.get(w),
            "rss_kib_joined": kb,
            "kib_per_connection": (kb - rss_before[w]) / on if on else None,
        }
    delta = sum(rss_joined.values()) - sum(rss_before.values())
    result: dict[str, Any] = {
        "clients": n,
        "rooms": math.ceil(n / cfg.room_size),
        "split": split,
        "rss_kib": {
            "before": rss_before,
            "connected": rss_connected,
            "joined": rss_joined,
            "after_rest": rss_rest,
        },
        "rss_kib_client_procs": rss_clients,
        "kib_per_connection_upgraded": (sum(rss_connected.values()) - sum(rss_before.values())) / n,
        "kib_per_connection_joined": delta / n,
        "per_worker": per_worker,
        "connect_s": connect_s,
        "connects_per_s": connects_per_s,
        "connect_failed_attempts": sum(a["failed"] for a in opened),
        "join_failures": refused,
        "join_failure_reasons": {k: v for k, v in why.items() if k.startswith("join")},
        "join_s": join_s,
        "joins_per_s": joins_per_s,
        "metrics": seen,
        "metrics_channels_joined": counted,
        "metrics_match": counted == n,
        "cpu": {"connect": cpu_connect, "join": cpu_join, "rest": cpu_rest, "heartbeat": cpu_hb},
        "heartbeats_sent": hb_sent,
        "storm": None,
    }
    if cfg.storm and cfg.workers > 1:
        result["storm"] = await storm(run, say)
    return result


async def _heartbeats(run: Run, rate: float) -> list[dict[str, Any]]:
    cmds = [f"heartbeat {rate * c / run.n} {run.cfg.rest}" for c in run.counts]
    answers = await asyncio.gather(
        *(ch.command(cmd, run.cfg.rest + 60) for ch, cmd in zip(run.children, cmds, strict=True))
    )
    return [orjson.loads(a) for a in answers]


async def close(run: Run) -> None:
    for child in run.children:
        await child.close()
        run.group.forget(child.name)


def run(cfg: Config, timeout: float, say: Callable[[str], None] = print) -> dict[str, Any]:
    n, fd_note = wg.fd_plan(cfg.clients, cfg.workers, cfg.client_procs, cfg.storm)
    say(fd_note)
    if n < cfg.client_procs:
        raise RuntimeError(fd_note)
    group = Group()
    cfg.out.mkdir(parents=True, exist_ok=True)
    with sigterm_as_interrupt():
        try:
            redis = private_redis(group)
            the_run = Run(cfg, n, group, say)
            the_run.redis_pid = cast(int, redis.pid)

            async def bounded() -> dict[str, Any]:
                try:
                    return await asyncio.wait_for(measure(the_run, redis.url), timeout)
                finally:
                    await close(the_run)

            result = asyncio.run(bounded())
        finally:
            group.stop_all()
    return {
        "scenario": "workers",
        "config": {
            "clients_asked": cfg.clients,
            "workers": cfg.workers,
            "client_procs": cfg.client_procs,
            "room_size": cfg.room_size,
            "channel": cfg.channel,
            "rest_s": cfg.rest,
            "heartbeat_s": cfg.heartbeat,
            "concurrency_per_proc": cfg.concurrency,
            "join_concurrency_per_proc": cfg.join_concurrency,
            "fd": fd_note,
            "server": " ".join(wg.serve_args(0, cfg.workers, "redis://…")[3:]),
            "clients_note": "the client processes share the machine's cores with the server",
        },
        "machine": machine(),
        **result,
    }
