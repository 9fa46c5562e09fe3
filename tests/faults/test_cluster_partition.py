"""A Redis Cluster master cut from the rest of the cluster (issue 26, item 2).

Three masters with a replica each, every cluster server in a network namespace of its own
(netlab.py; ``--cluster-announce-ip`` its namespace's address, ``--cluster-node-timeout``
1000 ms), and two roost nodes (a, b) in namespaces of their own; members and publishers on
the machine, one room on each master. One master, V, is cut from the five other cluster
servers (its replica too) while the roost nodes still reach it, long enough for the
majority to fail it and promote its replica; then the cut heals and V comes back as a
replica of the new master. Meanwhile V, in the minority, takes writes until it notices
(about the node timeout) — acknowledged, published to the members, and lost with the
promotion (asynchronous replication) — and answers CLUSTERDOWN after.

Judged by:

- the rooms on the other masters: unaffected — every push acknowledged within the push
  deadline, every acknowledged message exactly once and in order on every member;
- V's room: no push answered later than the push deadline (refusals allowed); every
  acknowledged message exactly once and in order on every member connected throughout;
- the history: a newcomer on each node rejoining V's room with ``since`` = a position from
  before the cut gets every acknowledged message after it (``recovered: true``) or
  ``recovered: false`` with a new epoch — never a hole.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import (
    NODE_ARGS,
    Member,
    Publisher,
    RedisServer,
    check_delivery,
    close_all,
    report,
    settle,
)
from netlab import Host, Net, available
from redis.crc import key_slot

from roost.client import Client

from support import ServerProcess, start_server

pytestmark = [pytest.mark.faults]

WHY = available()
if WHY is not None:
    pytestmark.append(pytest.mark.skip(reason=WHY))

DEADLINE = 5.0  # the default --push-deadline
NODE_TIMEOUT_MS = 1000
PORT = 6379
CUT = 10.0  # seconds V is cut from the rest of the cluster
CLUSTER_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    "--cluster-require-full-coverage", "no",
    "--repl-diskless-sync-delay", "0",
)  # fmt: skip


@dataclass
class Shard:
    master: RedisServer
    replica: RedisServer
    room: str = ""


@dataclass
class World:
    net: Net
    hosts: dict[str, Host]
    servers: list[RedisServer]
    shards: list[Shard]
    nodes: dict[str, ServerProcess]


def _cli(server: RedisServer, *args: str, timeout: float = 5.0) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", server.host, "-p", str(server.port), *args],
        capture_output=True, timeout=timeout, check=True, text=True,
    )  # fmt: skip
    return out.stdout


def _cluster_nodes(server: RedisServer) -> list[list[str]]:
    return [line.split() for line in _cli(server, "CLUSTER", "NODES").splitlines() if line]


def _state_ok(servers: list[RedisServer]) -> bool:
    try:
        return all("cluster_state:ok" in _cli(s, "CLUSTER", "INFO") for s in servers)
    except (subprocess.SubprocessError, OSError):
        return False


def _wait(pred: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:g}s")


def _room_on(master: RedisServer, servers: list[RedisServer], prefix: str) -> str:
    """A room whose slot ``master`` serves."""
    me = f"{master.host}:{master.port}@"
    line = next(p for p in _cluster_nodes(servers[0]) if p[1].startswith(me))
    ranges = [r.split("-") for r in line[8:] if not r.startswith("[")]
    i = 0
    while True:
        room = f"rooms:{prefix}{i}"
        slot = key_slot(f"roost:chat:t:{{{room}}}".encode())
        if any(int(r[0]) <= slot <= int(r[-1]) for r in ranges):
            return room
        i += 1


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    net = Net()
    servers: list[RedisServer] = []
    nodes: dict[str, ServerProcess] = {}
    try:
        hosts = {f"r{i}": net.host(f"r{i}") for i in range(6)}
        hosts.update({"a": net.host("a"), "b": net.host("b")})
        for i in range(6):
            h = hosts[f"r{i}"]
            server = RedisServer(
                tmp_path / f"r{i}", host=h.ip, wrap=h.exec_prefix(),
                extra=[*CLUSTER_ARGS, "--cluster-announce-ip", h.ip,
                       "--cluster-config-file", str(tmp_path / f"r{i}" / "nodes.conf")],
            )  # fmt: skip
            server.port = PORT  # a namespace of its own: its ports (and PORT + 10000) are free
            servers.append(server.start())
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"{s.host}:{s.port}" for s in servers),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        _wait(lambda: _state_ok(servers), 30, "cluster_state:ok")
        by_id = {p[0]: p for p in _cluster_nodes(servers[0])}
        at = {f"{s.host}:{s.port}": s for s in servers}
        shards = []
        for p in by_id.values():
            if "slave" in p[2]:
                master = at[by_id[p[3]][1].split("@")[0]]
                shards.append(Shard(master, at[p[1].split("@")[0]]))
        assert len(shards) == 3, by_id
        for n, shard in enumerate(shards):
            shard.room = _room_on(shard.master, servers, f"s{n}x")
        for name in ("a", "b"):
            h = hosts[name]
            nodes[name] = start_server(
                "--redis", servers[0].url, *NODE_ARGS, "--allowed-origin", "*",
                node=name, log_dir=tmp_path, host=h.ip, wrap=h.exec_prefix(),
            )  # fmt: skip
        yield World(net, hosts, servers, shards, nodes)
    finally:
        for node in nodes.values():
            node.stop(timeout=5)
        for s in servers:
            s.kill()
        net.close()


def _host_of(w: World, server: RedisServer) -> Host:
    return next(h for h in w.hosts.values() if h.ip == server.host)


async def _rejoin_since(w: World, room: str, since: tuple[str, int], after: set[str]) -> str:
    """A newcomer on each node rejoins ``room`` from ``since``: ``after`` (every acknowledged
    message the members saw after it) in order (recovered), or recovered: false with a new
    epoch — never a hole."""
    epoch, offset = since
    outcome = []
    for name, node in w.nodes.items():
        client = Client(node.ws_url, {"user": f"late{name}"}, reconnect=False)
        try:
            await client.connect(5.0)
            channel = client.channel(
                room, {"user": f"late{name}", "since": {"epoch": epoch, "offset": offset}}
            )
            response = await channel.join(5.0)
        finally:
            await client.close()
        history = response.get("history") or []
        if response.get("recovered") is True:
            assert response.get("epoch") == epoch or epoch.startswith("~"), (epoch, response)
            offsets = [m["offset"] for m in history]
            assert offsets == list(range(offset + 1, offset + 1 + len(offsets))), offsets[:20]
            missing = after - {m["body"] for m in history}
            assert not missing, ("recovered with a hole", len(missing), sorted(missing)[:5])
            outcome.append(f"{name}:recovered+{len(history)}")
        else:
            assert response.get("recovered") is False and response.get("epoch") != epoch, response
            outcome.append(f"{name}:not-recovered")
    return ",".join(outcome)


async def test_cluster_master_isolated(world: World) -> None:
    w = world
    victim = w.shards[0]
    urls = (w.nodes["a"].ws_url, w.nodes["b"].ws_url)
    rooms = [s.room for s in w.shards]
    members: dict[str, list[Member]] = {}
    pubs: dict[str, list[Publisher]] = {}
    for room in rooms:
        members[room] = [
            Member(f"{room}-m{i}", [urls[i % 2], urls[1 - i % 2]], room, failover=False)
            for i in range(2)
        ]
        pubs[room] = [
            Publisher(Member(f"{room}-p{i}", [urls[i % 2], urls[1 - i % 2]], room), 0.02)
            for i in range(2)
        ]
    everyone = [m for room in rooms for m in [*members[room], *(p.member for p in pubs[room])]]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        tasks = [asyncio.create_task(p.run(stop)) for room in rooms for p in pubs[room]]
        await asyncio.sleep(1.5)
        first = members[victim.room][0]
        assert first.epoch is not None and first.offset is not None
        since = (first.epoch, first.offset)
        vh = _host_of(w, victim.master)
        t0 = time.monotonic()
        for s in w.servers:
            if s is not victim.master:
                w.net.cut(vh, _host_of(w, s))
        others = [s for s in w.servers if s is not victim.master]

        def promoted() -> bool:
            try:
                flags = {p[1].split("@")[0]: p[2] for p in _cluster_nodes(others[0])}
            except (subprocess.SubprocessError, OSError):
                return False
            replica = f"{victim.replica.host}:{victim.replica.port}"
            return "master" in flags.get(replica, "")

        took = await asyncio.to_thread(_wait, promoted, CUT, "the replica promoted")
        await asyncio.sleep(max(0.0, CUT - (time.monotonic() - t0)))
        w.net.heal()
        t_heal = time.monotonic()
        back = await asyncio.to_thread(_wait, lambda: _state_ok(w.servers), 30, "healed")
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        for room in rooms:
            await settle([*members[room], *(p.member for p in pubs[room])], pubs[room], 15)
        acked = {p.body for pub in pubs[victim.room] for p in pub.acked}
        seen = {
            r.body for m in members[victim.room] for r in m.stream if (r.offset or 0) > since[1]
        }
        rejoin = await _rejoin_since(w, victim.room, since, seen & acked)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all(everyone)

    failures = []
    for room in rooms:
        room_members = [*members[room], *(p.member for p in pubs[room])]
        verdict = check_delivery(room_members, pubs[room])
        pushes = [p for pub in pubs[room] for p in pub.pushes]
        late = [p.latency for p in pushes if p.latency is not None and p.latency > DEADLINE + 0.5]
        refused = [p for p in pushes if p.status != "ok"]
        reasons = sorted({str((p.response or {}).get("reason", p.status)) for p in refused})
        where = "isolated master" if room == victim.room else "other master"
        during = [p for p in pub_acked(pubs[room]) if t0 <= p.sent_at < t_heal]
        report(
            f"cluster master isolated ({where})", verdict,
            refused=len(refused), reasons="/".join(reasons) or "-", late=len(late),
            acked_during_cut=len(during),
            worst=f"{max((p.latency or 0) for p in pushes):.2f}s",
            promoted=f"{took:.1f}s", cut=f"{CUT:g}s", healed=f"{back:.1f}s",
            **({"rejoin": rejoin} if room == victim.room else {}),
        )  # fmt: skip
        if not verdict:
            failures.append(f"{room}: {verdict.message()}")
        if late:
            failures.append(f"{room}: {len(late)} pushes answered after the deadline")
        if room != victim.room and refused:
            failures.append(f"{room} (other master): {len(refused)} refused {reasons}")
    assert not failures, "\n".join(failures)


def pub_acked(pubs: list[Publisher]) -> list[Any]:
    return [p for pub in pubs for p in pub.acked]
