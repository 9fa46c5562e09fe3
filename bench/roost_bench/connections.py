"""Scenario ``connections``: as many joined idle clients on one node as fds allow.

One roost node (memory broker, ``--max-connections 100000 --join-rate 0 --msg-rate
0 --idle-timeout 3600``) and N cheap counting clients in this process. Both processes
get the machine's hard fd limit as their soft limit (children inherit it); with more
clients than one source address has ephemeral ports, the clients bind 127.0.0.2, .3...

Measured:

- **RSS per connection**: the node's VmRSS (/proc/PID/status) after a warm-up, after
  N WebSocket upgrades, and after every client joined a room (``room_size`` clients a
  room); (joined - before) / N;
- **connect rate** (upgrades/s, ``concurrency`` handshakes in flight) and **join rate**:
  every client sends its phx_join at once; joins/s = N / time to the last reply (every
  reply checked for ``"status":"ok"``; the node's /metrics must count N joined);
- **CPU at rest**: utime + stime (/proc/PID/stat) of the node over ``rest`` seconds of
  silence — roost sets no timer per socket, so this should be ~0 — then over the same
  time with every client sending a Phoenix heartbeat each ``heartbeat`` seconds (the
  phoenix.js default is 30 s), spread evenly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .harness import (
    CpuMeter,
    Tally,
    TallyClient,
    close_clients,
    machine,
    open_tally_clients,
    pyplot,
    raise_nofile,
    rss_kb,
    sigterm_as_interrupt,
    start_roost,
    wait_delivered,
)
from .loadclient import CountingClient, client_frame, join_frame
from .procs import Group, free_port

WS_PATH = "/socket/websocket?vsn=2.0.0"
FD_MARGIN = 300  # fds this process and the node need besides the client sockets
PORTS_PER_IP = 20_000  # of the 28k ephemeral ports, leaving room for TIME_WAIT leftovers
WARMUP = 100
TARGET_KB = 16
TARGET_JOINS = 5000
MOST_BY_DEFAULT = 60_000  # bounds the run's time and memory where the fd limit is huge


@dataclass
class Config:
    clients: int = 0  # 0: as many as the fd limit allows (at most MOST_BY_DEFAULT)
    room_size: int = 10
    rest: float = 10.0
    heartbeat: float = 30.0  # seconds between a client's heartbeats; 0: no heartbeat phase
    concurrency: int = 200
    source_ips: int = 0  # 0: as many as the client count needs
    out: Path = Path("bench-out")


class JoinClient(TallyClient):
    """A tally client that keeps the first bytes after the upgrade (the join reply)."""

    def __init__(self, host: str, path: str, tally: Tally) -> None:
        super().__init__(host, path, tally)
        self.head = b""

    def data_received(self, data: bytes) -> None:
        if self.upgraded and len(self.head) < 256:
            self.head += data[: 256 - len(self.head)]
        super().data_received(data)


def topic(i: int, room_size: int) -> str:
    return f"bench:idle:{i // room_size:05d}"


def heartbeat_frame(ref: int) -> bytes:
    return client_frame(orjson.dumps([None, str(ref), "phoenix", "heartbeat", {}]))


def metrics(port: int) -> dict[str, float]:
    """A few of the node's own gauges (roost_connections, roost_channels_joined)."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for name in ("roost_connections", "roost_channels_joined"):
            m = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M)
            if m:
                out[name] = float(m.group(1))
    return out


def plan_clients(cfg: Config, say: Callable[[str], None]) -> tuple[int, int, tuple[int, int]]:
    limit = raise_nofile()
    most = limit[0] - FD_MARGIN
    n = cfg.clients or min(most, MOST_BY_DEFAULT)
    if n > most:
        say(f"fd limit {limit[0]}: {n} clients is too many, running {most}")
        n = most
    ips = cfg.source_ips or max(1, math.ceil(n / PORTS_PER_IP))
    return n, ips, limit


