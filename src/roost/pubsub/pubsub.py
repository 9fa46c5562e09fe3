"""The node-local registry (topic → subscribers), the join boundary, and the broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ..protocol import Encoded
from .broker import Broker
from .envelope import Envelope
from .fanout import Plan, fastlane
from .history import HistoryPolicy, Page, Position, Recovery
from .wire import Subscriber

log = logging.getLogger("roost.pubsub")


class _Held:
    """A joining subscriber's broadcasts, kept until its join reply is on the wire (or a
    paused subscriber's, kept until it resumes)."""

    __slots__ = ("after", "buffer", "pauses", "waiting")

    def __init__(self) -> None:
        self.after: Position | None = None  # the end of the history its reply carried
        self.buffer: list[Envelope] = []
        self.waiting = False  # reply sent; waiting for this node to reach ``after``
        self.pauses = 0  # a joined subscriber paused (``pause``) this many times over


class PubSub:
    """Local subscribers per topic, and a broker that carries broadcasts to other nodes.

    ``broadcast`` encodes the payload once, hands an envelope to the broker, then
    fastlanes it to local subscribers; envelopes from other nodes arrive through
    ``_deliver`` and are fastlaned the same way, the payload never parsed.

    The join boundary: a channel subscribes *held* (``hold=True``) before it reads
    its history, so nothing published meanwhile is missed, but its broadcasts are kept
    aside. ``release`` — called once the join reply is on the wire — writes the kept
    ones that the reply's history did not already hold, in order, and makes it a plain
    subscriber. For a broker that ``delivers_stored``, the release waits until this
    node has delivered the topic up to the reply's position (``_positions``): from then
    on the subscriber is in step with every other local subscriber of the topic, and
    each stored broadcast reaches it exactly once.
    """

    def __init__(self, node: str, broker: Broker) -> None:
        self.node = node
        self.broker: Broker = broker
        self._topics: dict[str, dict[Subscriber, None]] = {}
        self._held: dict[str, dict[Subscriber, _Held]] = {}
        self._positions: dict[str, Position] = {}  # the last stored broadcast delivered
        self._plans: dict[str, Plan] = {}  # made on a topic's first broadcast, dropped on change
        self._pending: dict[str, asyncio.Future[None]] = {}
        # marker → sender of a stored broadcast_from whose echo the broker hands back
        # (a subscriber has one topic: forgotten when it leaves it, see _remove).
        self._senders: dict[str, Subscriber] = {}
        self.delivered = 0

    async def start(self) -> None:
        await self.broker.start(self.node, self._deliver, self._lost)

    async def stop(self) -> None:
        await self.broker.stop()

    # -- registry --------------------------------------------------------------------
    async def subscribe(self, topic: str, sub: Subscriber, *, hold: bool = False) -> None:
        """Add a local subscriber; the first one for a topic subscribes the broker.

        Returns once the broker confirmed, so no broadcast published afterwards is
        missed; raises (and adds nothing) if the broker could not subscribe. With
        ``hold``, broadcasts are kept for the subscriber until ``release``.
        """
        first = topic not in self._topics and topic not in self._held
        if hold:
            self._held.setdefault(topic, {})[sub] = _Held()
        else:
            self._topics.setdefault(topic, {})[sub] = None
            self._plans.pop(topic, None)
        if first:
            fut = asyncio.get_running_loop().create_future()
            self._pending[topic] = fut
            try:
                position = await self.broker.subscribe(topic)
                if position is not None:  # (deliveries made meanwhile are newer)
                    self._positions.setdefault(topic, position)
                fut.set_result(None)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # mark retrieved
                self._remove(topic, sub)
                raise
            finally:
                if self._pending.get(topic) is fut:
                    del self._pending[topic]
            return
        pending = self._pending.get(topic)
        if pending is not None:
            try:
                await asyncio.shield(pending)
            except BaseException:
                self._remove(topic, sub)
                raise

    def release(self, topic: str, sub: Subscriber, after: Position | None) -> bool:
        """The join reply (its history ending at ``after``) is written: deliver what
        was kept for ``sub`` past ``after`` and make it a plain subscriber — now, or
        as soon as this node has delivered the topic up to ``after``. False when
        ``sub`` is no longer held: the topic was lost meanwhile (see ``_lost``)."""
        held = self._held.get(topic)
        kept = held.get(sub) if held is not None else None
        if kept is None:
            return False
        kept.after = after
        if self._caught_up(topic, after):
            self._release(topic, sub, kept)
        else:
            kept.waiting = True
        return True

    def pause(self, topic: str, sub: Subscriber) -> bool:
        """Keep a joined subscriber's broadcasts aside until ``resume``: what it is
        written next (a fresh presence state read meanwhile) comes before them.
        Re-entrant (one ``resume`` per ``pause``). False when ``sub`` is not a plain
        subscriber of ``topic`` (still joining, or gone): nothing is paused."""
        held = self._held.get(topic)
        kept = held.get(sub) if held is not None else None
        if kept is not None and kept.pauses:
            kept.pauses += 1
            return True
        subs = self._topics.get(topic)
        if subs is None or sub not in subs:
            return False
        del subs[sub]
        if not subs:
            del self._topics[topic]
        self._plans.pop(topic, None)
        kept = _Held()
        kept.pauses = 1
        self._held.setdefault(topic, {})[sub] = kept
        return True

    def resume(self, topic: str, sub: Subscriber) -> bool:
        """The end of a ``pause``: once every pause ended, the kept broadcasts are
        written in order and ``sub`` is a plain subscriber again. False when ``sub``
        is no longer paused (it left, or the topic was lost: see ``_lost``)."""
        held = self._held.get(topic)
        kept = held.get(sub) if held is not None else None
        if kept is None or not kept.pauses:
            return False
        kept.pauses -= 1
        if not kept.pauses:
            self._release(topic, sub, kept)
        return True

    def _caught_up(self, topic: str, after: Position | None) -> bool:
        if after is None or after.offset == 0 or not self.broker.delivers_stored:
            return True
        at = self._positions.get(topic)
        return at is not None and at.epoch == after.epoch and at.offset >= after.offset

    def _release(self, topic: str, sub: Subscriber, kept: _Held) -> None:
        held = self._held[topic]
        del held[sub]
        if not held:
            del self._held[topic]
        after = kept.after
        mine = str(id(sub))
        for env in kept.buffer:
            if (
                after is not None
                and env.offset is not None
                and env.epoch == after.epoch
                and env.offset <= after.offset
            ):
                continue  # already in the reply's history
            if env.exclude is not None and env.node == self.node and env.exclude == mine:
                continue
            self.delivered += fastlane([sub], topic, env.event, env.payload)
        self._topics.setdefault(topic, {})[sub] = None
        self._plans.pop(topic, None)

    def _keep(self, held: dict[Subscriber, _Held], topic: str, envs: Sequence[Envelope]) -> None:
        """Broadcasts for held subscribers; a waiting one is released once caught up."""
        for sub, kept in list(held.items()):
            kept.buffer.extend(envs)
            if kept.waiting and self._caught_up(topic, kept.after):
                self._release(topic, sub, kept)

    def _lost(self, topic: str) -> None:
        """The broker lost the topic's continuity: every local subscriber goes (each
        one's ``lost``, a paused one too; one still waiting for its join reply is refused
        by ``release``)."""
        subs = list(self._topics.pop(topic, {}))
        held = self._held.pop(topic, {})
        self._plans.pop(topic, None)
        self._positions.pop(topic, None)
        log.warning("topic %s lost its continuity here: %d subscribers end", topic, len(subs))
        for sub in subs + [s for s, kept in held.items() if kept.waiting or kept.pauses]:
            try:
                sub.lost()
            except Exception:
                log.exception("subscriber of %s failed to end", topic)
        task = asyncio.get_running_loop().create_task(self._broker_unsubscribe(topic))
        task.add_done_callback(_log_failure)

    def unsubscribe(self, topic: str, sub: Subscriber) -> None:
        if self._remove(topic, sub):
            task = asyncio.get_running_loop().create_task(self._broker_unsubscribe(topic))
            task.add_done_callback(_log_failure)

    def _remove(self, topic: str, sub: Subscriber) -> bool:
        """Forget ``sub``; True when the topic has no local subscriber left."""
        if self._senders:
            self._senders.pop(str(id(sub)), None)
        subs = self._topics.get(topic)
        held = self._held.get(topic)
        if subs is not None and sub in subs:
            del subs[sub]
            self._plans.pop(topic, None)
            if not subs:
                del self._topics[topic]
        elif held is not None and sub in held:
            del held[sub]
            if not held:
                del self._held[topic]
        else:
            return False
        if topic in self._topics or topic in self._held:
            return False
        self._positions.pop(topic, None)
        return True

    async def _broker_unsubscribe(self, topic: str) -> None:
        if topic not in self._topics and topic not in self._held:
            await self.broker.unsubscribe(topic)

    def subscribers(self, topic: str) -> int:
        return len(self._topics.get(topic, ())) + len(self._held.get(topic, ()))

    def topics(self) -> list[str]:
        return list({**self._topics, **self._held})

    # -- broadcasting ----------------------------------------------------------------
    async def broadcast(
        self,
        topic: str,
        event: str,
        payload: Any,
        *,
        exclude: Subscriber | None = None,
        store: HistoryPolicy | None = None,
        key: str | None = None,
    ) -> int:
        """Send to every subscriber of ``topic`` on every node (``exclude`` skipped).

        With ``store``, the message is first appended to the topic's history and gets an
        offset (raises HistoryUnavailable if it cannot be stored: then nobody got it);
        ``key`` makes that idempotent (see ``Broker.publish_stored``).
        """
        encoded = Encoded.of(payload)
        marker = None
        if exclude is not None:
            marker = str(id(exclude))
            if store is not None and self.broker.delivers_stored:
                self._senders[marker] = exclude  # its echo finds the sender in O(1)
        env = Envelope(self.node, 0, topic, event, encoded, marker)
        if store is not None:
            stored = await self.broker.publish_stored(env, store, key)
            if self.broker.delivers_stored or stored.duplicate:
                return 0
            return self._local(stored, exclude)
        try:
            await self.broker.publish(env)
        except Exception:
            # Other nodes miss this one; this node's subscribers must not.
            log.exception("broker publish failed topic=%s", topic)
        return self._local(env, exclude)

    def _local(self, env: Envelope, exclude: Subscriber | None) -> int:
        topic = env.topic
        sent = 0
        subs = self._topics.get(topic)
        if subs:
            sent = self._fanout(topic, subs, env.event, env.payload, exclude)
            self.delivered += sent
        held = self._held.get(topic)
        if held:
            self._keep(held, topic, (env,))
        return sent

    def local_broadcast(
        self, topic: str, event: str, payload: Any, *, exclude: Subscriber | None = None
    ) -> int:
        """Send to this node's subscribers of ``topic`` only."""
        marker = None if exclude is None else str(id(exclude))
        return self._local(
            Envelope(self.node, 0, topic, event, Encoded.of(payload), marker), exclude
        )

    async def history(self, topic: str, since: Position | None, policy: HistoryPolicy) -> Recovery:
        return await self.broker.history(topic, since, policy)

    async def page(
        self, topic: str, before: int, limit: int, epoch: str, policy: HistoryPolicy
    ) -> Page:
        return await self.broker.page(topic, before, limit, epoch, policy)

    def _deliver(self, envs: Sequence[Envelope]) -> None:
        """Envelopes from the broker, in order: forward their bytes to local subscribers.

        Usually from another node; a broker that ``delivers_stored`` also hands back
        this node's own stored broadcasts, so they arrive in offset order. Consecutive
        envelopes for one topic go out as a run (``fastlane_run``): each subscriber
        gets them in one write.
        """
        if len(envs) == 1:
            try:
                self._deliver_run(envs)
            except Exception:
                log.exception("delivery on %s failed", envs[0].topic)
            return
        node = self.node
        i, n = 0, len(envs)
        while i < n:
            env = envs[i]
            j = i + 1
            if env.exclude is None or env.node != node:
                topic = env.topic
                while j < n:
                    nxt = envs[j]
                    if nxt.topic != topic or (nxt.exclude is not None and nxt.node == node):
                        break
                    j += 1
            try:
                self._deliver_run(envs[i:j])
            except Exception:  # a subscriber's handle_out: the rest of the batch goes on
                log.exception("delivery on %s failed", env.topic)
            i = j

    def _deliver_run(self, envs: Sequence[Envelope]) -> None:
        """Envelopes of one topic (several only when none excludes a local subscriber)."""
        last = envs[-1]
        topic = last.topic
        subs = self._topics.get(topic)
        held = self._held.get(topic)
        if not subs and not held:
            return
        for env in reversed(envs):
            if env.offset is not None:
                self._positions[topic] = Position(env.offset, env.epoch or "")
                break
        if subs:
            if len(envs) > 1:
                self.delivered += self._plan(topic, subs).broadcast_run(topic, envs)
            else:
                exclude = None
                if last.exclude is not None and last.node == self.node:
                    exclude = self._senders.get(last.exclude)
                self.delivered += self._fanout(topic, subs, last.event, last.payload, exclude)
        if held:
            self._keep(held, topic, envs)

    def _fanout(
        self,
        topic: str,
        subs: dict[Subscriber, None],
        event: str,
        payload: Encoded,
        exclude: Subscriber | None,
    ) -> int:
        """One broadcast to a topic's local subscribers: always through its Plan (the
        one fan-out path; ``fastlane``/``fastlane_run`` serve the plan's others)."""
        return self._plan(topic, subs).broadcast(topic, event, payload, exclude)

    def _plan(self, topic: str, subs: dict[Subscriber, None]) -> Plan:
        """The topic's Plan, made on first use after a change of its subscribers."""
        plan = self._plans.get(topic)
        if plan is None:
            plan = self._plans[topic] = Plan(subs)
        return plan


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("broker unsubscribe failed: %r", task.exception())
