"""The latency probe: one WebSocket subscriber alone in its own process.

Alone, so that its receipt times are not delayed by the counting clients sharing a
loop with it. It joins a topic, then takes commands on stdin, one per line:
``reset``, ``report TARGET_BYTES`` (waits until that many bytes arrived or nothing
moved for a while, then prints JSON: bytes received, latencies in µs, earliest
stamp), ``quit``. Stamps come out of the received bytes through one C regex per read.

Run: ``python -m roost_bench.probe HOST PORT TOPIC`` (prints ``ready`` once joined).
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from .channel import STAMP_RE, now_us
from .loadclient import CountingClient, join_frame

WS_PATH = "/socket/websocket?vsn=2.0.0"
STAMP_MATCH = len(b'"ts":') + 16
IDLE = 3.0


class ProbeClient(CountingClient):
    """A counting client that also records (receipt µs, stamps found) for each read."""

    def __init__(self, host: str, path: str) -> None:
        super().__init__(host, path, None)
        self.samples: list[tuple[int, list[bytes]]] = []
        self.tail = b""
        self.last_data = time.monotonic()

    def reset(self) -> None:
        self.received = 0
        self.samples = []
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            super().data_received(data)
            return
        t = now_us()
        self.last_data = time.monotonic()
        self.received += len(data)
        buf = self.tail + data
        found = STAMP_RE.findall(buf)
        if found:
            self.samples.append((t, found))
        # A match is STAMP_MATCH bytes: a tail one byte shorter never matches twice.
        self.tail = buf[-(STAMP_MATCH - 1) :]

    def report(self) -> bytes:
        lat: list[int] = []
        first: int | None = None
        last_recv: int | None = None
        for t, found in self.samples:
            last_recv = t
            for stamp in found:
                s = int(stamp)
                lat.append(t - s)
                if first is None or s < first:
                    first = s
        return orjson.dumps(
            {"received": self.received, "lat_us": lat, "first": first, "last_recv": last_recv}
        )


def _out(data: bytes) -> None:
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()


async def main(host: str, port: int, topic: str) -> None:
    loop = asyncio.get_running_loop()
    _, probe = await loop.create_connection(
        lambda: ProbeClient(f"{host}:{port}", WS_PATH), host, port
    )
    await asyncio.wait_for(probe.upgraded_fut, 10)
    probe.send(join_frame(topic))
    deadline = time.monotonic() + 10
    while probe.received == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no join reply")
        await asyncio.sleep(0.005)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _out(b"ready")
    while line := await reader.readline():
        cmd, _, arg = line.strip().partition(b" ")
        if cmd == b"reset":
            probe.reset()
            _out(b"ok")
        elif cmd == b"report":
            target = int(arg or 0)
            while probe.received < target and time.monotonic() - probe.last_data < IDLE:
                await asyncio.sleep(0.005)
            _out(probe.report())
        elif cmd == b"quit":
            break
    if probe.transport is not None:
        probe.transport.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
