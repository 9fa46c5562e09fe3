"""A client that never reads is cut off; the others get everything; the node's memory stays flat.

A real ``roost serve`` node with a 256 KiB outgoing buffer per socket. Two raw clients
join and then stop reading (a tiny receive buffer, so the kernel cannot hide much);
three normal clients join the same topic and one of them pushes 50,000 ``broadcast``
messages, each numbered. The stuck clients must be disconnected (log line, /healthz
socket count; one of them, reading again once cut off, finds the 1013 close frame after
what was queued), every normal client must receive all 50,000 in order, and the node's
resident memory must stay under a bound.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from support import ServerProcess, start_server

MESSAGES = 50_000
CLIENTS = 3
WINDOW = 100  # the sender stays at most WINDOW + STEP messages (~210 KB) ahead of any reader
STEP = 100  # (under the 256 KiB bound even if the kernel buffered nothing)
PAD = "x" * 1000  # ~1 KB frames: 50 MB per stuck client, 200x its buffer bound
MAX_BUFFER = 256 * 1024
# Measured here: ~50 MB VmRSS for the idle node (uvloop, memory broker) and ~51 MB at the
# peak of the run. With the buffer bound disabled (--max-buffer 1e9) the same run peaks
# at ~105 MB: the growth bound below tells the two apart.
RSS_BOUND_MB = 100
RSS_GROWTH_BOUND_MB = 25


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self.stop.wait(0.02)


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def masked_text(payload: bytes) -> bytes:
    """One client→server text frame (FIN, masked), as a browser would send it."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def stuck_client(port: int, topic: str, name: str) -> socket.socket:
    """Upgrade, join ``topic``, announce it (a broadcast), then read nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:  # the handshake response only: nothing follows yet
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(masked_text(orjson.dumps(["1", "1", topic, "phx_join", {}])))
    sock.sendall(masked_text(orjson.dumps(["1", "2", topic, "broadcast", {"stuck": name}])))
    return sock


class Reader:
    """A normal client: counts the numbered broadcasts, checking their order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next = 0
        self.replies = 0
        self.stuck_seen: set[str] = set()
        self.error: str | None = None

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            if frame[3] == "phx_reply":
                self.replies += 1
                continue
            if frame[3] != "echo":
                continue
            payload = frame[4]
            if "stuck" in payload:
                self.stuck_seen.add(payload["stuck"])
                continue
            if payload["n"] != self.next:
                self.error = f"expected {self.next}, got {payload['n']}"
                return
            self.next += 1
            if self.next == MESSAGES:
                return


async def test_a_client_that_never_reads_is_disconnected(tmp_path: Path) -> None:
    server = start_server(
        "--echo", "--msg-rate", "0", "--max-buffer", str(MAX_BUFFER), log_dir=tmp_path
    )
    sampler = RssSampler(server.proc.pid)
    stuck: list[socket.socket] = []
    session = aiohttp.ClientSession()
    t_start = time.monotonic()
    try:
        baseline = rss_mb(server.proc.pid)
        sampler.start()
        topic = "echo:flood"
        readers = []
        for n in range(CLIENTS):
            ws = await session.ws_connect(f"{server.ws_url}/websocket?vsn=2.0.0", max_msg_size=0)
            await ws.send_str(orjson.dumps([str(n), "j", topic, "phx_join", {}]).decode())
            joined = orjson.loads((await ws.receive(timeout=5)).data)
            assert joined[4]["status"] == "ok", joined
            readers.append(Reader(ws))
        tasks = [asyncio.create_task(r.run()) for r in readers]
        # "never" never reads; "late" reads again once it has been cut off: it must find
        # everything queued before the cut, then the 1013 close frame.
        for name in ("never", "late"):
            stuck.append(await asyncio.to_thread(stuck_client, server.port, topic, name))
        while any(r.stuck_seen != {"never", "late"} for r in readers):  # both subscribed
            assert time.monotonic() - t_start < 10
            await asyncio.sleep(0.01)
        assert health(server)["sockets"] == CLIENTS + 2
        late = asyncio.create_task(asyncio.to_thread(read_once_cut_off, stuck[1], server))

        sender = readers[0]
        t0 = time.monotonic()
        async with asyncio.timeout(60):
            for i in range(MESSAGES):
                if i % STEP == 0:
                    while min(r.next for r in readers) < i - WINDOW:
                        assert not any(t.done() for t in tasks), [r.error for r in readers]
                        await asyncio.sleep(0.002)
                frame = ["0", f"b{i}", topic, "broadcast", {"n": i, "pad": PAD}]
                await sender.ws.send_str(orjson.dumps(frame).decode())
            await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        for r in readers:
            assert r.error is None, r.error
            assert r.next == MESSAGES
        assert sender.replies >= MESSAGES - WINDOW  # the sender's own replies flowed too

        # Both stuck clients are gone: 1013 queued, the transport aborted after 5 s at most.
        deadline = time.monotonic() + 10
        while health(server)["sockets"] != CLIENTS:
            assert time.monotonic() < deadline, health(server)
            await asyncio.sleep(0.1)
        log = server.log()
        assert log.count("slow consumer disconnected") == 2, log  # only the stuck ones
        assert "Traceback" not in log
        echoes, code = await late
        assert code == 1013
        assert 0 < echoes < MESSAGES
        # The one that never reads sees its connection end (reset, or end of stream).
        assert await asyncio.to_thread(drain_until_closed, stuck[0])

        sampler.stop.set()
        sampler.join()
        print(
            f"{MESSAGES} broadcasts to {CLIENTS} readers in {elapsed:.1f}s; "
            f"RSS baseline {baseline:.0f} MB, peak {sampler.peak:.0f} MB"
        )
        assert sampler.peak < RSS_BOUND_MB
        assert sampler.peak - baseline < RSS_GROWTH_BOUND_MB
        # The node still serves: a newcomer joins and gets a broadcast.
        ws = await session.ws_connect(f"{server.ws_url}/websocket?vsn=2.0.0")
        await ws.send_str(orjson.dumps(["1", "1", topic, "phx_join", {}]).decode())
        await ws.send_str(orjson.dumps(["1", "2", topic, "broadcast", {"n": -1}]).decode())
        async with asyncio.timeout(5):
            while True:
                frame = orjson.loads((await ws.receive()).data)
                if frame[3] == "echo":
                    assert frame[4] == {"n": -1}
                    break
        await ws.close()
        for r in readers:
            await r.ws.close()
    finally:
        sampler.stop.set()
        await session.close()
        for sock in stuck:
            sock.close()
        server.stop()


def drain_until_closed(sock: socket.socket, timeout: float = 10.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def read_once_cut_off(sock: socket.socket, server: ServerProcess) -> tuple[int, int | None]:
    """Wait until both stuck clients were cut off, then read: (echo frames, close code)."""
    deadline = time.monotonic() + 60
    while server.log().count("slow consumer disconnected") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    data = bytearray()
    sock.settimeout(4)  # within the 5 s grace before the abort
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    echoes, code, pos = 0, None, 0
    while pos + 2 <= len(data):  # server frames: unmasked
        first, n = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        if pos + n > len(data):
            break
        if first & 0x0F == 0x8:
            (code,) = struct.unpack_from("!H", data, pos)
        elif b'"echo"' in data[pos : pos + n]:
            echoes += 1
        pos += n
    return echoes, code
