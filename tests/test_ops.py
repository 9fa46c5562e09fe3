"""Operations: readiness, drain on SIGTERM, the publish API and roost.publish."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import roost
from roost.client import Client

from support import RedisProcess, ServerProcess, start_server, until


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def post(url: str, body: Any, key: str | None) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return err.code, {"text": raw.decode(errors="replace")}


@pytest.fixture
def pair(redis_server: RedisProcess, tmp_path: Path) -> Any:
    args = ["--redis", redis_server.url, "--api-key", "k3y", "--probe-interval", "0.5"]
    nodes = [start_server(*args, node=n, log_dir=tmp_path) for n in ("o1", "o2")]
    yield nodes
    for n in nodes:
        n.stop(signal.SIGKILL)


async def test_readyz_follows_redis(pair: list[ServerProcess], redis_server: RedisProcess) -> None:
    o1, _ = pair
    assert get(f"{o1.url}/readyz") == (200, {"ready": True, "broker": True, "draining": False})
    redis_server.stop()
    await until(lambda: get(f"{o1.url}/readyz")[0] == 503, what="not ready")
    assert get(f"{o1.url}/healthz")[0] == 200  # alive all the same
    redis_server.start()
    await until(lambda: get(f"{o1.url}/readyz")[0] == 200, 20, "ready again")


async def test_publish_api_and_roost_publish_reach_every_node(
    pair: list[ServerProcess], redis_server: RedisProcess
) -> None:
    o1, o2 = pair
    async with Client(o1.ws_url) as a, Client(o2.ws_url) as b:
        got: dict[str, list[Any]] = {"a": [], "b": []}
        for name, c in (("a", a), ("b", b)):
            ch = c.channel("rooms:api", {"user": name})
            ch.on("announce", got[name].append)
            ch.on("new:msg", got[name].append)
            await ch.join()
        status, body = post(
            f"{o1.url}/api/broadcast",
            {"topic": "rooms:api", "event": "announce", "payload": {"text": "from the API"}},
            "k3y",
        )
        assert (status, body) == (202, {"ok": True})
        # Two publishers have no order between them: let the first arrive everywhere.
        await until(lambda: len(got["a"]) == 1 and len(got["b"]) == 1)
        await roost.publish_async(redis_server.url, "rooms:api", "announce", {"text": "from py"})
        offset = await roost.publish_async(
            redis_server.url,
            "rooms:api",
            "new:msg",
            {"id": "x1", "user": "bot", "body": "stored", "at": 0, "node": "bot"},
            store=True,
        )
        assert offset == 1
        await until(lambda: len(got["a"]) == 3 and len(got["b"]) == 3)
        for seen in got.values():
            assert seen[0] == {"text": "from the API"}
            assert seen[1] == {"text": "from py"}
            assert seen[2]["body"] == "stored" and seen[2]["offset"] == 1
    # The stored one is in the history a late joiner gets.
    async with Client(o2.ws_url) as late:
        reply = await late.channel("rooms:api").join()
        assert [m["body"] for m in reply["history"]] == ["stored"]


def test_publish_api_refuses_bad_requests(pair: list[ServerProcess]) -> None:
    o1, _ = pair
    url = f"{o1.url}/api/broadcast"
    ok = {"topic": "rooms:x", "event": "e", "payload": {}}
    assert post(url, ok, None)[0] == 401
    assert post(url, ok, "wrong")[0] == 401
    assert post(url, ok, "clé")[0] == 401  # non-ASCII: was a 500 (compare_digest on str)
    assert post(url, b"not json", "k3y") == (400, {"error": "body is not JSON"})
    assert post(url, [1], "k3y")[0] == 400
    assert post(url, {"topic": "", "event": "e"}, "k3y")[0] == 400
    assert post(url, {"topic": "rooms:x", "event": "phx_reply"}, "k3y")[0] == 400
    assert post(url, {"topic": "rooms:x", "event": "new:msg", "payload": [1]}, "k3y")[0] == 400
    assert post(url, b"{" + b" " * 70_000 + b"}", "k3y")[0] == 413


def test_server_header_names_no_versions(roost_server: ServerProcess) -> None:
    for path in ("/healthz", "/", "/static/roost.js", "/nowhere"):
        try:
            with urllib.request.urlopen(f"{roost_server.url}{path}", timeout=5) as resp:
                server = resp.headers.get("Server")
        except urllib.error.HTTPError as err:
            server = err.headers.get("Server")
        assert server == "roost", (path, server)


def test_publish_api_is_off_without_a_key(roost_server: ServerProcess) -> None:
    status, _ = post(f"{roost_server.url}/api/broadcast", {"topic": "t", "event": "e"}, "x")
    assert status in (404, 405)


async def test_sigterm_drains_and_clients_move_to_the_other_node(
    pair: list[ServerProcess],
) -> None:
    o1, o2 = pair
    clients = [Client(o1.ws_url, reconnect=False) for _ in range(200)]
    try:
        await _drain_scenario(o1, o2, clients)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def _drain_scenario(o1: ServerProcess, o2: ServerProcess, clients: list[Client]) -> None:
    await asyncio.gather(*(c.connect() for c in clients))
    codes: list[int | None] = []
    for c in clients:
        c.on_close.append(codes.append)
    joins = [c.channel("rooms:drain", {"user": f"u{i}"}) for i, c in enumerate(clients)]
    await asyncio.gather(*(j.join() for j in joins))
    async with Client(o2.ws_url) as watcher:
        online: set[str] = set()
        left: list[str] = []

        def diff(d: dict[str, Any]) -> None:
            online.update(d["joins"])
            online.difference_update(d["leaves"])
            left.extend(d["leaves"])

        w = watcher.channel("rooms:drain", {"user": "watcher"})
        w.on("presence_state", lambda state: online.update(state))
        w.on("presence_diff", diff)
        await w.join()
        await until(lambda: len(online) == 201, what="presence of 200 and the watcher")
        # A roost.client that moves: reconnects to the other node, keeps chatting.
        mover = Client(o1.ws_url)
        await mover.connect()
        moved = mover.channel("rooms:drain", {"user": "mover"})
        await moved.join()
        t0 = time.monotonic()
        o1.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(o1.proc.wait, 10) == 0
        took = time.monotonic() - t0
        await until(lambda: len(codes) == 200, what="all 200 closed")
        assert set(codes) == {1012}
        await until(lambda: len(set(left)) >= 201, what="every presence of o1 gone")
        mover.url = o2.ws_url  # a load balancer would send it there
        # roost.client's jittered backoff: at worst one 30 s window after the switch
        await until(lambda: moved.state == "joined" and mover.connected, 35, "rejoined on o2")
        assert moved.join_response["node"] == "o2"
        assert (await moved.push("new:msg", {"body": "still here"})).ok
        await mover.close()
    assert took < 10


def metric(url: str, name: str, **labels: str) -> float:
    """One sample from /metrics (summed over samples matching the labels)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name = head.split("{", 1)[0]
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
            found = True
    assert found, f"{name} {labels} not in /metrics"
    return total


