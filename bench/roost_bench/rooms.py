"""Scenario ``rooms``: many small rooms over two nodes; ``global`` vs ``topic`` routing.

1,000 rooms x 10 members (cheap counting clients) spread over two roost nodes on one
private redis-server. A share of the rooms (``split``) has members on both nodes; the
others are local to one node, alternately n1 and n2 — a balancer with some room
affinity. Publishers are control sockets on the node where a room's members are (on
either node for a split room), each push ``fire`` sending ``messages`` broadcasts into
one room, as chat users post into their rooms.

Measured per mode, over ``rounds`` rounds:

- **throughput**: deliveries/s to the members (all bytes in / frame size / time from
  the first push to the last byte);
- **per-node Redis bytes**: what each node's subscriber connection received, read from
  the kernel's TCP counters (``ss -tie`` bytes_received of the node's socket to the
  Redis port; the subscriber is the one Redis lists with the pubsub flag in CLIENT
  LIST — this Redis has no tot-net-out). Converted to messages with a per-mode
  calibration (bytes one node receives per message), so the channel-name lengths of
  the two modes do not skew the comparison.

The target (issue 8): in ``topic`` mode a node receives only the traffic of rooms it
has members in (received messages ≈ its share), in ``global`` mode everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.protocol import V2, Encoded, ws_bytes

from .harness import (
    CpuMeter,
    Tally,
    close_clients,
    machine,
    open_tally_clients,
    raise_nofile,
    sigterm_as_interrupt,
    start_roost,
    wait_delivered,
)
from .loadclient import CountingClient, join_frame
from .procs import Group, free_port
from .redisbytes import NodeBytes, redis_out_bytes

EVENT = "new:msg"
PAYLOAD = {"user": "al", "body": "hello world, from roost", "id": "018c2a"}
WS_PATH = "/socket/websocket?vsn=2.0.0"
IDLE = 3.0
CALIBRATION = 200  # messages per node to learn the bytes one message costs on the wire
NODES = ("n1", "n2")


@dataclass
class Config:
    rooms: int = 1000
    members: int = 10
    messages: int = 10  # per room per round
    rounds: int = 3
    split: float = 0.2  # share of rooms with members on both nodes
    publishers: int = 2  # control sockets per node
    modes: tuple[str, ...] = ("global", "topic")
    redis_url: str | None = None
    out: Path = Path("bench-out")


@dataclass
class Room:
    topic: str
    members: tuple[int, int]  # on n1, on n2
    publisher: int  # index of the node whose control sockets publish into it


def topic_name(i: int, rooms: int) -> str:
    # Fixed width: every broadcast frame of a run has the same size.
    return f"bench:room:{i:0{max(4, len(str(rooms - 1)))}d}"


def layout(cfg: Config) -> list[Room]:
    n_split = round(cfg.split * cfg.rooms)
    out = []
    for i in range(cfg.rooms):
        if i < n_split:
            a = (cfg.members + 1) // 2
            out.append(Room(topic_name(i, cfg.rooms), (a, cfg.members - a), i % 2))
        else:
            k = (i - n_split) % 2
            members = (cfg.members, 0) if k == 0 else (0, cfg.members)
            out.append(Room(topic_name(i, cfg.rooms), members, k))
    return out


def frame_len(topic: str) -> int:
    return len(ws_bytes(V2.broadcast(topic, EVENT, Encoded.of(PAYLOAD))))


# -- one mode ------------------------------------------------------------------------------


class Publisher:
    """A control socket on one node; fires ``count`` broadcasts per push, pipelined."""

    def __init__(self, client: Any, channel: Any) -> None:
        self.client = client
        self.channel = channel

    async def fire(self, topics: list[str], count: int, window: int = 16) -> int:
        sem = asyncio.Semaphore(window)
        sent = 0

        async def one(topic: str) -> None:
            nonlocal sent
            async with sem:
                reply = await self.channel.push(
                    "fire",
                    {"topic": topic, "event": EVENT, "payload": PAYLOAD, "count": count},
                    timeout=120,
                )
                if not reply.ok:
                    raise RuntimeError(f"fire refused: {reply.response}")
                sent += int(reply.response["sent"])

        await asyncio.gather(*(one(t) for t in topics))
        return sent


async def run_mode(
    cfg: Config, mode: str, redis_url: str, group: Group, say: Callable[[str], None]
) -> dict[str, Any]:
    from roost.client import Client

    rooms = layout(cfg)
    prefix = f"roostrooms{os.getpid()}{mode}"
    ports = {}
    for name in NODES:
        port = free_port()
        start_roost(
            group, port, name, cfg.out / f"rooms-{mode}-{name}.log",
            "--redis", redis_url, "--pubsub-mode", mode, "--redis-prefix", prefix,
        )  # fmt: skip
        ports[name] = port
    pids = {name: group.pids[name] for name in NODES}
    flen = frame_len(rooms[0].topic)
    tally = Tally()
    clients: list[CountingClient] = []
    publishers: dict[str, list[Publisher]] = {n: [] for n in NODES}
    try:
        t_open = time.perf_counter()
        for k, name in enumerate(NODES):
            want = [r.topic for r in rooms for _ in range(r.members[k])]
            opened = await open_tally_clients(ports[name], WS_PATH, len(want), tally)
            for c, topic in zip(opened, want, strict=True):
                c.send(join_frame(topic))
            clients.extend(opened)
        t_join = time.perf_counter()
        if not await wait_delivered(clients, tally, 1, idle=10, cap=120):
            raise RuntimeError("not every member got its join reply")
        joined_s = time.perf_counter() - t_join
        say(
            f"{mode}: {len(clients)} members joined {len(rooms)} rooms "
            f"(connect {t_join - t_open:.1f} s, join {joined_s:.1f} s)"
        )
        for name in NODES:
            for _ in range(cfg.publishers):
                client = Client(f"ws://127.0.0.1:{ports[name]}/socket")
                await client.connect()
                ch = client.channel("bench:control")
                publishers[name].append(Publisher(client, ch))
                await ch.join()
        await asyncio.sleep(0.5)
        counter = NodeBytes(redis_url, pids)
        missing = [n for n, p in counter.sub_port.items() if p is None]
        if missing:
            say(f"{mode}: subscriber connection not identified for {missing}: bytes = all conns")

        # Calibration: bytes a node's subscriber receives per message, in this mode.
        per_msg: dict[str, float | None] = {}
        for k, name in enumerate(NODES):
            room = next(r for r in rooms if r.members[k] and r.publisher == k)
            before = counter.read()
            await publishers[name][0].fire([room.topic], CALIBRATION)
            await asyncio.sleep(0.5)
            cal = NodeBytes.delta(before, counter.read())[name]
            cal_bytes = cal["subscriber"] if cal["subscriber"] is not None else cal["all"]
            per_msg[name] = cal_bytes / CALIBRATION if cal_bytes else None
        await asyncio.sleep(0.3)

        # Who publishes which room: the room's publishing node, round-robin over its sockets.
        plan: dict[str, list[list[str]]] = {n: [[] for _ in range(cfg.publishers)] for n in NODES}
        for i, r in enumerate(rooms):
            name = NODES[r.publisher]
            plan[name][i % cfg.publishers].append(r.topic)
        total_msgs = cfg.rooms * cfg.messages
        expected_msgs = {
            name: sum(cfg.messages for r in rooms if r.members[k]) for k, name in enumerate(NODES)
        }
        rounds = []
        for i in range(cfg.rounds):
            for c in clients:
                c.received = 0
            tally.reset()
            await asyncio.sleep(0.2)
            before, redis_before = counter.read(), redis_out_bytes(redis_url)
            redis_pid = group.pids.get("redis")
            meter = CpuMeter({**pids, **({"redis": redis_pid} if redis_pid else {})})
            t0 = time.perf_counter()
            tally.last = t0
            sent_lists = await asyncio.gather(
                *(
                    pub.fire(plan[name][j], cfg.messages)
                    for name in NODES
                    for j, pub in enumerate(publishers[name])
                )
            )
            t_sent = time.perf_counter()
            complete = await wait_delivered(clients, tally, cfg.messages * flen, idle=IDLE, cap=120)
            elapsed = tally.last - t0
            cpu = meter.stop()
            await asyncio.sleep(0.5)  # let the last subscriber bytes land in the counters
            d = NodeBytes.delta(before, counter.read())
            redis_out = redis_out_bytes(redis_url) - redis_before
            delivered = sum(min(c.received // flen, cfg.messages) for c in clients)
            expected = sum(cfg.messages * sum(r.members) for r in rooms)
            nodes = {}
            for name in NODES:
                got = d[name]["subscriber"] if d[name]["subscriber"] is not None else d[name]["all"]
                pm = per_msg[name]
                msgs = got / pm if got is not None and pm else None
                nodes[name] = {
                    "subscriber_bytes": d[name]["subscriber"],
                    "all_redis_bytes": d[name]["all"],
                    "messages_received_est": msgs,
                    "messages_for_local_rooms": expected_msgs[name],
                    "share_expected": expected_msgs[name] / total_msgs,
                    "share_received": msgs / total_msgs if msgs is not None else None,
                }
            row = {
                "round": i + 1,
                "published": sum(sent_lists),
                "publish_s": t_sent - t0,
                "elapsed_s": elapsed,
                "delivered": delivered,
                "expected": expected,
                "lost": expected - delivered,
                "complete": complete,
                "deliveries_per_s": delivered / elapsed if elapsed > 0 else None,
                "redis_total_out_bytes": redis_out,
                "nodes": nodes,
                "cpu": cpu,
            }
            rounds.append(row)
            say(
                f"{mode} round {i + 1}/{cfg.rounds}: {row['deliveries_per_s'] or 0:,.0f} "
                f"deliveries/s; redis bytes n1 {d['n1']['subscriber']}, n2 {d['n2']['subscriber']}"
                + ("" if complete else f"; LOST {expected - delivered}")
            )
            await asyncio.sleep(0.3)
    finally:
        for pubs in publishers.values():
            for p in pubs:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.client.close(), 5)
        close_clients(clients)
        await asyncio.sleep(0.2)
        for name in NODES:
            group.stop(name)
    return {
        "mode": mode,
        "members": len(clients),
        "frame_bytes": flen,
        "bytes_per_message": per_msg,
        "rounds": rounds,
        "summary": summarize(rounds),
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(values: list[Any]) -> float | None:
        nums = [v for v in values if isinstance(v, int | float)]
        return statistics.median(nums) if nums else None

    nodes = {}
    for name in NODES:
        per = [r["nodes"][name] for r in rounds]
        nodes[name] = {k: med([p[k] for p in per]) for k in per[0]}
    cpu_keys = rounds[0]["cpu"].keys()
    return {
        "deliveries_per_s": med([r["deliveries_per_s"] for r in rounds]),
        "lost": sum(r["lost"] for r in rounds),
        "redis_total_out_bytes": med([r["redis_total_out_bytes"] for r in rounds]),
        "nodes": nodes,
        "cpu": {k: med([r["cpu"].get(k) for r in rounds]) for k in cpu_keys},
    }


# -- the run -------------------------------------------------------------------------------


def run(cfg: Config, timeout: float, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Start Redis (unless given), run each mode, stop everything whatever happens."""
    group = Group()
    raise_nofile()
    with sigterm_as_interrupt():
        try:
            redis_url = cfg.redis_url
            if redis_url is None:
                from .redisproc import RedisServer

                server = RedisServer().start()
                group.add("redis", server.pid or 0, server.stop)
                redis_url = server.url
                say(f"private redis-server on {redis_url}")

            async def main() -> dict[str, Any]:
                modes = {}
                for mode in cfg.modes:
                    modes[mode] = await run_mode(cfg, mode, redis_url, group, say)
                return modes

            async def bounded() -> dict[str, Any]:
                return await asyncio.wait_for(main(), timeout)

            modes = asyncio.run(bounded())
        finally:
            group.stop_all()
    n_split = round(cfg.split * cfg.rooms)
    return {
        "scenario": "rooms",
        "config": {
            "rooms": cfg.rooms,
            "members_per_room": cfg.members,
            "members": cfg.rooms * cfg.members,
            "rooms_on_both_nodes": n_split,
            "rooms_on_one_node": cfg.rooms - n_split,
            "messages_per_room_per_round": cfg.messages,
            "messages_per_round": cfg.rooms * cfg.messages,
            "rounds": cfg.rounds,
            "publisher_sockets_per_node": cfg.publishers,
            "redis": "private redis-server" if cfg.redis_url is None else "given URL",
            "aggregate": "per-round medians (lost summed)",
        },
        "machine": machine(),
        "modes": modes,
        "comparison": compare(modes),
    }


def compare(modes: dict[str, Any]) -> dict[str, Any]:
    if "global" not in modes or "topic" not in modes:
        return {}
    g, t = modes["global"]["summary"], modes["topic"]["summary"]
    out: dict[str, Any] = {}
    for name in NODES:
        gb, tb = g["nodes"][name]["subscriber_bytes"], t["nodes"][name]["subscriber_bytes"]
        share = t["nodes"][name]["share_expected"]
        recv = t["nodes"][name]["share_received"]
        out[name] = {
            "bytes_topic_over_global": tb / gb if gb and tb is not None else None,
            "share_expected": share,
            "share_received_topic": recv,
            "share_received_global": g["nodes"][name]["share_received"],
            "target_met": recv is not None and abs(recv - share) <= 0.05 * max(share, 0.1),
        }
    gd, td = g["deliveries_per_s"], t["deliveries_per_s"]
    out["throughput_topic_over_global"] = td / gd if gd and td else None
    return out
