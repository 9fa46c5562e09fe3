"""A client process of the ``workers`` scenario: many idle :class:`~.fleetclient.Member` s.

The bench starts several (each its own source addresses, so a process's sockets do not
share an ephemeral port range with another's) and drives them over stdin/stdout, one
line per command and one JSON line per answer:

- ``open CONCURRENCY``: open every member's WebSocket (``CONCURRENCY`` handshakes in
  flight), no join yet; ``{"opened", "t0", "t1", "failed"}`` (wall clock);
- ``join [K]``: every member sends its phx_join at once (with K: at most K joins in
  flight, the next sent as one is answered ok); when every reply is in (or nothing
  moved for 10 s): ``{"joined", "t0", "t1", "refused", "reasons"}``;
- ``warm N``: N more members open, join a room of their own and close (a warm-up);
- ``heartbeat RATE SECONDS``: Phoenix heartbeats, RATE a second spread evenly over the
  members, for SECONDS; ``{"sent"}``;
- ``status``: joined now, by node, and what the reconnects did (:class:`Stats`);
- ``close``: close every member (no reconnect); ``quit``.

Every member reconnects and rejoins by itself when its connection ends (the storm).

Run: ``python -m roost_bench.fleet PORT --ips 127.0.0.2,127.0.0.3 --first I --count N
--room-size R --channel rooms|echo``; it prints ``ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections import Counter
from typing import Any

import orjson

from .fleetclient import Member, S, Stats

WS_PATH = "/socket/websocket?vsn=2.0.0"
STALL = 10.0  # a phase gives up when nothing moved for this long
CAP = 300.0


def topic_of(channel: str, room: int | str) -> str:
    return f"{channel}:idle{room}" if isinstance(room, str) else f"{channel}:idle{room:06d}"


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = Stats()
        self.joined = 0
        self.queue: list[Member] = []  # joins not sent yet (``join K``)
        ips = args.ips.split(",") if args.ips else []
        self.members = [
            self._member(args.first + i, ips[i % len(ips)] if ips else None)
            for i in range(args.count)
        ]

    def _member(self, g: int | None, ip: str | None, room: str | None = None) -> Member:
        a = self.args
        topic = topic_of(a.channel, room if room is not None else (g or 0) // a.room_size)
        payload: dict[str, object] = {"user": f"u{g}"} if a.channel == "rooms" else {}
        local = (ip, 0) if ip else None
        return Member(a.port, WS_PATH, topic, payload, local, self.stats, self._on_joined)

    def _on_joined(self, member: Member) -> None:
        self.joined += 1
        if self.queue:
            self.queue.pop().send_join()

    async def open(self, members: list[Member], concurrency: int) -> dict[str, Any]:
        sem = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()

        async def one(m: Member) -> None:
            async with sem:
                m.opened = loop.create_future()
                await m.connect()
                await asyncio.wait_for(m.opened, CAP)

        t0 = time.time()
        results = await asyncio.gather(*(one(m) for m in members), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        return {
            "opened": len(members) - len(errors),
            "t0": t0,
            "t1": time.time(),
            "failed": self.stats.failed_connects,
            "error": repr(errors[0]) if errors else None,
        }

    async def join(self, members: list[Member], in_flight: int = 0) -> dict[str, Any]:
        before = self.joined
        t0 = time.time()
        now = members if in_flight <= 0 else members[:in_flight]
        self.queue = [] if in_flight <= 0 else members[in_flight:][::-1]
        for m in now:
            m.send_join()
        await self._until(lambda: self.joined - before >= len(members))
        return {
            "joined": self.joined - before,
            "t0": t0,
            "t1": self.stats.last_joined,
            "refused": self.stats.failed_joins,
            "reasons": dict(self.stats.reasons),
        }

    async def _until(self, done: Any) -> None:
        last, seen, deadline = time.monotonic(), -1, time.monotonic() + CAP
        while not done() and time.monotonic() < deadline:
            now = time.monotonic()
            progress = self.joined + self.stats.failed_joins
            if progress != seen:
                last, seen = now, progress
            elif now - last > STALL:
                break
            await asyncio.sleep(0.01)

    async def warm(self, n: int) -> dict[str, Any]:
        members = [self._member(None, None, room="warm") for _ in range(n)]
        await self.open(members, 100)
        got = await self.join(members)
        self.joined -= got["joined"]
        for m in members:
            m.close()
        return {"warmed": got["joined"]}

    async def heartbeat(self, rate: float, seconds: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        ring = itertools.cycle(self.members)
        while (elapsed := loop.time() - start) < seconds:
            for _ in range(max(0, int(elapsed * rate) - sent)):
                next(ring).heartbeat(sent)
                sent += 1
            await asyncio.sleep(0.01)
        return {"sent": sent}

    def status(self) -> dict[str, Any]:
        by_node = Counter(m.node for m in self.members if m.state is S.JOINED)
        st = self.stats
        return {
            "joined": sum(by_node.values()),
            "by_node": dict(by_node),
            "lost": st.lost,
            "rejoined": st.rejoined,
            "failed_connects": st.failed_connects,
            "failed_joins": st.failed_joins,
            "last_joined": st.last_joined,
            "attempts": sum(m.connects for m in self.members),
            "reasons": dict(st.reasons),
        }

    def close(self) -> dict[str, Any]:
        for m in self.members:
            m.close()
        return {"closed": len(self.members)}


async def serve(args: argparse.Namespace) -> None:
    fleet = Fleet(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout

    def answer(value: Any) -> None:
        out.write(orjson.dumps(value).decode() + "\n")
        out.flush()

    out.write("ready\n")
    out.flush()
    while line := await reader.readline():
        cmd, *rest = line.decode().split()
        if cmd == "open":
            answer(await fleet.open(fleet.members, int(rest[0])))
        elif cmd == "join":
            answer(await fleet.join(fleet.members, int(rest[0]) if rest else 0))
        elif cmd == "warm":
            answer(await fleet.warm(int(rest[0])))
        elif cmd == "heartbeat":
            answer(await fleet.heartbeat(float(rest[0]), float(rest[1])))
        elif cmd == "status":
            answer(fleet.status())
        elif cmd == "close":
            answer(fleet.close())
        elif cmd == "quit":
            break
        else:
            answer({"error": f"unknown command {cmd!r}"})
    fleet.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m roost_bench.fleet")
    ap.add_argument("port", type=int)
    ap.add_argument("--ips", default="", help="Source addresses, comma list (default: any).")
    ap.add_argument("--first", type=int, default=0, help="Global index of the first client.")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--room-size", type=int, default=10)
    ap.add_argument("--channel", choices=("echo", "rooms"), default="echo")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
