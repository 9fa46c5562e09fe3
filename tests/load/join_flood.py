"""A join flood from one address, run as its own process (tests/test_fair_lanes.py).

``python join_flood.py URL SOCKETS BURST RATE SECONDS``: SOCKETS connections, each joins
BURST rooms at once, then every second leaves RATE of them and joins RATE new ones, for
SECONDS — within the per-socket limits (10 joins/s, burst 100). Prints one JSON line:
joins attempted, ok, refused by reason, and the seconds it ran.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from roost.client import Client, JoinRefused


async def one_socket(
    url: str, n: int, burst: int, rate: int, seconds: float, out: Counter[str]
) -> None:
    client = Client(url, {"user": f"flood{n}"}, reconnect=False)
    await client.connect(10.0)
    joined: list[Any] = []
    serial = 0

    async def join() -> None:
        nonlocal serial
        serial += 1
        channel = client.channel(f"rooms:flood-{n}-{serial}", {"user": f"flood{n}"})
        out["attempted"] += 1
        try:
            await channel.join(10.0)
        except JoinRefused as exc:
            reason = exc.response.get("reason") if isinstance(exc.response, dict) else exc.response
            out[f"refused:{reason}"] += 1
            return
        except TimeoutError:
            out["timeout"] += 1
            return
        out["ok"] += 1
        joined.append(channel)

    try:
        await asyncio.gather(*(join() for _ in range(burst)))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tick = time.monotonic()
            for channel in joined[:rate]:
                try:
                    await channel.leave(5.0)
                except Exception:
                    out["leave-failed"] += 1
            del joined[:rate]
            await asyncio.gather(*(join() for _ in range(rate)))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        await client.close()


async def main() -> None:
    url, sockets, burst, rate, seconds = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5])
    out: Counter[str] = Counter()
    t0 = time.monotonic()
    await asyncio.gather(*(one_socket(url, n, burst, rate, seconds, out) for n in range(sockets)))
    print(json.dumps({**out, "seconds": round(time.monotonic() - t0, 2)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
