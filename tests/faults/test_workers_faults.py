"""A worker of a ``--workers 2`` group is killed mid-stream: the delivery promise holds.

Publishers and members all use the group's one port; the kernel puts each on w1 or w2.
SIGKILL on w1 while every publisher sends: w1's members see their socket end, connect to
the same port again (w2 takes them, or w1 once the supervisor has restarted it) and
rejoin with ``since``. Every acknowledged message must reach every member exactly once,
in order per publisher; w2's members must not notice anything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Lab, Member, Publisher, check_delivery, close_all, report, settle

from support import wait_http, worker_pids

pytestmark = pytest.mark.faults


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


async def test_worker_killed_mid_stream_members_rejoin_with_since(lab: Lab) -> None:
    r = lab.redis()
    group = lab.node(r, "g", "--workers", "2")
    wait_http(f"{group.url}/readyz", proc=group.proc)
    url = group.ws_url
    room = "rooms:worker-kill"
    members = [Member(f"m{i}", [url], room) for i in range(16)]
    pubs = [Publisher(Member(f"p{i}", [url], room)) for i in range(4)]
    everyone = members + [p.member for p in pubs]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        on = {m.name: (m.joins[-1].response or {}).get("node") for m in everyone}
        assert set(on.values()) == {"g-w1", "g-w2"}, on
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop)) for p in pubs]
        await asyncio.sleep(1.5)
        t_kill = time.monotonic()
        os.kill(worker_pids(group)[1], signal.SIGKILL)
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await settle(everyone, pubs, timeout=10)
        verdict = check_delivery(everyone, pubs)
    finally:
        await close_all(everyone)
    moved = [m for m in everyone if on[m.name] == "g-w1"]
    stayed = [m for m in everyone if on[m.name] == "g-w2"]
    report("worker SIGKILL", verdict, rejoined=sum(m.failovers for m in everyone))
    assert moved and stayed
    assert all(m.failovers == 1 for m in moved), [(m.name, m.failovers) for m in moved]
    assert all(m.failovers == 0 for m in stayed), [(m.name, m.failovers) for m in stayed]
    for pub in pubs:  # the scenario ran: every publisher was acked after the kill
        assert any(p.sent_at > t_kill for p in pub.acked), (pub.name, pub.pushes[-3:])
    assert verdict, verdict.message()
    assert "SIGKILL; restarting in" in group.log()
