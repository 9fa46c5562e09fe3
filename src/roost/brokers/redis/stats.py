"""What the Redis broker counts (``/healthz``'s ``broker``, the Prometheus metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class BrokerStats:
    published: int = 0
    publish_errors: int = 0  # commands Redis did not take (stored ones: error replies)
    publish_timeouts: int = 0  # stored publishes refused for missing their deadline
    unreplicated: int = 0  # batches whose WAIT answered fewer replicas than wanted
    dropped: int = 0  # publish queue full
    received: int = 0
    invalid: int = 0
    gaps: int = 0
    missed: int = 0
    reconnects: int = 0
    probe_restarts: int = 0
    offset_gaps: int = 0  # a topic's offsets jumped: filled from the stream
    catch_ups: int = 0  # topics caught up from their cursor after a (re)subscribe
    filled: int = 0  # messages delivered from the stream (gap fills and catch-ups)
    unfillable: int = 0  # messages gone from the stream before they could be filled
    duplicates: int = 0
    rejected: int = 0
    presence_dropped: int = 0  # presence entries read from Redis failing their check or bound
    subscribed: bool = False  # the subscriber connection is up, every channel confirmed
    responsive: bool = False  # Redis answered the last health check inside its deadline

    @property
    def connected(self) -> bool:
        """Ready to carry broadcasts: subscribed, and Redis answering."""
        return self.subscribed and self.responsive

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "connected": self.connected}

    def counters(self) -> Iterator[tuple[str, str, float]]:
        """(metric name, help, value) for ``/metrics`` (the Broker protocol's counters)."""
        yield "roost_broadcasts_published", "Envelopes published to Redis.", self.published
        yield "roost_broadcasts_received", "Envelopes from other nodes.", self.received
        yield "roost_publish_errors", "Envelopes Redis did not take.", self.publish_errors
        yield (
            "roost_publish_timeouts",
            "Stored publishes refused for missing their deadline (the client got an error).",
            self.publish_timeouts,
        )
        yield (
            "roost_publish_unreplicated",
            "Publish batches that fewer replicas than --redis-wait-replicas confirmed.",
            self.unreplicated,
        )
        yield (
            "roost_publish_dropped",
            "Envelopes dropped: the publish queue was full.",
            self.dropped,
        )
        yield "roost_redis_reconnects", "Subscriber reconnects.", self.reconnects
        yield "roost_probe_restarts", "Subscriptions restarted by the probe.", self.probe_restarts
        yield "roost_sequence_gaps", "Jumps in an origin's sequence numbers.", self.gaps
        yield "roost_missed_messages", "Messages the sequence gaps skipped.", self.missed
        yield "roost_offset_gaps", "Holes in a topic's history offsets.", self.offset_gaps
        yield "roost_gaps_filled", "Messages filled in from the history stream.", self.filled
        yield (
            "roost_catch_ups",
            "Topics caught up from their cursor after a resubscribe.",
            (self.catch_ups),
        )
        yield (
            "roost_gaps_unfillable",
            "Messages gone from the history stream before a gap could be filled (lost here).",
            self.unfillable,
        )
        yield "roost_duplicates_dropped", "Envelopes delivered already, not again.", self.duplicates
        yield "roost_invalid_envelopes", "Messages that were not envelopes.", self.invalid
        yield "roost_rejected_envelopes", "Envelopes failing the signature.", self.rejected
        yield (
            "roost_presence_entries_dropped",
            "Presence entries read from Redis and dropped (signature, size or shape).",
            self.presence_dropped,
        )
