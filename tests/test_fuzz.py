"""A seeded fuzzer: 100,000+ random and mutated frames over raw sockets against a real node.

Frames are built by hand (masked client frames written straight to a TCP socket, many
at a time, with a reader draining the answers concurrently): valid Phoenix messages
with random payloads, fields of the wrong type, the wrong number of elements, valid
JSON cut short or with a broken tail, flipped bytes, invalid UTF-8 in text frames,
random bytes, binary pushes with lengths running past the end (0x80-0xFF: "negative"
as signed bytes), unknown binary kinds, and now and then a WebSocket-level violation
(unmasked, reserved bits, unknown opcode, stray continuation, a huge declared length,
an oversized frame, a bad close code). The server closing a connection is expected:
the fuzzer reconnects. Afterwards the node's log holds no unhandled exception, a
normal client is still served, and the node's memory stayed bounded.

``ROOST_FUZZ_SEED`` and ``ROOST_FUZZ_FRAMES`` change the run (the seed is printed).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
import time
from pathlib import Path
from typing import Any

import orjson

from roost.client import Client

from support import ServerProcess, start_server

SEED = int(os.environ.get("ROOST_FUZZ_SEED", "20261126"))
FRAMES = int(os.environ.get("ROOST_FUZZ_FRAMES", "110000"))
CONCURRENCY = 8
BATCH = 50  # frames per write: pipelined, no waiting for replies
FATAL_RATE = 0.005  # frames that usually end their connection (so ~200 frames a connection)
V1_KEYS = ["join_ref", "ref", "topic", "event", "payload"]
# An idle node is ~50 MB here and the run peaks ~60-70 MB; leaked buffers, channels or
# per-connection state over ~2,000 connections would show well above this.
RSS_BOUND_MB = 150
BAD_LOG = ("Traceback", "Unhandled", "Error handling request", "error   ")

ROOMS = ["rooms:lobby", *(f"rooms:r{n}" for n in range(5))]  # bounded: history is kept per room
ECHOS = [f"echo:e{n}" for n in range(5)]
EVENTS = ["new:msg", "echo", "bin", "broadcast", "broadcast_from", "phx_leave", "phx_join"]
# Never "crash": the echo channel's deliberate crash logs a traceback by design.
SAFE_WORDS = [
    "user",
    "body",
    "since",
    "offset",
    "epoch",
    "n",
    "x",
    "",
    "\u00e9\u2603",
    "\U0001f600",
]


# -- WebSocket framing (client side, masked) -----------------------------------------------


def mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_frame(
    opcode: int, data: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(data)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, bit | n])
    elif n < 65536:
        head = bytes([first, bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + data
    key = os.urandom(4)
    return head + key + mask(data, key)


TEXT, BINARY, CLOSE, PING = 0x1, 0x2, 0x8, 0x9


# -- the generator -----------------------------------------------------------------------


class Fuzzer:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.refs = 0
        self.kinds: dict[str, int] = {}

    def ref(self) -> str:
        self.refs += 1
        return str(self.refs)

    def text(self, max_len: int = 40) -> str:
        r = self.r
        pick = r.random()
        if pick < 0.5:
            return "".join(
                r.choice("abcdefghijklmnopqrstuvwxyz0123456789:_- ")
                for _ in range(r.randint(0, max_len))
            )
        if pick < 0.8:
            return r.choice(SAFE_WORDS) * r.randint(0, 3)
        # Any code point but lone surrogates (orjson cannot encode those).
        return "".join(
            chr(c)
            for c in (r.randint(1, 0x10FFFF) for _ in range(r.randint(0, 12)))
            if not 0xD800 <= c <= 0xDFFF
        )

    def value(self, depth: int = 0) -> Any:
        r = self.r
        pick = r.random()
        if depth > 3 or pick < 0.25:
            return r.choice(
                [None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, -0.0, 1e308, self.text()]
            )
        if pick < 0.6:
            return {self.text(8): self.value(depth + 1) for _ in range(r.randint(0, 4))}
        return [self.value(depth + 1) for _ in range(r.randint(0, 4))]

    def payload(self, topic: str, event: str) -> Any:
        r = self.r
        if event == "phx_join" and topic.startswith("rooms:"):
            p: dict[str, Any] = {}
            if r.random() < 0.7:
                p["user"] = r.choice([self.text(40), None, 5, [], "al"])
            if r.random() < 0.4:
                p["since"] = r.choice(
                    [
                        {"offset": r.randint(-5, 300), "epoch": r.choice(["", "x", self.text()])},
                        {"offset": self.value(), "epoch": self.value()},
                        self.value(),
                    ]
                )
            return p
        if event == "new:msg":
            return r.choice(
                [
                    {"body": self.text(r.choice([10, 100, 2100]))},
                    {"body": self.value()},
                    {"user": self.value(), "body": "hi"},
                    self.value(),
                ]
            )
        return self.value()

    def message(self) -> list[Any]:
        r = self.r
        topic = r.choice(ROOMS + ECHOS + ["phoenix", "nope:x", self.text(20) or "t"])
        event = r.choice(EVENTS)
        if topic == "phoenix" and r.random() < 0.7:
            event = "heartbeat"
        join_ref = r.choice([None, "1", "2", self.ref()])
        return [join_ref, self.ref(), topic, event, self.payload(topic, event)]

    def count(self, kind: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def frame(self, v1: bool) -> bytes:
        """One masked WebSocket frame (occasionally a few, or a protocol violation)."""
        r = self.r
        msg = self.message()
        valid = self.encode(msg, v1)
        if r.random() < FATAL_RATE:
            # Usually fatal for its connection (1007/1002/1009): the fuzzer reconnects.
            return self.fatal(msg, valid, v1)
        pick = r.random()
        if pick < 0.6:
            self.count("valid")
            return ws_frame(TEXT, valid)
        if pick < 0.8:
            self.count("wrong types")  # join_ref, event, payload: answered with an error
            wrong = list(msg)
            for _ in range(r.randint(1, 2)):
                wrong[r.choice([0, 3, 4])] = r.choice([5, [], {}, True, None, "", self.value()])
            return ws_frame(TEXT, self.encode(wrong, v1))
        if pick < 0.85:
            self.count("heartbeat")
            return ws_frame(TEXT, self.encode([None, self.ref(), "phoenix", "heartbeat", {}], v1))
        if pick < 0.95 and not v1:
            self.count("binary push")
            return ws_frame(BINARY, self.binary(msg))
        if pick < 0.97:
            self.count("fragmented")  # valid: a text message in 2-3 fragments
            cut1 = r.randint(0, len(valid))
            cut2 = r.randint(cut1, len(valid))
            return (
                ws_frame(TEXT, valid[:cut1], fin=False)
                + ws_frame(0x0, valid[cut1:cut2], fin=False)
                + ws_frame(0x0, valid[cut2:])
            )
        self.count("ping")
        return ws_frame(PING, r.randbytes(r.randint(0, 125)))

    @staticmethod
    def encode(msg: list[Any], v1: bool) -> bytes:
        if v1:
            return orjson.dumps(dict(zip(V1_KEYS, msg, strict=True)))
        return orjson.dumps(msg)

    def binary(self, msg: list[Any]) -> bytes:
        """A well-formed client binary push (V2) with a random payload."""
        fields = [str(f or "").encode()[:255] for f in msg[:4]]
        payload = self.r.randbytes(self.r.randint(0, 64))
        return bytes([0, *(len(f) for f in fields)]) + b"".join(fields) + payload

    def fatal(self, msg: list[Any], valid: bytes, v1: bool) -> bytes:
        r = self.r
        pick = r.random()
        if pick < 0.15:
            self.count("binary mutated")
            good = self.binary(msg)
            pick = r.random()
            if pick < 0.3:  # lengths past the end (0x80-0xFF: "negative" as signed bytes)
                data = bytes([0, *(r.randint(0x80, 0xFF) for _ in range(4))]) + r.randbytes(10)
            elif pick < 0.55:
                data = bytes([r.choice([1, 2, 3, 0x7F, 0xFF])]) + good[1:]
            elif pick < 0.8:
                data = good[: r.randint(0, len(good))]
            else:
                data = bytes([0, 2, 2, 2, 2]) + b"\xff\xfe" * 4
            return ws_frame(BINARY, data)
        if pick < 0.22:
            self.count("unanswerable types")  # topic or ref of the wrong type
            wrong = list(msg)
            wrong[r.choice([1, 2])] = r.choice([5, [], {}, True, None, "", 1.5])
            return ws_frame(TEXT, self.encode(wrong, v1))
        if pick < 0.3:
            self.count("v1 object on v2" if not v1 else "v2 array on v1")
            return ws_frame(TEXT, self.encode(msg, not v1))
        pick = r.random()
        if pick < 0.25:
            self.count("broken tail")
            cut = r.randint(1, max(1, len(valid) - 1))
            return ws_frame(TEXT, valid[:cut] + r.choice([b"", b",", b"}", b"]]", r.randbytes(3)]))
        if pick < 0.4:
            self.count("flipped bytes")
            data = bytearray(valid)
            for _ in range(r.randint(1, 4)):
                data[r.randrange(len(data))] = r.randrange(256)
            return ws_frame(TEXT, bytes(data))
        if pick < 0.5:
            self.count("invalid utf-8")
            bad = r.choice(
                [b"\xff\xfe", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80", b"\xf4\x90\x80\x80"]
            )
            pos = r.randint(0, len(valid))
            return ws_frame(TEXT, valid[:pos] + bad + valid[pos:])
        if pick < 0.6:
            self.count("random text")
            return ws_frame(TEXT, r.randbytes(r.randint(0, 200)))
        if pick < 0.7:
            self.count("random binary")
            return ws_frame(BINARY, r.randbytes(r.randint(0, 200)))
        if pick < 0.76:
            self.count("wrong arity")
            return ws_frame(
                TEXT, orjson.dumps([self.value() for _ in range(r.choice([0, 1, 4, 6]))])
            )
        if pick < 0.8:
            self.count("not an array")
            return ws_frame(TEXT, orjson.dumps(self.value()))
        if pick < 0.84:
            self.count("unmasked")
            return ws_frame(TEXT, valid, masked=False)
        if pick < 0.87:
            self.count("reserved bits")
            return ws_frame(TEXT, valid, rsv=r.choice([1, 2, 4]))
        if pick < 0.9:
            self.count("unknown opcode")
            return ws_frame(r.choice([0x3, 0x7, 0xB, 0xF]), valid)
        if pick < 0.92:
            self.count("stray continuation")
            return ws_frame(0x0, valid)
        if pick < 0.94:
            self.count("huge length")
            return bytes([0x81, 0xFF]) + struct.pack("!Q", r.choice([2**63 - 1, 2**40, 70_000]))
        if pick < 0.96:
            self.count("oversized")
            return ws_frame(TEXT, b'["1","2","echo:e0","echo",{"x":"' + b"x" * 70_000 + b'"}]')
        if pick < 0.98:
            self.count("bad close")
            return ws_frame(
                CLOSE, struct.pack("!H", r.choice([0, 999, 1005, 1006, 5000])) + b"\xff"
            )
        self.count("long ping")
        return ws_frame(PING, b"p" * 200, masked=True)


# -- running it --------------------------------------------------------------------------


class Totals:
    def __init__(self) -> None:
        self.frames = 0
        self.connections = 0
        self.closed_by_server = 0
        self.refused = 0
        self.replies = 0
        self.bytes_in = 0


async def handshake(port: int, query: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /socket/websocket?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise ConnectionRefusedError(head.split(b"\r\n")[0].decode())
    return reader, writer


async def drain(reader: asyncio.StreamReader, totals: Totals) -> None:
    while chunk := await reader.read(1 << 16):
        totals.bytes_in += len(chunk)
        totals.replies += chunk.count(b'"phx_reply"')


async def worker(port: int, fuzzer: Fuzzer, totals: Totals, quota: int) -> None:
    r = fuzzer.r
    while totals.frames < quota:
        query = r.choice(["vsn=2.0.0"] * 8 + ["vsn=1.0.0", "", "vsn=3.0.0", "vsn=2.0.0&x=%ff"])
        try:
            reader, writer = await handshake(port, query)
        except ConnectionRefusedError:
            totals.refused += 1
            continue
        totals.connections += 1
        v1 = "vsn=2" not in query
        draining = asyncio.create_task(drain(reader, totals))
        budget = r.randint(50, 2000)
        try:
            while budget > 0 and totals.frames < quota and not draining.done():
                batch = [fuzzer.frame(v1) for _ in range(min(BATCH, budget))]
                writer.write(b"".join(batch))
                await writer.drain()
                await asyncio.sleep(0)  # let the reader take what came back so far
                budget -= len(batch)
                totals.frames += len(batch)
            if draining.done():
                totals.closed_by_server += 1
            else:
                writer.write(ws_frame(CLOSE, struct.pack("!H", 1000)))
                await writer.drain()
        except (ConnectionError, OSError):
            totals.closed_by_server += 1
        try:
            async with asyncio.timeout(5):
                await draining
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def normal_client_works(server: ServerProcess) -> None:
    async with Client(server.ws_url, {"user": "after"}) as client:
        room = client.channel("rooms:lobby", {"user": "after"})
        got: asyncio.Queue[Any] = asyncio.Queue()
        room.on("new:msg", got.put_nowait)
        await room.join()
        reply = await room.push("new:msg", {"body": "survived"})
        assert reply.ok, reply
        async with asyncio.timeout(5):
            while (msg := await got.get())["body"] != "survived":
                pass
        assert msg["user"] == "after"
        echo = client.channel("echo:after")
        await echo.join()
        assert (await echo.push("echo", {"x": [1, 2]})).response == {"x": [1, 2]}


async def test_fuzz_frames_do_not_hurt_the_node(tmp_path: Path) -> None:
    server = start_server("--echo", "--msg-rate", "0", "--join-rate", "0", log_dir=tmp_path)
    try:
        baseline = rss_mb(server.proc.pid)
        peak = baseline
        totals = Totals()
        fuzzers = [Fuzzer(SEED * 100 + n) for n in range(CONCURRENCY)]
        t0 = time.monotonic()
        workers = [asyncio.create_task(worker(server.port, f, totals, FRAMES)) for f in fuzzers]
        async with asyncio.timeout(90):
            while not all(w.done() for w in workers):
                peak = max(peak, rss_mb(server.proc.pid))
                assert server.proc.poll() is None, server.log()[-3000:]
                await asyncio.sleep(0.1)
            await asyncio.gather(*workers)
        elapsed = time.monotonic() - t0
        kinds: dict[str, int] = {}
        for f in fuzzers:
            for k, v in f.kinds.items():
                kinds[k] = kinds.get(k, 0) + v
        print(
            f"\nseed {SEED}: {totals.frames} frames over {totals.connections} connections "
            f"({totals.closed_by_server} closed by the server, {totals.refused} refused) in "
            f"{elapsed:.1f}s; {totals.replies} replies, {totals.bytes_in} bytes back; "
            f"RSS {baseline:.0f} -> peak {peak:.0f} MB\n{dict(sorted(kinds.items()))}"
        )
        assert totals.frames >= 100_000
        assert totals.replies >= totals.frames // 3  # most frames reached the handlers
        assert totals.closed_by_server > 100  # the fatal ones were fatal, as they must be
        await normal_client_works(server)
        assert peak < RSS_BOUND_MB
        assert rss_mb(server.proc.pid) < RSS_BOUND_MB
        log = server.log()
        for bad in BAD_LOG:
            assert bad not in log, log[log.index(bad) - 500 : log.index(bad) + 2500]
    finally:
        server.stop()
