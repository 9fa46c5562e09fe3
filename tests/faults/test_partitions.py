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
import urllib.request
from collections import Counter
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

DEADLINE = 5.0  # the default --push-deadline (phoenix.js gives up after 10 s)
REDIS_TIMEOUT = 3.0  # the default --redis-timeout
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
        "--probe-interval", "1",  # the default (the suite's NODE_ARGS probe faster)
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
    # Pipelined: a new message every 20 ms whatever the replies (50 msg/s per publisher).
    run = Run(members, pubs, stop, [asyncio.create_task(p.run_pipelined(stop)) for p in pubs])
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


def _reason(push: Any) -> str:
    response = push.response
    return str(response.get("reason")) if isinstance(response, dict) else str(response)


async def _ready_503_after(node: ServerProcess, since: float, timeout: float) -> float | None:
    deadline = since + timeout
    while time.monotonic() < deadline:
        status, _ = await ahttp_get(f"{node.url}/readyz", timeout=1.0)
        if status == 503:
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return None


def _metric(node: ServerProcess, name: str) -> float:
    """The sum of a /metrics family's samples (0 when absent or unreachable)."""
    try:
        with urllib.request.urlopen(f"{node.url}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        sample = line.split("{")[0].split(" ")[0]
        if sample in (name, f"{name}_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _metric_rises(
    node: ServerProcess, name: str, since: float, timeout: float
) -> float | None:
    """Seconds after ``since`` until the counter ``name`` moves (None: it did not)."""
    start = await asyncio.to_thread(_metric, node, name)
    while time.monotonic() - since < timeout:
        if await asyncio.to_thread(_metric, node, name) > start:
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return None


async def _online(url: str, who: str) -> set[str] | None:
    """The room's online names as a newcomer on ``url`` sees them (None: no answer)."""
    client = Client(url, {"user": who}, reconnect=False)
    state: dict[str, Any] = {}
    try:
        await client.connect(3.0)
        channel = client.channel(ROOM, {"user": who})
        channel.on("presence_state", state.update)
        await channel.join(3.0)
        await eventually(lambda: bool(state), 2.0)
    except Exception:
        return None
    finally:
        await client.close()
    return set(state) - {who}


async def _presence_converged(world: World, run: Run, timeout: float) -> float | None:
    """Seconds until every node lists exactly the connected members (None: never)."""
    want = {m.name for m in [*run.members, *(p.member for p in run.publishers)]}
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < timeout:
        n += 1
        seen = [await _online(node.ws_url, f"obs{n}{name}") for name, node in world.nodes.items()]
        if all(
            names is not None and {n for n in names if not n.startswith("obs")} == want
            for names in seen
        ):
            return time.monotonic() - t0
        await asyncio.sleep(0.5)
    return None


async def _rejoin_since(world: World, run: Run, since: tuple[str, int]) -> str:
    """A newcomer on each node rejoins from ``since`` (a position from before the fault): it
    gets every acked message after it, in order (``recovered: true``), or ``recovered:
    false`` with a new epoch — never a hole. Returns what it got, per node."""
    epoch, offset = since
    acked = {p.body for pub in run.publishers for p in pub.acked}
    outcome = []
    for name, node in world.nodes.items():
        client = Client(node.ws_url, {"user": f"late{name}"}, reconnect=False)
        try:
            await client.connect(5.0)
            channel = client.channel(
                ROOM, {"user": f"late{name}", "since": {"epoch": epoch, "offset": offset}}
            )
            reply = await channel.join(5.0)
        finally:
            await client.close()
        response = reply if isinstance(reply, dict) else {}
        history = response.get("history") or []
        offsets = [m["offset"] for m in history]
        if response.get("recovered") is True:
            # (a position taken on the empty room, ``~<stamp>``, continues into its first epoch)
            assert response.get("epoch") == epoch or epoch.startswith("~"), (epoch, response)
            assert offsets == list(range(offset + 1, offset + 1 + len(offsets))), offsets[:20]
            got = {m["body"] for m in history}
            # every acked message after the position is there (those before it were seen)
            after = {r.body for m in run.members for r in m.stream if (r.offset or 0) > offset}
            assert (after & acked) <= got, sorted((after & acked) - got)[:10]
            outcome.append(f"{name}:recovered+{len(history)}")
        else:
            assert response.get("recovered") is False and response.get("epoch") != epoch, response
            outcome.append(f"{name}:not-recovered")
    return ",".join(outcome)


def _position(member: Member) -> tuple[str, int]:
    assert member.epoch is not None and member.offset is not None
    return member.epoch, member.offset


async def _judge(
    world: World, run: Run, scenario: str, since: tuple[str, int], **figures: Any
) -> None:
    run.stop.set()
    await asyncio.gather(*run.tasks, return_exceptions=True)
    everyone = [*run.members, *(p.member for p in run.publishers)]
    await settle(everyone, run.publishers, timeout=20)
    converged = await _presence_converged(world, run, 20.0)
    rejoined = await _rejoin_since(world, run, since)
    verdict = check_delivery(everyone, run.publishers)
    pushes = [p for pub in run.publishers for p in pub.pushes]
    late = _late(run.publishers, DEADLINE + 0.5)
    refused = [p for p in pushes if p.status == "error"]
    # "temporarily unavailable": certainly not stored, never delivered; "timeout": maybe
    # stored (at most once: acked ones are checked above, these here).
    bodies = Counter(r.body for m in everyone for r in m.stream)
    unavailable = [p for p in refused if _reason(p) == "temporarily unavailable"]
    timeouts = [p for p in refused if _reason(p) == "timeout"]
    delivered_unavailable = [p.body for p in unavailable if bodies[p.body]]
    timeouts_twice = [p.body for p in timeouts if bodies[p.body] > len(everyone)]
    report(
        scenario, verdict,
        unavailable=len(unavailable), timeouts=len(timeouts),
        timeouts_delivered=sum(1 for p in timeouts if bodies[p.body]),
        lost=sum(p.status == "lost" for p in pushes), late=len(late),
        worst=f"{max((p.latency or 0) for p in pushes):.2f}s",
        converge=f"{converged:.1f}s" if converged is not None else "never", rejoin=rejoined,
        **figures,
    )  # fmt: skip
    assert verdict, verdict.message()
    assert not late, f"{len(late)} pushes answered after the deadline: {late[-5:]}"
    assert not [p for p in pushes if p.status == "lost"], "pushes without any answer"
    assert not delivered_unavailable, f"refused as unavailable, delivered: {delivered_unavailable}"
    assert not timeouts_twice, timeouts_twice
    assert {_reason(p) for p in refused} <= {"temporarily unavailable", "timeout"}
    assert converged is not None, "presence did not converge on both nodes after the heal"


CUTS = {
    "both": lambda net, a, r: net.cut(a, r),
    "node-to-redis": lambda net, a, r: net.cut_one_way(a, r),
    "redis-to-node": lambda net, a, r: net.cut_one_way(r, a),
}


@pytest.mark.parametrize(
    ("how", "seconds"),
    [
        ("both", 2.0),
        ("both", 8.0),
        ("node-to-redis", 2.0),
        ("node-to-redis", 8.0),
        ("redis-to-node", 2.0),
        ("redis-to-node", 8.0),
    ],
    ids=lambda v: f"{v:g}s" if isinstance(v, float) else str(v),
)
async def test_silent_cut_node_redis(world: World, traffic: Run, how: str, seconds: float) -> None:
    """Node a's path to Redis drops packets (both ways or one); its clients keep reaching it.

    Short: under the presence timeout (3 s here) and the push deadline; long: past both."""
    await asyncio.sleep(1.0)
    since = _position(traffic.members[0])
    t0 = time.monotonic()
    CUTS[how](world.net, world.hosts["a"], world.redis_host)
    detect = asyncio.create_task(_ready_503_after(world.nodes["a"], t0, seconds))
    await asyncio.sleep(seconds)
    world.net.heal()
    detected = await detect
    if seconds > DEADLINE:  # a silent path is found within the push deadline
        assert detected is not None and detected <= DEADLINE, detected
    await asyncio.sleep(1.0)
    await _judge(
        world, traffic, f"cut {how} a/redis {seconds:g}s", since,
        detect=f"{detected:.2f}s" if detected is not None else "never",
    )  # fmt: skip


async def test_silent_subscriber_connection(world: World, traffic: Run) -> None:
    """Only node a's subscriber connection goes silent (Redis's packets to it vanish); its
    commands still work, so pushes are acknowledged all along. The liveness probe finds the
    silent subscription inside the push deadline and restarts it; a's members get every
    message, late, once, in order."""
    await asyncio.sleep(1.0)
    since = _position(traffic.members[0])
    clients = world.redis.client().client_list()
    subscriber = [c for c in clients if c["addr"].startswith(world.hosts["a"].ip + ":")
                  and int(c.get("sub", 0)) > 0]  # fmt: skip
    assert len(subscriber) == 1, clients
    port = int(subscriber[0]["addr"].rsplit(":", 1)[1])
    t0 = time.monotonic()
    watch = asyncio.create_task(_metric_rises(world.nodes["a"], "roost_probe_restarts", t0, 8.0))
    world.net.cut_tcp(world.redis_host, world.hosts["a"], port)
    detected = await watch  # (readiness is 503 only while the new subscription confirms)
    await asyncio.sleep(max(0.0, 8.0 - (time.monotonic() - t0)))
    world.net.heal()
    assert detected is not None and detected <= DEADLINE, detected
    await asyncio.sleep(1.0)
    await _judge(
        world, traffic, "subscriber connection silent 8s", since,
        detect=f"{detected:.2f}s",
    )  # fmt: skip


async def test_redis_frozen(world: World, traffic: Run) -> None:
    """Redis stopped (SIGSTOP) past the push deadline: answers inside it, nothing lost."""
    await asyncio.sleep(1.0)
    since = _position(traffic.members[0])
    world.redis.pause()
    await asyncio.sleep(8.0)
    world.redis.resume()
    await asyncio.sleep(1.0)
    await _judge(world, traffic, "redis frozen 8s", since)


async def test_a_lost_answer_retried_with_its_key_is_stored_once(world: World) -> None:
    """Redis's answers to node a vanish (its requests still arrive): a message handed to
    Redis is stored and published but its sender hears ``timeout``; ``roost chat``'s sender
    (terminal.send_message) sends it again with the same idempotency key once the path
    heals, gets ``ok`` with the first copy's id, and every member sees it once."""
    from roost.terminal import send_message

    urls = [world.nodes["a"].ws_url, world.nodes["b"].ws_url]
    listeners = [Member(f"l{i}", [url], ROOM, failover=False) for i, url in enumerate(urls)]
    for m in listeners:
        await m.start()
    sender = Client(urls[0], {"user": "sender"}, reconnect=False)
    await sender.connect(5.0)
    channel = sender.channel(ROOM, {"user": "sender"})
    await channel.join(5.0)
    replies: list[Any] = []
    original = channel.push

    async def recording_push(event: str, payload: Any, timeout: float = 10.0) -> Any:
        reply = await original(event, payload, timeout)
        replies.append(reply)
        return reply

    channel.push = recording_push  # type: ignore[method-assign]
    try:
        assert (await send_message(channel, "warm-up")).ok
        world.net.cut_one_way(world.redis_host, world.hosts["a"])
        sending = asyncio.create_task(send_message(channel, "once, please", (4.0, 4.0, 4.0)))
        await asyncio.sleep(DEADLINE + 1.0)
        # It was stored and published (node b's member has it) though a heard "timeout".
        stored_in_cut = any(r.body == "once, please" for r in listeners[1].stream)
        world.net.heal()
        reply = await sending
        await asyncio.sleep(2.0)  # the subscriber of a resubscribes and catches up
        assert reply.ok, reply
        first = replies[1]
        assert first.response == {"reason": "timeout"}, first.response
        copies = [sum(1 for r in m.stream if r.body == "once, please") for m in listeners]
        report(
            "lost answer, retried with its key", check_delivery(listeners, []),
            attempts=len(replies) - 1, first=first.response.get("reason"), copies=copies,
            stored_in_cut=stored_in_cut,
        )  # fmt: skip
        assert stored_in_cut, "the first copy should have been stored during the cut"
        assert copies == [1, 1], copies
        assert [r.id for m in listeners for r in m.stream if r.body == "once, please"] == [
            reply.response["id"]
        ] * 2
    finally:
        await sender.close()
        await close_all(listeners)
