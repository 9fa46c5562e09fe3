"""The fault suite's shared helpers (issue 12).

- ``Lab``: real processes on 127.0.0.1 and free ports, all stopped by PID when the test
  ends (even on failure): ``redis-server`` without or with AOF (``--appendonly yes
  --appendfsync always``), ``roost serve --redis URL`` nodes with short probe and presence
  timings, SIGKILL / SIGSTOP / SIGCONT of either.
- ``Member``: a room member on ``roost.client.Client`` that records, in arrival order,
  every ``new:msg`` pushed live and the history of every join reply; when its connection
  is lost it moves to the next node and rejoins with ``since`` (the last offset it saw).
- ``Publisher``: a member that sends ``new:msg`` one at a time (``<name>#<seq>`` bodies);
  an error reply or a lost reply is followed by a NEW message; only acked ones count.
- ``check_delivery``: the promise, checked per member and publisher: every acked
  message exactly once, in publisher order (live deliveries and rejoin histories
  together); no ok join reply without offset/epoch; no topic frame before the join reply;
  a rejoin is recovered, or not recovered with a new epoch, never partial (the history
  of such a new start may show again messages the member had: not duplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from roost.client import Client, ClientChannel, PushReply
from roost.protocol import Message

from support import ServerProcess, free_port, start_server

# -- processes -------------------------------------------------------------------------

NODE_ARGS = (
    "--probe-interval", "0.5",
    "--presence-timeout", "3",
    "--msg-rate", "0",
    "--join-rate", "1000",
    "--join-burst", "1000",
    "--history-size", "1000",
    "--drain-window", "0.5",
)  # fmt: skip


@functools.cache
def serve_help() -> str:
    """``roost serve --help`` of the code under test (old or new)."""
    out = subprocess.run(
        [sys.executable, "-m", "roost", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.stdout + out.stderr


def serve_has(option: str) -> bool:
    return option in serve_help()


class RedisServer:
    """A private redis-server on a free port; ``aof`` keeps every write (fsync always)."""

    def __init__(
        self,
        directory: Path,
        *,
        aof: bool = False,
        host: str = "127.0.0.1",
        wrap: Sequence[str] = (),
        extra: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.dir = directory
        self.aof = aof
        self.host = host  # with ``wrap``: inside a network namespace (netlab.py)
        self.wrap = list(wrap)
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        persistence = ["--appendonly", "no"]
        if self.aof:
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(
            [*self.wrap, binary, "--port", str(self.port), "--bind", self.host, "--save", "",
             "--protected-mode", "no", "--dir", str(self.dir), *persistence, *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.paused = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on {self.port}")

    def kill(self) -> None:
        """SIGKILL (no goodbye, no save) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.paused = False

    def restart(self) -> None:
        """SIGKILL, then a new redis-server on the same port and directory."""
        self.kill()
        self.start()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5)


def kill_node(node: ServerProcess) -> None:
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)


def pause_node(node: ServerProcess) -> None:
    os.kill(node.proc.pid, signal.SIGSTOP)


def resume_node(node: ServerProcess) -> None:
    os.kill(node.proc.pid, signal.SIGCONT)


