"""After a worker's restart the group evens out again (issue 27, item 3).

``roost serve --workers 2`` on a private redis-server, a few hundred members of one room
and two publishers on the group's one port. SIGKILL of w1: its members reconnect to the
port while w1 is down, so w2 takes them all; the supervisor restarts w1, which gets only
new connections. w2's rebalancer (server/balance.py) then closes some of its sockets with
1012 at a bounded rate; their members reconnect (the kernel puts each on w1 or w2) and
rejoin with ``since``. The split must come back within 20 % of the mean, and every
acknowledged message must reach every member exactly once, in order.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Lab, Member, Publisher, check_delivery, close_all, report, settle

from support import wait_http, worker_pids

pytestmark = pytest.mark.faults

MEMBERS = 300
TOLERANCE = 0.2


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def _metrics(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=3) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


async def split(url: str) -> dict[str, int] | None:
    """Open sockets per worker, from the group's /metrics (None: not every worker answered)."""
    text = await asyncio.to_thread(_metrics, url)
    found = {
        node: int(float(value))
        for node, value in re.findall(r'^roost_connections\{node="([^"]+)"\} (\S+)$', text, re.M)
    }
    return found if len(found) == 2 else None


def rebalanced(text: str) -> int:
    pattern = r"^roost_connections_rebalanced_total\{[^}]*\} (\S+)$"
    return sum(int(float(v)) for v in re.findall(pattern, text, re.M))


def within(counts: dict[str, int], tolerance: float) -> bool:
    mean = sum(counts.values()) / len(counts)
    return all(abs(c - mean) <= tolerance * mean for c in counts.values())


async def test_a_restarted_worker_gets_its_share_back_and_nothing_is_lost(lab: Lab) -> None:
    r = lab.redis()
    group = lab.node(r, "g", "--workers", "2")
    wait_http(f"{group.url}/readyz", proc=group.proc)
    url, room = group.ws_url, "rooms:balance"
    members = [Member(f"m{i}", [url], room, failover_timeout=60) for i in range(MEMBERS)]
    pubs = [
        Publisher(Member(f"p{i}", [url], room, failover_timeout=60), interval=0.2) for i in range(2)
    ]
    everyone = members + [p.member for p in pubs]
    timeline: list[tuple[float, int, int]] = []
    try:
        for i in range(0, len(everyone), 50):  # below --handshakes-in-flight
            await asyncio.gather(*(m.start() for m in everyone[i : i + 50]))
        before = await split(group.url)
        assert before is not None and within(before, 0.5), before  # the kernel's spread
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop)) for p in pubs]
        await asyncio.sleep(1.0)

        t_kill = time.monotonic()
        os.kill(worker_pids(group)[1], signal.SIGKILL)
        t_ready = t_within = t_done = None
        deadline = t_kill + 120
        while time.monotonic() < deadline:
            counts = await split(group.url)
            now = time.monotonic() - t_kill
            if t_done is None and "rebalance done" in group.log():
                t_done = now
            if counts is not None:
                timeline.append((now, counts["g-w1"], counts["g-w2"]))
                if t_ready is None and counts["g-w1"] < counts["g-w2"]:
                    t_ready = now  # the new w1 answers
                everybody = sum(counts.values()) >= len(everyone)
                if t_ready is not None and everybody and within(counts, TOLERANCE):
                    t_within = t_within or now
                    if t_done is not None and now - max(t_within, t_done) > 4:
                        break  # balanced, the rebalancer idle, and it stays so
            await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await settle(everyone, pubs, timeout=15)
        verdict = check_delivery(everyone, pubs)
        closed = rebalanced(await asyncio.to_thread(_metrics, group.url))
    finally:
        await close_all(everyone)
    shown = ", ".join(f"{t:.0f}s {a}/{b}" for t, a, b in timeline)
    lowest = min((t for t in timeline if t[0] > 2), key=lambda t: min(t[1], t[2]), default=None)
    print(
        f"FIGURES balance after a worker restart: {len(everyone)} clients, split before kill "
        f"w1/w2 {before['g-w1']}/{before['g-w2']}, most lopsided after {lowest}, "
        f"w1 back at {t_ready}s, within {TOLERANCE:.0%} from {t_within}s after the kill, "
        f"rebalancer done at {t_done}s; "
        f"{closed} sockets closed to rebalance; split over time: {shown}"
    )
    report(
        "worker restart + rebalance",
        verdict,
        rejoined=sum(m.failovers for m in everyone),
        rebalanced=closed,
    )
    assert t_within is not None and t_done is not None, f"not within {TOLERANCE:.0%}: {shown}"
    final = dict(zip(("g-w1", "g-w2"), timeline[-1][1:], strict=True))
    assert within(final, TOLERANCE), shown  # and it stayed so
    assert lowest is not None and min(lowest[1], lowest[2]) < len(everyone) * 0.25, shown
    assert closed > 0
    assert "rebalance started" in group.log()
    assert verdict, verdict.message()