async def measure(
    cfg: Config, n: int, ips: int, group: Group, say: Callable[[str], None]
) -> dict[str, Any]:
    port = free_port()
    start_roost(group, port, "c1", cfg.out / "connections-node.log")
    pid = group.pids["c1"]
    nodes = {"node": pid}
    tally = Tally()
    clients: list[CountingClient] = []
    try:
        # Warm-up: import and allocate whatever the first sockets need, then let go.
        warm = await open_tally_clients(port, WS_PATH, WARMUP, tally)
        for i, c in enumerate(warm):
            c.send(join_frame(topic(i, cfg.room_size)))
        await wait_delivered(warm, tally, 1, idle=10, cap=30)
        close_clients(warm)
        await asyncio.sleep(1.5)
        rss_before = rss_kb(pid)

        say(f"opening {n} WebSocket connections ({ips} source address(es))")
        meter = CpuMeter(nodes)
        t0 = time.perf_counter()
        clients = await open_tally_clients(
            port, WS_PATH, n, tally, concurrency=cfg.concurrency, source_ips=ips,
            factory=JoinClient,
        )  # fmt: skip
        connect_s = time.perf_counter() - t0
        cpu_connect = meter.stop()
        await asyncio.sleep(1.0)
        rss_connected = rss_kb(pid)

        say(f"joining {n} clients to {math.ceil(n / cfg.room_size)} rooms")
        for c in clients:
            c.received = 0
        tally.reset()
        frames = [join_frame(topic(i, cfg.room_size)) for i in range(n)]
        meter = CpuMeter(nodes)
        t0 = time.perf_counter()
        tally.last = t0
        for c, f in zip(clients, frames, strict=True):
            c.send(f)
        if not await wait_delivered(clients, tally, 1, idle=10, cap=120):
            missing = sum(1 for c in clients if not c.received)
            raise RuntimeError(f"{missing} clients got no join reply")
        join_s = tally.last - t0
        cpu_join = meter.stop()
        refused = sum(1 for c in clients if b'"status":"ok"' not in getattr(c, "head", b""))
        if refused:
            raise RuntimeError(f"{refused} joins were not ok")
        await asyncio.sleep(1.5)
        rss_joined = rss_kb(pid)
        seen = metrics(port)

        say(f"at rest for {cfg.rest:g} s")
        meter = CpuMeter(nodes)
        await asyncio.sleep(cfg.rest)
        cpu_rest = meter.stop()
        rss_rest = rss_kb(pid)

        cpu_hb: dict[str, float] | None = None
        hb_sent = 0
        if cfg.heartbeat > 0:
            rate = n / cfg.heartbeat
            say(f"heartbeats for {cfg.rest:g} s: every client each {cfg.heartbeat:g} s "
                f"({rate:,.0f}/s)")  # fmt: skip
            meter = CpuMeter(nodes)
            loop = asyncio.get_running_loop()
            start = loop.time()
            next_client = 0
            while (elapsed := loop.time() - start) < cfg.rest:
                due = int(elapsed * rate) - hb_sent
                for _ in range(max(0, due)):
                    clients[next_client % n].send(heartbeat_frame(hb_sent))
                    next_client += 1
                    hb_sent += 1
                await asyncio.sleep(0.01)
            cpu_hb = meter.stop()
        rss_end = rss_kb(pid)
    finally:
        close_clients(clients)
        await asyncio.sleep(0.5)
        group.stop("c1")

    per_conn = (rss_joined - rss_before) * 1024 / n
    return {
        "clients": n,
        "source_ips": ips,
        "room_size": cfg.room_size,
        "rooms": math.ceil(n / cfg.room_size),
        "rss_kib": {
            "before": rss_before,
            "connected": rss_connected,
            "joined": rss_joined,
            "after_rest": rss_rest,
            "end": rss_end,
        },
        "bytes_per_connection_upgraded": (rss_connected - rss_before) * 1024 / n,
        "bytes_per_connection_joined": per_conn,
        "kib_per_connection_joined": per_conn / 1024,
        "connect_s": connect_s,
        "connects_per_s": n / connect_s,
        "join_s": join_s,
        "joins_per_s": n / join_s if join_s > 0 else None,
        "node_metrics": seen,
        "cpu": {
            "connect": cpu_connect,
            "join": cpu_join,
            "rest": cpu_rest,
            "heartbeat": cpu_hb,
        },
        "rest_s": cfg.rest,
        "heartbeat_interval_s": cfg.heartbeat,
        "heartbeats_sent": hb_sent,
        "targets": {
            "kib_per_connection": TARGET_KB,
            "kib_per_connection_met": per_conn / 1024 <= TARGET_KB,
            "joins_per_s": TARGET_JOINS,
            "joins_per_s_met": join_s > 0 and n / join_s >= TARGET_JOINS,
        },
    }


