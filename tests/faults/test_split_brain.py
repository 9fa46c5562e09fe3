"""The Sentinel split brain (issue 26): the old master keeps taking writes after a promotion.

Master M, replica R and three sentinels, each in a network namespace of its own, and two
roost nodes (a, b) in namespaces of their own on the sentinel URL; members and publishers
stay on the machine. M is cut from R and from the sentinels (not from the nodes, whose
connections to M stay up) long enough for the sentinels to promote R; then the cut heals,
the sentinels demote M (it resyncs from R: what it took during the cut is gone) and the
nodes follow R. Judged by:

- ``check_delivery``: every acknowledged message exactly once, in publisher order, on
  every member that stayed connected;
- the history promise: a fresh member rejoining with ``since`` = a position from before
  the cut gets either every acknowledged message after it (``recovered: true``) or
  ``recovered: false`` with a new epoch — never ``recovered: true`` with a hole.

Three variants:

- ``async``: no WAIT. M acknowledges writes that R never gets; the promotion loses them
  (members connected to M received them live). The history cannot bring them back, so the
  epoch must say so: every position of the old epoch answers ``recovered: false``.
- ``wait-replicas-1``: ``--redis-wait-replicas 1``. A stored publish is acknowledged only
  once the replica has it, so nothing acknowledged is lost and a position from before the
  cut may be recovered exactly. During the cut every stored publish is answered
  ``timeout`` — the WAIT found no replica in time — because the script had already stored
  and published the message on M before the WAIT, so members connected to M received it:
  ``timeout`` means "maybe stored, not known to survive a failover" (never ``temporarily
  unavailable``, which means "not sent"). Such a message may vanish from the history with
  M's demotion; it was never acknowledged, so the promise does not cover it (its sender
  may send it again with the same idempotency key: stored once where the first copy is
  kept). The refusals go on after the promotion while the
  nodes talk to R: it has no replica until M is demoted and resyncs from it, so every WAIT
  falls short until then (each after ``--redis-wait-timeout``: refused, not late).
- ``min-replicas``: Redis's own ``min-replicas-to-write 1`` / ``min-replicas-max-lag`` on
  both servers, no WAIT. M stops taking writes once its replica's last acknowledgement is
  older than the lag, but what it took in those first seconds is acknowledged and lost:
  the same verdict as ``async``, with fewer losses.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import (
    NODE_ARGS,
    Member,
    Publisher,
    RedisServer,
    check_delivery,
    close_all,
    eventually,
    report,
    settle,
)
from netlab import Host, Net, available

from roost.brokers.redis.keys import Keys

from support import ServerProcess, free_port, start_server

pytestmark = [pytest.mark.faults]

WHY = available()
if WHY is not None:
    pytestmark.append(pytest.mark.skip(reason=WHY))

ROOM = "rooms:split"
SERVICE = "mymaster"
CUT = 15.0  # seconds M is cut from R and the sentinels
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 2000
MIN_REPLICAS = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "2")
VARIANTS = {
    "async": ((), ()),
    "wait-replicas-1": (("--redis-wait-replicas", "1"), ()),
    "min-replicas": ((), MIN_REPLICAS),
}


@dataclass
class Sentinel:
    host: Host
    port: int
    proc: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host.ip, port=self.port, socket_timeout=0.5)

    def master(self) -> tuple[str, int] | None:
        try:
            with self.client() as r:
                found = r.sentinel_get_master_addr_by_name(SERVICE)
        except (redis.RedisError, OSError):
            return None
        if not found:
            return None
        host = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
        return host, int(found[1])

    def sees(self, replicas: int, others: int) -> bool:
        try:
            with self.client() as r:
                info = r.sentinel_master(SERVICE)
        except (redis.RedisError, OSError):
            return False
        return bool(info["num-slaves"] >= replicas and info["num-other-sentinels"] >= others)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_sentinel(host: Host, master: RedisServer, tmp: Path) -> Sentinel:
    port = free_port()
    conf = tmp / f"sentinel-{host.name}.conf"
    conf.write_text(
        f"port {port}\nbind {host.ip}\nprotected-mode no\ndir {tmp}\n"
        f"sentinel monitor {SERVICE} {master.host} {master.port} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [*host.exec_prefix(), binary, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Sentinel(host, port, proc)


def stored_ids(server: RedisServer) -> set[str]:
    """The ids of the messages in the room's history stream on ``server``."""
    with server.client() as r:
        entries = r.xrange(Keys().history_stream(ROOM))
    return {str(json.loads(fields[b"p"]).get("id")) for _, fields in entries}


