"""The latency phase of the ``peers`` scenario: stamped messages, kernel receive times."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

from .channel import STAMP_RE
from .harness import (
    Tally,
)
from .loadclient import CountingClient
from .peerservers import Running

SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)  # Linux: kernel receive time, µs


async def latency_phase(
    run: Running, clients: Sequence[CountingClient], tally: Tally, rate: float, duration: float
) -> dict[str, Any]:
    """Stamped messages at ``rate``/s; per message, when the first and the last of the
    subscribers had it.

    The receipt time is the kernel's (``SO_TIMESTAMP``: when the bytes reached the
    client's socket), not when this process got round to reading them: with every
    subscriber in one process, the last of 1,000 reads of a broadcast runs milliseconds
    after the first, whatever the server. So for the phase each client's transport stops
    reading and a poller reads a duplicate of its socket with ``recvmsg``.
    """
    assert run.paced is not None
    socks: list[tuple[CountingClient, socket.socket]] = []
    records: list[tuple[object, int, bytes]] = []
    done = asyncio.Event()

    async def poll() -> None:
        while True:
            final = done.is_set()
            got = False
            for client, sock in socks:
                while True:
                    try:
                        data, anc, _, _ = sock.recvmsg(1 << 16, 64)
                    except (BlockingIOError, InterruptedError):
                        break
                    if not data:
                        break
                    t = time.time_ns() // 1000
                    for level, kind, raw in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                            sec, usec = struct.unpack("@qq", raw[:16])
                            t = sec * 1_000_000 + usec
                    records.append((client, t, data))
                    got = True
            if got:
                tally.last = time.perf_counter()
            if final:
                return
            await asyncio.sleep(0.002)

    try:
        for c in clients:
            assert c.transport is not None
            c.transport.pause_reading()
            fd = c.transport.get_extra_info("socket").fileno()
            sock = socket.socket(fileno=os.dup(fd))
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            socks.append((c, sock))
        await asyncio.sleep(0.2)  # the kernel turns receive timestamps on in the background
        poller = asyncio.get_running_loop().create_task(poll())
        sent = await run.paced(rate, duration)
        deadline = time.perf_counter() + max(30.0, 3 * duration)
        while time.perf_counter() < deadline and time.perf_counter() - tally.last < 1.0:
            await asyncio.sleep(0.05)
        done.set()
        await poller
    finally:
        for c, sock in socks:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 0)
            sock.close()  # the duplicate; the client keeps its own descriptor
            if c.transport is not None and not c.transport.is_closing():
                c.transport.resume_reading()
    tails: dict[int, bytes] = {}
    seen: dict[int, set[int]] = {}
    times: dict[int, list[int]] = {}
    for client, t, data in records:
        key = id(client)
        buf = tails.get(key, b"") + data
        tails[key] = buf[-24:]
        mine = seen.setdefault(key, set())
        for m in STAMP_RE.findall(buf):
            stamp = int(m)
            if stamp not in mine:  # a stamp left whole in the tail is found twice
                mine.add(stamp)
                times.setdefault(stamp, []).append(t)
    received = sum(len(v) for v in times.values())
    last = sorted((max(ts) - s) / 1000 for s, ts in times.items())
    first = sorted((min(ts) - s) / 1000 for s, ts in times.items())
    return {
        "rate": rate,
        "duration_s": duration,
        "sent": sent,
        "subscribers": len(clients),
        "messages_seen": len(times),
        "lost": sent * len(clients) - received,
        "all_subscribers_ms": {
            "p50": _pct(last, 0.5), "p90": _pct(last, 0.9), "max": last[-1] if last else None,
        },
        "first_subscriber_ms": {"p50": _pct(first, 0.5), "p90": _pct(first, 0.9)},
    }  # fmt: skip


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
