"""The Redis broker on Phoenix's wire (``--redis-wire phoenix``).

Broadcasts travel as phoenix_pubsub_redis 3.x messages (``phoenix_codec``) on one
channel, ``phx:Elixir.<PubSub>.Adapter``, shared with the Phoenix nodes of the same
PubSub: roost nodes and Phoenix nodes are peers there. What changes from roost's
own wire:

- every broadcast (plain or stored) goes out as ``{3, :except, node, topic,
  %Phoenix.Socket.Broadcast{}, Phoenix.Channel.Server}``; a payload Phoenix could not
  fastlane (JSON that is not an object) is delivered here only, and counted;
- what arrives is delivered as Phoenix would: ``:except`` from any node but this one,
  ``:only`` to this node; messages that are not a ``Phoenix.Socket.Broadcast``
  (Tracker, LiveView) are skipped and counted;
- delivery between nodes is Phoenix's: plain Pub/Sub, at most once, no sequence
  numbers, no gap detection, no signing (Phoenix has none). History stays roost's
  own: a stored broadcast is still appended to the topic's stream (joiners on roost
  nodes recover what roost nodes stored; what Phoenix nodes sent is not stored), and
  presence stays in roost's keys (Phoenix.Presence's CRDT is not spoken).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ...protocol.etf import DEFAULT, EtfError, Limits
from ...pubsub import Counter, Envelope
from ...pubsub.history import HistoryPolicy, Position
from . import phoenix_codec as wire
from .broker import RedisBroker
from .cluster import ClusterRefused

log = logging.getLogger("roost.redis")


class PhoenixWireBroker(RedisBroker):
    delivers_stored = False  # plain Pub/Sub: PubSub delivers this node's own locally

    def __init__(
        self,
        url: str,
        *,
        pubsub: str = "Chat.PubSub",
        channel: str | None = None,
        compression: int = 0,
        atom_keys: bool = False,
        limits: Limits = DEFAULT,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("signing_key"):
            raise ValueError("Phoenix's wire carries no signature: drop --redis-signing-key")
        kwargs.pop("mode", None)
        super().__init__(url, mode="topic", **kwargs)
        self.phx_channel = channel or wire.channel_for(pubsub)
        self._phx = self.phx_channel.encode()
        self.compression, self.atom_keys, self.limits = compression, atom_keys, limits
        self.link.wanted.add(self.phx_channel)
        self.skipped = 0  # Phoenix messages that are not channel broadcasts, or not for us
        self.unbridged = 0  # roost broadcasts Phoenix could not take (not a JSON object)

    def counters(self) -> Iterable[Counter]:
        yield from super().counters()
        yield (
            "roost_phoenix_skipped",
            "Messages on the Phoenix channel that are not a channel broadcast (Tracker, ...).",
            self.skipped,
        )
        yield (
            "roost_phoenix_unbridged",
            "Broadcasts kept off the Phoenix channel (payload not a JSON object).",
            self.unbridged,
        )

    async def _use_cluster(self) -> None:
        raise ClusterRefused("--redis-wire phoenix runs on a single Redis (or Sentinel)")

    # -- publishing --------------------------------------------------------------------
    async def publish(self, envelope: Envelope) -> None:
        data = self._encode(envelope)
        if data is not None:
            self.publisher.plain(self.phx_channel, data)

    async def publish_stored(
        self, envelope: Envelope, policy: HistoryPolicy, key: str | None = None
    ) -> Envelope:
        """Append to roost's history stream (its own PUBLISH goes to the topic's roost
        channel), then the Phoenix message, carrying the payload with its offset (not
        again for a retry whose key was stored: the first copy went out)."""
        stored = await super().publish_stored(envelope, policy, key)
        if not stored.duplicate:
            await self.publish(stored)
        return stored

    def _encode(self, env: Envelope) -> bytes | None:
        try:
            return wire.encode_broadcast(
                self.node,
                env.topic,
                env.event,
                env.payload,
                compressed=self.compression,
                atom_keys=self.atom_keys,
            )
        except EtfError as exc:
            self.unbridged += 1
            log.warning("broadcast on %s not sent to Phoenix nodes: %s", env.topic, exc)
            return None

    # -- subscribing: the one channel carries every topic ---------------------------------
    async def subscribe(self, topic: str) -> Position | None:
        return None

    async def unsubscribe(self, topic: str) -> None:
        return None

    def _on_confirmed(self, channel: str) -> None:
        return None

    def _on_lost(self) -> None:
        return None

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel != self._phx:
            return
        try:
            msg = wire.parse(data, self.limits)
            if not msg.for_node(self.node):
                return  # our own broadcast's echo, or a direct one to another node
            env = wire.envelope_of(msg)
        except EtfError as exc:
            self.stats.invalid += 1
            if self.stats.invalid % 1000 == 1:  # the 1st, 1001st, ...: an app may send many
                log.warning(
                    "dropped a message on %s (%d so far): %s",
                    self.phx_channel,
                    self.stats.invalid,
                    exc,
                )
            return
        except Exception:  # a bug here must not cost the node its subscription
            self.stats.invalid += 1
            log.exception("dropped a message on %s", self.phx_channel)
            return
        if env is None:
            self.skipped += 1
            return
        self.stats.received += 1
        self._emit(env)
