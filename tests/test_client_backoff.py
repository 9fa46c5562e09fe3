"""roost.client's reconnect and rejoin schedules (issue 27): jittered exponential backoff,
and a refused upgrade's Retry-After honoured.

The schedules are pure (``roost.client.backoff``): checked here with seeded random sources,
no sleeping. The client's loops take ``random=`` and ``sleep=``: checked against an
in-process server with a recording sleep, and against a real ``roost serve
--max-connections 1`` whose 503 + Retry-After the refused client must wait out.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time
from collections import Counter
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roost.client import RECONNECT, REJOIN, Backoff, Client, retry_after
from roost.client.backoff import RETRY_AFTER_MAX, next_delay, parse_retry_after

from support import start_server

#: phoenix.js 1.8's reconnectAfterMs and rejoinAfterMs (seconds): the same for every client
PHOENIX_RECONNECT = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0)
PHOENIX_REJOIN = (1.0, 2.0, 5.0)
CLIENTS = 1000


def quantiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100)
    return {"p1": cuts[0], "p10": cuts[9], "p50": cuts[49], "p90": cuts[89], "p99": cuts[98]}


def peak_per_bucket(delays: list[float], width: float = 0.01) -> int:
    """How many clients come back in the busiest ``width``-second slot."""
    return max(Counter(int(d / width) for d in delays).values())


# -- the schedules ------------------------------------------------------------------------


def test_ceiling_doubles_up_to_the_cap() -> None:
    b = Backoff(base=1.0, cap=30.0, floor=0.05)
    assert [b.ceiling(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.ceiling(10_000) == 30.0  # no overflow
    assert b.delay(1, lambda: 0.0) == 0.05  # the floor: never at once
    assert b.delay(3, lambda: 0.999999) == pytest.approx(4.0, abs=1e-5)
    assert Backoff(base=0.01, cap=30.0, floor=0.5).ceiling(1) == 0.5  # floor above the ceiling
    with pytest.raises(ValueError):
        Backoff(base=1.0, cap=1.0, floor=2.0)


@pytest.mark.parametrize(
    ("schedule", "phoenix_first"), [(RECONNECT, PHOENIX_RECONNECT[0]), (REJOIN, PHOENIX_REJOIN[0])]
)
def test_first_retries_of_a_thousand_clients_spread_out(
    schedule: Backoff, phoenix_first: float
) -> None:
    """1,000 clients lose their node at once. phoenix.js brings every one back at the same
    instant (10 ms; a rejoin at 1 s): all 1,000 in one 10 ms slot. Full jitter spreads them
    over the whole first window."""
    rng = random.Random(27)
    first = [schedule.delay(1, rng.random) for _ in range(CLIENTS)]
    q = quantiles(first)
    window = schedule.ceiling(1) - schedule.floor
    assert min(first) >= schedule.floor and max(first) <= schedule.ceiling(1)
    # the middle 80% cover about 80% of the window (uniform), phoenix.js's cover 0 s
    assert q["p90"] - q["p10"] >= 0.7 * window
    assert q["p90"] / q["p10"] >= 4
    assert max(first) - min(first) >= 0.9 * window
    # phoenix.js's spread is 0 s: every client at its fixed first delay. Ours, p10..p90,
    # against that delay: 70x the 10 ms of a reconnect, 1.2x the 1 s of a rejoin
    assert (q["p90"] - q["p10"]) / phoenix_first >= (70 if schedule is RECONNECT else 1.2)
    # the busiest 10 ms: ~1% of the clients here (uniform: 1000 * 0.01 / window), all of them
    # for phoenix.js
    assert peak_per_bucket([phoenix_first] * CLIENTS) == CLIENTS
    assert peak_per_bucket(first) <= 0.04 * CLIENTS
    # the first retry still comes soon: half the clients are back within half the window
    assert q["p50"] <= schedule.floor + 0.6 * window


def test_reconnect_schedule_grows_and_stays_spread() -> None:
    rng = random.Random(2027)
    for attempt in range(1, 10):
        delays = [RECONNECT.delay(attempt, rng.random) for _ in range(CLIENTS)]
        top = RECONNECT.ceiling(attempt)
        assert all(RECONNECT.floor <= d <= top for d in delays)
        # uniform over [floor, top]: mean near the middle, p90/p10 wide
        middle = (RECONNECT.floor + top) / 2
        assert statistics.fmean(delays) == pytest.approx(middle, rel=0.1)
        q = quantiles(delays)
        assert (q["p90"] - q["p10"]) >= 0.7 * (top - RECONNECT.floor)
    assert RECONNECT.ceiling(6) == RECONNECT.cap == 30.0


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 120 ", now) == 120.0
    assert parse_retry_after(formatdate(now + 42, usegmt=True), now) == pytest.approx(42.0)
    assert parse_retry_after(formatdate(now - 42, usegmt=True), now) == 0.0  # in the past
    assert parse_retry_after("99999", now) == RETRY_AFTER_MAX
    for bad in (None, "", "soon", "-1", "1.5"):
        assert parse_retry_after(bad, now) is None
    # Retry-After first, then the jittered delay on top: never before it
    rng = random.Random(5)
    waits = [next_delay(RECONNECT, 2, 5.0, rng.random) for _ in range(CLIENTS)]
    assert min(waits) >= 5.0 + RECONNECT.floor
    assert max(waits) - min(waits) >= 0.9 * (RECONNECT.ceiling(2) - RECONNECT.floor)


def test_retry_after_of_a_refused_upgrade() -> None:
    def refused(status: int, after: str | None) -> aiohttp.WSServerHandshakeError:
        headers = {"Retry-After": after} if after is not None else {}
        return aiohttp.WSServerHandshakeError(
            None,  # type: ignore[arg-type]
            (),
            status=status,
            message="Invalid response status",
            headers=headers,  # type: ignore[arg-type]
        )

    assert retry_after(refused(503, "5")) == 5.0
    assert retry_after(refused(429, "2")) == 2.0
    assert retry_after(refused(403, "5")) is None  # a refusal for good says nothing of when
    assert retry_after(refused(503, None)) is None
    assert retry_after(ConnectionRefusedError()) is None


# -- the client's loops, on a recording sleep --------------------------------------------


class Recorder:
    """An injected ``sleep``: records each delay, waits ``scale`` of it (or blocks on a gate)."""

    def __init__(self, scale: float = 0.0) -> None:
        self.scale = scale
        self.delays: list[float] = []
        self.at: list[float] = []  # monotonic time of each call
        self.gate: asyncio.Event | None = None

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.at.append(time.monotonic())
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(delay * self.scale if self.scale < 1 else delay)


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_reconnect_follows_the_schedule_then_rejoins_at_once(local_server: Any) -> None:
    """The server goes away: the client's reconnect delays are the schedule's (with the
    injected random), one per failed attempt; once back, the channel rejoins without waiting."""
    from roost.brokers.memory import MemoryBroker
    from roost.chat import create_endpoint

    server = await local_server()
    port = server.port
    rec = Recorder(scale=0.02)  # 2% of each delay: fast, but attempts still fail one by one
    async with Client(server.ws_url, random=lambda: 0.5, sleep=rec.sleep) as client:
        room = client.channel("rooms:backoff", {"user": "al"})
        await room.join()
        await server.stop()
        await _until(lambda: len(rec.delays) >= 5)
        expected = [RECONNECT.delay(n, lambda: 0.5) for n in range(1, 6)]
        assert rec.delays[:5] == pytest.approx(expected)
        assert expected == pytest.approx([0.525, 1.025, 2.025, 4.025, 8.025])
        second = type(server)(create_endpoint("second", MemoryBroker()))
        second.port = port
        await second.start()
        try:
            await _until(lambda: room.state == "joined" and client.connected)
            assert room.join_response["node"] == "second"
            # every sleep was a reconnect's: the rejoin after it did not wait
            assert all(d in expected or d > 8 for d in rec.delays)
        finally:
            await second.stop()


async def test_rejoin_after_phx_error_waits_the_jittered_schedule(local_server: Any) -> None:
    """A phx_error (the channel crashed on the server) reaches every member at once: each
    waits its own jittered rejoin delay, not phoenix.js's 1 s."""
    from roost.protocol import Message

    server = await local_server()
    rec = Recorder(scale=0.0)
    async with Client(server.ws_url, random=lambda: 0.25, sleep=rec.sleep) as client:
        room = client.channel("rooms:crash", {"user": "al"})
        await room.join()
        first_ref = room.join_ref
        room._dispatch(Message(first_ref, None, "rooms:crash", "phx_error", {}))
        await _until(lambda: room.state == "joined" and room.join_ref != first_ref)
        assert rec.delays == [pytest.approx(REJOIN.delay(1, lambda: 0.25))]
        assert rec.delays[0] == pytest.approx(0.25 + 0.25 * 1.75)