def role(server: RedisServer) -> dict[str, Any]:
    try:
        with server.client() as r:
            return dict(r.info("replication"))
    except (redis.RedisError, OSError):
        return {}


@dataclass
class World:
    net: Net
    hosts: dict[str, Host]
    m: RedisServer
    r: RedisServer
    sentinels: list[Sentinel]
    nodes: dict[str, ServerProcess] = field(default_factory=dict)

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop(timeout=5)
        for s in self.sentinels:
            s.stop()
        self.m.kill()
        self.r.kill()
        self.net.close()

    def sentinel_url(self) -> str:
        hosts = ",".join(f"{s.host.ip}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    node_extra, redis_extra = VARIANTS[request.param]
    net = Net()
    w: World | None = None
    try:
        hosts = {n: net.host(n) for n in ("m", "r", "s1", "s2", "s3", "a", "b")}
        common = ("--repl-diskless-sync-delay", "0", *redis_extra)
        m = RedisServer(tmp_path / "m", host=hosts["m"].ip, wrap=hosts["m"].exec_prefix(),
                        extra=common).start()  # fmt: skip
        r = RedisServer(tmp_path / "r", host=hosts["r"].ip, wrap=hosts["r"].exec_prefix(),
                        extra=(*common, "--replicaof", m.host, str(m.port)))  # fmt: skip
        w = World(net, hosts, m, r, [])
        r.start()
        w.sentinels = [start_sentinel(hosts[s], m, tmp_path) for s in ("s1", "s2", "s3")]
        deadline = time.monotonic() + 30
        while not (role(m).get("connected_slaves") == 1 and all(s.sees(1, 2) for s in w.sentinels)):
            assert time.monotonic() < deadline, "the sentinel topology did not come up"
            time.sleep(0.1)
        for name in ("a", "b"):
            host = hosts[name]
            w.nodes[name] = start_server(
                "--redis", w.sentinel_url(), *NODE_ARGS,
                "--history-size", "20000",  # the last one counts: the cap must not decide
                "--redis-timeout", "3",
                *node_extra,
                "--allowed-origin", "*",
                node=name, log_dir=tmp_path, host=host.ip, wrap=host.exec_prefix(),
            )  # fmt: skip
    except BaseException:
        if w is not None:
            w.close()
        else:
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
    members = [Member(f"m{name}{i}", order[name], ROOM) for name in ("a", "b") for i in range(2)]
    # Two publishers at about 20 messages a second each (one at a time, 0.05 s apart).
    pubs = [
        Publisher(Member(f"p{name}", order[name], ROOM), interval=0.05, push_timeout=10.0)
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


def _acked_after(pubs: list[Publisher], t: float) -> bool:
    return all(any(p.sent_at > t for p in pub.acked) for pub in pubs)


@pytest.mark.parametrize("world", list(VARIANTS), indirect=True)
async def test_split_brain_history_never_recovers_with_a_hole(
    world: World, traffic: Run, request: pytest.FixtureRequest
) -> None:
    variant = request.node.callspec.params["world"]
    run = traffic
    m_host = world.hosts["m"]
    old_master = (world.m.host, world.m.port)
    assert await eventually(lambda: _acked_after(run.publishers, time.monotonic() - 1), 10)
    await asyncio.sleep(1.0)
    # The position a member had before the cut, and the messages it had by then.
    ref = run.members[0]
    assert ref.epoch is not None and ref.offset is not None
    since, before = (ref.offset, ref.epoch), ref.ids()

    t_cut = time.monotonic()
    for other in ("r", "s1", "s2", "s3"):
        world.net.cut(m_host, world.hosts[other])
    promoted = None
    while time.monotonic() - t_cut < CUT:
        if promoted is None and world.sentinels[1].master() not in (None, old_master):
            promoted = time.monotonic() - t_cut
        await asyncio.sleep(0.1)
    assert promoted is not None, "the sentinels did not promote R during the cut"
    world.net.heal()
    t_heal = time.monotonic()
    demoted = await eventually(
        lambda: (
            role(world.m).get("role") == "slave" and role(world.m).get("master_link_status") == "up"
        ),
        30,
        interval=0.2,
    )
    assert demoted, "M was not demoted after the heal"
    t_demoted = time.monotonic()
    assert await eventually(lambda: _acked_after(run.publishers, t_demoted), 30), (
        "no message acknowledged after M's demotion: the nodes did not follow R"
    )
    await asyncio.sleep(1.0)

    run.stop.set()
    await asyncio.gather(*run.tasks, return_exceptions=True)
    everyone = [*run.members, *(p.member for p in run.publishers)]
    await settle(everyone, run.publishers, timeout=15)
    verdict = check_delivery(everyone, run.publishers)

    # The key check: a fresh member rejoins with the position from before the cut.
    fresh = Member("fresh", [world.nodes["b"].ws_url, world.nodes["a"].ws_url], ROOM,
                   failover=False)  # fmt: skip
    fresh.offset, fresh.epoch = since
    try:
        reply = await fresh.start(timeout=15)
    finally:
        await close_all([fresh])
    assert isinstance(reply, dict), reply
    got = [r.id for r in fresh.stream if r.via == "history"]
    acked_ids = [p.id for pub in run.publishers for p in pub.acked]
    expected = [i for i in acked_ids if i not in before]
    holes = len(set(expected) - set(got)) if reply["recovered"] else 0
    dups = len(got) - len(set(got)) if reply["recovered"] else 0
    order_bad = 0
    if reply["recovered"]:
        for pub in run.publishers:
            mine = {p.id: p.seq for p in pub.acked}
            seqs = [mine[i] for i in got if i in mine]
            order_bad += sum(1 for x, y in itertools.pairwise(seqs) if y < x)

    stored = stored_ids(world.r)  # R is the master now
    history_lost = sum(1 for i in acked_ids if i not in stored)
    pushes = [p for pub in run.publishers for p in pub.pushes]
    refused = [p for p in pushes if p.status == "error"]
    refused_bodies = {p.body for p in refused}
    delivered_refused = len(
        {r.body for m in everyone for r in m.stream if r.body in refused_bodies}
    )
    # A refusal that says "not sent" is never delivered ("timeout" may be).
    unavailable = {
        p.body for p in refused if (p.response or {}).get("reason") == "temporarily unavailable"
    }
    assert not {r.body for m in everyone for r in m.stream} & unavailable
    late = sum(1 for p in pushes if p.latency is not None and p.latency > 6.0)
    report(
        f"split brain ({variant})", verdict,
        refused=len(refused), refused_delivered=delivered_refused,
        lost=sum(p.status == "lost" for p in pushes), history_lost=history_lost,
        acked_during_cut=sum(1 for p in pushes if p.status == "ok" and t_cut <= p.sent_at < t_heal),
        late_over_6s=late,
        promoted_after=f"{promoted:.1f}s", demoted_after_heal=f"{t_demoted - t_heal:.1f}s",
        rejoin_recovered=reply["recovered"], rejoin_new_epoch=reply["epoch"] != since[1],
        rejoin_history=len(got), expected=len(expected), holes=holes, dups=dups,
        misordered=order_bad,
    )  # fmt: skip

    # The promise on the rejoin: exactly what it missed, or recovered: false in a new epoch.
    if reply["recovered"]:
        assert holes == dups == order_bad == 0, (
            f"recovered: true from {since} with {holes} acknowledged messages missing, "
            f"{dups} duplicated, {order_bad} out of order"
        )
    else:
        assert reply["epoch"] != since[1], reply
    assert not fresh.problems, fresh.problems
    if variant == "wait-replicas-1":
        # Nothing acknowledged is lost: every member has every acked message, and so
        # does the history.
        assert verdict, verdict.message()
        assert history_lost == 0, f"{history_lost} acknowledged messages not in R's history"
    else:
        # Acknowledged writes taken by M during the cut are gone from the history, but the
        # live members got them (they were on M): nothing duplicated or out of order.
        assert verdict.duplicated == verdict.reordered == verdict.early_joins == 0, (
            verdict.message()
        )
