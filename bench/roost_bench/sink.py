"""The batched sink: many counting subscribers in one process that reads in batches.

Every counting client of the asyncio kind (:mod:`roost_bench.loadclient`) wakes its
loop once per frame it gets: at 500,000 deliveries/s that is most of a core of the
bench's own, on a machine whose other core runs the node under test. A real subscriber
lives on another machine; here the subscribers only have to take the bytes off the
server and count them. So the sink sleeps ``--interval`` seconds, then empties every
socket with non-blocking ``recv_into`` calls — one system call per socket per tick,
whatever the message rate — and adds up the bytes. The server sees clients that keep
up (each tick empties every receive buffer, far below its size at these rates), and
latency is not measured here: the probe (:mod:`roost_bench.probe`) does that, reading
as soon as a frame arrives.

Commands on stdin, one per line, each answered with one line on stdout:
``reset`` (drain, zero the counters: ``ok``), ``report TARGET CAP`` (wait until every
client has ``TARGET`` bytes, nothing moved for 3 s, or ``CAP`` s passed, then JSON:
bytes per client and the wall time the total last moved), ``nodes`` (JSON: how many
clients each node name in a join reply's ``"node"`` has; ``?`` when the reply names
none), ``quit``.

Run: ``python -m roost_bench.sink HOST PORT TOPIC COUNT [--interval S]``; it prints
``ready`` once every client is upgraded and joined.
"""

from __future__ import annotations

import argparse
import re
import select
import socket
import sys
import time
from collections import Counter

import orjson

from .loadclient import join_frame, upgrade_request

WS_PATH = "/socket/websocket?vsn=2.0.0"
IDLE = 3.0
BUF = 1 << 18
NODE_RE = re.compile(rb'"node":"([^"]{1,64})"')


def upgrade(host: str, port: int, path: str, timeout: float = 30.0) -> socket.socket:
    """A connected, upgraded WebSocket (blocking, until joined)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.sendall(upgrade_request(f"{host}:{port}", path))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head[:80].decode(errors="replace"))
    return sock


class Sink:
    def __init__(self, socks: list[socket.socket], interval: float) -> None:
        self.socks = socks
        self.interval = interval
        self.counts = [0] * len(socks)
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)
        self.total = 0
        self.last_change = time.time()
        for s in socks:
            s.setblocking(False)

    def drain(self) -> int:
        """Empty every socket once; the bytes taken."""
        got = 0
        view, counts = self.view, self.counts
        for i, s in enumerate(self.socks):
            while True:
                try:
                    n = s.recv_into(view)
                except BlockingIOError:
                    break
                if n == 0:
                    break
                counts[i] += n
                got += n
                if n < BUF:
                    break
        if got:
            self.total += got
            self.last_change = time.time()
        return got

    def reset(self) -> None:
        self.drain()
        self.counts = [0] * len(self.socks)
        self.total = 0
        self.last_change = time.time()

    def report(self, target: int, cap: float) -> bytes:
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            self.drain()
            if min(self.counts) >= target or time.time() - self.last_change > IDLE:
                break
            time.sleep(self.interval)
        return orjson.dumps({"counts": self.counts, "last_change": self.last_change})


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m roost_bench.sink")
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("topic")
    ap.add_argument("count", type=int)
    ap.add_argument("--interval", type=float, default=0.005)
    args = ap.parse_args()

    socks = [upgrade(args.host, args.port, WS_PATH) for _ in range(args.count)]
    join = join_frame(args.topic)
    for s in socks:
        s.sendall(join)
    nodes: Counter[str] = Counter()
    for s in socks:  # every join reply, before any broadcast can arrive
        reply = s.recv(4096)
        if not reply:
            raise ConnectionError("closed before the join reply")
        m = NODE_RE.search(reply)
        nodes[m.group(1).decode() if m else "?"] += 1
    sink = Sink(socks, args.interval)
    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    stdin = sys.stdin.buffer
    while True:
        ready, _, _ = select.select([stdin], [], [], args.interval)
        if not ready:
            sink.drain()
            continue
        line = stdin.readline()
        if not line:
            break
        cmd, *rest = line.split()
        if cmd == b"reset":
            sink.reset()
            answer = b"ok"
        elif cmd == b"report":
            answer = sink.report(int(rest[0]), float(rest[1]))
        elif cmd == b"nodes":
            answer = orjson.dumps(nodes)
        elif cmd == b"quit":
            break
        else:
            answer = b'{"error": "unknown command"}'
        out.write(answer + b"\n")
        out.flush()
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
