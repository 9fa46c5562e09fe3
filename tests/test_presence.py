"""Presence: Phoenix's wire format, one node and many, clean exits and node deaths."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from roost.client import Client

from support import RedisProcess, ServerProcess, start_server, until

JS = Path(__file__).resolve().parent / "js"


class Watcher:
    """A client in a room that records presence_state and every presence_diff."""

    def __init__(self, url: str, topic: str, user: str) -> None:
        self.client = Client(url)
        self.topic = topic
        self.user = user
        self.state: dict[str, Any] | None = None
        self.diffs: list[dict[str, Any]] = []

    async def __aenter__(self) -> Watcher:
        await self.client.connect()
        ch = self.client.channel(self.topic, {"user": self.user})
        ch.on("presence_state", lambda p: setattr(self, "state", p))
        ch.on("presence_diff", self.diffs.append)
        self.channel = ch
        self.join_reply = await ch.join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    def online(self) -> dict[str, int]:
        """Replay state + diffs as phoenix.js does: key → number of metas."""
        metas: dict[str, dict[str, Any]] = {}
        for key, value in (self.state or {}).items():
            for m in value["metas"]:
                metas.setdefault(key, {})[m["phx_ref"]] = m
        for diff in self.diffs:
            for key, value in diff["joins"].items():
                for m in value["metas"]:
                    metas.setdefault(key, {})[m["phx_ref"]] = m
            for key, value in diff["leaves"].items():
                for m in value["metas"]:
                    metas.get(key, {}).pop(m["phx_ref"], None)
        return {k: len(v) for k, v in sorted(metas.items()) if v}

    def leaves_of(self, key: str) -> list[str]:
        return [m["phx_ref"] for d in self.diffs for m in d["leaves"].get(key, {}).get("metas", [])]


async def test_state_and_diffs_on_one_node(local_server: Any) -> None:
    server = await local_server()
    async with Watcher(server.ws_url, "rooms:pr", "al") as al:
        await until(lambda: al.online() == {"al": 1})
        assert al.state == {}  # the state is pushed before al's own join diff
        meta = al.diffs[0]["joins"]["al"]["metas"][0]
        assert set(meta) == {"online_at", "node", "verified", "phx_ref"} and meta["node"] == "local"
        async with Watcher(server.ws_url, "rooms:pr", "bo") as bo:
            await until(lambda: bo.online() == {"al": 1, "bo": 1})
            assert set(bo.state or {}) == {"al"}
            async with Watcher(server.ws_url, "rooms:pr", "bo"):  # a second tab
                await until(lambda: al.online() == {"al": 1, "bo": 2})
            await until(lambda: al.online() == {"al": 1, "bo": 1})
        await until(lambda: al.online() == {"al": 1})
        assert len(al.leaves_of("bo")) == 2


async def test_leave_untracks(local_server: Any) -> None:
    server = await local_server()
    async with (
        Watcher(server.ws_url, "rooms:lv", "al") as al,
        Watcher(server.ws_url, "rooms:lv", "bo") as bo,
    ):
        await until(lambda: al.online() == {"al": 1, "bo": 1})
        await bo.channel.leave()
        await until(lambda: al.online() == {"al": 1})
        assert server.endpoint.presence.entries == 1


@pytest.fixture
def three_nodes(redis_server: RedisProcess, tmp_path: Path) -> Any:
    args = ["--redis", redis_server.url, "--presence-timeout", "3", "--probe-interval", "0.5"]
    servers = [start_server(*args, node=f"p{i}", log_dir=tmp_path) for i in (1, 2, 3)]
    yield servers
    for s in servers:
        s.stop(signal.SIGKILL)


async def test_presence_across_nodes_and_a_node_killed(three_nodes: list[ServerProcess]) -> None:
    p1, p2, p3 = three_nodes
    topic = "rooms:crash"
    async with Watcher(p1.ws_url, topic, "w1") as w1, Watcher(p2.ws_url, topic, "w2") as w2:
        doomed = [await Watcher(p3.ws_url, topic, "doomed").__aenter__() for _ in range(2)]
        want = {"doomed": 2, "w1": 1, "w2": 1}
        await until(lambda: w1.online() == want and w2.online() == want, what="all online")
        assert doomed[0].online() == want or doomed[1].online() == want
        t0 = time.monotonic()
        p3.proc.kill()  # no goodbye
        p3.proc.wait(10)
        await until(lambda: w1.online() == {"w1": 1, "w2": 1}, 15, "doomed's leave on p1")
        await until(lambda: w2.online() == {"w1": 1, "w2": 1}, 15, "doomed's leave on p2")
        took = time.monotonic() - t0
        await asyncio.sleep(1.5)  # a second sweep by the other survivor would show now
        for w in (w1, w2):
            refs = w.leaves_of("doomed")
            assert len(refs) == 2 and len(set(refs)) == 2, refs  # exactly one leave each
        # A newcomer sees no zombie.
        async with Watcher(p1.ws_url, topic, "late") as late:
            await until(lambda: late.state is not None)
            assert set(late.state or {}) == {"w1", "w2"}
        for d in doomed:
            d.client.reconnect = False
            await d.client.close()
    assert took < 3 + 2  # the configured timeout, plus scheduling slack


async def test_clean_shutdown_leaves_at_once(three_nodes: list[ServerProcess]) -> None:
    p1, _p2, p3 = three_nodes
    async with Watcher(p1.ws_url, "rooms:bye", "w") as w:
        leaving = Watcher(p3.ws_url, "rooms:bye", "leaving")
        leaving.client.reconnect = False
        await leaving.__aenter__()
        await until(lambda: w.online() == {"leaving": 1, "w": 1})
        t0 = time.monotonic()
        p3.proc.send_signal(signal.SIGTERM)
        await until(lambda: w.online() == {"w": 1}, 10, "leave on shutdown")
        assert time.monotonic() - t0 < 2.5  # well before the 3 s presence timeout
        assert p3.proc.wait(10) == 0
        await leaving.client.close()


def test_phoenix_js_presence_same_list_on_two_nodes(three_nodes: list[ServerProcess]) -> None:
    node = shutil.which("node")
    assert node, "node is required (scripts/test installs nodejs)"
    p1, p2, _ = three_nodes
    out = subprocess.run(
        [node, str(JS / "presence.mjs"), p1.ws_url, p2.ws_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert [e["key"] for e in result["both"]["alice"]] == ["alice", "bob", "carol"]
    carol = next(e for e in result["both"]["alice"] if e["key"] == "carol")
    assert carol["nodes"] == ["p1", "p2"]


async def test_a_join_storm_is_batched(local_server: Any) -> None:
    server = await local_server(join_rate=0, msg_rate=0)
    async with Watcher(server.ws_url, "rooms:storm", "watcher") as w:
        await until(lambda: w.online() == {"watcher": 1})
        before = len(w.diffs)
        clients = [Client(server.ws_url) for _ in range(30)]
        try:
            await asyncio.gather(*(c.connect() for c in clients))
            await asyncio.gather(
                *(c.channel("rooms:storm", {"user": f"u{i}"}).join() for i, c in enumerate(clients))
            )
            await until(lambda: len(w.online()) == 31, what="30 joins")
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        diffs = len(w.diffs) - before
        assert diffs < 30, diffs  # merged: far fewer diffs than joins
        await until(lambda: w.online() == {"watcher": 1}, what="30 leaves")
