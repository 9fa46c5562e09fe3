"""The ``workers`` scenario's reconnect storm: SIGKILL one worker, time every rejoin.

With every client joined, worker w1 gets SIGKILL. The supervisor starts it again (its
log says when it started and when it was ready); its clients see their connection end
and reconnect at once with phoenix.js's back-off (:mod:`.fleetclient`), each to whichever
worker the kernel gives it, and rejoin their room. The client processes are asked for
their counts every 0.1 s until every client is joined again (or ``storm_timeout``).

Then the balance (``balance_timeout`` > 0): the survivors hold the victim's clients and
the restarted worker only gets new ones, so each worker's rebalancer (roost
``--worker-balance``) hands sockets back with 1012; the split is read every second until
every worker is within ``BALANCED`` of the mean for ``STEADY`` readings in a row, or the
timeout. Reported: the split over time, when it was balanced, the closes it took.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from . import workergroup as wg
from .harness import CpuMeter


class Run(Protocol):
    """What the storm needs of a ``workers`` run (workers.Run has it; named here so the
    two modules do not import each other)."""

    cfg: Any
    n: int
    port: int
    log: Path

    def workers(self) -> dict[str, int]: ...

    def pids(self) -> dict[str, int]: ...

    def rss(self) -> dict[str, int]: ...

    async def each(self, cmd: str, timeout: float = ...) -> list[dict[str, Any]]: ...

    async def split(self) -> dict[str, int]: ...


async def channels_counted(run: Run, want: int) -> dict[str, dict[str, float]]:
    """The group's /metrics, read until it counts ``want`` channels (at most ~3 s)."""
    seen: dict[str, dict[str, float]] = {}
    for _ in range(6):
        seen = await asyncio.to_thread(wg.metrics, run.port)
        if sum(seen.get("roost_channels_joined", {}).values()) == want:
            break
        await asyncio.sleep(0.5)
    return seen


async def storm(run: Run, say: Callable[[str], None]) -> dict[str, Any]:
    cfg = run.cfg
    before = await run.split()
    victim = "w1"
    pid = run.workers()[victim]
    expected = before.get(victim, 0)
    base = {"lost": 0, "failed_connects": 0, "failed_joins": 0}
    base_reasons: Counter[str] = Counter()
    for st in await run.each("status"):
        base_reasons.update(st["reasons"])
        for k in base:
            base[k] += st[k]
    say(f"storm: SIGKILL {victim} (pid {pid}, {expected:,} clients)")
    meter = CpuMeter({k: v for k, v in run.pids().items() if k != victim})
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + cfg.storm_timeout
    statuses: list[dict[str, Any]] = []
    timeline: list[tuple[float, int]] = [(0.0, run.n)]
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        statuses = await run.each("status")
        joined = sum(s["joined"] for s in statuses)
        lost = sum(s["lost"] for s in statuses) - base["lost"]
        timeline.append((round(time.time() - t_kill, 2), joined))
        if lost >= expected and joined == run.n and time.time() - t_kill > 1.0:
            break
    cpu = meter.stop()
    joined = sum(s["joined"] for s in statuses)
    lost = sum(s["lost"] for s in statuses) - base["lost"]
    last = max(s["last_joined"] for s in statuses)
    group_ready = await asyncio.to_thread(_wait_ready, run.port, 30)
    # The group answers ready as soon as w1's private socket does; the supervisor logs
    # "ready" on its next tick: give its line a moment to reach the log.
    for _ in range(40):
        restarted = [(t, what) for t, i, what, _ in wg.events(run.log) if i == 1 and t >= t_kill]
        if any(what == "ready" for _, what in restarted):
            break
        await asyncio.sleep(0.05)
    started = next((t - t_kill for t, what in restarted if what == "started"), None)
    ready_at = next((t - t_kill for t, what in restarted if what == "ready"), None)
    reasons: Counter[str] = Counter()
    for s in statuses:
        reasons.update(s["reasons"])
    reasons.subtract(base_reasons)
    after = await run.split()
    seen = await channels_counted(run, run.n)
    return {
        "victim": victim,
        "victim_pid": pid,
        "clients_on_victim": expected,
        "split_before": before,
        "split_after": after,
        "lost": lost,
        "rejoined_all": joined == run.n,
        "joined_at_end": joined,
        "rejoin_s": last - t_kill if joined == run.n else None,
        "failed_connects": sum(s["failed_connects"] for s in statuses) - base["failed_connects"],
        "failed_joins": sum(s["failed_joins"] for s in statuses) - base["failed_joins"],
        "rejoins": sum(s["rejoined"] for s in statuses),
        "attempts": sum(s["attempts"] for s in statuses) - run.n,
        "failure_reasons": {k: v for k, v in reasons.items() if v},
        "worker_started_s": started,
        "worker_ready_s": ready_at,
        "group_ready_after_s": group_ready,
        "timeline": timeline,
        "cpu": cpu,
        "metrics_after": seen,
        "rss_kib_after": run.rss(),
        "balance": (
            await balance(run, t_kill, cfg.balance_timeout, say)
            if cfg.balance_timeout > 0
            else None
        ),
    }


BALANCED = 0.2  # every worker within 20 % of the mean
STEADY = 3  # readings in a row


def within(split: dict[str, int], tolerance: float = BALANCED) -> bool:
    mean = sum(split.values()) / max(1, len(split))
    return all(abs(c - mean) <= tolerance * mean for c in split.values())


async def balance(
    run: Run, t_kill: float, timeout: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """After the storm: the split every second until balanced (see the module doc)."""
    t0 = time.time()
    timeline: list[tuple[float, dict[str, int]]] = []
    balanced_at: float | None = None
    steady = 0
    while time.time() - t0 < timeout:
        split = await run.split()
        now = round(time.time() - t_kill, 1)
        timeline.append((now, split))
        if sum(split.values()) == run.n and within(split):
            steady += 1
            balanced_at = balanced_at if balanced_at is not None else now
            if steady >= STEADY:
                break
        else:
            steady, balanced_at = 0, None
        await asyncio.sleep(1.0)
    seen = await asyncio.to_thread(wg.metrics, run.port)
    closes = int(sum(seen.get("roost_connections_rebalanced_total", {}).values()))
    shown = "; ".join(
        f"{t:g}s " + "/".join(f"{c:,}" for c in sp.values())
        for t, sp in timeline[:: max(1, len(timeline) // 10)]
    )
    verdict = f"within 20 % after {balanced_at} s" if balanced_at is not None else "NOT balanced"
    say(f"balance: {verdict}, {closes:,} closes ({shown})")
    return {
        "tolerance": BALANCED,
        "balanced_s": balanced_at,
        "timeline": timeline,
        "split_end": timeline[-1][1] if timeline else {},
        "closes": closes,
    }


def _wait_ready(port: int, cap: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < cap:
        if wg.ready(port):
            return time.monotonic() - t0
        time.sleep(0.1)
    return None