class Lab:
    """Everything a test started; ``close`` stops it all by PID (SIGCONT first)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redises: list[RedisServer] = []
        self.nodes: list[ServerProcess] = []

    def redis(self, *, aof: bool = False) -> RedisServer:
        server = RedisServer(self.tmp / f"redis-{len(self.redises)}", aof=aof)
        self.redises.append(server)
        return server.start()

    def node(self, redis_server: RedisServer, name: str, *extra: str) -> ServerProcess:
        args = ["--redis", redis_server.url, *NODE_ARGS, *extra]
        server = start_server(*args, node=name, log_dir=self.tmp)
        self.nodes.append(server)
        return server

    def logs(self, lines: int = 40) -> str:
        out = []
        for server in self.nodes:
            tail = server.log().splitlines()[-lines:]
            out.append(f"--- {server.log_path.name} ---\n" + "\n".join(tail))
        return "\n".join(out)

    def close(self) -> None:
        for server in self.nodes:
            if server.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.proc.pid, signal.SIGCONT)
                server.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.proc.wait(10)
        for r in self.redises:
            with contextlib.suppress(Exception):
                r.kill()


# -- HTTP and /proc ----------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """(status, JSON body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body.decode(errors="replace")
    except (OSError, ValueError):
        return 0, None


async def ahttp_get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    return await asyncio.to_thread(http_get, url, timeout)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def eventually(pred: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred()`` (sync) until true or ``timeout``; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


# -- members and publishers ---------------------------------------------------------------


@dataclass
class Received:
    id: str
    user: str
    body: str
    offset: int | None
    via: str  # "live" or "history"
    join: int  # which join of the member (0 = first)


@dataclass
class JoinRecord:
    url: str
    since: dict[str, Any] | None
    status: str = ""
    response: Any = None
    at: float = 0.0


class Member:
    """A room member that records what it receives and fails over to the next node."""

    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        room: str,
        *,
        failover: bool = True,
        failover_timeout: float = 20.0,
        heartbeat: float = 30.0,
    ) -> None:
        self.name = name
        self.heartbeat = heartbeat  # the client's heartbeat interval (keep it < --idle-timeout)
        self.urls = list(urls)
        self.room = room
        self.failover = failover
        self.failover_timeout = failover_timeout
        self.url_index = 0
        self.client: Client | None = None
        self.channel: ClientChannel | None = None
        self.stream: list[Received] = []
        self.joins: list[JoinRecord] = []
        self.events: dict[str, list[Any]] = {}  # other events of the room, by name
        self.problems: list[str] = []
        # join number → topic frames that came before that join's reply (event → count)
        self.early: dict[int, Counter[str]] = {}
        self.no_cursor = 0  # ok join replies without offset/epoch
        # joins (0 = first) answered recovered: false with a new epoch: their history is
        # a new start, showing again messages the member had (not duplicates)
        self.resets: set[int] = set()
        self.epoch: str | None = None
        self.offset: int | None = None
        self.joined_at: float | None = None  # first ok join reply (monotonic)
        self.required_from = 0.0  # acked messages sent after this must all arrive
        self.ready = asyncio.Event()  # joined (cleared while failing over)
        self.connected = asyncio.Event()  # the first connection is open
        self.stopping = False
        self.failovers = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def node_url(self) -> str:
        return self.urls[self.url_index]

    def ids(self) -> set[str]:
        return {r.id for r in self.stream}

    async def start(self, timeout: float = 10.0, gate: asyncio.Event | None = None) -> Any:
        """Connect, wait for ``gate`` (to join many at once), join; the ok response."""
        return await self._connect_and_join(self.url_index, timeout, gate)

    def _payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"user": self.name}
        if self.epoch is not None and self.offset is not None:
            payload["since"] = {"offset": self.offset, "epoch": self.epoch}
        return payload

    async def _connect_and_join(
        self, index: int, timeout: float, gate: asyncio.Event | None = None
    ) -> Any:
        url = self.urls[index]
        client = Client(url, {"user": self.name}, heartbeat=self.heartbeat, reconnect=False)
        try:
            await client.connect(timeout)
            self.connected.set()
            if gate is not None:
                await gate.wait()
        except BaseException:
            await client.close()
            raise
        payload = self._payload()
        channel = client.channel(self.room, payload)
        record = JoinRecord(url, payload.get("since"))
        self.joins.append(record)
        self.client, self.channel, self.url_index = client, channel, index
        client.on_message.append(lambda msg: self._on_frame(channel, record, msg))
        client.on_close.append(lambda code: self._on_close(client))
        try:
            response = await channel.join(timeout)
        except BaseException:
            self.client = self.channel = None  # its close must not start another failover
            await client.close()
            raise
        self.ready.set()
        return response

    def _on_frame(self, channel: ClientChannel, record: JoinRecord, msg: Message) -> None:
        if msg.topic != self.room or self.channel is None or self.channel is not channel:
            return
        if msg.event == "phx_reply" and msg.ref is not None and msg.ref == channel.join_ref:
            self._on_join_reply(record, msg.payload)
            return
        if not record.status:  # this join's reply has not come yet
            self.early.setdefault(len(self.joins), Counter())[msg.event] += 1
        if msg.event == "new:msg" and msg.ref is None:
            self._take(msg.payload, "live")
        elif msg.event != "phx_reply":
            self.events.setdefault(msg.event, []).append(msg.payload)

    def _on_join_reply(self, record: JoinRecord, payload: Any) -> None:
        record.at = time.monotonic()
        record.status = str(payload.get("status", ""))
        record.response = response = payload.get("response")
        if record.status != "ok" or not isinstance(response, dict):
            return
        n = len(self.joins)
        if self.joined_at is None:
            self.joined_at = self.required_from = record.at
        if not isinstance(response.get("offset"), int) or not response.get("epoch"):
            self.no_cursor += 1
            self.problems.append(f"join {n}: ok reply without offset/epoch: {_short(response)}")
        elif record.since is not None and response.get("recovered") is not True:
            if response["epoch"] == record.since["epoch"]:
                self.problems.append(
                    f"join {n}: not recovered from {record.since} though the epoch is "
                    f"unchanged (reply offset {response['offset']})"
                )
            else:  # history lost (a new epoch): only what comes after can be promised
                self.required_from = record.at
                self.resets.add(n - 1)
        for item in response.get("history") or []:
            self._take(item, "history")
        if isinstance(response.get("offset"), int) and response.get("epoch"):
            # The cursor: the reply's offset, or a later one pushed before the reply.
            early = [r.offset for r in self.stream if r.join == n - 1 and r.offset is not None]
            self.epoch = str(response["epoch"])
            self.offset = max([response["offset"], *early])

    def _take(self, payload: Any, via: str) -> None:
        if not isinstance(payload, dict):
            return
        offset = payload.get("offset")
        self.stream.append(
            Received(
                str(payload.get("id")),
                str(payload.get("user")),
                str(payload.get("body")),
                offset if isinstance(offset, int) else None,
                via,
                len(self.joins) - 1,
            )
        )
        if via == "live" and isinstance(offset, int):
            self.offset = offset

    def _on_close(self, client: Client) -> None:
        if client is not self.client:
            return
        self.ready.clear()
        if self.stopping or not self.failover:
            return
        task = asyncio.get_running_loop().create_task(self._failover())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _failover(self) -> None:
        """The node is gone: the next node in ``urls``, rejoin with ``since``."""
        old = self.client
        if old is not None:
            await old.close()
        deadline = time.monotonic() + self.failover_timeout
        index = self.url_index
        while not self.stopping and time.monotonic() < deadline:
            index = (index + 1) % len(self.urls)
            try:
                await self._connect_and_join(index, 5.0)
                self.failovers += 1
                return
            except Exception:
                await asyncio.sleep(0.1)
        if not self.stopping:
            self.problems.append(f"could not rejoin within {self.failover_timeout:g}s")

    async def push(self, event: str, payload: Any, timeout: float) -> PushReply:
        await asyncio.wait_for(self.ready.wait(), timeout)
        assert self.channel is not None
        return await self.channel.push(event, payload, timeout)

    async def leave(self) -> None:
        self.stopping = True
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await self.channel.leave(5.0)

    async def close(self) -> None:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        if self.client is not None:
            await self.client.close()


