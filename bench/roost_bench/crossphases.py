"""One ``crossnode`` phase: roost's broadcast, or the bare redis-py baseline, measured."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

from .channel import STAMP_RE, now_us
from .crosschildren import EVENT, IDLE, TOPIC, Child, Subscribers
from .harness import cpu_seconds


class CpuMeter:
    """Share of one core each process used between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "bench": os.getpid()}
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        return {k: round((cpu_seconds(p) - self.c0[k]) / wall, 3) for k, p in self.pids.items()}


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
            await ps.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis-py 8.2
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