async def test_metrics_move(pair: list[ServerProcess], redis_server: RedisProcess) -> None:
    o1, o2 = pair
    assert metric(o1.url, "roost_connections") == 0
    async with Client(o1.ws_url) as a, Client(o2.ws_url) as b:
        ca = a.channel("rooms:m", {"user": "a"})
        cb = b.channel("rooms:m", {"user": "b"})
        await ca.join()
        await cb.join()
        await until(lambda: metric(o1.url, "roost_presence_entries") == 1)
        assert metric(o1.url, "roost_connections") == 1
        assert metric(o1.url, "roost_channels_joined") == 1
        for i in range(5):
            await ca.push("new:msg", {"body": f"m{i}"})
        await until(lambda: metric(o2.url, "roost_broadcasts_received_total") >= 5)
        assert metric(o1.url, "roost_messages_in_total", **{"class": "push"}) == 5
        assert metric(o1.url, "roost_messages_in_total", **{"class": "join"}) == 1
        assert metric(o1.url, "roost_fastlane_deliveries_total") >= 5
        assert metric(o2.url, "roost_delivery_lag_seconds_count") >= 5
        assert metric(o1.url, "roost_broker_publish_seconds_count") >= 1
        assert metric(o1.url, "roost_broker_connected") == 1
        redis_server.stop()
        await until(lambda: metric(o1.url, "roost_broker_connected") == 0, what="disconnected")
        redis_server.start()
        await until(lambda: metric(o1.url, "roost_broker_connected") == 1, 20, "reconnected")
        assert metric(o1.url, "roost_redis_reconnects_total") >= 1
    await until(lambda: metric(o1.url, "roost_connections") == 0)