@dataclass
class Push:
    seq: int
    body: str
    sent_at: float
    replied_at: float | None = None
    status: str = ""  # ok | error | lost
    response: Any = None
    id: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.replied_at is None else self.replied_at - self.sent_at


@dataclass
class Publisher:
    """Sends ``new:msg`` one at a time through its own Member (it is a member too)."""

    member: Member
    interval: float = 0.02
    push_timeout: float = 10.0
    pushes: list[Push] = field(default_factory=list)
    seq: int = 0
    pad: str = ""  # appended to every body (bigger messages)

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def acked(self) -> list[Push]:
        return [p for p in self.pushes if p.status == "ok"]

    def with_status(self, status: str) -> list[Push]:
        return [p for p in self.pushes if p.status == status]

    async def send(self) -> Push:
        self.seq += 1
        push = Push(self.seq, f"{self.name}#{self.seq}{self.pad}", time.monotonic())
        self.pushes.append(push)
        try:
            reply = await self.member.push("new:msg", {"body": push.body}, self.push_timeout)
        except (TimeoutError, ConnectionError) as exc:
            push.status, push.response = "lost", repr(exc)
            return push
        push.replied_at = time.monotonic()
        push.status = "ok" if reply.ok else "error"
        push.response = reply.response
        if reply.ok and isinstance(reply.response, dict):
            push.id = str(reply.response.get("id"))
        return push

    async def send_many(self, count: int) -> None:
        for _ in range(count):
            push = await self.send()
            assert push.status == "ok", (push.body, push.status, push.response)

    async def run_pipelined(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a new message every ``interval`` without waiting for replies (as a
        chat client typing fast does): a node that holds one push back holds those behind it."""
        pending: set[asyncio.Task[Push]] = set()
        while not stop.is_set():
            if self.member.ready.is_set():
                task = asyncio.create_task(self.send())
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(self.interval)
        await asyncio.gather(*pending, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: send, wait for the reply, pause ``interval``, send a new one."""
        while not stop.is_set():
            push = await self.send()
            if push.status == "lost":  # connection lost: wait for the rejoin
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.member.ready.wait(), self.push_timeout)
            elif push.status == "error":
                await asyncio.sleep(0.05)
            if self.interval:
                await asyncio.sleep(self.interval)


# -- the invariant ------------------------------------------------------------------------


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _ranges(seqs: Iterable[int]) -> str:
    """[1, 2, 3, 7] → "#1-3, #7" (at most 8 runs shown)."""
    runs: list[list[int]] = []
    for s in sorted(seqs):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    parts = [f"#{a}" if a == b else f"#{a}-{b}" for a, b in runs]
    return ", ".join(parts[:8]) + (f", ... ({len(parts)} runs)" if len(parts) > 8 else "")


