"""Scenario ``peers``: the fanout workload on roost, the raw limit and the peers, one run.

Workload (scenario 1's): one room, N subscribers (cheap counting clients, the same
for every server), a trigger that broadcasts M small chat messages; deliveries/s =
N x M / time from the trigger to the last byte. Every server runs alone on the
machine while measured, each with a private redis-server where it uses one:

- **raw limit**: a bare asyncio server writing one pre-encoded frame per transport;
- **roost**: one node, memory broker; **roost + Redis**: one node, ``--redis``
  (topic mode), like for like with the peers below, which all go through Redis;
- **python-socketio** + AsyncRedisManager on aiohttp;
- **Node socket.io** + @socket.io/redis-adapter;
- **Django Channels** + channels_redis, RedisPubSubChannelLayer and the core
  RedisChannelLayer, on uvicorn;
- **broadcaster** (Redis) + Starlette on uvicorn, one subscription per socket.

The peers' servers live in ``bench/peers/`` at the repository root and are installed by
``roost-bench peers --setup`` into ``bench/peers/.venv`` (Python, exact pins) and
``bench/peers/node/node_modules`` (``npm ci``), never into roost's environment. A peer
that is not installed or does not start is reported as skipped, with the reason.

Clients: roost and the raw limit speak Phoenix v2 JSON; socket.io peers Engine.IO 4
over WebSocket (:class:`EioClient`: handshake ``40``, ``join`` with an ack, pings
answered, then bytes counted); Django Channels and broadcaster plain WebSocket text
(the server sends ``{"joined":true}`` once subscribed). Each server's frame size is
learnt from one calibration message (every client must get the same bytes).

M is chosen per server from a warm-up round so that a round takes about ``round_s``
seconds (between ``min_messages`` and ``messages``): the slowest peers would otherwise
take minutes per round.

``cross_node`` (scenario 2's shape): every system that goes through Redis runs as two
instances on the same private Redis (roost: two ``python -m roost_bench.node --redis`` nodes,
topic mode; a peer: two server processes on different ports); the subscribers join
instance 2, the trigger fires on instance 1, and deliveries are counted on instance 2.
The raw limit and roost's memory broker have no second node and are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from roost.protocol import V2, Encoded, ws_bytes

from .channel import STAMP_RE
from .harness import (
    CpuMeter,
    Tally,
    TallyClient,
    close_clients,
    machine,
    open_tally_clients,
    pyplot,
    raise_nofile,
    sigterm_as_interrupt,
    start_roost,
    wait_delivered,
)
from .loadclient import CountingClient, client_frame, join_frame
from .procs import Group, free_port, wait_http, wait_port

TOPIC = "bench:fanout"
EVENT = "new:msg"
PAYLOAD = {"user": "al", "body": "hello world, from roost", "id": "018c2a"}
ROOM = "bench"
IDLE = 3.0
PHX_PATH = "/socket/websocket?vsn=2.0.0"
EIO_PATH = "/socket.io/?EIO=4&transport=websocket"
WS_PATH = "/ws"


@dataclass(frozen=True)
class System:
    key: str
    label: str
    client: str  # phoenix | eio | ws
    needs: str  # "" | python | node: what --setup must have installed
    redis: bool


SYSTEMS = (
    System("raw", "raw limit (asyncio transport.write)", "phoenix", "", False),
    System("roost", "roost (one node, memory broker)", "phoenix", "", False),
    System("roost-redis", "roost + Redis (one node, topic mode)", "phoenix", "", True),
    System("python-socketio", "python-socketio + AsyncRedisManager (aiohttp)", "eio",
           "python", True),
    System("node-socketio", "Node socket.io + @socket.io/redis-adapter", "eio", "node", True),
    System("channels-pubsub", "Django Channels + RedisPubSubChannelLayer (uvicorn)", "ws",
           "python", True),
    System("channels-core", "Django Channels + RedisChannelLayer (uvicorn)", "ws",
           "python", True),
    System("broadcaster", "broadcaster (Redis) + Starlette (uvicorn)", "ws", "python", True),
)  # fmt: skip
BY_KEY = {s.key: s for s in SYSTEMS}


@dataclass
class Config:
    clients: int = 1000
    messages: int = 200  # most per round
    min_messages: int = 20
    rounds: int = 3
    round_s: float = 2.0
    only: tuple[str, ...] = ()
    peers_dir: Path | None = None
    redis_url: str | None = None
    out: Path = Path("bench-out")
    cross_node: bool = False
    # Latency phase: stamped messages at a fixed rate every system sustains with these
    # subscribers (the slowest peer does ~4,000 deliveries/s); 0 s: no latency phase.
    latency_rate: float = 2.0
    latency_s: float = 10.0


def systems_for(cfg: Config) -> list[System]:
    """The systems a run measures: ``--only``, and only the Redis ones across nodes."""
    return [
        s
        for s in SYSTEMS
        if (not cfg.only or s.key in cfg.only) and (s.redis or not cfg.cross_node)
    ]


CROSS_LABELS = {"roost-redis": "roost + Redis (two nodes, topic mode)"}


def label_for(system: System, cfg: Config) -> str:
    if cfg.cross_node:
        return CROSS_LABELS.get(system.key, system.label + ", two instances")
    return system.label


def default_peers_dir() -> Path:
    """``peers/`` beside this package (bench/peers of the checkout, where ``pip install -e
    ./bench`` leaves it); else ./bench/peers or ./peers of the working directory."""
    beside = Path(__file__).resolve().parent.parent / "peers"
    for cand in (beside, Path.cwd() / "bench" / "peers", Path.cwd() / "peers"):
        if (cand / "requirements.txt").is_file():
            return cand
    return beside


# -- set-up --------------------------------------------------------------------------------


def _stamp(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        with contextlib.suppress(OSError):
            h.update(f.read_bytes())
    return h.hexdigest()


def python_ready(peers: Path) -> str | None:
    """None when the Python peers' venv is installed and current, else why not."""
    py = peers / ".venv" / "bin" / "python"
    if not py.exists():
        return "bench/peers/.venv missing: run `roost-bench peers --setup`"
    stamp = peers / ".venv" / ".roost-peers-stamp"
    want = _stamp(peers / "requirements.txt")
    if not stamp.exists() or stamp.read_text().strip() != want:
        return "bench/peers/.venv out of date: run `roost-bench peers --setup`"
    return None


