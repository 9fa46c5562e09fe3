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
import contextlib
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from roost.protocol import V2, ws_bytes

from .channel import STAMP_RE, now_us, stamped
from .harness import cpu_seconds
from .loadclient import CountingClient, close_all, join_frame, open_clients, wait_bytes
from .procs import Group, free_port, node_args, wait_http

TOPIC = "bench:crossnode"
EVENT = "new:msg"
WS_PATH = "/socket/websocket?vsn=2.0.0"
IDLE = 3.0  # a phase ends when nothing arrived for this long (what is missing is lost)


def frame_len() -> int:
    """Bytes of one stamped broadcast frame (the same for every message of a run)."""
    return len(ws_bytes(V2.broadcast(TOPIC, EVENT, stamped(now_us()))))


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


class CpuMeter:
    """Share of one core each process used between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "bench": os.getpid()}
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        return {k: round((cpu_seconds(p) - self.c0[k]) / wall, 3) for k, p in self.pids.items()}


# -- measuring -----------------------------------------------------------------------------
class Child:
    """A helper process driven over its stdin/stdout, one line per command and answer."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc

    @classmethod
    async def start(cls, procs: Group, name: str, module: str, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,  # a probe's report is one line: every latency of a round
        )  # fmt: skip
        procs.add(name, proc.pid, lambda: _kill(proc.pid))
        child = cls(name, proc)
        if await child._line(60) != b"ready":
            raise RuntimeError(f"the {name} process did not get ready")
        return child

    async def _line(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the {self.name} process exited")
        return line.strip()

    async def command(self, cmd: str, timeout: float = 30) -> bytes:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line(timeout)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                await asyncio.wait_for(self.proc.wait(), 2)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def start_probe(procs: Group, port: int) -> Child:
    """The latency probe process (``roost_bench.probe``), joined to the bench topic."""
    return await Child.start(procs, "probe", "roost_bench.probe", "127.0.0.1", str(port), TOPIC)


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def latencies(samples: Iterable[tuple[int, bytes]]) -> tuple[list[float], int | None]:
    """Sorted latencies in ms, and the earliest stamp (µs), from (receipt, stamp) pairs."""
    lat: list[float] = []
    first: int | None = None
    for t, stamp in samples:
        s = int(stamp)
        lat.append((t - s) / 1000)
        if first is None or s < first:
            first = s
    lat.sort()
    return lat, first


def pct(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def lat_summary(lat: list[float]) -> dict[str, Any]:
    return {
        "samples": len(lat),
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "p999_ms": pct(lat, 0.999),
        "max_ms": lat[-1] if lat else None,
    }


class Progress:
    """Polls the clients' byte counters; remembers when the total last moved."""

    def __init__(self, clients: list[CountingClient]) -> None:
        self.clients = clients
        self.total = 0
        self.last_change = time.time()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.last_change = time.time()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            total = sum(c.received for c in self.clients)
            if total != self.total:
                self.total = total
                self.last_change = time.time()
            await asyncio.sleep(0.002)

    async def finish(self, target: int, cap: float) -> None:
        """Until every client got ``target`` bytes, nothing moved for IDLE s, or ``cap`` s."""
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            if all(c.received >= target for c in self.clients):
                break
            if time.time() - self.last_change > IDLE:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.003)  # one more poll, so last_change is current
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Subscribers:
    """The counting subscribers on n2: ``reset`` before a phase, ``finish`` after it."""

    pid: int | None = None

    async def reset(self) -> None:
        raise NotImplementedError

    async def finish(self, target: int, cap: float) -> tuple[list[int], float]:
        """Bytes per client and the wall time the total last moved."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class LocalSubscribers(Subscribers):
    """Per-frame asyncio clients in the bench process (each frame wakes the loop)."""

    def __init__(self, clients: list[CountingClient]) -> None:
        self.clients = clients
        self.progress: Progress | None = None

    @classmethod
    async def start(cls, port: int, count: int) -> LocalSubscribers:
        clients = await open_clients("127.0.0.1", port, WS_PATH, count)
        join = join_frame(TOPIC)
        for c in clients:
            c.send(join)
        if not await wait_bytes(clients, 1, 30):
            close_all(clients)
            raise RuntimeError("not every subscriber got its join reply")
        return cls(clients)

    async def reset(self) -> None:
        for c in self.clients:
            c.received = 0
        self.progress = Progress(self.clients)
        self.progress.start()

    async def finish(self, target: int, cap: float) -> tuple[list[int], float]:
        assert self.progress is not None
        await self.progress.finish(target, cap)
        return [c.received for c in self.clients], self.progress.last_change

    async def close(self) -> None:
        close_all(self.clients)


class SinkSubscribers(Subscribers):
    """The batched sink (``roost_bench.sink``) in its own process."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.pid = child.proc.pid

    @classmethod
    async def start(cls, procs: Group, port: int, count: int, interval: float) -> SinkSubscribers:
        child = await Child.start(
            procs, "clients", "roost_bench.sink", "127.0.0.1", str(port), TOPIC, str(count),
            "--interval", str(interval),
        )  # fmt: skip
        return cls(child)

    async def reset(self) -> None:
        if await self.child.command("reset") != b"ok":
            raise RuntimeError("the sink did not reset")

    async def finish(self, target: int, cap: float) -> tuple[list[int], float]:
        report = orjson.loads(await self.child.command(f"report {target} {cap}", cap + 10))
        return list(report["counts"]), float(report["last_change"])

    async def close(self) -> None:
        await self.child.close()


def fire_timeout(rate: float | None, duration: float, count: int) -> float:
    return 60.0 + (duration * 3 if rate else count / 1000)


async def roost_phase(
    ch: Any,
    subs: Subscribers,
    probe: Child,
    flen: int,
    meter_pids: dict[str, int],
    *,
    rate: int | None,
    duration: float,
    count: int = 0,
) -> dict[str, Any]:
    await subs.reset()
    await probe.command("reset")
    meter = CpuMeter(meter_pids)
    fire: dict[str, Any] = {"topic": TOPIC, "event": EVENT, "stamp": True}
    if rate:
        fire.update(rate=rate, duration=duration)
    else:
        fire["count"] = count
    reply = await ch.push("fire", fire, timeout=fire_timeout(rate, duration, count))
    if not reply.ok:
        raise RuntimeError(f"fire refused: {reply.response}")
    sent = int(reply.response["sent"])
    send_elapsed = float(reply.response["elapsed"])
    cap = max(120.0, sent / 200)
    counts, last_change = await subs.finish(sent * flen, cap=cap)
    report = orjson.loads(await probe.command(f"report {sent * flen}", timeout=cap + 10))
    cpu = meter.stop()
    lat = sorted(x / 1000 for x in report["lat_us"])
    first: int | None = report["first"]
    got = [n // flen for n in counts] + [report["received"] // flen]
    lost = [max(0, sent - g) for g in got]
    delivered = sum(got)
    end = max(last_change, (report["last_recv"] or 0) / 1e6)
    window = end - first / 1e6 if first else 0.0
    return {
        "rate": rate,
        "sent": sent,
        "send_rate": sent / send_elapsed if send_elapsed > 0 else None,
        "subscribers": len(got),
        "expected_per_client": sent,
        "delivered": delivered,
        "deliveries_per_s": delivered / window if window > 0 else None,
        "messages_per_s": delivered / len(got) / window if window > 0 else None,
        "lost": sum(lost),
        "clients_with_loss": sum(1 for x in lost if x),
        "max_lost_per_client": max(lost),
        "extra": sum(max(0, g - sent) for g in got),
        "latency": lat_summary(lat),
        "cpu": cpu,
    }


async def redis_phase(
    url: str,
    channel: str,
    meter_pids: dict[str, int],
    *,
    rate: int | None,
    duration: float,
    count: int = 0,
) -> dict[str, Any]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    ps = r.pubsub()
    samples: list[tuple[int, bytes]] = []
    reader: asyncio.Task[None] | None = None
    pub: asyncio.subprocess.Process | None = None
    try:
        await ps.subscribe(channel)
        while await ps.get_message(timeout=5.0) is None:  # the subscribe confirmation
            pass

        async def read() -> None:
            while True:
                msg = await ps.get_message(ignore_subscribe_messages=True, timeout=None)
                if msg is not None:
                    samples.append((now_us(), msg["data"]))

        reader = asyncio.get_running_loop().create_task(read())
        args = ["--count", str(count)] if not rate else ["--rate", str(rate)]
        pub = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "roost_bench.redispub", url, channel,
            *args, "--duration", str(duration),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        meter = CpuMeter({**meter_pids, "publisher": pub.pid})
        out, _ = await asyncio.wait_for(pub.communicate(), fire_timeout(rate, duration, count))
        if pub.returncode != 0:
            raise RuntimeError(f"redis publisher exited with {pub.returncode}")
        cpu = meter.stop()
        cpu.pop("publisher", None)  # gone by now: its CPU is not readable any more
        result = orjson.loads(out)
        sent = int(result["sent"])
        last_change, seen = time.time(), 0
        while len(samples) < sent and time.time() - last_change < IDLE:
            if len(samples) != seen:
                seen, last_change = len(samples), time.time()
            await asyncio.sleep(0.005)
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if pub is not None and pub.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                pub.kill()
            await pub.wait()
        with contextlib.suppress(Exception):
            await ps.aclose()  # type: ignore[no-untyped-call]
            await r.aclose()
    pairs: list[tuple[int, bytes]] = []
    for t, data in samples:
        m = STAMP_RE.search(data)
        if m is not None:
            pairs.append((t, m.group(1)))
    lat, first = latencies(pairs)
    window = (samples[-1][0] - first) / 1e6 if samples and first else 0.0
    return {
        "rate": rate,
        "sent": sent,
        "send_rate": sent / float(result["elapsed"]) if result["elapsed"] else None,
        "received": len(samples),
        "messages_per_s": len(samples) / window if window > 0 else None,
        "lost": max(0, sent - len(samples)),
        "latency": lat_summary(lat),
        "cpu": cpu,
    }


# -- the run -------------------------------------------------------------------------------
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


# -- reporting -----------------------------------------------------------------------------
def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(res: Result) -> list[str]:
    cfg = res.config
    lines = [
        f"cross-node: publishers on n1, {cfg['subscribers']} subscribers + 1 probe on n2 "
        f"({cfg['pubsub_mode']} mode), {cfg['duration_s']:g} s per rate, "
        f"median of {cfg['rounds']} round(s); latency = send stamp -> receipt at the probe (ms)",
        f"{'rate/s':>7} | {'roost p50':>9} {'p99':>7} {'p99.9':>7} | "
        f"{'redis p50':>9} {'p99':>7} {'p99.9':>7} | {'p99 ratio':>9} | "
        f"{'sent/s':>8} {'deliveries/s':>12} | {'lost':>5}",
    ]
    for row in res.rates:
        ro, rd = row["roost"], row["redis"]
        lr, lb = ro["latency"], rd["latency"]
        ratio = row["p99_ratio"]
        lines.append(
            f"{row['rate']:>7} | {_ms(lr['p50_ms']):>9} {_ms(lr['p99_ms']):>7} "
            f"{_ms(lr['p999_ms']):>7} | {_ms(lb['p50_ms']):>9} {_ms(lb['p99_ms']):>7} "
            f"{_ms(lb['p999_ms']):>7} | {'-' if ratio is None else f'{ratio:.2f}':>9} | "
            f"{ro['send_rate'] or 0:>8,.0f} {ro['deliveries_per_s'] or 0:>12,.0f} | "
            f"{ro['lost']:>5}" + (f" (redis {rd['lost']})" if rd["lost"] else "")
        )
    sat = res.saturation
    if sat:
        ro, rd = sat["roost"], sat["redis"]
        lines.append(
            f"saturation: roost {ro['messages_per_s'] or 0:,.0f} msg/s = "
            f"{ro['deliveries_per_s'] or 0:,.0f} deliveries/s (lost {ro['lost']}); "
            f"bare redis-py {rd['messages_per_s'] or 0:,.0f} msg/s (lost {rd['lost']}); "
            f"roost/redis msg/s {sat['messages_ratio'] or 0:.3f}"
        )
    for row in res.rates:
        if row["rate"] == 5000:
            ratio = row["p99_ratio"]
            ok = ratio is not None and ratio <= 3 and row["roost"]["lost"] == 0
            lines.append(
                f"target (issue 8): p99 at 5000 msg/s <= 3 x bare Redis, no loss: "
                f"{'-' if ratio is None else f'{ratio:.2f}'} x, lost {row['roost']['lost']} "
                f"-> {'met' if ok else 'MISSED'}"
            )
    return lines


def plot(res: Result, path: Path) -> bool:
    """crossnode.png: latency percentiles and deliveries/s against the offered rate."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [row["rate"] for row in res.rates]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label, style in (("p50_ms", "p50", "o"), ("p99_ms", "p99", "s")):
        for who, ls in (("roost", "-"), ("redis", "--")):
            ys = [row[who]["latency"][key] or math.nan for row in res.rates]
            name = "roost n1→n2" if who == "roost" else "bare redis-py"
            ax1.plot(rates, ys, ls, marker=style, label=f"{name} {label}")
    ys = [row["roost"]["latency"]["p999_ms"] or math.nan for row in res.rates]
    ax1.plot(rates, ys, ":", marker="^", label="roost n1→n2 p99.9")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("publish rate (msg/s)")
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("send → receipt latency")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    subs = res.config["subscribers"] + 1
    got = [row["roost"]["deliveries_per_s"] or 0 for row in res.rates]
    ax2.plot(rates, [r * subs for r in rates], "--", color="grey", label="offered (rate x subs)")
    ax2.plot(rates, got, "-o", label="roost deliveries/s on n2")
    if res.saturation:
        sat = res.saturation["roost"]["deliveries_per_s"] or 0
        ax2.axhline(sat, color="red", ls=":", label=f"roost saturation {sat:,.0f}/s")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("publish rate (msg/s)")
    ax2.set_ylabel("deliveries/s")
    ax2.set_title(f"deliveries on n2 ({subs} subscribers)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
