"""A live poll on roost: your own channels, with history, recovery and presence.

    roost serve examples.votes.votes:app                       # one node, memory broker
    roost serve examples.votes.votes:app --redis redis://localhost:6379 --port 4001 --node n2

Clients connect with ``?name=ana`` and join ``poll:<id>``. The join reply carries every
vote so far (the topic's history: ``recover``), so a client computes the tally itself;
a client that rejoins with ``since`` gets exactly the votes it missed. Voters are listed
in presence. A vote is ``vote {"choice": "yes"|"no"|"maybe"}``; a name's latest vote
counts. Every ``VOTES_TICK`` seconds (10) each node broadcasts a ``tick`` into
``poll:clock`` from a background task (broadcasting from outside a channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from roost import Application, Channel, ConnectRefused, Endpoint, Reply

CHOICES = frozenset({"yes", "no", "maybe"})

app = Application()


@app.on_connect
def connect(params: dict[str, str], info: dict[str, Any]) -> dict[str, Any]:
    """Who is this socket? Here: a name in the connect params (a real app checks a token)."""
    name = (params.get("name") or "").strip()
    if not 1 <= len(name) <= 32:
        raise ConnectRefused("a name of 1-32 characters is required")
    return {"name": name}


@app.channel("poll:*")
class Poll(Channel):
    history_events = frozenset({"vote"})  # votes are kept and replayed; nothing else is
    __slots__ = ()

    async def join(self, payload: Any) -> Any:
        if self.topic == "poll:clock":
            return {}
        return await self.recover(payload)  # {"history": [votes], offset, epoch, recovered}

    async def after_join(self) -> None:
        if self.topic != "poll:clock":
            await self.track(self.assigns["name"], {"since": int(time.time())})

    async def handle_in(self, event: str, payload: Any, ref: Any) -> Reply | None:
        if event != "vote" or self.topic == "poll:clock":
            return Reply.error({"reason": "unknown event"})
        choice = payload.get("choice") if isinstance(payload, dict) else None
        if choice not in CHOICES:
            return Reply.error({"reason": "choice must be yes, no or maybe"})
        # Stored first (it gets an offset), then sent to every voter on every node.
        await self.broadcast("vote", {"name": self.assigns["name"], "choice": choice})
        return Reply.ok({"choice": choice})


_clock: dict[str, asyncio.Task[None]] = {}


@app.on_start
async def start_clock(endpoint: Endpoint) -> None:
    every = float(os.environ.get("VOTES_TICK", "10"))

    async def tick() -> None:
        while True:
            await asyncio.sleep(every)
            now = time.time()
            await endpoint.broadcast("poll:clock", "tick", {"node": endpoint.node, "at": now})

    _clock[endpoint.node] = asyncio.get_running_loop().create_task(tick())


@app.on_stop
async def stop_clock(endpoint: Endpoint) -> None:
    task = _clock.pop(endpoint.node, None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