def run(cfg: Config, timeout: float, say: Callable[[str], None] = print) -> dict[str, Any]:
    group = Group()
    n, ips, limit = plan_clients(cfg, say)
    with sigterm_as_interrupt():
        try:

            async def bounded() -> dict[str, Any]:
                return await asyncio.wait_for(measure(cfg, n, ips, group, say), timeout)

            result = asyncio.run(bounded())
        finally:
            group.stop_all()
    return {
        "scenario": "connections",
        "config": {
            "clients_asked": cfg.clients,
            "fd_limit": list(limit),
            "node_options": "--max-connections 100000 --join-rate 0 --msg-rate 0 "
            "--idle-timeout 3600 (memory broker)",
            "concurrency": cfg.concurrency,
        },
        "machine": machine(),
        **result,
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def table(res: dict[str, Any]) -> list[str]:
    rss = res["rss_kib"]
    cpu = res["cpu"]
    t = res["targets"]
    hb = cpu["heartbeat"]
    lines = [
        f"connections: {res['clients']:,} joined idle clients on one node "
        f"({res['rooms']:,} rooms of {res['room_size']}; fd limit {res['config']['fd_limit'][0]})",
        f"node RSS: {rss['before'] / 1024:,.1f} MiB before, {rss['connected'] / 1024:,.1f} "
        f"connected, {rss['joined'] / 1024:,.1f} joined, {rss['end'] / 1024:,.1f} at the end",
        f"RSS per connection: {res['bytes_per_connection_upgraded'] / 1024:,.1f} KiB upgraded, "
        f"{res['kib_per_connection_joined']:,.1f} KiB joined "
        f"(target <= {t['kib_per_connection']} KiB: "
        f"{'met' if t['kib_per_connection_met'] else 'MISSED'})",
        f"connect: {res['connects_per_s']:,.0f} upgrades/s (node CPU "
        f"{_pct(cpu['connect']['node'])}, client {_pct(cpu['connect']['bench client'])})",
        f"join: {res['joins_per_s'] or 0:,.0f} joins/s (target >= {t['joins_per_s']:,}: "
        f"{'met' if t['joins_per_s_met'] else 'MISSED'}; node CPU {_pct(cpu['join']['node'])}, "
        f"client {_pct(cpu['join']['bench client'])})",
        f"CPU at rest over {res['rest_s']:g} s: node {_pct(cpu['rest']['node'])} of a core"
        + (
            f"; with heartbeats every {res['heartbeat_interval_s']:g} s "
            f"({res['heartbeats_sent']:,} sent): node {_pct(hb['node'])}"
            if hb
            else ""
        ),
    ]
    nm = res.get("node_metrics") or {}
    if nm:
        lines.append(
            "node's /metrics: "
            + ", ".join(f"{k.removeprefix('roost_')} {v:,.0f}" for k, v in nm.items())
        )
    return lines


def plot(res: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2))
    rss = res["rss_kib"]
    stages = ["before", "connected", "joined", "after_rest", "end"]
    ax1.bar(stages, [rss[s] / 1024 for s in stages], color="tab:blue")
    ax1.set_ylabel("node RSS (MiB)")
    ax1.set_title(f"node RSS, {res['clients']:,} clients")
    ax1.grid(True, axis="y", alpha=0.3)
    per = [res["bytes_per_connection_upgraded"] / 1024, res["kib_per_connection_joined"]]
    bars = ax2.bar(["upgraded", "joined"], per, color=["tab:gray", "tab:blue"])
    ax2.axhline(TARGET_KB, color="red", ls="--", label=f"target {TARGET_KB} KiB")
    for b, v in zip(bars, per, strict=True):
        ax2.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom")
    ax2.set_ylim(0, max(*per, TARGET_KB) * 1.2)
    ax2.set_ylabel("KiB per connection")
    ax2.set_title("RSS per connection")
    ax2.legend(fontsize=8)
    ax2.grid(True, axis="y", alpha=0.3)
    rates = [res["connects_per_s"], res["joins_per_s"] or 0]
    bars = ax3.bar(["upgrades/s", "joins/s"], rates, color=["tab:gray", "tab:blue"])
    ax3.axhline(TARGET_JOINS, color="red", ls="--", label=f"join target {TARGET_JOINS:,}/s")
    for b, v in zip(bars, rates, strict=True):
        ax3.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom")
    ax3.set_ylim(0, max(*rates, TARGET_JOINS) * 1.2)
    cpu = res["cpu"]
    hb = cpu["heartbeat"]
    ax3.set_title(
        f"rates; CPU at rest {cpu['rest']['node']:.1%}"
        + (f", heartbeats {hb['node']:.1%}" if hb else "")
    )
    ax3.legend(fontsize=8)
    ax3.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