def node_ready(peers: Path) -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    mods = peers / "node" / "node_modules"
    if not mods.is_dir():
        return "bench/peers/node/node_modules missing: run `roost-bench peers --setup`"
    want = _stamp(peers / "node" / "package.json", peers / "node" / "package-lock.json")
    stamp = mods / ".roost-stamp"
    if not stamp.exists() or stamp.read_text().strip() != want:
        return "bench/peers/node/node_modules out of date: run `roost-bench peers --setup`"
    return None


def setup(peers: Path, say: Callable[[str], None]) -> dict[str, str | None]:
    """Install the peers (Python venv, npm ci); return each kind's failure, if any."""
    failures: dict[str, str | None] = {"python": None, "node": None}
    if python_ready(peers) is not None:
        venv = peers / ".venv"
        say(f"installing the Python peers into {venv}")
        try:
            if not (venv / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
            subprocess.run(
                [*pip, "-r", str(peers / "requirements.txt")],
                check=True, timeout=900, capture_output=True,
            )  # fmt: skip
            (venv / ".roost-peers-stamp").write_text(_stamp(peers / "requirements.txt"))
        except (subprocess.SubprocessError, OSError) as exc:
            failures["python"] = f"pip install failed: {_why(exc)}"
    if shutil.which("npm") is None:
        failures["node"] = "npm is not on PATH"
    elif node_ready(peers) is not None:
        say(f"npm ci in {peers / 'node'}")
        try:
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=peers / "node", check=True, timeout=900, capture_output=True,
            )  # fmt: skip
            (peers / "node" / "node_modules" / ".roost-stamp").write_text(
                _stamp(peers / "node" / "package.json", peers / "node" / "package-lock.json")
            )
        except (subprocess.SubprocessError, OSError) as exc:
            failures["node"] = f"npm ci failed: {_why(exc)}"
    return failures


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        tail = err.strip().splitlines()[-3:]
        return f"exit {exc.returncode}" + (": " + " | ".join(tail) if tail else "")
    return repr(exc)


# -- clients -------------------------------------------------------------------------------


def _parse_frame(buf: bytes) -> tuple[int, bytes, int] | None:
    """(opcode, payload, bytes used) of the first unmasked server frame, if complete."""
    if len(buf) < 2:
        return None
    n = buf[1] & 0x7F
    i = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, i = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, i = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < i + n:
        return None
    return buf[0] & 0x0F, buf[i : i + n], i + n


