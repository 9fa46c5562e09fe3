"""Past its capacity a node refuses at once, with a jittered time to come back (issue 27).

- ``Shedder`` (server/shedding.py) on an injectable clock and random source: the loop's lag
  and the handshakes in flight decide; Retry-After is spread over 1 … 5 s.
- A real node with ``--handshakes-in-flight 2`` whose connect hook is slow (the hook
  backend's ``/slow/`` answers after 5 s): two upgrades wait in the hook, the third is
  answered 503 + Retry-After from its first bytes — long before the hook would have
  answered, never a head timeout — and once the two are through, a new one is admitted.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Any

from roost.server.shedding import Shedder
from test_hooks import SECRET, Backend, backend  # noqa: F401  (the backend fixture)

from support import start_server

UPGRADE = (
    "GET /socket/websocket?vsn=2.0.0&user={user} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_lag_and_handshakes_decide() -> None:
    shedder = Shedder(max_handshakes=2, max_lag=0.5, clock=lambda: 0.0, rand=lambda: 0.0)
    assert shedder.why() is None
    shedder.observe(expected=10.0, fired=10.7)
    assert shedder.why() == "event loop lag"
    shedder.observe(expected=11.0, fired=11.01)
    assert shedder.why() is None
    shedder.handshakes = 2
    assert shedder.why() == "handshakes in flight"
    off = Shedder(max_handshakes=0, max_lag=0.0)
    off.handshakes, off.lag = 10_000, 100.0
    assert off.why() is None


def test_retry_after_is_spread() -> None:
    draws = iter([i / 1000 for i in range(1000)])
    shedder = Shedder(max_handshakes=1, max_lag=1, rand=lambda: next(draws))
    seen = Counter(int(shedder.retry_after()) for _ in range(1000))
    assert set(seen) == {1, 2, 3, 4, 5}
    assert max(seen.values()) <= 2 * min(seen.values())  # about uniform: no lockstep second


def _upgrade(port: int, user: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(UPGRADE.format(user=user).encode())
    return sock


def _status(sock: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n")[0].decode()
    lines = head.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers


async def test_past_its_handshakes_a_node_refuses_at_once(backend: Any) -> None:  # noqa: F811
    server = start_server(
        "--hook-connect", backend.url("slow/connect"), "--hook-secret", SECRET,
        "--hook-timeout", "10", "--handshakes-in-flight", "2", node="shed",
    )  # fmt: skip
    try:
        waiting = [_upgrade(server.port, f"w{i}") for i in range(2)]
        await asyncio.sleep(0.5)  # both are in the hook now
        t0 = time.monotonic()
        refused = _upgrade(server.port, "third")
        status, headers = await asyncio.to_thread(_status, refused)
        answered_in = time.monotonic() - t0
        assert status == 503, (status, headers)
        assert 1 <= int(headers["Retry-After"]) <= 5
        assert answered_in < 5.0 / 2  # the hook takes 5 s: the refusal did not wait for it
        first = await asyncio.to_thread(_status, waiting[0])  # the admitted ones are served
        assert first[0] == 101, first
        await asyncio.to_thread(_status, waiting[1])
        later = _upgrade(server.port, "later")
        assert (await asyncio.to_thread(_status, later))[0] == 101
        for sock in [*waiting, refused, later]:
            sock.close()
        print(f"FIGURES shedding: refused in {answered_in * 1000:.0f} ms (the hook: 5 s)")
    finally:
        server.stop()
