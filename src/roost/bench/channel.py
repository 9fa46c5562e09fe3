"""``bench:*`` (``roost serve --bench``): the server side of the benchmarks.

Subscribers join ``bench:<room>`` (nothing is broadcast on join). A push ``fire``
``{"topic", "event", "payload", "count"}`` broadcasts ``count`` times through the
node's PubSub (the same path the chat takes), yielding to the event loop between
broadcasts, and replies with the server-side time taken.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..channels import Channel, Reply
from ..protocol import Encoded


class BenchChannel(Channel):
    async def join(self, payload: Any) -> Any:
        return {"node": self.node}

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event != "fire" or not isinstance(payload, dict):
            return Reply.error({"reason": "unknown event"})
        count = int(payload.get("count", 1))
        topic = str(payload.get("topic", self.topic))
        ev = str(payload.get("event", "new:msg"))
        encoded = Encoded.of(payload.get("payload", {}))
        pubsub = self.socket.endpoint.pubsub
        t0 = time.perf_counter()
        for _ in range(count):
            await pubsub.broadcast(topic, ev, encoded)
            await asyncio.sleep(0)
        return Reply.ok({"elapsed": time.perf_counter() - t0, "count": count})