class EioClient(TallyClient):
    """Engine.IO 4 / Socket.IO 5 over WebSocket: connect, join the room, then count.

    Handshake: server ``0{...}`` (open) -> client ``40`` (connect to ``/``) -> server
    ``40{...}`` -> client ``420["join","bench"]`` -> server ``430[...]`` (the ack).
    Until the ack, frames are parsed (and pings ``2`` answered ``3``); after it, bytes
    are only counted, like every other client.
    """

    def __init__(self, host: str, path: str, tally: Tally) -> None:
        super().__init__(host, path, tally)
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.counting = False

    def data_received(self, data: bytes) -> None:
        if self.counting:
            n = len(data)
            self.received += n
            t = self.tally
            t.total += n
            t.last = time.perf_counter()
            return
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                if not self.upgraded_fut.done():
                    self.upgraded_fut.set_exception(
                        ConnectionError(self.buf[:80].decode(errors="replace"))
                    )
                return
            self.upgraded = True
            self.buf = self.buf[end + 4 :]
            if not self.upgraded_fut.done():
                self.upgraded_fut.set_result(None)
        while not self.counting and (frame := _parse_frame(self.buf)) is not None:
            _, packet, used = frame
            self.buf = self.buf[used:]
            self._packet(packet)
        if self.counting and self.buf:
            self.received += len(self.buf)
            self.tally.total += len(self.buf)
            self.buf = b""

    def _packet(self, p: bytes) -> None:
        if p.startswith(b"0"):
            self.send(client_frame(b"40"))
        elif p.startswith(b"40"):
            self.send(client_frame(b'420["join","' + ROOM.encode() + b'"]'))
        elif p.startswith(b"430"):
            self.counting = True
            self.received = 0
            if not self.joined.done():
                self.joined.set_result(None)
        elif p == b"2":
            self.send(client_frame(b"3"))
        elif p.startswith(b"44") and not self.joined.done():  # connect_error
            self.joined.set_exception(ConnectionError(p.decode(errors="replace")))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("connection lost before the join ack"))


async def open_and_join(system: System, port: int, n: int, tally: Tally) -> list[CountingClient]:
    if system.client == "eio":
        clients = await open_tally_clients(port, EIO_PATH, n, tally, factory=EioClient)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.joined for c in clients if isinstance(c, EioClient))), 60
            )
        except BaseException:
            close_clients(clients)
            raise
        return clients
    path = PHX_PATH if system.client == "phoenix" else WS_PATH
    clients = await open_tally_clients(port, path, n, tally)
    if system.client == "phoenix":
        join = join_frame(TOPIC)
        for c in clients:
            c.send(join)
    if not await wait_delivered(clients, tally, 1, idle=15, cap=60):
        close_clients(clients)
        raise RuntimeError("not every client was told it joined")
    return clients


# -- servers -------------------------------------------------------------------------------

Fire = Callable[[int], Awaitable[None]]
Paced = Callable[[float, float], Awaitable[int]]


@dataclass
class Running:
    port: int
    pids: dict[str, int]
    fire: Fire
    close: Callable[[], Awaitable[None]]
    #: ``paced(rate, duration)``: stamped messages at a fixed rate; returns how many.
    paced: Paced | None = None


def roost_frame() -> bytes:
    return ws_bytes(V2.broadcast(TOPIC, EVENT, Encoded.of(PAYLOAD)))


async def _http_fire(port: int) -> tuple[Fire, Paced, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))

    async def get(query: str) -> None:
        async with session.get(f"http://127.0.0.1:{port}/fire?{query}") as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"fire: HTTP {resp.status} {body[:100]!r}")

    async def fire(n: int) -> None:
        await get(f"count={n}")

    async def paced(rate: float, duration: float) -> int:
        await get(f"rate={rate}&duration={duration}")
        return round(rate * duration)

    return fire, paced, session.close


