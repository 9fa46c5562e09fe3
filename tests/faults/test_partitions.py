"""When the network lies (issue 26): paths cut silently between namespaces (netlab.py).

Redis and two nodes, each in a network namespace of its own; the members and publishers stay
on the machine and keep their paths to both nodes. A path is cut with iptables DROP (no
reset: packets vanish), both ways or one way, shorter and longer than the presence timeout,
then healed. Every scenario is judged by the fault suite's checker (every acked message
exactly once and in publisher order on every member; a refused one never delivered) and by
the deadline: no push is answered later than ``--push-deadline``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import (
    NODE_ARGS,
    Member,
    Publisher,
    RedisServer,
    ahttp_get,
    check_delivery,
    close_all,
    report,
    serve_has,
    settle,
)
from netlab import Host, Net, available

from support import ServerProcess, start_server

pytestmark = [pytest.mark.faults]

WHY = available()
if WHY is not None:
    pytestmark.append(pytest.mark.skip(reason=WHY))

DEADLINE = 3.0  # --push-deadline of the nodes here (phoenix.js gives up after 10 s)
REDIS_TIMEOUT = 3.0
ROOM = "rooms:partition"


@dataclass
class World:
    net: Net
    redis_host: Host
    hosts: dict[str, Host]
    redis: RedisServer
    nodes: dict[str, ServerProcess]
    tmp: Path

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop(timeout=5)
        self.redis.kill()
        self.net.close()


def _node(world_hosts: dict[str, Host], name: str, redis: RedisServer, tmp: Path) -> ServerProcess:
    host = world_hosts[name]
    return start_server(
        "--redis", redis.url, *NODE_ARGS,
        "--redis-timeout", str(REDIS_TIMEOUT),
        *(["--push-deadline", str(DEADLINE)] if serve_has("--push-deadline") else []),
        "--allowed-origin", "*",
        node=name, log_dir=tmp, host=host.ip, wrap=host.exec_prefix(),
    )  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    net = Net()
    try:
        rh = net.host("redis")
        hosts = {"a": net.host("a"), "b": net.host("b")}
        redis = RedisServer(tmp_path / "redis", host=rh.ip, wrap=rh.exec_prefix()).start()
        nodes = {name: _node(hosts, name, redis, tmp_path) for name in hosts}
        w = World(net, rh, hosts, redis, nodes, tmp_path)
    except BaseException:
        net.close()
        raise
    try:
        yield w
    finally:
        w.close()


@dataclass
class Run:
    members: list[Member]
    publishers: list[Publisher]
    stop: asyncio.Event
    tasks: list[asyncio.Task[Any]]


@pytest.fixture
async def traffic(world: World) -> AsyncIterator[Run]:
    urls = {name: node.ws_url for name, node in world.nodes.items()}
    order = {"a": [urls["a"], urls["b"]], "b": [urls["b"], urls["a"]]}
    members = [Member(f"m{name}{i}", order[name], ROOM) for name in ("a", "b") for i in range(3)]
    pubs = [
        Publisher(Member(f"p{name}", order[name], ROOM), interval=0.02, push_timeout=10.0)
        for name in ("a", "b")
    ]
    for m in [*members, *(p.member for p in pubs)]:
        await m.start()
    stop = asyncio.Event()
    run = Run(members, pubs, stop, [asyncio.create_task(p.run(stop)) for p in pubs])
    try:
        yield run
    finally:
        stop.set()
        await asyncio.gather(*run.tasks, return_exceptions=True)
        await close_all([*members, *pubs])


def _late(pubs: list[Publisher], limit: float) -> list[float]:
    return sorted(
        p.latency for pub in pubs for p in pub.pushes if p.latency is not None and p.latency > limit
    )


async def _ready_503_after(node: ServerProcess, since: float, timeout: float) -> float | None:
    deadline = since + timeout
    while time.monotonic() < deadline:
        status, _ = await ahttp_get(f"{node.url}/readyz", timeout=1.0)
        if status == 503:
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return None


async def _judge(world: World, run: Run, scenario: str, **figures: Any) -> None:
    run.stop.set()
    await asyncio.gather(*run.tasks, return_exceptions=True)
    everyone = [*run.members, *(p.member for p in run.publishers)]
    await settle(everyone, run.publishers, timeout=20)
    verdict = check_delivery(everyone, run.publishers)
    pushes = [p for pub in run.publishers for p in pub.pushes]
    late = _late(run.publishers, DEADLINE + 0.5)
    refused = [p for p in pushes if p.status == "error"]
    refused_ids = {p.id for p in refused if p.id}
    delivered_refused = sum(1 for m in everyone for r in m.stream if r.id in refused_ids)
    report(
        scenario, verdict,
        refused=len(refused), lost=sum(p.status == "lost" for p in pushes),
        late=len(late), worst=f"{max((p.latency or 0) for p in pushes):.2f}s", **figures,
    )  # fmt: skip
    assert verdict, verdict.message()
    assert not late, f"{len(late)} pushes answered after the deadline: {late[-5:]}"
    assert delivered_refused == 0


@pytest.mark.parametrize("seconds", [12.0], ids=["long"])
async def test_silent_cut_node_redis(world: World, traffic: Run, seconds: float) -> None:
    """Node a's path to Redis drops every packet both ways; its clients keep reaching it."""
    await asyncio.sleep(1.0)
    t0 = time.monotonic()
    world.net.cut(world.hosts["a"], world.redis_host)
    detect = asyncio.create_task(_ready_503_after(world.nodes["a"], t0, seconds))
    await asyncio.sleep(seconds)
    world.net.heal()
    detected = await detect
    healed = time.monotonic()
    await asyncio.sleep(1.5)
    await _judge(
        world, traffic, f"cut a<->redis {seconds:g}s",
        detect=f"{detected:.2f}s" if detected is not None else "never",
        healed_after=f"{healed - t0:.1f}s",
    )  # fmt: skip
