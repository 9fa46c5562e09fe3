"""Presence, Phoenix-compatible: who is in a topic, across every node.

    await presence.track(channel, "al", {"online_at": "..."})   # → a unique phx_ref
    await presence.update(channel, "al", {"status": "away"})
    await presence.untrack(channel, "al")
    await presence.list("rooms:lobby")    # {"al": {"metas": [{..., "phx_ref": ...}]}}

Changes go to the topic as ``presence_diff`` ``{"joins": {...}, "leaves": {...}}``
broadcasts, the shape phoenix.js ``Presence.syncDiff`` expects; a joiner is pushed
``presence_state``. Entries live in a store: in memory for one node, in Redis for
many (entries refreshed by their node; a dead node's entries expire and exactly one
survivor removes them and broadcasts the leaves). A channel's entries are untracked
when it ends. When the store finds it lost entries (Redis restarted empty), the
channels here that were sent a ``presence_state`` are sent a fresh one: phoenix.js's
``syncState`` drops whoever is no longer in it (users of a node that died meanwhile).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Container
from typing import Any

from ..pubsub import PubSub
from ..pubsub.presence import (
    Changed,
    Entry,
    PresenceStore,
    Resync,
    group,
    new_ref,
)
from .contracts import PresenceChannel

log = logging.getLogger("roost.presence")

DIFF = "presence_diff"
STATE = "presence_state"


class Presence:
    """Tracks presences in a store and broadcasts their changes.

    Diffs are batched per topic over ``batch`` seconds (0: each change at once): when N
    clients join a room together, the room gets one diff with N joins instead of N
    diffs — N frames per member rather than N². phoenix.js applies a diff's joins
    before its leaves and matches metas by phx_ref, so merging is safe.
    """

    def __init__(
        self,
        pubsub: PubSub,
        store: PresenceStore,
        batch: float = 0.05,
        *,
        clock: Callable[[], float] = time.monotonic,
        occupancy_ttl: float = 2.0,
    ) -> None:
        self.pubsub = pubsub
        self.store = store  # the broker's (``Broker.presence_store``)
        self.batch = batch
        self.clock = clock
        self.occupancy_ttl = occupancy_ttl
        # prefix → (when read, topic → connections): ``busiest`` reads the store once
        # per ``occupancy_ttl`` however many ask
        self._occupancy: dict[str, tuple[float, dict[str, int]]] = {}
        self._occupancy_lock = asyncio.Lock()
        # channel → {key: [ref, ...]} for what this node tracked
        self._tracked: dict[PresenceChannel, dict[str, list[str]]] = {}
        self._batches: dict[str, tuple[builtins.list[Entry], builtins.list[Entry]]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        # topic → the channels here that were pushed its presence_state (they keep a list)
        self._viewers: dict[str, set[PresenceChannel]] = {}
        self._store_failed = False

    async def start(self) -> None:
        await self.store.start(self.pubsub.node, self._changed, self._resync)

    async def stop(self) -> None:
        """Leave everything this node still tracks (a clean shutdown), then stop."""
        self._store_failed = False
        for channel in list(self._tracked):
            if self._store_failed:  # Redis down or frozen: the rest expire (and are swept)
                break
            with contextlib.suppress(Exception):
                await self.untrack(channel)
        for topic in list(self._batches):
            self._flush(topic)
        if self._sending:
            await asyncio.wait(self._sending, timeout=5)
        await self.store.stop()

    @property
    def entries(self) -> int:
        return sum(len(refs) for keys in self._tracked.values() for refs in keys.values())

    def counts(self, topics: Container[str]) -> dict[str, int]:
        """Entries this node tracks in each of ``topics`` (the admin dashboard's
        presence column): one pass over the tracked channels."""
        per_topic: dict[str, int] = {}
        for channel, keys in self._tracked.items():
            topic = channel.topic
            if topic in topics:
                n = per_topic.get(topic, 0)
                for refs in keys.values():
                    n += len(refs)
                per_topic[topic] = n
        return per_topic

    async def track(self, channel: PresenceChannel, key: str, meta: dict[str, Any]) -> str:
        ref = new_ref()
        if not channel.joined:  # it ended already (e.g. crashed during its after_join)
            return ref
        entry = Entry(ref, key, {**meta, "phx_ref": ref})
        self._tracked.setdefault(channel, {}).setdefault(key, []).append(ref)
        try:
            await self.store.add(channel.topic, entry)
        except ValueError:  # the store refuses the entry (meta too large): the caller's error
            self._drop(channel, key, ref)
            raise
        except Exception:
            log.warning("presence store unavailable; %s on %s tracked later", key, channel.topic)
            return ref
        if not channel.joined:  # ended while the entry was written: its untrack came first
            self._drop(channel, key, ref)
            try:
                await self.store.remove(channel.topic, [ref])
            except Exception:  # its entry expires and is swept
                log.warning(
                    "presence store unavailable; %s on %s left to expiry", key, channel.topic
                )
            return ref
        await self._diff(channel.topic, joins=[entry])
        return ref

    def _drop(self, channel: PresenceChannel, key: str, ref: str) -> None:
        refs = self._tracked.get(channel, {}).get(key, [])
        if ref in refs:
            refs.remove(ref)

    async def update(self, channel: PresenceChannel, key: str, meta: dict[str, Any]) -> str | None:
        """Replace the key's meta on this channel: a new phx_ref, one diff (join + leave)."""
        refs = self._tracked.get(channel, {}).get(key)
        if not refs:
            return None
        old = refs[-1]
        ref = new_ref()
        entry = Entry(ref, key, {**meta, "phx_ref": ref, "phx_ref_prev": old})
        await self.store.add(channel.topic, entry)
        refs[-1] = ref
        removed = await self.store.remove(channel.topic, [old])
        await self._diff(channel.topic, joins=[entry], leaves=removed)
        return ref

    async def untrack(self, channel: PresenceChannel, key: str | None = None) -> None:
        if key is None:  # the channel ends (the socket untracks every joined channel)
            self._forget(channel)
        tracked = self._tracked.get(channel)
        if not tracked:
            return
        keys = [key] if key is not None else list(tracked)
        refs = [ref for k in keys for ref in tracked.pop(k, [])]
        if not tracked:
            del self._tracked[channel]
        if refs:
            try:
                removed = await self.store.remove(channel.topic, refs)
            except Exception:  # its entries expire and are swept by a node
                self._store_failed = True
                log.warning(
                    "presence store unavailable; untrack on %s left to expiry", channel.topic
                )
                return
            await self._diff(channel.topic, leaves=removed)

    async def list(self, topic: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return group(await self.store.list(topic))

    async def busiest(self, prefix: str, scan: int = 1000) -> builtins.list[tuple[str, int]]:
        """Topics with ``prefix`` and their live connections on every node, the busiest
        first (ties by name). At most ``scan`` topics are looked at, and the store is
        read at most once per ``occupancy_ttl`` on this node (requests in between get
        that reading). Raises what the store raises (Redis down)."""
        async with self._occupancy_lock:
            cached = self._occupancy.get(prefix)
            now = self.clock()
            if cached is None or not 0 <= now - cached[0] < self.occupancy_ttl:
                cached = (now, await self.store.occupancy(prefix, scan))
                self._occupancy[prefix] = cached
        return sorted(cached[1].items(), key=lambda item: (-item[1], item[0]))

    async def push_state(self, channel: PresenceChannel) -> None:
        """Push the topic's ``presence_state`` to ``channel``: from the join on, its
        client keeps the list (with the diffs that follow). The channel's broadcasts are
        held back while the state is read (``_paused``)."""
        topic = channel.topic
        async with self._paused(topic, [channel]):
            try:
                state = await self.list(topic)
            except Exception:
                log.warning("presence store unavailable; empty state sent on %s", topic)
                state = {}
            if not channel.joined:  # ended meanwhile: nothing more is pushed to it
                return
            self._viewers.setdefault(topic, set()).add(channel)
            channel.push(STATE, state)

    @contextlib.asynccontextmanager
    async def _paused(
        self, topic: str, channels: builtins.list[PresenceChannel]
    ) -> AsyncIterator[None]:
        """The channels' broadcasts kept aside (``PubSub.pause``) while a state is read
        and pushed, then written after it, in order.

        A client that has a list applies a ``presence_diff`` at once and makes its list
        the next ``presence_state``. Without the pause, a diff of a change the read did
        not see (a leave, a join, made after it) could be written before the state, and
        the state would undo it: a leaver listed for good, a joiner missing. After the
        state it is applied on top of it; a diff of a change the state already holds is
        harmless there (phoenix.js matches metas by phx_ref), so the list converges.
        """
        paused = [c for c in channels if self.pubsub.pause(topic, c)]
        try:
            yield
        finally:
            for channel in paused:
                self.pubsub.resume(topic, channel)

    def _forget(self, channel: PresenceChannel) -> None:
        viewers = self._viewers.get(channel.topic)
        if viewers is not None:
            viewers.discard(channel)
            if not viewers:
                del self._viewers[channel.topic]

    async def _resync(self, topics: builtins.list[str]) -> builtins.list[str]:
        """Push a fresh presence_state to this node's members of ``topics``.

        Returns the topics whose list could not be read (the store retries them): an
        empty state would wrongly make everybody leave.
        """
        failed = []
        for topic in topics:
            viewers = [c for c in self._viewers.get(topic, ()) if c.joined]
            if not viewers:
                self._viewers.pop(topic, None)
                continue
            async with self._paused(topic, viewers):
                try:
                    state = await self.list(topic)
                except Exception:
                    log.warning("presence store unavailable; fresh state for %s later", topic)
                    failed.append(topic)
                    continue
                log.info("presence: fresh state pushed to %d members of %s", len(viewers), topic)
                for channel in viewers:
                    if channel.joined:
                        channel.push(STATE, state)
        return failed

    async def _changed(
        self, topic: str, joins: builtins.list[Entry], leaves: builtins.list[Entry]
    ) -> None:
        """The store changed entries itself (a dead node's swept): tell the room."""
        await self._diff(topic, joins=joins, leaves=leaves)

    async def _diff(
        self,
        topic: str,
        joins: builtins.list[Entry] | None = None,
        leaves: builtins.list[Entry] | None = None,
    ) -> None:
        if not joins and not leaves:
            return
        if self.batch <= 0:
            await self._send(topic, joins or [], leaves or [])
            return
        pending = self._batches.get(topic)
        if pending is None:
            pending = self._batches[topic] = ([], [])
            asyncio.get_running_loop().call_later(self.batch, self._flush, topic)
        pending[0].extend(joins or [])
        pending[1].extend(leaves or [])

    def _flush(self, topic: str) -> None:
        pending = self._batches.pop(topic, None)
        if pending is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(topic, *pending))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(
        self, topic: str, joins: builtins.list[Entry], leaves: builtins.list[Entry]
    ) -> None:
        payload = {"joins": group(joins), "leaves": group(leaves)}
        try:
            await self.pubsub.broadcast(topic, DIFF, payload)
        except Exception:
            log.warning("presence diff for %s not broadcast", topic, exc_info=True)


__all__ = [
    "Changed",
    "Entry",
    "Presence",
    "PresenceStore",
    "Resync",
    "group",
]