@dataclass
class Verdict:
    problems: list[str]
    missing: int = 0
    duplicated: int = 0
    reordered: int = 0
    members_hit: int = 0
    members: int = 0
    acked: int = 0
    early_joins: int = 0  # joins with topic frames before their reply
    no_cursor: int = 0  # ok join replies without offset/epoch
    deliveries: int = 0  # acked messages seen by members (live and in join replies)

    def summary(self) -> str:
        return (
            f"{self.members_hit} of {self.members} members: {self.missing} acked messages "
            f"missing, {self.duplicated} duplicated, {self.reordered} out of order "
            f"({self.acked} acked); {self.early_joins} joins with frames before the reply, "
            f"{self.no_cursor} ok join replies without offset/epoch"
        )

    def message(self, limit: int = 40) -> str:
        lines = self.problems[:limit]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        return self.summary() + "\n" + "\n".join(lines)

    def __bool__(self) -> bool:
        return not self.problems


def report(scenario: str, verdict: Verdict, **figures: Any) -> None:
    """One line of figures per scenario (``pytest -s tests/faults | grep FIGURES``)."""
    extra = " ".join(f"{k}={v}" for k, v in figures.items())
    print(
        f"FIGURES {scenario}: {verdict.members} members, {verdict.acked} acked, "
        f"{verdict.deliveries} deliveries checked, {verdict.missing} missing, "
        f"{verdict.duplicated} duplicated, {verdict.reordered} reordered, "
        f"{verdict.no_cursor} joins without cursor {extra}"
    )


def missing_for(member: Member, publishers: Sequence[Publisher]) -> int:
    """How many acked messages ``member`` must still get."""
    have = member.ids()
    return sum(
        1
        for pub in publishers
        for p in pub.acked
        if p.sent_at >= member.required_from and p.id not in have
    )


async def settle(
    members: Sequence[Member], publishers: Sequence[Publisher], timeout: float, extra: float = 0.5
) -> None:
    """Wait (at most ``timeout``) until nothing is missing, then ``extra`` for duplicates.

    Nothing is sent meanwhile: a gap must be filled without a later message revealing it.
    """
    await eventually(lambda: all(missing_for(m, publishers) == 0 for m in members), timeout)
    await asyncio.sleep(extra)


def check_delivery(members: Sequence[Member], publishers: Sequence[Publisher]) -> Verdict:
    """Every acked message of every publisher, exactly once, in publisher order, per member.

    A member must have every acked message sent after its first ok join (or after a
    rejoin that was answered ``recovered: false`` with a new epoch); messages sent
    earlier may be in its first history, but then once and in order too.
    """
    verdict = Verdict([], members=len(members))
    verdict.acked = sum(len(p.acked) for p in publishers)
    for m in members:
        hit = False
        where = f"{m.name}@{m.node_url.split(':')[-1].split('/')[0]}"
        for problem in m.problems:
            verdict.problems.append(f"{where}: {problem}")
            hit = True
        for n, frames in sorted(m.early.items()):
            listed = ", ".join(f"{event} x{count}" for event, count in frames.most_common())
            verdict.problems.append(f"{where}: join {n}: before its reply came {listed}")
            verdict.early_joins += 1
            hit = True
        verdict.no_cursor += m.no_cursor
        stream_ids, had = [], set()
        for r in m.stream:
            if not (r.via == "history" and r.join in m.resets and r.id in had):
                stream_ids.append(r.id)
                had.add(r.id)
        for pub in publishers:
            acked = pub.acked
            index = {p.id: i for i, p in enumerate(acked)}
            seen = [index[i] for i in stream_ids if i in index]
            verdict.deliveries += len(seen)
            counts = Counter(seen)
            dup = [acked[i].seq for i, c in counts.items() if c > 1]
            missing = [
                p.seq
                for i, p in enumerate(acked)
                if p.sent_at >= m.required_from and i not in counts
            ]
            firsts = list(dict.fromkeys(seen))
            late: list[int] = []
            top = -1
            for i in firsts:
                if i < top:
                    late.append(acked[i].seq)
                top = max(top, i)
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing ({_ranges(missing)})")
            if dup:
                parts.append(f"{len(dup)} duplicated ({_ranges(dup)})")
            if late:
                parts.append(f"{len(late)} out of order ({_ranges(late)})")
            if parts:
                hit = True
                verdict.missing += len(missing)
                verdict.duplicated += len(dup)
                verdict.reordered += len(late)
                verdict.problems.append(f"{where}: from {pub.name}: " + "; ".join(parts))
        verdict.members_hit += hit
    return verdict


async def close_all(items: Iterable[Member | Publisher]) -> None:
    members = [i.member if isinstance(i, Publisher) else i for i in items]
    await asyncio.gather(*(m.close() for m in members), return_exceptions=True)