async def start_system(
    system: System, cfg: Config, peers: Path, redis_url: str | None, group: Group,
    name: str | None = None,
) -> Running:  # fmt: skip
    """Start one instance of ``system``, known to ``group`` as ``name`` (default its key)."""
    name = name or system.key
    port = free_port()
    log = cfg.out / f"peers-{name}.log"
    if system.key in ("roost", "roost-redis"):
        extra = ["--redis", str(redis_url), "--pubsub-mode", "topic"] if system.redis else []
        start_roost(group, port, name, log, *extra)
        from roost.client import Client

        client = Client(f"ws://127.0.0.1:{port}/socket")
        await client.connect()
        ch = client.channel("bench:control")
        await ch.join()

        async def fire_push(n: int) -> None:
            payload = {"topic": TOPIC, "event": EVENT, "payload": PAYLOAD, "count": n}
            reply = await ch.push("fire", payload, timeout=600)
            if not reply.ok:
                raise RuntimeError(f"fire refused: {reply.response}")

        async def paced_push(rate: float, duration: float) -> int:
            payload = {"topic": TOPIC, "event": EVENT, "stamp": True}
            payload.update(rate=rate, duration=duration)
            reply = await ch.push("fire", payload, timeout=600)
            if not reply.ok:
                raise RuntimeError(f"fire refused: {reply.response}")
            return int(reply.response["sent"])

        pids = {"server": group.pids[name]}
        return Running(port, pids, fire_push, client.close, paced_push)

    py = str(peers / ".venv" / "bin" / "python")
    assert redis_url is not None or system.key == "raw"
    args: list[str]
    if system.key == "raw":
        args = [sys.executable, "-m", "roost_bench.rawserver", str(port), roost_frame().hex()]
    elif system.key == "python-socketio":
        args = [py, str(peers / "socketio_server.py"), str(port), str(redis_url)]
    elif system.key == "node-socketio":
        args = ["node", str(peers / "node" / "server.js"), str(port), str(redis_url)]
    elif system.key.startswith("channels-"):
        layer = system.key.removeprefix("channels-")
        args = [py, str(peers / "channels_server.py"), str(port), str(redis_url), "--layer", layer]
    elif system.key == "broadcaster":
        args = [py, str(peers / "broadcaster_server.py"), str(port), str(redis_url)]
    else:
        raise ValueError(system.key)
    proc = group.popen(name, args, log, cwd=peers if system.needs else None)
    try:
        if system.key == "raw":
            await asyncio.to_thread(wait_port, port, 30)
        else:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 60)
    except TimeoutError:
        raise RuntimeError(f"did not start: {_tail(log)}") from None
    if proc.poll() is not None:
        raise RuntimeError(f"exited with {proc.returncode}: {_tail(log)}")
    fire, paced, close = await _http_fire(port)
    return Running(port, {"server": proc.pid}, fire, close, None if system.key == "raw" else paced)


async def start_pair(
    system: System, cfg: Config, peers: Path, redis_url: str | None, group: Group
) -> tuple[Running, list[str]]:
    """Two instances on one Redis: the subscribers' port is instance 2's, the trigger
    instance 1's; CPU is metered on both (``server`` is instance 2, which delivers)."""
    n1 = await start_system(system, cfg, peers, redis_url, group, f"{system.key}-n1")
    try:
        n2 = await start_system(system, cfg, peers, redis_url, group, f"{system.key}-n2")
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(n1.close(), 5)
        raise

    async def close() -> None:
        for r in (n1, n2):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.close(), 5)

    pids = {"server": n2.pids["server"], "server n1": n1.pids["server"]}
    pair = Running(n2.port, pids, n1.fire, close, n1.paced)
    return pair, [f"{system.key}-n1", f"{system.key}-n2"]


def _tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "(no output)"
    return "(no log)"


# -- measuring -----------------------------------------------------------------------------


