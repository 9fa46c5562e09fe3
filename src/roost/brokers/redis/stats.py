"""What the Redis broker counts (``/healthz``'s ``broker``, the Prometheus metrics)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class BrokerStats:
    published: int = 0
    publish_errors: int = 0  # commands Redis did not take (stored ones: error replies)
    publish_timeouts: int = 0  # stored publishes refused for missing their deadline
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
    subscribed: bool = False  # the subscriber connection is up, every channel confirmed
    responsive: bool = False  # Redis answered the last health check inside its deadline

    @property
    def connected(self) -> bool:
        """Ready to carry broadcasts: subscribed, and Redis answering."""
        return self.subscribed and self.responsive

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "connected": self.connected}
