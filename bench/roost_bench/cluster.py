"""Scenario ``cluster``: two nodes on a Redis Cluster of 1 master, then of 3 masters.

For each topology (``masters``, default 1 and 3; no replicas — they carry no Pub/Sub
load a benchmark would see) a private cluster (:mod:`.rediscluster`) and two bench
nodes on it. ``rooms`` rooms (default 60), spread evenly over the masters by their
slot (the ``{topic}`` hash tag: a room's sharded channel lives on the master of
``key_slot(topic)``), each with ``members`` subscribers on n2; one control socket on n1
publishes round-robin into every room (``fire`` with ``topics``). Two phases:

- **paced**: ``rate`` broadcasts/s in all for ``duration`` s;
- **saturation**: unpaced, for at most ``duration`` s (or ``saturation`` broadcasts).

Measured per phase: cross-node deliveries/s on n2 (stamps counted in the subscribers'
bytes, first stamp to last receipt), losses, latency p50/p99 (receipt minus send stamp,
over every delivery), each master's sharded Pub/Sub ingress (``cmdstat_spublish``
calls from ``INFO commandstats``, before and after, per second of publishing) and CPU
share of every process. Then the ratios 3-master / 1-master: deliveries/s, p99, and the
busiest master's SPUBLISH/s (the share one master carries).

Bounded (``timeout`` over the whole run), loopback only; everything it started is
stopped whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from .crossphases import lat_summary
from .harness import (
    CpuMeter,
    Tally,
    close_clients,
    machine,
    open_tally_clients,
    sigterm_as_interrupt,
    start_roost,
)
from .loadclient import CountingClient, join_frame
from .probe import ProbeClient
from .procs import Group, free_port
from .rediscluster import RedisCluster

EVENT = "new:msg"
WS_PATH = "/socket/websocket?vsn=2.0.0"
IDLE = 3.0  # a phase ends when nothing arrived for this long (what is missing is lost)


@dataclass
class Config:
    masters: tuple[int, ...] = (1, 3)
    rooms: int = 60
    members: int = 5  # subscribers per room, all on n2
    rate: int = 2000  # paced phase: broadcasts/s over all rooms
    duration: float = 5.0  # seconds of each phase
    saturation: int = 200_000  # most broadcasts of the saturation phase
    join_concurrency: int = 8  # joins in flight while the subscribers join
    out: Path = Path("bench-out")


@dataclass
class Result:
    config: dict[str, Any]
    topologies: list[dict[str, Any]] = field(default_factory=list)
    ratios: dict[str, Any] = field(default_factory=dict)


class RoomClient(ProbeClient):
    """A subscriber that records its stamps (as the probe does) and feeds a shared tally."""

    def __init__(self, host: str, path: str, tally: Tally) -> None:
        super().__init__(host, path)
        self.tally = tally
        self.head = b""  # the first bytes after the upgrade: the join reply

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.upgraded:
            self.tally.total += len(data)
            self.tally.last = time.perf_counter()
            if len(self.head) < 512:
                self.head += data

    async def join(self, topic: str, timeout: float = 30) -> None:
        self.send(join_frame(topic))
        deadline = time.monotonic() + timeout
        while b"phx_reply" not in self.head:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no join reply for {topic}")
            await asyncio.sleep(0.005)
        if b'"status":"ok"' not in self.head:
            raise RuntimeError(f"join of {topic} refused: {self.head[-200:]!r}")

    def stamps(self) -> int:
        return sum(len(found) for _, found in self.samples)


async def join_all(clients: list[RoomClient], rooms: list[str], concurrency: int) -> None:
    """Client i joins room i % len(rooms), ``concurrency`` joins in flight; every reply ok.

    Bounded because a burst of joins into many rooms at once is refused by a node on a
    cluster (``MaxConnectionsError`` from redis-py's per-master command pools, see
    docs/BENCHMARKS.md); this scenario measures steady Pub/Sub routing, not join bursts.
    """
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, c: RoomClient) -> None:
        async with sem:
            await c.join(rooms[i % len(rooms)])

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))


def spread_rooms(cluster: RedisCluster, count: int) -> list[str]:
    """``count`` room topics of equal length, as evenly over the masters as can be."""
    masters = len(cluster.ranges)
    want = [count // masters + (1 if i < count % masters else 0) for i in range(masters)]
    rooms: list[str] = []
    i = 0
    while len(rooms) < count:
        topic = f"bench:c{i:06d}"
        m = cluster.master_of(key_slot(topic.encode()))
        if want[m] > 0:
            want[m] -= 1
            rooms.append(topic)
        i += 1
    return rooms


def spublish_calls(ports: list[int]) -> list[int]:
    out = []
    for port in ports:
        stats = redis.Redis(port=port).info("commandstats")
        out.append(int(stats.get("cmdstat_spublish", {}).get("calls", 0)))
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


async def run_phase(
    ch: Any,
    clients: list[RoomClient],
    rooms: list[str],
    cluster: RedisCluster,
    pids: dict[str, int],
    fire: dict[str, Any],
) -> dict[str, Any]:
    for c in clients:
        c.reset()
    tally = clients[0].tally
    tally.reset()
    before = spublish_calls(cluster.ports)
    meter = CpuMeter(pids)
    bound = 60 + 3 * float(fire.get("duration", fire.get("seconds", 0)))
    fire = {"topics": rooms, "event": EVENT, "stamp": True, **fire}
    reply = await ch.push("fire", fire, timeout=bound)
    if not reply.ok:
        raise RuntimeError(f"fire refused: {reply.response}")
    sent, elapsed = int(reply.response["sent"]), float(reply.response["elapsed"])
    members = len(clients) // len(rooms)
    expected = sent * members
    while sum(c.stamps() for c in clients) < expected and time.perf_counter() - tally.last < IDLE:
        await asyncio.sleep(0.01)
    cpu = meter.stop()
    calls = [b - a for a, b in zip(before, spublish_calls(cluster.ports), strict=True)]
    lat: list[float] = []
    first: int | None = None
    last = 0
    for c in clients:
        for t, found in c.samples:
            last = max(last, t)
            for stamp in found:
                s = int(stamp)
                lat.append((t - s) / 1000)
                first = s if first is None else min(first, s)
    lat.sort()
    delivered = len(lat)
    window = (last - first) / 1e6 if first else 0.0
    return {
        "sent": sent,
        "send_rate": round(sent / elapsed) if elapsed > 0 else None,
        "expected": expected,
        "delivered": delivered,
        "lost": max(0, expected - delivered),
        "deliveries_per_s": round(delivered / window) if window > 0 else None,
        "latency": lat_summary(lat),
        "spublish_per_s": [round(n / elapsed) if elapsed > 0 else None for n in calls],
        "spublish_calls": calls,
        "cpu": cpu,
    }


async def measure_topology(
    cfg: Config, masters: int, procs: Group, say: Callable[[str], None]
) -> dict[str, Any]:
    from roost.client import Client

    cluster = RedisCluster(masters).start()
    procs.add(f"cluster{masters}", cluster.servers[0].pid or 0, cluster.stop)
    pids = {f"redis{i + 1}": s.pid for i, s in enumerate(cluster.servers) if s.pid is not None}
    say(f"{masters}-master cluster on ports {cluster.ports}")
    prefix = f"roostbench{os.getpid()}"
    ports = {}
    for node in ("n1", "n2"):
        ports[node] = free_port()
        proc = start_roost(procs, ports[node], node, cfg.out / f"cluster{masters}-{node}.log",
                           "--redis", cluster.url, "--redis-prefix", prefix)  # fmt: skip
        pids[node] = proc.pid
    rooms = spread_rooms(cluster, cfg.rooms)
    tally = Tally()

    def factory(host: str, path: str, t: Tally) -> CountingClient:
        return RoomClient(host, path, t)

    clients = await open_tally_clients(
        ports["n2"], WS_PATH, cfg.rooms * cfg.members, tally, factory=factory
    )
    try:
        room_clients = [c for c in clients if isinstance(c, RoomClient)]
        await join_all(room_clients, rooms, cfg.join_concurrency)
        per_master = [0] * masters
        for topic in rooms:
            per_master[cluster.master_of(key_slot(topic.encode()))] += 1
        async with Client(f"ws://127.0.0.1:{ports['n1']}/socket") as control:
            ch = control.channel("bench:control")
            await ch.join()
            say(f"{masters} master(s): warming up")
            warm = await run_phase(ch, room_clients, rooms, cluster, pids,
                                   {"rate": 500, "duration": 0.5})  # fmt: skip
            if warm["delivered"] == 0:
                raise RuntimeError(f"nothing crossed n1 -> n2; see {cfg.out}/cluster*-n*.log")
            say(f"{masters} master(s): paced {cfg.rate} msg/s for {cfg.duration:g} s")
            paced = await run_phase(ch, room_clients, rooms, cluster, pids,
                                    {"rate": cfg.rate, "duration": cfg.duration})  # fmt: skip
            await asyncio.sleep(0.3)
            say(f"{masters} master(s): saturation for {cfg.duration:g} s")
            sat = await run_phase(ch, room_clients, rooms, cluster, pids,
                                  {"count": cfg.saturation, "seconds": cfg.duration})  # fmt: skip
    finally:
        close_clients(clients)
        await asyncio.sleep(0.1)
    return {"masters": masters, "rooms_per_master": per_master, "paced": paced, "saturation": sat}


def ratios(topologies: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest topology over the smallest: deliveries/s, p99, busiest master's SPUBLISH/s."""
    if len(topologies) < 2:
        return {}
    lo, hi = topologies[0], topologies[-1]
    out: dict[str, Any] = {"of": f"{hi['masters']}-master / {lo['masters']}-master"}
    for phase in ("paced", "saturation"):
        a, b = lo[phase], hi[phase]
        out[phase] = {
            "deliveries_per_s": _ratio(b["deliveries_per_s"], a["deliveries_per_s"]),
            "p50": _ratio(b["latency"]["p50_ms"], a["latency"]["p50_ms"]),
            "p99": _ratio(b["latency"]["p99_ms"], a["latency"]["p99_ms"]),
            "busiest_master_spublish_per_s": _ratio(
                max(x or 0 for x in b["spublish_per_s"]), max(x or 0 for x in a["spublish_per_s"])
            ),
        }
    return out


def run(cfg: Config, timeout: float, say: Callable[[str], None] = print) -> Result:
    """Each topology in turn, everything it started stopped before the next."""
    result = Result({**asdict(cfg), "out": str(cfg.out), "machine": machine(),
                     "subscribers_per_topology": cfg.rooms * cfg.members,
                     "replicas": 0, "pubsub": "sharded (SSUBSCRIBE per master)"})  # fmt: skip
    with sigterm_as_interrupt():

        async def bounded() -> None:
            for masters in cfg.masters:
                procs = Group()
                try:
                    result.topologies.append(await measure_topology(cfg, masters, procs, say))
                finally:
                    procs.stop_all()

        asyncio.run(asyncio.wait_for(bounded(), timeout))
    result.ratios = ratios(result.topologies)
    return result