async def _round(
    run: Running, clients: Sequence[CountingClient], tally: Tally, flen: int, m: int,
    meter_pids: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    for c in clients:
        c.received = 0
    tally.reset()
    await asyncio.sleep(0.2)
    meter = CpuMeter(meter_pids)
    t0 = time.perf_counter()
    tally.last = t0
    await run.fire(m)
    t_fired = time.perf_counter()
    complete = await wait_delivered(clients, tally, m * flen, idle=IDLE, cap=300)
    elapsed = tally.last - t0
    cpu = meter.stop()
    delivered = sum(min(c.received // flen, m) for c in clients)
    expected = m * len(clients)
    return {
        "messages": m,
        "elapsed_s": elapsed,
        "fire_s": t_fired - t0,
        "delivered": delivered,
        "lost": expected - delivered,
        "complete": complete,
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else None,
        "cpu": cpu,
    }


async def calibrate(run: Running, clients: Sequence[CountingClient], tally: Tally) -> int:
    """Bytes one broadcast frame takes: fire one message, every client must get the same."""
    for c in clients:
        c.received = 0
    tally.reset()
    await run.fire(1)
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        if all(c.received for c in clients) and time.perf_counter() - tally.last > 0.3:
            break
        await asyncio.sleep(0.01)
    sizes = {c.received for c in clients}
    if len(sizes) != 1 or 0 in sizes:
        raise RuntimeError(f"calibration: clients got unequal or no bytes ({sorted(sizes)[:5]})")
    return sizes.pop()


async def measure_system(
    system: System, cfg: Config, peers: Path, redis_url: str | None, group: Group,
    say: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    if redis_url is not None and system.redis:
        await asyncio.to_thread(_flush, redis_url)
    url = redis_url if system.redis else None
    if cfg.cross_node:
        run, names = await start_pair(system, cfg, peers, url, group)
    else:
        run, names = await start_system(system, cfg, peers, url, group), [system.key]
    tally = Tally()
    clients: list[CountingClient] = []
    try:
        t0 = time.perf_counter()
        clients = await open_and_join(system, run.port, cfg.clients, tally)
        join_s = time.perf_counter() - t0
        await asyncio.sleep(0.3)
        flen = await calibrate(run, clients, tally)
        pids = dict(run.pids)
        if system.redis and "redis" in group.pids:
            pids["redis"] = group.pids["redis"]
        warm = await _round(run, clients, tally, flen, cfg.min_messages, pids)
        rate = warm["deliveries_per_s"] or 0
        m = int(rate * cfg.round_s / cfg.clients)
        m = max(cfg.min_messages, min(cfg.messages, m))
        say(
            f"{system.key}: {cfg.clients} clients joined in {join_s:.1f} s; frame {flen} B; "
            f"warm-up {rate:,.0f}/s -> {m} messages per round"
        )
        rounds = []
        for i in range(cfg.rounds):
            r = await _round(run, clients, tally, flen, m, pids)
            rounds.append(r)
            n1 = r["cpu"].get("server n1")
            say(
                f"{system.key} round {i + 1}/{cfg.rounds}: {r['deliveries_per_s'] or 0:,.0f} "
                f"deliveries/s (server CPU {r['cpu'].get('server', 0):.0%}"
                + ("" if n1 is None else f", instance 1 {n1:.0%}")
                + f", client {r['cpu'].get('bench client', 0):.0%})"
                + ("" if r["complete"] else f", LOST {r['lost']}")
            )
            await asyncio.sleep(0.2)
        latency = None
        if cfg.latency_s > 0 and run.paced is not None:
            latency = await latency_phase(run, clients, tally, cfg.latency_rate, cfg.latency_s)
            lat = latency["all_subscribers_ms"]
            say(
                f"{system.key} latency at {cfg.latency_rate:g} msg/s: every subscriber had a "
                f"message after p50 {lat['p50'] or 0:.2f} ms, max {lat['max'] or 0:.2f} ms "
                f"(lost {latency['lost']})"
            )
    finally:
        close_clients(clients)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.close(), 5)
        await asyncio.sleep(0.3)
        for name in names:
            group.stop(name)
    rates = [r["deliveries_per_s"] for r in rounds if r["deliveries_per_s"]]
    cpu_keys = rounds[0]["cpu"].keys()
    return {
        "system": system.key,
        "label": label_for(system, cfg),
        "status": "ok",
        "clients": cfg.clients,
        "frame_bytes": flen,
        "messages_per_round": m,
        "rates": rates,
        "median": statistics.median(rates) if rates else None,
        "best": max(rates) if rates else None,
        "lost": sum(r["lost"] for r in rounds),
        "cpu": {
            k: statistics.median([r["cpu"][k] for r in rounds if k in r["cpu"]]) for k in cpu_keys
        },
        "join_s": join_s,
        "rounds": rounds,
        "latency": latency,
    }


SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)  # Linux: kernel receive time, µs


async def latency_phase(
    run: Running, clients: Sequence[CountingClient], tally: Tally, rate: float, duration: float
) -> dict[str, Any]:
    """Stamped messages at ``rate``/s; per message, when the first and the last of the
    subscribers had it.

    The receipt time is the kernel's (``SO_TIMESTAMP``: when the bytes reached the
    client's socket), not when this process got round to reading them: with every
    subscriber in one process, the last of 1,000 reads of a broadcast runs milliseconds
    after the first, whatever the server. So for the phase each client's transport stops
    reading and a poller reads a duplicate of its socket with ``recvmsg``.
    """
    assert run.paced is not None
    socks: list[tuple[CountingClient, socket.socket]] = []
    records: list[tuple[object, int, bytes]] = []
    done = asyncio.Event()

    async def poll() -> None:
        while True:
            final = done.is_set()
            got = False
            for client, sock in socks:
                while True:
                    try:
                        data, anc, _, _ = sock.recvmsg(1 << 16, 64)
                    except (BlockingIOError, InterruptedError):
                        break
                    if not data:
                        break
                    t = time.time_ns() // 1000
                    for level, kind, raw in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                            sec, usec = struct.unpack("@qq", raw[:16])
                            t = sec * 1_000_000 + usec
                    records.append((client, t, data))
                    got = True
            if got:
                tally.last = time.perf_counter()
            if final:
                return
            await asyncio.sleep(0.002)

    try:
        for c in clients:
            assert c.transport is not None
            c.transport.pause_reading()
            fd = c.transport.get_extra_info("socket").fileno()
            sock = socket.socket(fileno=os.dup(fd))
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            socks.append((c, sock))
        await asyncio.sleep(0.2)  # the kernel turns receive timestamps on in the background
        poller = asyncio.get_running_loop().create_task(poll())
        sent = await run.paced(rate, duration)
        deadline = time.perf_counter() + max(30.0, 3 * duration)
        while time.perf_counter() < deadline and time.perf_counter() - tally.last < 1.0:
            await asyncio.sleep(0.05)
        done.set()
        await poller
    finally:
        for c, sock in socks:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 0)
            sock.close()  # the duplicate; the client keeps its own descriptor
            if c.transport is not None and not c.transport.is_closing():
                c.transport.resume_reading()
    tails: dict[int, bytes] = {}
    seen: dict[int, set[int]] = {}
    times: dict[int, list[int]] = {}
    for client, t, data in records:
        key = id(client)
        buf = tails.get(key, b"") + data
        tails[key] = buf[-24:]
        mine = seen.setdefault(key, set())
        for m in STAMP_RE.findall(buf):
            stamp = int(m)
            if stamp not in mine:  # a stamp left whole in the tail is found twice
                mine.add(stamp)
                times.setdefault(stamp, []).append(t)
    received = sum(len(v) for v in times.values())
    last = sorted((max(ts) - s) / 1000 for s, ts in times.items())
    first = sorted((min(ts) - s) / 1000 for s, ts in times.items())
    return {
        "rate": rate,
        "duration_s": duration,
        "sent": sent,
        "subscribers": len(clients),
        "messages_seen": len(times),
        "lost": sent * len(clients) - received,
        "all_subscribers_ms": {
            "p50": _pct(last, 0.5), "p90": _pct(last, 0.9), "max": last[-1] if last else None,
        },
        "first_subscriber_ms": {"p50": _pct(first, 0.5), "p90": _pct(first, 0.9)},
    }  # fmt: skip


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _flush(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    try:
        r.flushall()
    finally:
        r.close()


def _skipped(system: System, reason: str) -> dict[str, Any]:
    return {"system": system.key, "label": system.label, "status": "skipped", "reason": reason}


def run(
    cfg: Config, timeout: float, do_setup: bool, say: Callable[[str], None] = print
) -> dict[str, Any]:
    peers = cfg.peers_dir or default_peers_dir()
    systems = systems_for(cfg)
    failures: dict[str, str | None] = {"python": None, "node": None}
    if do_setup:
        failures = setup(peers, say)
    if failures["python"] is None:
        failures["python"] = python_ready(peers)
    if failures["node"] is None:
        failures["node"] = node_ready(peers)
    raise_nofile()
    group = Group()
    results: list[dict[str, Any]] = []
    with sigterm_as_interrupt():
        try:
            redis_url = cfg.redis_url
            if redis_url is None and any(s.redis for s in systems):
                from .redisproc import RedisServer

                server = RedisServer().start()
                group.add("redis", server.pid or 0, server.stop)
                redis_url = server.url
                say(f"private redis-server on {redis_url}")

            async def main() -> None:
                for s in systems:
                    why = failures.get(s.needs) if s.needs else None
                    if why:
                        say(f"{s.key}: skipped ({why})")
                        results.append(_skipped(s, why))
                        continue
                    try:
                        results.append(await measure_system(s, cfg, peers, redis_url, group, say))
                    except (RuntimeError, OSError, TimeoutError, aiohttp.ClientError) as exc:
                        say(f"{s.key}: failed ({exc})")
                        results.append(_skipped(s, f"failed: {exc}"))

            async def bounded() -> None:
                await asyncio.wait_for(main(), timeout)

            asyncio.run(bounded())
        finally:
            group.stop_all()
    return {
        "scenario": "peers",
        "config": {
            "clients": cfg.clients,
            "cross_node": cfg.cross_node,
            "layout": (
                "two instances per system on one Redis: subscribers on instance 2, "
                "trigger on instance 1"
                if cfg.cross_node
                else "one instance per system"
            ),
            "rooms": 1,
            "max_messages_per_round": cfg.messages,
            "min_messages_per_round": cfg.min_messages,
            "target_round_s": cfg.round_s,
            "rounds": cfg.rounds,
            "latency_rate": cfg.latency_rate,
            "latency_s": cfg.latency_s,
            "redis": "private redis-server" if cfg.redis_url is None else "given URL",
            "aggregate": "median of the rounds",
        },
        "machine": machine(),
        "versions": versions(peers),
        "systems": results,
        "ratios": ratios(results),
    }


def versions(peers: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (peers / "requirements.txt").read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, ver = line.split("==", 1)
                out[name.strip()] = ver.strip()
    with contextlib.suppress(OSError, ValueError):
        import json

        deps = json.loads((peers / "node" / "package.json").read_text())["dependencies"]
        out.update({f"npm:{k}": v for k, v in deps.items()})
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    from importlib.metadata import version

    out["roost"] = version("roost")
    out["aiohttp (roost)"] = version("aiohttp")
    return out


TARGETS = {"raw": 0.85, "python-socketio": 5.0, "node-socketio": 1.2}


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["system"]: r for r in results if r.get("status") == "ok"}
    out: dict[str, Any] = {}
    for ours in ("roost", "roost-redis"):
        if ours not in by:
            continue
        mine = by[ours]["median"]
        row: dict[str, Any] = {}
        for key, r in by.items():
            if key != ours and r["median"]:
                ratio = mine / r["median"]
                row[key] = {"ratio": ratio}
                if key in TARGETS:
                    row[key]["target"] = TARGETS[key]
                    row[key]["met"] = ratio >= TARGETS[key]
        out[ours] = row
    return out


# -- reporting -----------------------------------------------------------------------------


def table(res: dict[str, Any]) -> list[str]:
    cfg = res["config"]
    cross = bool(cfg.get("cross_node"))
    lines = [
        f"peers{' --cross-node' if cross else ''}: one room, {cfg['clients']} subscribers, "
        f"small chat messages; median of {cfg['rounds']} rounds; same counting clients for "
        "every server"
        + (
            "; two instances per system on one Redis, subscribers on instance 2, trigger "
            "on instance 1 (server CPU = instance 2, n1 CPU = instance 1)"
            if cross
            else ""
        ),
        f"{'server':<64} | {'deliveries/s':>12} | {'msgs/rnd':>8} | {'frame':>5} | "
        f"{'lost':>5} | {'server CPU':>10} | "
        + (f"{'n1 CPU':>6} | " if cross else "")
        + f"{'client CPU':>10} | "
        + ("" if cross else f"{'roost/x':>7} | ")
        + f"{'roost+Redis/x':>13}",
    ]
    rat = res["ratios"]
    for r in res["systems"]:
        if r["status"] != "ok":
            lines.append(f"{r['label']:<64} | skipped: {r['reason']}")
            continue
        cells = []
        for ours in ("roost", "roost-redis"):
            x = rat.get(ours, {}).get(r["system"])
            cells.append("-" if x is None else f"{x['ratio']:.2f}")
        cpu = r["cpu"]
        lines.append(
            f"{r['label']:<64} | {r['median']:>12,.0f} | {r['messages_per_round']:>8} | "
            f"{r['frame_bytes']:>5} | {r['lost']:>5} | {cpu.get('server', 0):>10.0%} | "
            + (f"{cpu.get('server n1', 0):>6.0%} | " if cross else "")
            + f"{cpu.get('bench client', 0):>10.0%} | "
            + ("" if cross else f"{cells[0]:>7} | ")
            + f"{cells[1]:>13}"
        )
    for ours in ("roost", "roost-redis"):
        row = rat.get(ours, {})
        parts = [
            f"{k} {v['ratio']:.2f} x (>= {v['target']:g}: {'met' if v['met'] else 'MISSED'})"
            for k, v in row.items()
            if "target" in v
        ]
        if parts and not cross:  # the targets are scenario 1's (one node)
            lines.append(f"targets, {ours}: " + "; ".join(parts))
    timed = [r for r in res["systems"] if r["status"] == "ok" and r.get("latency")]
    if timed:
        lat0 = timed[0]["latency"]
        lines.append(
            f"latency at {lat0['rate']:g} msg/s for {lat0['duration_s']:g} s, "
            f"{lat0['subscribers']} subscribers: send stamp -> the message at every subscriber "
            "(and at the first), ms"
        )
        for r in timed:
            lat = r["latency"]
            a, f = lat["all_subscribers_ms"], lat["first_subscriber_ms"]
            lines.append(
                f"{r['label']:<64} | all p50 {_ms(a['p50']):>8} p90 {_ms(a['p90']):>8} "
                f"max {_ms(a['max']):>8} | first p50 {_ms(f['p50']):>8} | lost {lat['lost']}"
            )
    return lines


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def plot(res: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    ok = [r for r in res["systems"] if r["status"] == "ok"]
    if not ok:
        return False
    ok.sort(key=lambda r: r["median"])
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(ok) + 1.6))
    colors = [
        "tab:orange" if r["system"].startswith("roost") else
        "tab:gray" if r["system"] == "raw" else "tab:blue"
        for r in ok
    ]  # fmt: skip
    bars = ax.barh([r["label"] for r in ok], [r["median"] for r in ok], color=colors)
    top = max(r["median"] for r in ok)
    for b, r in zip(bars, ok, strict=True):
        errs = r["rates"]
        ax.annotate(
            f" {r['median']:,.0f}/s  ({min(errs):,.0f}-{max(errs):,.0f})",
            (b.get_width(), b.get_y() + b.get_height() / 2),
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, top * 1.5)
    ax.set_xlabel("deliveries/s (median of rounds; range in brackets)")
    cross = res["config"].get("cross_node")
    where = "\ntwo instances on one Redis: trigger on 1, subscribers on 2" if cross else ""
    ax.set_title(
        f"fan-out to {res['config']['clients']} subscribers in one room, same clients{where}"
    )
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    timed = [r for r in ok if r.get("latency") and r["latency"]["all_subscribers_ms"]["p50"]]
    if timed:
        plot_latency(res, timed, path.with_name(path.stem + "-latency.png"))
    return True


def plot_latency(res: dict[str, Any], timed: list[dict[str, Any]], path: Path) -> None:
    """Bars: the time until every subscriber had a message (p50, and the worst)."""
    plt = pyplot()
    assert plt is not None
    timed = sorted(timed, key=lambda r: -r["latency"]["all_subscribers_ms"]["p50"])
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(timed) + 1.6))
    labels = [r["label"] for r in timed]
    p50 = [r["latency"]["all_subscribers_ms"]["p50"] for r in timed]
    worst = [r["latency"]["all_subscribers_ms"]["max"] for r in timed]
    colors = ["tab:orange" if r["system"].startswith("roost") else "tab:blue" for r in timed]
    ax.barh(labels, worst, color="lightgray", label="max")
    ax.barh(labels, p50, color=colors, label="p50")
    for y, (a, w) in enumerate(zip(p50, worst, strict=True)):
        ax.annotate(f" {a:.2f} ms (max {w:.1f})", (w, y), va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(p50) / 2, max(worst) * 8)
    lat = timed[0]["latency"]
    cross = "two instances on one Redis, " if res["config"].get("cross_node") else ""
    ax.set_xlabel("ms from the send stamp until every subscriber had the message (log)")
    ax.set_title(
        f"latency at {lat['rate']:g} msg/s, {lat['subscribers']} subscribers\n"
        f"({cross}{lat['sent']} stamped messages)"
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