# -- a real node's refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "status"),
    [(("--max-connections", "1"), 503), (("--max-connections-per-ip", "1"), 429)],
)
async def test_refused_connect_reports_status_and_retry_after(
    tmp_path: Path, flags: tuple[str, str], status: int
) -> None:
    srv = await asyncio.to_thread(start_server, *flags, node="full", log_dir=tmp_path)
    try:
        async with Client(srv.ws_url):
            refused = Client(srv.ws_url)
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await refused.connect()
            assert caught.value.status == status
            assert caught.value.headers is not None
            assert caught.value.headers["Retry-After"] == "5"
            assert retry_after(caught.value) == 5.0 == refused.retry_after
    finally:
        srv.stop()


async def test_refused_reconnect_waits_out_retry_after(tmp_path: Path) -> None:
    """A node restarts with ``--max-connections 1`` and another client takes the one slot
    first: the reconnecting client is refused (503, Retry-After: 5) and makes no attempt
    for 5 s; then, the slot free, it is back and rejoined."""
    srv = await asyncio.to_thread(
        start_server, "--max-connections", "1", node="n1", log_dir=tmp_path
    )
    rec = Recorder(scale=1.0)
    rec.gate = asyncio.Event()  # the first reconnect waits until the slot is taken
    client = Client(srv.ws_url, random=lambda: 0.0, sleep=rec.sleep)
    holder: Client | None = None
    try:
        await client.connect()
        room = client.channel("rooms:full", {"user": "al"})
        await room.join()
        srv.stop(signal.SIGKILL)
        await _until(lambda: len(rec.delays) == 1)
        assert rec.delays == [RECONNECT.floor]
        srv = await asyncio.to_thread(
            start_server, "--max-connections", "1", port=srv.port, node="n2", log_dir=tmp_path
        )
        holder = Client(srv.ws_url)
        await holder.connect()  # the one slot
        rec.gate.set()
        await _until(lambda: len(rec.delays) == 2)  # the attempt was refused: the next wait
        refused_at = rec.at[1]
        assert client.retry_after == 5.0
        assert rec.delays[1] == pytest.approx(5.0 + RECONNECT.floor)
        await holder.close()
        holder = None
        await _until(lambda: room.state == "joined", timeout=15)
        back_at = time.monotonic()
        # one attempt after the refusal, not before Retry-After
        assert len(rec.delays) == 2, rec.delays
        assert back_at - refused_at >= 5.0
        assert room.join_response["node"] == "n2"
    finally:
        if holder is not None:
            await holder.close()
        await client.close()
        srv.stop()
