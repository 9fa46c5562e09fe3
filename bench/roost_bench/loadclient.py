"""Cheap load clients: raw asyncio protocols that speak just enough WebSocket.

Each client does the HTTP upgrade, sends (masked) text frames, and counts the bytes
it receives — no frame parsing on the hot path, so the server, not the client, is
what the benchmark measures. Broadcast frames of a run all have the same size, so
bytes / frame size = frames delivered.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import cast

import orjson


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame; the mask key is zero so the payload is sent as is."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


def upgrade_request(host: str, path: str) -> bytes:
    """The HTTP request that opens a WebSocket (``host`` as ``name:port``)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def join_frame(topic: str, ref: str = "1") -> bytes:
    return client_frame(orjson.dumps([ref, ref, topic, "phx_join", {}]))


class CountingClient(asyncio.Protocol):
    def __init__(self, host: str, path: str, on_first: asyncio.Future[None] | None) -> None:
        self.host = host
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buf = b""
        self.received = 0
        self.upgraded_fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first = on_first

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(upgrade_request(self.host, self.path))

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self.received += len(data)
            return
        self.buf += data
        body = self.take_upgrade()
        if body is None:
            return
        self.received = len(self.buf) - body
        self.buf = b""

    def take_upgrade(self) -> int | None:
        """Parse the upgrade response in ``buf``: where the frames after it start, or None
        while it is incomplete or when it was refused (``upgraded_fut`` then fails)."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        if not self.buf.startswith(b"HTTP/1.1 101"):
            if not self.upgraded_fut.done():
                self.upgraded_fut.set_exception(
                    ConnectionError(self.buf[:80].decode(errors="replace"))
                )
            return None
        self.upgraded = True
        if not self.upgraded_fut.done():
            self.upgraded_fut.set_result(None)
        return end + 4

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded_fut.done():
            self.upgraded_fut.set_exception(ConnectionError("connection lost"))

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def open_clients(
    host: str, port: int, path: str, count: int, concurrency: int = 200
) -> list[CountingClient]:
    """Open ``count`` upgraded connections, ``concurrency`` handshakes at a time."""
    loop = asyncio.get_running_loop()
    clients: list[CountingClient] = []
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            _, proto = await loop.create_connection(
                lambda: CountingClient(f"{host}:{port}", path, None), host, port
            )
            await asyncio.wait_for(proto.upgraded_fut, 30)
            clients.append(proto)

    await asyncio.gather(*(one() for _ in range(count)))
    return clients


async def wait_bytes(clients: list[CountingClient], target: int, timeout: float) -> bool:
    """Wait until every client has received at least ``target`` bytes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if all(c.received >= target for c in clients):
            return True
        await asyncio.sleep(0.002)
    return False


def close_all(clients: list[CountingClient]) -> None:
    for c in clients:
        if c.transport is not None:
            c.transport.close()
