"""The delivery promise under faults (issue 12).

Every acknowledged message (a ``new:msg`` push answered ``ok``) reaches every member of
its room exactly once and in per-publisher order, on every node: members connected
throughout, and members that rejoin with ``since`` (exactly what they missed, or
``recovered: false`` with a new epoch). A fault delays delivery, never silently drops
it; no ok join reply lacks ``offset``/``epoch``; no push for a topic is written before
that topic's join reply; ``/readyz`` tells the truth.

Real ``roost serve`` nodes and redis-servers (harness.Lab); every scenario is bounded
in seconds and checks the invariant after the room went quiet, so a gap must be filled
without a later message revealing it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Lab,
    Member,
    Publisher,
    ahttp_get,
    check_delivery,
    close_all,
    eventually,
    http_get,
    kill_node,
    pause_node,
    report,
    resume_node,
    rss_kib,
    serve_has,
    settle,
)

from roost.client import Client

from rawws import RawSocket

pytestmark = pytest.mark.faults

PUSH_DEADLINE = 10.0  # phoenix.js's push timeout: a later reply is no reply


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def publishers(names_urls: list[tuple[str, list[str]]], room: str, **kw: Any) -> list[Publisher]:
    return [Publisher(Member(name, urls, room), **kw) for name, urls in names_urls]


async def run_for(pubs: list[Publisher], stop: asyncio.Event) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(p.run(stop)) for p in pubs]


async def finish(tasks: list[asyncio.Task[None]], stop: asyncio.Event, timeout: float) -> None:
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout)


# -- 1. a node is killed mid-stream ------------------------------------------------------------


async def test_node_killed_mid_stream_members_rejoin_with_since(lab: Lab) -> None:
    r = lab.redis()
    n1, n2 = lab.node(r, "n1"), lab.node(r, "n2")
    u1, u2 = n1.ws_url, n2.ws_url
    room = "rooms:kill"
    stay = [Member(f"a{i}", [u1, u2], room) for i in range(4)]
    movers = [Member(f"b{i}", [u2, u1], room) for i in range(8)]
    pubs = publishers([("p1", [u1, u2]), ("p2", [u2, u1]), ("p3", [u2, u1])], room)
    everyone = stay + movers + [p.member for p in pubs]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        stop = asyncio.Event()
        tasks = await run_for(pubs, stop)
        await asyncio.sleep(1.5)
        t_kill = time.monotonic()
        kill_node(n2)
        await asyncio.sleep(2.5)
        await finish(tasks, stop, 30)
        await settle(everyone, pubs, timeout=10)
        verdict = check_delivery(everyone, pubs)
    finally:
        await close_all(everyone)
    not_moved = [m.name for m in movers + [p.member for p in pubs[1:]] if m.failovers != 1]
    report("node SIGKILL", verdict, rejoined=sum(m.failovers for m in everyone))
    assert not not_moved, f"members of n2 that did not rejoin on n1: {not_moved}"
    for pub in pubs:  # the scenario ran: every publisher was acked after the kill
        assert any(p.sent_at > t_kill for p in pub.acked), (pub.name, pub.pushes[-3:])
    assert verdict, verdict.message()


# -- 2, 3. Redis restarts while publishers send; then the room goes quiet ----------------------


@pytest.mark.parametrize(
    ("aof", "mode"),
    [(False, "topic"), (True, "topic"), (False, "global")],
    ids=["no-persistence", "aof", "no-persistence-global-mode"],
)
async def test_redis_restart_members_get_every_acked_message(
    lab: Lab, aof: bool, mode: str
) -> None:
    r = lab.redis(aof=aof)
    n1 = lab.node(r, "n1", "--pubsub-mode", mode)
    n2 = lab.node(r, "n2", "--pubsub-mode", mode)
    u1, u2 = n1.ws_url, n2.ws_url
    room = "rooms:restart"
    members = [Member(f"m{i}", [u1, u2] if i % 2 else [u2, u1], room) for i in range(6)]
    pubs = publishers([("p1", [u1, u2]), ("p2", [u2, u1]), ("p3", [u1, u2])], room)
    everyone = members + [p.member for p in pubs]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        stop = asyncio.Event()
        tasks = await run_for(pubs, stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(r.kill)
        # Down long enough for the nodes' subscribers to back off (their next attempt
        # lands seconds after Redis is back); publishers get errors and send new messages.
        await asyncio.sleep(4.0)
        await asyncio.to_thread(r.start)
        t_back = time.monotonic()
        await asyncio.sleep(1.5)  # acked at once, whether or not the subscribers are back
        await finish(tasks, stop, 30)
        # Quiet from here on: nothing may depend on a later message revealing the gap.
        await settle(everyone, pubs, timeout=12)
        verdict = check_delivery(everyone, pubs)
    finally:
        await close_all(everyone)
    after = sum(1 for pub in pubs for p in pub.acked if p.sent_at >= t_back)
    report(f"redis restart ({'aof' if aof else 'no persistence'}, {mode})", verdict, after=after)
    assert after > 0, "no message was acked after the restart: the scenario did not run"
    assert verdict, f"acked after the restart: {after}\n" + verdict.message()


# -- 4. Redis frozen (SIGSTOP) longer than a client's push timeout -------------------------------


async def test_redis_stopped_readyz_and_push_deadline(lab: Lab) -> None:
    extra = ("--redis-timeout", "3") if serve_has("--redis-timeout") else ()
    r = lab.redis()
    nodes = [lab.node(r, "n1", *extra), lab.node(r, "n2", *extra)]
    u1, u2 = nodes[0].ws_url, nodes[1].ws_url
    room = "rooms:frozen"
    members = [Member(f"m{i}", [u1, u2] if i % 2 else [u2, u1], room) for i in range(6)]
    pubs = publishers(
        [("p1", [u1, u2]), ("p2", [u2, u1]), ("p3", [u1, u2]), ("p4", [u2, u1])],
        room,
        interval=0.03,
        push_timeout=30.0,  # > 10 s, so a late ok is seen as such
    )
    everyone = members + [p.member for p in pubs]
    polls: dict[int, list[tuple[float, int]]] = {n.port: [] for n in nodes}
    polling = True

    async def poll_readyz(port: int) -> None:
        while polling:
            status, _ = await ahttp_get(f"http://127.0.0.1:{port}/readyz", timeout=1.0)
            polls[port].append((time.monotonic(), status))
            await asyncio.sleep(0.2)

    pollers = [asyncio.create_task(poll_readyz(n.port)) for n in nodes]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        stop = asyncio.Event()
        tasks = await run_for(pubs, stop)
        await asyncio.sleep(1.0)
        t_stop = time.monotonic()
        r.pause()
        await asyncio.sleep(12.0)
        r.resume()
        t_cont = time.monotonic()
        await asyncio.sleep(2.0)
        await finish(tasks, stop, 40)
        ready_again = await eventually(
            lambda: all(polls[n.port] and polls[n.port][-1][1] == 200 for n in nodes), 20
        )
        await settle(everyone, pubs, timeout=10)
        verdict = check_delivery(everyone, pubs)
    finally:
        polling = False
        await asyncio.gather(*pollers, return_exceptions=True)
        await close_all(everyone)

    latencies = [p.latency for pub in pubs for p in pub.pushes if p.latency is not None]
    report(
        "redis SIGSTOP 12 s",
        verdict,
        max_reply_s=f"{max(latencies):.2f}",
        errors=sum(len(pub.with_status("error")) for pub in pubs),
        readyz_503=sum(1 for n in nodes for _, st in polls[n.port] if st == 503),
    )
    failures = []
    for node in nodes:
        during = [s for t, s in polls[node.port] if t_stop + 0.5 <= t <= t_cont]
        if 503 not in during:
            failures.append(
                f"/readyz of :{node.port} never said 503 while Redis was stopped for "
                f"{t_cont - t_stop:.1f}s ({len(during)} polls: {sorted(set(during))})"
            )
    if not ready_again:
        failures.append("/readyz did not return to 200 within 20s of SIGCONT")
    slow = [
        f"{pub.name} {p.body}: {p.status} after {p.latency:.1f}s"
        if p.latency is not None
        else f"{pub.name} {p.body}: no reply within {pub.push_timeout:g}s ({p.response})"
        for pub in pubs
        for p in pub.pushes
        if p.latency is None or p.latency > PUSH_DEADLINE
    ]
    if slow:
        failures.append(
            f"{len(slow)} pushes not answered within {PUSH_DEADLINE:g}s: " + "; ".join(slow[:6])
        )
    if not verdict:
        failures.append(verdict.message())
    assert not failures, "\n".join(failures)


# -- 4b. a node frozen (SIGSTOP) longer than the presence timeout --------------------------------


@pytest.mark.parametrize("cut", [False, True], ids=["buffered", "cut-off"])
async def test_node_frozen_members_get_every_acked_message(lab: Lab, cut: bool) -> None:
    """Node 2 is frozen for longer than the presence timeout while node 1's publishers
    send. Its members (frozen with it, never disconnected) get every acked message
    once, in order, after SIGCONT — whether Redis kept the node's Pub/Sub backlog, or
    cut the subscriber connections meanwhile (``CLIENT KILL TYPE pubsub``, as Redis does
    to a subscriber whose output buffer overflows): the nodes reconnect and catch the
    room up from the stream."""
    r = lab.redis()
    n1, n2 = lab.node(r, "n1"), lab.node(r, "n2")
    u1, u2 = n1.ws_url, n2.ws_url
    room = "rooms:frozen-node"
    frozen = [Member(f"f{i}", [u2], room) for i in range(4)]
    awake = [Member(f"a{i}", [u1], room) for i in range(2)]
    pubs = publishers([("p1", [u1]), ("p2", [u1])], room, interval=0.01)
    everyone = frozen + awake + [p.member for p in pubs]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        stop = asyncio.Event()
        tasks = await run_for(pubs, stop)
        await asyncio.sleep(0.5)
        pause_node(n2)
        await asyncio.sleep(2.0)
        if cut:
            with r.client() as c:
                c.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await asyncio.sleep(2.5)  # frozen 4.5 s in all: > --presence-timeout 3
        resume_node(n2)
        await asyncio.sleep(1.0)
        await finish(tasks, stop, 30)
        await settle(everyone, pubs, timeout=15)
        verdict = check_delivery(everyone, pubs)
    finally:
        await close_all(everyone)
    moved = [m.name for m in frozen if m.failovers]
    assert not moved, f"members of the frozen node were disconnected: {moved}"
    report(f"node frozen ({'cut' if cut else 'buffered'})", verdict)
    assert verdict, verdict.message()
    if cut:
        status, health = http_get(f"{n2.url}/healthz")
        assert status == 200 and health["broker"]["reconnects"] >= 1, health["broker"]


# -- 4c. a node falls further behind than the stream keeps -------------------------------------


async def test_node_behind_the_stream_tells_its_members(lab: Lab) -> None:
    """Node 2 is frozen and its subscription cut while node 1 stores more messages than
    the stream keeps (--history-size 20). Its members cannot get them in order any more:
    they are told (phx_error on the room), rejoin with ``since`` and get
    ``recovered: false`` with the latest history — never a silent hole — and from then
    on every message once, in order."""
    r = lab.redis()
    small = ("--history-size", "20")
    n1, n2 = lab.node(r, "n1", *small), lab.node(r, "n2", *small)
    room = "rooms:behind"
    clients: list[Client] = []
    state: list[dict[str, Any]] = []
    try:
        for i in range(3):
            client = Client(n2.ws_url, {"user": f"f{i}"})
            await client.connect()
            clients.append(client)
            ch = client.channel(room, {"user": f"f{i}"})
            st: dict[str, Any] = {"live": [], "errors": 0, "rejoins": []}

            def on_msg(p: Any, st: dict[str, Any] = st) -> None:
                st["live"].append(p["offset"])

            def on_error(p: Any, st: dict[str, Any] = st, ch: Any = ch, i: int = i) -> None:
                st["errors"] += 1
                last = st["live"][-1] if st["live"] else st["joined"]["offset"]
                since = {"offset": last, "epoch": st["joined"]["epoch"]}
                ch.payload = {"user": f"f{i}", "since": since}  # the client's rejoin uses it

            ch.on("new:msg", on_msg)
            ch.on("phx_error", on_error)
            ch.on("rejoined", lambda reply, st=st: st["rejoins"].append(reply))
            st["joined"] = await ch.join()
            state.append(st)
        async with Client(n1.ws_url, {"user": "pub"}) as pub:
            pc = pub.channel(room, {"user": "pub"})
            await pc.join()

            async def send(n: int) -> None:
                for k in range(n):
                    assert (await pc.push("new:msg", {"body": f"m{k}"})).ok

            await send(5)
            await eventually(lambda: all(len(st["live"]) == 5 for st in state), 10)
            pause_node(n2)
            with r.client() as c:
                c.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

            def n1_back() -> bool:  # n1's subscriber was cut too: let it come back first
                broker = http_get(f"{n1.url}/healthz")[1]["broker"]
                return bool(broker["reconnects"] >= 1 and broker["connected"])

            assert await eventually(n1_back, 10)
            await send(60)  # far more than the 20 the stream keeps
            resume_node(n2)
            told = await eventually(lambda: all(st["rejoins"] for st in state), 15)
            await send(5)
            await eventually(lambda: all(len(st["live"]) >= 10 for st in state), 10)
            await asyncio.sleep(0.3)
    finally:
        for client in clients:
            await client.close()
    _, health = http_get(f"{n2.url}/healthz")
    recovered = [st["rejoins"][0]["recovered"] for st in state if st["rejoins"]]
    print(
        f"FIGURES node behind the stream: unfillable={health['broker']['unfillable']} "
        f"told={[st['errors'] for st in state]} recovered={recovered}"
    )
    assert told, f"members were not told: {[(st['errors'], st['live']) for st in state]}"
    assert health["broker"]["unfillable"] > 0
    for st in state:
        live, reply = st["live"], st["rejoins"][0]
        first = st["joined"]["offset"]
        before = live[: live.index(reply["offset"] + 1)] if reply["offset"] + 1 in live else live
        # Before the error: a gap-free run from the join; never a hole, never twice.
        assert before == list(range(first + 1, first + 1 + len(before))), before
        assert reply["recovered"] is False and reply["history"], reply
        history = [m["offset"] for m in reply["history"]]
        assert history == list(range(history[0], reply["offset"] + 1)), history
        after = live[len(before) :]
        assert after == list(range(reply["offset"] + 1, reply["offset"] + 1 + len(after)))
        assert len(after) == 5, after


# -- 5. a burst of joins on one node ------------------------------------------------------------


async def test_join_burst_every_reply_has_a_cursor(lab: Lab) -> None:
    r = lab.redis()
    n1, n2 = lab.node(r, "n1"), lab.node(r, "n2")
    u1, u2 = n1.ws_url, n2.ws_url
    rooms = [f"rooms:burst-{k}" for k in range(10)]
    observers = [Member(f"o1-{k}", [u1], room) for k, room in enumerate(rooms)]
    observers += [Member(f"o2-{k}", [u2], room) for k, room in enumerate(rooms)]
    sender = Publisher(Member("sender", [u1], "rooms:other"), interval=0.0)
    listener = Member("listener", [u2], "rooms:other")
    burst = [Member(f"b{i}", [u1], rooms[i % len(rooms)], failover=False) for i in range(200)]
    everyone = [*observers, sender.member, listener, *burst]
    try:
        await asyncio.gather(*(m.start() for m in [*observers, sender.member, listener]))
        stop = asyncio.Event()
        tasks = await run_for([sender], stop)
        gate = asyncio.Event()
        joins = [asyncio.create_task(m.start(15.0, gate)) for m in burst]
        await asyncio.wait_for(asyncio.gather(*(m.connected.wait() for m in burst)), 20)
        await asyncio.sleep(0.2)
        gate.set()  # 200 joins at once
        results = await asyncio.gather(*joins, return_exceptions=True)
        await asyncio.sleep(1.5)  # user:entered and the presence diffs (batched 50 ms)
        await finish(tasks, stop, 20)
        await settle([listener, sender.member], [sender], timeout=10)
        verdict = check_delivery([listener, sender.member], [sender])
    finally:
        await close_all(everyone)

    report(
        f"join burst ({len(burst)} joins)",
        verdict,
        ok_with_cursor=sum(1 for m in burst if m.joins and m.joins[0].status == "ok"
                           and not m.problems),
        sender_non_ok=sum(1 for p in sender.pushes if p.status != "ok"),
    )  # fmt: skip
    failures = []
    refused = [f"{m.name}: {res!r}" for m, res in zip(burst, results, strict=True)
               if isinstance(res, BaseException)]  # fmt: skip
    no_cursor = [m for m in burst if m.joins and m.joins[0].status == "ok" and any(
        "without offset" in p for p in m.problems)]  # fmt: skip
    if refused:
        failures.append(f"{len(refused)} of {len(burst)} joins failed: {refused[:3]}")
    if no_cursor:
        failures.append(
            f"{len(no_cursor)} of {len(burst)} ok join replies without offset/epoch, e.g. "
            f"{no_cursor[0].joins[0].response}"
        )
    early = [p for m in burst for p in m.problems if "before the join reply" in p]
    if early:
        failures.append(f"{len(early)} frames before a join reply, e.g. {early[0]}")
    bad = [p for p in sender.pushes if p.status != "ok"]
    if bad:
        failures.append(
            f"the unrelated sender got {len(bad)} non-ok replies of {len(sender.pushes)}: "
            f"{[(p.status, p.response) for p in bad[:3]]}"
        )
    if not verdict:
        failures.append("rooms:other: " + verdict.message(10))
    joined = {m.name: m.room for m in burst if m.joins and m.joins[0].status == "ok"}
    lost_entered = lost_diff = 0
    examples = []
    for o in observers:
        want = {name for name, room in joined.items() if room == o.room}
        entered = {p.get("user") for p in o.events.get("user:entered", [])}
        diffed = {name for p in o.events.get("presence_diff", []) for name in p.get("joins", {})}
        lost_entered += len(want - entered)
        lost_diff += len(want - diffed)
        if want - entered or want - diffed:
            examples.append(
                f"{o.name} ({o.room}): user:entered missing {len(want - entered)}, "
                f"presence_diff joins missing {len(want - diffed)}"
            )
    if lost_entered or lost_diff:
        failures.append(
            f"observers missed {lost_entered} user:entered and {lost_diff} presence_diff joins "
            f"of {len(joined)} joiners: " + "; ".join(examples[:4])
        )
    own = [m.name for m in burst if m.name in joined and m.name not in
           {p.get("user") for p in m.events.get("user:entered", [])}]  # fmt: skip
    if own:
        failures.append(f"{len(own)} joiners never got their own user:entered: {own[:5]}")
    assert not failures, "\n".join(failures)


# -- 6. the join boundary, seen on the wire ------------------------------------------------------


@dataclass
class JoinSample:
    before: list[str] = field(default_factory=list)  # topic frames ahead of the reply
    reply: Any = None
    after: list[int] = field(default_factory=list)  # new:msg offsets after the reply


async def join_repeatedly(url: str, room: str, n: int, rounds: int) -> list[JoinSample]:
    """One raw socket joins ``room`` ``rounds`` times, recording frames around each reply."""
    samples = []
    sock = await RawSocket.connect(url, f"vsn=2.0.0&user=j{n}")
    try:
        for k in range(rounds):
            ref, leave = f"{k}j", f"{k}l"
            sample = JoinSample()
            samples.append(sample)
            await sock.send(ref, ref, room, "phx_join", {"user": f"j{n}"})
            while True:
                f = await sock.recv(10)
                assert isinstance(f, list), f"socket closed: {f}"
                if f[3] == "phx_reply" and f[1] == ref:
                    sample.reply = f[4]
                    break
                if f[2] == room:
                    off = f[4].get("offset") if isinstance(f[4], dict) else None
                    sample.before.append(f"{f[3]}@{off}" if off is not None else str(f[3]))
            await asyncio.sleep(0.1)  # live messages queue up behind the reply
            await sock.send(ref, leave, room, "phx_leave", {})
            while True:  # everything up to the leave's reply and phx_close
                f = await sock.recv(10)
                assert isinstance(f, list), f"socket closed: {f}"
                if f[2] == room and f[3] == "new:msg" and isinstance(f[4], dict):
                    sample.after.append(f[4].get("offset", -1))
                if f[2] == room and f[3] == "phx_close" and f[0] == ref:
                    break
    finally:
        await sock.close()
    return samples


async def test_join_reply_precedes_pushes_and_history_meets_live(lab: Lab) -> None:
    r = lab.redis()
    n1, n2 = lab.node(r, "n1"), lab.node(r, "n2")
    u1, u2 = n1.ws_url, n2.ws_url
    room = "rooms:edge"
    pubs = publishers([(f"p{i}", [u1]) for i in range(3)], room, interval=0.0)
    steady = [Member("s1", [u1], room), Member("s2", [u2], room)]
    everyone = steady + [p.member for p in pubs]
    try:
        await asyncio.gather(*(m.start() for m in everyone))
        stop = asyncio.Event()
        tasks = await run_for(pubs, stop)
        await asyncio.sleep(0.3)
        per_joiner = await asyncio.gather(*(join_repeatedly(u2, room, i, 25) for i in range(6)))
        await finish(tasks, stop, 20)
        await settle(everyone, pubs, timeout=10)
        verdict = check_delivery(everyone, pubs)
    finally:
        await close_all(everyone)

    samples = [s for joiner in per_joiner for s in joiner]
    early, stale, broken, no_cursor = [], [], [], []
    for s in samples:
        response = s.reply.get("response", {}) if isinstance(s.reply, dict) else {}
        if s.before:
            early.append(s)
        if s.reply.get("status") != "ok" or not isinstance(response.get("offset"), int):
            no_cursor.append(s)
            continue
        top = response["offset"]
        if any(o <= top for o in s.after):
            stale.append(s)
        elif s.after and s.after != list(range(top + 1, top + 1 + len(s.after))):
            broken.append(s)
    report(
        f"join boundary ({len(samples)} joins during a stream)",
        verdict,
        frames_before_reply=len(early),
        pushed_at_or_below_reply=len(stale),
        live_after=sum(len(s.after) for s in samples),
    )
    failures = []
    if early:
        kinds = Counter(f.split("@")[0] for s in early for f in s.before)
        example = next((s for s in early if any("new:msg" in f for f in s.before)), early[0])
        failures.append(
            f"{len(early)} of {len(samples)} joins got topic frames before their join reply "
            f"({dict(kinds)}), e.g. {example.before[:6]} before a reply at offset "
            f"{(example.reply.get('response') or {}).get('offset')}"
        )
    if stale:
        s = stale[0]
        failures.append(
            f"{len(stale)} of {len(samples)} joins were pushed new:msg at or below the reply's "
            f"offset, e.g. reply offset {s.reply['response']['offset']}, then {s.after[:8]}"
        )
    if broken:
        s = broken[0]
        failures.append(
            f"{len(broken)} joins: live offsets after the reply not contiguous from it, e.g. "
            f"reply offset {s.reply['response']['offset']}, then {s.after[:8]}"
        )
    if no_cursor:
        failures.append(
            f"{len(no_cursor)} of {len(samples)} join replies not ok with an offset, e.g. "
            f"{no_cursor[0].reply}"
        )
    if not verdict:
        failures.append(verdict.message(10))
    assert not failures, "\n".join(failures)


# -- 7. a node re-enters a room ------------------------------------------------------------------


async def test_node_reentering_a_room_sends_no_duplicates(lab: Lab) -> None:
    r = lab.redis()
    n1, n2 = lab.node(r, "n1"), lab.node(r, "n2")
    u1, u2 = n1.ws_url, n2.ws_url
    room = "rooms:reenter"
    channel = f"roost:chat:t:{{{room}}}"
    pub = Publisher(Member("p", [u1], room), interval=0.0)
    first = Member("first", [u2], room, failover=False)
    second = Member("second", [u2], room, failover=False)
    redis_client = r.client()
    try:
        await pub.member.start()
        await first.start()
        await pub.send_many(5)
        assert await eventually(lambda: len(first.stream) >= 5, 10), first.stream
        await first.leave()
        await first.close()
        # n2 has no member left: it unsubscribes (only n1 stays subscribed).
        assert await eventually(lambda: redis_client.pubsub_numsub(channel)[0][1] == 1, 10), (
            redis_client.pubsub_numsub(channel)
        )
        await pub.send_many(20)
        await second.start()
        second.required_from = 0.0  # all 25 fit in its join's history
        await pub.send_many(1)
        await settle([second], [pub], timeout=10, extra=1.0)
        verdict = check_delivery([second], [pub])
        live = [m.body for m in second.stream if m.via == "live"]
    finally:
        redis_client.close()
        await close_all([pub, first, second])
    report("node re-entering a room", verdict, live_to_new_member=len(live))
    assert verdict, f"live deliveries to the new member: {live}\n" + verdict.message()
    assert live == ["p#26"], live


# -- 8. socket churn leaves nothing behind -----------------------------------------------------


async def test_socket_churn_leaves_nothing_behind(lab: Lab) -> None:
    r = lab.redis()
    nodes = [lab.node(r, "n1"), lab.node(r, "n2")]
    urls = [n.ws_url for n in nodes]
    problems: list[tuple[str, str]] = []  # (kind, detail)
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with sem:
            client = Client(urls[i % 2], {"user": f"c{i}"}, reconnect=False)
            try:
                await client.connect(10)
                ch = client.channel(f"rooms:churn-{i % 100}", {"user": f"c{i}"})
                reply = await ch.join(10)
                if not isinstance(reply.get("offset"), int) or not reply.get("epoch"):
                    problems.append(("ok join without a cursor", f"c{i}: {reply}"))
                sent = await ch.push("new:msg", {"body": f"c{i}"}, 10)
                if not sent.ok:
                    problems.append((f"push answered {sent.status}", f"c{i}: {sent.response}"))
                await ch.leave(5)
            except Exception as exc:
                problems.append((type(exc).__name__, f"c{i}: {exc!r}"))
            finally:
                await client.close()

    await asyncio.gather(*(one(i) for i in range(100)))  # warm-up: code paths, buffers
    rss0 = [rss_kib(n.proc.pid) for n in nodes]
    problems.clear()
    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(1000)))
    churn_s = time.monotonic() - t0

    redis_client = r.client()
    try:
        sockets_gone = await eventually(
            lambda: all(http_get(f"{n.url}/healthz")[1]["sockets"] == 0 for n in nodes), 15, 0.2
        )
        channels_gone = await eventually(
            lambda: not redis_client.pubsub_channels("roost:chat:t:*"), 15, 0.2
        )
        presence_gone = await eventually(
            lambda: not redis_client.keys("roost:chat:p*"), 3 * 3 + 5, 0.2
        )
        channels = redis_client.pubsub_channels("roost:chat:t:*")
        presence_keys = redis_client.keys("roost:chat:p*")
    finally:
        redis_client.close()
    rss1 = [rss_kib(n.proc.pid) for n in nodes]
    growth_mib = [(b - a) / 1024 for a, b in zip(rss0, rss1, strict=True)]
    print(
        f"FIGURES churn (1000 sockets, {churn_s:.1f} s): {len(problems)} problems, "
        f"sockets gone {sockets_gone}, "
        f"room channels left {len(channels)}, presence keys left {len(presence_keys)}, "
        f"RSS growth MiB {[round(g, 1) for g in growth_mib]}"
    )
    failures = []
    if problems:
        kinds = Counter(kind for kind, _ in problems)
        failures.append(
            f"{len(problems)} problems in 1000 sockets: {dict(kinds)}, e.g. {problems[0][1]}"
        )
    if not sockets_gone:
        counts = [http_get(f"{n.url}/healthz")[1]["sockets"] for n in nodes]
        failures.append(f"sockets left on the nodes: {counts}")
    if not channels_gone:
        failures.append(f"{len(channels)} room channels still subscribed: {channels[:5]}")
    if not presence_gone:
        failures.append(f"presence keys left: {presence_keys[:5]}")
    if max(growth_mib) > 100:
        failures.append(f"node RSS grew by {[round(g) for g in growth_mib]} MiB")
    assert not failures, (
        f"churn of 1000 sockets took {churn_s:.1f}s, RSS growth "
        f"{[round(g, 1) for g in growth_mib]} MiB\n" + "\n".join(failures)
    )
