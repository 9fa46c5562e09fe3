"""The live dashboard in-process (issue 18): the reporter's rates on a clock the test moves,
the Socket driven with frames (guesses rate-limited, the backend guard kept out), the
option's validation. The real-process tests are in test_admin.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from roost.admin import Reporter, install
from roost.brokers.memory import MemoryBroker
from roost.channels import Endpoint, Limits, Router, Socket
from roost.channels.contracts import Verdict
from roost.chat import create_endpoint
from roost.config import ServeConfig
from roost.protocol import TEXT
from roost.pubsub import PubSub
from test_socket_unit import Wire

SECRET = "admin-secret-0123456789abcdef"


def test_reporter_rates_follow_the_clock() -> None:
    """Rates are counter deltas over the injected clock's seconds; no sleeping."""
    endpoint = create_endpoint("solo", MemoryBroker())
    now = [100.0]
    reporter = install(endpoint, SECRET)
    assert isinstance(reporter, Reporter)
    reporter.clock = lambda: now[0]
    reporter.started = reporter._at = now[0]
    first = reporter.snapshot()
    assert first["rates"]["pushes_in"] == 0.0 and first["node"] == "solo"
    endpoint.stats.pushes += 30
    endpoint.stats.joins += 4
    now[0] += 2.0
    second = reporter.snapshot()
    assert second["rates"]["pushes_in"] == 15.0 and second["rates"]["joins"] == 2.0
    assert second["uptime"] == 2.0 and second["broker"]["kind"] == "MemoryBroker"
    assert endpoint.router.match("admin:cluster") is not None
    assert endpoint.router.match("admin:other") is None
    assert "secret" not in repr(endpoint.settings["admin"]).replace("secret=<hidden>", "")
    assert asyncio.run(MemoryBroker().nodes()) == []  # not started: no node yet


async def test_secret_guesses_are_rate_limited_like_any_join() -> None:
    """A socket guessing the secret runs out of joins like any socket (no network: the
    Socket driven with frames, the rate limits on a clock that does not move)."""
    endpoint = Endpoint(
        router=Router(),
        pubsub=PubSub("unit", MemoryBroker()),
        limits=Limits(join_rate=1, join_burst=3),
        clock=lambda: 100.0,
    )
    install(endpoint, SECRET)
    await endpoint.start()
    wire = Wire()
    socket = Socket(endpoint, wire, {})
    try:
        for i, guess in enumerate(["a" * 16, "b" * 16, "c" * 16, SECRET]):
            frame = [str(i), str(i), "admin:cluster", "phx_join", {"secret": guess}]
            await socket.handle(TEXT, json.dumps(frame))
        replies = [(f[4]["status"], f[4]["response"].get("reason")) for f in wire.take()]
        unauthorized = ("error", "unauthorized")
        assert replies == [unauthorized] * 3 + [("error", "rate limited")]
    finally:
        await socket.close()
        await endpoint.stop()


def test_a_short_admin_secret_is_a_usage_error() -> None:
    for bad in ("short", "é" * 16, "tab\there-0123456789"):
        with pytest.raises(ValueError, match="at least 16 printable ASCII"):
            ServeConfig(admin_secret=bad)
    assert ServeConfig(admin_secret=SECRET).admin_secret == SECRET


class Recorder:
    """A backend guard (--hook-join/--hook-publish) that allows all and remembers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def join(self, socket: Any, topic: str, payload: Any) -> Verdict:
        self.seen.append((topic, payload))
        return Verdict(True, payload)

    async def push(self, socket: Any, topic: str, event: str, payload: Any) -> Verdict:
        self.seen.append((topic, payload))
        return Verdict(True, payload)


async def test_the_backend_guard_never_sees_the_admin_topic() -> None:
    """Its join payload holds the secret: it is not the application's to decide."""
    endpoint = create_endpoint("unit", MemoryBroker())
    guard = Recorder()
    endpoint.guard = guard
    install(endpoint, SECRET)
    await endpoint.start()
    wire = Wire()
    socket = Socket(endpoint, wire, {})
    try:
        frames = [
            ["1", "1", "admin:cluster", "phx_join", {"secret": SECRET}],
            ["1", "2", "admin:cluster", "snapshot", {"node": "n9"}],
            ["3", "3", "rooms:lobby", "phx_join", {"user": "al"}],
        ]
        for frame in frames:
            await socket.handle(TEXT, json.dumps(frame))
        replies = [f[4] for f in wire.take() if f[3] == "phx_reply"]
        assert [r["status"] for r in replies] == ["ok", "error", "ok"]
        assert replies[1]["response"] == {"reason": "read only"}
        assert guard.seen == [("rooms:lobby", {"user": "al"})]
    finally:
        await socket.close()
        await endpoint.stop()
